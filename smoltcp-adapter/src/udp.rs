//! A UDP socket on the stack as a [`DatagramSocket`].

use core::time::Duration;

use embedded_io::ErrorType;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp::{self, SendError};
use smoltcp::wire::IpEndpoint;
use sockserv_core::driver::{DatagramSocket, Readiness, Received, Wait};

use crate::error::Error;
use crate::millis::Micros;
use crate::net::Net;

/// IPv4 and UDP headers: what a datagram adds to its payload.
const HEADERS: usize = 20 + 8;

/// The largest IPv4 packet this stack sends: one frame, or with
/// `large-datagrams` (smoltcp fragments it) the largest IPv4 allows.
fn max_packet(ip_mtu: usize) -> usize {
    if cfg!(feature = "large-datagrams") { usize::from(u16::MAX) } else { ip_mtu }
}

/// A bound UDP socket on a smoltcp [`Stack`](crate::Stack): the socket of
/// `socketserver.UDPServer`.
///
/// * A datagram larger than the server's buffer is **reported, never cut
///   silently**: the socket peeks first and tells the size in
///   [`Received::truncated`] (smoltcp's own `recv_slice` would drop it).
///   A datagram that finds the smoltcp socket's receive queue full (or
///   is larger than its whole buffer) never gets this far: smoltcp drops
///   it on arrival, and the stack counts it in
///   [`Stack::stats`](crate::Stack::stats) and tells the
///   [`Stack::on_loss`](crate::Stack::on_loss) hook
///   ([`DatagramLoss::QueueFull`](crate::DatagramLoss::QueueFull)): give
///   the socket a packet slot for every datagram that can arrive between
///   two reads. A datagram larger than
///   one frame arrives in fragments: with the `large-datagrams` feature
///   smoltcp reassembles it (up to 64 KiB); without it, or when
///   reassembly fails, the loss is counted and told the same way.
/// * `send_to` refuses (`InvalidInput`) a datagram larger than one frame
///   (without `large-datagrams`: this stack then does not fragment) or
///   65,507 bytes (with it), or than the send buffer holds; it waits for room in the send buffer up to
///   [`send_timeout`](Self::set_send_timeout) (1 s by default: a peer whose
///   link address never resolves cannot hold the server for ever).
///
/// Dropping it removes the socket from the stack.
pub struct UdpSocket<'s, 'a> {
    net: &'s dyn Net<'a>,
    handle: SocketHandle,
    send_timeout: Option<Duration>,
}

impl<'s, 'a> UdpSocket<'s, 'a> {
    pub(crate) fn new(net: &'s dyn Net<'a>, handle: SocketHandle) -> Self {
        Self { net, handle, send_timeout: Some(Duration::from_secs(1)) }
    }

    /// The stack this socket lives on.
    pub(crate) fn net(&self) -> &'s dyn Net<'a> {
        self.net
    }

    /// How long `send_to` waits for room in the send buffer (`None`: for
    /// ever).
    pub fn set_send_timeout(&mut self, timeout: Option<Duration>) {
        self.send_timeout = timeout;
    }

    /// Runs `f` on the smoltcp socket.
    pub fn with_socket<R>(&self, f: impl FnOnce(&mut udp::Socket<'a>) -> R) -> R {
        f(self.net.sockets().set.get_mut::<udp::Socket<'a>>(self.handle))
    }

    fn run(&self, deadline: Option<Micros>, watch: bool) -> Readiness {
        loop {
            self.net.poll();
            if watch && self.with_socket(|s| s.can_recv()) {
                return Readiness::Ready;
            }
            if self.net.passed(deadline) {
                return Readiness::TimedOut;
            }
            if self.net.idle(deadline) == Readiness::Woken {
                return Readiness::Woken;
            }
        }
    }
}

impl ErrorType for UdpSocket<'_, '_> {
    type Error = Error;
}

impl Wait for UdpSocket<'_, '_> {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, Error> {
        let deadline = self.net.deadline(timeout);
        Ok(self.run(deadline, true))
    }

    fn pause(&mut self, duration: Duration) -> Result<Readiness, Error> {
        let deadline = self.net.deadline(Some(duration));
        Ok(self.run(deadline, false))
    }
}

impl DatagramSocket for UdpSocket<'_, '_> {
    type Address = IpEndpoint;

    fn try_recv_from(&mut self, buf: &mut [u8]) -> Result<Option<Received<IpEndpoint>>, Error> {
        self.with_socket(|socket| {
            // Peek first: recv_slice would drop a datagram too big for `buf`.
            let Ok((payload, meta)) = socket.peek() else { return Ok(None) };
            let size = payload.len();
            let len = size.min(buf.len());
            buf[..len].copy_from_slice(&payload[..len]);
            let from = meta.endpoint;
            let _ = socket.recv();
            Ok(Some(Received { len, from, truncated: (size > len).then_some(size) }))
        })
    }

    fn send_to(&mut self, data: &[u8], to: &IpEndpoint) -> Result<(), Error> {
        let capacity = self.with_socket(|s| s.payload_send_capacity());
        if data.len() > capacity || data.len() + HEADERS > max_packet(self.net.ip_mtu()) {
            return Err(Error::TOO_LARGE);
        }
        let deadline = self.net.deadline(self.send_timeout);
        loop {
            match self.with_socket(|s| s.send_slice(data, *to)) {
                Ok(()) => {
                    self.net.poll();
                    return Ok(());
                }
                Err(SendError::Unaddressable) => return Err(Error::UNADDRESSABLE),
                Err(SendError::BufferFull) => {}
            }
            if self.net.poll() {
                continue;
            }
            if self.net.passed(deadline) {
                return Err(Error::TIMED_OUT);
            }
            let _ = self.net.idle(deadline);
        }
    }
}

impl Drop for UdpSocket<'_, '_> {
    fn drop(&mut self) {
        let mut socks = self.net.sockets();
        socks.set.remove(self.handle);
        socks.udp = socks.udp.saturating_sub(1);
    }
}
