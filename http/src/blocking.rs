//! HTTP/1.1 from a blocking [`StreamHandler`]: requests served one after
//! another on a connection (keep-alive, pipelining), bodies streamed both
//! ways.

use core::fmt;

use embedded_io::{ErrorKind, ErrorType, Read, Write};
use sockserv_core::StreamHandler;

use crate::{
    BodyDecoder, BodyLength, CHUNK_END, CHUNK_HEADER_MAX, CONTINUE, Exchange, LAST_CHUNK, Limits,
    Piece, Refusal, RequestHead, ResponseHead, chunk_header, clock, httparse,
};

/// The header fields a request may have (more: 431).
pub const MAX_FIELDS: usize = 64;

/// How much unread request body the server reads and drops after a
/// response to keep the connection; more, and it closes instead.
pub const DRAIN_LIMIT: u64 = 64 * 1024;

/// What answers each request: the application. Called once per request
/// with its head and a [`Transaction`] to read the body from and answer
/// through; returns the [`Sent`] that only an answer gives.
///
/// ```
/// use sockserv::embedded_io::{Read, Write};
/// use sockserv::http::{Error, Respond, RequestHead, Sent, Transaction};
///
/// struct Hello;
/// impl Respond for Hello {
///     fn respond<S: Read + Write>(
///         &mut self,
///         request: &RequestHead<'_, '_>,
///         tx: &mut Transaction<'_, S>,
///     ) -> Result<Sent, Error<S::Error>> {
///         match request.target {
///             "/" => tx.send(200, &[("Content-Type", b"text/plain")], b"hello\n"),
///             _ => tx.send(404, &[], b""),
///         }
///     }
/// }
/// let handler = sockserv::http::Http::<_>::new(Hello);
/// # let _ = handler;
/// ```
pub trait Respond {
    /// Answers `request`: read its body from `tx` (as [`Read`]), answer
    /// with [`Transaction::send`] or [`Transaction::start`].
    ///
    /// # Errors
    /// Whatever reading or answering failed with; the connection closes.
    fn respond<S: Read + Write>(
        &mut self,
        request: &RequestHead<'_, '_>,
        tx: &mut Transaction<'_, S>,
    ) -> Result<Sent, Error<S::Error>>;
}

/// Proof that a response was sent (only [`Transaction`] makes one).
#[derive(Debug)]
pub struct Sent(());

/// Why serving a connection stopped.
#[derive(Debug)]
pub enum Error<E> {
    /// The connection failed.
    Io(E),
    /// The peer closed in the middle of a request's body.
    UnexpectedEof,
    /// The request was refused (answered with [`Refusal::response`] if no
    /// response had started).
    Refused(Refusal),
    /// The response head did not fit the head buffer.
    HeadTooLarge,
    /// A `Content-Length` response body got more or fewer bytes than it said.
    BodyLength,
    /// A second response to one request.
    AlreadySent,
}

impl<E> From<E> for Error<E> {
    fn from(e: E) -> Self {
        Self::Io(e)
    }
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "connection failed: {e:?}"),
            Self::UnexpectedEof => f.write_str("the peer closed inside a request body"),
            Self::Refused(r) => write!(f, "refused: {r} ({})", r.status()),
            Self::HeadTooLarge => f.write_str("the response head does not fit its buffer"),
            Self::BodyLength => f.write_str("the response body does not match its Content-Length"),
            Self::AlreadySent => f.write_str("a second response to one request"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

impl<E: embedded_io::Error> embedded_io::Error for Error<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Io(e) => e.kind(),
            Self::UnexpectedEof => ErrorKind::BrokenPipe,
            _ => ErrorKind::InvalidData,
        }
    }
}

/// One request's body and answer: [`Read`] gives the body's data (0 at its
/// end; `Expect: 100-continue` is answered on the first read that needs the
/// peer), [`send`](Self::send) / [`start`](Self::start) answer.
pub struct Transaction<'a, S> {
    stream: &'a mut S,
    buf: &'a mut [u8],
    start: usize,
    end: usize,
    body: BodyDecoder,
    continue_due: bool,
    out: &'a mut [u8],
    exchange: Exchange,
    sent: bool,
    keep_alive: bool,
}

