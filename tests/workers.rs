//! Production on std (issue 13): event mode on several loops sharing the
//! port, and the thread pool strategy, with real clients and, for the
//! echo example, a real process stopped by a signal.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use sockserv::WhenFull;
use sockserv::std_adapter::event::{EventOptions, EventTcpServer, PortSharing, Workers};
use sockserv::std_adapter::{
    Address, BindAddr, Builder, Close, Pool, ShutdownError, ShutdownHandle, StreamServer,
};
use sockserv::{DatagramHandler, ReplyWriter, RequestError, Service, StreamHandler};
use sockserv::{EventHandler, Outbox, Step};
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
    let options = EventOptions {
        workers: Workers::Count(NonZeroUsize::new(2).unwrap()),
        port_sharing: sharing,
        ..EventOptions::default()
    };
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

// ---------------------------------------------------------------------
// The thread pool
// ---------------------------------------------------------------------

/// Echoes until EOF; panics on a message starting with `panic`; records
/// refusals and errors.
#[derive(Clone, Default)]
struct PoolEcho {
    log: Arc<Mutex<Vec<String>>>,
    /// While set, `service_actions` holds the server loop (up to 10 s), as
    /// a loop thread that gets no CPU among busy workers would be held.
    hold_loop: Arc<std::sync::atomic::AtomicBool>,
    /// Set by `service_actions` while it holds the loop.
    loop_held: Arc<std::sync::atomic::AtomicBool>,
}

impl PoolEcho {
    fn count(&self, prefix: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.starts_with(prefix)).count()
    }
}

struct PoolHandler;

impl<S: sockserv::embedded_io::Read + sockserv::embedded_io::Write> StreamHandler<S>
    for PoolHandler
{
    type Error = S::Error;
    fn handle(&mut self, s: &mut S) -> Result<(), S::Error> {
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            assert!(!buf[..n].starts_with(b"panic"), "asked to panic");
            s.write_all(&buf[..n])?;
        }
    }
}

impl DatagramHandler for PoolHandler {
    type Error = sockserv::ReplyFull;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
        sockserv::embedded_io::Write::write_all(reply, packet)
    }
}

impl Service<Address> for PoolEcho {
    type Handler = PoolHandler;
    fn handler(&self, _: &Address) -> PoolHandler {
        PoolHandler
    }
    fn handle_table_full(&self, client: &Address) {
        self.log.lock().unwrap().push(format!("refused {client:?}"));
    }
    fn handle_error(&self, _: &Address, error: &RequestError<'_>) {
        let kind = if matches!(error, RequestError::Panic(_)) { "panic" } else { "error" };
        self.log.lock().unwrap().push(format!("{kind}: {error}"));
    }
    fn service_actions(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.hold_loop.load(SeqCst) && Instant::now() < deadline {
            self.loop_held.store(true, SeqCst);
            thread::sleep(Duration::from_millis(5));
        }
        self.loop_held.store(false, SeqCst);
    }
}

type PoolServer = StreamServer<PoolEcho, Pool>;

struct RunningPool {
    addr: SocketAddr,
    stop: ShutdownHandle,
    thread: thread::JoinHandle<PoolServer>,
}

fn start_pool(pool: Pool, service: &PoolEcho) -> RunningPool {
    let mut server = Builder::new().dispatch(pool).stream("127.0.0.1:0", service.clone()).unwrap();
    let BindAddr::Inet(addr) = server.server_address().clone() else { unreachable!() };
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || {
        server.serve_forever(Duration::from_millis(50)).unwrap();
        server
    });
    RunningPool { addr, stop, thread }
}

impl RunningPool {
    fn stop(self) -> PoolServer {
        self.stop.shutdown().unwrap();
        self.thread.join().unwrap()
    }
}

fn pool(size: usize) -> Pool {
    Pool::new(NonZeroUsize::new(size).unwrap())
}

/// Whether `s` gets its echo within `within` (`false`: nothing yet).
fn answered_within(s: &mut TcpStream, msg: &[u8], within: Duration) -> bool {
    s.write_all(msg).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = vec![0u8; msg.len()];
    let ok = match s.read_exact(&mut got) {
        Ok(()) => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("{e}"),
    };
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    ok
}

