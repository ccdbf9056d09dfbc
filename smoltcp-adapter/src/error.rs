//! The adapter's errors, all mapped onto `embedded_io::ErrorKind` in this
//! one place (embassy-net's `embedded_io_impls` does the same).

use core::fmt;

use embedded_io::ErrorKind;

/// A stream or datagram operation that failed: an `embedded_io` kind and
/// a short reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    reason: &'static str,
}

impl Error {
    pub(crate) const RESET: Self = Self::new(ErrorKind::ConnectionReset, "connection reset");
    pub(crate) const TIMED_OUT: Self = Self::new(ErrorKind::TimedOut, "timed out");
    pub(crate) const SHUT_DOWN: Self =
        Self::new(ErrorKind::BrokenPipe, "write after the sending side was shut down");
    pub(crate) const TOO_LARGE: Self =
        Self::new(ErrorKind::InvalidInput, "datagram larger than the stack can send");
    pub(crate) const UNADDRESSABLE: Self =
        Self::new(ErrorKind::InvalidInput, "unaddressable destination");
    pub(crate) const INTERRUPTED: Self =
        Self::new(ErrorKind::Interrupted, "the server is shutting down");
    pub(crate) const FOREIGN: Self =
        Self::new(ErrorKind::InvalidInput, "not a connection of this listener");

    pub(crate) const fn new(kind: ErrorKind, reason: &'static str) -> Self {
        Self { kind, reason }
    }

    /// Why it failed, in a few words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl core::error::Error for Error {}

impl embedded_io::Error for Error {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Why [`Stack::listen`](crate::Stack::listen) refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenError {
    /// The stack's [`Storage`](crate::Storage) has no room for the sockets.
    Full,
    /// Another listener of this stack already uses the port.
    PortInUse,
    /// Port 0, an empty socket pool or a zero backlog.
    Invalid,
}

/// Why [`Stack::bind_udp`](crate::Stack::bind_udp) refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindError {
    /// The stack's [`Storage`](crate::Storage) has no room for the socket.
    Full,
    /// Port 0, or a socket that was already bound.
    Invalid,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "the socket storage is full",
            Self::PortInUse => "the port already has a listener",
            Self::Invalid => "port 0, no sockets or a zero backlog",
        })
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "the socket storage is full",
            Self::Invalid => "port 0 or a socket already bound",
        })
    }
}

impl core::error::Error for ListenError {}
impl core::error::Error for BindError {}
