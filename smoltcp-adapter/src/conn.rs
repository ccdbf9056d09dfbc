//! An accepted connection as a blocking `embedded-io` stream that drives
//! the interface while it waits.

use core::time::Duration;

use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, RecvError, State};
use sockserv_core::Connection;

use crate::error::Error;
use crate::stack::Net;
use crate::wait::Woke;

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
///   (the stack's [`Wait`](crate::Wait) returning [`Woke::Woken`], as the
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
    net: &'s dyn Net<'a>,
    handle: SocketHandle,
    timeout: Option<Duration>,
    shut: bool,
}

impl<'s, 'a> TcpConn<'s, 'a> {
    pub(crate) fn new(
        net: &'s dyn Net<'a>,
        handle: SocketHandle,
        timeout: Option<Duration>,
    ) -> Self {
        Self { net, handle, timeout, shut: false }
    }

    /// Runs `f` on the smoltcp socket (for its state, options, ...).
    pub fn with_socket<R>(&self, f: impl FnOnce(&mut tcp::Socket<'a>) -> R) -> R {
        f(self.net.sockets().set.get_mut::<tcp::Socket<'a>>(self.handle))
    }

    /// Changes the stream timeout (see [`Options::stream_timeout`](crate::Options::stream_timeout)).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Calls `attempt` until it gives an answer, polling the interface and
    /// sleeping in between, up to the stream timeout; a wait ends with
    /// `Interrupted` when the stack is woken for shutdown.
    fn block<T>(
        &self,
        mut attempt: impl FnMut(&mut tcp::Socket<'a>) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let deadline = self.timeout.map(|t| self.net.now().saturating_add(t));
        loop {
            if let Some(answer) = self.with_socket(&mut attempt) {
                return answer;
            }
            if self.net.poll() {
                continue;
            }
            if deadline.is_some_and(|d| self.net.now() >= d) {
                return Err(Error::TIMED_OUT);
            }
            if self.net.idle(deadline) == Woke::Woken {
                return Err(Error::INTERRUPTED);
            }
        }
    }

    /// The error for a socket that can no longer send.
    fn send_error(&self, socket: &tcp::Socket<'_>) -> Error {
        if self.shut || socket.state() != State::Closed { Error::SHUT_DOWN } else { Error::RESET }
    }
}

impl ErrorType for TcpConn<'_, '_> {
    type Error = Error;
}

/// One read attempt: data, EOF, a reset, or nothing yet (`None`).
fn try_read(socket: &mut tcp::Socket<'_>, buf: &mut [u8]) -> Option<Result<usize, Error>> {
    match socket.recv_slice(buf) {
        Ok(0) => None,
        Ok(n) => Some(Ok(n)),
        Err(RecvError::Finished) => Some(Ok(0)),
        Err(RecvError::InvalidState) => Some(Err(Error::RESET)),
    }
}

impl Read for TcpConn<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.block(|socket| try_read(socket, buf))?;
        // Let the peer know about the window we just opened.
        self.net.poll();
        Ok(n)
    }
}

impl Write for TcpConn<'_, '_> {
    fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        let mut sent = 0;
        while sent < data.len() {
            sent += self.block(|socket| {
                if !socket.may_send() {
                    return Some(Err(self.send_error(socket)));
                }
                match socket.send_slice(&data[sent..]) {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(Ok(n)),
                }
            })?;
            self.net.poll();
        }
        Ok(data.len())
    }

    /// Pushes queued data towards the peer; does not wait for it to be
    /// acknowledged (the stack keeps sending in the background, as a
    /// kernel does after `send` returns).
    fn flush(&mut self) -> Result<(), Error> {
        self.net.poll();
        self.with_socket(|socket| match socket.state() {
            State::Closed if !self.shut => Err(Error::RESET),
            _ => Ok(()),
        })
    }
}

impl ReadReady for TcpConn<'_, '_> {
    fn read_ready(&mut self) -> Result<bool, Error> {
        self.net.poll();
        Ok(self.with_socket(|s| s.can_recv() || !s.may_recv()))
    }
}

impl WriteReady for TcpConn<'_, '_> {
    fn write_ready(&mut self) -> Result<bool, Error> {
        self.net.poll();
        Ok(self.with_socket(|s| s.can_send() || !s.may_send()))
    }
}

impl Connection for TcpConn<'_, '_> {
    fn shutdown_write(&mut self) -> Result<(), Error> {
        let result = self.with_socket(|socket| match socket.state() {
            State::Closed if !self.shut => Err(Error::RESET),
            _ => {
                socket.close();
                Ok(())
            }
        });
        self.shut = true;
        self.net.poll();
        result
    }
}

impl Drop for TcpConn<'_, '_> {
    fn drop(&mut self) {
        self.net.close_conn(self.handle);
    }
}
