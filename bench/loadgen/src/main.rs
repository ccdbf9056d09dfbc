//! Closed-loop echo load generator for sockserv's benchmarks.
//!
//! ```text
//! loadgen --addr HOST:PORT [--proto tcp|udp] [--conns N] [--size S]
//!         [--warmup SECS] [--duration SECS] [--churn] [--hold SECS]
//!         [--server-pid PID] [--connect-timeout SECS] [--max-connecting N]
//! ```
//!
//! One thread, one epoll (mio, edge-triggered). Each of N connections
//! sends one S-byte message and waits for all S bytes back, verifying every
//! byte against what it sent, before it sends the next (a closed loop).
//! `--churn`: every request opens a new connection (connect, one echo,
//! close). `--proto udp`: N connected UDP sockets, one datagram out and the
//! same datagram back; a reply missing after 200 ms counts as lost and the
//! slot sends a fresh one. `--hold SECS`: open N connections, echo once on
//! each, then hold them idle and report the server's resident memory.
//!
//! Requests are counted only inside the measuring window (after the
//! warm-up). The latency percentiles include the requests still waiting at
//! the end of the window, with their age then (a lower bound), so clients
//! that a server starves raise p99 instead of dropping out of it. The server's CPU time (utime+stime+cutime+cstime of
//! /proc/PID/stat, so threads and reaped children are included) and this
//! process's own (/proc/self/stat) are read at both ends of the window and
//! divided by the requests done in it. The result is one JSON line on
//! stdout; a human summary goes to stderr.
//!
//! Per request the loop costs one write, one read and a share of one
//! epoll_wait: a reply is read only up to the bytes still expected, so no
//! extra read to see EAGAIN is needed (the next reply is a new edge).
//!
//! `--tls`: every TCP connection speaks TLS (rustls, ring, the same
//! version as sockserv-tls) with SNI `localhost`. The client does not
//! verify the server's certificate or signature (every echoed byte is still
//! compared) and does not resume sessions, so each connection is a full
//! handshake and the client spends its CPU on the key exchange only. A
//! request is one record out; the reply is read until its plaintext is
//! complete (then the socket is read to EAGAIN, since records need not
//! end where the reply does). With `--churn` a connection is: connect,
//! handshake, one echo, close_notify, close.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

struct Opts {
    addr: SocketAddr,
    proto: Proto,
    conns: usize,
    size: usize,
    warmup: f64,
    duration: f64,
    churn: bool,
    hold: Option<f64>,
    server_pid: Option<i32>,
    connect_timeout: f64,
    max_connecting: usize,
    tls: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    eprintln!(
        "usage: loadgen --addr HOST:PORT [--proto tcp|udp] [--conns N] [--size S] [--warmup SECS] \
         [--duration SECS] [--churn] [--hold SECS] [--server-pid PID] [--connect-timeout SECS] \
         [--max-connecting N] [--tls]"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut o = Opts {
        addr: "127.0.0.1:9999".parse().unwrap(),
        proto: Proto::Tcp,
        conns: 1,
        size: 64,
        warmup: 1.0,
        duration: 3.0,
        churn: false,
        hold: None,
        server_pid: None,
        connect_timeout: 30.0,
        max_connecting: usize::MAX,
        tls: false,
    };
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> T {
            v.parse().unwrap_or_else(|_| usage(&format!("bad value for {name}: {v}")))
        }
        match a.as_str() {
            "--addr" => addr = Some(val()),
            "--proto" => {
                o.proto = match val().as_str() {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    p => usage(&format!("unknown proto {p}")),
                }
            }
            "--conns" => o.conns = num(&a, val()),
            "--size" => o.size = num(&a, val()),
            "--warmup" => o.warmup = num(&a, val()),
            "--duration" => o.duration = num(&a, val()),
            "--churn" => o.churn = true,
            "--hold" => o.hold = Some(num(&a, val())),
            "--server-pid" => o.server_pid = Some(num(&a, val())),
            "--connect-timeout" => o.connect_timeout = num(&a, val()),
            "--max-connecting" => o.max_connecting = num(&a, val()),
            "--tls" => o.tls = true,
            "-h" | "--help" => usage("help"),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("--addr is required"));
    o.addr = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut i| i.next())
        .unwrap_or_else(|| usage(&format!("cannot resolve {addr}")));
    if o.conns == 0 || o.size == 0 {
        usage("--conns and --size must be positive");
    }
    if o.proto == Proto::Udp && o.size > 65507 {
        usage("--size too large for a UDP datagram");
    }
    o
}