impl<'a, S: Read + Write> Transaction<'a, S> {
    /// Sends a whole response: `status`, `fields`, a `Content-Length` body
    /// (not sent for `HEAD`). Head and a small body leave in one write.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::HeadTooLarge`], [`Error::AlreadySent`].
    pub fn send(
        &mut self,
        status: u16,
        fields: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<Sent, Error<S::Error>> {
        let plan = self.head(status, fields, BodyLength::Known(body.len() as u64))?;
        let (mut len, mut rest) = (plan.head_len, body);
        if plan.send_body && len + body.len() <= self.out.len() {
            self.out[len..len + body.len()].copy_from_slice(body);
            len += body.len();
            rest = &[];
        }
        self.stream.write_all(&self.out[..len])?;
        if plan.send_body && !rest.is_empty() {
            self.stream.write_all(rest)?;
        }
        self.stream.flush()?;
        Ok(Sent(()))
    }

    /// Sends the head and returns a writer for the body: `len` known gives
    /// `Content-Length`, unknown a chunked body (close-delimited for
    /// HTTP/1.0). Call [`ResponseBody::finish`] at the end.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn start(
        &mut self,
        status: u16,
        fields: &[(&str, &[u8])],
        len: BodyLength,
    ) -> Result<ResponseBody<'_, 'a, S>, Error<S::Error>>
    where
        Self: Sized,
    {
        let plan = self.head(status, fields, len)?;
        self.stream.write_all(&self.out[..plan.head_len])?;
        let left = match len {
            BodyLength::Known(n) => Some(n),
            BodyLength::Unknown => None,
        };
        Ok(ResponseBody { tx: self, send: plan.send_body, chunked: plan.chunked, left })
    }

    fn head(
        &mut self,
        status: u16,
        fields: &[(&str, &[u8])],
        len: BodyLength,
    ) -> Result<crate::Plan, Error<S::Error>> {
        if core::mem::replace(&mut self.sent, true) {
            return Err(Error::AlreadySent);
        }
        let mut head = ResponseHead::new(self.out, status);
        crate::clock::date(&mut head);
        for (name, value) in fields {
            head.header(name, value);
        }
        // A peer still waiting for 100 Continue will not send the body we
        // would have to read past: close after this answer.
        if self.continue_due && !self.body.is_done() {
            head.close();
        }
        let plan = head.finish(&self.exchange, len).map_err(|_| Error::HeadTooLarge)?;
        self.keep_alive = plan.keep_alive;
        Ok(plan)
    }

    /// Reads and drops what is left of the body, at most `limit` bytes:
    /// whether the body ended (the connection can serve the next request).
    fn drain(&mut self, limit: u64) -> Result<bool, Error<S::Error>> {
        let mut scratch = [0u8; 512];
        let stop = self.body.decoded().saturating_add(limit);
        while !self.body.is_done() {
            if self.continue_due || self.body.decoded() > stop {
                return Ok(false);
            }
            match self.read(&mut scratch) {
                Ok(_) => {}
                // A peer that stops sending once it has its answer (curl
                // does, for a body the server did not read) is not a failure.
                Err(Error::UnexpectedEof) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl<S: ErrorType> ErrorType for Transaction<'_, S> {
    type Error = Error<S::Error>;
}

impl<S: Read + Write> Read for Transaction<'_, S> {
    fn read(&mut self, out: &mut [u8]) -> Result<usize, Self::Error> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let window = &self.buf[self.start..self.end];
            let (used, piece) =
                self.body.decode_at_most(window, out.len()).map_err(Error::Refused)?;
            match piece {
                Piece::Data(data) => {
                    let n = data.len();
                    out[..n].copy_from_slice(data);
                    self.start += used;
                    return Ok(n);
                }
                Piece::End => {
                    self.start += used;
                    return Ok(0);
                }
                Piece::NeedMore => self.start += used,
            }
            if core::mem::take(&mut self.continue_due) {
                self.stream.write_all(CONTINUE)?;
                self.stream.flush()?;
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                return Err(Error::Refused(Refusal::Malformed));
            }
            match self.stream.read(&mut self.buf[self.end..])? {
                0 => return Err(Error::UnexpectedEof),
                n => self.end += n,
            }
        }
    }
}

