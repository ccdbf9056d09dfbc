//! `ShareWriter` on real sockets: a writer kept past its handler, and one
//! whose peer never reads.

use std::io::Read as _;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sockserv::embedded_io::Write;
use sockserv::std_adapter::{Builder, Close, ConnWriter, Threading};
use sockserv::{ShareWriter, StreamHandler, service_fn};

/// Hands its connection's writer to the test, then waits for `release`
/// (or returns at once).
struct Give(mpsc::Sender<ConnWriter>, Option<mpsc::Receiver<()>>);

impl StreamHandler<sockserv::std_adapter::Conn> for Give {
    type Error = std::io::Error;
    fn handle(&mut self, stream: &mut sockserv::std_adapter::Conn) -> std::io::Result<()> {
        self.0.send(stream.share_writer()?).unwrap();
        if let Some(release) = &self.1 {
            let _ = release.recv();
        }
        Ok(())
    }
}

/// A writer reaches the client while its handler runs, and fails (an
/// error, not a SIGPIPE) once the handler returned and the server closed
/// the connection.
#[test]
fn a_writer_reaches_its_client_and_fails_after_the_close() {
    let (tx, rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let release = std::sync::Arc::new(std::sync::Mutex::new(Some(release_rx)));
    let service = service_fn(move |_| Give(tx.clone(), release.lock().unwrap().take()));
    let mut server =
        Builder::new().dispatch(Threading::new()).stream("127.0.0.1:0", service).unwrap();
    let addr = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve_forever(Duration::from_millis(50)));
    let mut client = TcpStream::connect(&addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    writer.write_all(b"from elsewhere\n").unwrap();
    let mut got = [0; 15];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from elsewhere\n");
    release_tx.send(()).unwrap();
    // The handler returns; the server shuts the socket down.
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        match writer.write_all(b"x") {
            Err(e) => break e,
            Ok(()) => assert!(Instant::now() < deadline, "writes still succeed"),
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    stop.shutdown().unwrap();
    serving.join().unwrap().unwrap();
}

/// A peer that never reads holds a writer at most the server's
/// `stream_timeout`: the write fails with `TimedOut`.
#[test]
fn a_writer_to_a_peer_that_never_reads_times_out() {
    let (tx, rx) = mpsc::channel();
    let (_release_tx, release_rx) = mpsc::channel::<()>();
    let release = std::sync::Arc::new(std::sync::Mutex::new(Some(release_rx)));
    let service = service_fn(move |_| Give(tx.clone(), release.lock().unwrap().take()));
    let mut server = Builder::new()
        .stream_timeout(Some(Duration::from_millis(300)))
        .dispatch(Threading::new().close(Close::Leave))
        .stream("127.0.0.1:0", service)
        .unwrap();
    let addr = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve_forever(Duration::from_millis(50)));
    let _client = TcpStream::connect(&addr).unwrap(); // never reads
    let mut writer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let error = loop {
        if let Err(e) = writer.write_all(&chunk) {
            break e;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the writer never gave up");
    };
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
    stop.shutdown().unwrap();
    serving.join().unwrap().unwrap();
}
