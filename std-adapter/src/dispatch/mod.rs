//! The dispatch strategies of the std adapter: CPython's mix-ins.
//!
//! * [`Sequential`]: one request at a time (plain `TCPServer`).
//! * [`Threading`]: a thread per request (`ThreadingMixIn`).
//! * [`Forking`]: a process per request (`ForkingMixIn`).
//! * [`Pool`]: pre-spawned worker threads fed through a bounded queue.
//! * [`Strategy`]: one of them, chosen at run time.
//!
//! All of them catch a handler's panic and report it to
//! [`Service::handle_error`] as
//! [`RequestError::Panic`]; the server keeps serving.

mod children;
mod forking;
mod pool;
mod sequential;
mod strategy;
mod threading;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use forking::Forking;
pub use pool::Pool;
pub use sequential::Sequential;
pub use strategy::Strategy;
pub use threading::Threading;

use sockserv_core::{DatagramHandler, RequestError, Service};

use crate::addr::Address;

/// Serves one datagram away from the server loop (on a thread or in a
/// child), replying through `sender` with a fresh reply buffer of
/// `reply_size` bytes. Returns whether it succeeded.
pub(crate) fn serve_datagram_apart<Svc>(
    service: &Svc,
    sender: &socket2::Socket,
    packet: &[u8],
    truncated: Option<usize>,
    client: &Address,
    reply_size: usize,
) -> bool
where
    Svc: sockserv_core::Service<Address, Handler: DatagramHandler> + ?Sized,
{
    serve_datagram_into(service, sender, packet, truncated, client, &mut vec![0u8; reply_size])
}

/// [`serve_datagram_apart`] with the caller's reply buffer (a pool worker
/// keeps one instead of allocating 64 KiB per datagram).
pub(crate) fn serve_datagram_into<Svc>(
    service: &Svc,
    sender: &socket2::Socket,
    packet: &[u8],
    truncated: Option<usize>,
    client: &Address,
    reply: &mut [u8],
) -> bool
where
    Svc: sockserv_core::Service<Address, Handler: DatagramHandler> + ?Sized,
{
    guarded(service, client, || {
        let send = |data: &[u8], to: &Address| crate::socket::send_reply(sender, data, to);
        sockserv_core::driver::serve_datagram(service, packet, truncated, client, reply, send)
    })
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
