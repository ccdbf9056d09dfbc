//! Event mode: rustls's unbuffered (sans-IO) server connection between the
//! connection table's pooled buffers and an [`EventHandler`].
//!
//! The table reads ciphertext into a pooled buffer and offers it through
//! [`EventHandler::received_mut`]. rustls decrypts the records in place
//! there; each record's plaintext is moved to the front of the same
//! buffer, so the inner handler sees everything it has not consumed as one
//! run, and the bytes it leaves stay in the table's buffer, as on a plain
//! connection (the table's back-pressure, `Stalled` and buffer waits apply
//! unchanged). What the inner handler writes goes to an [`Outbox`] over
//! room on the stack, sized so that its records fit the table's outbox,
//! and is encrypted into it. An idle TLS connection holds its rustls
//! state and nothing else. While the handshake waits for the rest of a
//! record, the few bytes it has wait in the session (`held`, at most two
//! records), so a half handshake holds no pooled buffer.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use rustls::{ProtocolVersion, ServerConfig, SupportedCipherSuite};
use sockserv_core::logging::{Level, report};
use sockserv_core::{EventHandler, Next, Outbox, Step};

use crate::sni;
use crate::stream::TlsInfo;

/// The largest record rustls reads or writes on the wire (16 KiB of
/// plaintext, rustls's allowance for expansion, the 5-byte header).
pub(crate) const WIRE_MAX: usize = 16384 + 2048 + 5;
/// The most plaintext one record carries.
const PLAIN_MAX: usize = 16384;
/// What a record adds to its plaintext at most (header, content type,
/// explicit nonce, tag), with a margin.
const RECORD_OVERHEAD: usize = 5 + 64;
/// Room kept free for `close_notify` (and a small handshake record such
/// as a key update) after the inner handler's answer.
const RESERVE: usize = 256;
/// The most handshake bytes a session keeps while it waits for the rest
/// of a handshake record (or message): two whole records. A handshake
/// that leaves more unprocessed is refused.
pub(crate) const HELD_MAX: usize = 2 * WIRE_MAX;

/// One connection's TLS session in event mode (boxed in the handler, so a
/// plain slot stays small).
pub(crate) struct EventSession {
    conn: UnbufferedServerConnection,
    started: Instant,
    /// The client's address, for reports.
    client: Box<str>,
    /// The SNI name of the ClientHello (rustls's unbuffered connection
    /// does not expose it).
    sni: Option<Box<str>>,
    /// Plaintext at the front of the table's input that the inner handler
    /// has not consumed.
    plain: usize,
    /// Bytes at the front of the table's input that rustls has processed
    /// (`plain` bytes of plaintext, then spent records).
    done: usize,
    /// A handshake record that did not fit the outbox (sent first).
    unsent: Vec<u8>,
    /// While handshaking: the bytes rustls has not processed yet (part of
    /// a record or of a handshake message), kept here instead of in the
    /// table's pooled buffer, which goes back at the end of each call.
    held: Vec<u8>,
    handshaken: bool,
    /// The peer sent `close_notify`.
    tls_eof: bool,
    /// What the inner handler answered to `peer_closed`, once told.
    told_closed: Option<Next>,
    /// The inner handler asked for `drained`.
    inner_drain: bool,
    /// The session is over (failed, or `close_notify` queued): input is
    /// dropped, the inner handler is not called again.
    over: bool,
    /// rustls left a complete record in the table's input (part of a
    /// handshake message it joins): it must not run on an empty input.
    hs_partial: bool,
}

impl fmt::Debug for EventSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSession")
            .field("client", &self.client)
            .field("handshaken", &self.handshaken)
            .field("plain", &self.plain)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Stack room for one call: the inner handler's plaintext answer and one
/// record on the wire.
struct Scratch {
    plain: [u8; PLAIN_MAX],
    wire: [u8; WIRE_MAX],
}

/// Where a run of rustls stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pumped {
    /// Handshake done; application data may be written (and was, if any
    /// was given).
    Ready,
    /// The handshake needs more input.
    Blocked,
    /// A handshake record did not fit the outbox; it waits in `unsent`.
    NoRoom,
    /// Both sides sent `close_notify`.
    Closed,
}

