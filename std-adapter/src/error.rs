//! The errors of building a server.

use std::fmt;
use std::io;

use crate::addr::BindAddr;

/// A bind (or listen) that failed: names what the caller asked for (as
/// written), the address it resolved to (when it did) and the cause.
///
/// ```
/// # struct Nop;
/// # impl<S: embedded_io::Read + embedded_io::Write> sockserv::StreamHandler<S> for Nop {
/// #     type Error = S::Error;
/// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
/// # }
/// let e = sockserv::std_adapter::TcpServer::bind("127.0.0.1:99999", sockserv::service_fn(|_| Nop))
///     .err()
///     .unwrap();
/// assert_eq!(e.requested, "127.0.0.1:99999");
/// assert!(e.address.is_none(), "it did not resolve");
/// assert_eq!(e.to_string(), "cannot bind 127.0.0.1:99999: invalid port value");
/// ```
#[derive(Debug)]
pub struct BindError {
    /// What the caller passed, as written (`"localhost:80"`, a path).
    pub requested: String,
    /// What it resolved to; `None` when it did not resolve.
    pub address: Option<BindAddr>,
    /// Why it failed.
    pub source: io::Error,
}

impl BindError {
    /// Binding (or preparing to bind) the resolved `address` failed.
    pub(crate) fn at(address: &BindAddr, source: io::Error) -> Self {
        Self { requested: address.to_string(), address: Some(address.clone()), source }
    }

    /// `requested` did not resolve to an address.
    pub(crate) fn unresolved(requested: impl fmt::Display, source: io::Error) -> Self {
        Self { requested: requested.to_string(), address: None, source }
    }
}

impl fmt::Display for BindError {
    /// `cannot bind ADDR: cause`, or `cannot bind REQUESTED (ADDR): cause`
    /// when what was asked for resolved to something that reads otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot bind {}", self.requested)?;
        if let Some(address) = &self.address
            && address.to_string() != self.requested
        {
            write!(f, " ({address})")?;
        }
        write!(f, ": {}", self.source)
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
