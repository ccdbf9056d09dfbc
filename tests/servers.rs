//! CPython's `test_socketserver.py`, ported to real sockets (the cases that
//! need no fork; those live in `tests/forking.rs`), plus the std adapter's
//! own guarantees.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sockserv::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv::service_fn;
use sockserv::std_adapter::{
    Address, BindAddr, Builder, Close, Conn, DatagramServer, Sequential, ShutdownError,
    ShutdownHandle, StreamServer, TcpServer, Threading, ThreadingTcpServer, UdpServer,
    UnixStreamServer,
};
use sockserv::{Service, StreamHandler};
use util::{Behaviour, Recorder, TEST_STR, dgram_examine, open_fds, stream_examine, unix_path};

const POLL: Duration = Duration::from_millis(10);

fn inet() -> BindAddr {
    BindAddr::Inet("127.0.0.1:0".parse().unwrap())
}

fn unix(tag: &str) -> BindAddr {
    BindAddr::Unix(unix_path(tag))
}

/// CPython's `run_server` for stream servers: serve_forever on a thread,
/// three clients, shutdown, join, server_close; then the socket is closed.
fn run_stream_server<D>(addr: BindAddr, dispatch: D)
where
    D: Dispatch + StreamDispatch<Conn, Address, Recorder> + Send + 'static,
{
    let rec = Recorder::new(Behaviour::LineEcho);
    let mut server = Builder::new().dispatch(dispatch).stream(addr, rec.clone()).unwrap();
    let addr = server.server_address().clone();
    assert_eq!(addr, bound_address(server.listener().socket()), "server_address is getsockname()");
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || {
        server.serve_forever(POLL).unwrap();
        server
    });
    for _ in 0..3 {
        stream_examine(&addr);
    }
    stop.shutdown().unwrap();
    t.join().unwrap().server_close();
    assert_closed(&addr);
    assert_eq!(rec.count("Error"), 0, "{:?}", rec.lines());
}

fn run_dgram_server<D>(addr: BindAddr, dispatch: D)
where
    D: Dispatch
        + DatagramDispatch<sockserv::std_adapter::SocketDatagram, Recorder>
        + Send
        + 'static,
{
    let rec = Recorder::new(Behaviour::LineEcho);
    let mut server = Builder::new().dispatch(dispatch).datagram(addr, rec.clone()).unwrap();
    let addr = server.server_address().clone();
    assert_eq!(addr, bound_address(server.datagram_socket().socket()));
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || {
        server.serve_forever(POLL).unwrap();
        server
    });
    for _ in 0..3 {
        dgram_examine(&addr);
    }
    stop.shutdown().unwrap();
    t.join().unwrap().server_close();
    if let BindAddr::Unix(p) = &addr {
        assert!(!p.exists(), "the socket path was removed");
    }
    assert_eq!(rec.count("Error"), 0, "{:?}", rec.lines());
}

fn bound_address(sock: &socket2::Socket) -> BindAddr {
    let a = sock.local_addr().unwrap();
    match a.as_socket() {
        Some(s) => BindAddr::Inet(s),
        None => BindAddr::Unix(a.as_pathname().unwrap().to_path_buf()),
    }
}

