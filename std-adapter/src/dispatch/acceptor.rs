//! A pool worker's own handle on the listener: idle workers accept for
//! themselves (as a pre-fork server's processes do), so accepting never
//! waits for one loop thread to be scheduled among hundreds of busy
//! workers.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use socket2::Socket;

use crate::addr::Address;
use crate::conn::Conn;
use crate::shutdown::{Shared, Waited};
use crate::sys::{self, Wants};

/// A duplicate of the listening socket (so it stays valid while a worker
/// holds it, even after the server closed its own), with what an accepted
/// connection is set up with.
#[derive(Debug)]
pub(crate) struct Acceptor {
    socket: Socket,
    shared: Arc<Shared>,
    timeout: Option<Duration>,
    nodelay: bool,
    /// Failed accepts in a row (out of file descriptors): each pauses
    /// longer, as the loop's back-off does.
    failures: AtomicU32,
}

/// What one try of an [`Acceptor`] found.
pub(crate) enum Took {
    /// A connection.
    Conn(Conn, Address),
    /// Nothing within the wait (or another worker was first).
    Nothing,
    /// The server is not serving now (stopped, stopping, or serving one
    /// request at a time): do not accept.
    NotServing,
    /// The accept failed; the worker paused.
    Failed(io::Error),
}

impl Acceptor {
    /// An acceptor for the listener that accepted `conn`. Call it while
    /// the server dispatches `conn` (its listener is open then).
    pub(crate) fn from_conn(conn: &Conn) -> io::Result<Self> {
        let (fd, shared, timeout, nodelay) = conn.accepted_from();
        let socket = Socket::from(sys::dup_cloexec(fd)?);
        Ok(Self { socket, shared, timeout, nodelay, failures: AtomicU32::new(0) })
    }

    /// Waits up to `wait` for a connection (a stop ends the wait) and
    /// accepts it, unless the server is not serving.
    pub(crate) fn take(&self, wait: Duration) -> Took {
        if !self.shared.is_serving() {
            return Took::NotServing;
        }
        let read = Wants { read: true, write: false };
        match self.shared.wait(Some((self.socket.as_fd(), read)), Some(wait), false) {
            Ok(Waited::Ready) => {}
            Ok(Waited::Stop | Waited::TimedOut) => return Took::Nothing,
            Err(e) => return self.failed(e),
        }
        // No connection is accepted once a stop was asked for.
        if !self.shared.is_serving() {
            return Took::NotServing;
        }
        match self.accept() {
            Ok(Some((conn, client))) => {
                self.failures.store(0, Ordering::Relaxed);
                Took::Conn(conn, client)
            }
            Ok(None) => Took::Nothing,
            Err(e) => self.failed(e),
        }
    }

    fn accept(&self) -> io::Result<Option<(Conn, Address)>> {
        let (socket, addr) = loop {
            match self.socket.accept() {
                Ok(got) => break got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        // As the listener sets up what it accepts.
        socket.set_nonblocking(false)?;
        if self.timeout.is_some() {
            socket.set_read_timeout(self.timeout)?;
            socket.set_write_timeout(self.timeout)?;
        }
        if self.nodelay {
            socket.set_tcp_nodelay(true)?;
        }
        let listener = self.socket.as_fd();
        let conn = Conn::new(socket, Arc::clone(&self.shared), self.timeout, {
            use std::os::fd::AsRawFd;
            listener.as_raw_fd()
        });
        Ok(Some((conn, Address::from_sockaddr(&addr))))
    }

    /// Pauses after a failed accept (50 ms, doubling, at most 1 s), so
    /// that a lasting EMFILE costs a few wake-ups, not a spin.
    fn failed(&self, e: io::Error) -> Took {
        let n = self.failures.fetch_add(1, Ordering::Relaxed).min(5);
        std::thread::sleep(Duration::from_millis(50 << n).min(Duration::from_secs(1)));
        Took::Failed(e)
    }
}
