//! Event mode on real sockets: epoll and the poll(2) fallback, 1,000 open
//! connections, a full table, idle clients, back-pressure, and running out
//! of file descriptors.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sockserv::std_adapter::event::{
    EpollSource, EventOptions, EventStreamServer, FromListener, NbConn, PollSource,
};
use sockserv::std_adapter::{Address, BindAddr, Builder, ShutdownHandle};
use sockserv::{EventHandler, EventServerConfig, Outbox, Step};
use sockserv::{RequestError, Service};
use util::CLIENT_TIMEOUT;

/// Echo, recording hook calls.
#[derive(Clone, Default)]
struct Echo {
    log: Arc<Mutex<Vec<String>>>,
    refuse: bool,
    /// Stay open after the peer's EOF (`peer_closed` returns Continue).
    linger: bool,
    turns: Arc<std::sync::atomic::AtomicUsize>,
}

impl Echo {
    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

struct EchoHandler {
    linger: bool,
}

impl EventHandler for EchoHandler {
    type Error = std::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        Ok(Step::consumed(out.write(input)))
    }
    fn peer_closed(&mut self, _: &mut Outbox<'_>) -> Result<sockserv::Next, Self::Error> {
        Ok(if self.linger { sockserv::Next::Continue } else { sockserv::Next::Close })
    }
}

impl Service<Address> for Echo {
    type Handler = EchoHandler;
    fn handler(&self, _: &Address) -> EchoHandler {
        EchoHandler { linger: self.linger }
    }
    fn verify_request(&self, _: &sockserv::Request<'_, Address>) -> bool {
        !self.refuse
    }
    fn handle_error(&self, _: &Address, error: &RequestError<'_>) {
        self.log.lock().unwrap().push(format!("error: {error}"));
    }
    fn handle_table_full(&self, _: &Address) {
        self.log.lock().unwrap().push("table full".into());
    }
    fn service_actions(&self) {
        self.turns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A running event server on a thread; stops and joins on drop.
struct Running {
    addr: SocketAddr,
    stop: ShutdownHandle,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown().unwrap();
        self.thread.take().unwrap().join().unwrap();
    }
}

fn start<Src: FromListener + Send + 'static>(echo: &Echo, options: EventOptions) -> Running
where
    Src::Conn: Send,
{
    let mut server: EventStreamServer<Echo, Src> =
        Builder::new().event("127.0.0.1:0", echo.clone(), options).unwrap();
    let BindAddr::Inet(addr) = server.server_address().clone() else { unreachable!() };
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || server.serve_forever(Duration::from_millis(50)).unwrap());
    Running { addr, stop, thread: Some(thread) }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s
}

fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    got
}

/// Sends 1 MiB while reading it back, then half-closes: all of it comes
/// back, then EOF.
fn big_echo(addr: SocketAddr) {
    let s = connect(addr);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == data, "1 MiB came back intact ({} bytes)", got.len());
}

fn echo_works<Src: FromListener + Send + 'static>()
where
    Src::Conn: Send,
{
    let echo = Echo::default();
    let server = start::<Src>(&echo, EventOptions::default());
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
    assert_eq!(roundtrip(&mut a, b"hello world\n"), b"hello world\n");
    assert_eq!(roundtrip(&mut b, b"second\n"), b"second\n");
    big_echo(server.addr);
    drop(server);
    assert!(echo.lines().is_empty(), "{:?}", echo.lines());
}

#[test]
fn epoll_echo() {
    echo_works::<EpollSource>();
}

#[test]
fn poll_fallback_echo() {
    echo_works::<PollSource>();
}

/// Raises this process's descriptor limit (1,000 clients and 1,000 server
/// connections live in one process here).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY (test): valid pointer to an rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur < want {
        // Raise the hard limit too when allowed (root in CI), else up to it.
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max.max(want) };
        // SAFETY (test): valid pointers to rlimit structs.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            lim.rlim_cur = want.min(lim.rlim_max);
            // SAFETY (test): as above; raising the soft limit up to the hard one.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        } else {
            lim = raised;
        }
    }
    assert!(lim.rlim_cur >= want, "RLIMIT_NOFILE hard limit {} is below {want}", lim.rlim_max);
}

