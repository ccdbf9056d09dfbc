//! Neighbours that never answer ARP. smoltcp keeps a packet whose on-link
//! destination has no link address at the head of its socket's send
//! queue, asking again every second, for ever: one reply to a spoofed
//! source in our subnet blocks every later reply of that UDP socket.
//! smoltcp offers no way to drop that packet, so the stack watches the ARP
//! requests it sends (the egress gate) and, once one address has been
//! asked for during [`GIVE_UP_AFTER`] without an answer, hands the
//! interface an ARP reply of its own (the ingress gate) that gives the
//! address the stack's own link address: the packets queued for it leave,
//! addressed to no other host (a switch, or the kernel behind a TAP
//! device, discards them), and the egress gate counts and reports each
//! one ([`Loss::Unresolved`](crate::Loss::Unresolved)). A real answer (any
//! ARP packet from the address) replaces that entry in smoltcp's
//! neighbour cache at once; otherwise it expires with smoltcp's entries
//! (60 s), and the next packet for the address is asked for again.

use core::time::Duration;

use smoltcp::wire::Ipv4Address;

/// How long the stack asks for a neighbour's link address before it gives
/// up and drops what waits for it: three ARP requests, one a second, as
/// Linux does (`mcast_solicit` 3, `retrans_time` 1 s).
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(3);
const GIVE_UP_MS: u32 = GIVE_UP_AFTER.as_secs() as u32 * 1000;
/// An address not asked for during this long is forgotten (smoltcp asks
/// once a second while a packet waits, but only one request a second in
/// all: with several addresses waiting, each is asked less often).
const FORGET_AFTER: Duration = Duration::from_secs(10);
const FORGET_MS: u32 = FORGET_AFTER.as_secs() as u32 * 1000;
/// How many addresses are watched at once (one per socket whose head
/// packet waits; beyond, the oldest is forgotten).
const WATCHED: usize = 8;

/// An Ethernet frame carrying an ARP packet for IPv4.
const ARP_FRAME: usize = 14 + 28;

#[derive(Clone, Copy, Debug)]
struct Watch {
    addr: Ipv4Address,
    /// The first and last request seen for it, in [`millis`](crate::millis::millis).
    first: u32,
    last: u32,
}

/// The addresses being asked for, and the ARP reply to hand the
/// interface next.
#[derive(Debug, Default)]
pub(crate) struct Neighbors {
    watched: [Option<Watch>; WATCHED],
    inject: Option<[u8; ARP_FRAME]>,
}

impl Neighbors {
    /// The stack sent `frame` at `now` (in [`millis`](crate::millis::millis)):
    /// if it is an ARP request for an address asked for since
    /// [`GIVE_UP_AFTER`] or longer, prepares the reply that gives up on it.
    pub(crate) fn sent(&mut self, frame: &[u8], now: u32) {
        // An Ethernet ARP request for IPv4 (htype 1, ptype 0x0800, hlen 6,
        // plen 4, op 1).
        let Some(request) = frame.first_chunk::<ARP_FRAME>() else { return };
        if request[12..14] != [0x08, 0x06] || request[14..22] != [0, 1, 8, 0, 6, 4, 0, 1] {
            return;
        }
        let addr = ipv4(&request[38..42]);
        self.forget_stale(now);
        let watch = match self.watched.iter_mut().flatten().find(|w| w.addr == addr) {
            Some(w) => w,
            None => {
                // A free entry, or the one asked for least recently (a
                // watched one was asked for less than FORGET_AFTER ago).
                let slot = self
                    .watched
                    .iter_mut()
                    .min_by_key(|w| w.map_or(0, |w| u32::MAX - now.wrapping_sub(w.last)))
                    .expect("WATCHED > 0");
                slot.insert(Watch { addr, first: now, last: now })
            }
        };
        watch.last = now;
        if now.wrapping_sub(watch.first) < GIVE_UP_MS || self.inject.is_some() {
            return;
        }
        // The reply: from `addr` at our own link address, to us. It is
        // the request turned round: to us (from us), op 2, the sender
        // `addr` at our link address, the target us.
        let reply = self.inject.insert(*request);
        reply.copy_within(6..12, 0);
        reply[21] = 2;
        reply.copy_within(6..12, 32);
        reply[28..32].copy_from_slice(&request[38..42]);
        reply[38..42].copy_from_slice(&request[28..32]);
        self.forget(addr);
    }