/// 40 real clients, 4 at a time per worker: every one served, by 4
/// workers started once.
#[test]
fn pool_serves_real_clients() {
    let service = PoolEcho::default();
    let running = start_pool(pool(4), &service);
    let addr = running.addr;
    let clients: Vec<_> = (0..8)
        .map(|c| {
            thread::spawn(move || {
                for i in 0..5 {
                    let mut s = connect(addr);
                    roundtrip(&mut s, format!("client {c} request {i}").as_bytes());
                }
            })
        })
        .collect();
    clients.into_iter().for_each(|t| t.join().unwrap());
    let server = running.stop();
    assert_eq!(server.dispatch().live_workers(), 4);
    assert_eq!(service.count(""), 0, "no error, no refusal: {:?}", service.log.lock().unwrap());
}

/// Accepting does not wait for the server loop: with the loop thread held
/// (as one thread among hundreds of busy workers gets almost no CPU: the
/// pool at 1,000 connections left 262–690 of 1,000 clients unserved in a
/// 3 s window), idle workers accept and serve new clients themselves, and
/// the pool keeps one worker free to do so while it may start more.
#[test]
fn pool_workers_accept_while_the_loop_is_held() {
    use std::sync::atomic::Ordering::SeqCst;
    let service = PoolEcho::default();
    let running = start_pool(pool(16), &service);
    let addr = running.addr;
    // A first client, kept open: it holds a worker.
    let mut first = connect(addr);
    roundtrip(&mut first, b"first");
    service.hold_loop.store(true, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !service.loop_held.load(SeqCst) {
        assert!(Instant::now() < deadline, "the loop never ran service_actions");
        thread::sleep(Duration::from_millis(5));
    }
    // Eight more, each kept open, while the loop stays held.
    let mut served = 0;
    let mut open = Vec::new();
    for i in 0..8 {
        let mut s = connect(addr);
        if answered_within(&mut s, format!("client {i}").as_bytes(), Duration::from_secs(3)) {
            served += 1;
        }
        open.push(s);
    }
    assert!(service.loop_held.load(SeqCst), "the loop was held throughout");
    service.hold_loop.store(false, SeqCst);
    assert_eq!(served, 8, "clients served while the server loop was held");
    drop(open);
    drop(first);
    running.stop();
    assert_eq!(service.count(""), 0, "no error, no refusal: {:?}", service.log.lock().unwrap());
}

/// `Refuse`: with the only worker busy and no queue, a new connection is
/// closed at once and `handle_table_full` told; once the worker is free,
/// the next is served.
#[test]
fn pool_full_queue_refuses() {
    let service = PoolEcho::default();
    let running = start_pool(pool(1).queue(0).when_full(WhenFull::Refuse), &service);
    let mut busy = connect(running.addr);
    roundtrip(&mut busy, b"holding the worker");
    let mut refused = connect(running.addr);
    let mut rest = Vec::new();
    let _ = refused.write_all(b"anyone?");
    assert!(matches!(refused.read_to_end(&mut rest), Ok(0) | Err(_)), "closed unserved: {rest:?}");
    assert_eq!(service.count("refused"), 1);
    drop(busy);
    // The worker frees as soon as it has seen the EOF; until then a new
    // client is refused too.
    let deadline = Instant::now() + Duration::from_secs(5);
    let echoed = |mut s: TcpStream| {
        let mut got = [0u8; 1];
        s.write_all(b"x").is_ok() && s.read_exact(&mut got).is_ok()
    };
    while !echoed(connect(running.addr)) {
        assert!(Instant::now() < deadline, "the freed worker never served the next client");
        thread::sleep(Duration::from_millis(10));
    }
    let server = running.stop();
    assert!(server.dispatch().refused() >= 1);
}

/// `Wait` (the default): with the worker busy and the queue full, the loop
/// stops accepting; the next client waits in the backlog and is served,
/// in order, once the worker is free. Nothing is refused.
#[test]
fn pool_full_queue_waits() {
    let service = PoolEcho::default();
    let running = start_pool(pool(1).queue(1), &service);
    let mut first = connect(running.addr);
    roundtrip(&mut first, b"first");
    let mut queued = connect(running.addr);
    let mut backlog = connect(running.addr);
    assert!(!answered_within(&mut queued, b"queued", Duration::from_millis(300)));
    assert!(!answered_within(&mut backlog, b"backlog", Duration::from_millis(300)));
    drop(first);
    let mut got = [0u8; 6];
    queued.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"queued");
    drop(queued);
    let mut got = [0u8; 7];
    backlog.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"backlog");
    drop(backlog);
    running.stop();
    assert_eq!(service.count("refused"), 0);
}

