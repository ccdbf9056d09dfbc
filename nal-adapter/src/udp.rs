//! UDP over embedded-nal.

use core::fmt::Debug;
use core::net::SocketAddr;
use core::time::Duration;

use embedded_io::{ErrorKind, ErrorType};
use embedded_nal::{UdpClientStack, UdpFullStack};
use sockserv_core::driver::{Clock, DatagramSocket, Readiness, Received, Wait};

use crate::{NalError, NalStack, Tried, readiness, unfinished};

type UdpErr<T> = NalError<<T as UdpClientStack>::Error>;

/// The stack's error (embedded-nal's UDP errors have no kind).
fn stack_error<E>(e: E) -> NalError<E> {
    NalError::new(ErrorKind::Other, Some(e))
}

/// A bound embedded-nal UDP socket as a [`DatagramSocket`], receiving into
/// its own `stash` buffer (see the [module docs](super)): a datagram that
/// fills the stash is reported as truncated, never served cut.
pub struct NalUdp<'n, T: UdpFullStack, C, P, B> {
    net: &'n NalStack<T, C, P>,
    socket: Option<T::UdpSocket>,
    stash: B,
    pending: Option<(usize, SocketAddr)>,
    /// A receive that failed inside `wait`, for `try_recv_from` to report.
    pending_err: Option<T::Error>,
    send_timeout: Option<Duration>,
}

impl<T, C, P> NalStack<T, C, P>
where
    T: UdpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
{
    /// Binds a UDP socket to `port`, receiving into `stash` (make it one
    /// byte larger than the largest datagram served).
    ///
    /// # Errors
    /// The stack's error from `socket` or `bind`.
    pub fn bind_udp<B: AsMut<[u8]>>(
        &self,
        port: u16,
        stash: B,
    ) -> Result<NalUdp<'_, T, C, P, B>, UdpErr<T>> {
        let socket = self.with_stack(|s| {
            let mut socket = UdpClientStack::socket(s).map_err(stack_error)?;
            match UdpFullStack::bind(s, &mut socket, port) {
                Ok(()) => Ok(socket),
                Err(e) => {
                    let _ = UdpClientStack::close(s, socket);
                    Err(stack_error(e))
                }
            }
        })?;
        Ok(NalUdp {
            net: self,
            socket: Some(socket),
            stash,
            pending: None,
            pending_err: None,
            send_timeout: Some(Duration::from_secs(1)),
        })
    }
}

impl<T: UdpFullStack, C, P, B> ErrorType for NalUdp<'_, T, C, P, B>
where
    T::Error: Debug,
{
    type Error = UdpErr<T>;
}

impl<T, C, P, B> NalUdp<'_, T, C, P, B>
where
    T: UdpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
    B: AsMut<[u8]>,
{
    /// How long `send_to` retries a send that would block (a shutdown
    /// wake-up ends it sooner, with `Interrupted`).
    pub fn set_send_timeout(&mut self, timeout: Option<Duration>) {
        self.send_timeout = timeout;
    }

    fn receive(&mut self, deadline: Option<Duration>, wake: bool) -> Tried<(), T::Error> {
        if self.pending.is_some() {
            return Ok(Ok(()));
        }
        let Some(socket) = self.socket.as_mut() else { return Err(Readiness::TimedOut) };
        let stash = self.stash.as_mut();
        let got = self.net.retry(deadline, wake, |s| UdpClientStack::receive(s, socket, stash))?;
        Ok(got.map(|got| self.pending = Some(got)))
    }
}

impl<T, C, P, B> Wait for NalUdp<'_, T, C, P, B>
where
    T: UdpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
    B: AsMut<[u8]>,
{
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, UdpErr<T>> {
        if self.pending_err.is_some() {
            return Ok(Readiness::Ready);
        }
        // embedded-nal has no readiness: try to receive, and hold what comes.
        let deadline = self.net.deadline(timeout);
        let tried = self.receive(deadline, true);
        Ok(readiness(tried, &mut self.pending_err))
    }

    fn pause(&mut self, duration: Duration) -> Result<Readiness, UdpErr<T>> {
        Ok(self.net.pause(duration))
    }
}

impl<T, C, P, B> DatagramSocket for NalUdp<'_, T, C, P, B>
where
    T: UdpFullStack,
    C: Clock,
    P: FnMut(Duration) -> bool,
    B: AsMut<[u8]>,
{
    type Address = SocketAddr;

    /// # Errors
    /// The stack's error from `receive`, including one that `wait` met.
    fn try_recv_from(&mut self, buf: &mut [u8]) -> Result<Option<Received<SocketAddr>>, UdpErr<T>> {
        if let Some(e) = self.pending_err.take() {
            return Err(stack_error(e));
        }
        match self.receive(self.net.deadline(Some(Duration::ZERO)), false) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(stack_error(e)),
            Err(_) => return Ok(None),
        }
        let Some((n, from)) = self.pending.take() else { return Ok(None) };
        let stash = self.stash.as_mut();
        // A datagram that filled the stash may have been cut: size unknown.
        let size = if n >= stash.len() { stash.len().saturating_add(1) } else { n };
        let len = size.min(buf.len()).min(n);
        buf[..len].copy_from_slice(&stash[..len]);
        Ok(Some(Received { len, from, truncated: (size > len).then_some(size) }))
    }

    fn send_to(&mut self, data: &[u8], to: &SocketAddr) -> Result<(), UdpErr<T>> {
        let Some(socket) = self.socket.as_mut() else {
            return Err(NalError::new(ErrorKind::NotConnected, None));
        };
        let deadline = self.net.deadline(self.send_timeout);
        let tried = self.net.retry(deadline, true, |s| UdpFullStack::send_to(s, socket, *to, data));
        tried.map_err(unfinished)?.map_err(stack_error)
    }
}

impl<T: UdpFullStack, C, P, B> Drop for NalUdp<'_, T, C, P, B> {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            let _ = UdpClientStack::close(&mut *self.net.stack.borrow_mut(), socket);
        }
    }
}
