//! Event mode: socketserver's "explicit table of partially finished
//! requests", driven by readiness instead of threads.
//!
//! An [`EventHandler`] never blocks: the table calls it with the bytes that
//! arrived and a place ([`Outbox`]) to put its answer. The
//! [`ConnTable`] holds up to a fixed number of connections, lends them
//! buffers from a [`BufferPool`] while they have input to consume or
//! output to send, and moves bytes between the transport, the buffers and
//! the handlers. [`EventServer`] is the loop around it, over
//! any [`EventSource`](crate::driver::EventSource).
//!
//! ```
//! use core::convert::Infallible;
//! use sockserv::{EventHandler, Outbox, Step};
//!
//! /// The echo handler of the event mode.
//! struct Echo;
//!
//! impl EventHandler for Echo {
//!     type Error = Infallible;
//!     fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Infallible> {
//!         // Take what fits; the rest stays buffered until the peer reads.
//!         Ok(Step::consumed(out.write(input)))
//!     }
//! }
//! ```

pub(crate) mod pool;
mod server;
mod table;

use core::fmt;

use embedded_io::{Error as _, ErrorKind};

pub use pool::{BufId, BufferPool, FixedPool, pair_mut};
pub use server::{EventServer, EventServerConfig, OnShutdown, ServerSlot, WhenFull};
pub use table::{CappedSlots, ConnTable, Outcome, Slot, SlotStorage, TableStats};
pub(crate) use table::{millis, millis64, timeout_millis};

/// Slot storage with a capacity of `N` fixed at compile time, no
/// allocator: `FixedSlots::new()` (a `heapless::Vec`; slots are made as
/// connections first need them). `new` is a `const fn` and an empty
/// `FixedSlots` is all zero bytes, so it can be a `static` in `.bss`
/// that the server borrows (`&mut S` is slot storage too).
pub type FixedSlots<T, const N: usize> = heapless::Vec<T, N>;

use crate::transport::NbConnection;

/// What a connection does next, as its handler decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep the connection.
    Continue,
    /// Send what is buffered, then close.
    Close,
}

/// What [`EventHandler::received`] did with the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// How many input bytes it consumed (the rest is offered again, with
    /// more, next time).
    pub consumed: usize,
    /// Whether to keep the connection.
    pub next: Next,
}

impl Step {
    /// Consumed `n` bytes; keep going.
    pub const fn consumed(n: usize) -> Self {
        Self { consumed: n, next: Next::Continue }
    }

    /// Consumed `n` bytes; then send what is buffered and close.
    pub const fn close(n: usize) -> Self {
        Self { consumed: n, next: Next::Close }
    }
}

/// Where a handler writes its answer.
///
/// What one handler call writes is gathered and leaves in one `send`
/// after the call returns, however many `write`/`write!` pieces made it
/// (`write!(out, ":{n}\r\n")` is three pieces): one segment per answer,
/// as Python's one `write` per answer. A write larger than the free room
/// or than 4 KiB first sends what is gathered, then goes straight to the
/// connection (no copy); what the connection does not take is queued and sent as the peer
/// reads. The room is a send buffer borrowed from the pool for the call
/// and given back once everything has left (memory follows use); without
/// one (every buffer lent), writes go straight through.
pub struct Outbox<'a> {
    direct: Option<&'a mut dyn TryWrite>,
    free: &'a mut [u8],
    queued: usize,
    sent: usize,
    failed: Option<ErrorKind>,
    drain_wanted: bool,
}

impl fmt::Debug for Outbox<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("room", &self.room())
            .field("queued", &self.queued)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

/// What an [`Outbox`] did, for the table.
pub(crate) struct Done {
    pub(crate) queued: usize,
    pub(crate) sent: usize,
    pub(crate) failed: Option<ErrorKind>,
    pub(crate) drain_wanted: bool,
}

