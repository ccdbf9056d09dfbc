//! Connection limits applied before accept, with the echo example as a
//! real process and std clients: at `--max-connections` the next client's
//! connect succeeds (the kernel's backlog) but it is neither accepted nor
//! served until a connection closes; the server does not spin meanwhile.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use util::echo::Server;
use util::procs::group_cpu;

fn echo_once(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    assert_eq!(got, msg);
    Ok(())
}

/// How many connections wait in the accept queue of the listener on
/// `port` (`/proc/net/tcp`: a LISTEN socket's rx_queue is its backlog).
fn accept_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f[1].rsplit(':').next().map(|p| u16::from_str_radix(p, 16).unwrap());
        if local_port == Some(port) && f[3] == "0A" {
            let rx = f[4].split(':').nth(1).unwrap();
            return usize::from_str_radix(rx, 16).unwrap();
        }
    }
    panic!("no listener on port {port}");
}

/// The warnings that a cap was reached, in what the server wrote on stderr.
fn cap_warnings(server: &Server) -> usize {
    server.stderr_text().matches("connection cap reached:").count()
}

/// Waits (up to 10 s) until the server has warned `n` times.
fn wait_for_warnings(server: &Server, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cap_warnings(server) < n {
        assert!(Instant::now() < deadline, "{what}: no warning {n}: {}", server.stderr_text());
        thread::sleep(Duration::from_millis(20));
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Two clients fill a cap of two; two more connect and wait unaccepted;
/// the server uses (almost) no CPU at the cap; closing one lets the next in.
fn waits_at_the_cap(mode: &str) {
    let server = Server::start_with("tcp", mode, "127.0.0.1:0", &["--max-connections", "2"]);
    let addr = server.inet();
    let pgid = server.pid();
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    for s in &mut held {
        echo_once(s, b"served").unwrap();
    }
    let mut waiting: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    for s in &mut waiting {
        s.write_all(b"waiting").unwrap();
    }
    // Not served, not refused: nothing arrives, no EOF.
    let w = &mut waiting[0];
    w.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 16];
    match w.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{mode}: a client past the cap got {other:?} instead of waiting"),
    }
    assert_eq!(accept_queue(addr.port()), 2, "{mode}: both wait in the backlog, unaccepted");
    // No spin at the cap.
    let cpu = group_cpu(pgid);
    thread::sleep(Duration::from_secs(1));
    let used = group_cpu(pgid) - cpu;
    assert!(used < Duration::from_millis(100), "{mode}: {used:?} of CPU in 1 s at the cap");
    eprintln!("{mode}: {used:?} of CPU in 1 s at the cap");
    // The server said so, once (not once per turn of its loop).
    wait_for_warnings(&server, 1, mode);
    assert_eq!(cap_warnings(&server), 1, "{mode}: {}", server.stderr_text());
    // One closes: the first waiting client is accepted and served.
    drop(held.remove(0));
    let started = Instant::now();
    let w = &mut waiting[0];
    w.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = [0u8; 7];
    w.read_exact(&mut got).unwrap_or_else(|e| panic!("{mode}: not served after a close: {e}"));
    assert_eq!(&got, b"waiting");
    eprintln!("{mode}: served {:?} after a slot freed", started.elapsed());
    assert_eq!(accept_queue(addr.port()), 1, "{mode}: the other still waits");
    // Still one episode: the queue moved but never emptied.
    assert_eq!(cap_warnings(&server), 1, "{mode}: {}", server.stderr_text());
    drop(held);
    drop(waiting);
    // Everyone gone; a second episode is a second warning.
    thread::sleep(Duration::from_millis(300));
    let mut again: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for s in &mut again[..2] {
        echo_once(s, b"again").unwrap();
    }
    wait_for_warnings(&server, 2, mode);
    drop(again);
    thread::sleep(Duration::from_millis(300));
    let (status, _, stderr) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{mode}: {status:?}");
    assert_eq!(stderr.matches("connection cap reached:").count(), 2, "{mode}: {stderr}");
    assert!(stderr.contains("echo: connection cap reached 2 times"), "{mode}: {stderr}");
}

/// The pool at its cap (its workers busy and its queue full) warns once
/// per episode too.
#[test]
fn pool_reports_each_episode_at_its_cap_once() {
    // One worker, one queued: the third client waits in the backlog.
    let server = Server::start_with("tcp", "threading", "127.0.0.1:0", &["--pool", "1"]);
    let addr = server.inet();
    for round in 1..=2 {
        let mut held = connect(addr);
        echo_once(&mut held, b"served").unwrap();
        let mut waiting: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
        for s in &mut waiting {
            s.write_all(b"waiting").unwrap();
        }
        wait_for_warnings(&server, round, "pool");
        thread::sleep(Duration::from_secs(1));
        assert_eq!(cap_warnings(&server), round, "pool: {}", server.stderr_text());
        drop(held);
        // Each is served (one worker, one at a time): still the same
        // episode. The clients read at once, each on its own thread: the
        // loop and an idle worker both accept, so the order in which the
        // one worker takes them is not the order they connected.
        let served: Vec<thread::JoinHandle<()>> = waiting
            .drain(..)
            .map(|mut s| {
                thread::spawn(move || {
                    let mut got = [0u8; 7];
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.read_exact(&mut got).unwrap();
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    assert_eq!(s.read(&mut got).unwrap(), 0);
                })
            })
            .collect();
        for client in served {
            client.join().expect("a waiting client was not served");
        }
        assert_eq!(cap_warnings(&server), round, "pool: {}", server.stderr_text());
        thread::sleep(Duration::from_millis(300));
    }
    let (status, _, stderr) = server.stop(libc::SIGTERM);
    assert!(status.success(), "pool: {status:?}");
    assert!(stderr.contains("echo: connection cap reached 2 times"), "pool: {stderr}");
}

#[test]
fn threading_waits_at_max_connections() {
    waits_at_the_cap("threading");
}

#[test]
fn forking_waits_at_max_connections() {
    waits_at_the_cap("forking");
}

#[test]
fn event_mode_waits_at_max_connections() {
    waits_at_the_cap("event");
}