// ---------------------------------------------------------------- /proc

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime+stime+cutime+cstime of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14..=17 of proc(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11..15)?.iter().map(|x| x.parse::<u64>().unwrap_or(0)).sum();
    Some(ticks as f64 / clk_tck())
}

/// The CPUs a process may run on (`Cpus_allowed_list` of its status).
fn allowed_cpus(pid: &str) -> Vec<usize> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let Some(list) = s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) else {
        return Vec::new();
    };
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let mut ends = part.split('-').filter_map(|x| x.trim().parse::<usize>().ok());
        if let Some(a) = ends.next() {
            cpus.extend(a..=ends.next().unwrap_or(a));
        }
    }
    cpus
}

/// Busy time (all but idle and iowait) of the given CPUs, from
/// /proc/stat, in seconds: on the CPUs the server and this process run on,
/// whatever is not theirs is someone else's work competing with them.
fn busy_seconds(cpus: &[usize]) -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut busy = 0u64;
    for line in s.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(n) = name.strip_prefix("cpu").and_then(|n| n.parse::<usize>().ok()) else { continue };
        if !cpus.contains(&n) {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest is in user)
        busy += f.take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v.parse::<u64>().unwrap_or(0)).sum::<u64>();
    }
    busy as f64 / clk_tck()
}

/// The CPUs of this process and of the server.
fn watched_cpus(server: Option<&str>) -> Vec<usize> {
    let mut c = allowed_cpus("self");
    if let Some(p) = server {
        c.extend(allowed_cpus(p));
    }
    c.sort_unstable();
    c.dedup();
    c
}

/// utime alone (user space) of this process, in seconds.
fn self_user_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(i) = s.rfind(')') else { return 0.0 };
    let f: Vec<&str> = s[i + 2..].split_whitespace().collect();
    f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0) as f64 / clk_tck()
}