/// A response body being sent: [`Write`] frames it (chunks, or checks the
/// `Content-Length`; drops it for `HEAD`); [`finish`](Self::finish) ends it.
pub struct ResponseBody<'t, 'a, S> {
    tx: &'t mut Transaction<'a, S>,
    send: bool,
    chunked: bool,
    left: Option<u64>,
}

impl<S: Read + Write> ResponseBody<'_, '_, S> {
    /// Ends the body (the last chunk, or checks that the announced length
    /// was written).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::BodyLength`] when fewer bytes than announced
    /// were written.
    pub fn finish(self) -> Result<Sent, Error<S::Error>> {
        match self.left {
            Some(n) if n > 0 && self.send => {
                self.tx.keep_alive = false;
                return Err(Error::BodyLength);
            }
            _ => {}
        }
        if self.chunked {
            self.tx.stream.write_all(LAST_CHUNK)?;
        }
        self.tx.stream.flush()?;
        Ok(Sent(()))
    }

    /// Sends `n` bytes of the body through `send`, which gets the
    /// connection itself and returns how many bytes it wrote to it (a file
    /// sent with `sendfile(2)` through another handle of the same socket,
    /// say: the head is already out, nothing is buffered here). Counted as
    /// [`write`](Write::write) counts; not called for `HEAD`; a chunked
    /// body gets one chunk of `n` bytes around it. What made `send` stop
    /// short is the caller's to report.
    ///
    /// # Errors
    /// [`Error::BodyLength`] when `n` is more than is left of a
    /// `Content-Length` body (`send` not called) or `send` wrote fewer
    /// than `n` bytes (the connection then closes); [`Error::Io`].
    pub fn send_direct(
        &mut self,
        n: u64,
        send: impl FnOnce(&mut S) -> u64,
    ) -> Result<(), Error<S::Error>> {
        if let Some(left) = &mut self.left {
            if n > *left {
                self.tx.keep_alive = false;
                return Err(Error::BodyLength);
            }
            *left -= n;
        }
        if !self.send || n == 0 {
            return Ok(());
        }
        if self.chunked {
            let Ok(len) = usize::try_from(n) else {
                self.tx.keep_alive = false;
                return Err(Error::BodyLength);
            };
            let mut line = [0u8; CHUNK_HEADER_MAX];
            self.tx.stream.write_all(chunk_header(len, &mut line))?;
        }
        if send(self.tx.stream) != n {
            self.tx.keep_alive = false;
            return Err(Error::BodyLength);
        }
        if self.chunked {
            self.tx.stream.write_all(CHUNK_END)?;
        }
        Ok(())
    }
}

impl<S: ErrorType> ErrorType for ResponseBody<'_, '_, S> {
    type Error = Error<S::Error>;
}

impl<S: Read + Write> Write for ResponseBody<'_, '_, S> {
    fn write(&mut self, data: &[u8]) -> Result<usize, Self::Error> {
        if let Some(left) = &mut self.left {
            if data.len() as u64 > *left {
                self.tx.keep_alive = false;
                return Err(Error::BodyLength);
            }
            *left -= data.len() as u64;
        }
        if !self.send || data.is_empty() {
            return Ok(data.len());
        }
        if !self.chunked {
            self.tx.stream.write_all(data)?;
            return Ok(data.len());
        }
        // One write per chunk when it fits the head buffer, else three.
        let mut line = [0u8; CHUNK_HEADER_MAX];
        let line = chunk_header(data.len(), &mut line);
        let total = line.len() + data.len() + CHUNK_END.len();
        if total <= self.tx.out.len() {
            let out = &mut self.tx.out[..total];
            out[..line.len()].copy_from_slice(line);
            out[line.len()..total - 2].copy_from_slice(data);
            out[total - 2..].copy_from_slice(CHUNK_END);
            self.tx.stream.write_all(out)?;
        } else {
            self.tx.stream.write_all(line)?;
            self.tx.stream.write_all(data)?;
            self.tx.stream.write_all(CHUNK_END)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(self.tx.stream.flush()?)
    }
}

/// An HTTP/1.1 connection as a blocking [`StreamHandler`]: serves requests
/// one after another (keep-alive, pipelined requests in order) through a
/// [`Respond`], until the peer closes, a response closes, or a request is
/// refused (answered with its status, then closed).
///
/// `N` is each of its three buffers (request head, request body, response
/// head): the head limit is at most `N`.
pub struct Http<R, const N: usize = 4096> {
    respond: R,
    limits: Limits,
    head: [u8; N],
    body: [u8; N],
    out: [u8; N],
}

impl<R: Respond, const N: usize> Http<R, N> {
    /// A handler with [`Limits::default`] (the head limit cut to `N`).
    pub fn new(respond: R) -> Self {
        Self::with_limits(respond, Limits::default())
    }

