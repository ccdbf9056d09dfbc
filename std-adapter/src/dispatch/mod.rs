//! The dispatch strategies of the std adapter: CPython's mix-ins.
//!
//! * [`Sequential`]: one request at a time (plain `TCPServer`).
//! * [`Threading`]: a thread per request (`ThreadingMixIn`).
//! * [`Forking`]: a process per request (`ForkingMixIn`).
//! * [`Pool`]: pre-spawned worker threads fed through a bounded queue.
//! * [`Strategy`]: one of them, chosen at run time.
//!
//! [`Close`] says what closing the server does with requests still
//! running on threads, workers or children (one policy for all of them).
//!
//! All of them catch a handler's panic and report it to
//! [`Service::handle_error`] as
//! [`RequestError::Panic`]; the server keeps serving.

mod acceptor;
mod children;
mod close;
mod forking;
mod pool;
mod sequential;
mod strategy;
mod threading;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use close::{Close, DEFAULT_GRACE};
pub use forking::Forking;
pub use pool::Pool;
pub use sequential::Sequential;
pub use strategy::Strategy;
pub use threading::Threading;

use sockserv_core::{DatagramHandler, Request, RequestError, Service, StreamHandler};

use self::close::Watch;
use crate::addr::Address;
use crate::conn::Conn;
use crate::replies::Replier;
use crate::socket::SocketDatagram;

/// A datagram to serve away from the server loop (on a thread, a pool
/// worker or in a child): what it needs of the socket, copied.
pub(crate) struct DatagramRequest {
    replier: Replier,
    packet: Vec<u8>,
    truncated: Option<usize>,
    reply_size: usize,
}

impl DatagramRequest {
    pub(crate) fn new(socket: &SocketDatagram, packet: &[u8], truncated: Option<usize>) -> Self {
        let (replier, reply_size) = (socket.replier().clone(), socket.max_reply());
        Self { replier, packet: packet.to_vec(), truncated, reply_size }
    }

    /// Serves it, replying through the socket with `reply` (grown to the
    /// reply size; a pool worker keeps one instead of allocating 64 KiB
    /// per datagram). Returns whether it succeeded.
    pub(crate) fn serve<Svc>(&self, service: &Svc, client: &Address, reply: &mut Vec<u8>) -> bool
    where
        Svc: Service<Address, Handler: DatagramHandler> + ?Sized,
    {
        if reply.len() < self.reply_size {
            // A fresh zeroed allocation, not a resize: zeroed pages come
            // from the allocator untouched (a forked child would otherwise
            // write, and so copy, 64 KiB before serving).
            *reply = vec![0; self.reply_size];
        }
        let reply = &mut reply[..self.reply_size];
        serve_datagram(service, &self.replier, &self.packet, self.truncated, client, reply)
    }
}

/// Serves one datagram, replying through `replier` with `reply` as the
/// reply buffer, a panic reported as an error: every strategy's datagram
/// request goes through here. Returns whether it succeeded.
pub(crate) fn serve_datagram<Svc>(
    service: &Svc,
    replier: &Replier,
    packet: &[u8],
    truncated: Option<usize>,
    client: &Address,
    reply: &mut [u8],
) -> bool
where
    Svc: Service<Address, Handler: DatagramHandler> + ?Sized,
{
    guarded(service, client, || {
        let send = |data: &[u8], to: &Address| replier.send(data, to);
        sockserv_core::driver::serve_datagram(service, packet, truncated, client, reply, send)
    })
}

/// Serves one connection (a panic reported as an error): every
/// strategy's stream request goes through here. A handler failure after
/// the connection said the peer went away (reset, broken pipe) is
/// reported as [`RequestError::Io`] with that kind, so the default
/// `handle_error` logs it at debug level, as event mode does, instead of
/// as a handler error. Returns whether it succeeded.
pub(crate) fn serve_stream<Svc>(service: &Svc, stream: Conn, client: &Address) -> bool
where
    Svc: Service<Address, Handler: StreamHandler<Conn>> + ?Sized,
{
    let peer = PeerAware { service, link: stream.watch() };
    guarded(service, client, || sockserv_core::driver::serve_stream(&peer, stream, client))
}

/// A service whose `handle_error` says a handler failed because its peer
/// went away, when the connection saw it; every other call goes to the
/// service as it is.
struct PeerAware<'a, Svc: ?Sized> {
    service: &'a Svc,
    link: Watch,
}

impl<Svc: Service<Address> + ?Sized> Service<Address> for PeerAware<'_, Svc> {
    type Handler = Svc::Handler;

    fn handler(&self, client: &Address) -> Self::Handler {
        self.service.handler(client)
    }
    fn verify_request(&self, request: &Request<'_, Address>) -> bool {
        self.service.verify_request(request)
    }
    fn handle_error(&self, client: &Address, error: &RequestError<'_>) {
        let gone = self.link.upgrade().and_then(|l| l.peer_gone());
        match (error, gone) {
            (RequestError::Handler { .. }, Some(kind)) => {
                self.service.handle_error(client, &RequestError::Io(kind));
            }
            _ => self.service.handle_error(client, error),
        }
    }
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        self.service.handle_accept_error(error);
    }
    fn handle_table_full(&self, client: &Address) {
        self.service.handle_table_full(client);
    }
    fn handle_buffers_exhausted(&self, client: &Address) {
        self.service.handle_buffers_exhausted(client);
    }
    fn handle_timeout(&self) {
        self.service.handle_timeout();
    }
    fn service_actions(&self) {
        self.service.service_actions();
    }
}

/// Runs one request, turning a panic into a `handle_error` report.
/// Returns whether the request succeeded.
pub(crate) fn guarded<Svc, F>(service: &Svc, client: &Address, run: F) -> bool
where
    Svc: Service<Address> + ?Sized,
    F: FnOnce() -> bool,
{
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(ok) => ok,
        Err(payload) => {
            service.handle_error(client, &RequestError::Panic(panic_message(&*payload)));
            false
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}