/// Panicking handlers are reported and the workers live on: after 10
/// panics both workers still serve two connections at once.
#[test]
fn pool_panics_do_not_shrink_it() {
    let service = PoolEcho::default();
    let running = start_pool(pool(2), &service);
    for _ in 0..10 {
        let mut s = connect(running.addr);
        s.write_all(b"panic now").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while service.count("panic") < 10 {
        assert!(Instant::now() < deadline, "{:?}", service.log.lock().unwrap());
        thread::sleep(Duration::from_millis(10));
    }
    let mut a = connect(running.addr);
    let mut b = connect(running.addr);
    roundtrip(&mut a, b"a, served while b is open");
    roundtrip(&mut b, b"b, served while a is open");
    drop((a, b));
    let server = running.stop();
    assert_eq!(server.dispatch().live_workers(), 2);
}

/// A stop with busy workers returns at once and they keep serving;
/// `server_close` with `Close::Wait` waits for them, with `Close::Leave`
/// does not.
#[test]
fn pool_shutdown_with_busy_workers() {
    for (close, block) in [(Close::Wait, true), (Close::Leave, false)] {
        let service = PoolEcho::default();
        let running = start_pool(pool(2).close(close), &service);
        let mut a = connect(running.addr);
        let mut b = connect(running.addr);
        roundtrip(&mut a, b"a");
        roundtrip(&mut b, b"b");
        let started = Instant::now();
        let server = running.stop();
        assert!(started.elapsed() < Duration::from_secs(1), "the stop did not wait for workers");
        assert_eq!(server.dispatch().busy_workers(), 2);
        roundtrip(&mut a, b"still served after the stop");
        let (closed, closing) = std::sync::mpsc::channel();
        thread::spawn(move || {
            server.server_close();
            closed.send(()).unwrap();
        });
        let waited = closing.recv_timeout(Duration::from_millis(300)).is_err();
        assert_eq!(waited, block, "{close:?} waits for busy workers: {block}");
        drop((a, b));
        closing.recv_timeout(Duration::from_secs(5)).ok();
    }
}

/// Datagrams through the pool: every one echoed.
#[test]
fn pool_serves_datagrams() {
    let service = PoolEcho::default();
    let mut server =
        Builder::new().dispatch(pool(2)).datagram("127.0.0.1:0", service.clone()).unwrap();
    let BindAddr::Inet(addr) = server.server_address().clone() else { unreachable!() };
    let stop = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve_forever(Duration::from_millis(50)));
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    for i in 0..50 {
        let msg = format!("datagram {i}");
        client.send_to(msg.as_bytes(), addr).unwrap();
        let mut buf = [0u8; 64];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    stop.shutdown().unwrap();
    serving.join().unwrap().unwrap();
}

/// `echo --mode threading --pool 4`: real clients, then SIGTERM with one
/// client still connected stops it promptly.
#[test]
fn echo_example_pool() {
    let server = Server::start_with("tcp", "threading", "127.0.0.1:0", &["--pool", "4"]);
    let open = load(server.inet(), 4, 1);
    assert_eq!(open.len(), 4);
    drop(open);
    for i in 0..20 {
        let mut s = connect(server.inet());
        roundtrip(&mut s, format!("request {i}").as_bytes());
    }
    let _idle = connect(server.inet());
    server.stop_cleanly(libc::SIGTERM);
}
