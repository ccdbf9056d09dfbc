//! One request, start to end: CPython's `finish_request` + `shutdown_request`
//! for streams and datagrams. Dispatch strategies (inline, threads, fork)
//! call these wherever they run the request.

use core::fmt;

use embedded_io::ErrorKind;

use crate::handler::{
    DatagramHandler, DatagramService, ReplyWriter, RequestError, StreamHandler, StreamService,
};
use crate::transport::Connection;

/// Serves one stream connection: makes the handler, runs `setup`, `handle`
/// (if setup succeeded) and `finish` (always), reports the first error to
/// [`crate::Hooks::handle_error`], then shuts the connection down
/// (`shutdown(SHUT_WR)`, then close by drop) — CPython's `finish_request`
/// followed by `shutdown_request`.
///
/// Returns `true` when the handler succeeded (a forked child exits with
/// status 0 then, 1 otherwise).
///
/// A panic in the handler unwinds through this function (CPython lets
/// `SystemExit` through the same way); adapters that can catch panics do so
/// around it.
pub fn serve_stream<S, A, Svc>(service: &Svc, mut stream: S, client: &A) -> bool
where
    S: Connection,
    A: fmt::Debug,
    Svc: StreamService<S, A> + ?Sized,
{
    let mut handler = service.handler(client);
    let mut result = handler.setup(&mut stream);
    if result.is_ok() {
        result = handler.handle(&mut stream);
    }
    let finished = handler.finish(&mut stream);
    let result = result.and(finished);
    if let Err(e) = &result {
        service.handle_error(client, &RequestError::Handler(e));
    }
    shutdown_stream(stream);
    result.is_ok()
}

/// CPython's `TCPServer.shutdown_request`: half-close the sending side (so
/// the peer reads everything already written, then EOF), ignoring a peer
/// that already went away, then close.
pub fn shutdown_stream<S: Connection>(mut stream: S) {
    let _ = stream.shutdown_write();
    drop(stream);
}

/// Serves one datagram: reports a truncated datagram to
/// [`crate::Hooks::handle_error`] (the handler never sees it); otherwise
/// runs the handler with a [`ReplyWriter`] over `reply_buf` and sends the
/// reply to `client` through `send` — an empty datagram when the handler
/// wrote nothing, as CPython's `DatagramRequestHandler.finish` does, unless
/// the handler suppressed it.
///
/// `send` is the socket's `send_to` (a closure so that a strategy can reply
/// through whatever handle to the socket it holds).
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
    Svc: DatagramService<A> + ?Sized,
    F: FnOnce(&[u8], &A) -> Result<(), ErrorKind>,
{
    if let Some(size) = truncated {
        let error = RequestError::Truncated { size, capacity: packet.len() };
        service.handle_error(client, &error);
        return false;
    }
    let mut handler = service.handler(client);
    let mut reply = ReplyWriter::new(reply_buf);
    let mut result = handler.setup();
    if result.is_ok() {
        result = handler.handle(packet, &mut reply);
    }
    let finished = handler.finish(&mut reply);
    let result = result.and(finished);
    let mut ok = true;
    if let Err(e) = &result {
        service.handle_error(client, &RequestError::Handler(e));
        ok = false;
    }
    if !reply.is_suppressed()
        && let Err(kind) = send(reply.as_slice(), client)
    {
        service.handle_error(client, &RequestError::Reply(kind));
        ok = false;
    }
    ok
}
