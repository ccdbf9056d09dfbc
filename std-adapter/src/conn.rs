//! An accepted connection as a blocking `embedded-io` stream.

use std::io::{self, Read as _, Write as _};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};

use embedded_io::{ErrorType, Read, Write};
use socket2::Socket;
use sockserv_core::Connection;

/// A connected TCP or Unix stream socket, blocking, as `embedded_io`
/// [`Read`] + [`Write`]: what a [`StreamHandler`](sockserv_core::StreamHandler)
/// gets on std.
///
/// * Interruptions (`EINTR`) are retried; a write returns only when all
///   bytes are written or the socket failed.
/// * A read that passes the server's `stream_timeout` fails with
///   `io::ErrorKind::TimedOut` (std would say `WouldBlock`, which
///   `embedded-io` cannot express).
/// * EOF is `Ok(0)`. Dropping the value closes the socket.
#[derive(Debug)]
pub struct Conn(Socket);

impl Conn {
    pub(crate) fn new(socket: Socket) -> Self {
        Self(socket)
    }

    /// The socket, for options this type does not cover.
    pub fn get_ref(&self) -> &Socket {
        &self.0
    }

    /// The socket.
    pub fn into_inner(self) -> Socket {
        self.0
    }
}

fn timeout_kind(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "read timed out")
    } else {
        e
    }
}

impl ErrorType for Conn {
    type Error = io::Error;
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&self.0).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(timeout_kind),
            }
        }
    }
}

impl Write for Conn {
    /// Writes all of `buf` (CPython's `_SocketWriter` never writes
    /// partially either).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // std's write_all retries EINTR and fails on a zero write.
        (&self.0).write_all(buf).map_err(timeout_kind)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Connection for Conn {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
