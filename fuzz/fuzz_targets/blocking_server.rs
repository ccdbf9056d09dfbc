//! The blocking `Server` over the mock transport with arbitrary clients
//! and faults (resets, failing writes, slow readers, clients that stay
//! open, failing accepts, spurious readiness): every connection is closed
//! once and half-closed once; a clean client gets back exactly what it
//! sent with no error; a faulty one gets a prefix and one error report;
//! failed accepts are counted and never stop the server.
#![no_main]

use core::time::Duration;

use embedded_io::ErrorKind;
use libfuzzer_sys::{arbitrary, fuzz_target};
use sockserv_core::driver::Stream;
use sockserv_core::mock::{MockConn, MockNet};
use sockserv_core::{Inline, Server, ShutdownFlag};
use sockserv_fuzz::Recorder;

#[derive(Clone, Copy, Debug, arbitrary::Arbitrary)]
enum Fault {
    None,
    Chunk(u8),
    /// Resets after this share (of 256) of its input.
    Reset(u8),
    WriteError,
    HoldOpen,
    AcceptFails,
    Spurious,
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Client {
    input: Vec<u8>,
    fault: Fault,
}

fn script<'s>(net: &MockNet<'s>, clients: &'s [Client]) -> Vec<usize> {
    let mut conns = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let conn = MockConn::new(i as u32, &c.input);
        let conn = match c.fault {
            Fault::None => conn,
            Fault::Chunk(n) => conn.read_chunk(usize::from(n)),
            Fault::Reset(share) => conn.reset_after(c.input.len() * usize::from(share) / 256),
            Fault::WriteError => conn.write_error(ErrorKind::BrokenPipe),
            Fault::HoldOpen => conn.hold_open(),
            Fault::AcceptFails => {
                net.fail(ErrorKind::OutOfMemory);
                continue;
            }
            Fault::Spurious => {
                net.spurious_ready_at(net.now());
                continue;
            }
        };
        net.connect(conn);
        conns.push(i);
    }
    conns
}

fuzz_target!(|clients: Vec<Client>| {
    // The mock's fixed capacities: 32 connections, 64 events, 2048 bytes
    // captured per connection.
    if clients.len() > 24 || clients.iter().any(|c| c.input.len() > 2048) {
        return;
    }
    let net = MockNet::new();
    let conns = script(&net, &clients);
    let rec = Recorder::default();
    let flag = ShutdownFlag::new();
    let mut server = Server::new(Stream(net.listener()), &rec, &net, &flag, Inline::new());
    server.set_timeout(Some(Duration::from_secs(1)));
    // Each call takes at least one event (a spurious readiness is not a
    // request: the same call waits on, then times out).
    for _ in 0..=clients.len() {
        if net.pending() == 0 {
            break;
        }
        server.handle_request().unwrap();
    }
    assert_eq!(net.pending(), 0, "every scripted event was taken");
    assert_eq!(net.conn_count(), conns.len());
    let fails = clients.iter().filter(|c| matches!(c.fault, Fault::AcceptFails)).count();
    assert_eq!(net.stats().accept_errors as usize, fails);
    for (k, &i) in conns.iter().enumerate() {
        let log = net.conn(k).unwrap();
        let c = &clients[i];
        assert_eq!(log.from(), i as u32);
        assert_eq!((log.closes(), log.shutdown_writes()), (1, 1), "closed once");
        assert!(c.input.starts_with(log.output()), "only what was sent comes back");
        let errors = rec.count(i as u32, "error");
        match c.fault {
            Fault::None | Fault::Chunk(_) => {
                assert_eq!(log.output(), &c.input[..]);
                assert_eq!(errors, 0);
            }
            Fault::WriteError if c.input.is_empty() => assert_eq!(errors, 0),
            Fault::Reset(_) | Fault::WriteError | Fault::HoldOpen => {
                assert_eq!(errors, 1, "the failure is reported once");
            }
            Fault::AcceptFails | Fault::Spurious => unreachable!(),
        }
    }
});
