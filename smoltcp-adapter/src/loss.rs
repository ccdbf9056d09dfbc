//! What smoltcp drops before any socket sees it, counted and reported:
//! SYNs the listeners' policy drops, IPv4 datagrams that arrive in
//! fragments smoltcp cannot reassemble (reassembly off, every
//! reassembly buffer busy, too large for one, or a fragment that never
//! came), and UDP datagrams a bound socket had no room for (its receive
//! queue full, or larger than its buffer). The gate sees every received
//! frame, so it keeps a model of smoltcp's reassembly buffers beside
//! them, and notes each UDP datagram so that the stack can tell whether
//! its socket took it.

use smoltcp::wire::{Ipv4Address, Ipv4Packet};

use crate::millis::Micros;
use crate::neighbor::Neighbors;

/// What the stack counted: losses it could not report to a server as
/// they happened (smoltcp drops these before any socket sees them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// SYNs dropped because no pooled socket of their port was listening
    /// ([`WhenFull::Drop`](crate::WhenFull::Drop) /
    /// [`WhenFull::Refuse`](crate::WhenFull::Refuse)); each client retries.
    pub syns_dropped: u32,
    /// IPv4 datagrams lost on arrival: UDP or any other protocol that came
    /// in fragments smoltcp could not reassemble, and UDP datagrams whose
    /// socket had no room; see [`DatagramLoss`].
    pub datagrams_lost: u32,
    /// Packets dropped because their on-link destination never answered
    /// ARP: see [`Loss::Unresolved`].
    pub unresolved: u32,
    /// Episodes in which a listener had
    /// [`Options::max_connections`](crate::Options::max_connections) open
    /// (counted once each, when it fills; a warning goes through the
    /// logging shim then, and another when it clears).
    pub connection_cap_reached: u32,
}

/// One loss, as told to the hook of [`Stack::on_loss`](crate::Stack::on_loss).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Loss {
    /// A SYN to `port` was dropped: no pooled socket was listening.
    SynDropped {
        /// The listener's port.
        port: u16,
    },
    /// A datagram from `from` was lost on arrival (it came in fragments
    /// smoltcp could not reassemble, or its UDP socket had no room).
    Datagram {
        /// Its sender.
        from: Ipv4Address,
        /// Why.
        reason: DatagramLoss,
    },
    /// A packet to `to`, an on-link address that did not answer ARP
    /// during 3 s, was dropped rather than left to block every later
    /// packet of its socket (smoltcp keeps such a packet at the head of
    /// the send queue for ever). The address is asked for again after a
    /// minute, or at once when it speaks ARP.
    Unresolved {
        /// The destination.
        to: Ipv4Address,
    },
}

/// Why a datagram was lost on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatagramLoss {
    /// This build cannot reassemble (the adapter's `large-datagrams`
    /// feature is off): any datagram larger than one frame is lost.
    NoReassembly,
    /// Every reassembly buffer was busy with another datagram.
    BuffersBusy,
    /// Larger than a reassembly buffer, or than its UDP socket's whole
    /// receive buffer (it could never be taken).
    TooLarge,
    /// A fragment never came before smoltcp's reassembly timeout.
    Incomplete,
    /// Its UDP socket's receive queue was full (every packet slot or the
    /// payload buffer taken): the server did not read fast enough, or the
    /// queue is too small for the clients in flight at once. Counted for a
    /// datagram that came in one frame with a payload (an empty datagram
    /// or one smoltcp reassembled cannot be told from one the socket took).
    QueueFull,
}

/// A UDP datagram that came in one frame, as the gate saw it: the stack
/// checks after the interface took the frame whether a socket queued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Arrival {
    pub(crate) from: Ipv4Address,
    pub(crate) to: Ipv4Address,
    pub(crate) port: u16,
    /// Its payload's size.
    pub(crate) len: usize,
}