/// After server_close nobody listens there any more (CPython checks
/// `socket.fileno() == -1`).
fn assert_closed(addr: &BindAddr) {
    match addr {
        BindAddr::Inet(a) => {
            let err = TcpStream::connect(a).expect_err("the listener is closed");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        BindAddr::Unix(p) => assert!(!p.exists(), "the socket path was removed"),
    }
}

#[test]
fn test_tcp_server() {
    run_stream_server(inet(), Sequential::new());
}

#[test]
fn test_threading_tcp_server() {
    run_stream_server(inet(), Threading::new());
}

#[test]
fn test_unix_stream_server() {
    run_stream_server(unix("stream"), Sequential::new());
}

#[test]
fn test_threading_unix_stream_server() {
    run_stream_server(unix("tstream"), Threading::new());
}

#[test]
fn test_udp_server() {
    run_dgram_server(inet(), Sequential::new());
}

#[test]
fn test_threading_udp_server() {
    run_dgram_server(inet(), Threading::new());
}

#[test]
fn test_unix_datagram_server() {
    run_dgram_server(unix("dgram"), Sequential::new());
}

#[test]
fn test_threading_unix_datagram_server() {
    run_dgram_server(unix("tdgram"), Threading::new());
}

#[test]
fn tcp_over_ipv6_follows_the_address() {
    // CPython gh-64414: IPv6 needed a subclass there.
    run_stream_server(BindAddr::Inet("[::1]:0".parse().unwrap()), Threading::new());
    run_dgram_server(BindAddr::Inet("[::1]:0".parse().unwrap()), Sequential::new());
}

/// `test_shutdown` (issue #2302): shutdown() always makes another thread
/// leave serve_forever, for 20 servers started and stopped at once.
#[test]
fn test_shutdown() {
    let mut running = Vec::new();
    for _ in 0..20 {
        let mut s = TcpServer::bind("127.0.0.1:0", Recorder::new(Behaviour::Echo)).unwrap();
        let stop = s.shutdown_handle();
        let t = thread::spawn(move || {
            s.serve_forever(POLL).unwrap();
            s
        });
        running.push((t, stop));
    }
    for (_, stop) in &running {
        stop.shutdown().unwrap();
    }
    for (t, _) in running {
        t.join().unwrap().server_close();
    }
}

/// `test_close_immediately`.
#[test]
fn test_close_immediately() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", Recorder::new(Behaviour::Echo)).unwrap();
    server.server_close();
}

/// `test_tcpserver_bind_leak` (issue #22435): 1024 failed binds leak no
/// descriptor. CPython binds port -1; here an address the machine does not
/// have (TEST-NET-1), which fails in bind().
#[test]
fn test_tcpserver_bind_leak() {
    let before = open_fds();
    for _ in 0..1024 {
        let err = TcpServer::bind("192.0.2.1:0", Recorder::new(Behaviour::Echo))
            .err()
            .expect("bind fails");
        assert_eq!(err.source.kind(), std::io::ErrorKind::AddrNotAvailable);
    }
    // Other tests run in parallel threads; allow their few descriptors.
    assert!(open_fds() < before + 64, "descriptors leaked: {before} -> {}", open_fds());
}

/// `test_context_manager`: leaving the scope (Drop) closes the socket.
#[test]
fn test_context_manager() {
    let addr = {
        let server = TcpServer::bind("127.0.0.1:0", Recorder::new(Behaviour::Echo)).unwrap();
        server.server_address().clone()
    };
    assert_closed(&addr);
}

/// CPython's `BaseErrorTestServer`: connect, handle_request, server_close.
fn error_test_server<D>(behaviour: Behaviour, dispatch: D) -> Recorder
where
    D: Dispatch + StreamDispatch<Conn, Address, Recorder>,
{
    let rec = Recorder::new(behaviour);
    let mut server = Builder::new().dispatch(dispatch).stream("127.0.0.1:0", rec.clone()).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    drop(TcpStream::connect(a).unwrap());
    server.handle_request().unwrap();
    server.server_close(); // waits for the handler thread (Close::Grace)
    rec
}

#[test]
fn error_handler_test_sync_handled() {
    let rec = error_test_server(Behaviour::Fail, Sequential::new());
    assert_eq!(
        rec.lines(),
        ["Handler called", "Error handled: handler: handler failed in Handle: Test"]
    );
}

#[test]
fn error_handler_test_threading_handled() {
    let rec = error_test_server(Behaviour::Fail, Threading::new());
    assert_eq!(
        rec.lines(),
        ["Handler called", "Error handled: handler: handler failed in Handle: Test"]
    );
}

/// `test_sync_not_handled` / `test_threading_not_handled`: CPython lets
/// `SystemExit` escape `handle_error`. A Rust panic is the nearest thing;
/// the std strategies deliberately catch it and report it as a *panic*
/// (never as a handler error) so that the server keeps serving. The
/// core's inline strategy lets it unwind (see core's cpython tests).
#[test]
fn error_handler_test_panic_is_reported_as_a_panic() {
    for rec in [
        error_test_server(Behaviour::Panic, Sequential::new()),
        error_test_server(Behaviour::Panic, Threading::new()),
    ] {
        assert_eq!(
            rec.lines(),
            ["Handler called", "Error handled: panic: handler panicked: Test error"]
        );
    }
}