fn thousand_open_connections<Src: FromListener + Send + 'static>()
where
    Src::Conn: Send,
{
    raise_nofile(4096);
    let echo = Echo::default();
    let options = EventOptions {
        max_connections: NonZeroUsize::new(1100).unwrap(),
        ..EventOptions::default()
    };
    let server = start::<Src>(&echo, options);
    let mut clients: Vec<TcpStream> = (0..1000).map(|_| connect(server.addr)).collect();
    // Every connection is open at once; each exchanges three messages.
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(format!("{round}:{i:04}\n").as_bytes()).unwrap();
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let want = format!("{round}:{i:04}\n");
            let mut got = vec![0u8; want.len()];
            c.read_exact(&mut got).unwrap();
            assert_eq!(got, want.as_bytes(), "connection {i}, round {round}");
        }
    }
    drop(clients);
    drop(server);
    assert!(echo.lines().is_empty(), "{:?}", echo.lines());
}

#[test]
fn a_thousand_open_connections_on_one_thread() {
    thousand_open_connections::<EpollSource>();
}

#[test]
fn a_thousand_open_connections_with_the_poll_fallback() {
    thousand_open_connections::<PollSource>();
}

#[test]
fn with_when_full_refuse_a_full_table_refuses_and_keeps_serving() {
    let echo = Echo::default();
    let mut options =
        EventOptions { max_connections: NonZeroUsize::new(2).unwrap(), ..EventOptions::default() };
    options.server.when_full = sockserv::WhenFull::Refuse;
    let server = start::<EpollSource>(&echo, options);
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
    assert_eq!(roundtrip(&mut a, b"a"), b"a");
    assert_eq!(roundtrip(&mut b, b"b"), b"b");
    let mut c = connect(server.addr);
    let mut buf = [0u8; 1];
    assert_eq!(c.read(&mut buf).unwrap(), 0, "the third connection is closed at once");
    assert_eq!(roundtrip(&mut a, b"still"), b"still");
    drop(server);
    assert_eq!(echo.lines(), ["table full"]);
}

#[test]
fn a_client_that_never_speaks_is_closed_after_the_idle_timeout() {
    let echo = Echo::default();
    let options = EventOptions {
        server: idle_timeout(Duration::from_millis(200)),
        ..EventOptions::default()
    };
    let server = start::<EpollSource>(&echo, options);
    let mut silent = connect(server.addr);
    let mut busy = connect(server.addr);
    assert_eq!(roundtrip(&mut busy, b"x"), b"x");
    let mut buf = [0u8; 1];
    assert_eq!(silent.read(&mut buf).unwrap(), 0, "closed by the server");
    drop(server);
    assert!(
        echo.lines().contains(&"error: idle for too long; closed".to_string()),
        "{:?}",
        echo.lines()
    );
}

#[test]
fn a_refused_client_is_closed() {
    let echo = Echo { refuse: true, ..Echo::default() };
    let server = start::<EpollSource>(&echo, EventOptions::default());
    let mut c = connect(server.addr);
    c.write_all(b"x").unwrap();
    assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0);
}

/// A client that sends and never reads: the server stops reading once its
/// buffers and the kernel's fill, so the client's writes stop being taken
/// (memory does not grow); when it reads, every byte comes back in order.
#[test]
fn a_fast_sender_with_a_slow_reader_is_held_back_and_loses_nothing() {
    let echo = Echo::default();
    let server = start::<EpollSource>(&echo, EventOptions::default());
    let c = connect(server.addr);
    c.set_nonblocking(true).unwrap();
    let chunk = [7u8; 64 * 1024];
    let mut sent = 0usize;
    let start = Instant::now();
    let mut idle_since = Instant::now();
    // Write until the writes have been refused for half a second.
    while idle_since.elapsed() < Duration::from_millis(500) {
        match (&c).write(&chunk) {
            Ok(n) => {
                sent += n;
                idle_since = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server kept taking data: {sent} bytes"
        );
    }
    assert!(sent < 64 * 1024 * 1024, "held back after {sent} bytes");
    c.set_nonblocking(false).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    (&c).read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), sent);
    assert!(got.iter().all(|&b| b == 7));
}

