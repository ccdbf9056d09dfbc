//! Addresses: what a server binds to and who its clients are.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr};

/// Where a server listens. The family follows the address (no subclassing,
/// CPython gh-64414): an IPv4 or IPv6 socket address, or a Unix socket
/// path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BindAddr {
    /// TCP or UDP over IPv4 / IPv6.
    Inet(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl BindAddr {
    pub(crate) fn domain(&self) -> Domain {
        match self {
            Self::Inet(a) => Domain::for_address(*a),
            Self::Unix(_) => Domain::UNIX,
        }
    }

    pub(crate) fn to_sockaddr(&self) -> io::Result<SockAddr> {
        match self {
            Self::Inet(a) => Ok(SockAddr::from(*a)),
            Self::Unix(p) => SockAddr::unix(p),
        }
    }
}

impl fmt::Display for BindAddr {
    /// `127.0.0.1:9999`, `[::1]:9999`, or the path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A client's address (CPython's `client_address`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 / IPv6 peer.
    Inet(SocketAddr),
    /// A Unix peer: its path, or `None` for an unnamed socket (most
    /// clients).
    Unix(Option<PathBuf>),
}

impl Address {
    /// The peer's IP address (`None` for a Unix peer): Python's
    /// `client_address[0]`.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Inet(a) => Some(a.ip()),
            Self::Unix(_) => None,
        }
    }

    /// The peer's port (`None` for a Unix peer).
    pub fn port(&self) -> Option<u16> {
        match self {
            Self::Inet(a) => Some(a.port()),
            Self::Unix(_) => None,
        }
    }

    pub(crate) fn from_sockaddr(addr: &SockAddr) -> Self {
        match addr.as_socket() {
            Some(a) => Self::Inet(a),
            None => Self::Unix(addr.as_pathname().map(Path::to_path_buf)),
        }
    }

    pub(crate) fn to_sockaddr(&self) -> io::Result<SockAddr> {
        match self {
            Self::Inet(a) => Ok(SockAddr::from(*a)),
            Self::Unix(Some(p)) => SockAddr::unix(p),
            Self::Unix(None) => Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "cannot reply to an unnamed Unix socket",
            )),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(a) => write!(f, "{a}"),
            Self::Unix(Some(p)) => write!(f, "{}", p.display()),
            Self::Unix(None) => f.write_str("(unnamed)"),
        }
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The mock's peer `id` is `10.0.0.0 + id`, port 1 (so that a service
/// written for `Address` runs on the core's mock transport).
#[cfg(feature = "mock")]
impl sockserv_core::mock::MockAddress for Address {
    fn from_mock(id: sockserv_core::mock::MockAddr) -> Self {
        let ip = std::net::Ipv4Addr::from(0x0A00_0000u32.wrapping_add(id));
        Self::Inet(SocketAddr::from((ip, 1)))
    }
    fn to_mock(&self) -> sockserv_core::mock::MockAddr {
        match self {
            Self::Inet(SocketAddr::V4(a)) => u32::from(*a.ip()).wrapping_sub(0x0A00_0000),
            _ => 0,
        }
    }
}

/// So that a `verify` closure can ask a request for its IP and port
/// before the server fixes the address type.
impl sockserv_core::driver::ClientAddress for Address {
    fn ip(&self) -> Option<IpAddr> {
        Address::ip(self)
    }
    fn port(&self) -> Option<u16> {
        Address::port(self)
    }
}
