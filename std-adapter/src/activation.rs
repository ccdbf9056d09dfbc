//! Sockets the process inherited: socket activation by a service manager
//! (systemd's `LISTEN_FDS`), descriptors passed by number, and handing the
//! listening socket to a successor for a restart that refuses nobody.
//!
//! An [`Inherited`] socket goes wherever an address goes
//! ([`IntoBindAddr`](crate::IntoBindAddr)): the server serves it as it is
//! (already bound and, for streams, listening), after checking that it is
//! a socket of the kind the server needs.
//!
//! ```no_run
//! # use sockserv_core::{service_fn, StreamHandler};
//! # use sockserv_std::ThreadingTcpServer;
//! # struct Echo;
//! # impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for Echo {
//! #     type Error = S::Error;
//! #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
//! # }
//! use sockserv_std::activation;
//!
//! // Started by systemd (or `systemd-socket-activate -l 8080 ./server`)?
//! let service = service_fn(|_| Echo);
//! let server = match activation::listen_fds()?.into_iter().next() {
//!     Some(socket) => ThreadingTcpServer::bind(socket, service)?,
//!     None => ThreadingTcpServer::bind("127.0.0.1:8080", service)?,
//! };
//! # drop(server);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::PathBuf;

use socket2::{Domain, Socket, Type};

use crate::addr::BindAddr;
use crate::error::BindError;
use crate::sys;

pub use crate::sys::Inherited;

impl Inherited {
    /// Takes descriptor `fd` of `listen_fds`: open, `FD_CLOEXEC` set.
    fn take(fd: RawFd, name: Option<String>) -> io::Result<Self> {
        let owned = sys::adopt_fd(fd)?;
        Ok(Self { socket: socket2::Socket::from(owned), fd, name })
    }

    /// The descriptor number it was inherited as.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Its name from `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`),
    /// if the service manager gave one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether it is a datagram socket (UDP, Unix datagram); `false` for a
    /// stream socket or anything that is not a socket.
    pub fn is_datagram(&self) -> bool {
        self.socket.r#type().is_ok_and(|t| t == Type::DGRAM)
    }

    /// The socket, for options this crate does not cover.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The socket for a server of type `ty` and its bound address, after
    /// checking (`SO_TYPE`, `SO_DOMAIN`, `SO_ACCEPTCONN`) that it is an
    /// inet or Unix socket of that type, listening if a stream.
    pub(crate) fn into_socket(self, ty: Type) -> Result<(Socket, BindAddr), BindError> {
        let err = |source| BindError { requested: self.to_string(), address: None, source };
        let invalid = |what: String| err(io::Error::new(io::ErrorKind::InvalidInput, what));
        let actual = self.socket.r#type().map_err(|e| {
            if sys::is_not_socket(&e) { invalid(format!("{self} is not a socket")) } else { err(e) }
        })?;
        let domain = self.socket.domain().map_err(err)?;
        if ![Domain::IPV4, Domain::IPV6, Domain::UNIX].contains(&domain) {
            return Err(invalid(format!("{self} is a {domain:?} socket, not inet or Unix")));
        }
        if actual != ty {
            let (is, want) = (kind(actual), kind(ty));
            return Err(invalid(format!(
                "{self} is a {is} socket; this server needs a {want} one"
            )));
        }
        if ty == Type::STREAM && !self.socket.is_listener().map_err(err)? {
            return Err(invalid(format!("{self} is a stream socket that is not listening")));
        }
        let local = self.socket.local_addr().map_err(err)?;
        let address = match local.as_socket() {
            Some(a) => BindAddr::Inet(a),
            None => BindAddr::Unix(
                local
                    .as_pathname()
                    .map_or_else(|| PathBuf::from(format!("(unnamed, {self})")), PathBuf::from),
            ),
        };
        Ok((self.socket, address))
    }
}

fn kind(ty: Type) -> &'static str {
    match ty {
        Type::STREAM => "stream",
        Type::DGRAM => "datagram",
        _ => "non-stream, non-datagram",
    }
}

impl fmt::Display for Inherited {
    /// `fd 3`, or `fd 3 (name)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fd {}", self.fd)?;
        match &self.name {
            Some(name) => write!(f, " ({name})"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Inherited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The sockets a service manager passed, as `sd_listen_fds(unset = 1)`
/// reads them: `LISTEN_FDS` descriptors from 3 when `LISTEN_PID` is this
/// process, named by `LISTEN_FDNAMES`; each gets `FD_CLOEXEC`. The three
/// variables are removed from the environment whatever they said (so
/// children do not take them for theirs). Empty when the process was not
/// socket-activated (or the variables were meant for another process).
///
/// Call it once, early in `main`, before starting threads that read the
/// environment through libc (removing variables races with C's `getenv`).
///
/// # Errors
/// `LISTEN_FDS` or `LISTEN_PID` is not a number, or a descriptor it names
/// is not open.
pub fn listen_fds() -> io::Result<Vec<Inherited>> {
    let read = |name| std::env::var(name).ok();
    let (pid, fds, names) = (read("LISTEN_PID"), read("LISTEN_FDS"), read("LISTEN_FDNAMES"));
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        sys::unset_env(name);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else { return Ok(Vec::new()) };
    let number = |what: &str, v: &str| {
        v.trim().parse::<u32>().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{what}={v:?} is not a number"))
        })
    };
    if number("LISTEN_PID", &pid)? != std::process::id() {
        return Ok(Vec::new());
    }
    let count = number("LISTEN_FDS", &fds)?;
    let mut names = names.as_deref().unwrap_or("").split(':').map(str::to_owned);
    (0..count)
        .map(|i| {
            let fd = sys::LISTEN_FDS_START + i as RawFd;
            Inherited::take(fd, names.next().filter(|n| !n.is_empty()))
        })
        .collect()
}

/// Starts this program again (the same executable path and arguments)
/// with `sockets` passed as a service manager passes them: at fd 3, 4, ...
/// with `LISTEN_FDS`, `LISTEN_PID` (the new process's pid) and
/// `LISTEN_FDNAMES` (`names`, one per socket) set, so that the new process
/// finds them with [`listen_fds`]. The sockets stay open here too: the
/// caller stops accepting, finishes what it holds and exits, while the
/// new process accepts from the same queue, so no connection is refused.
///
/// Returns the new process's pid once it has started the program (its
/// exec succeeded). It is not this process's to wait for: it lives on
/// after this one exits.
///
/// # Errors
/// The fork or the exec failed (the error is the exec's); nothing was
/// started, and this process can go on serving.
pub fn spawn_successor(sockets: &[BorrowedFd<'_>], names: &[&str]) -> io::Result<u32> {
    let program = std::env::current_exe()?;
    let successor = sys::Successor::new(program.as_os_str(), std::env::args_os(), names)?;
    successor.spawn(sockets)
}
