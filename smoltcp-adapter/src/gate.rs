//! The gate: a device wrapper that sees each received frame before the
//! interface does. It drops a SYN that smoltcp would answer with a RST
//! because no pooled socket of its port is listening (the policy
//! [`WhenFull::Drop`](crate::WhenFull::Drop)); smoltcp itself has no such
//! choice (its PR #1120 to add one is still open). And it follows IPv4
//! fragments, so that a datagram smoltcp will fail to reassemble is
//! counted and reported ([`Losses`]), never lost in silence, and notes
//! each UDP datagram in one frame ([`Arrival`]) so that the stack can
//! count one its socket had no room for.

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket,
};

use crate::loss::{Arrival, Loss, Losses, Timing};
use crate::pool::Pool;

/// The device as the interface sees it during one ingress step.
pub(crate) struct Gate<'g, 'p, D> {
    pub(crate) device: &'g mut D,
    pub(crate) pool: &'p Pool<'p>,
    pub(crate) medium: Medium,
    pub(crate) losses: &'g mut Losses,
    /// Set when the frame was a TCP SYN, FIN or RST.
    pub(crate) control: &'g mut bool,
    /// What following smoltcp's reassembly needs of the clock.
    pub(crate) timing: Timing,
    /// Whether to note UDP datagrams (the stack has a UDP socket), and
    /// which checksums the interface verifies.
    pub(crate) udp: Option<Checksums>,
}

/// The checksums smoltcp verifies on receive (the device's capabilities):
/// a frame that fails one never reaches a socket, and is no socket's loss.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checksums {
    pub(crate) ipv4: bool,
    pub(crate) udp: bool,
}

/// A received frame on its way to the interface: the device's, or (no
/// token) the ARP reply the neighbour watch holds (see
/// [`Neighbors`](crate::neighbor::Neighbors)).
pub(crate) struct GateRx<'g, 'p, T> {
    token: Option<T>,
    pool: &'p Pool<'p>,
    medium: Medium,
    losses: &'g mut Losses,
    control: &'g mut bool,
    timing: Timing,
    udp: Option<Checksums>,
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
        let (token, tx) = if self.losses.neighbors.injecting() {
            (None, self.device.transmit(t)?)
        } else {
            let (token, tx) = self.device.receive(t)?;
            (Some(token), tx)
        };
        let rx = GateRx {
            token,
            pool: self.pool,
            medium: self.medium,
            losses: self.losses,
            control: self.control,
            timing: self.timing,
            udp: self.udp,
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
        let Self { token, pool, medium, losses, control, timing, udp } = self;
        let Some(token) = token else { return losses.neighbors.take_injection(f) };
        token.consume(|frame| {
            let Some(ip) = ipv4(medium, frame) else {
                if medium == Medium::Ethernet {
                    losses.neighbors.received(frame);
                }
                return f(frame);
            };
            losses.fragment(&ip, timing);
            let seen = Seen::of(&ip, udp);
            *control = seen.control;
            losses.arrival = seen.arrival;
            match seen.syn {
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
        self.token.as_ref().map(RxToken::meta).unwrap_or_default()
    }
}

/// The device as the interface sees it while sending: it shows each frame
/// sent to the neighbour watch, and counts each packet dropped for a
/// neighbour that never answered (sent to our own link address, see
/// [`Neighbors`](crate::neighbor::Neighbors)).
pub(crate) struct Egress<'g, D> {
    pub(crate) device: &'g mut D,
    pub(crate) losses: &'g mut Losses,
    /// The clock's time in [`millis`](crate::millis::millis).
    pub(crate) now: u32,
    /// Our link address and IPv4 addresses (Ethernet only).
    pub(crate) ours: Option<&'g Ours>,
}

/// Our link address and (up to four) IPv4 addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ours {
    pub(crate) mac: [u8; 6],
    pub(crate) ips: [Option<Ipv4Address>; 4],
}

/// A frame the interface sends, looked at once written.
pub(crate) struct EgressTx<'g, T> {
    token: T,
    losses: &'g mut Losses,
    now: u32,
    ours: Option<&'g Ours>,
}

impl<D: Device> Device for Egress<'_, D> {
    type RxToken<'a>
        = D::RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = EgressTx<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, token) = self.device.receive(t)?;
        let tx = EgressTx { token, losses: self.losses, now: self.now, ours: self.ours };
        Some((rx, tx))
    }

    fn transmit(&mut self, t: Instant) -> Option<Self::TxToken<'_>> {
        let token = self.device.transmit(t)?;
        Some(EgressTx { token, losses: self.losses, now: self.now, ours: self.ours })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

impl<T: TxToken> TxToken for EgressTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let Self { token, losses, now, ours } = self;
        token.consume(len, |frame| {
            let r = f(frame);
            if let Some(ours) = ours {
                losses.neighbors.sent(frame, now);
                if let Some(to) = unresolved(frame, ours) {
                    losses.report(Loss::Unresolved { to });
                }
            }
            r
        })
    }

    fn set_meta(&mut self, meta: smoltcp::phy::PacketMeta) {
        self.token.set_meta(meta);
    }
}

