//! Hostile clients against the echo example as a real process (issue 10):
//! none may stall the server, make it spin, or make it grow.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use util::echo::{STOP_CONTRACT, Server};
use util::procs::{group, group_cpu, group_threads};
use util::{TEST_STR, unix_path};

/// How long a served client may wait for its answer while a hostile one
/// floods the server.
const SERVED_WITHIN: Duration = Duration::from_secs(3);

/// A Unix datagram client bound to a path of its own (removed on drop).
struct UnixClient {
    socket: UnixDatagram,
    path: PathBuf,
}

impl UnixClient {
    fn bind(tag: &str) -> Self {
        let path = unix_path(tag);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(SERVED_WITHIN)).unwrap();
        socket.set_write_timeout(Some(SERVED_WITHIN)).unwrap();
        Self { socket, path }
    }

    /// One datagram there and its answer back, or a panic naming `what`.
    fn echo(&self, server: &Path, what: &str) {
        self.socket.send_to(TEST_STR, server).unwrap_or_else(|e| panic!("{what}: send: {e}"));
        let mut buf = [0u8; 64];
        let n = self.socket.recv(&mut buf).unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_eq!(&buf[..n], TEST_STR, "{what}");
    }
}

impl Drop for UnixClient {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends up to `burst` datagrams without waiting; how many went.
fn flood(socket: &UnixDatagram, to: &Path, burst: usize) -> usize {
    let payload = [b'x'; 512];
    for sent in 0..burst {
        match socket.send_to(&payload, to) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return sent,
            Err(e) => panic!("the hostile client's send: {e}"),
        }
    }
    burst
}

/// A Unix-datagram client that never reads its replies (its receive queue
/// fills, then the server's `sendto` fails with EAGAIN) floods the server
/// for two seconds while two others keep echoing: they are served, the
/// server's threads and children stay bounded, it is idle (no spin) once
/// the flood stops, and each dropped reply is reported.
fn a_non_reader_cannot_stall(mode: &str) {
    let mut server = Server::start("unix-dgram", mode, "");
    let to = server.path().to_owned();
    let pgid = server.pid();
    let hostile = UnixClient::bind("non-reader");
    hostile.socket.set_nonblocking(true).unwrap();
    let good = [UnixClient::bind("good-1"), UnixClient::bind("good-2")];
    let (mut flooded, mut max_threads, mut max_procs) = (0, 0, 0);
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        flooded += flood(&hostile.socket, &to, 50);
        for (i, g) in good.iter().enumerate() {
            g.echo(&to, &format!("{mode}: client {i} during the flood ({flooded} sent)"));
        }
        max_threads = max_threads.max(group_threads(pgid));
        max_procs = max_procs.max(group(pgid).len());
    }
    // The hostile queue stays full; the server has nothing to do.
    thread::sleep(Duration::from_millis(300));
    let before = group_cpu(pgid);
    thread::sleep(Duration::from_secs(1));
    let idle_cpu = group_cpu(pgid).saturating_sub(before);
    assert!(idle_cpu < Duration::from_millis(250), "{mode}: {idle_cpu:?} of CPU in 1 s idle");
    // Bounded while it lasted (a thread or child stuck per datagram
    // would reach hundreds), and back to one process and thread after.
    assert!(max_threads <= 64, "{mode}: {max_threads} threads during the flood");
    assert!(max_procs <= 41, "{mode}: {max_procs} processes during the flood");
    assert_eq!(group_threads(pgid), 1, "{mode}: threads left after the flood");
    assert_eq!(group(pgid).len(), 1, "{mode}: processes left after the flood");
    assert!(flooded > 200, "{mode}: the flood sent only {flooded} datagrams");
    good[0].echo(&to, &format!("{mode}: after the flood"));
    server.assert_alive();
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("reply could not leave without waiting"),
        "{mode}: the dropped replies are reported; stderr: {}",
        &stderr[..stderr.len().min(2000)]
    );
    server.stop_cleanly(libc::SIGTERM);
}

