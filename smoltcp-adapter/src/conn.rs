//! An accepted connection as a blocking `embedded-io` stream that drives
//! the interface while it waits.

use core::time::Duration;

use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, RecvError, State};
use sockserv_core::driver::{Connection, Readiness};

use crate::error::Error;
use crate::net::Net;

/// A TCP connection on a smoltcp stack, accepted by a
/// [`TcpListener`](crate::TcpListener): what a
/// [`StreamHandler`](sockserv_core::StreamHandler) gets.
///
/// * `read` returns what the socket holds, or polls the interface and
///   sleeps (through the stack's [`Wait`](crate::Wait)) until data, EOF
///   (`Ok(0)`, the peer's FIN) or a reset (`ConnectionReset`) arrives.
/// * `write` queues all of its bytes, waiting for room as `read` waits for
///   data: never a partial write. A reset fails it with `ConnectionReset`,
///   a write after [`shutdown_write`](Connection::shutdown_write) with
///   `BrokenPipe`.
/// * With a `stream_timeout` ([`Options`](crate::Options)), a read or
///   write that waits longer fails with `TimedOut`.
/// * A read or write that must wait is cut short by a shutdown wake-up
///   (the stack's [`Wait`](crate::Wait) returning [`Readiness::Woken`], as the
///   `tap` feature's `TapWait` does once its shutdown check says so): it
///   fails with `Interrupted`, so a client that keeps its connection open
///   without speaking, or stops reading, cannot hold a stopping server
///   (std's sequential server does the same; CPython's
///   `KeyboardInterrupt` ends a sync server that way). A read that finds
///   data returns it; a write interrupted part-way has queued a prefix.
///   With [`Spin`](crate::Spin), or any `Wait` that never says `Woken`,
///   they wait on.
/// * `shutdown_write` is smoltcp's `close()`: a FIN after the queued data.
///   Dropping the connection closes it the same way; the stack finishes the
///   close in the background and gives the socket back to the listener.
pub struct TcpConn<'s, 'a> {
    socket: Served<'s, 'a>,
    timeout: Option<Duration>,
}

impl<'s, 'a> TcpConn<'s, 'a> {
    pub(crate) fn new(socket: Served<'s, 'a>, timeout: Option<Duration>) -> Self {
        Self { socket, timeout }
    }

    /// Runs `f` on the smoltcp socket (for its state, options, ...).
    pub fn with_socket<R>(&self, f: impl FnOnce(&mut tcp::Socket<'a>) -> R) -> R {
        self.socket.with(f)
    }

    /// Changes the stream timeout (see [`Options::stream_timeout`](crate::Options::stream_timeout)).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Calls `attempt` until it gives an answer (`Ok(Some)` or an error),
    /// polling the interface and sleeping in between, up to the stream
    /// timeout; a wait ends with `Interrupted` when the stack is woken for
    /// shutdown.
    fn block<T>(
        &self,
        mut attempt: impl FnMut(&Served<'s, 'a>) -> Result<Option<T>, Error>,
    ) -> Result<T, Error> {
        let net = self.socket.net;
        let deadline = net.deadline(self.timeout);
        loop {
            if let Some(answer) = attempt(&self.socket)? {
                return Ok(answer);
            }
            if net.poll() {
                continue;
            }
            if net.passed(deadline) {
                return Err(Error::TIMED_OUT);
            }
            if net.idle(deadline) == Readiness::Woken {
                return Err(Error::INTERRUPTED);
            }
        }
    }
}

impl ErrorType for TcpConn<'_, '_> {
    type Error = Error;
}

impl Read for TcpConn<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.block(|socket| socket.try_read(buf))?;
        // Let the peer know about the window we just opened.
        self.socket.net.poll();
        Ok(n)
    }
}

impl Write for TcpConn<'_, '_> {
    fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        let mut sent = 0;
        while sent < data.len() {
            sent += self.block(|socket| socket.try_write(&data[sent..]))?;
            self.socket.net.poll();
        }
        Ok(data.len())
    }

    /// Pushes queued data towards the peer; does not wait for it to be
    /// acknowledged (the stack keeps sending in the background, as a
    /// kernel does after `send` returns).
    fn flush(&mut self) -> Result<(), Error> {
        self.socket.net.poll();
        self.socket.reset_error()
    }
}