/// What following smoltcp's reassembly needs of the clock: the time of
/// the frame and smoltcp's reassembly timeout, in [`Micros`].
#[cfg(feature = "large-datagrams")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) now: Micros,
    pub(crate) timeout: Micros,
}

/// Nothing: a build without reassembly does not time fragments.
#[cfg(not(feature = "large-datagrams"))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing;

/// The counters, the hook and the reassembly model.
#[derive(Debug, Default)]
pub(crate) struct Losses {
    pub(crate) stats: Stats,
    pub(crate) hook: Option<fn(Loss)>,
    /// The UDP datagram in the frame the interface is taking, if any.
    pub(crate) arrival: Option<Arrival>,
    /// The neighbours that do not answer ARP.
    pub(crate) neighbors: Neighbors,
    #[cfg(feature = "large-datagrams")]
    reassembly: model::Reassembly,
}

impl Losses {
    pub(crate) fn report(&mut self, loss: Loss) {
        count(&mut self.stats, self.hook, loss);
    }

    /// Follows an IPv4 `packet` through smoltcp's reassembly (at the
    /// time `timing` tells), reporting what will be lost.
    pub(crate) fn fragment(&mut self, packet: &Ipv4Packet<&[u8]>, timing: Timing) {
        if !packet.more_frags() && packet.frag_offset() == 0 {
            return;
        }
        #[cfg(not(feature = "large-datagrams"))]
        {
            let Timing = timing;
            // Each datagram once, on its first fragment.
            if packet.frag_offset() == 0 {
                let from = packet.src_addr();
                self.report(Loss::Datagram { from, reason: DatagramLoss::NoReassembly });
            }
        }
        #[cfg(feature = "large-datagrams")]
        {
            let Self { stats, hook, reassembly, .. } = self;
            let Timing { now, timeout } = timing;
            reassembly.fragment(packet, now, timeout, &mut |from, reason| {
                count(stats, *hook, Loss::Datagram { from, reason });
            });
        }
    }

    /// Gives up on datagrams whose reassembly timed out by `now` (in
    /// [`Micros`]), as smoltcp does at each poll.
    pub(crate) fn expire(&mut self, now: Micros) {
        #[cfg(not(feature = "large-datagrams"))]
        let _ = now;
        #[cfg(feature = "large-datagrams")]
        {
            let Self { stats, hook, reassembly, .. } = self;
            reassembly.expire(now, &mut |from, reason| {
                count(stats, *hook, Loss::Datagram { from, reason });
            });
        }
    }
}

fn count(stats: &mut Stats, hook: Option<fn(Loss)>, loss: Loss) {
    let counter = match loss {
        Loss::SynDropped { .. } => &mut stats.syns_dropped,
        Loss::Datagram { .. } => &mut stats.datagrams_lost,
        Loss::Unresolved { .. } => &mut stats.unresolved,
    };
    *counter = counter.wrapping_add(1);
    if let Some(hook) = hook {
        hook(loss);
    }
}

#[cfg(feature = "large-datagrams")]
mod model {
    use smoltcp::wire::{IpProtocol, Ipv4Address, Ipv4Packet};

    use super::DatagramLoss;
    use crate::millis::Micros;

    /// smoltcp's `reassembly-buffer-count-*` and `-size-*`, as the
    /// feature sets them.
    const BUFFERS: usize = 2;
    /// How many refused datagrams are remembered.
    const REFUSED: usize = 4;
    const SIZE: usize = 65_536;