/// Why a session ended early.
enum Failed {
    /// rustls's error (a protocol error, a bad record, an alert).
    Tls(rustls::Error),
    /// Application data did not fit where it was sized to fit (a bug).
    Room(usize),
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "{e}"),
            Self::Room(n) => write!(f, "{n} bytes of records did not fit the outbox"),
        }
    }
}

impl EventSession {
    pub(crate) fn new(config: Arc<ServerConfig>, client: Box<str>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config)?,
            started: Instant::now(),
            client,
            sni: None,
            plain: 0,
            done: 0,
            unsent: Vec::new(),
            held: Vec::new(),
            handshaken: false,
            tls_eof: false,
            told_closed: None,
            inner_drain: false,
            over: false,
            hs_partial: false,
        })
    }

    /// Whether the handshake is still running.
    pub(crate) fn handshaking(&self) -> bool {
        !self.handshaken && !self.over
    }

    /// Whether the handshake completed (the inner handler was opened).
    pub(crate) fn handshaken(&self) -> bool {
        self.handshaken
    }

    /// Whether the session ended (and said why).
    pub(crate) fn is_over(&self) -> bool {
        self.over
    }

    /// The client, for reports.
    pub(crate) fn client(&self) -> &str {
        &self.client
    }

    /// What the handshake negotiated.
    fn info(&self) -> TlsInfo<'_> {
        TlsInfo {
            alpn_protocol: self.conn.alpn_protocol(),
            server_name: self.sni.as_deref(),
            peer_certificates: self.conn.peer_certificates(),
            protocol_version: self.conn.protocol_version(),
            cipher_suite: self.conn.negotiated_cipher_suite(),
        }
    }

    /// Sends the handshake record that waited for room, if it fits now.
    fn send_unsent(&mut self, out: &mut Outbox<'_>) -> bool {
        if self.unsent.is_empty() {
            return true;
        }
        if out.room() < self.unsent.len() {
            return false;
        }
        out.write(&self.unsent);
        self.unsent = Vec::new();
        true
    }

    /// Runs rustls over the unprocessed input (`input[done..]`): handshake
    /// records go to `out`, application data is moved to
    /// `input[plain..]`. Stops when application data may be written
    /// (writing `data`, then `close_notify` if asked), when the handshake
    /// needs more input, or when the outbox is full.
    fn pump(
        &mut self,
        input: &mut [u8],
        out: &mut Outbox<'_>,
        wire: &mut [u8; WIRE_MAX],
        data: &[u8],
        close_notify: bool,
    ) -> Result<Pumped, Failed> {
        if !self.send_unsent(out) {
            return Ok(Pumped::NoRoom);
        }
        if self.done > input.len() {
            return Err(Failed::Room(self.done));
        }
        // To write, records that arrived meanwhile are left for later (their
        // answers, a key update's, could take the room the data was sized
        // for), unless rustls holds part of a handshake message in the
        // input (then it must see the input as it was).
        let writing = !data.is_empty() || close_notify;
        loop {
            if !self.handshaken && self.sni.is_none() {
                self.sni = sni::server_name(&input[self.done..]).map(Into::into);
            }
            let end = if writing && !self.hs_partial { self.done } else { input.len() };
            let status = self.conn.process_tls_records(&mut input[self.done..end]);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    self.done += discard;
                    return Err(Failed::Tls(e));
                }
            };
            let mut moved = 0;
            let stop = match state {
                // One record at a time: its plaintext to the stack, then
                // (the record discarded) in place after the rest.
                ConnectionState::ReadTraffic(mut r) => {
                    if let Some(record) = r.next_record() {
                        let record = record.map_err(Failed::Tls)?;
                        (moved, discard) = stash(&record, wire, discard);
                    }
                    None
                }
                ConnectionState::ReadEarlyData(mut r) => {
                    if let Some(record) = r.next_record() {
                        let record = record.map_err(Failed::Tls)?;
                        (moved, discard) = stash(&record, wire, discard);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    let room = out.room().min(WIRE_MAX);
                    match e.encode(&mut wire[..room]) {
                        Ok(n) => {
                            out.write(&wire[..n]);
                            None
                        }
                        Err(EncodeError::InsufficientSize(need)) => {
                            // Never drop a handshake record: keep it
                            // until the outbox has room.
                            let mut held = vec![0; need.required_size];
                            match e.encode(&mut held) {
                                Ok(n) => held.truncate(n),
                                Err(_) => held.clear(),
                            }
                            self.unsent = held;
                            Some(Pumped::NoRoom)
                        }
                        Err(EncodeError::AlreadyEncoded) => None,
                    }
                }
                ConnectionState::TransmitTlsData(t) => {
                    // What was encoded is in the outbox, which sends it
                    // when the call returns.
                    t.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Pumped::Blocked),
                ConnectionState::PeerClosed => {
                    self.tls_eof = true;
                    None
                }
                ConnectionState::Closed => Some(Pumped::Closed),
                ConnectionState::WriteTraffic(mut w) => {
                    for chunk in data.chunks(PLAIN_MAX) {
                        let room = out.room().min(WIRE_MAX);
                        match w.encrypt(chunk, &mut wire[..room]) {
                            Ok(n) => {
                                out.write(&wire[..n]);
                            }
                            Err(EncryptError::InsufficientSize(need)) => {
                                return Err(Failed::Room(need.required_size));
                            }
                            Err(EncryptError::EncryptExhausted) => {
                                return Err(Failed::Room(0));
                            }
                        }
                    }
                    if close_notify {
                        let room = out.room().min(WIRE_MAX);
                        if let Ok(n) = w.queue_close_notify(&mut wire[..room]) {
                            out.write(&wire[..n]);
                        }
                    }
                    Some(Pumped::Ready)
                }
                _ => Some(Pumped::Blocked),
            };
            // TLS 1.3 lets the server write before the client's Finished:
            // the handshake is done only when rustls says so.
            let stop = match stop {
                Some(Pumped::Ready) if self.conn.is_handshaking() => Some(Pumped::Blocked),
                Some(Pumped::Ready) => {
                    self.handshaken = true;
                    Some(Pumped::Ready)
                }
                other => other,
            };
            self.done += discard;
            self.hs_partial = end > self.done && sni::holds_record(&input[self.done..end]);
            if moved > 0 {
                if self.plain + moved > self.done {
                    // Cannot happen (a record's plaintext is shorter than
                    // the record); refuse rather than overwrite input.
                    return Err(Failed::Room(moved));
                }
                input[self.plain..self.plain + moved].copy_from_slice(&wire[..moved]);
                self.plain += moved;
            }
            if let Some(stop) = stop {
                return Ok(stop);
            }
        }
    }

    /// The alert rustls queued after an error, best effort.
    fn send_alert(&mut self, input: &mut [u8], out: &mut Outbox<'_>, wire: &mut [u8; WIRE_MAX]) {
        let done = self.done.min(input.len());
        let status = self.conn.process_tls_records(&mut input[done..]);
        if let Ok(ConnectionState::EncodeTlsData(mut e)) = status.state {
            let room = out.room().min(WIRE_MAX);
            if let Ok(n) = e.encode(&mut wire[..room]) {
                out.write(&wire[..n]);
            }
        }
    }

    /// Reports a failed session (info before the handshake completed or
    /// for a protocol error, never as a handler error) and ends it.
    fn fail(&mut self, why: &Failed) {
        self.over = true;
        let (level, when) = match (why, self.handshaken) {
            (Failed::Room(_), _) => (Level::Warn, "TLS output"),
            (_, false) => (Level::Info, "TLS handshake failed"),
            (_, true) => (Level::Info, "TLS record failed"),
        };
        report(level, format_args!("{}: {when}: {why}", self.client));
    }
}

