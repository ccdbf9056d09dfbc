//! The dispatch strategies of the std adapter: CPython's mix-ins.
//!
//! * [`Sequential`]: one request at a time (plain `TCPServer`).
//! * [`Threading`]: a thread per request (`ThreadingMixIn`).
//! * [`Forking`]: a process per request (`ForkingMixIn`).
//!
//! All three catch a handler's panic and report it to
//! [`Hooks::handle_error`] as
//! [`RequestError::Panic`]; the server keeps serving.

mod forking;
mod sequential;
mod threading;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use forking::Forking;
pub use sequential::Sequential;
pub use threading::Threading;

use sockserv_core::{Hooks, RequestError};

use crate::addr::Address;

/// Runs one request, turning a panic into a `handle_error` report.
/// Returns whether the request succeeded.
pub(crate) fn guarded<Svc, F>(service: &Svc, client: &Address, run: F) -> bool
where
    Svc: Hooks<Address> + ?Sized,
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