    /// The stack received `frame`: an ARP packet from an address watched
    /// means it answers (smoltcp learns its link address from it).
    pub(crate) fn received(&mut self, frame: &[u8]) {
        if let Some(arp) = frame.get(14..ARP_FRAME)
            && frame[12..14] == [0x08, 0x06]
            && arp[..6] == [0, 1, 8, 0, 6, 4]
        {
            self.forget(ipv4(&arp[14..18]));
        }
    }

    /// Whether a reply waits to be handed to the interface.
    pub(crate) fn injecting(&self) -> bool {
        self.inject.is_some()
    }

    /// Hands the reply to `f` (the interface), once, where it lies (an
    /// empty frame when there is none).
    pub(crate) fn take_injection<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> R {
        let r = f(self.inject.as_ref().map_or(&[][..], |frame| &frame[..]));
        self.inject = None;
        r
    }

    fn forget(&mut self, addr: Ipv4Address) {
        for slot in &mut self.watched {
            if slot.is_some_and(|w| w.addr == addr) {
                *slot = None;
            }
        }
    }

    fn forget_stale(&mut self, now: u32) {
        for slot in &mut self.watched {
            if slot.is_some_and(|w| now.wrapping_sub(w.last) >= FORGET_MS) {
                *slot = None;
            }
        }
    }
}

fn ipv4(b: &[u8]) -> Ipv4Address {
    Ipv4Address::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::millis::millis;

    const US: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn request(target: [u8; 4]) -> [u8; ARP_FRAME] {
        let mut f = [0u8; ARP_FRAME];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&US);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&US);
        f[28..32].copy_from_slice(&[192, 168, 69, 1]);
        f[38..42].copy_from_slice(&target);
        f
    }

    #[test]
    fn gives_up_after_three_seconds_of_requests() {
        let mut n = Neighbors::default();
        let x = [192, 168, 69, 77];
        for s in 0..3 {
            n.sent(&request(x), millis(Duration::from_secs(s)));
            assert!(!n.injecting(), "at {s} s");
        }
        n.sent(&request(x), millis(Duration::from_secs(3)));
        let reply = n.take_injection(<[u8]>::to_vec);
        assert_eq!(reply.len(), ARP_FRAME, "gave up at 3 s");
        assert_eq!(&reply[0..6], &US, "to us");
        assert_eq!(&reply[20..22], &[0, 2], "a reply");
        assert_eq!(&reply[22..28], &US, "the address is ours");
        assert_eq!(&reply[28..32], &x);
        assert_eq!(&reply[38..42], &[192, 168, 69, 1]);
        assert!(n.take_injection(<[u8]>::is_empty), "once");
    }

    #[test]
    fn a_new_address_takes_the_place_of_the_one_asked_for_least_recently() {
        let mut n = Neighbors::default();
        let ms = |m: u64| millis(Duration::from_millis(m));
        let addr = |i: u8| [192, 168, 69, 10 + i];
        // WATCHED addresses, one every 100 ms, then one more at the time
        // of the last: the first (asked for longest ago) makes room.
        for i in 0..WATCHED as u8 {
            n.sent(&request(addr(i)), ms(100 * u64::from(i)));
        }
        let last = 100 * (WATCHED as u64 - 1);
        n.sent(&request(addr(WATCHED as u8)), ms(last));
        // The first one starts over: not given up on at 3 s.
        n.sent(&request(addr(0)), ms(3_000));
        assert!(!n.injecting(), "the first address was forgotten");
        // The one asked for at the same time as the newcomer was kept.
        let kept = WATCHED as u8 - 1;
        n.sent(&request(addr(kept)), ms(last + 3_000));
        let reply = n.take_injection(<[u8]>::to_vec);
        assert_eq!(reply.len(), ARP_FRAME, "still watched since its first request");
        assert_eq!(&reply[28..32], &addr(kept));
    }

    #[test]
    fn an_answer_or_a_pause_starts_over() {
        let mut n = Neighbors::default();
        let x = [192, 168, 69, 77];
        n.sent(&request(x), millis(Duration::ZERO));
        // x answers (any ARP packet from it).
        let mut answer = request([192, 168, 69, 1]);
        answer[28..32].copy_from_slice(&x);
        n.received(&answer);
        n.sent(&request(x), millis(Duration::from_secs(3)));
        assert!(!n.injecting(), "the clock started again at 3 s");
        // Not asked for 10 s: forgotten.
        n.sent(&request(x), millis(Duration::from_secs(13)));
        n.sent(&request(x), millis(Duration::from_secs(15)));
        assert!(!n.injecting());
        n.sent(&request(x), millis(Duration::from_secs(16)));
        assert!(n.injecting());
    }
}
