//! The gate: a device wrapper that sees each received frame before the
//! interface does. It drops a SYN that smoltcp would answer with a RST
//! because no pooled socket of its port is listening (the policy
//! [`WhenFull::Drop`](crate::WhenFull::Drop)); smoltcp itself has no such
//! choice (its PR #1120 to add one is still open). And it follows IPv4
//! fragments, so that a datagram smoltcp will fail to reassemble is
//! counted and reported ([`Losses`]), never lost in silence.

use core::time::Duration;

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

use crate::loss::{Loss, Losses};
use crate::pool::Pool;

/// The device as the interface sees it during one ingress step.
pub(crate) struct Gate<'g, 'p, D> {
    pub(crate) device: &'g mut D,
    pub(crate) pool: &'p Pool<'p>,
    pub(crate) medium: Medium,
    pub(crate) losses: &'g mut Losses,
    /// Set when the frame was a TCP SYN, FIN or RST.
    pub(crate) control: &'g mut bool,
    /// The clock's time, and smoltcp's reassembly timeout.
    pub(crate) now: Duration,
    pub(crate) reassembly_timeout: Duration,
}

/// A received frame on its way to the interface.
pub(crate) struct GateRx<'g, 'p, T> {
    token: T,
    pool: &'p Pool<'p>,
    medium: Medium,
    losses: &'g mut Losses,
    control: &'g mut bool,
    now: Duration,
    reassembly_timeout: Duration,
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
        let rx = GateRx {
            token,
            pool: self.pool,
            medium: self.medium,
            losses: self.losses,
            control: self.control,
            now: self.now,
            reassembly_timeout: self.reassembly_timeout,
        };
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
        let Self { token, pool, medium, losses, control, now, reassembly_timeout } = self;
        token.consume(|frame| {
            let Some(ip) = ipv4(medium, frame) else { return f(frame) };
            losses.fragment(&ip, now, reassembly_timeout);
            *control = is_control(&ip);
            match syn_port(&ip) {
                Some(port) if pool.drops_syn(port) => {
                    losses.report(Loss::SynDropped { port });
                    // The closure must run to give the interface its
                    // result; an empty frame is one it drops unparsed,
                    // unanswered.
                    f(&[])
                }
                _ => f(frame),
            }
        })
    }

    fn meta(&self) -> smoltcp::phy::PacketMeta {
        self.token.meta()
    }
}

/// The IPv4 packet in `frame`, if it carries one.
fn ipv4(medium: Medium, frame: &[u8]) -> Option<Ipv4Packet<&[u8]>> {
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
    Ipv4Packet::new_checked(packet).ok()
}

/// Whether `ip` carries a TCP SYN, FIN or RST (or a fragment, which
/// cannot tell).
fn is_control(ip: &Ipv4Packet<&[u8]>) -> bool {
    if ip.next_header() != IpProtocol::Tcp {
        return false;
    }
    match TcpPacket::new_checked(ip.payload()) {
        Ok(tcp) if ip.frag_offset() == 0 => tcp.syn() || tcp.fin() || tcp.rst(),
        _ => true,
    }
}

/// The destination port of a connection request (a TCP SYN without ACK,
/// unfragmented or the first fragment), if `ip` carries one.
fn syn_port(ip: &Ipv4Packet<&[u8]>) -> Option<u16> {
    if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    (tcp.syn() && !tcp.ack()).then(|| tcp.dst_port())
}
