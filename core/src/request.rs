//! One request, start to end: CPython's `finish_request` + `shutdown_request`
//! for streams and datagrams. Dispatch strategies (inline, threads, fork)
//! call these wherever they run the request.

use core::fmt;

use embedded_io::ErrorKind;

use crate::handler::{DatagramHandler, Phase, ReplyWriter, RequestError, Service, StreamHandler};
use crate::transport::Connection;

/// Serves one stream connection: makes the handler, runs `setup`, then —
/// if setup succeeded — `handle` and `finish` (always, even when `handle`
/// failed): CPython's `setup(); try: handle() finally: finish()`. Every
/// error goes to [`crate::Service::handle_error`] (`handle`'s first, then
/// `finish`'s: none is lost). Then the connection is shut down
/// (`shutdown(SHUT_WR)`, then close by drop) — CPython's `finish_request`
/// followed by `shutdown_request`.
///
/// Returns `true` when the handler succeeded (a forked child exits with
/// status 0 then, 1 otherwise).
///
/// A panic in the handler unwinds through this function (CPython lets
/// `SystemExit` through the same way); the connection is still half-closed
/// and closed on the way out, as CPython's bare `except:` does. Adapters
/// that can catch panics do so around it.
pub fn serve_stream<S, A, Svc>(service: &Svc, stream: S, client: &A) -> bool
where
    S: Connection,
    A: fmt::Debug,
    Svc: Service<A, Handler: StreamHandler<S>> + ?Sized,
{
    let mut stream = ShutdownOnDrop(stream);
    let mut handler = service.handler(client);
    if let Err(error) = handler.setup(&mut stream.0) {
        service.handle_error(client, &RequestError::handler(Phase::Setup, &error));
        return false;
    }
    let handled = handler.handle(&mut stream.0);
    let finished = handler.finish(&mut stream.0);
    report(service, client, &handled, &finished)
}

/// Reports `handle`'s and `finish`'s errors, in that order; `true` if
/// neither failed.
fn report<A, E, Svc>(
    service: &Svc,
    client: &A,
    handled: &Result<(), E>,
    finished: &Result<(), E>,
) -> bool
where
    A: fmt::Debug,
    E: fmt::Debug,
    Svc: crate::Service<A> + ?Sized,
{
    for (phase, result) in [(Phase::Handle, handled), (Phase::Finish, finished)] {
        if let Err(error) = result {
            service.handle_error(client, &RequestError::handler(phase, error));
        }
    }
    handled.is_ok() && finished.is_ok()
}

/// Half-closes, then closes, when dropped: also on the way out of a panic.
struct ShutdownOnDrop<S: Connection>(S);

impl<S: Connection> Drop for ShutdownOnDrop<S> {
    fn drop(&mut self) {
        // A peer that already went away is not an error here (CPython
        // ignores OSError in shutdown_request).
        let _ = self.0.shutdown_write();
    }
}

/// CPython's `TCPServer.shutdown_request`: half-close the sending side (so
/// the peer reads everything already written, then EOF), ignoring a peer
/// that already went away, then close.
pub fn shutdown_stream<S: Connection>(stream: S) {
    drop(ShutdownOnDrop(stream));
}

/// Serves one datagram: reports a truncated datagram to
/// [`crate::Service::handle_error`] (the handler never sees it); otherwise
/// runs `setup`, `handle` and `finish` as [`serve_stream`] does, with a [`ReplyWriter`] over `reply_buf` and sends the
/// reply to `client` through `send` — an empty datagram when the handler
/// wrote nothing, as CPython's `DatagramRequestHandler.finish` does, unless
/// the handler suppressed it.
///
/// `send` is the socket's `send_to` (a closure so that a strategy can reply
/// through whatever handle to the socket it holds). A send that fails is
/// reported as [`RequestError::Reply`]; one that could not leave without
/// waiting ([`ReplySendError::WouldBlock`]) as [`RequestError::ReplyDropped`].
///
/// Returns `true` when the handler and the send succeeded.
pub fn serve_datagram<A, Svc, F>(
    service: &Svc,
    packet: &[u8],
    truncated: Option<usize>,
    client: &A,
    reply_buf: &mut [u8],
    send: F,
) -> bool
where
    A: fmt::Debug,
    Svc: Service<A, Handler: DatagramHandler> + ?Sized,
    F: FnOnce(&[u8], &A) -> Result<(), ReplySendError>,
{
    if let Some(size) = truncated {
        let error = RequestError::Truncated { size, capacity: packet.len() };
        service.handle_error(client, &error);
        return false;
    }
    let mut handler = service.handler(client);
    if let Err(error) = handler.setup() {
        // CPython: setup failing skips handle and finish, so no reply.
        service.handle_error(client, &RequestError::handler(Phase::Setup, &error));
        return false;
    }
    let mut reply = ReplyWriter::new(reply_buf);
    let handled = handler.handle(packet, &mut reply);
    let finished = handler.finish(&mut reply);
    let mut ok = report(service, client, &handled, &finished);
    if !reply.is_suppressed()
        && let Err(failed) = send(reply.as_slice(), client)
    {
        let error = match failed {
            ReplySendError::WouldBlock => {
                RequestError::ReplyDropped { len: reply.as_slice().len() }
            }
            ReplySendError::Failed(kind) => RequestError::Reply(kind),
        };
        service.handle_error(client, &error);
        ok = false;
    }
    ok
}

/// Why a datagram reply did not leave: what the `send` of
/// [`serve_datagram`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplySendError {
    /// The stack could not take the datagram without waiting (a
    /// Unix-datagram peer whose receive queue is full, a full send
    /// buffer); it was not sent. Reported as
    /// [`RequestError::ReplyDropped`].
    WouldBlock,
    /// The send failed. Reported as [`RequestError::Reply`].
    Failed(ErrorKind),
}

impl From<ErrorKind> for ReplySendError {
    fn from(kind: ErrorKind) -> Self {
        Self::Failed(kind)
    }
}