/// The most plaintext whose records (and the reserve after them) fit
/// `room` bytes of outbox, with records of at most `frag` bytes of
/// plaintext.
fn plain_room(room: usize, frag: usize) -> usize {
    let avail = room.min(WIRE_MAX).saturating_sub(RESERVE);
    if avail == 0 {
        return 0;
    }
    let records = avail.div_ceil(frag + RECORD_OVERHEAD);
    avail.saturating_sub(records * RECORD_OVERHEAD).min(PLAIN_MAX)
}

thread_local! {
    /// Each loop thread's stack room for a call (35 KiB, made once).
    static SCRATCH: RefCell<Option<Box<Scratch>>> = const { RefCell::new(None) };

    /// What the handshake negotiated, while the inner handler's `opened`
    /// runs (see [`handshake_info`]).
    static INFO: RefCell<Option<OwnedInfo>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's scratch room (a new one if it is in use:
/// a TLS layer inside another).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut scratch = SCRATCH
        .take()
        .unwrap_or_else(|| Box::new(Scratch { plain: [0; PLAIN_MAX], wire: [0; WIRE_MAX] }));
    let r = f(&mut scratch);
    SCRATCH.set(Some(scratch));
    r
}

/// [`TlsInfo`] owned, for the thread-local.
struct OwnedInfo {
    alpn: Option<Vec<u8>>,
    sni: Option<Box<str>>,
    certs: Option<Vec<CertificateDer<'static>>>,
    version: Option<ProtocolVersion>,
    suite: Option<SupportedCipherSuite>,
}