fn echo_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    // Always ask cargo: a stale example would test old code.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "--example", "echo"]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success());
    dir.join("examples/echo")
}

/// Reads the server's first line, `listening on ADDR`, and returns ADDR.
fn listening_address(child: &mut std::process::Child) -> SocketAddr {
    let mut stdout = child.stdout.take().unwrap();
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        first.push(byte[0]);
    }
    let line = String::from_utf8(first).unwrap();
    line.strip_prefix("listening on ").unwrap().parse().unwrap()
}

/// The server's user + system CPU time, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY (test): sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Out of file descriptors (RLIMIT_NOFILE lowered for the server's process
/// only): accepting fails, the server says so, does not spin, keeps
/// serving the connections it has, and accepts again when descriptors
/// free up.
#[test]
fn running_out_of_file_descriptors_neither_spins_nor_stops_the_server() {
    let bin = echo_binary();
    let mut child = Command::new("prlimit")
        .args(["--nofile=32:32", "--"])
        .arg(&bin)
        .args(["--mode", "event", "--addr", "127.0.0.1:0", "--max-connections", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs");
    let addr = listening_address(&mut child);

    // Far more clients than descriptors: the first ones get in.
    let mut clients: Vec<TcpStream> = (0..60).map(|_| connect(addr)).collect();
    thread::sleep(Duration::from_millis(300));
    let served: Vec<usize> = (0..clients.len())
        .filter(|&i| {
            let c = &mut clients[i];
            c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            c.write_all(b"?").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).is_ok()
        })
        .collect();
    assert!(!served.is_empty() && served.len() < 60, "served {} of 60 at the limit", served.len());

    // While accepts keep failing, the server must not spin.
    let before = cpu_time(child.id());
    thread::sleep(Duration::from_secs(1));
    let used = cpu_time(child.id()) - before;
    assert!(used < Duration::from_millis(300), "{used:?} of CPU in 1 s while out of descriptors");

    // The connections it has are still served.
    let i = served[0];
    clients[i].set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    assert_eq!(roundtrip(&mut clients[i], b"alive"), b"alive");

    // Free descriptors: the waiting clients get in and are answered.
    for &i in &served {
        clients[i].shutdown(std::net::Shutdown::Both).unwrap();
    }
    let waiting: Vec<usize> = (0..60).filter(|i| !served.contains(i)).take(10).collect();
    for &i in &waiting {
        let c = &mut clients[i];
        c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        let mut got = [0u8; 1];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"?", "client {i} was served once descriptors freed up");
    }
    drop(clients);

    // SAFETY (test): signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("Too many open files"), "it said what happened: {stderr}");
}

/// A connection that waits for nothing (the peer closed, the handler keeps
/// it open, nothing to send) and is then reset by its peer: epoll reports
/// hang-ups whatever the mask, so such a socket must not stay in epoll, or
/// the loop spins.
fn no_spin_on_a_reset_connection_waiting_for_nothing<Src: FromListener + Send + 'static>()
where
    Src::Conn: Send,
{
    let echo = Echo { linger: true, ..Echo::default() };
    let server = start::<Src>(&echo, EventOptions::default());
    let s = socket2::Socket::from(connect(server.addr));
    (&s).write_all(b"bye").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = [0u8; 3];
    (&s).read_exact(&mut got).unwrap();
    thread::sleep(Duration::from_millis(100)); // the server saw the EOF and lingers
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s); // RST
    let before = echo.turns.load(std::sync::atomic::Ordering::SeqCst);
    thread::sleep(Duration::from_millis(500));
    let turns = echo.turns.load(std::sync::atomic::Ordering::SeqCst) - before;
    // A 50 ms poll interval makes about 10 turns in 500 ms; a spin, 100,000s.
    assert!(turns < 200, "{turns} loop turns in 500 ms");
}

