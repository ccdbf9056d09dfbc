//! The std adapter: real sockets on loopback, kernel peers.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::thread;
use std::time::{Duration, Instant};

use sockserv::std_adapter::event::{EventOptions, EventTcpServer};
use sockserv::std_adapter::{Address, BindAddr, Builder, ShutdownHandle, TcpServer};

use crate::cases::{Case, DGRAM_BUFFER, Differs, Fixture, Op, Outcome, POLL, Rec, Run, Serve};
use crate::kernel::{self, CHILD, hoard_descriptors, rerun_in_child};

pub struct Std;

fn format(a: SocketAddr) -> String {
    format!("{:?}", Address::Inet(a))
}

fn inet(addr: &BindAddr) -> SocketAddr {
    match addr {
        BindAddr::Inet(a) => *a,
        BindAddr::Unix(p) => panic!("not an inet address: {}", p.display()),
    }
}

fn stop_later(handle: ShutdownHandle, after: Option<Duration>) {
    if let Some(after) = after {
        thread::spawn(move || {
            thread::sleep(after);
            handle.request();
        });
    }
}

impl Fixture for Std {
    fn name(&self) -> &'static str {
        "std sockets"
    }

    fn differs(&self, case: Case) -> Option<Differs> {
        match case {
            Case::Reset => Differs::new(
                "the std adapter's connection sees the reset itself and reports the handler's \
                 failure as the peer going away (RequestError::Io, debug level), as event mode \
                 does",
                Some("error: connection failed: ConnectionReset"),
            ),
            _ => None,
        }
    }

    fn stream(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        if run.accept_error && std::env::var_os(CHILD).is_none() {
            return rerun_in_child("std_sockets::an_accept_error_is_reported_and_survived");
        }
        let mut server = TcpServer::bind("127.0.0.1:0", rec.clone()).unwrap();
        server.set_accept_backoff(Duration::from_millis(20));
        let addr = inet(server.server_address());
        stop_later(server.shutdown_handle(), run.stop_after);
        let peers = if run.accept_error {
            // Connected (in the kernel's backlog) before the descriptors
            // run out; accept then fails with EMFILE until the hook frees
            // them.
            let peers = kernel::start_connected(addr, &run.clients);
            let hoard = hoard_descriptors();
            rec.on_accept_error(move || drop(hoard));
            peers
        } else {
            kernel::start(addr, &run.clients)
        };
        let start = Instant::now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| e.to_string()),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| e.to_string()),
        });
        let took = start.elapsed();
        drop(server);
        let peers = peers.into_iter().map(|p| p.join(format)).collect();
        Outcome { peers, took, ..Outcome::default() }
    }

    fn datagram(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        let builder = Builder::new().max_packet_size(DGRAM_BUFFER);
        let mut server = builder.datagram("127.0.0.1:0", rec.clone()).unwrap();
        let addr = inet(server.server_address());
        stop_later(server.shutdown_handle(), run.stop_after);
        let peer = kernel::datagrams("127.0.0.1:0".parse().unwrap(), addr, &run.datagrams);
        let start = Instant::now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| e.to_string()),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| e.to_string()),
        });
        let took = start.elapsed();
        let replies = peer.join().unwrap();
        Outcome { replies, took, ..Outcome::default() }
    }

    fn event(&self, run: &Run, rec: &Rec, slots: usize) -> Option<Outcome> {
        let mut options = EventOptions {
            max_connections: NonZeroUsize::new(slots).unwrap(),
            ..EventOptions::default()
        };
        // The full-table case checks refusals (the default waits in the backlog).
        options.server.when_full = sockserv::WhenFull::Refuse;
        let mut server: EventTcpServer<Rec> =
            Builder::new().event("127.0.0.1:0", rec.clone(), options).unwrap();
        let addr = inet(server.server_address());
        stop_later(server.shutdown_handle(), run.stop_after);
        let peers = kernel::start(addr, &run.clients);
        let start = Instant::now();
        server.serve_forever(POLL).unwrap();
        let took = start.elapsed();
        drop(server);
        let peers = peers.into_iter().map(|p| p.join(format)).collect();
        Some(Outcome { peers, took, ..Outcome::default() })
    }
}

crate::conformance!(Std);
