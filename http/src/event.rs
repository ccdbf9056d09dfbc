//! HTTP/1.1 from an event-mode [`EventHandler`]: the same parser and body
//! decoder, driven by the bytes the event loop offers.

use core::fmt;

use sockserv_core::{EventHandler, Next, Outbox, Step};

use crate::{
    BodyDecoder, BodyLength, CONTINUE, Exchange, Limits, Piece, Refusal, RequestHead, ResponseHead,
    httparse,
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

    /// The whole request is in: answer it with [`Reply::send`].
    ///
    /// # Errors
    /// The application's: the connection closes.
    fn respond(&mut self, reply: &mut Reply<'_, '_>) -> Result<(), Self::Error>;
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
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoRoom => "the answer is larger than the send buffer's room",
            Self::HeadTooLarge => "the response head does not fit its buffer",
            Self::AlreadySent => "a second response to one request",
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
        if self.keep_alive.is_some() {
            return Err(ReplyError::AlreadySent);
        }
        let mut buf = [0u8; HEAD_MAX];
        let mut head = ResponseHead::new(&mut buf, status);
        for (name, value) in fields {
            head.header(name, value);
        }
        if self.close {
            head.close();
        }
        let plan = head
            .finish(&self.exchange, BodyLength::Known(body.len() as u64))
            .map_err(|_| ReplyError::HeadTooLarge)?;
        let body = if plan.send_body { body } else { &[] };
        if plan.head_len + body.len() > self.out.room() {
            return Err(ReplyError::NoRoom);
        }
        self.out.write(&buf[..plan.head_len]);
        self.out.write(body);
        self.keep_alive = Some(plan.keep_alive);
        Ok(())
    }
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
}

/// An HTTP/1.1 connection as an event-mode [`EventHandler`]: keep-alive,
/// pipelined requests answered in order while the send buffer has room,
/// bodies streamed to the application, refusals answered then closed. Its
/// state is a few dozen bytes beside the application's: an idle connection
/// holds no buffer.
///
/// The loop's buffer must hold a whole head: keep `Limits::max_head` at
/// most the buffer size (a larger head is refused with 431 only if the
/// buffer holds `max_head` bytes; otherwise the loop closes it as stalled).
pub struct HttpEvents<A> {
    app: A,
    limits: Limits,
    state: State,
    body: BodyDecoder,
    exchange: Exchange,
    continue_due: bool,
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
        }
    }

    /// The application.
    pub fn get_ref(&self) -> &A {
        &self.app
    }

    /// Answers the request whose body is complete, if there is room:
    /// `Some(keep_alive)` once answered.
    fn respond(&mut self, out: &mut Outbox<'_>) -> Result<Option<bool>, EventError<A::Error>> {
        if out.room() < A::MAX_REPLY {
            out.notify_drained();
            return Ok(None);
        }
        let mut reply = Reply { out, exchange: self.exchange, close: false, keep_alive: None };
        self.app.respond(&mut reply).map_err(EventError::App)?;
        let keep_alive = reply.keep_alive.ok_or(EventError::NoAnswer)?;
        self.state = State::Head;
        Ok(Some(keep_alive))
    }

    fn refuse(out: &mut Outbox<'_>, refusal: Refusal) -> EventError<A::Error> {
        out.write(refusal.response());
        EventError::Refused(refusal)
    }
}

impl<A: EventRespond> EventHandler for HttpEvents<A> {
    type Error = EventError<A::Error>;

    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                State::Head => {
                    if rest.is_empty() {
                        break;
                    }
                    let mut fields = [httparse::EMPTY_HEADER; crate::MAX_FIELDS];
                    let head = match RequestHead::parse(rest, &mut fields, &self.limits) {
                        Ok(Some(head)) => head,
                        Ok(None) => break,
                        Err(refusal) => return Err(Self::refuse(out, refusal)),
                    };
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
                        break;
                    }
                    Ok((n, Piece::End)) => {
                        used += n;
                        self.state = State::Respond;
                    }
                },
                State::Respond => match self.respond(out)? {
                    None => break,
                    Some(true) => {}
                    Some(false) => return Ok(Step::close(input.len())),
                },
            }
        }
        Ok(Step::consumed(used))
    }

    fn drained(&mut self, out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        if self.state == State::Respond {
            return match self.respond(out)? {
                Some(false) => Ok(Next::Close),
                _ => Ok(Next::Continue),
            };
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
    /// (88 bytes on x86_64) and the application: no buffer.
    #[test]
    fn the_per_connection_state_is_small() {
        let size = core::mem::size_of::<HttpEvents<Nothing>>();
        std::println!("HttpEvents state: {size} bytes");
        assert!(size <= 64, "{size}");
    }
    extern crate std;
}
