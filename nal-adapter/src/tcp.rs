//! TCP over embedded-nal: a listener and its connections.

use core::net::SocketAddr;
use core::time::Duration;

use embedded_io::{ErrorKind, ErrorType, Read, Write};
use embedded_nal::{TcpClientStack, TcpError, TcpErrorKind, TcpFullStack};
use sockserv_core::driver::{Accepted, Clock, Connection, Readiness, StreamListener, Wait};

use crate::{NalError, NalStack, Tried, readiness, unfinished};

type TcpErr<T> = NalError<<T as TcpClientStack>::Error>;

fn stack_error<E: TcpError>(e: E) -> NalError<E> {
    let kind = match e.kind() {
        TcpErrorKind::PipeClosed => ErrorKind::BrokenPipe,
        _ => ErrorKind::Other,
    };
    NalError::new(kind, Some(e))
}

/// A read or write that may have waited, as its result.
fn answer<R, E: TcpError>(tried: Tried<R, E>) -> Result<R, NalError<E>> {
    tried.map_err(unfinished)?.map_err(stack_error)
}

/// A listening embedded-nal TCP socket as a [`StreamListener`]. See the
/// [module docs](super) for what embedded-nal cannot say.
pub struct NalListener<'n, T: TcpFullStack, C, P> {
    net: &'n NalStack<T, C, P>,
    socket: Option<T::TcpSocket>,
    pending: Option<(T::TcpSocket, SocketAddr)>,
    /// An accept that failed inside `wait`, for `try_accept` to report.
    pending_err: Option<T::Error>,
    stream_timeout: Option<Duration>,
}

impl<T, C, P> NalStack<T, C, P>
where
    T: TcpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
{
    /// Binds and listens on `port`; accepted connections get
    /// `stream_timeout` (see [`NalConn`]).
    ///
    /// # Errors
    /// The stack's error from `socket`, `bind` or `listen` (the socket is
    /// closed then).
    pub fn listen(
        &self,
        port: u16,
        stream_timeout: Option<Duration>,
    ) -> Result<NalListener<'_, T, C, P>, TcpErr<T>> {
        self.with_stack(|s| {
            let mut socket = TcpClientStack::socket(s).map_err(stack_error)?;
            let bound = TcpFullStack::bind(s, &mut socket, port)
                .and_then(|()| TcpFullStack::listen(s, &mut socket));
            match bound {
                Ok(()) => Ok(socket),
                Err(e) => {
                    let _ = TcpClientStack::close(s, socket);
                    Err(stack_error(e))
                }
            }
        })
        .map(|socket| NalListener {
            net: self,
            socket: Some(socket),
            pending: None,
            pending_err: None,
            stream_timeout,
        })
    }
}

impl<T: TcpFullStack, C, P> ErrorType for NalListener<'_, T, C, P> {
    type Error = TcpErr<T>;
}

impl<'n, T, C, P> NalListener<'n, T, C, P>
where
    T: TcpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
{
    fn accept(&mut self, deadline: Option<Duration>, wake: bool) -> Tried<(), T::Error> {
        if self.pending.is_some() {
            return Ok(Ok(()));
        }
        let Some(listening) = self.socket.as_mut() else { return Err(Readiness::TimedOut) };
        let got = self.net.retry(deadline, wake, |s| TcpFullStack::accept(s, listening))?;
        Ok(got.map(|got| self.pending = Some(got)))
    }
}

impl<'n, T, C, P> Wait for NalListener<'n, T, C, P>
where
    T: TcpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
{
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, TcpErr<T>> {
        if self.pending_err.is_some() {
            return Ok(Readiness::Ready);
        }
        // embedded-nal has no readiness: try to accept, and hold what comes.
        let deadline = self.net.deadline(timeout);
        let tried = self.accept(deadline, true);
        Ok(readiness(tried, &mut self.pending_err))
    }

    fn pause(&mut self, duration: Duration) -> Result<Readiness, TcpErr<T>> {
        Ok(self.net.pause(duration))
    }
}