impl<'a> Outbox<'a> {
    pub(crate) fn new(direct: Option<&'a mut dyn TryWrite>, free: &'a mut [u8]) -> Self {
        Self { direct, free, queued: 0, sent: 0, failed: None, drain_wanted: false }
    }

    /// An outbox that only gathers into `buf` (nothing goes to a
    /// connection): for a layer between the table and a handler, such as
    /// TLS, that hands a handler plaintext room and encodes what it wrote
    /// ([`gathered`](Self::gathered)) into its own outbox.
    pub fn gather(buf: &'a mut [u8]) -> Self {
        Self::new(None, buf)
    }

    /// How many bytes are gathered, not yet sent (the first bytes of the
    /// buffer of [`gather`](Self::gather)).
    pub fn gathered(&self) -> usize {
        self.queued
    }

    /// Whether the handler asked for [`drained`](EventHandler::drained)
    /// ([`notify_drained`](Self::notify_drained)).
    pub fn drain_requested(&self) -> bool {
        self.drain_wanted
    }

    /// How many more bytes are certain to be taken now: the free room of
    /// the send buffer. [`write`](Self::write) may take more (what the
    /// connection accepts at once).
    pub fn room(&self) -> usize {
        self.free.len() - self.queued
    }

    /// Writes as much of `data` as the connection and the send buffer take
    /// now; returns how much that was (at least `min(data.len(), room())`).
    /// Up to 4 KiB that fit the room are gathered and sent
    /// when the handler call returns; a larger `data` sends what is
    /// gathered, then goes straight to the connection (no copy).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let mut n = 0;
        let large = data.len() > GATHER_MAX || data.len() > self.room();
        if self.direct.is_some() && large && self.flush() {
            // Too large to gather and nothing left waiting: straight to
            // the connection (order kept).
            if let Some(conn) = self.direct.as_mut() {
                match conn.try_write_kind(data) {
                    Ok(k) => n = k.min(data.len()),
                    Err(kind) => self.failed = Some(kind),
                }
            }
            self.sent += n;
            if n < data.len() {
                // The connection is full (or failed): the rest waits in
                // the buffer, and nothing more goes straight to it.
                self.direct = None;
            }
        }
        let rest = &data[n..];
        let k = rest.len().min(self.room());
        self.free[self.queued..self.queued + k].copy_from_slice(&rest[..k]);
        self.queued += k;
        n + k
    }

    /// Sends what is gathered, in one write, while the connection is still
    /// written straight to. Returns whether everything left; if not, what
    /// is left stays queued (moved to the front) and nothing more goes
    /// straight to the connection.
    fn flush(&mut self) -> bool {
        let Some(conn) = self.direct.as_mut() else {
            return false;
        };
        if self.queued == 0 {
            return true;
        }
        let k = match conn.try_write_kind(&self.free[..self.queued]) {
            Ok(k) => k.min(self.queued),
            Err(kind) => {
                self.failed = Some(kind);
                0
            }
        };
        self.sent += k;
        self.free.copy_within(k..self.queued, 0);
        self.queued -= k;
        if self.queued > 0 {
            self.direct = None;
        }
        self.queued == 0
    }

    /// Writes all of `data`, or nothing when it is longer than
    /// [`room`](Self::room).
    ///
    /// # Errors
    /// [`crate::ReplyFull`] when `data` is longer than [`room`](Self::room).
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), crate::ReplyFull> {
        if data.len() > self.room() {
            return Err(crate::ReplyFull { capacity: self.room() });
        }
        self.write(data);
        Ok(())
    }

    /// The back-pressure rule as a loop: calls `answer` with each complete
    /// command at the front of `input` (its length given by `frame`:
    /// `Some(len)` for a complete one, `None` when more bytes are needed)
    /// while at least `reply_max` bytes of [`room`](Self::room) remain, and
    /// returns how many bytes those commands took, for
    /// [`Step::consumed`]. The commands it leaves are offered again once
    /// the peer has read (see [`EventHandler`]'s "Back-pressure").
    ///
    /// `reply_max` is the most one answer writes; it must not exceed the
    /// send buffer's size, or nothing is ever answered.
    ///
    /// # Errors
    /// The first error of `answer` (returned from `received`, it closes
    /// the connection).
    pub fn answer_each<E>(
        &mut self,
        input: &[u8],
        reply_max: usize,
        frame: impl Fn(&[u8]) -> Option<usize>,
        mut answer: impl FnMut(&[u8], &mut Self) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut used = 0;
        while self.room() >= reply_max {
            let rest = &input[used..];
            let Some(len) = frame(rest).filter(|&n| n > 0 && n <= rest.len()) else {
                break;
            };
            answer(&rest[..len], self)?;
            used += len;
        }
        Ok(used)
    }

    /// [`answer_each`](Self::answer_each) for line commands: each `line`
    /// handed to `answer` ends with its `\n`.
    ///
    /// ```
    /// use core::fmt::Write as _;
    /// use sockserv::{EventHandler, Outbox, Step};
    ///
    /// struct Counter(u64);
    ///
    /// impl EventHandler for Counter {
    ///     type Error = core::fmt::Error;
    ///     fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
    ///         // ":18446744073709551615\r\n" is 23 bytes: answer only while
    ///         // that much room is left.
    ///         let used = out.answer_lines(input, 23, |_line, out| {
    ///             self.0 += 1;
    ///             write!(out, ":{}\r\n", self.0)
    ///         })?;
    ///         Ok(Step::consumed(used))
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// The first error of `answer`.
    pub fn answer_lines<E>(
        &mut self,
        input: &[u8],
        reply_max: usize,
        answer: impl FnMut(&[u8], &mut Self) -> Result<(), E>,
    ) -> Result<usize, E> {
        let line = |rest: &[u8]| rest.iter().position(|&b| b == b'\n').map(|i| i + 1);
        self.answer_each(input, reply_max, line, answer)
    }

    /// Asks for [`EventHandler::drained`] once everything written so far
    /// has been handed to the connection: the way to send an answer larger
    /// than one buffer in steps.
    pub fn notify_drained(&mut self) {
        self.drain_wanted = true;
    }

    /// `write!(out, ...)` without importing `core::fmt::Write` (see the
    /// `fmt::Write` implementation for what happens when it does not fit).
    ///
    /// # Errors
    /// A piece did not fit.
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> fmt::Result {
        fmt::Write::write_fmt(self, args)
    }

    /// Sends what is gathered and says what happened.
    pub(crate) fn done(&mut self) -> Done {
        self.flush();
        Done {
            queued: self.queued,
            sent: self.sent,
            failed: self.failed,
            drain_wanted: self.drain_wanted,
        }
    }
}

