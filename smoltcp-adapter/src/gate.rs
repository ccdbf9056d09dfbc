//! The listeners' gate: a device wrapper that sees each received frame
//! before the interface does, and drops a SYN that smoltcp would answer
//! with a RST because no pooled socket of its port is listening (the
//! policy [`WhenFull::Drop`](crate::WhenFull::Drop)). smoltcp itself has
//! no such choice (its PR #1120 to add one is still open).

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

use crate::pool::Pool;

/// The device as the interface sees it during one ingress step.
pub(crate) struct Gate<'g, 'p, D> {
    pub(crate) device: &'g mut D,
    pub(crate) pool: &'p Pool<'p>,
    pub(crate) medium: Medium,
    /// Counts the SYNs dropped.
    pub(crate) dropped: &'g mut u32,
}

/// A received frame on its way to the interface.
pub(crate) struct GateRx<'g, 'p, T> {
    token: T,
    pool: &'p Pool<'p>,
    medium: Medium,
    dropped: &'g mut u32,
}

impl<'p, D: Device> Device for Gate<'_, 'p, D> {
    type RxToken<'a>
        = GateRx<'a, 'p, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (token, tx) = self.device.receive(t)?;
        let rx = GateRx { token, pool: self.pool, medium: self.medium, dropped: self.dropped };
        Some((rx, tx))
    }

    fn transmit(&mut self, t: Instant) -> Option<Self::TxToken<'_>> {
        self.device.transmit(t)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

impl<T: RxToken> RxToken for GateRx<'_, '_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let Self { token, pool, medium, dropped } = self;
        token.consume(|frame| match syn_port(medium, frame) {
            Some(port) if pool.drops_syn(port) => {
                *dropped = dropped.wrapping_add(1);
                // The closure must run to give the interface its result;
                // an empty frame is one it drops unparsed, unanswered.
                f(&[])
            }
            _ => f(frame),
        })
    }

    fn meta(&self) -> smoltcp::phy::PacketMeta {
        self.token.meta()
    }
}

/// The destination port of a connection request (a TCP SYN without ACK,
/// in an unfragmented or first-fragment IPv4 packet), if `frame` is one.
pub(crate) fn syn_port(medium: Medium, frame: &[u8]) -> Option<u16> {
    let packet = match medium {
        Medium::Ethernet => {
            let eth = EthernetFrame::new_checked(frame).ok()?;
            if eth.ethertype() != EthernetProtocol::Ipv4 {
                return None;
            }
            eth.payload()
        }
        Medium::Ip => frame,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    (tcp.syn() && !tcp.ack()).then(|| tcp.dst_port())
}
