//! HTTP/1.1 from an event-mode [`EventHandler`]: the same parser and body
//! decoder, driven by the bytes the event loop offers.

use core::fmt;

use sockserv_core::{EventHandler, Next, Outbox, Step};

use crate::{
    BodyDecoder, BodyLength, CHUNK_END, CHUNK_HEADER_MAX, CONTINUE, Exchange, Limits, Piece, Plan,
    Refusal, RequestHead, ResponseHead, chunk_header, clock, httparse,
};

/// What answers each request in event mode. The head's bytes are gone
/// once [`head`](Self::head) returns (the loop reuses its buffers), so keep
/// what the answer needs; body data comes in pieces to [`body`](Self::body);
/// [`respond`](Self::respond) answers once the whole request is in.
///
/// ```
/// use sockserv::http::{EventRespond, Reply, RequestHead};
///
/// #[derive(Default)]
/// struct Hello { found: bool }
/// impl EventRespond for Hello {
///     type Error = sockserv::http::ReplyError;
///     fn head(&mut self, request: &RequestHead<'_, '_>) -> Result<(), Self::Error> {
///         self.found = request.target == "/";
///         Ok(())
///     }
///     fn respond(&mut self, reply: &mut Reply<'_, '_>) -> Result<(), Self::Error> {
///         match self.found {
///             true => reply.send(200, &[("Content-Type", b"text/plain")], b"hello\n"),
///             false => reply.send(404, &[], b""),
///         }
///     }
/// }
/// let handler = sockserv::http::HttpEvents::new(Hello::default());
/// # let _ = handler;
/// ```
pub trait EventRespond {
    /// The application's error (closes the connection, reported).
    type Error: fmt::Debug;
    /// The most one answer (head and body) writes: a request is answered
    /// only while the send buffer has that much room (back-pressure: the
    /// rest of a pipelined flood waits, unread, in the connection).
    const MAX_REPLY: usize = 1024;

    /// A request's head arrived.
    ///
    /// # Errors
    /// The application's: the connection closes.
    fn head(&mut self, request: &RequestHead<'_, '_>) -> Result<(), Self::Error>;

    /// A piece of the request's body (never held whole).
    ///
    /// # Errors
    /// The application's: the connection closes.
    fn body(&mut self, _data: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The whole request is in: answer it with [`Reply::send`] (a whole
    /// answer of at most [`MAX_REPLY`](Self::MAX_REPLY) bytes) or
    /// [`Reply::start`] (a head, then a body of any length that
    /// [`fill`](Self::fill) supplies as the connection takes it).
    ///
    /// # Errors
    /// The application's: the connection closes.
    fn respond(&mut self, reply: &mut Reply<'_, '_>) -> Result<(), Self::Error>;

    /// The body of an answer begun with [`Reply::start`]: fill `buf` with
    /// the body's bytes from `offset` on and return how many (fewer is
    /// fine; `0` ends a body of [`BodyLength::Unknown`] length, and is an
    /// error before a `Known` length is reached). Called as the connection
    /// takes the body, so a file is read piece by piece, never held whole.
    ///
    /// A source must be readable again at an offset: when the connection
    /// took only part of a piece, the rest is asked for again (from the
    /// offset it starts at) once the peer has read, instead of being kept
    /// in a buffer per connection. A file read with `pread`, or a slice,
    /// is such a source.
    ///
    /// # Errors
    /// The application's: the connection closes (the peer sees a short body).
    fn fill(&mut self, _offset: u64, _buf: &mut [u8]) -> Result<usize, Self::Error> {
        Ok(0)
    }
}

/// Why an answer could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Head and body are larger than the send buffer's room (more than
    /// [`EventRespond::MAX_REPLY`]).
    NoRoom,
    /// The head did not fit its 1 KiB buffer.
    HeadTooLarge,
    /// A second answer to one request.
    AlreadySent,
    /// [`EventRespond::fill`] ended the body before its `Content-Length`
    /// (or gave less than before at an offset asked again).
    BodyShort,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoRoom => "the answer is larger than the send buffer's room",
            Self::HeadTooLarge => "the response head does not fit its buffer",
            Self::AlreadySent => "a second response to one request",
            Self::BodyShort => "the body source ended before the body's length",
        })
    }
}

impl core::error::Error for ReplyError {}

/// One request's answer in event mode.
pub struct Reply<'o, 'a> {
    out: &'o mut Outbox<'a>,
    exchange: Exchange,
    close: bool,
    keep_alive: Option<bool>,
    stream: Stream,
}

/// The response head's buffer (a stack array per answer).
const HEAD_MAX: usize = 1024;