impl<'n, T, C, P> StreamListener for NalListener<'n, T, C, P>
where
    T: TcpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
{
    type Stream = NalConn<'n, T, C, P>;
    type Address = SocketAddr;

    /// # Errors
    /// The stack's error from `accept`, including one that `wait` met.
    fn try_accept(&mut self) -> Result<Option<Accepted<Self>>, TcpErr<T>> {
        if let Some(e) = self.pending_err.take() {
            return Err(stack_error(e));
        }
        match self.accept(self.net.deadline(Some(Duration::ZERO)), false) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(stack_error(e)),
            Err(_) => return Ok(None),
        }
        Ok(self.pending.take().map(|(socket, from)| {
            let conn =
                NalConn { net: self.net, socket: Some(socket), timeout: self.stream_timeout };
            (conn, from)
        }))
    }
}

impl<T: TcpFullStack, C, P> Drop for NalListener<'_, T, C, P> {
    fn drop(&mut self) {
        let mut stack = self.net.stack.borrow_mut();
        for socket in self.pending.take().map(|p| p.0).into_iter().chain(self.socket.take()) {
            let _ = TcpClientStack::close(&mut *stack, socket);
        }
    }
}

/// An accepted embedded-nal TCP connection as a blocking `embedded-io`
/// stream: `WouldBlock` is retried every tick; EOF is `Ok(0)`; writes are
/// whole; a read or write waiting longer than the stream timeout fails
/// with `TimedOut`. A read or write that must wait fails with
/// `Interrupted` when the sleep function asks for a shutdown wake-up (as
/// the smoltcp adapter's `TcpConn` and std's sequential server
/// do: an idle client, or one that stops reading, cannot hold a stopping
/// server). `shutdown_write` closes the socket (embedded-nal has no
/// half-close).
pub struct NalConn<'n, T: TcpFullStack, C, P> {
    net: &'n NalStack<T, C, P>,
    socket: Option<T::TcpSocket>,
    timeout: Option<Duration>,
}

impl<T: TcpFullStack, C, P> ErrorType for NalConn<'_, T, C, P> {
    type Error = TcpErr<T>;
}

impl<T, C, P> Read for NalConn<'_, T, C, P>
where
    T: TcpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
{
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TcpErr<T>> {
        let Some(socket) = self.socket.as_mut() else { return Ok(0) };
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.net.deadline(self.timeout);
        answer(self.net.retry(deadline, true, |s| TcpClientStack::receive(s, socket, buf)))
    }
}

impl<T, C, P> Write for NalConn<'_, T, C, P>
where
    T: TcpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
{
    fn write(&mut self, data: &[u8]) -> Result<usize, TcpErr<T>> {
        let Some(socket) = self.socket.as_mut() else {
            return Err(NalError::new(ErrorKind::BrokenPipe, None));
        };
        let mut sent = 0;
        while sent < data.len() {
            let deadline = self.net.deadline(self.timeout);
            let rest = &data[sent..];
            let n =
                answer(self.net.retry(deadline, true, |s| TcpClientStack::send(s, socket, rest)))?;
            if n == 0 {
                return Err(NalError::new(ErrorKind::WriteZero, None));
            }
            sent += n;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> Result<(), TcpErr<T>> {
        Ok(())
    }
}

impl<T, C, P> Connection for NalConn<'_, T, C, P>
where
    T: TcpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
{
    fn shutdown_write(&mut self) -> Result<(), TcpErr<T>> {
        match self.socket.take() {
            Some(socket) => {
                self.net.with_stack(|s| TcpClientStack::close(s, socket)).map_err(stack_error)
            }
            None => Ok(()),
        }
    }
}

impl<T: TcpFullStack, C, P> Drop for NalConn<'_, T, C, P> {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            let _ = TcpClientStack::close(&mut *self.net.stack.borrow_mut(), socket);
        }
    }
}