#[test]
fn a_unix_datagram_non_reader_cannot_stall_sync() {
    a_non_reader_cannot_stall("sync");
}

#[test]
fn a_unix_datagram_non_reader_cannot_stall_threading() {
    a_non_reader_cannot_stall("threading");
}

#[test]
fn a_unix_datagram_non_reader_cannot_stall_forking() {
    a_non_reader_cannot_stall("forking");
}

#[test]
fn a_unix_datagram_non_reader_cannot_stall_event() {
    a_non_reader_cannot_stall("event");
}

/// Issue 10: 50 idle TCP clients against `echo --mode forking` (40
/// children at the limit, ten more waiting for a slot), then SIGTERM: the
/// server exits 0 within the stop contract (the wait for a slot sees the
/// stop) and no process of its group is left (the children are ended
/// after their grace, not left serving).
#[test]
fn a_forking_echo_leaves_no_process_behind() {
    let mut server = Server::start("tcp", "forking", "127.0.0.1:0");
    let a = server.inet();
    let pgid = server.pid();
    let mut clients = Vec::new();
    for i in 0..50 {
        let mut c = std::net::TcpStream::connect(a).unwrap();
        c.set_read_timeout(Some(SERVED_WITHIN)).unwrap();
        if i < 40 {
            c.write_all(TEST_STR).unwrap();
            let mut line = vec![0u8; TEST_STR.len()];
            c.read_exact(&mut line).unwrap();
            assert_eq!(line, TEST_STR, "client {i}");
        }
        clients.push(c);
    }
    assert_eq!(group(pgid).len(), 41, "the server and its 40 children");
    // (The guard kills the whole group when dropped: look before that.)
    let (status, took) = server.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", server.stderr_text());
    assert!(took <= STOP_CONTRACT, "the server took {took:?} to stop");
    let left: Vec<_> = group(pgid).iter().map(|p| p.pid).collect();
    assert!(left.is_empty(), "processes of the server's group left after it exited: {left:?}");
    // The served clients see their connection end.
    let mut buf = [0u8; 16];
    for (i, c) in clients.iter_mut().enumerate() {
        match c.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("client {i}: {other:?} after the server exited"),
        }
    }
}

/// Issue 10: forked children report at the same moment (40 datagrams too
/// large for the server's 64 KiB buffer at once, five times: each child
/// reports a warning): every report is a whole line of its own
/// (`eprintln!` wrote one in up to 29 pieces: 66 of 500 lines spliced).
/// (Connection resets, the trigger this test used first, are reported at
/// debug level now, so they print nothing.)
#[test]
fn reports_of_forked_children_never_splice() {
    let mut server = Server::start("unix-dgram", "forking", "");
    let to = server.path().to_owned();
    let too_large = vec![b'x'; 100_000];
    let rounds = 5;
    for _ in 0..rounds {
        let clients: Vec<_> = (0..40).map(|_| UnixDatagram::unbound().unwrap()).collect();
        for c in &clients {
            assert_eq!(c.send_to(&too_large, &to).unwrap(), too_large.len());
        }
        thread::sleep(Duration::from_millis(200));
    }
    let expected = rounds * 40;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stderr_text().lines().count() < expected && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let stderr = server.stderr_text();
    let whole = |l: &&str| {
        l.starts_with("sockserv: request from ")
            && l.matches("sockserv:").count() == 1
            && l.matches("100000").count() == 1
            && l.trim_end().ends_with("dropped")
    };
    let lines: Vec<&str> = stderr.lines().collect();
    let spliced: Vec<_> = lines.iter().filter(|l| !whole(l)).collect();
    assert!(spliced.is_empty(), "{} of {} lines spliced: {spliced:#?}", spliced.len(), lines.len());
    assert_eq!(lines.len(), expected, "one report per datagram");
    server.assert_alive();
    server.stop_cleanly(libc::SIGTERM);
}