/// `test_threads_reaped` (bpo-37193): finished threads are not kept.
/// CPython asserts fewer than 10 of 10 are kept, which races with the
/// threads' ends; here the test waits until all 10 have ended, then one
/// more request reaps them: at most that one is tracked.
#[test]
fn test_threads_reaped() {
    let mut server =
        ThreadingTcpServer::bind("127.0.0.1:0", Recorder::new(Behaviour::Echo)).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    for _ in 0..10 {
        let c = TcpStream::connect(a).unwrap();
        server.handle_request().unwrap();
        drop(c);
    }
    let deadline = Instant::now() + util::CLIENT_TIMEOUT;
    while server.dispatch().live_threads() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.dispatch().live_threads(), 0, "every handler ended");
    let c = TcpStream::connect(a).unwrap();
    server.handle_request().unwrap();
    drop(c);
    assert!(
        server.dispatch().tracked_threads() <= 1,
        "kept {}",
        server.dispatch().tracked_threads()
    );
    server.server_close();
}

/// `test_shutdown_request_called_if_verify_request_false` on a real
/// socket: the refused client sees EOF at once, no handler runs.
#[test]
fn verify_request_false_closes_the_connection() {
    let mut rec = Recorder::new(Behaviour::Echo);
    rec.verify = false;
    let mut server = TcpServer::bind("127.0.0.1:0", rec.clone()).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let mut c = TcpStream::connect(a).unwrap();
    c.set_read_timeout(Some(util::CLIENT_TIMEOUT)).unwrap();
    server.handle_request().unwrap();
    assert_eq!(c.read(&mut [0u8; 8]).unwrap(), 0, "EOF: shut down");
    assert_eq!(rec.count("Handler called"), 0);
}

/// The handler gets the accepted socket itself (CPython's
/// `SocketWriterTest.test_basics` checks wfile's fd is the request's).
#[test]
fn socket_writer_test_basics() {
    struct PeerOf(Arc<Mutex<Option<std::net::SocketAddr>>>);
    impl StreamHandler<Conn> for PeerOf {
        type Error = std::io::Error;
        fn handle(&mut self, conn: &mut Conn) -> std::io::Result<()> {
            *self.0.lock().unwrap() = conn.get_ref().peer_addr()?.as_socket();
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(None));
    let s2 = Arc::clone(&seen);
    let mut server =
        TcpServer::bind("127.0.0.1:0", service_fn(move |_: &Address| PeerOf(Arc::clone(&s2))))
            .unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let c = TcpStream::connect(a).unwrap();
    server.handle_request().unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(c.local_addr().unwrap()));
}

/// CPython's `SOCK_MAX_SIZE`: 16 MiB + 1.
const SOCK_MAX_SIZE: usize = 16 * 1024 * 1024 + 1;

static INTERRUPTED: AtomicU64 = AtomicU64::new(0);
extern "C" fn on_sigusr1(_: libc::c_int) {
    INTERRUPTED.fetch_add(1, Ordering::SeqCst);
}