    /// smoltcp's key for a datagram being reassembled.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Key {
        id: u16,
        src: Ipv4Address,
        dst: Ipv4Address,
        protocol: IpProtocol,
    }

    #[derive(Clone, Copy, Debug)]
    struct Hold {
        key: Key,
        /// Payload bytes received so far.
        got: usize,
        /// The payload's size, once the last fragment came.
        total: Option<usize>,
        /// smoltcp gave up on it (too large): it holds its buffer until
        /// it expires, and is not reported again.
        failed: bool,
        expires: Micros,
    }

    /// A mirror of smoltcp's `PacketAssemblerSet`: which datagrams hold a
    /// buffer, and how much of each has come.
    #[derive(Debug, Default)]
    pub(super) struct Reassembly {
        slots: [Option<Hold>; BUFFERS],
        /// The last datagrams refused for want of a buffer (each reported
        /// once, not once per fragment, even when their fragments
        /// interleave), oldest overwritten first.
        refused: [Option<Key>; REFUSED],
        next_refused: usize,
    }

    impl Reassembly {
        /// As smoltcp's `remove_expired`.
        pub(super) fn expire(
            &mut self,
            now: Micros,
            lost: &mut impl FnMut(Ipv4Address, DatagramLoss),
        ) {
            for slot in &mut self.slots {
                if let Some(h) = slot.filter(|h| h.expires < now) {
                    if !h.failed {
                        lost(h.key.src, DatagramLoss::Incomplete);
                    }
                    *slot = None;
                }
            }
        }

        /// As smoltcp's `process_ipv4` with fragmentation.
        pub(super) fn fragment(
            &mut self,
            packet: &Ipv4Packet<&[u8]>,
            now: Micros,
            timeout: Micros,
            lost: &mut impl FnMut(Ipv4Address, DatagramLoss),
        ) {
            self.expire(now, lost);
            let key = Key {
                id: packet.ident(),
                src: packet.src_addr(),
                dst: packet.dst_addr(),
                protocol: packet.next_header(),
            };
            let offset = usize::from(packet.frag_offset());
            let len = packet.payload().len();
            let held = self.slots.iter().position(|s| s.is_some_and(|h| h.key == key));
            let Some(i) = held.or_else(|| self.slots.iter().position(Option::is_none)) else {
                if !self.refused.contains(&Some(key)) {
                    self.refused[self.next_refused] = Some(key);
                    self.next_refused = (self.next_refused + 1) % REFUSED;
                    lost(key.src, DatagramLoss::BuffersBusy);
                }
                return;
            };
            // A datagram already reported lost (a fragment found no
            // buffer) that takes a buffer now holds it until it expires.
            let failed = self.refused.contains(&Some(key));
            let h = self.slots[i].get_or_insert(Hold {
                key,
                got: 0,
                total: None,
                failed,
                expires: now.saturating_add(timeout),
            });
            if h.failed {
                return;
            }
            if offset + len > SIZE {
                h.failed = true;
                lost(key.src, DatagramLoss::TooLarge);
                return;
            }
            h.got += len;
            if !packet.more_frags() {
                h.total = Some(offset + len);
            }
            if h.total.is_some_and(|t| h.got >= t) {
                self.slots[i] = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use core::time::Duration;

    use super::*;
    #[cfg(feature = "large-datagrams")]
    use crate::millis::micros;
    use smoltcp::wire::IpProtocol;

    const SENDER: Ipv4Address = Ipv4Address::new(192, 168, 69, 100);

    /// An IPv4 fragment: `len` payload bytes at byte `offset` of datagram `id`.
    fn frag(id: u16, offset: u16, more: bool, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 20 + len];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_total_len(u16::try_from(20 + len).unwrap());
        p.set_ident(id);
        p.set_more_frags(more);
        p.set_frag_offset(offset);
        p.set_hop_limit(64);
        p.set_next_header(IpProtocol::Udp);
        p.set_src_addr(SENDER);
        p.set_dst_addr(Ipv4Address::new(192, 168, 69, 1));
        p.fill_checksum();
        buf
    }

    fn feed(losses: &mut Losses, packets: &[Vec<u8>], now: Duration) {
        for p in packets {
            let packet = Ipv4Packet::new_checked(&p[..]).unwrap();
            #[cfg(feature = "large-datagrams")]
            let timing = Timing { now: micros(now), timeout: 60_000_000 };
            #[cfg(not(feature = "large-datagrams"))]
            let timing = {
                let _ = now;
                Timing
            };
            losses.fragment(&packet, timing);
        }
    }

    #[test]
    fn a_datagram_in_one_frame_is_never_a_loss() {
        let mut losses = Losses::default();
        feed(&mut losses, &[frag(1, 0, false, 1000)], Duration::ZERO);
        assert_eq!(losses.stats, Stats::default());
    }

    #[cfg(not(feature = "large-datagrams"))]
    #[test]
    fn without_reassembly_each_fragmented_datagram_is_one_loss() {
        let mut losses = Losses::default();
        let a = [frag(1, 0, true, 1480), frag(1, 1480, true, 1480), frag(1, 2960, false, 100)];
        feed(&mut losses, &a, Duration::ZERO);
        // The last fragment of another datagram whose first was lost too.
        feed(&mut losses, &[frag(2, 1480, false, 100)], Duration::ZERO);
        assert_eq!(losses.stats.datagrams_lost, 1);
    }

    #[cfg(feature = "large-datagrams")]
    #[test]
    fn reassembly_losses_are_counted_once_each() {
        let mut losses = Losses::default();
        let t0 = Duration::ZERO;
        // A complete datagram: no loss, its buffer is free again.
        feed(&mut losses, &[frag(1, 0, true, 1480), frag(1, 1480, false, 500)], t0);
        assert_eq!(losses.stats.datagrams_lost, 0);
        // Three interleaved: two buffers, so the third is lost (once,
        // whatever its fragments), the others complete.
        let mut interleaved = Vec::new();
        for off in [0u16, 1480] {
            for id in [2, 3, 4] {
                interleaved.push(frag(id, off, off == 0, if off == 0 { 1480 } else { 8 }));
            }
        }
        feed(&mut losses, &interleaved, t0);
        assert_eq!(losses.stats.datagrams_lost, 1, "datagram 4 found no buffer");
        // Four at once, fragments interleaved. Datagram 4's last fragment
        // took a buffer after the others completed and holds it until it
        // expires (as in smoltcp), so only one is free: 7, 8 and 9 are
        // lost, each counted once.
        let mut four = Vec::new();
        for off in [0u16, 1480, 2960] {
            for id in [6, 7, 8, 9] {
                four.push(frag(id, off, off < 2960, if off < 2960 { 1480 } else { 8 }));
            }
        }
        feed(&mut losses, &four, t0);
        assert_eq!(losses.stats.datagrams_lost, 4, "datagrams 7, 8 and 9 found no buffer");
        // The stray buffers (datagrams 4 and 7) expire: already counted.
        let t1 = Duration::from_secs(61);
        losses.expire(micros(t1));
        assert_eq!(losses.stats.datagrams_lost, 4);
        // One whose last fragment never comes: lost at the timeout.
        feed(&mut losses, &[frag(5, 0, true, 1480)], t1);
        losses.expire(micros(t1 + Duration::from_secs(59)));
        assert_eq!(losses.stats.datagrams_lost, 4);
        losses.expire(micros(t1 + Duration::from_secs(61)));
        assert_eq!(losses.stats.datagrams_lost, 5, "datagram 5 timed out");
        assert_eq!(losses.stats.syns_dropped, 0);
    }

    #[test]
    fn the_hook_hears_each_loss() {
        use core::sync::atomic::{AtomicU32, Ordering};
        static HEARD: AtomicU32 = AtomicU32::new(0);
        let mut losses = Losses {
            hook: Some(|_| {
                HEARD.fetch_add(1, Ordering::SeqCst);
            }),
            ..Losses::default()
        };
        losses.report(Loss::SynDropped { port: 7 });
        assert_eq!(HEARD.load(Ordering::SeqCst), 1);
        assert_eq!(losses.stats.syns_dropped, 1);
    }
}