    /// A handler with `limits` (the head limit cut to `N`).
    pub fn with_limits(respond: R, mut limits: Limits) -> Self {
        const { assert!(N >= 2 * crate::MAX_CHUNK_LINE, "a chunk-size line must fit the body buffer") };
        limits.max_head = limits.max_head.min(N);
        Self { respond, limits, head: [0; N], body: [0; N], out: [0; N] }
    }

    /// The application.
    pub fn get_ref(&self) -> &R {
        &self.respond
    }

    /// Reads until a head is complete; `Ok(false)` for a peer that closed
    /// between requests.
    fn read_head<S: Read>(
        &mut self,
        stream: &mut S,
        filled: &mut usize,
    ) -> Result<bool, Error<S::Error>> {
        let mut since = None;
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            match RequestHead::parse(&self.head[..*filled], &mut fields, &self.limits) {
                Ok(Some(_)) => return Ok(true),
                // A head begun: it must be whole within the limit.
                Ok(None) if *filled > 0 && clock::overdue(&mut since, self.limits.head_timeout) => {
                    return Err(Error::Refused(Refusal::HeadTimeout));
                }
                Ok(None) => {}
                Err(refusal) => return Err(Error::Refused(refusal)),
            }
            match stream.read(&mut self.head[*filled..])? {
                0 if *filled == 0 => return Ok(false),
                0 => return Err(Error::UnexpectedEof),
                n => *filled += n,
            }
        }
    }

    /// Serves one request whose head is in `head[..filled]`; returns
    /// whether the connection goes on, with the next request's bytes moved
    /// to the front of `head` (`filled` updated).
    fn exchange<S: Read + Write>(
        &mut self,
        stream: &mut S,
        filled: &mut usize,
    ) -> Result<bool, Error<S::Error>> {
        let Self { respond, limits, head, body, out } = self;
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let request = match RequestHead::parse(&head[..*filled], &mut fields, limits) {
            Ok(Some(request)) => request,
            Ok(None) => return Err(Error::UnexpectedEof),
            Err(refusal) => return Err(Error::Refused(refusal)),
        };
        let leftover = *filled - request.head_len;
        body[..leftover].copy_from_slice(&head[request.head_len..*filled]);
        let mut tx = Transaction {
            stream,
            buf: &mut body[..],
            start: 0,
            end: leftover,
            body: BodyDecoder::new(request.framing, limits.max_body),
            continue_due: request.expect_continue,
            out: &mut out[..],
            exchange: Exchange::of(&request),
            sent: false,
            keep_alive: false,
        };
        match respond.respond(&request, &mut tx) {
            Ok(Sent(())) => {}
            Err(Error::Refused(refusal)) if !tx.sent => {
                tx.stream.write_all(refusal.response())?;
                return Err(Error::Refused(refusal));
            }
            Err(e) => return Err(e),
        }
        let go_on = tx.keep_alive && tx.drain(DRAIN_LIMIT)?;
        let (start, end) = (tx.start, tx.end);
        head[..end - start].copy_from_slice(&body[start..end]);
        *filled = end - start;
        Ok(go_on)
    }
}

impl<R: Respond, S: Read + Write, const N: usize> StreamHandler<S> for Http<R, N> {
    type Error = Error<S::Error>;

    fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error> {
        let mut filled = 0;
        loop {
            match self.read_head(stream, &mut filled) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(Error::Refused(refusal)) => {
                    stream.write_all(refusal.response())?;
                    return Err(Error::Refused(refusal));
                }
                Err(e) => return Err(e),
            }
            if !self.exchange(stream, &mut filled)? {
                return Ok(());
            }
        }
    }
}