/// `SocketWriterTest.test_write`: a write is sent at once, and a 16 MiB + 1
/// write completes whole while signals interrupt it (a handler installed
/// without `SA_RESTART`, so the send really sees EINTR).
#[test]
fn socket_writer_test_write() {
    struct Writer(Arc<AtomicU64>);
    impl StreamHandler<Conn> for Writer {
        type Error = std::io::Error;
        fn handle(&mut self, conn: &mut Conn) -> std::io::Result<()> {
            use embedded_io::{Read as _, Write as _};
            // SAFETY (test): pthread_self has no preconditions.
            self.0.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            conn.write_all(b"write data\n")?;
            let mut io = sockserv::BufStream::<_, 64>::new(conn);
            let mut line = [0u8; 64];
            let n = io.read_line(&mut line).map_err(|_| std::io::Error::other("read_line"))?;
            assert_eq!(&line[..n], b"client response\n");
            let big = vec![0u8; SOCK_MAX_SIZE];
            assert_eq!(io.write(&big)?, SOCK_MAX_SIZE);
            let _ = io.read(&mut [0u8; 1]);
            Ok(())
        }
    }
    // SAFETY (test): installs a handler that only touches an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        sa.sa_flags = 0; // no SA_RESTART: interrupted syscalls fail with EINTR
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let tid = Arc::new(AtomicU64::new(0));
    let t2 = Arc::clone(&tid);
    let mut server =
        TcpServer::bind("127.0.0.1:0", service_fn(move |_: &Address| Writer(Arc::clone(&t2))))
            .unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let srv = thread::spawn(move || server.handle_request().unwrap());

    let mut c = TcpStream::connect(a).unwrap();
    c.set_read_timeout(Some(util::CLIENT_TIMEOUT)).unwrap();
    let mut first = [0u8; 11];
    c.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"write data\n", "sent without a flush");
    c.write_all(b"client response\n").unwrap();
    let mut head = [0u8; 100];
    c.read_exact(&mut head).unwrap();
    // The server thread is now blocked in send(): interrupt it until a
    // signal was seen, as CPython's test does.
    let before = INTERRUPTED.load(Ordering::SeqCst);
    while INTERRUPTED.load(Ordering::SeqCst) == before {
        // SAFETY (test): the server thread is alive until handle_request returns.
        unsafe { libc::pthread_kill(tid.load(Ordering::SeqCst) as libc::pthread_t, libc::SIGUSR1) };
        thread::sleep(Duration::from_millis(10));
    }
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), SOCK_MAX_SIZE - 100);
    srv.join().unwrap();
}

#[test]
fn a_datagram_of_65507_bytes_round_trips() {
    let rec = Recorder::new(Behaviour::Echo);
    let mut server = UdpServer::bind("127.0.0.1:0", rec.clone()).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(util::CLIENT_TIMEOUT)).unwrap();
    let big: Vec<u8> = (0..65_507u32).map(|i| i as u8).collect();
    c.send_to(&big, a).unwrap();
    server.handle_request().unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &big[..]);
    assert_eq!(rec.count("Error"), 0);
}

#[test]
fn an_oversized_datagram_is_reported_and_the_next_is_served() {
    // CPython gh-128319: it cut datagrams at max_packet_size silently.
    let rec = Recorder::new(Behaviour::Echo);
    let mut server: DatagramServer<_> =
        Builder::new().max_packet_size(1024).datagram("127.0.0.1:0", rec.clone()).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(util::CLIENT_TIMEOUT)).unwrap();
    c.send_to(&[7u8; 2000], a).unwrap();
    c.send_to(TEST_STR, a).unwrap();
    server.handle_request().unwrap();
    server.handle_request().unwrap();
    assert_eq!(
        rec.lines(),
        [
            "Error handled: truncated: datagram of 2000 bytes does not fit the 1024-byte buffer; dropped",
            "Handler called"
        ]
    );
    let mut buf = [0u8; 64];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], TEST_STR, "only the second datagram was answered");
}

#[test]
fn a_bind_failure_names_the_address_and_the_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = TcpServer::bind(addr, Recorder::new(Behaviour::Echo)).err().expect("address in use");
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()) && text.contains("in use"), "{text}");
}

#[test]
fn a_unix_socket_path_is_removed_on_close_and_a_live_one_is_refused() {
    let path = unix_path("owned");
    let server = UnixStreamServer::bind(path.as_path(), Recorder::new(Behaviour::Echo)).unwrap();
    assert!(path.exists());
    let again = UnixStreamServer::bind(path.as_path(), Recorder::new(Behaviour::Echo));
    assert_eq!(again.err().expect("in use").source.kind(), std::io::ErrorKind::AddrInUse);
    assert!(path.exists(), "a failed bind does not remove another server's path");
    drop(server);
    assert!(!path.exists());
}

/// gh-88932: shutdown() wakes the loop at once instead of after up to
/// poll_interval (here a minute).
#[test]
fn shutdown_wakes_the_loop_at_once() {
    let mut server = TcpServer::bind("127.0.0.1:0", Recorder::new(Behaviour::Echo)).unwrap();
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || server.serve_forever(Duration::from_secs(60)));
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    stop.shutdown().unwrap();
    t.join().unwrap().unwrap();
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
}

