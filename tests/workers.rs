//! Production on std (issue 13): event mode on several loops sharing the
//! port, and the thread pool strategy, with real clients and, for the
//! echo example, a real process stopped by a signal.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use sockserv::event::{EventHandler, Outbox, Step};
use sockserv::std_adapter::event::{EventOptions, EventTcpServer, PortSharing};
use sockserv::std_adapter::{Address, BindAddr, Builder, Service, ShutdownError, ShutdownHandle};
use util::CLIENT_TIMEOUT;
use util::echo::Server;

struct EchoHandler;

impl EventHandler for EchoHandler {
    type Error = std::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        Ok(Step::consumed(out.write(input)))
    }
}

/// An event echo whose `service_actions` may call `shutdown()` once (from
/// whichever loop's thread runs it first) and keeps what it answered.
#[derive(Clone, Default)]
struct Echo {
    stop_from_hook: Arc<OnceLock<ShutdownHandle>>,
    hook_said: Arc<Mutex<Option<Result<(), ShutdownError>>>>,
    threads: Arc<Mutex<Vec<thread::ThreadId>>>,
}

impl Service<Address> for Echo {
    type Handler = EchoHandler;
    fn handler(&self, _: &Address) -> EchoHandler {
        let me = thread::current().id();
        let mut threads = self.threads.lock().unwrap();
        if !threads.contains(&me) {
            threads.push(me);
        }
        EchoHandler
    }
    fn service_actions(&self) {
        let Some(stop) = self.stop_from_hook.get() else { return };
        let mut said = self.hook_said.lock().unwrap();
        if said.is_none() && thread::current().name() == Some("sockserv-event-1") {
            *said = Some(stop.shutdown());
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s
}

fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// `clients` threads, each opening `each` connections one after another,
/// every one echoed once while the thread's earlier ones stay open.
fn load(addr: SocketAddr, clients: usize, each: usize) -> Vec<TcpStream> {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || {
                (0..each)
                    .map(|i| {
                        let mut s = connect(addr);
                        roundtrip(&mut s, format!("client {c} conn {i}\n").as_bytes());
                        s
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

fn two_loops(sharing: PortSharing) -> EventTcpServer<Echo> {
    let options = EventOptions { workers: 2, port_sharing: sharing, ..EventOptions::default() };
    Builder::new().event("127.0.0.1:0", Echo::default(), options).unwrap()
}

fn inet(server: &EventTcpServer<Echo>) -> SocketAddr {
    let BindAddr::Inet(addr) = server.server_address().clone() else { unreachable!() };
    addr
}

/// Connections spread over both loops, each loop's service clone runs on
/// a thread of its own, and one handle stops both at once.
fn spread(sharing: PortSharing) {
    let mut server = two_loops(sharing);
    assert_eq!(server.workers(), 2);
    let addr = inet(&server);
    let stop = server.shutdown_handle();
    let service = server.service().clone();
    let serving = thread::spawn(move || {
        server.serve_forever(Duration::from_secs(60)).unwrap();
        server
    });
    let open = load(addr, 8, 25);
    let started = Instant::now();
    stop.shutdown().unwrap();
    let took = started.elapsed();
    let server = serving.join().unwrap();
    assert!(took < Duration::from_secs(2), "both loops stopped in {took:?} (grace: 1 s)");
    let opened: Vec<u64> = server.loop_stats().iter().map(|s| s.table.opened).collect();
    assert_eq!(opened.iter().sum::<u64>(), 200, "every connection was served once: {opened:?}");
    assert!(opened.iter().all(|&n| n > 0), "each loop served some ({sharing:?}): {opened:?}");
    assert_eq!(server.connections(), 0, "all closed after the stop");
    assert_eq!(service.threads.lock().unwrap().len(), 2, "handlers were made on two threads");
    // Each open connection got EOF from the stop, not a reset.
    for mut s in open {
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    }
}

#[test]
fn event_workers_spread_with_reuse_port() {
    spread(PortSharing::ReusePort);
}

#[test]
fn event_workers_spread_with_exclusive_wakeups() {
    spread(PortSharing::Exclusive);
}

/// A hook on the second loop's thread that calls `shutdown()` gets
/// `FromServeThread` (waiting would deadlock: that loop is part of what
/// it waits for), and the stop still happens.
#[test]
fn shutdown_from_a_loop_thread_does_not_deadlock() {
    let mut server = two_loops(PortSharing::ReusePort);
    let service = server.service().clone();
    service.stop_from_hook.set(server.shutdown_handle()).ok().unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    // The loops run service_actions at least every poll interval.
    thread::spawn(move || done.send(server.serve_forever(Duration::from_millis(20)).is_ok()));
    let result = finished.recv_timeout(Duration::from_secs(5));
    assert_eq!(result, Ok(true), "serve_forever returned (a deadlock would never)");
    assert_eq!(*service.hook_said.lock().unwrap(), Some(Err(ShutdownError::FromServeThread)));
}

/// The server can serve again after a stop, with every loop.
#[test]
fn event_workers_serve_again() {
    let mut server = two_loops(PortSharing::ReusePort);
    let addr = inet(&server);
    let stop = server.shutdown_handle();
    for round in 0..2 {
        let serving = thread::spawn(move || {
            server.serve_forever(Duration::from_secs(60)).unwrap();
            server
        });
        drop(load(addr, 4, 10));
        stop.shutdown().unwrap();
        server = serving.join().unwrap();
        let opened: Vec<u64> = server.loop_stats().iter().map(|s| s.table.opened).collect();
        assert_eq!(opened.iter().sum::<u64>(), 40 * (round + 1), "round {round}: {opened:?}");
    }
}

/// `echo --mode event --workers 2`: real clients spread over both loops
/// (its exit report counts each loop's connections), one SIGTERM stops
/// both promptly, and every echo arrived.
#[test]
fn echo_example_event_workers() {
    let server = Server::start_with("tcp", "event", "127.0.0.1:0", &["--workers", "2"]);
    let addr = server.inet();
    let open = load(addr, 8, 25);
    let (status, took, stderr) = server.stop(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(took <= util::echo::STOP_CONTRACT, "stopped in {took:?}");
    let counts: Vec<u64> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("loop ")?.split_once(": ")?.1.strip_suffix(" connections"))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 2, "one line per loop: {stderr}");
    assert_eq!(counts.iter().sum::<u64>(), 200, "{stderr}");
    assert!(counts.iter().all(|&n| n > 0), "each loop served some: {stderr}");
    for mut s in open {
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "EOF after the stop, nothing extra");
    }
}
