//! The adapter's errors, all mapped onto `embedded_io::ErrorKind` in this
//! one place (embassy-net's `embedded_io_impls` does the same).

use core::fmt;

use embedded_io::ErrorKind;

/// A stream or datagram operation that failed: an `embedded_io` kind and
/// a short reason.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Error(Reason);

/// What went wrong: one byte in every `Result`, its kind and words looked
/// up when asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Reset,
    TimedOut,
    ShutDown,
    TooLarge,
    Unaddressable,
    Interrupted,
    Foreign,
}

impl Error {
    pub(crate) const RESET: Self = Self(Reason::Reset);
    pub(crate) const TIMED_OUT: Self = Self(Reason::TimedOut);
    pub(crate) const SHUT_DOWN: Self = Self(Reason::ShutDown);
    pub(crate) const TOO_LARGE: Self = Self(Reason::TooLarge);
    pub(crate) const UNADDRESSABLE: Self = Self(Reason::Unaddressable);
    pub(crate) const INTERRUPTED: Self = Self(Reason::Interrupted);
    pub(crate) const FOREIGN: Self = Self(Reason::Foreign);

    /// Why it failed, in a few words.
    pub fn reason(&self) -> &'static str {
        match self.0 {
            Reason::Reset => "connection reset",
            Reason::TimedOut => "timed out",
            Reason::ShutDown => "write after the sending side was shut down",
            Reason::TooLarge => "datagram larger than the stack can send",
            Reason::Unaddressable => "unaddressable destination",
            Reason::Interrupted => "the server is shutting down",
            Reason::Foreign => "not a connection of this listener",
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use embedded_io::Error as _;
        f.debug_struct("Error").field("kind", &self.kind()).field("reason", &self.reason()).finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl core::error::Error for Error {}

impl embedded_io::Error for Error {
    fn kind(&self) -> ErrorKind {
        match self.0 {
            Reason::Reset => ErrorKind::ConnectionReset,
            Reason::TimedOut => ErrorKind::TimedOut,
            Reason::ShutDown => ErrorKind::BrokenPipe,
            Reason::TooLarge | Reason::Unaddressable | Reason::Foreign => ErrorKind::InvalidInput,
            Reason::Interrupted => ErrorKind::Interrupted,
        }
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