/// CPython: shutdown() before serve_forever starts returns once the loop
/// has started and stopped.
#[test]
fn shutdown_before_serve_forever_starts() {
    let mut server = TcpServer::bind("127.0.0.1:0", Recorder::new(Behaviour::Echo)).unwrap();
    let stop = server.shutdown_handle();
    let waiter = thread::spawn(move || stop.shutdown());
    thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "shutdown() waits for the loop to run");
    server.serve_forever(Duration::from_secs(60)).unwrap();
    waiter.join().unwrap().unwrap();
    // And it can serve again afterwards.
    let stop = server.shutdown_handle();
    let addr = server.server_address().clone();
    let t = thread::spawn(move || {
        server.serve_forever(POLL).unwrap();
        server
    });
    assert_eq!(util::tcp_roundtrip(&addr, b"again"), b"again");
    stop.shutdown().unwrap();
    t.join().unwrap();
}

/// gh-83978: shutdown() from the loop's own thread (a sync handler) is an
/// error, not a deadlock; the stop still happens.
#[test]
fn shutdown_from_the_serving_thread_is_an_error_not_a_deadlock() {
    #[derive(Clone)]
    struct Stopper(
        Arc<Mutex<Option<ShutdownHandle>>>,
        Arc<Mutex<Option<Result<(), ShutdownError>>>>,
    );

    struct H(Stopper);
    impl StreamHandler<Conn> for H {
        type Error = std::io::Error;
        fn handle(&mut self, _: &mut Conn) -> std::io::Result<()> {
            let r = self.0.0.lock().unwrap().as_ref().unwrap().shutdown();
            *self.0.1.lock().unwrap() = Some(r);
            Ok(())
        }
    }
    impl Service<Address> for Stopper {
        type Handler = H;
        fn handler(&self, _: &Address) -> H {
            H(self.clone())
        }
    }
    let svc = Stopper(Arc::default(), Arc::default());
    let mut server = TcpServer::bind("127.0.0.1:0", svc.clone()).unwrap();
    *svc.0.lock().unwrap() = Some(server.shutdown_handle());
    let addr = server.server_address().clone();
    let t = thread::spawn(move || server.serve_forever(Duration::from_secs(60)));
    util::tcp_roundtrip(&addr, b"");
    t.join().unwrap().unwrap();
    assert_eq!(*svc.1.lock().unwrap(), Some(Err(ShutdownError::FromServeThread)));
}

/// The optional cap on threads: with 2 slots, a third client waits until
/// one of the first two leaves.
#[test]
fn threading_cap_makes_a_new_request_wait_for_a_slot() {
    let rec = Recorder::new(Behaviour::Echo);
    let dispatch = Threading::new().max_threads(NonZeroUsize::new(2).unwrap());
    let mut server: StreamServer<_, Threading> =
        Builder::new().dispatch(dispatch).stream("127.0.0.1:0", rec.clone()).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || {
        server.serve_forever(POLL).unwrap();
        server
    });
    let ask = |c: &mut TcpStream| {
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).map(|()| b[0])
    };
    let mut c1 = TcpStream::connect(a).unwrap();
    let mut c2 = TcpStream::connect(a).unwrap();
    assert_eq!(ask(&mut c1).unwrap(), b'x');
    assert_eq!(ask(&mut c2).unwrap(), b'x');
    let mut c3 = TcpStream::connect(a).unwrap();
    c3.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(ask(&mut c3).is_err(), "no slot: the third request is not served yet");
    drop(c1);
    c3.set_read_timeout(Some(util::CLIENT_TIMEOUT)).unwrap();
    let mut b = [0u8; 1];
    c3.read_exact(&mut b).unwrap();
    assert_eq!(b[0], b'x', "served once a slot freed");
    drop((c2, c3));
    stop.shutdown().unwrap();
    let server = t.join().unwrap();
    assert!(server.dispatch().live_threads() <= 2);
    server.server_close();
}

