//! An accepted connection as a blocking `embedded-io` stream.

use std::io::{self, Read as _, Write as _};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Weak};
use std::time::Duration;

use embedded_io::{ErrorType, Read, Write};
use socket2::Socket;
use sockserv_core::Connection;

use crate::shutdown::Shared;
use crate::sys;

/// A connected TCP or Unix stream socket, blocking, as `embedded_io`
/// [`Read`] + [`Write`]: what a [`StreamHandler`](sockserv_core::StreamHandler)
/// gets on std.
///
/// * Interruptions (`EINTR`) are retried; a write returns only when all
///   bytes are written or the socket failed.
/// * A read or write that passes the server's `stream_timeout` fails with
///   `io::ErrorKind::TimedOut` (std would say `WouldBlock`, which
///   `embedded-io` cannot express).
/// * EOF is `Ok(0)`. Dropping the value closes the socket.
/// * With the sequential strategy, a read or write that has to wait also wakes up
///   when the server is asked to stop (a signal registered with
///   [`ShutdownHandle::stop_on_signal`](crate::ShutdownHandle::stop_on_signal),
///   or [`ShutdownHandle::shutdown`](crate::ShutdownHandle::shutdown)) and
///   fails with `io::ErrorKind::Interrupted`, so that one client keeping its
///   connection open cannot hold a one-request-at-a-time server (CPython's
///   `KeyboardInterrupt` ends it the same way). Threads and children keep
///   serving, as in CPython.
#[derive(Debug)]
pub struct Conn {
    /// Shared with the strategy's running-request count, so that closing the server
    /// can shut it down after the grace; closed when the last holder
    /// drops it.
    socket: Arc<Socket>,
    /// The server's stop state: waits wake up on a stop request.
    shared: Arc<Shared>,
    timeout: Option<Duration>,
    /// Waits wake up on a stop request (sequential strategy).
    cancellable: bool,
}

impl Conn {
    pub(crate) fn new(socket: Socket, shared: Arc<Shared>, timeout: Option<Duration>) -> Self {
        Self { socket: Arc::new(socket), shared, timeout, cancellable: false }
    }

    /// Makes reads and writes that wait give up when the server is asked
    /// to stop (the sequential strategy: one client must not hold it).
    pub(crate) fn cancel_on_stop(&mut self) {
        self.cancellable = true;
    }

    /// A handle that can shut the socket down while a handler holds it,
    /// without keeping it open once the handler has closed it.
    pub(crate) fn watch(&self) -> Weak<Socket> {
        Arc::downgrade(&self.socket)
    }

    /// A write of all of `buf` that gives up when the server is asked to
    /// stop (a client that never reads must not hold the server either).
    fn write_cancellable(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match sys::send_dontwait(&self.socket, buf) {
                Ok(n) => {
                    buf = &buf[n..];
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let (stop, ready) = sys::poll_writable_or_wake(
                self.shared.wake_fd(),
                self.socket.as_fd(),
                self.timeout,
            )?;
            if stop {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the server is shutting down",
                ));
            }
            if !ready {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
            }
        }
        Ok(())
    }

    /// A read that gives up when the server is asked to stop: try without
    /// waiting; when nothing is there, wait for the socket or the stop.
    fn read_cancellable(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match sys::recv_dontwait(&self.socket, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
            let polled =
                sys::poll_readable([self.shared.wake_fd(), self.socket.as_fd()], self.timeout)?;
            if polled.ready[0] {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the server is shutting down",
                ));
            }
            if !polled.any {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"));
            }
        }
    }

    /// The socket, for options this type does not cover.
    pub fn get_ref(&self) -> &Socket {
        &self.socket
    }

    /// The socket (a duplicate descriptor in the rare case the server
    /// is shutting it down at that moment).
    ///
    /// # Errors
    /// Only when a duplicate was needed and could not be made.
    pub fn into_inner(self) -> io::Result<Socket> {
        Arc::try_unwrap(self.socket).or_else(|shared| shared.try_clone())
    }
}

fn timeout_kind(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "timed out (stream_timeout)")
    } else {
        e
    }
}

impl ErrorType for Conn {
    type Error = io::Error;
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancellable && !buf.is_empty() {
            return self.read_cancellable(buf);
        }
        loop {
            match (&*self.socket).read(buf) {
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
        if self.cancellable {
            self.write_cancellable(buf)?;
            return Ok(buf.len());
        }
        // std's write_all retries EINTR and fails on a zero write.
        (&*self.socket).write_all(buf).map_err(timeout_kind)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Connection for Conn {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.socket.shutdown(Shutdown::Write)
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
