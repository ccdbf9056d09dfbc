//! Connection limits applied before accept, with the echo example as a
//! real process and std clients: at `--max-connections` the next client's
//! connect succeeds (the kernel's backlog) but it is neither accepted nor
//! served until a connection closes; the server does not spin meanwhile.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use util::echo::{echo_cmd, wait_deadline};
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

fn start(mode: &str, cap: &str) -> (std::process::Child, SocketAddr) {
    let mut child = echo_cmd(&["--mode", mode, "--addr", "127.0.0.1:0", "--max-connections", cap])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let addr = line.trim_end().strip_prefix("listening on ").expect("the first line").parse();
    thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, addr.unwrap())
}

/// Kills the server's process group if the test fails half-way.
struct KillGroupOnPanic(i32);

impl Drop for KillGroupOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            // SAFETY: kill(2) on the group of our own child.
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
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
    let (mut child, addr) = start(mode, "2");
    let pgid = child.id() as i32;
    let _guard = KillGroupOnPanic(pgid);
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
    drop(held);
    drop(waiting);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_deadline(&mut child, Duration::from_secs(10)).expect("echo exits");
    assert!(status.success(), "{mode}: {status:?}");
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