/// StreamRequestHandler.timeout: a client that connects and never speaks
/// is timed out and reported, while others are served.
#[test]
fn a_silent_client_times_out_and_others_are_served() {
    let rec = Recorder::new(Behaviour::LineEcho);
    let mut server: StreamServer<_, Threading> = Builder::new()
        .dispatch(Threading::new())
        .stream_timeout(Some(Duration::from_millis(200)))
        .stream("127.0.0.1:0", rec.clone())
        .unwrap();
    let addr = server.server_address().clone();
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || {
        server.serve_forever(POLL).unwrap();
        server
    });
    let BindAddr::Inet(a) = &addr else { unreachable!() };
    let mut silent = TcpStream::connect(a).unwrap();
    stream_examine(&addr);
    silent.set_read_timeout(Some(util::CLIENT_TIMEOUT)).unwrap();
    assert_eq!(silent.read(&mut [0u8; 4]).unwrap(), 0, "the server closed the silent connection");
    stop.shutdown().unwrap();
    t.join().unwrap().server_close();
    let errors: Vec<_> = rec.lines().into_iter().filter(|l| l.starts_with("Error")).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("TimedOut"), "{errors:?}");
}

/// A client that resets mid-request is reported; the next is served.
#[test]
fn a_reset_mid_request_is_reported_and_the_server_goes_on() {
    let rec = Recorder::new(Behaviour::LineEcho);
    let mut server = TcpServer::bind("127.0.0.1:0", rec.clone()).unwrap();
    let addr = server.server_address().clone();
    let BindAddr::Inet(a) = &addr else { unreachable!() };
    let s = socket2::Socket::from(TcpStream::connect(a).unwrap());
    (&s).write_all(b"no newline yet").unwrap();
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s); // RST
    server.handle_request().unwrap();
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || server.serve_forever(POLL));
    stream_examine(&addr);
    stop.shutdown().unwrap();
    t.join().unwrap().unwrap();
    let errors: Vec<_> = rec.lines().into_iter().filter(|l| l.starts_with("Error")).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("ConnectionReset"), "{errors:?}");
}

/// A sequential server stops on shutdown() even while a client keeps its
/// connection open without sending (its read wakes up and fails with
/// Interrupted); CPython would wait for the client.
#[test]
fn a_sequential_server_stops_while_a_client_idles() {
    let rec = Recorder::new(Behaviour::Echo);
    let mut server = TcpServer::bind("127.0.0.1:0", rec.clone()).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || server.serve_forever(POLL));
    let mut idle = TcpStream::connect(a).unwrap();
    idle.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    idle.set_read_timeout(Some(util::CLIENT_TIMEOUT)).unwrap();
    idle.read_exact(&mut b).unwrap(); // the handler is now waiting in a read
    stop.shutdown().unwrap();
    t.join().unwrap().unwrap();
    assert_eq!(idle.read(&mut b).unwrap(), 0, "the connection was shut down");
    let errors: Vec<_> = rec.lines().into_iter().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.len() == 1 && errors[0].contains("shutting down"), "{errors:?}");
}

/// gh-style deadlock: with the thread cap reached, a request waits for a
/// slot in the server loop; shutdown() must still return.
#[test]
fn shutdown_returns_while_the_loop_waits_for_a_thread_slot() {
    let rec = Recorder::new(Behaviour::Echo);
    let dispatch = Threading::new().max_threads(NonZeroUsize::new(1).unwrap()).close(Close::Leave);
    let mut server: StreamServer<_, Threading> =
        Builder::new().dispatch(dispatch).stream("127.0.0.1:0", rec.clone()).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || server.serve_forever(POLL));
    let mut holder = TcpStream::connect(a).unwrap();
    holder.set_read_timeout(Some(util::CLIENT_TIMEOUT)).unwrap();
    holder.write_all(b"x").unwrap();
    holder.read_exact(&mut [0u8; 1]).unwrap(); // the only slot is taken
    let waiting = TcpStream::connect(a).unwrap();
    thread::sleep(Duration::from_millis(100)); // the loop now waits for a slot
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || done_tx.send(stop.shutdown()).unwrap());
    let result = done_rx.recv_timeout(util::CLIENT_TIMEOUT).expect("shutdown() returned");
    assert_eq!(result, Ok(()));
    t.join().unwrap().unwrap();
    drop((holder, waiting));
}