impl Reply<'_, '_> {
    /// Sends a whole response with a `Content-Length` body (not sent for
    /// `HEAD`), in one piece.
    ///
    /// # Errors
    /// [`ReplyError`]; nothing was written.
    pub fn send(
        &mut self,
        status: u16,
        fields: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<(), ReplyError> {
        let mut buf = [0u8; HEAD_MAX];
        let plan = self.head(&mut buf, status, fields, BodyLength::Known(body.len() as u64))?;
        let body = if plan.send_body { body } else { &[] };
        if plan.head_len + body.len() > self.out.room() {
            return Err(ReplyError::NoRoom);
        }
        self.out.write(&buf[..plan.head_len]);
        self.out.write(body);
        self.keep_alive = Some(plan.keep_alive);
        Ok(())
    }

    /// Sends a response head now and its body as the connection takes it:
    /// [`EventRespond::fill`] is asked for the body piece by piece (one
    /// stack buffer per call, nothing held per connection), with
    /// `Content-Length` for a [`BodyLength::Known`] length, else chunked
    /// (HTTP/1.0: sent as is, then the connection closes). No body for
    /// `HEAD`, 204 and 304. Requests pipelined behind it wait, unread,
    /// until its last byte is out.
    ///
    /// # Errors
    /// [`ReplyError`]; nothing was written.
    pub fn start(
        &mut self,
        status: u16,
        fields: &[(&str, &[u8])],
        length: BodyLength,
    ) -> Result<(), ReplyError> {
        let mut buf = [0u8; HEAD_MAX];
        let plan = self.head(&mut buf, status, fields, length)?;
        if plan.head_len > self.out.room() {
            return Err(ReplyError::NoRoom);
        }
        self.out.write(&buf[..plan.head_len]);
        self.keep_alive = Some(plan.keep_alive);
        if plan.send_body {
            self.stream = Stream {
                len: match length {
                    BodyLength::Known(n) => n,
                    BodyLength::Unknown => UNKNOWN,
                },
                chunked: plan.chunked,
                ..Stream::NONE
            };
        }
        Ok(())
    }

    /// The response head for `send` and `start`, built in `buf`: the
    /// status, `Date`, the caller's fields, `Connection: close` when this
    /// exchange ends the connection.
    fn head(
        &self,
        buf: &mut [u8; HEAD_MAX],
        status: u16,
        fields: &[(&str, &[u8])],
        length: BodyLength,
    ) -> Result<Plan, ReplyError> {
        if self.keep_alive.is_some() {
            return Err(ReplyError::AlreadySent);
        }
        let mut head = ResponseHead::new(buf, status);
        clock::date(&mut head);
        for (name, value) in fields {
            head.header(name, value);
        }
        if self.close {
            head.close();
        }
        head.finish(&self.exchange, length).map_err(|_| ReplyError::HeadTooLarge)
    }
}

/// A streamed body's length when the source says where it ends.
const UNKNOWN: u64 = u64::MAX;

/// Where a streamed body stands: `sent` bytes of the body have left; a
/// chunk cut short by a full connection is resumed from `pos` (bytes of
/// its header, data and CRLF written) with its data asked again.
#[derive(Debug, Clone, Copy)]
struct Stream {
    sent: u64,
    len: u64,
    chunk: u32,
    pos: u32,
    in_chunk: bool,
    chunked: bool,
}

impl Stream {
    /// No body (or all of it sent).
    const NONE: Self = Self { sent: 0, len: 0, chunk: 0, pos: 0, in_chunk: false, chunked: false };
}

/// The stack buffer for a body this small (instead of all of `S`).
const SMALL_PIECE: usize = 4096;

/// How many pieces one call writes at most before letting the loop serve
/// others (it asks to be called again once they have left).
const PIECES_PER_CALL: usize = 16;

/// Writes what remains of `piece` (whose first byte is byte `start` of
/// the chunk) given `pos` bytes of the chunk written; false when the
/// connection did not take all of it.
fn put(out: &mut Outbox<'_>, piece: &[u8], start: usize, pos: &mut u32) -> bool {
    let done = (*pos as usize).saturating_sub(start).min(piece.len());
    let rest = &piece[done..];
    let w = out.write(rest);
    *pos += w as u32;
    w == rest.len()
}

/// Writes the streamed body while the connection takes it (at most
/// [`PIECES_PER_CALL`] pieces of `buf`): `Ok(true)` once all of it has
/// been written; else it asked to be called again from `drained`.
fn pump<A: EventRespond>(
    app: &mut A,
    s: &mut Stream,
    buf: &mut [u8],
    out: &mut Outbox<'_>,
) -> Result<bool, EventError<A::Error>> {
    let size = buf.len();
    for _ in 0..PIECES_PER_CALL {
        if !s.chunked {
            let want = usize::try_from(s.len - s.sent).unwrap_or(usize::MAX).min(size);
            if want == 0 {
                return Ok(true);
            }
            let n = app.fill(s.sent, &mut buf[..want]).map_err(EventError::App)?.min(want);
            if n == 0 {
                return match s.len {
                    UNKNOWN => Ok(true),
                    _ => Err(EventError::Reply(ReplyError::BodyShort)),
                };
            }
            let w = out.write(&buf[..n]);
            s.sent += w as u64;
            if w < n {
                out.notify_drained();
                return Ok(false);
            }
        } else if !s.in_chunk {
            // A new chunk: its data read after room for its header, so
            // header, data and CRLF leave in one write.
            let room = size - CHUNK_HEADER_MAX - CHUNK_END.len();
            let data = &mut buf[CHUNK_HEADER_MAX..CHUNK_HEADER_MAX + room];
            let n = app.fill(s.sent, data).map_err(EventError::App)?.min(room);
            let mut h = [0u8; CHUNK_HEADER_MAX];
            let header: &[u8] = if n == 0 { b"0\r\n" } else { chunk_header(n, &mut h) };
            let start = CHUNK_HEADER_MAX - header.len();
            buf[start..CHUNK_HEADER_MAX].copy_from_slice(header);
            buf[CHUNK_HEADER_MAX + n..CHUNK_HEADER_MAX + n + 2].copy_from_slice(CHUNK_END);
            let whole = &buf[start..CHUNK_HEADER_MAX + n + 2];
            let w = out.write(whole);
            if w < whole.len() {
                *s = Stream { chunk: n as u32, pos: w as u32, in_chunk: true, ..*s };
                out.notify_drained();
                return Ok(false);
            }
            if n == 0 {
                return Ok(true);
            }
            s.sent += n as u64;
        } else {
            // The rest of a chunk cut short: header, data (asked again
            // from where it stopped), CRLF.
            let n = s.chunk as usize;
            let mut h = [0u8; CHUNK_HEADER_MAX];
            let header: &[u8] = if n == 0 { b"0\r\n" } else { chunk_header(n, &mut h) };
            let hl = header.len();
            if !put(out, header, 0, &mut s.pos) {
                out.notify_drained();
                return Ok(false);
            }
            while (s.pos as usize) < hl + n {
                let at = s.pos as usize - hl;
                let want = (n - at).min(size);
                let got =
                    app.fill(s.sent + at as u64, &mut buf[..want]).map_err(EventError::App)?;
                if got == 0 {
                    return Err(EventError::Reply(ReplyError::BodyShort));
                }
                if !put(out, &buf[..got.min(want)], s.pos as usize, &mut s.pos) {
                    out.notify_drained();
                    return Ok(false);
                }
            }
            if !put(out, CHUNK_END, hl + n, &mut s.pos) {
                out.notify_drained();
                return Ok(false);
            }
            s.in_chunk = false;
            s.sent += n as u64;
            if n == 0 {
                return Ok(true);
            }
        }
    }
    out.notify_drained();
    Ok(false)
}

/// Why an HTTP connection in event mode closed with an error.
#[derive(Debug)]
pub enum EventError<E> {
    /// The request was refused (its answer was sent).
    Refused(Refusal),
    /// The application failed.
    App(E),
    /// The application's answer could not be written.
    Reply(ReplyError),
    /// `respond` returned without answering.
    NoAnswer,
}

impl<E: fmt::Debug> fmt::Display for EventError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(r) => write!(f, "refused: {r} ({})", r.status()),
            Self::App(e) => write!(f, "the application failed: {e:?}"),
            Self::Reply(e) => write!(f, "{e}"),
            Self::NoAnswer => f.write_str("respond returned without answering"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for EventError<E> {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body,
    Respond,
    /// Answered; the body (if any) is being streamed.
    Stream,
}

/// An HTTP/1.1 connection as an event-mode [`EventHandler`]: keep-alive,
/// pipelined requests answered in order while the send buffer has room,
/// bodies streamed to the application, answers of any length streamed
/// from [`EventRespond::fill`] as the peer reads them, refusals answered
/// then closed. Its state is a few dozen bytes beside the application's:
/// an idle connection holds no buffer.
///
/// `S` is the stack buffer a streamed body is read into, one call at a
/// time (16 KiB by default; [`with_stream_buffer`](Self::with_stream_buffer)).
///
/// The loop's buffer must hold a whole head: keep `Limits::max_head` at
/// most the buffer size (a larger head is refused with 431 only if the
/// buffer holds `max_head` bytes; otherwise the loop closes it as stalled).
pub struct HttpEvents<A, const S: usize = 16384> {
    app: A,
    limits: Limits,
    state: State,
    body: BodyDecoder,
    exchange: Exchange,
    continue_due: bool,
    keep_alive: bool,
    stream: Stream,
    /// When the head being received began (for the head timeout).
    head_since: Option<clock::Instant>,
    /// `received` left whole requests unconsumed (waiting behind an answer
    /// or for room), not just the start of one.
    input_left: bool,
    /// The peer closed its sending side while requests were still answered.
    peer_gone: bool,
    /// Part of a head has arrived (the connection's idle timeout is then
    /// `Limits::head_timeout`).
    partial_head: bool,
}

impl<A: EventRespond> HttpEvents<A> {
    /// A handler with [`Limits::default`].
    pub fn new(app: A) -> Self {
        Self::with_limits(app, Limits::default())
    }

    /// A handler with `limits`.
    pub fn with_limits(app: A, limits: Limits) -> Self {
        Self {
            app,
            limits,
            state: State::Head,
            body: BodyDecoder::new(crate::Framing::None, 0),
            exchange: Exchange { minor_version: 1, head_only: false, keep_alive: false },
            continue_due: false,
            keep_alive: false,
            stream: Stream::NONE,
            head_since: None,
            input_left: false,
            peer_gone: false,
            partial_head: false,
        }
    }
}

impl<A: EventRespond, const S: usize> HttpEvents<A, S> {
    /// The same handler with a stream buffer of `T` bytes (on the stack
    /// while a body is written; at least 64).
    pub fn with_stream_buffer<const T: usize>(self) -> HttpEvents<A, T> {
        const { assert!(T >= 64) };
        let Self {
            app,
            limits,
            state,
            body,
            exchange,
            continue_due,
            keep_alive,
            stream,
            head_since,
            input_left,
            peer_gone,
            partial_head,
        } = self;
        HttpEvents {
            app,
            limits,
            state,
            body,
            exchange,
            continue_due,
            keep_alive,
            stream,
            head_since,
            input_left,
            peer_gone,
            partial_head,
        }
    }

    /// The application.
    pub fn get_ref(&self) -> &A {
        &self.app
    }

    /// Answers the request whose body is complete, if there is room:
    /// true once answered (the state is then `Stream`).
    fn respond(&mut self, out: &mut Outbox<'_>) -> Result<bool, EventError<A::Error>> {
        if out.room() < A::MAX_REPLY {
            out.notify_drained();
            return Ok(false);
        }
        let mut reply = Reply {
            out,
            exchange: self.exchange,
            close: false,
            keep_alive: None,
            stream: Stream::NONE,
        };
        self.app.respond(&mut reply).map_err(EventError::App)?;
        self.keep_alive = reply.keep_alive.ok_or(EventError::NoAnswer)?;
        self.stream = reply.stream;
        self.state = State::Stream;
        Ok(true)
    }

    /// Streams the answer's body: `Some(keep_alive)` once it is all out.
    fn stream(&mut self, out: &mut Outbox<'_>) -> Result<Option<bool>, EventError<A::Error>> {
        if self.stream.len != 0 {
            // A body that fits a page does not pay for zeroing all of `S`.
            let left = self.stream.len - self.stream.sent;
            let done = if !self.stream.chunked && left <= SMALL_PIECE as u64 && S > SMALL_PIECE {
                pump(&mut self.app, &mut self.stream, &mut [0u8; SMALL_PIECE], out)?
            } else {
                pump(&mut self.app, &mut self.stream, &mut [0u8; S], out)?
            };
            if !done {
                return Ok(None);
            }
            self.stream = Stream::NONE;
        }
        self.state = State::Head;
        Ok(Some(self.keep_alive))
    }

    fn refuse(out: &mut Outbox<'_>, refusal: Refusal) -> EventError<A::Error> {
        out.write(refusal.response());
        EventError::Refused(refusal)
    }
}

impl<A: EventRespond, const S: usize> EventHandler for HttpEvents<A, S> {
    type Error = EventError<A::Error>;

    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        let mut used = 0;
        // Stopped for want of input (not of room, nor behind an answer).
        let mut need_more = false;
        loop {
            let rest = &input[used..];
            match self.state {
                State::Head => {
                    if rest.is_empty() {
                        // All answered; a peer that stopped sending is done.
                        if self.peer_gone {
                            return Ok(Step::close(input.len()));
                        }
                        break;
                    }
                    let mut fields = [httparse::EMPTY_HEADER; crate::MAX_FIELDS];
                    let head = match RequestHead::parse(rest, &mut fields, &self.limits) {
                        Ok(Some(head)) => head,
                        // A head begun: it must be whole within the limit
                        // (checked as its bytes arrive).
                        Ok(None)
                            if clock::overdue(&mut self.head_since, self.limits.head_timeout) =>
                        {
                            return Err(Self::refuse(out, Refusal::HeadTimeout));
                        }
                        Ok(None) if self.peer_gone => return Ok(Step::close(input.len())),
                        Ok(None) => {
                            self.partial_head = true;
                            need_more = true;
                            break;
                        }
                        Err(refusal) => return Err(Self::refuse(out, refusal)),
                    };
                    self.head_since = None;
                    self.partial_head = false;
                    // Answer only with room for it: else leave the request
                    // unread (offered again once the peer has read).
                    if out.room() < A::MAX_REPLY {
                        out.notify_drained();
                        break;
                    }
                    self.app.head(&head).map_err(EventError::App)?;
                    self.exchange = Exchange::of(&head);
                    self.continue_due = head.expect_continue;
                    self.body = BodyDecoder::new(head.framing, self.limits.max_body);
                    self.state = State::Body;
                    used += head.head_len;
                }
                State::Body => match self.body.decode(rest) {
                    Err(refusal) => return Err(Self::refuse(out, refusal)),
                    Ok((n, Piece::Data(data))) => {
                        self.continue_due = false;
                        self.app.body(data).map_err(EventError::App)?;
                        used += n;
                    }
                    Ok((n, Piece::NeedMore)) => {
                        used += n;
                        if core::mem::take(&mut self.continue_due) {
                            out.write(CONTINUE);
                        }
                        need_more = true;
                        break;
                    }
                    Ok((n, Piece::End)) => {
                        used += n;
                        self.state = State::Respond;
                    }
                },
                State::Respond => {
                    if !self.respond(out)? {
                        break;
                    }
                }
                State::Stream => match self.stream(out)? {
                    None => break,
                    Some(true) => {}
                    Some(false) => return Ok(Step::close(input.len())),
                },
            }
        }
        self.input_left = !need_more && used < input.len();
        Ok(Step::consumed(used))
    }

    /// While part of a head has arrived, a peer that sends nothing more
    /// for `Limits::head_timeout` is closed (the table's clock: this bounds
    /// a client that starts a head and goes quiet, with or without `std`).
    fn idle_timeout(&self) -> Option<core::time::Duration> {
        (self.state == State::Head && self.partial_head).then_some(self.limits.head_timeout)
    }

    /// The peer stopped sending (a half-close after its requests, as
    /// `nc -N` does): an answer under way is finished, and requests
    /// already received are still answered, then the connection closes.
    fn peer_closed(&mut self, _out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        if matches!(self.state, State::Respond | State::Stream)
            || (self.state == State::Head && self.input_left)
        {
            self.peer_gone = true;
            return Ok(Next::Continue);
        }
        Ok(Next::Close)
    }

    fn drained(&mut self, out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        if self.state == State::Respond && !self.respond(out)? {
            return Ok(Next::Continue);
        }
        match self.state {
            State::Stream => match self.stream(out)? {
                Some(false) => return Ok(Next::Close),
                // Nothing left to answer for a peer that stopped sending
                // (with input left, `received` answers it next).
                Some(true) if self.peer_gone && !self.input_left => return Ok(Next::Close),
                _ => {}
            },
            State::Head if self.peer_gone && !self.input_left => return Ok(Next::Close),
            _ => {}
        }
        Ok(Next::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl EventRespond for Nothing {
        type Error = ReplyError;
        fn head(&mut self, _: &RequestHead<'_, '_>) -> Result<(), Self::Error> {
            Ok(())
        }
        fn respond(&mut self, reply: &mut Reply<'_, '_>) -> Result<(), Self::Error> {
            reply.send(204, &[], b"")
        }
    }

    /// What an idle keep-alive connection costs beside the loop's slot
    /// (88 bytes on x86_64) and the application: no buffer; 128 bytes of
    /// its own on x86_64 with the `std` feature's clock (the head
    /// timeout's start).
    #[test]
    fn the_per_connection_state_is_small() {
        let size = core::mem::size_of::<HttpEvents<Nothing>>();
        std::println!("HttpEvents state: {size} bytes");
        assert!(size <= 128, "{size}");
    }
    extern crate std;
}