/// In event mode, what the TLS handshake negotiated (ALPN, SNI name, client
/// certificates, version, suite), for an [`EventHandler`] behind
/// [`Tls`](crate::Tls): call it from the inner handler's
/// [`opened`](EventHandler::opened), which runs once the handshake has
/// completed, and keep what you need. `None` outside that call. (Blocking
/// handlers ask [`TlsStream::info`](crate::TlsStream::info).)
///
/// ```
/// use sockserv::{EventHandler, Next, Outbox, Step};
///
/// struct Greeter { alpn: Option<Vec<u8>> }
///
/// impl EventHandler for Greeter {
///     type Error = core::convert::Infallible;
///     fn opened(&mut self, _out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
///         self.alpn = sockserv_tls::handshake_info(|i| i.alpn_protocol.map(<[u8]>::to_vec)).flatten();
///         Ok(Next::Continue)
///     }
///     fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
///         Ok(Step::consumed(out.write(input)))
///     }
/// }
/// ```
pub fn handshake_info<R>(f: impl FnOnce(&TlsInfo<'_>) -> R) -> Option<R> {
    INFO.with_borrow(|info| {
        info.as_ref().map(|i| {
            f(&TlsInfo {
                alpn_protocol: i.alpn.as_deref(),
                server_name: i.sni.as_deref(),
                peer_certificates: i.certs.as_deref(),
                protocol_version: i.version,
                cipher_suite: i.suite,
            })
        })
    })
}

/// The handler's view of the session: what the [`EventHandler`] impl of
/// [`TlsHandler`](crate::TlsHandler) drives.
pub(crate) struct Driver<'s, H> {
    pub(crate) session: &'s mut EventSession,
    pub(crate) inner: &'s mut H,
    pub(crate) frag: usize,
    pub(crate) timeout: Duration,
}

/// What one inner call did.
struct Called {
    consumed: usize,
    next: Next,
}