/// Resident set (VmRSS) in KiB.
fn rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn raise_nofile() {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

// ---------------------------------------------------------------- payload

/// A pseudo-random byte pattern; request `seq` of slot `id` sends the
/// `size` bytes starting at `offset(id, seq)`, so consecutive requests
/// differ and a reply meant for another request does not verify.
struct Pattern {
    bytes: Vec<u8>,
    size: usize,
}

impl Pattern {
    fn new(size: usize) -> Self {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let bytes = (0..size + 256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        Self { bytes, size }
    }
    fn offset(id: usize, seq: u64) -> usize {
        ((id as u64).wrapping_mul(7).wrapping_add(seq.wrapping_mul(13)) % 251) as usize
    }
    fn msg(&self, id: usize, seq: u64) -> &[u8] {
        let o = Self::offset(id, seq);
        &self.bytes[o..o + self.size]
    }
}

// ---------------------------------------------------------------- stats

#[derive(Default)]
struct Stats {
    requests: u64,
    latencies_ns: Vec<u64>,
    errors: u64,
    mismatches: u64,
    lost: u64,
    connect_ns: Vec<u64>,
    /// Requests still outstanding at the end of the window, counted in the
    /// latencies with their age then.
    censored: u64,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn jnum(x: f64) -> String {
    if x.is_finite() { format!("{x:.3}") } else { "null".into() }
}

// ---------------------------------------------------------------- TCP

#[derive(PartialEq, Eq, Clone, Copy)]
enum St {
    Idle,
    Connecting,
    Handshaking,
    Sending,
    Receiving,
}

struct Slot {
    sock: Option<TcpStream>,
    tls: Option<rustls::ClientConnection>,
    st: St,
    seq: u64,
    sent: usize,
    recvd: usize,
    t_connect: Instant,
    t_req: Instant,
    done: u64,
    retry_at: Option<Instant>,
}

struct Tcp<'a> {
    o: &'a Opts,
    poll: Poll,
    pat: Pattern,
    buf: Vec<u8>,
    slots: Vec<Slot>,
    measuring: bool,
    stats: Stats,
    connecting: usize,
    pending_connect: Vec<usize>,
    hold_done: usize,
    src: u32,
    draining: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A non-blocking connect. To an IPv4 loopback server, each connection
/// comes from the next of 250 source addresses 127.0.0.2-251 (bound with
/// IP_BIND_ADDRESS_NO_PORT, the port still chosen at connect): with
/// churn, the client's TIME_WAIT sockets then spread over 250x the tuple
/// space and connect() does not spend its time searching the ephemeral
/// range for a free port (__inet_hash_connect was 28% of the churn
/// profile from a single source address).
fn connect(addr: SocketAddr, n: u32) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else { return TcpStream::connect(addr) };
    if !v4.ip().is_loopback() {
        return TcpStream::connect(addr);
    }
    // SAFETY: plain socket calls on a descriptor this function owns; it is
    // handed to TcpStream (which closes it) or closed on error.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let close_err = |fd| {
            let e = io::Error::last_os_error();
            libc::close(fd);
            Err(e)
        };
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut src: libc::sockaddr_in = std::mem::zeroed();
        src.sin_family = libc::AF_INET as libc::sa_family_t;
        src.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 2 + (n % 250) as u8]).to_be();
        if libc::bind(
            fd,
            (&src as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
        {
            return close_err(fd);
        }
        let mut dst: libc::sockaddr_in = std::mem::zeroed();
        dst.sin_family = libc::AF_INET as libc::sa_family_t;
        dst.sin_port = v4.port().to_be();
        dst.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        if libc::connect(
            fd,
            (&dst as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
        {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                libc::close(fd);
                return Err(e);
            }
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

impl<'a> Tcp<'a> {
    fn open(&mut self, i: usize, now: Instant) {
        if self.connecting >= self.o.max_connecting {
            self.pending_connect.push(i);
            return;
        }
        self.src = self.src.wrapping_add(1);
        match connect(self.o.addr, self.src) {
            Ok(mut s) => {
                if let Err(e) = self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    eprintln!("loadgen: register: {e}");
                    self.fail(i, now);
                    return;
                }
                let sl = &mut self.slots[i];
                sl.sock = Some(s);
                sl.st = St::Connecting;
                sl.t_connect = now;
                sl.t_req = now;
                self.connecting += 1;
            }
            Err(_) => self.fail(i, now),
        }
    }

    /// Counts an error, closes the slot's socket and retries 10 ms later.
    fn fail(&mut self, i: usize, now: Instant) {
        if self.measuring {
            self.stats.errors += 1;
        }
        let sl = &mut self.slots[i];
        if sl.st == St::Connecting {
            self.connecting -= 1;
        }
        if let Some(mut s) = sl.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        sl.tls = None;
        sl.st = St::Idle;
        if !self.draining {
            sl.retry_at = Some(now + Duration::from_millis(10));
        }
    }

    fn begin_request(&mut self, i: usize, now: Instant) {
        let sl = &mut self.slots[i];
        sl.st = St::Sending;
        sl.sent = 0;
        sl.recvd = 0;
        if !self.o.churn {
            sl.t_req = now;
        }
    }

    /// The reply of slot `i` is complete: count it, then the next request
    /// (state Sending), or a new connection (churn), or idle (hold, drain).
    fn complete(&mut self, i: usize) {
        let now = Instant::now();
        let sl = &mut self.slots[i];
        sl.seq += 1;
        if self.measuring {
            self.stats.requests += 1;
            sl.done += 1;
            self.stats.latencies_ns.push((now - sl.t_req).as_nanos() as u64);
        }
        if self.o.hold.is_some() || self.draining {
            sl.st = St::Idle;
            self.hold_done += 1;
            return;
        }
        if self.o.churn {
            let mut s = sl.sock.take().unwrap();
            if let Some(mut tls) = sl.tls.take() {
                // close_notify, best effort (one write).
                tls.send_close_notify();
                let _ = tls.write_tls(&mut s);
            }
            let _ = self.poll.registry().deregister(&mut s);
            drop(s);
            sl.st = St::Idle;
            self.open(i, now);
            // A fresh connect completes on a writable edge.
            return;
        }
        self.begin_request(i, now);
    }

    /// Advances slot `i` as far as it goes without blocking.
    fn drive(&mut self, i: usize) {
        loop {
            let st = self.slots[i].st;
            match st {
                St::Idle => return,
                St::Connecting => {
                    let sl = &mut self.slots[i];
                    let s = sl.sock.as_ref().unwrap();
                    match s.take_error() {
                        Ok(None) => {}
                        _ => return self.fail(i, Instant::now()),
                    }
                    match s.peer_addr() {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                        Err(_) => return self.fail(i, Instant::now()),
                    }
                    let _ = s.set_nodelay(true);
                    let now = Instant::now();
                    self.connecting -= 1;
                    if self.measuring || self.o.hold.is_some() {
                        self.stats.connect_ns.push((now - sl.t_connect).as_nanos() as u64);
                    }
                    if let Some(j) = self.pending_connect.pop() {
                        self.open(j, now);
                    }
                    if let Some(config) = &self.tls {
                        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                        let mut c = rustls::ClientConnection::new(Arc::clone(config), name)
                            .expect("TLS client");
                        // A whole request is queued at once (1 MiB included).
                        c.set_buffer_limit(None);
                        self.slots[i].tls = Some(c);
                        self.slots[i].st = St::Handshaking;
                    } else {
                        self.begin_request(i, now);
                    }
                }
                St::Handshaking => {
                    let sl = &mut self.slots[i];
                    let (sock, tls) = (sl.sock.as_mut().unwrap(), sl.tls.as_mut().unwrap());
                    match handshake_step(tls, sock) {
                        Ok(true) => self.begin_request(i, Instant::now()),
                        Ok(false) => return,
                        Err(_) => return self.fail(i, Instant::now()),
                    }
                }
                St::Sending | St::Receiving if self.tls.is_some() => {
                    let size = self.pat.size;
                    let sl = &mut self.slots[i];
                    let (sock, tls) = (sl.sock.as_mut().unwrap(), sl.tls.as_mut().unwrap());
                    if sl.st == St::Sending {
                        let msg = self.pat.msg(i, sl.seq);
                        tls.writer().write_all(msg).expect("unlimited buffer");
                        sl.sent = msg.len();
                        sl.st = St::Receiving;
                    }
                    let o = Pattern::offset(i, sl.seq);
                    let expect = &self.pat.bytes[o..o + size];
                    match echo_step(tls, sock, &mut self.buf, expect, &mut sl.recvd) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            if e.kind() == io::ErrorKind::InvalidData && self.measuring {
                                self.stats.mismatches += 1;
                            }
                            return self.fail(i, Instant::now());
                        }
                    }
                    self.complete(i);
                    if self.slots[i].st != St::Sending {
                        return;
                    }
                }
                St::Sending => {
                    let sl = &mut self.slots[i];
                    let msg = self.pat.msg(i, sl.seq);
                    match sl.sock.as_mut().unwrap().write(&msg[sl.sent..]) {
                        Ok(n) => {
                            sl.sent += n;
                            if sl.sent == msg.len() {
                                sl.st = St::Receiving;
                                // The reply is a new edge: no read now.
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return self.fail(i, Instant::now()),
                    }
                }
                St::Receiving => {
                    let size = self.pat.size;
                    let sl = &mut self.slots[i];
                    let want = size - sl.recvd;
                    let want = want.min(self.buf.len());
                    match sl.sock.as_mut().unwrap().read(&mut self.buf[..want]) {
                        Ok(0) => return self.fail(i, Instant::now()),
                        Ok(n) => {
                            let o = Pattern::offset(i, sl.seq) + sl.recvd;
                            if self.buf[..n] != self.pat.bytes[o..o + n] {
                                if self.measuring {
                                    self.stats.mismatches += 1;
                                }
                                return self.fail(i, Instant::now());
                            }
                            sl.recvd += n;
                            if sl.recvd == size {
                                self.complete(i);
                                if self.slots[i].st != St::Sending {
                                    return;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return self.fail(i, Instant::now()),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- TLS

/// Accepts any certificate and signature: the load generator measures the
/// server, it does not authenticate it (it checks every echoed byte).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls with ring, default versions and groups, no resumption (every
/// connection a full handshake), no certificate check.
fn tls_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// Sends what rustls has queued; false when the socket is full.
fn flush_tls(tls: &mut rustls::ClientConnection, sock: &mut TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads records once; Ok(false) at EAGAIN. EOF and a bad record are errors.
fn read_tls(tls: &mut rustls::ClientConnection, sock: &mut TcpStream) -> io::Result<bool> {
    loop {
        match tls.read_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                tls.process_new_packets().map_err(io::Error::other)?;
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Advances the handshake; Ok(true) once it is complete.
fn handshake_step(tls: &mut rustls::ClientConnection, sock: &mut TcpStream) -> io::Result<bool> {
    loop {
        flush_tls(tls, sock)?;
        if !tls.is_handshaking() {
            return Ok(true);
        }
        if !read_tls(tls, sock)? {
            return Ok(false);
        }
    }
}

/// Sends the queued request and reads the reply's plaintext, comparing it
/// with `expect`; Ok(true) once all of it is back (InvalidData: a byte
/// differs), Ok(false) when the socket has nothing more for now.
fn echo_step(
    tls: &mut rustls::ClientConnection,
    sock: &mut TcpStream,
    buf: &mut [u8],
    expect: &[u8],
    recvd: &mut usize,
) -> io::Result<bool> {
    loop {
        flush_tls(tls, sock)?;
        loop {
            let want = (expect.len() - *recvd).min(buf.len());
            if want == 0 {
                return Ok(true);
            }
            match tls.reader().read(&mut buf[..want]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    if buf[..n] != expect[*recvd..*recvd + n] {
                        return Err(io::ErrorKind::InvalidData.into());
                    }
                    *recvd += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if !read_tls(tls, sock)? {
            return Ok(false);
        }
    }
}

fn new_slot(now: Instant) -> Slot {
    Slot {
        sock: None,
        tls: None,
        st: St::Idle,
        seq: 0,
        sent: 0,
        recvd: 0,
        t_connect: now,
        t_req: now,
        done: 0,
        retry_at: None,
    }
}

struct Window {
    requests: u64,
    secs: f64,
    server_cpu: Option<f64>,
    self_cpu: f64,
    self_user: f64,
    machine_busy: f64,
}

fn run_tcp(o: &Opts) -> io::Result<(Stats, Window, Vec<u64>, String)> {
    let start = Instant::now();
    let mut t = Tcp {
        o,
        poll: Poll::new()?,
        pat: Pattern::new(o.size),
        buf: vec![0; o.size.clamp(64, 1 << 16)],
        slots: (0..o.conns).map(|_| new_slot(start)).collect(),
        measuring: false,
        stats: Stats::default(),
        connecting: 0,
        pending_connect: Vec::new(),
        hold_done: 0,
        src: 0,
        draining: false,
        tls: o.tls.then(tls_config),
    };
    t.stats.latencies_ns.reserve(1 << 20);
    for i in (0..o.conns).rev() {
        t.open(i, start);
    }
    let mut events = Events::with_capacity(1024);
    let server = o.server_pid.map(|p| p.to_string());

    if let Some(hold) = o.hold {
        // Memory mode: every connection echoes once, then all stay idle.
        let rss0 = o.server_pid.and_then(rss_kib);
        let deadline = start + Duration::from_secs_f64(o.connect_timeout);
        while t.hold_done < o.conns && Instant::now() < deadline {
            t.poll.poll(&mut events, Some(Duration::from_millis(20)))?;
            for ev in events.iter() {
                t.drive(ev.token().0);
            }
            let now = Instant::now();
            for i in 0..o.conns {
                if t.slots[i].retry_at.is_some_and(|r| r <= now) {
                    t.slots[i].retry_at = None;
                    t.open(i, now);
                }
            }
        }
        let ready = t.hold_done;
        std::thread::sleep(Duration::from_secs_f64(hold));
        let rss1 = o.server_pid.and_then(rss_kib);
        let per = match (rss0, rss1) {
            (Some(a), Some(b)) if ready > 0 => (b as f64 - a as f64) * 1024.0 / ready as f64,
            _ => f64::NAN,
        };
        let j = format!(
            "{{\"mode\":\"hold\",\"conns\":{},\"held\":{},\"errors\":{},\"rss_before_kib\":{},\"rss_after_kib\":{},\"bytes_per_conn\":{}}}",
            o.conns,
            ready,
            t.stats.errors,
            rss0.map_or("null".into(), |x| x.to_string()),
            rss1.map_or("null".into(), |x| x.to_string()),
            jnum(per)
        );
        eprintln!(
            "held {ready}/{} connections; server RSS {:?} -> {:?} KiB: {:.0} B/conn",
            o.conns, rss0, rss1, per
        );
        return Ok((t.stats, Window { requests: 0, secs: 0.0, server_cpu: None, self_cpu: 0.0, self_user: 0.0, machine_busy: 0.0 }, vec![], j));
    }

    let t0 = start + Duration::from_secs_f64(o.warmup);
    let t1 = t0 + Duration::from_secs_f64(o.duration);
    let (mut cpu0s, mut cpu0, mut w0, mut user0) = (None, 0.0, t0, 0.0);
    let mut busy0 = 0.0;
    let cpus = watched_cpus(server.as_deref());
    loop {
        let now = Instant::now();
        if !t.measuring && now >= t0 {
            t.measuring = true;
            cpu0s = server.as_deref().and_then(cpu_seconds);
            cpu0 = cpu_seconds("self").unwrap_or(0.0);
            user0 = self_user_seconds();
            busy0 = busy_seconds(&cpus);
            w0 = Instant::now();
        }
        if now >= t1 {
            break;
        }
        let next = if t.measuring { t1 } else { t0 };
        let timeout = (next - now).min(Duration::from_millis(20));
        t.poll.poll(&mut events, Some(timeout))?;
        for ev in events.iter() {
            t.drive(ev.token().0);
        }
        let now = Instant::now();
        for i in 0..o.conns {
            if t.slots[i].retry_at.is_some_and(|r| r <= now) {
                t.slots[i].retry_at = None;
                t.open(i, now);
            }
        }
    }
    let w1 = Instant::now();
    let busy1 = busy_seconds(&cpus);
    let cpu1s = server.as_deref().and_then(cpu_seconds);
    let cpu1 = cpu_seconds("self").unwrap_or(0.0);
    // A request still waiting at the end counts with its age so far: a
    // client a server starves shows in p99 instead of vanishing.
    for sl in &t.slots {
        if sl.st != St::Idle {
            t.stats.latencies_ns.push((w1 - sl.t_req).as_nanos() as u64);
            t.stats.censored += 1;
        }
    }
    let per_slot: Vec<u64> = t.slots.iter().map(|s| s.done).collect();
    // Drain: no new requests; the outstanding ones get up to 1 s to come
    // back, so closing does not reset connections with replies unread (a
    // server would log each reset as a failed request).
    t.measuring = false;
    t.draining = true;
    let drain_end = Instant::now() + Duration::from_secs(1);
    while t.slots.iter().any(|s| matches!(s.st, St::Sending | St::Receiving)) && Instant::now() < drain_end {
        t.poll.poll(&mut events, Some(Duration::from_millis(20)))?;
        for ev in events.iter() {
            t.drive(ev.token().0);
        }
    }
    let w = Window {
        requests: t.stats.requests,
        secs: (w1 - w0).as_secs_f64(),
        server_cpu: match (cpu0s, cpu1s) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        self_cpu: cpu1 - cpu0,
        self_user: self_user_seconds() - user0,
        machine_busy: busy1 - busy0,
    };
    Ok((t.stats, w, per_slot, String::new()))
}

// ---------------------------------------------------------------- UDP

struct USlot {
    sock: UdpSocket,
    seq: u64,
    t_req: Instant,
    done: u64,
}

fn run_udp(o: &Opts) -> io::Result<(Stats, Window, Vec<u64>, String)> {
    let start = Instant::now();
    let mut poll = Poll::new()?;
    let pat = Pattern::new(o.size);
    let mut buf = vec![0u8; 65536];
    let mut stats = Stats::default();
    stats.latencies_ns.reserve(1 << 20);
    let bind: SocketAddr = if o.addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    let mut slots = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let mut s = UdpSocket::bind(bind)?;
        s.connect(o.addr)?;
        poll.registry().register(&mut s, Token(i), Interest::READABLE)?;
        slots.push(USlot { sock: s, seq: 0, t_req: start, done: 0 });
    }
    let send = |sl: &mut USlot, i: usize, now: Instant| {
        sl.t_req = now;
        let _ = sl.sock.send(pat.msg(i, sl.seq));
    };
    for (i, sl) in slots.iter_mut().enumerate() {
        send(sl, i, start);
    }
    let lost_after = Duration::from_millis(200);
    let t0 = start + Duration::from_secs_f64(o.warmup);
    let t1 = t0 + Duration::from_secs_f64(o.duration);
    let server = o.server_pid.map(|p| p.to_string());
    let (mut cpu0s, mut cpu0, mut w0, mut user0) = (None, 0.0, t0, 0.0);
    let mut busy0 = 0.0;
    let cpus = watched_cpus(server.as_deref());
    let mut measuring = false;
    let mut events = Events::with_capacity(1024);
    let mut last_scan = start;
    loop {
        let now = Instant::now();
        if !measuring && now >= t0 {
            measuring = true;
            cpu0s = server.as_deref().and_then(cpu_seconds);
            cpu0 = cpu_seconds("self").unwrap_or(0.0);
            user0 = self_user_seconds();
            busy0 = busy_seconds(&cpus);
            w0 = Instant::now();
        }
        if now >= t1 {
            break;
        }
        let next = if measuring { t1 } else { t0 };
        poll.poll(&mut events, Some((next - now).min(Duration::from_millis(20))))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let sl = &mut slots[i];
            loop {
                match sl.sock.recv(&mut buf) {
                    Ok(n) => {
                        if buf[..n] == *pat.msg(i, sl.seq) {
                            let now = Instant::now();
                            if measuring {
                                stats.requests += 1;
                                sl.done += 1;
                                stats.latencies_ns.push((now - sl.t_req).as_nanos() as u64);
                            }
                            sl.seq += 1;
                            send(sl, i, now);
                            // Anything still queued is a late reply to a
                            // request already counted lost; the next edge
                            // reads it.
                            break;
                        } else if measuring {
                            // A late reply to a request counted lost, or a
                            // corrupted one.
                            stats.mismatches += 1;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        if measuring {
                            stats.errors += 1;
                        }
                        break;
                    }
                }
            }
        }
        let now = Instant::now();
        if now - last_scan >= Duration::from_millis(20) {
            last_scan = now;
            for (i, sl) in slots.iter_mut().enumerate() {
                if now - sl.t_req >= lost_after {
                    if measuring {
                        stats.lost += 1;
                    }
                    sl.seq += 1;
                    send(sl, i, now);
                }
            }
        }
    }
    let w1 = Instant::now();
    let busy1 = busy_seconds(&cpus);
    let cpu1s = server.as_deref().and_then(cpu_seconds);
    let cpu1 = cpu_seconds("self").unwrap_or(0.0);
    for sl in &slots {
        stats.latencies_ns.push((w1 - sl.t_req).as_nanos() as u64);
        stats.censored += 1;
    }
    let per_slot = slots.iter().map(|s| s.done).collect();
    let w = Window {
        requests: stats.requests,
        secs: (w1 - w0).as_secs_f64(),
        server_cpu: match (cpu0s, cpu1s) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        self_cpu: cpu1 - cpu0,
        self_user: self_user_seconds() - user0,
        machine_busy: busy1 - busy0,
    };
    Ok((stats, w, per_slot, String::new()))
}

// ---------------------------------------------------------------- main

fn main() {
    let o = parse_opts();
    raise_nofile();
    let r = match o.proto {
        Proto::Tcp => run_tcp(&o),
        Proto::Udp => run_udp(&o),
    };
    let (mut stats, w, per_slot, json) = match r {
        Ok(x) => x,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    };
    if !json.is_empty() {
        println!("{json}");
        return;
    }
    stats.latencies_ns.sort_unstable();
    stats.connect_ns.sort_unstable();
    let l = &stats.latencies_ns;
    let c = &stats.connect_ns;
    let rps = w.requests as f64 / w.secs;
    let per_req = |cpu: f64| if w.requests > 0 { cpu * 1e6 / w.requests as f64 } else { f64::NAN };
    let server_us = w.server_cpu.map_or(f64::NAN, per_req);
    let self_us = per_req(w.self_cpu);
    let stalled = per_slot.iter().filter(|&&d| d == 0).count();
    let mode = match (o.proto, o.churn) {
        (Proto::Udp, _) => "udp",
        (_, true) => "churn",
        _ => "steady",
    };
    println!(
        "{{\"mode\":\"{mode}\",\"conns\":{},\"size\":{},\"secs\":{},\"requests\":{},\"rps\":{},\
         \"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"errors\":{},\"mismatches\":{},\"lost\":{},\
         \"stalled\":{stalled},\"outstanding_at_end\":{},\"connects\":{},\"connect_p50_us\":{},\"connect_p99_us\":{},\
         \"connect_max_us\":{},\"server_cpu_s\":{},\"server_cpu_us_per_req\":{},\
         \"self_cpu_s\":{},\"self_cpu_us_per_req\":{},\"self_user_us_per_req\":{},\
         \"server_util\":{},\"self_util\":{},\"other_util\":{}}}",
        o.conns,
        o.size,
        jnum(w.secs),
        w.requests,
        jnum(rps),
        jnum(pct(l, 0.5)),
        jnum(pct(l, 0.99)),
        jnum(pct(l, 1.0)),
        stats.errors,
        stats.mismatches,
        stats.lost,
        stats.censored,
        c.len(),
        jnum(pct(c, 0.5)),
        jnum(pct(c, 0.99)),
        jnum(pct(c, 1.0)),
        jnum(w.server_cpu.unwrap_or(f64::NAN)),
        jnum(server_us),
        jnum(w.self_cpu),
        jnum(self_us),
        jnum(per_req(w.self_user)),
        jnum(w.server_cpu.unwrap_or(f64::NAN) / w.secs),
        jnum(w.self_cpu / w.secs),
        jnum((w.machine_busy - w.self_cpu - w.server_cpu.unwrap_or(0.0)).max(0.0) / w.secs),
    );
    eprintln!(
        "{mode} conns={} size={}: {:.0} req/s, p50 {:.1} us, p99 {:.1} us, errors {}, mismatches {}, lost {}, stalled {stalled}, \
         connect p50 {:.1} us max {:.1} us; server {:.2} us/req ({:.0}% of a core), loadgen {:.2} us/req ({:.2} user, {:.0}% of a core)",
        o.conns,
        o.size,
        rps,
        pct(l, 0.5),
        pct(l, 0.99),
        stats.errors,
        stats.mismatches,
        stats.lost,
        pct(c, 0.5),
        pct(c, 1.0),
        server_us,
        100.0 * w.server_cpu.unwrap_or(f64::NAN) / w.secs,
        self_us,
        per_req(w.self_user),
        100.0 * w.self_cpu / w.secs,
    );
}