/// The destination of an IPv4 packet in `frame` sent to our own link
/// address but not to one of our addresses: one given up on.
fn unresolved(frame: &[u8], ours: &Ours) -> Option<Ipv4Address> {
    let head = frame.first_chunk::<34>()?;
    if head[0..6] != ours.mac || head[12..14] != [0x08, 0x00] {
        return None;
    }
    let to = Ipv4Address::new(head[30], head[31], head[32], head[33]);
    (!ours.ips.contains(&Some(to))).then_some(to)
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
        #[cfg(feature = "medium-ip")]
        Medium::Ip => frame,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    Ipv4Packet::new_checked(packet).ok()
}

/// What the gate learns from an IPv4 packet, in one pass over its
/// headers.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// It carries a TCP SYN, FIN or RST (or is a TCP fragment, which
    /// cannot tell).
    control: bool,
    /// It is a connection request (a TCP SYN without ACK, unfragmented or
    /// the first fragment): its destination port.
    syn: Option<u16>,
    /// The UDP datagram it carries whole, if the stack watches UDP
    /// (`udp`: the checksums smoltcp verifies) and smoltcp will take it
    /// to a socket (see [`arrival`]).
    arrival: Option<Arrival>,
}

impl Seen {
    fn of(ip: &Ipv4Packet<&[u8]>, udp: Option<Checksums>) -> Self {
        let first = ip.frag_offset() == 0;
        match ip.next_header() {
            IpProtocol::Tcp => match TcpPacket::new_checked(ip.payload()) {
                Ok(tcp) if first => Self {
                    control: tcp.syn() || tcp.fin() || tcp.rst(),
                    syn: (tcp.syn() && !tcp.ack()).then(|| tcp.dst_port()),
                    arrival: None,
                },
                _ => Self { control: true, ..Self::default() },
            },
            IpProtocol::Udp if first && !ip.more_frags() => Self {
                arrival: udp.and_then(|checksums| arrival(ip, checksums)),
                ..Self::default()
            },
            _ => Self::default(),
        }
    }
}

/// The UDP datagram in `ip` (a whole one, not a fragment), if smoltcp
/// will take it to a socket: well formed, its checksums right (those
/// smoltcp verifies).
fn arrival(ip: &Ipv4Packet<&[u8]>, checksums: Checksums) -> Option<Arrival> {
    if checksums.ipv4 && !ip.verify_checksum() {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    let (from, to) = (ip.src_addr(), ip.dst_addr());
    // As smoltcp: a zero checksum means none was sent.
    if checksums.udp && udp.checksum() != 0 && !udp.verify_checksum(&from.into(), &to.into()) {
        return None;
    }
    Some(Arrival { from, to, port: udp.dst_port(), len: udp.payload().len() })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    use super::*;

    /// An IPv4 packet carrying a TCP segment with `control`, ACK or not.
    fn segment(control: TcpControl, ack: bool) -> Vec<u8> {
        let (src, dst) = (Ipv4Address::new(10, 0, 0, 2), Ipv4Address::new(10, 0, 0, 1));
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 7000,
            control,
            seq_number: TcpSeqNumber(1),
            ack_number: ack.then_some(TcpSeqNumber(1)),
            window_len: 1024,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        let mut buf = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
        let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut packet, &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(packet.payload_mut()),
            &src.into(),
            &dst.into(),
            &caps,
        );
        buf
    }

    fn parsed(buf: &[u8]) -> Ipv4Packet<&[u8]> {
        Ipv4Packet::new_checked(buf).unwrap()
    }

    fn syn_port(ip: &Ipv4Packet<&[u8]>) -> Option<u16> {
        Seen::of(ip, None).syn
    }

    fn is_control(ip: &Ipv4Packet<&[u8]>) -> bool {
        Seen::of(ip, None).control
    }

    #[test]
    fn only_a_syn_without_ack_is_a_connection_request() {
        assert_eq!(syn_port(&parsed(&segment(TcpControl::Syn, false))), Some(7000));
        assert_eq!(syn_port(&parsed(&segment(TcpControl::Syn, true))), None, "SYN-ACK");
        assert_eq!(syn_port(&parsed(&segment(TcpControl::None, true))), None, "data/ACK");
        assert_eq!(syn_port(&parsed(&segment(TcpControl::Rst, false))), None);
    }

    #[test]
    fn control_segments_are_told_apart_from_data_and_acks() {
        for control in [TcpControl::Syn, TcpControl::Fin, TcpControl::Rst] {
            assert!(is_control(&parsed(&segment(control, true))), "{control:?}");
        }
        assert!(!is_control(&parsed(&segment(TcpControl::None, true))));
        assert!(!is_control(&parsed(&segment(TcpControl::Psh, true))));
    }

    #[test]
    fn frames_that_are_not_ipv4_pass_unparsed() {
        assert!(ipv4(Medium::Ethernet, &[0u8; 10]).is_none(), "a runt");
        // An Ethernet frame with an ARP ethertype.
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(ipv4(Medium::Ethernet, &arp).is_none());
        // A later fragment carries no TCP header: a control frame, never a SYN.
        let mut frag = segment(TcpControl::None, true);
        Ipv4Packet::new_unchecked(&mut frag[..]).set_frag_offset(8);
        Ipv4Packet::new_unchecked(&mut frag[..]).fill_checksum();
        let p = parsed(&frag);
        assert_eq!(syn_port(&p), None);
        assert!(is_control(&p), "a fragment cannot be told: follow the pool");
    }
}
