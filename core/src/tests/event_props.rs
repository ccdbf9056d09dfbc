//! Property tests of the event table over the mock: any mix of
//! connections, chunking, slow readers, resets, pool and buffer sizes.
//! Invariants: an echo returns exactly the bytes sent (a prefix of them
//! when the peer reset), every connection closes once, every buffer goes
//! back to the pool, no connection is left waiting, and the loop does not
//! spin.

use core::time::Duration;
use std::vec::Vec;

use proptest::prelude::*;

use super::event::{Ev, Kind, server};
use crate::ShutdownFlag;
use crate::mock::{MockConn, MockNet};

#[derive(Clone, Debug)]
struct Peer {
    input: Vec<u8>,
    one_byte: bool,
    window: Option<usize>,
    opens_at_ms: u64,
    reset_after: Option<usize>,
}

fn peer() -> impl Strategy<Value = Peer> {
    (
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
        proptest::option::of(0usize..24),
        1u64..4_000,
        proptest::option::weighted(0.2, 0usize..200),
    )
        .prop_map(|(input, one_byte, window, opens_at_ms, reset_after)| Peer {
            input,
            one_byte,
            window,
            opens_at_ms,
            reset_after,
        })
}

/// Stops the loop once every connection accepted so far has closed (all
/// connect at time 0, so the first turn accepts them all). Windows still
/// scheduled for connections that reset do not count.
fn every_connection_closed(ev: &Ev<'_, '_>) -> bool {
    let n = ev.net.conn_count();
    ev.turns.get() > 2 && n > 0 && (0..n).all(|i| ev.net.conn(i).unwrap().closes() == 1)
}

/// Runs the echo with `peers` over `N` slots sharing `P` buffers of `B`
/// bytes and checks the invariants.
fn check<const N: usize, const B: usize, const P: usize>(peers: &[Peer]) {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    for (i, p) in peers.iter().enumerate() {
        let mut conn = MockConn::new(i as u32, &p.input);
        if p.one_byte {
            conn = conn.one_byte_at_a_time();
        }
        if let Some(w) = p.window {
            conn = conn.write_window(w);
            net.open_window_at(Duration::from_millis(p.opens_at_ms), i, 100_000);
        }
        if let Some(r) = p.reset_after {
            conn = conn.reset_after(r);
        }
        net.connect(conn);
    }
    let ev = Ev::new(Kind::Echo, &net, &flag, every_connection_closed);
    let mut srv = server::<N, B, P>(&ev, None); // refuses past N
    srv.serve_forever(Duration::from_millis(100)).unwrap();
    let full = peers.len() > N;
    for (i, p) in peers.iter().enumerate() {
        let c = net.conn(i).unwrap();
        assert_eq!(c.closes(), 1, "connection {i} closed once: {:?}", ev.log());
        let reset = p.reset_after.is_some_and(|r| r <= p.input.len());
        if reset || full {
            assert!(p.input.starts_with(c.output()), "connection {i}: not a prefix");
        } else {
            assert_eq!(c.output(), &p.input[..], "connection {i}: {:?}", ev.log());
        }
    }
    assert!(net.now() < Duration::from_secs(60), "not everyone was served: {:?}", ev.log());
    assert_eq!(net.conn_count(), peers.len(), "every peer was accepted");
    assert!(srv.table().is_empty());
    assert_eq!(srv.table().pool().lent(), 0, "every buffer back in the pool");
    assert_eq!(srv.table().stats().starved, 0);
    let waits = net.stats().waits;
    assert!(waits < 3_000, "{waits} waits: the loop spun");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn four_slots_two_small_buffers(peers in proptest::collection::vec(peer(), 1..=4)) {
        check::<4, 8, 2>(&peers);
    }

    #[test]
    fn six_slots_four_buffers(peers in proptest::collection::vec(peer(), 1..=6)) {
        check::<6, 32, 4>(&peers);
    }

    #[test]
    fn a_full_table_and_plenty_of_buffers(peers in proptest::collection::vec(peer(), 3..=6)) {
        check::<2, 64, 8>(&peers);
    }
}