/// A handler writing to a client that never reads: `stream_timeout`
/// covers writes too (CPython's settimeout does).
#[test]
fn the_stream_timeout_covers_writes() {
    struct Flood;
    impl StreamHandler<Conn> for Flood {
        type Error = std::io::Error;
        fn handle(&mut self, conn: &mut Conn) -> std::io::Result<()> {
            use embedded_io::Write as _;
            conn.write_all(&vec![0u8; 64 << 20])
        }
    }
    let errors = Arc::new(Mutex::new(Vec::new()));
    #[derive(Clone)]
    struct Svc(Arc<Mutex<Vec<String>>>);

    impl Service<Address> for Svc {
        type Handler = Flood;
        fn handler(&self, _: &Address) -> Flood {
            Flood
        }
        fn handle_error(&self, _: &Address, e: &sockserv::RequestError<'_>) {
            self.0.lock().unwrap().push(e.to_string());
        }
    }
    let mut server: StreamServer<_, Threading> = Builder::new()
        .dispatch(Threading::new())
        .stream_timeout(Some(Duration::from_millis(300)))
        .stream("127.0.0.1:0", Svc(Arc::clone(&errors)))
        .unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let c = TcpStream::connect(a).unwrap();
    server.handle_request().unwrap();
    server.server_close(); // joins the handler thread: it must end by itself
    drop(c);
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("TimedOut"), "{errors:?}");
}

/// A sequential server whose handler is blocked writing to a client that
/// never reads still stops on shutdown().
#[test]
fn a_sequential_server_stops_while_a_write_is_blocked() {
    struct Flood;
    impl StreamHandler<Conn> for Flood {
        type Error = std::io::Error;
        fn handle(&mut self, conn: &mut Conn) -> std::io::Result<()> {
            use embedded_io::Write as _;
            conn.write_all(&vec![0u8; 64 << 20])
        }
    }
    let mut server = TcpServer::bind("127.0.0.1:0", service_fn(|_: &Address| Flood)).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || server.serve_forever(POLL));
    let c = TcpStream::connect(a).unwrap();
    thread::sleep(Duration::from_millis(300)); // the kernel buffers are full now
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || done_tx.send(stop.shutdown()).unwrap());
    assert_eq!(done_rx.recv_timeout(util::CLIENT_TIMEOUT).expect("shutdown() returned"), Ok(()));
    t.join().unwrap().unwrap();
    drop(c);
}

/// A bind error names what the caller wrote (issue 12: it said
/// "(unresolved address)" and its Debug showed a made-up Unix path).
#[test]
fn a_bind_error_names_the_address_as_written() {
    let err = TcpServer::bind("127.0.0.1:99999", Recorder::new(Behaviour::Echo))
        .err()
        .expect("port 99999 does not exist");
    assert_eq!(err.requested, "127.0.0.1:99999");
    assert!(err.address.is_none());
    assert_eq!(err.to_string(), "cannot bind 127.0.0.1:99999: invalid port value");
    assert!(!format!("{err:?}").contains("Unix"), "{err:?}");
    // Resolved, then refused: both what was asked and what it became.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let opts = Builder::new().allow_reuse_address(false);
    let err = opts.stream(format!("localhost:{port}"), Recorder::new(Behaviour::Echo));
    let err = err.err().expect("the port is taken");
    assert_eq!(err.requested, format!("localhost:{port}"));
    assert!(err.to_string().starts_with(&format!("cannot bind localhost:{port} (")), "{err}");
}

/// Python's `("127.0.0.1", 0)`, a `String` and a `&String` bind too.
#[test]
fn tuples_and_strings_are_bind_addresses() {
    let svc = || Recorder::new(Behaviour::Echo);
    let a = UdpServer::bind(("127.0.0.1", 0), svc()).unwrap();
    let text = String::from("127.0.0.1:0");
    let b = TcpServer::bind(&text, svc()).unwrap();
    let c = TcpServer::bind(text, svc()).unwrap();
    for addr in [a.server_address(), b.server_address(), c.server_address()] {
        let BindAddr::Inet(a) = addr else { panic!("{addr:?}") };
        assert!(a.ip().is_loopback() && a.port() != 0, "{a}");
    }
}