#[test]
fn epoll_does_not_spin_on_a_reset_connection_waiting_for_nothing() {
    no_spin_on_a_reset_connection_waiting_for_nothing::<EpollSource>();
}

#[test]
fn poll_does_not_spin_on_a_reset_connection_waiting_for_nothing() {
    no_spin_on_a_reset_connection_waiting_for_nothing::<PollSource>();
}

/// With more connections ready than one wait reports (64), the poll(2)
/// source must take turns: 70 clients keep streaming, and one more client's
/// single round trip must still be answered.
#[test]
fn the_poll_fallback_does_not_starve_later_connections() {
    let echo = Echo::default();
    let server = start::<PollSource>(&echo, EventOptions::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut streamers = Vec::new();
    for _ in 0..70 {
        let c = connect(server.addr);
        let r = c.try_clone().unwrap();
        let stop_w = Arc::clone(&stop);
        streamers.push(thread::spawn(move || {
            let chunk = [1u8; 8192];
            while !stop_w.load(std::sync::atomic::Ordering::SeqCst) {
                if (&c).write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = c.shutdown(std::net::Shutdown::Write);
        }));
        streamers.push(thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while (&r).read(&mut buf).is_ok_and(|n| n > 0) {}
        }));
    }
    thread::sleep(Duration::from_millis(300));
    let mut probe = connect(server.addr);
    let answered = probe.write_all(b"probe").and_then(|()| {
        let mut got = [0u8; 5];
        probe.read_exact(&mut got).map(|()| got)
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in streamers {
        t.join().unwrap();
    }
    assert_eq!(&answered.expect("the probe was answered within the client timeout"), b"probe");
}

/// Shutdown with a peer that keeps sending and never reads: during the
/// grace period the connection waits to write only; the loop must not spin
/// on its readable socket.
#[test]
fn the_shutdown_grace_period_does_not_spin() {
    let bin = echo_binary();
    let mut child = Command::new(&bin)
        .args(["--mode", "event", "--addr", "127.0.0.1:0", "--max-connections", "16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    let c = connect(addr);
    let w = c.try_clone().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = Arc::clone(&stop);
    w.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    let writer = thread::spawn(move || {
        let chunk = [3u8; 4096];
        while !stop_w.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = (&w).write(&chunk);
        }
    });
    thread::sleep(Duration::from_millis(300)); // buffers full both ways
    let pid = child.id();
    let mut last = cpu_time(pid);
    let before = last;
    // SAFETY (test): signals our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && !stat.contains(") Z")
        {
            last = cpu_time(pid);
        }
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    let used = last - before;
    assert!(used < Duration::from_millis(300), "{used:?} of CPU during the 1 s grace period");
}

/// Answers larger than the 4 KiB send buffer go out in pieces; with
/// Nagle's algorithm each piece waited for the client's delayed ACK (40 ms
/// a round trip, measured 1,100 echoes/s). Event mode turns Nagle off by
/// default: 20 round trips of 16 KiB take milliseconds, not 800 ms.
#[test]
fn large_answers_do_not_wait_for_delayed_acks() {
    let echo = Echo::default();
    let server = start::<EpollSource>(&echo, EventOptions::default());
    let mut c = connect(server.addr);
    c.set_nodelay(true).unwrap();
    let msg = vec![5u8; 16 * 1024];
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(roundtrip(&mut c, &msg), msg);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(400), "20 round trips of 16 KiB took {took:?}");
}

/// The event server's knobs with an idle timeout of `timeout`.
fn idle_timeout(timeout: Duration) -> EventServerConfig {
    EventServerConfig { idle_timeout: Some(timeout), ..EventServerConfig::default() }
}

/// Issue 9's checked number: a connection's state in the table, without
/// buffers (they are borrowed from the pool only while in use), for the
/// std event mode's connection, peer address and a handler without state.
#[test]
fn a_connections_state_without_buffers_is_at_most_256_bytes() {
    let size = std::mem::size_of::<sockserv::driver::Slot<NbConn, EchoHandler, Address>>();
    println!("a slot is {size} bytes");
    assert!(size <= 256, "a slot is {size} bytes");
}

/// Resident memory of a process, from /proc/PID/status (bytes).
fn resident(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Memory follows use: an event server with room for 10,000 connections
/// holds no slot and no buffer before a client comes (the fixed table of
/// 4 KiB + 4 KiB per slot was 84 MB resident at start), and connections
/// that have been served and sit idle hold no buffer (64 KiB each).
#[test]
fn an_idle_event_server_and_its_idle_connections_hold_no_buffers() {
    raise_nofile(4096);
    let bin = echo_binary();
    let mut child = Command::new(&bin)
        .args(["--mode", "event", "--addr", "127.0.0.1:0", "--max-connections", "10000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    let at_start = resident(child.id());
    let msg = vec![9u8; 16 * 1024];
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let mut c = connect(addr);
        assert_eq!(roundtrip(&mut c, &msg), msg);
        clients.push(c);
    }
    let idle = resident(child.id());
    drop(clients);
    child.kill().unwrap();
    child.wait().unwrap();
    let per_conn = idle.saturating_sub(at_start) / 1000;
    println!("resident at start {at_start} B, {per_conn} B per idle connection");
    assert!(at_start < 8 << 20, "{at_start} bytes resident before any client");
    assert!(per_conn < 4096, "{per_conn} bytes resident per idle connection");
}

/// Set by [`HoldOnce`] when it starts holding the loop.
static HOLDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set by the test to let [`HoldOnce`] go.
static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Echoes; on `hold` it holds the loop (up to 10 s) until the test
/// releases it, so that input and a stop can arrive while the loop is busy.
struct HoldOnce;

impl EventHandler for HoldOnce {
    type Error = std::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        use std::sync::atomic::Ordering::SeqCst;
        if input == b"hold" {
            HOLDING.store(true, SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !RELEASE.load(SeqCst) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(Step::consumed(out.write(input)))
    }
}

/// A request that arrived before the stop, while the loop was busy, is
/// read and answered by the drain: the client gets its whole answer and
/// then EOF, not a reset (a socket closed with unread input resets).
#[test]
fn drain_answers_what_arrived_before_the_stop() {
    use std::sync::atomic::Ordering::SeqCst;
    let service = sockserv::service_fn(|_: &Address| HoldOnce);
    let mut server: EventStreamServer<_> =
        Builder::new().event("127.0.0.1:0", service, EventOptions::default()).unwrap();
    let BindAddr::Inet(addr) = server.server_address().clone() else { unreachable!() };
    let stop = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve_forever(Duration::from_millis(50)));
    let mut holder = connect(addr);
    let mut client = connect(addr);
    assert_eq!(roundtrip(&mut client, b"hello"), b"hello");
    holder.write_all(b"hold").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !HOLDING.load(SeqCst) {
        assert!(Instant::now() < deadline, "the loop never got to the holding request");
        thread::sleep(Duration::from_millis(5));
    }
    // The loop is busy: the request and then the stop arrive meanwhile.
    let request: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    client.write_all(&request).unwrap();
    stop.request();
    RELEASE.store(true, SeqCst);
    let mut got = Vec::new();
    let read = client.read_to_end(&mut got);
    serving.join().unwrap().unwrap();
    assert!(read.is_ok(), "the client met {read:?} after {} of {} bytes", got.len(), request.len());
    assert!(got == request, "{} of {} bytes, then EOF", got.len(), request.len());
}