/// Formatted answers: `write!(out, "{n}\n")`. A piece that does not fit
/// (what the connection takes at once plus the send buffer's room) fails
/// with `fmt::Error` after writing what fitted, so check
/// [`room`](Outbox::room) first for an answer that must not be cut, or
/// send a long one in steps ([`notify_drained`](Outbox::notify_drained)).
impl fmt::Write for Outbox<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.write(s.as_bytes()) == s.len() { Ok(()) } else { Err(fmt::Error) }
    }
}

/// The largest write an [`Outbox`] gathers (copies to send later with the
/// rest of the answer); a larger one goes straight to the connection: a
/// copy of a page costs less than a `send`, a copy of 64 KiB more.
pub(crate) const GATHER_MAX: usize = 4096;

/// A connection as an [`Outbox`] writes through to it.
pub(crate) trait TryWrite {
    /// Writes what fits now (0 when nothing does).
    fn try_write_kind(&mut self, data: &[u8]) -> Result<usize, ErrorKind>;
}

impl<C: NbConnection> TryWrite for C {
    fn try_write_kind(&mut self, data: &[u8]) -> Result<usize, ErrorKind> {
        if data.is_empty() {
            return Ok(0);
        }
        match self.try_write(data) {
            Ok(n) => Ok(n.unwrap_or(0)),
            Err(e) => Err(e.kind()),
        }
    }
}

