//! What a server is built from: anything that names an address
//! ([`IntoBindAddr`]), or a socket the process inherited.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::activation::Inherited;
use crate::addr::BindAddr;
use crate::error::BindError;

/// Anything a server can bind to: socket addresses, `(ip, port)`,
/// `("host", port)` (as Python's `("127.0.0.1", 0)`), `"host:port"`
/// strings (`&str`, `String`, `&String`; resolved, the first address
/// wins), and Unix socket paths: `&Path`, `PathBuf`, `&PathBuf`, or a
/// string with a `/` in it (`"/run/app.sock"`, `"./app.sock"`; a
/// `host:port` never has one).
pub trait IntoBindAddr {
    /// Resolves to one address.
    ///
    /// # Errors
    /// An address that does not resolve; the error keeps the text as the
    /// caller wrote it ([`BindError::requested`]).
    fn into_bind_addr(self) -> Result<BindAddr, BindError>;

    /// The address as the caller wrote it, when that differs from what it
    /// resolves to (`"localhost:80"`), for [`BindError::requested`].
    fn as_written(&self) -> Option<String> {
        None
    }

    /// What the server is built from: an address to bind, or an inherited
    /// socket to serve as it is. Only [`Inherited`] overrides it.
    #[doc(hidden)]
    fn into_source(self) -> Result<Source, BindError>
    where
        Self: Sized,
    {
        self.into_bind_addr().map(Source::Bind)
    }
}

/// What a server is built from.
#[doc(hidden)]
#[derive(Debug)]
pub enum Source {
    /// Create a socket and bind it here.
    Bind(BindAddr),
    /// Serve this socket, bound (and listening) already.
    Inherited(Inherited),
}

/// An inherited socket ([`crate::activation`]): served as it is.
/// `into_bind_addr` gives its bound address (and closes it).
impl IntoBindAddr for Inherited {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        let ty = self.socket().r#type().map_err(|source| BindError::unresolved(&self, source))?;
        self.into_socket(ty).map(|(_, address)| address)
    }
    fn as_written(&self) -> Option<String> {
        Some(self.to_string())
    }
    fn into_source(self) -> Result<Source, BindError> {
        Ok(Source::Inherited(self))
    }
}

impl IntoBindAddr for BindAddr {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        Ok(self)
    }
}

impl IntoBindAddr for SocketAddr {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        Ok(BindAddr::Inet(self))
    }
}

impl IntoBindAddr for (IpAddr, u16) {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        Ok(BindAddr::Inet(self.into()))
    }
}

impl IntoBindAddr for (Ipv4Addr, u16) {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        Ok(BindAddr::Inet(self.into()))
    }
}

impl IntoBindAddr for (Ipv6Addr, u16) {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        Ok(BindAddr::Inet(self.into()))
    }
}

/// The first address `what` resolves to.
fn resolve(what: impl ToSocketAddrs + fmt::Display + Copy) -> Result<BindAddr, BindError> {
    let mut addrs = what.to_socket_addrs().map_err(|e| BindError::unresolved(what, e))?;
    addrs.next().map(BindAddr::Inet).ok_or_else(|| {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "resolves to no address");
        BindError::unresolved(what, e)
    })
}

/// A string with a `/` in it is a Unix socket path (no `host:port`
/// has one); anything else is resolved as `host:port`.
fn from_text(text: &str) -> Result<BindAddr, BindError> {
    if text.contains('/') { Ok(BindAddr::Unix(PathBuf::from(text))) } else { resolve(text) }
}

impl IntoBindAddr for &str {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        from_text(self)
    }
    fn as_written(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl IntoBindAddr for String {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        from_text(&self)
    }
    fn as_written(&self) -> Option<String> {
        Some(self.clone())
    }
}

impl IntoBindAddr for &String {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        from_text(self)
    }
    fn as_written(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// `("host", port)`, shown as `host:port` in errors.
#[derive(Clone, Copy)]
struct HostPort<'a>(&'a str, u16);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

impl ToSocketAddrs for HostPort<'_> {
    type Iter = std::vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        (self.0, self.1).to_socket_addrs()
    }
}

impl IntoBindAddr for (&str, u16) {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        resolve(HostPort(self.0, self.1))
    }
    fn as_written(&self) -> Option<String> {
        Some(HostPort(self.0, self.1).to_string())
    }
}

impl IntoBindAddr for (String, u16) {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        resolve(HostPort(&self.0, self.1))
    }
    fn as_written(&self) -> Option<String> {
        Some(HostPort(&self.0, self.1).to_string())
    }
}

impl IntoBindAddr for &Path {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        Ok(BindAddr::Unix(self.to_path_buf()))
    }
}

impl IntoBindAddr for PathBuf {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        Ok(BindAddr::Unix(self))
    }
}

impl IntoBindAddr for &PathBuf {
    fn into_bind_addr(self) -> Result<BindAddr, BindError> {
        Ok(BindAddr::Unix(self.clone()))
    }
}