impl<H: EventHandler> Driver<'_, H> {
    /// Calls the inner handler with plaintext room that fits `out`, then
    /// encrypts what it wrote into `out` (queueing `close_notify` after
    /// it when it closes).
    fn call(
        &mut self,
        input: &mut [u8],
        base: usize,
        out: &mut Outbox<'_>,
        scratch: &mut Scratch,
        f: impl FnOnce(&mut H, &mut [u8], &mut Outbox<'_>) -> Result<Step, H::Error>,
    ) -> Result<Called, H::Error> {
        // Nothing to write while a handshake record waits for room.
        let room =
            if self.session.unsent.is_empty() { plain_room(out.room(), self.frag) } else { 0 };
        let (consumed, next, wrote, drain) = {
            let plain = self.session.plain;
            let mut inner_out = Outbox::gather(&mut scratch.plain[..room]);
            let step = f(&mut *self.inner, &mut input[base..base + plain], &mut inner_out)?;
            (step.consumed.min(plain), step.next, inner_out.gathered(), inner_out.drain_requested())
        };
        self.session.inner_drain |= drain;
        let close = next == Next::Close;
        if wrote > 0 || close {
            let data = &scratch.plain[..wrote];
            let s = &mut *self.session;
            let pumped = s.pump(&mut input[base..], out, &mut scratch.wire, data, close);
            let pumped = pumped.and_then(|p| match p {
                Pumped::Ready | Pumped::Closed => Ok(p),
                // Sized to fit: cannot happen, but never drop an answer
                // silently.
                Pumped::NoRoom | Pumped::Blocked => Err(Failed::Room(data.len())),
            });
            if let Err(why) = pumped {
                s.fail(&why);
                return Ok(Called { consumed, next: Next::Close });
            }
            if close {
                s.over = true;
            }
        }
        Ok(Called { consumed, next })
    }

    /// The table's `received_mut`: rustls over the new records, then the
    /// plaintext to the inner handler while it consumes.
    pub(crate) fn received(
        &mut self,
        input: &mut [u8],
        out: &mut Outbox<'_>,
    ) -> Result<Step, H::Error> {
        if self.session.over || self.session.done > input.len() {
            self.session.over = true;
            return Ok(Step::close(input.len()));
        }
        if self.overdue() {
            let s = &mut *self.session;
            s.over = true;
            let took = s.started.elapsed();
            report(Level::Info, format_args!("{}: TLS handshake timed out ({took:?})", s.client));
            return Ok(Step::close(input.len()));
        }
        with_scratch(|scratch| {
            if self.session.held.is_empty() {
                let step = self.received_in(input, out, scratch)?;
                Ok(self.hold_rest(input, step))
            } else {
                self.received_held(input, out, scratch)
            }
        })
    }

    /// Whether what is left of the input after a call can wait in the
    /// session's small `held` buffer: the handshake is still running,
    /// nothing waits to be sent, no (early) plaintext waits.
    fn may_hold(&self) -> bool {
        let s = &*self.session;
        s.handshaking() && s.unsent.is_empty() && s.plain == 0 && s.done == 0
    }

    /// After a call over the table's input: a handshake still running
    /// keeps what rustls left (part of a record) in `held`, and the whole
    /// input goes back, so the pooled buffer returns to the pool; a
    /// silent half handshake then holds only those bytes.
    fn hold_rest(&mut self, input: &[u8], step: Step) -> Step {
        let consumed = step.consumed.min(input.len());
        if step.next == Next::Close || consumed == input.len() || !self.may_hold() {
            return step;
        }
        let rest = &input[consumed..];
        if rest.len() > HELD_MAX {
            self.refuse_large(rest.len());
            return Step::close(input.len());
        }
        self.session.held = rest.to_vec();
        Step::consumed(input.len())
    }

    /// A call while part of the handshake waits in `held`: the new bytes
    /// are appended (up to [`HELD_MAX`]) and rustls runs over `held`.
    /// Once the handshake is done (or a handshake record waits for room),
    /// what is left goes back to the table's input, behind its last bytes
    /// taken (there is room: the handshake moved on only past bytes of
    /// this input).
    fn received_held(
        &mut self,
        input: &mut [u8],
        out: &mut Outbox<'_>,
        scratch: &mut Scratch,
    ) -> Result<Step, H::Error> {
        let mut taken = 0;
        loop {
            let mut held = std::mem::take(&mut self.session.held);
            let k = (input.len() - taken).min(HELD_MAX.saturating_sub(held.len()));
            held.extend_from_slice(&input[taken..taken + k]);
            taken += k;
            let step = self.received_in(&mut held, out, scratch)?;
            if step.next == Next::Close {
                return Ok(Step::close(input.len()));
            }
            let consumed = step.consumed.min(held.len());
            if self.may_hold() {
                held.drain(..consumed);
                if held.len() >= HELD_MAX {
                    self.refuse_large(held.len());
                    return Ok(Step::close(input.len()));
                }
                if !held.is_empty() {
                    self.session.held = held;
                }
                if taken == input.len() {
                    return Ok(Step::consumed(input.len()));
                }
                continue;
            }
            // Back to the table: the plaintext, the spent bytes the session
            // still counts (one is enough to be offered again while a
            // record waits for room), the unprocessed bytes.
            let s = &mut *self.session;
            let (plain, done) = (s.plain, s.done);
            let keep = usize::from(!s.unsent.is_empty() && done > plain);
            let unprocessed = held.len().saturating_sub(consumed + done);
            let rest = plain + keep + unprocessed;
            if rest > taken {
                s.fail(&Failed::Room(rest));
                return Ok(Step::close(input.len()));
            }
            let at = taken - rest;
            input[at..at + plain].copy_from_slice(&held[consumed..consumed + plain]);
            input[at + plain..taken].copy_from_slice(&held[consumed + done - keep..]);
            s.done = plain + keep;
            return Ok(Step { consumed: at, next: step.next });
        }
    }

    /// A handshake that leaves more than [`HELD_MAX`] bytes unprocessed
    /// (a record or message larger than any real one) is refused.
    fn refuse_large(&mut self, n: usize) {
        let s = &mut *self.session;
        s.over = true;
        s.held = Vec::new();
        report(
            Level::Info,
            format_args!(
                "{}: TLS handshake failed: {n} bytes of an unfinished handshake record or message (at most {HELD_MAX} kept)",
                s.client
            ),
        );
    }

    fn received_in(
        &mut self,
        input: &mut [u8],
        out: &mut Outbox<'_>,
        scratch: &mut Scratch,
    ) -> Result<Step, H::Error> {
        let mut base = 0;
        let mut next = Next::Continue;
        loop {
            let was_handshaken = self.session.handshaken;
            let pumped = {
                let s = &mut *self.session;
                s.pump(&mut input[base..], out, &mut scratch.wire, &[], false)
            };
            let pumped = match pumped {
                Ok(p) => p,
                Err(why) => {
                    let s = &mut *self.session;
                    s.fail(&why);
                    s.send_alert(&mut input[base..], out, &mut scratch.wire);
                    return Ok(Step::close(input.len()));
                }
            };
            if pumped == Pumped::Closed {
                next = Next::Close;
                break;
            }
            if self.session.handshaken && !was_handshaken {
                self.opened(input, base, out, scratch)?;
                if self.session.over {
                    next = Next::Close;
                    break;
                }
            }
            if !self.session.handshaken || self.session.plain == 0 {
                break;
            }
            let called = self.call(input, base, out, scratch, |h, i, o| h.received_mut(i, o))?;
            base += called.consumed;
            self.session.plain -= called.consumed;
            self.session.done -= called.consumed;
            if called.next == Next::Close || self.session.over {
                next = Next::Close;
                break;
            }
            if called.consumed == 0 {
                break;
            }
        }
        if next == Next::Continue
            && self.session.tls_eof
            && self.session.plain == 0
            && self.session.told_closed.is_none()
        {
            next = self.tell_closed(input, base, out, scratch)?;
        }
        if self.session.inner_drain && next == Next::Continue {
            out.notify_drained();
        }
        // Spent records go back to the table with the plaintext before
        // them; while plaintext or a handshake record waits, they stay (so
        // the table offers the input again once there is room).
        let s = &mut *self.session;
        let consumed = if s.plain == 0 && s.unsent.is_empty() || next == Next::Close {
            let all = base + s.done;
            s.done = 0;
            s.plain = 0;
            all
        } else if s.unsent.is_empty() && s.done > s.plain {
            // Plaintext waits (a partial request): move it up to the
            // unprocessed bytes and give the spent records before it back,
            // so they never pile up in the buffer.
            let spent = s.done - s.plain;
            input.copy_within(base..base + s.plain, base + spent);
            s.done = s.plain;
            base + spent
        } else {
            base
        };
        Ok(Step { consumed: consumed.min(input.len()), next })
    }

    /// The handshake completed: the inner handler's `opened`, with the
    /// negotiated details in [`handshake_info`].
    fn opened(
        &mut self,
        input: &mut [u8],
        base: usize,
        out: &mut Outbox<'_>,
        scratch: &mut Scratch,
    ) -> Result<(), H::Error> {
        let s = &*self.session;
        report(
            Level::Debug,
            format_args!(
                "{}: TLS handshake done in {:?} ({:?}, {:?})",
                s.client,
                s.started.elapsed(),
                s.conn.protocol_version(),
                s.conn.negotiated_cipher_suite().map(|c| c.suite())
            ),
        );
        let info = s.info();
        let owned = OwnedInfo {
            alpn: info.alpn_protocol.map(<[u8]>::to_vec),
            sni: info.server_name.map(Into::into),
            certs: info.peer_certificates.map(<[_]>::to_vec),
            version: info.protocol_version,
            suite: info.cipher_suite,
        };
        INFO.set(Some(owned));
        let called = self.call(input, base, out, scratch, |h, _, o| {
            h.opened(o).map(|next| Step { consumed: 0, next })
        });
        INFO.set(None);
        if called?.next == Next::Close {
            self.session.over = true;
        }
        Ok(())
    }

    /// Tells the inner handler the peer closed (once).
    fn tell_closed(
        &mut self,
        input: &mut [u8],
        base: usize,
        out: &mut Outbox<'_>,
        scratch: &mut Scratch,
    ) -> Result<Next, H::Error> {
        let called = self.call(input, base, out, scratch, |h, _, o| {
            h.peer_closed(o).map(|next| Step { consumed: 0, next })
        })?;
        self.session.told_closed = Some(called.next);
        Ok(called.next)
    }

    /// The table's `peer_closed`: the TCP connection's EOF. Without
    /// `close_notify` it is EOF all the same (reported at debug), as the
    /// blocking wrapper reads it.
    pub(crate) fn peer_closed(&mut self, out: &mut Outbox<'_>) -> Result<Next, H::Error> {
        let s = &mut *self.session;
        if s.over {
            return Ok(Next::Close);
        }
        if !s.handshaken {
            report(Level::Debug, format_args!("{}: closed during the TLS handshake", s.client));
            s.over = true;
            return Ok(Next::Close);
        }
        if let Some(next) = s.told_closed {
            return Ok(next);
        }
        if !s.tls_eof {
            report(Level::Debug, format_args!("{}: closed without close_notify", s.client));
        }
        if s.hs_partial {
            // rustls holds part of a handshake message in the table's
            // input: it cannot run without it. The peer is gone anyway.
            s.over = true;
            return Ok(Next::Close);
        }
        self.without_input(|d, scratch| d.tell_closed(&mut [], 0, out, scratch))
    }

    /// Runs `f` with no input (the table's `peer_closed` and `drained`):
    /// the plaintext and spent records the table holds are set aside.
    fn without_input<R>(&mut self, f: impl FnOnce(&mut Self, &mut Scratch) -> R) -> R {
        let s = &mut *self.session;
        let kept = (std::mem::take(&mut s.plain), std::mem::take(&mut s.done));
        let r = with_scratch(|scratch| f(self, scratch));
        (self.session.plain, self.session.done) = kept;
        r
    }

    /// The table's `drained`: the inner handler's, when it asked.
    pub(crate) fn drained(&mut self, out: &mut Outbox<'_>) -> Result<Next, H::Error> {
        let s = &mut *self.session;
        if s.over || !s.handshaken || s.hs_partial || !std::mem::take(&mut s.inner_drain) {
            // (With part of a handshake message held, the next
            // `received_mut` calls the inner `drained` instead.)
            return Ok(Next::Continue);
        }
        let called = self.without_input(|d, scratch| {
            d.call(&mut [], 0, out, scratch, |h, _, o| {
                h.drained(o).map(|next| Step { consumed: 0, next })
            })
        })?;
        if self.session.inner_drain {
            out.notify_drained();
        }
        Ok(called.next)
    }

    /// Whether the whole handshake has taken longer than its timeout (a
    /// client that trickles bytes).
    pub(crate) fn overdue(&self) -> bool {
        !self.session.handshaken && self.session.started.elapsed() > self.timeout
    }
}

