//! The event mode's `EventServer` over the mock event source, with
//! arbitrary peers (chunked input, slow readers whose window opens later,
//! resets, peers that stay open), arbitrary accept failures, and small
//! pools of small buffers: every connection closes once; a clean peer gets
//! back exactly what it sent, a reset one a prefix; every buffer goes back
//! to the pool; nobody is left waiting for a buffer; the loop does not
//! spin (bounded waits of the mock's virtual clock).
#![no_main]

use core::time::Duration;

use embedded_io::ErrorKind;
use libfuzzer_sys::{arbitrary, fuzz_target};
use sockserv_core::mock::{MockConn, MockNet};
use sockserv_core::{
    EventHandler, EventServer, EventServerConfig, FixedPool, FixedSlots, Outbox, Step,
};
use sockserv_core::{RequestError, Service, ShutdownFlag};

#[derive(Clone, Copy, Debug, arbitrary::Arbitrary)]
enum Fault {
    None,
    Chunk(u8),
    /// Reads nothing until its window opens at this many 10 ms ticks.
    SlowReader(u8),
    /// Resets after this share (of 256) of its input.
    Reset(u8),
    AcceptFails,
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Peer {
    input: Vec<u8>,
    fault: Fault,
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Case {
    /// Which pool shape (buffers x size) serves them.
    shape: u8,
    peers: Vec<Peer>,
}

struct Echo;

impl EventHandler for Echo {
    type Error = core::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        Ok(Step::consumed(out.write(input)))
    }
}

/// Counts errors and stops the loop once every accepted peer closed.
struct Svc<'n, 's> {
    net: &'n MockNet<'s>,
    flag: &'n ShutdownFlag,
    peers: usize,
    errors: core::cell::Cell<usize>,
    turns: core::cell::Cell<u32>,
}

impl Service<u32> for &Svc<'_, '_> {
    type Handler = Echo;
    fn handler(&self, _: &u32) -> Echo {
        Echo
    }
    fn handle_error(&self, _: &u32, _: &RequestError<'_>) {
        self.errors.set(self.errors.get() + 1);
    }
    fn handle_accept_error(&self, _: &dyn embedded_io::Error) {}
    fn handle_table_full(&self, _: &u32) {}
    fn service_actions(&self) {
        self.turns.set(self.turns.get() + 1);
        let n = self.net.conn_count();
        let all = n == self.peers && (0..n).all(|i| self.net.conn(i).unwrap().closes() == 1);
        if all || self.turns.get() > 20_000 {
            self.flag.request();
        }
    }
}

fn run<const B: usize, const P: usize>(net: &MockNet<'_>, svc: &Svc<'_, '_>) -> (usize, usize) {
    let config = EventServerConfig { idle_timeout: None, ..EventServerConfig::default() };
    let mut server = EventServer::new(
        net.event_source(),
        svc,
        net,
        svc.flag,
        FixedSlots::<_, 8>::new(),
        FixedPool::<B, P>::new(),
        config,
    );
    server.serve_forever(Duration::from_millis(100)).unwrap();
    (server.table().pool().lent(), server.table().stats().starved)
}

fuzz_target!(|case: Case| {
    // The mock's fixed capacities: 32 connections, 64 events, 2048 bytes
    // captured per connection; at most 8 peers so the table never fills.
    if case.peers.len() > 8 || case.peers.iter().any(|p| p.input.len() > 2048) {
        return;
    }
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let mut accepted = Vec::new();
    for (i, p) in case.peers.iter().enumerate() {
        let conn = MockConn::new(i as u32, &p.input);
        let conn = match p.fault {
            Fault::None => conn,
            Fault::Chunk(n) => conn.read_chunk(usize::from(n)),
            Fault::SlowReader(_) => conn.write_window(0),
            Fault::Reset(share) => conn.reset_after(p.input.len() * usize::from(share) / 256),
            Fault::AcceptFails => {
                net.fail(ErrorKind::OutOfMemory);
                continue;
            }
        };
        net.connect(conn);
        if let Fault::SlowReader(ticks) = p.fault {
            // After the connect (a window for a peer not yet accepted would
            // be lost), within 2.56 s.
            let at = Duration::from_millis(10) * (u32::from(ticks) + 1);
            net.open_window_at(at, accepted.len(), 100_000);
        }
        accepted.push(i);
    }
    let svc = Svc {
        net: &net,
        flag: &flag,
        peers: accepted.len(),
        errors: core::cell::Cell::new(0),
        turns: core::cell::Cell::new(0),
    };
    let (lent, starved) = match case.shape % 3 {
        0 => run::<8, 2>(&net, &svc),
        1 => run::<32, 3>(&net, &svc),
        _ => run::<64, 16>(&net, &svc),
    };
    assert!(svc.turns.get() <= 20_000, "the loop did not finish: it spun or hung");
    assert_eq!(lent, 0, "every buffer went back to the pool");
    assert_eq!(starved, 0, "nobody is left waiting for a buffer");
    assert_eq!(net.conn_count(), accepted.len());
    for (k, &i) in accepted.iter().enumerate() {
        let log = net.conn(k).unwrap();
        let p = &case.peers[i];
        assert_eq!(log.closes(), 1, "closed once");
        assert!(p.input.starts_with(log.output()), "only what was sent comes back");
        if !matches!(p.fault, Fault::Reset(_)) {
            assert_eq!(log.output(), &p.input[..], "a clean peer gets all of it back");
        }
    }
});
