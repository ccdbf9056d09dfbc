//! The std adapter's surface: what a user passes in (addresses, policies)
//! and what the defaults do on a real machine.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sockserv::std_adapter::event::EventTcpServer;
use sockserv::std_adapter::{BindAddr, Builder, TcpServer, ThreadingTcpServer, UnixStreamServer};
use util::{Behaviour, CLIENT_TIMEOUT, Recorder, TEST_STR, stream_examine, unix_path};

/// Serves `TEST_STR` once on a Unix server built from `address`.
fn unix_round_trip(server: UnixStreamServer<Recorder>, path: &std::path::Path) {
    assert_eq!(server.server_address(), &BindAddr::Unix(path.to_path_buf()));
    let mut server = server;
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || server.serve_forever(Duration::from_millis(100)));
    stream_examine(&BindAddr::Unix(path.to_path_buf()));
    stop.shutdown().unwrap();
    t.join().unwrap().unwrap();
}

/// A Unix socket path as a `String`, a `&str` or a `&PathBuf` binds a Unix
/// server (a `String` failed at run time with "invalid socket address").
#[test]
fn a_path_as_string_or_pathbuf_binds_a_unix_server() {
    let svc = || Recorder::new(Behaviour::LineEcho);
    let path = unix_path("string");
    let text: String = path.to_str().unwrap().to_owned();
    unix_round_trip(UnixStreamServer::bind(text.clone(), svc()).unwrap(), &path);
    unix_round_trip(UnixStreamServer::bind(&text, svc()).unwrap(), &path);
    unix_round_trip(UnixStreamServer::bind(text.as_str(), svc()).unwrap(), &path);
    let buf: PathBuf = unix_path("pathbuf");
    unix_round_trip(UnixStreamServer::bind(&buf, svc()).unwrap(), &buf);
    assert!(UnixStream::connect(&buf).is_err(), "the path is removed on close");
}

/// Leaves connections the server closed first (so in `TIME_WAIT` on the
/// server's side) on the port of a line-echo server, then closes it.
fn leave_time_wait() -> BindAddr {
    let mut server = TcpServer::bind("127.0.0.1:0", Recorder::new(Behaviour::LineEcho)).unwrap();
    let addr = server.server_address().clone();
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || server.serve_forever(Duration::from_millis(100)));
    let BindAddr::Inet(a) = addr else { unreachable!() };
    for _ in 0..3 {
        let mut c = TcpStream::connect(a).unwrap();
        c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        c.write_all(TEST_STR).unwrap();
        let mut answer = Vec::new();
        // The server answers one line and closes first: EOF here.
        c.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, TEST_STR);
    }
    stop.shutdown().unwrap();
    t.join().unwrap().unwrap();
    addr
}

/// A TCP server restarted at once on a port with connections in
/// `TIME_WAIT` binds in every mode (`SO_REUSEADDR` by default), where
/// without it the bind fails with "Address already in use".
#[test]
fn tcp_listeners_rebind_over_time_wait_in_every_mode() {
    let addr = leave_time_wait();
    let svc = || Recorder::new(Behaviour::LineEcho);
    let refused = Builder::new().allow_reuse_address(false).stream(addr.clone(), svc());
    let err = refused.err().expect("without SO_REUSEADDR, TIME_WAIT keeps the port");
    assert_eq!(err.source.kind(), std::io::ErrorKind::AddrInUse, "{err}");

    let sequential = TcpServer::bind(addr.clone(), svc()).expect("sequential rebinds");
    assert_eq!(sequential.server_address(), &addr);
    drop(sequential);
    let threading = ThreadingTcpServer::bind(addr.clone(), svc()).expect("threading rebinds");
    drop(threading);
    let event = EventTcpServer::bind(addr.clone(), sockserv::service_fn(|_| Nop));
    assert_eq!(event.expect("event mode rebinds").server_address(), &addr);
}

struct Nop;
impl sockserv::EventHandler for Nop {
    type Error = std::convert::Infallible;
    fn received(
        &mut self,
        input: &[u8],
        _: &mut sockserv::Outbox<'_>,
    ) -> Result<sockserv::Step, Self::Error> {
        Ok(sockserv::Step::consumed(input.len()))
    }
}

/// A threading server with default settings and an idle client connected
/// stops on a real SIGTERM within its close grace (1 s): `serve_forever`
/// returns, closing waits the grace for the idle client's handler, shuts
/// its connection down (the client reads EOF) and returns. Before, closing
/// joined the handler thread for as long as the client stayed.
#[test]
fn sigterm_stops_a_threading_server_with_an_idle_client_within_its_grace() {
    let mut server =
        ThreadingTcpServer::bind("127.0.0.1:0", Recorder::new(Behaviour::Echo)).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    server.shutdown_handle().stop_on_signal(libc::SIGTERM).unwrap();
    let (done, closed) = mpsc::channel();
    thread::spawn(move || {
        let served = server.serve_forever(Duration::from_millis(500));
        let closing = Instant::now();
        drop(server); // server_close, as the end of a program's main does
        done.send((served.is_ok(), closing.elapsed())).unwrap();
    });
    let mut idle = TcpStream::connect(a).unwrap();
    idle.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    // Its handler thread runs once it has echoed a byte; then it waits.
    idle.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    idle.read_exact(&mut byte).unwrap();
    // SAFETY: kill(2) takes two integers; SIGTERM is handled above.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    let (served, closing) =
        closed.recv_timeout(Duration::from_secs(10)).expect("stopped and closed within 10 s");
    assert!(served);
    assert!(closing >= Duration::from_millis(900), "closing waited the grace: {closing:?}");
    assert!(closing < Duration::from_secs(4), "closing took {closing:?}; the grace is 1 s");
    assert_eq!(idle.read(&mut byte).unwrap(), 0, "the idle client's connection was ended");
}

