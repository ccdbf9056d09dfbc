//! Hostile HTTP clients against a running server (shared by
//! tests/http_blocking.rs and tests/http_event.rs), all at once, while a
//! well-behaved client keeps asking on one keep-alive connection: slowloris
//! heads, endless chunked bodies, bodies over the limit, pipelined floods
//! from clients that never read, smuggling attempts. Each hostile client
//! records its outcome; the prober records its worst latency; the
//! process's CPU time over the whole run says whether anything spun.
//!
//! The server must answer `GET /hello` with a body ending `hello /hello\n`
//! and `POST /count` by reading the body.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// What one hostile client saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which kind of client.
    pub kind: &'static str,
    /// The first line of the answer, if one came ("" if none).
    pub status: String,
    /// How it ended: "closed" (EOF), "reset", "blocked" (the server stopped
    /// reading), "timeout" (nothing happened within the bound).
    pub end: &'static str,
    /// From connect to that end.
    pub after: Duration,
    /// Request bytes it got the server to take.
    pub sent: u64,
}

/// The run's results.
#[derive(Debug)]
pub struct Report {
    /// Every hostile client's outcome.
    pub seen: Vec<Seen>,
    /// The prober's requests and worst latency.
    pub probes: usize,
    /// The worst time the prober waited for an answer.
    pub worst: Duration,
    /// The server threads' CPU time (user + system) over the run.
    pub cpu: Duration,
    /// The run's wall time.
    pub wall: Duration,
}

/// CPU time (utime + stime) of each live thread of this process whose
/// name starts with `prefix` (the server's: other tests of the same
/// binary run beside this one), by thread id.
pub fn threads_cpu(prefix: &str) -> std::collections::HashMap<u64, Duration> {
    let mut out = std::collections::HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        if !comm.starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let tid = task.file_name().to_string_lossy().parse().unwrap();
        // CLK_TCK is 100 on Linux.
        out.insert(tid, Duration::from_millis(ticks * 10));
    }
    out
}

/// CPU the threads named `prefix…` used since `before` (threads that
/// ended meanwhile are not counted: a spinning thread does not end).
fn cpu_since(prefix: &str, before: &std::collections::HashMap<u64, Duration>) -> Duration {
    threads_cpu(prefix)
        .into_iter()
        .map(|(tid, t)| t.saturating_sub(before.get(&tid).copied().unwrap_or_default()))
        .sum()
}

fn first_line(data: &[u8]) -> String {
    String::from_utf8_lossy(data).lines().next().unwrap_or("").to_owned()
}

/// Reads until EOF, an error or `bound`: (bytes, how it ended).
fn read_end(s: &mut TcpStream, bound: Duration) -> (Vec<u8>, &'static str) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    while start.elapsed() < bound {
        match s.read(&mut buf) {
            Ok(0) => return (got, "closed"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, "reset"),
        }
    }
    (got, "timeout")
}

/// A head sent a byte every 100 ms, never finished.
fn slowloris(addr: &str, bound: Duration) -> Seen {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    let mut sent = 0;
    let mut got = Vec::new();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 1024];
    let end = loop {
        if start.elapsed() > bound {
            break "timeout";
        }
        match s.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                continue;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break "reset",
        }
        if !got.is_empty() {
            continue;
        }
        match s.write_all(b"a") {
            Ok(()) => sent += 1,
            Err(_) => break "reset",
        }
    };
    Seen { kind: "slowloris", status: first_line(&got), end, after: start.elapsed(), sent }
}

/// A chunked body that never ends, sent as fast as the server takes it.
fn endless_chunked(addr: &str, bound: Duration) -> Seen {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_w = stop.clone();
    let writer = thread::spawn(move || {
        let mut chunk = b"1000\r\n".to_vec();
        chunk.resize(6 + 4096, b'x');
        chunk.extend_from_slice(b"\r\n");
        let mut sent = 0u64;
        while !stop_w.load(Ordering::Relaxed) {
            match w.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => break,
            }
        }
        sent
    });
    let (got, end) = read_end(&mut s, bound);
    stop.store(true, Ordering::Relaxed);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let sent = writer.join().unwrap();
    Seen { kind: "endless chunked", status: first_line(&got), end, after: start.elapsed(), sent }
}

/// A `Content-Length` over the limit, its body following.
fn over_limit(addr: &str, bound: Duration) -> Seen {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n").unwrap();
    let _ = s.write_all(&[b'y'; 65536]);
    let (got, end) = read_end(&mut s, bound);
    Seen { kind: "over the limit", status: first_line(&got), end, after: start.elapsed(), sent: 0 }
}

/// Pipelined requests written until the server stops taking them (it must,
/// as their answers cannot leave); never reads. Held open for `hold`.
fn flood(addr: &str, hold: Duration) -> Seen {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut batch = Vec::new();
    for _ in 0..256 {
        batch.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let mut sent = 0u64;
    let end = loop {
        if sent > 256 << 20 {
            break "never blocked";
        }
        match s.write(&batch) {
            Ok(n) => sent += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break "blocked";
            }
            Err(_) => break "reset",
        }
    };
    let after = start.elapsed();
    thread::sleep(hold.saturating_sub(after));
    Seen { kind: "flood", status: String::new(), end, after, sent }
}

