//! Peers on the Linux kernel's stack (`std::net`), one thread each: the
//! clients of the std, embedded-nal and TAP fixtures.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::cases::{DGRAM_BUFFER, End, Outcome, PeerResult, Script, payload};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A running peer; `join` gives what it got, its address formatted by
/// `format` (the transport's address type).
pub struct Peer(JoinHandle<(Option<SocketAddr>, PeerResult)>);

impl Peer {
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    pub fn join(self, format: impl Fn(SocketAddr) -> String) -> PeerResult {
        let (addr, mut result) = self.0.join().expect("the peer thread panicked");
        result.addr = addr.map(format).unwrap_or_default();
        result
    }
}

/// Starts one thread per script, each connecting to `server` at once.
pub fn start(server: SocketAddr, scripts: &[Script]) -> Vec<Peer> {
    scripts
        .iter()
        .cloned()
        .map(|script| Peer(thread::spawn(move || run(server, &script))))
        .collect()
}

/// Connects first (in the caller's thread: for a server that is not
/// polled yet the kernel's backlog completes the handshake), then runs.
pub fn start_connected(server: SocketAddr, scripts: &[Script]) -> Vec<Peer> {
    scripts
        .iter()
        .cloned()
        .map(|script| {
            let stream = TcpStream::connect_timeout(&server, TIMEOUT);
            Peer(thread::spawn(move || match stream {
                Ok(s) => (s.local_addr().ok(), script_on(s, &script)),
                Err(e) => (None, failed(e)),
            }))
        })
        .collect()
}

fn failed(e: std::io::Error) -> PeerResult {
    PeerResult { error: Some(format!("{:?}", e.kind())), ..PeerResult::default() }
}

fn run(server: SocketAddr, script: &Script) -> (Option<SocketAddr>, PeerResult) {
    match TcpStream::connect_timeout(&server, TIMEOUT) {
        Ok(s) => (s.local_addr().ok(), script_on(s, script)),
        Err(e) => (None, failed(e)),
    }
}

fn script_on(mut s: TcpStream, script: &Script) -> PeerResult {
    let mut result = PeerResult::default();
    let _ = s.set_read_timeout(Some(TIMEOUT));
    if let Err(e) = s.write_all(&script.send) {
        return failed(e);
    }
    match script.end {
        End::HalfClose | End::HoldOpen => {
            if script.end == End::HalfClose {
                let _ = s.shutdown(Shutdown::Write);
            }
            if let Err(e) = s.read_to_end(&mut result.received) {
                result.error = Some(format!("{:?}", e.kind()));
            }
        }
        End::ResetAfterReply => {
            let mut byte = [0u8; 1];
            match s.read(&mut byte) {
                Ok(1) => result.received.push(byte[0]),
                Ok(_) => result.error = Some("EOF before the reply".into()),
                Err(e) => result.error = Some(format!("{:?}", e.kind())),
            }
            // SO_LINGER 0: the close sends a RST.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
    }
    result
}

/// Sends datagrams of `sizes` from `local` to `server`, one thread;
/// `join` gives the replies to those that fit the server's buffer.
pub fn datagrams(
    local: SocketAddr,
    server: SocketAddr,
    sizes: &[usize],
) -> JoinHandle<Vec<Vec<u8>>> {
    let sizes = sizes.to_vec();
    let socket = UdpSocket::bind(local).expect("a UDP peer socket");
    thread::spawn(move || {
        let _ = socket.set_read_timeout(Some(TIMEOUT));
        for &n in &sizes {
            socket.send_to(&payload(n), server).expect("send_to");
            thread::sleep(Duration::from_millis(20));
        }
        let expected = sizes.iter().filter(|&&n| n <= DGRAM_BUFFER).count();
        let mut replies = Vec::new();
        let mut buf = [0u8; 2048];
        while replies.len() < expected {
            match socket.recv(&mut buf) {
                Ok(n) => replies.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        // Anything more (a reply to the oversized one) would show here.
        let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
        if let Ok(n) = socket.recv(&mut buf) {
            replies.push(buf[..n].to_vec());
        }
        replies
    })
}

/// Set in the child process that the accept-error case runs in.
pub const CHILD: &str = "SOCKSERV_CONFORMANCE_CHILD";

/// The accept-error case needs accept to fail with EMFILE, which needs the
/// process's descriptors used up: that would break the tests running
/// beside it, so it runs alone in a child process of this test binary,
/// under a low descriptor limit.
pub fn rerun_in_child(test: &str) -> Outcome {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("prlimit")
        .arg("--nofile=128:128")
        .arg("--")
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("prlimit (util-linux) runs the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Outcome { in_child: true, ..Outcome::default() }
}

/// Opens files until the process has no descriptor left; the hoard frees
/// them when dropped.
pub fn hoard_descriptors() -> Vec<std::fs::File> {
    let mut hoard = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hoard.push(f);
    }
    hoard
}