/// The close policy covers a pool's connections however they were
/// accepted (by the loop, queued, or by an idle worker accepting for
/// itself): closing waits the grace, then ends the idle clients.
#[test]
fn closing_a_pool_with_idle_clients_ends_them_within_its_grace() {
    use sockserv::std_adapter::Pool;
    use std::num::NonZeroUsize;
    let pool = Pool::new(NonZeroUsize::new(8).unwrap());
    let mut server = Builder::new()
        .dispatch(pool)
        .stream("127.0.0.1:0", Recorder::new(Behaviour::Echo))
        .unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let stop = server.shutdown_handle();
    let (done, closed) = mpsc::channel();
    thread::spawn(move || {
        let served = server.serve_forever(Duration::from_millis(100));
        let closing = Instant::now();
        drop(server); // server_close
        done.send((served.is_ok(), closing.elapsed())).unwrap();
    });
    // The first is dispatched by the loop; from then on idle workers
    // accept too, and take most of the others.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..6 {
        let mut c = TcpStream::connect(a).unwrap();
        c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        c.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).unwrap();
        idle.push(c);
        thread::sleep(Duration::from_millis(100));
    }
    stop.shutdown().unwrap();
    let (served, closing) =
        closed.recv_timeout(Duration::from_secs(10)).expect("stopped and closed within 10 s");
    assert!(served);
    assert!(closing >= Duration::from_millis(900), "closing waited the grace: {closing:?}");
    assert!(closing < Duration::from_secs(4), "closing took {closing:?}; the grace is 1 s");
    for (i, c) in idle.iter_mut().enumerate() {
        let mut byte = [0u8; 1];
        assert_eq!(c.read(&mut byte).unwrap(), 0, "idle client {i}'s connection was ended");
    }
}

/// An event server whose pool could never serve (one buffer: a
/// connection reads into one while its output waits in another) is
/// refused when built, naming the knob, instead of hanging at run time.
#[test]
fn an_event_server_that_could_not_serve_is_refused_when_built() {
    use sockserv::std_adapter::event::{EventOptions, EventTcpServer, Workers};
    use std::num::NonZeroUsize;
    let one = NonZeroUsize::new(1).unwrap();
    let options = EventOptions { max_buffers: one, ..EventOptions::default() };
    let built: Result<EventTcpServer<_>, _> =
        Builder::new().event("127.0.0.1:0", sockserv::service_fn(|_| Nop), options);
    let err = built.err().expect("a one-buffer pool is refused");
    assert_eq!(err.source.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("max_buffers"), "{err}");
    let two = NonZeroUsize::new(2).unwrap();
    let options =
        EventOptions { max_buffers: two, workers: Workers::Count(two), ..EventOptions::default() };
    let built: EventTcpServer<_> =
        Builder::new().event("127.0.0.1:0", sockserv::service_fn(|_| Nop), options).unwrap();
    assert_eq!(built.workers(), 2);
    assert!(Workers::PerCpu.loops() >= 1);
}

/// What a service's `handle_error` was told.
#[derive(Clone, Default)]
struct Told(std::sync::Arc<std::sync::Mutex<Vec<(bool, sockserv::logging::Level, String)>>>);

impl sockserv::Service<sockserv::std_adapter::Address> for Told {
    type Handler = util::RecHandler;
    fn handler(&self, client: &sockserv::std_adapter::Address) -> util::RecHandler {
        sockserv::Service::handler(&Recorder::new(Behaviour::Echo), client)
    }
    fn handle_error(&self, _: &sockserv::std_adapter::Address, error: &sockserv::RequestError<'_>) {
        let told = (error.is_peer_gone(), error.level(), error.to_string());
        self.0.lock().unwrap().push(told);
    }
}

/// A client that resets its connection while a blocking handler reads is
/// reported as the peer going away (debug level, as in event mode), not as
/// a handler error (it printed an error line).
#[test]
fn a_peer_reset_in_a_blocking_handler_is_reported_at_debug_level() {
    for threading in [false, true] {
        let told = Told::default();
        let mut server: sockserv::std_adapter::StreamServer<Told, sockserv::std_adapter::Strategy> =
            if threading {
                Builder::new().dispatch(sockserv::std_adapter::Threading::new().into())
            } else {
                Builder::new().dispatch(sockserv::std_adapter::Sequential::new().into())
            }
            .stream("127.0.0.1:0", told.clone())
            .unwrap();
        let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
        let stop = server.shutdown_handle();
        let t = thread::spawn(move || server.serve_forever(Duration::from_millis(100)));
        let mut c = TcpStream::connect(a).unwrap();
        c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        c.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).unwrap();
        // Linger 0: close sends a reset, which the handler's read meets.
        socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
        drop(c);
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        while told.0.lock().unwrap().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        stop.shutdown().unwrap();
        t.join().unwrap().unwrap();
        let lines = told.0.lock().unwrap().clone();
        let Some((peer_gone, level, text)) = lines.first() else { panic!("nothing reported") };
        assert!(*peer_gone, "threading {threading}: {text}");
        assert_eq!(*level, sockserv::logging::Level::Debug, "threading {threading}: {text}");
        assert!(text.contains("ConnectionReset"), "{text}");
    }
}