impl ReadReady for TcpConn<'_, '_> {
    fn read_ready(&mut self) -> Result<bool, Error> {
        self.socket.net.poll();
        Ok(self.with_socket(|s| s.can_recv() || !s.may_recv()))
    }
}

impl WriteReady for TcpConn<'_, '_> {
    fn write_ready(&mut self) -> Result<bool, Error> {
        self.socket.net.poll();
        Ok(self.with_socket(|s| s.can_send() || !s.may_send()))
    }
}

impl Connection for TcpConn<'_, '_> {
    fn shutdown_write(&mut self) -> Result<(), Error> {
        let result = self.socket.shutdown_write();
        self.socket.net.poll();
        result
    }
}

/// An accepted socket of a listener's pool: what both kinds of
/// connection ([`TcpConn`], blocking, and
/// [`NbTcpConn`](crate::NbTcpConn), for the event mode) are, with the
/// non-blocking attempts they share. Never polls, except on drop, which
/// closes (a FIN after the queued data), hands the socket back to the
/// pool and pushes the FIN out.
pub(crate) struct Served<'s, 'a> {
    pub(crate) net: &'s dyn Net<'a>,
    pub(crate) handle: SocketHandle,
    /// `shutdown_write` was called: a send that fails is `BrokenPipe`.
    shut: bool,
}

impl<'s, 'a> Served<'s, 'a> {
    pub(crate) fn new(net: &'s dyn Net<'a>, handle: SocketHandle) -> Self {
        Self { net, handle, shut: false }
    }

    /// Runs `f` on the smoltcp socket.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut tcp::Socket<'a>) -> R) -> R {
        f(self.net.sockets().set.get_mut::<tcp::Socket<'a>>(self.handle))
    }

    /// One read: data, `Some(0)` at EOF (the peer's FIN), `None` when
    /// nothing is there yet (and for an empty `buf`, which cannot tell
    /// EOF), `ConnectionReset` after a reset.
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        if buf.is_empty() {
            return Ok(None);
        }
        self.with(|socket| match socket.recv_slice(buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(RecvError::Finished) => Ok(Some(0)),
            Err(RecvError::InvalidState) => Err(Error::RESET),
        })
    }

    /// One write: what fits in the send buffer, `None` when it is full
    /// (`Some(0)` for empty `data`); `ConnectionReset` after a reset,
    /// `BrokenPipe` after [`shutdown_write`](Self::shutdown_write) or the
    /// peer's close of a socket that may no longer send.
    pub(crate) fn try_write(&self, data: &[u8]) -> Result<Option<usize>, Error> {
        // smoltcp's send fails exactly when the socket may no longer send.
        self.with(|socket| match socket.send_slice(data) {
            Ok(0) if !data.is_empty() => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(self.send_error(socket)),
        })
    }

    /// smoltcp's `close()`: a FIN after the queued data. `ConnectionReset`
    /// if the peer reset the connection before.
    pub(crate) fn shutdown_write(&mut self) -> Result<(), Error> {
        let result = self.with(|socket| match socket.state() {
            State::Closed if !self.shut => Err(Error::RESET),
            _ => {
                socket.close();
                Ok(())
            }
        });
        self.shut = true;
        result
    }

    /// `ConnectionReset` if the peer reset the connection (and we had not
    /// shut it down).
    fn reset_error(&self) -> Result<(), Error> {
        self.with(|socket| match socket.state() {
            State::Closed if !self.shut => Err(Error::RESET),
            _ => Ok(()),
        })
    }

    /// The error for a socket that can no longer send.
    fn send_error(&self, socket: &tcp::Socket<'_>) -> Error {
        if self.shut || socket.state() != State::Closed { Error::SHUT_DOWN } else { Error::RESET }
    }
}

impl Drop for Served<'_, '_> {
    fn drop(&mut self) {
        self.net.close_conn(self.handle);
    }
}