/// Copies a decrypted record's plaintext (up to `PLAIN_MAX`) to `wire`;
/// returns how much, and `discard` grown by the record's own.
fn stash(
    record: &rustls::unbuffered::AppDataRecord<'_>,
    wire: &mut [u8],
    discard: usize,
) -> (usize, usize) {
    let moved = record.payload.len().min(PLAIN_MAX);
    wire[..moved].copy_from_slice(&record.payload[..moved]);
    (moved, discard + record.discard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_room_fits_its_records_and_the_reserve() {
        for frag in [32, 512, 4096, 16384] {
            for room in (0..70_000).step_by(97) {
                let n = plain_room(room, frag);
                assert!(n <= PLAIN_MAX);
                let wire = n + n.div_ceil(frag) * RECORD_OVERHEAD;
                if n > 0 {
                    assert!(wire + RESERVE <= room.min(WIRE_MAX), "room {room} frag {frag}: {n}");
                }
            }
            // A full outbox still carries a whole record's plaintext.
            assert!(plain_room(64 << 10, 16384) == PLAIN_MAX);
        }
    }

    #[test]
    fn a_session_adds_little_to_rustls() {
        let ours = size_of::<EventSession>() - size_of::<UnbufferedServerConnection>();
        println!(
            "EventSession {} bytes, of which rustls's UnbufferedServerConnection {}",
            size_of::<EventSession>(),
            size_of::<UnbufferedServerConnection>()
        );
        assert!(ours <= 128, "{ours} bytes of our own per session");
    }
}