/// Framings two parsers could read two ways.
pub const SMUGGLING: [&[u8]; 6] = [
    b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
    b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST /count HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
];

fn smuggle(addr: &str, request: &'static [u8], bound: Duration) -> Seen {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    let (got, end) = read_end(&mut s, bound);
    // Nothing after the refusal: the smuggled request is not answered.
    let answers = String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count();
    let status = if answers == 1 { first_line(&got) } else { format!("{answers} answers") };
    Seen { kind: "smuggling", status, end, after: start.elapsed(), sent: 0 }
}

/// Asks `GET /hello` every 10 ms on one keep-alive connection until
/// `stop`: (requests, worst latency).
fn probe(addr: &str, stop: &AtomicBool) -> (usize, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut n, mut worst) = (0, Duration::ZERO);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"hello /hello\n") {
            let k = s.read(&mut buf).expect("the prober is answered");
            assert!(k > 0, "the prober's connection closed");
            got.extend_from_slice(&buf[..k]);
        }
        worst = worst.max(t.elapsed());
        n += 1;
        thread::sleep(Duration::from_millis(10));
    }
    (n, worst)
}

/// Runs every hostile client at once against `addr` (40 slowloris heads,
/// 3 endless chunked bodies, 3 bodies over the limit, 2 floods held
/// `head_timeout + 2 s`, the smuggling forms) while probing; returns when
/// all have ended (each within `head_timeout + 8 s`).
/// `server_threads`: the name prefix of the server's threads (15 bytes
/// at most: Linux keeps no more), whose CPU time is measured.
pub fn run(addr: &str, head_timeout: Duration, server_threads: &str) -> Report {
    let bound = head_timeout + Duration::from_secs(8);
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = threads_cpu(server_threads);
    let t0 = Instant::now();
    let prober = {
        let (addr, stop) = (addr.to_owned(), stop.clone());
        thread::spawn(move || probe(&addr, &stop))
    };
    thread::sleep(Duration::from_millis(50));
    let mut clients: Vec<thread::JoinHandle<Seen>> = Vec::new();
    let mut spawn = |f: Box<dyn FnOnce() -> Seen + Send>| clients.push(thread::spawn(f));
    for _ in 0..40 {
        let a = addr.to_owned();
        spawn(Box::new(move || slowloris(&a, bound)));
    }
    for _ in 0..3 {
        let a = addr.to_owned();
        spawn(Box::new(move || endless_chunked(&a, bound)));
        let a = addr.to_owned();
        spawn(Box::new(move || over_limit(&a, bound)));
    }
    for _ in 0..2 {
        let a = addr.to_owned();
        spawn(Box::new(move || flood(&a, head_timeout + Duration::from_secs(2))));
    }
    for request in SMUGGLING {
        let a = addr.to_owned();
        spawn(Box::new(move || smuggle(&a, request, bound)));
    }
    let seen: Vec<Seen> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let (probes, worst) = prober.join().unwrap();
    Report { seen, probes, worst, cpu: cpu_since(server_threads, &cpu0), wall: t0.elapsed() }
}

/// The outcomes every server must give (see [`run`]); prints the report.
pub fn check(report: &Report, head_timeout: Duration) {
    eprintln!(
        "prober: {} requests, worst {:?}; CPU {:?} over {:?}",
        report.probes, report.worst, report.cpu, report.wall
    );
    for s in &report.seen {
        eprintln!("{s:?}");
    }
    let of = |kind| report.seen.iter().filter(move |s| s.kind == kind);
    for s in of("slowloris") {
        // 408 then the close; a reset only if the server closed just as
        // the client sent its next byte (its answer may then be lost).
        assert!(
            (s.status.starts_with("HTTP/1.1 408 ") && s.end == "closed") || s.end == "reset",
            "{s:?}"
        );
        assert!(
            s.after >= head_timeout && s.after < head_timeout + Duration::from_secs(5),
            "{s:?}"
        );
    }
    assert!(of("slowloris").filter(|s| s.status.starts_with("HTTP/1.1 408 ")).count() >= 30);
    for s in of("endless chunked").chain(of("over the limit")) {
        assert!(s.status.starts_with("HTTP/1.1 413 ") || s.end == "reset", "{s:?}");
        assert!(s.end != "timeout", "{s:?}");
    }
    for s in of("flood") {
        assert_eq!(s.end, "blocked", "the server stops reading a client that does not: {s:?}");
        assert!(s.sent < 64 << 20, "{s:?}");
    }
    for s in of("smuggling") {
        assert!(s.status.starts_with("HTTP/1.1 400 ") && s.end == "closed", "{s:?}");
    }
    // Others served meanwhile: 100 ms measured on a quiet machine; the
    // bound is generous for a loaded one.
    assert!(report.probes > 50, "{report:?}");
    assert!(report.worst < Duration::from_secs(2), "worst prober latency {:?}", report.worst);
    // Nothing spins: the server used well under one core over the run.
    assert!(report.cpu < report.wall / 2, "CPU {:?} over {:?}", report.cpu, report.wall);
}