/// A handler for a connection that must not block: the event mode's
/// equivalent of [`StreamHandler`](crate::StreamHandler).
///
/// Every method gets an [`Outbox`] to answer into. An error is reported to
/// [`Service::handle_error`](crate::Service::handle_error) and the
/// connection is closed at once.
///
/// # Back-pressure
///
/// Check [`Outbox::room`] before acting on a command: answer only while
/// room for the whole answer remains, and leave the rest of the input
/// unconsumed. It is offered again, with the room back, once the peer
/// has read what is queued (a connection whose send buffer is full is not
/// read from, so a slow reader slows its own input, not the server). A
/// handler that acts on a command without room either cuts its answer
/// (`write!` fails with `fmt::Error`) or must drop it, and a client that
/// pipelines many commands and reads slowly then loses its connection
/// mid-pipeline. [`Outbox::answer_lines`] / [`Outbox::answer_each`] do
/// the check for you:
///
/// ```
/// # use core::fmt::Write as _;
/// # use sockserv::{EventHandler, Outbox, Step};
/// # struct Counter(u64);
/// # impl EventHandler for Counter {
/// #     type Error = core::fmt::Error;
/// fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
///     let used = out.answer_lines(input, 23, |_line, out| {
///         self.0 += 1;
///         write!(out, ":{}\r\n", self.0)
///     })?;
///     Ok(Step::consumed(used))
/// }
/// # }
/// ```
pub trait EventHandler {
    /// What the handler fails with.
    type Error: fmt::Debug;

    /// The connection opened (before any byte arrived). Default: nothing.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn opened(&mut self, _out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        Ok(Next::Continue)
    }

    /// Bytes arrived: `input` is everything received and not yet consumed.
    /// Return how much was consumed. Consuming nothing means "wait for
    /// more"; when the receive buffer is full and the handler still
    /// consumes nothing, the connection is closed with
    /// [`RequestError::Stalled`](crate::RequestError::Stalled) (for
    /// instance, a line longer than the buffer).
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error>;

    /// [`received`](Self::received) with the input writable: what the
    /// table calls. A layer that decodes in place (TLS decrypting records
    /// in the connection's buffer) overrides it; it may rewrite the input,
    /// and the bytes it leaves unconsumed are offered again as it left
    /// them, with what arrives after them. Default: `received`.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn received_mut(
        &mut self,
        input: &mut [u8],
        out: &mut Outbox<'_>,
    ) -> Result<Step, Self::Error> {
        self.received(input, out)
    }

    /// An idle timeout of the connection's own, for as long as it says so
    /// (a TLS handshake's timeout): the connection is closed with
    /// [`RequestError::IdleTimeout`](crate::RequestError::IdleTimeout)
    /// once nothing was read or written for the shorter of this and the
    /// table's idle timeout. Asked after every call of the handler.
    /// Default: `None` (the table's). At most 24 days, to the millisecond.
    fn idle_timeout(&self) -> Option<core::time::Duration> {
        None
    }

    /// The peer closed its sending side and every byte it sent was offered.
    /// Default: close (after what is buffered has been sent).
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn peer_closed(&mut self, _out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        Ok(Next::Close)
    }

    /// Everything written so far has been handed to the connection, and
    /// the handler asked to be told ([`Outbox::notify_drained`]): write
    /// the next part of a long answer. Asking again from here keeps the
    /// calls coming while each one writes something; a call that writes
    /// nothing ends them. Default: nothing.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn drained(&mut self, _out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        Ok(Next::Continue)
    }

    /// The connection closed (for whatever reason). Default: nothing.
    fn closed(&mut self) {}
}
