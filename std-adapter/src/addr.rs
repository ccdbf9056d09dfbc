//! Addresses: what a server binds to and who its clients are.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
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

/// Anything a server can bind to: socket addresses, `(ip, port)`,
/// `"host:port"` strings (resolved; the first address wins), and paths
/// (`&Path`, `PathBuf`) for Unix sockets.
pub trait IntoBindAddr {
    /// Resolves to one address.
    ///
    /// # Errors
    /// A string that does not resolve.
    fn into_bind_addr(self) -> io::Result<BindAddr>;
}

impl IntoBindAddr for BindAddr {
    fn into_bind_addr(self) -> io::Result<BindAddr> {
        Ok(self)
    }
}

impl IntoBindAddr for SocketAddr {
    fn into_bind_addr(self) -> io::Result<BindAddr> {
        Ok(BindAddr::Inet(self))
    }
}

impl IntoBindAddr for (IpAddr, u16) {
    fn into_bind_addr(self) -> io::Result<BindAddr> {
        Ok(BindAddr::Inet(self.into()))
    }
}

impl IntoBindAddr for &str {
    fn into_bind_addr(self) -> io::Result<BindAddr> {
        let mut addrs = self.to_socket_addrs()?;
        addrs.next().map(BindAddr::Inet).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{self} resolves to no address"))
        })
    }
}

impl IntoBindAddr for &Path {
    fn into_bind_addr(self) -> io::Result<BindAddr> {
        Ok(BindAddr::Unix(self.to_path_buf()))
    }
}

impl IntoBindAddr for PathBuf {
    fn into_bind_addr(self) -> io::Result<BindAddr> {
        Ok(BindAddr::Unix(self))
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
