//! An accepted connection as a blocking `embedded-io` stream.

use std::io::{self, Read as _, Write as _};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use embedded_io::{Error, ErrorKind, ErrorType, Read, Write};
use socket2::Socket;
use sockserv_core::driver::Connection;

use crate::shutdown::{Shared, Waited};
use crate::sys::{self, Wants};

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
    /// The socket and what became of the peer, shared (weakly) with the
    /// strategy, so that closing the server can shut it down after the
    /// grace and a failure can be reported for what it was; closed when
    /// the connection is dropped.
    link: Arc<Link>,
    /// The server's stop state: waits wake up on a stop request.
    shared: Arc<Shared>,
    timeout: Option<Duration>,
    /// Waits wake up on a stop request (sequential strategy).
    cancellable: bool,
    /// The listening socket that accepted it (a pool's idle workers accept
    /// from a duplicate of it); never used as a descriptor here.
    listener: RawFd,
}

impl Conn {
    pub(crate) fn new(
        socket: Socket,
        shared: Arc<Shared>,
        timeout: Option<Duration>,
        listener: RawFd,
    ) -> Self {
        let link = Arc::new(Link { socket, gone: AtomicU8::new(0) });
        Self { link, shared, timeout, cancellable: false, listener }
    }

    /// What a pool worker needs to accept the next connection as this one
    /// was (its listener's descriptor, the server's stop state, the stream
    /// timeout, Nagle off), to accept for itself.
    pub(crate) fn accepted_from(&self) -> (RawFd, Arc<Shared>, Option<Duration>, bool) {
        let nodelay = self.link.socket.tcp_nodelay().unwrap_or(false);
        (self.listener, Arc::clone(&self.shared), self.timeout, nodelay)
    }

    /// What a shared writer waits with: the server's stop state (a stop
    /// cuts its wait short) and the `stream_timeout`.
    pub(crate) fn writer_waits(&self) -> (Arc<Shared>, Option<Duration>) {
        (Arc::clone(&self.shared), self.timeout)
    }

    /// Makes reads and writes that wait give up when the server is asked
    /// to stop (the sequential strategy: one client must not hold it).
    pub(crate) fn cancel_on_stop(&mut self) {
        self.cancellable = true;
    }

    /// A handle that can shut the socket down while a handler holds it,
    /// without keeping it open once the handler has closed it.
    pub(crate) fn watch(&self) -> Weak<Link> {
        Arc::downgrade(&self.link)
    }

    /// Remembers a failure that says the peer went away.
    fn noted<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result
            && let Some(i) = PEER_GONE.iter().position(|&k| k == Error::kind(e))
        {
            self.link.gone.store(i as u8 + 1, Ordering::Relaxed);
        }
        result
    }

    /// Waits until the socket is ready for `wants`: fails with
    /// `Interrupted` on a stop request, `TimedOut` after `stream_timeout`.
    fn wait_for(&self, wants: Wants, timed_out: &'static str) -> io::Result<()> {
        let fd = Some((self.link.socket.as_fd(), wants));
        match self.shared.wait(fd, self.timeout, false)? {
            Waited::Stop => Err(stopping()),
            Waited::TimedOut => Err(io::Error::new(io::ErrorKind::TimedOut, timed_out)),
            Waited::Ready => Ok(()),
        }
    }

    /// A write of all of `buf` that gives up when the server is asked to
    /// stop (a client that never reads must not hold the server either).
    fn write_cancellable(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match sys::send_dontwait(&self.link.socket, buf) {
                Ok(n) => {
                    buf = &buf[n..];
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.wait_for(Wants { read: false, write: true }, "write timed out")?;
        }
        Ok(())
    }

    /// A read that gives up when the server is asked to stop: try without
    /// waiting; when nothing is there, wait for the socket or the stop.
    fn read_cancellable(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match sys::recv_dontwait(&self.link.socket, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
            self.wait_for(Wants { read: true, write: false }, "read timed out")?;
        }
    }

    /// The socket, for options this type does not cover.
    pub fn get_ref(&self) -> &Socket {
        &self.link.socket
    }

    /// The socket (a duplicate descriptor in the rare case the server
    /// is shutting it down at that moment).
    ///
    /// # Errors
    /// Only when a duplicate was needed and could not be made.
    pub fn into_inner(self) -> io::Result<Socket> {
        Arc::try_unwrap(self.link).map(|l| l.socket).or_else(|l| l.socket.try_clone())
    }
}

/// What a cancellable read or write fails with on a stop request.
fn stopping() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the server is shutting down")
}

/// The failures that say the peer went away: routine for a server.
const PEER_GONE: [ErrorKind; 4] = [
    ErrorKind::ConnectionReset,
    ErrorKind::BrokenPipe,
    ErrorKind::ConnectionAborted,
    ErrorKind::NotConnected,
];

/// A connection's socket and what became of its peer.
#[derive(Debug)]
pub(crate) struct Link {
    socket: Socket,
    /// 0, or 1 + the index in [`PEER_GONE`] of the failure seen.
    gone: AtomicU8,
}

impl Link {
    /// Shuts the connection down both ways (closing the server after its
    /// grace): a read waiting in the handler sees EOF, a write fails.
    pub(crate) fn shut_down(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    /// How the peer went away, if a read or write said so.
    pub(crate) fn peer_gone(&self) -> Option<ErrorKind> {
        let i = self.gone.load(Ordering::Relaxed);
        PEER_GONE.get(usize::from(i.checked_sub(1)?)).copied()
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
            let read = self.read_cancellable(buf);
            return self.noted(read);
        }
        loop {
            match (&self.link.socket).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return self.noted(other.map_err(timeout_kind)),
            }
        }
    }
}

impl Write for Conn {
    /// Writes all of `buf` (CPython's `_SocketWriter` never writes
    /// partially either).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = if self.cancellable {
            self.write_cancellable(buf)
        } else {
            // std's write_all retries EINTR and fails on a zero write.
            (&self.link.socket).write_all(buf).map_err(timeout_kind)
        };
        self.noted(written).map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Connection for Conn {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.link.socket.shutdown(Shutdown::Write)
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.link.socket.as_fd()
    }
}
