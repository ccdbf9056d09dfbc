//! The embedded-nal transport over `std-embedded-nal` (the host's sockets
//! behind the embedded-nal traits), kernel peers on loopback.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sockserv::StdClock;
use sockserv::driver::{Datagram, Stream};
use sockserv::{Inline, Server, ShutdownFlag, ShutdownSignal};
use sockserv_nal::NalStack;

use crate::cases::{Case, DGRAM_BUFFER, Differs, Fixture, Op, Outcome, POLL, Rec, Run, Serve};
use crate::kernel::{self, CHILD, hoard_descriptors, rerun_in_child};

pub struct Nal;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago (embedded-nal binds by port only).
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("[::]:0").unwrap().local_addr().unwrap().port()
    } else {
        TcpListener::bind("[::]:0").unwrap().local_addr().unwrap().port()
    }
}

/// As the stack reports a peer: IPv4-mapped (it listens on `[::]`).
fn format(a: SocketAddr) -> String {
    let mapped = match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    format!("{mapped:?}")
}

/// A stop flag, requested `after` from another thread.
fn flag(after: Option<Duration>) -> Arc<ShutdownFlag> {
    let flag = Arc::new(ShutdownFlag::new());
    if let Some(after) = after {
        let f = Arc::clone(&flag);
        thread::spawn(move || {
            thread::sleep(after);
            f.request();
        });
    }
    flag
}

/// The stack's sleep: a short nap; wakes the server once a stop was asked.
fn stack(
    flag: &ShutdownFlag,
) -> NalStack<std_embedded_nal::Stack, StdClock, impl FnMut(Duration) -> bool> {
    NalStack::new(std_embedded_nal::Stack, StdClock::new(), move |d| {
        thread::sleep(d);
        flag.is_requested()
    })
    .with_tick(Duration::from_millis(2))
}

impl Fixture for Nal {
    fn name(&self) -> &'static str {
        "embedded-nal over std-embedded-nal"
    }

    fn differs(&self, case: Case) -> Option<Differs> {
        match case {
            Case::PeerAddress => Differs::new(
                "std-embedded-nal listens on [::] (dual stack): an IPv4 peer's address \
                 comes as its IPv4-mapped IPv6 form",
                None,
            ),
            Case::Reset => Differs::new(
                "embedded-nal's TcpErrorKind has only PipeClosed and Other: a reset reads \
                 as Other",
                Some("error: handler failed in Handle: Other"),
            ),
            Case::OversizedDatagram => Differs::new(
                "embedded-nal's receive cannot tell a datagram's full size: one that fills \
                 the stash (the buffer + 1) is reported as the stash + 1 bytes",
                Some("error: datagram of 66 bytes does not fit the 64-byte buffer; dropped"),
            ),
            Case::Exhaustion => Differs::new(
                "embedded-nal has no readiness wait, so there is no event mode (and no \
                 table) on it; its own socket exhaustion is the stack's error from listen",
                None,
            ),
            Case::StopWakesAnIdleRead => Differs::new(
                "the sockets std-embedded-nal accepts block inside receive: a stop cannot \
                 end a read on a peer that says nothing (it ends when the peer acts); \
                 stacks with non-blocking sockets are woken (tests/nal.rs)",
                None,
            ),
            _ => None,
        }
    }

    fn stream(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        if run.accept_error && std::env::var_os(CHILD).is_none() {
            return rerun_in_child("nal::an_accept_error_is_reported_and_survived");
        }
        let port = free_port(false);
        let flag = flag(run.stop_after);
        let net = stack(&flag);
        let listener = net.listen(port, Some(TIMEOUT)).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let peers = if run.accept_error {
            let peers = kernel::start_connected(addr, &run.clients);
            let hoard = hoard_descriptors();
            rec.on_accept_error(move || drop(hoard));
            peers
        } else {
            kernel::start(addr, &run.clients)
        };
        let mut server =
            Server::new(Stream(listener), rec.clone(), StdClock::new(), &*flag, Inline::new());
        let start = Instant::now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| format!("{e:?}")),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| format!("{e:?}")),
        });
        let took = start.elapsed();
        drop(server);
        let peers = peers.into_iter().map(|p| p.join(format)).collect();
        Outcome { peers, took, ..Outcome::default() }
    }

    fn datagram(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        let port = free_port(true);
        let flag = flag(run.stop_after);
        let net = stack(&flag);
        let socket = net.bind_udp(port, [0u8; DGRAM_BUFFER + 1]).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let peer = kernel::datagrams("127.0.0.1:0".parse().unwrap(), addr, &run.datagrams);
        let transport = Datagram { socket, buffer: [0u8; DGRAM_BUFFER] };
        let mut server =
            Server::new(transport, rec.clone(), StdClock::new(), &*flag, Inline::new());
        let start = Instant::now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| format!("{e:?}")),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| format!("{e:?}")),
        });
        let took = start.elapsed();
        let replies = peer.join().unwrap();
        Outcome { replies, took, ..Outcome::default() }
    }

    fn event(&self, _: &Run, _: &Rec, _: usize) -> Option<Outcome> {
        None
    }
}

crate::conformance!(Nal);
