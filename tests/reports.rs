//! Reports never block the server (issue 17): the echo example as a real
//! process whose stderr is a pipe nobody reads keeps serving while it
//! reports far more than the pipe holds; the lines that did not fit are
//! dropped, counted, and said once the pipe has room again.

mod util;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use util::echo::{echo_cmd, wait_deadline};
use util::unix_path;

/// Larger than the echo's 65,536-byte receive buffer: each one is reported
/// (a warning: truncated), none answered.
const OVERSIZED: usize = 70_000;

/// Kills the server's process group on the way out.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group of our own child.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

#[test]
fn a_full_stderr_pipe_nobody_reads_does_not_stop_the_server() {
    let path = unix_path("reports");
    let path_str = path.to_str().unwrap().to_owned();
    let mut child = echo_cmd(&["--proto", "unix-dgram", "--mode", "sync", "--path", &path_str])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillGroup(child.id() as i32);
    // stderr: held open, not read (yet).
    let mut stderr = child.stderr.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");

    let client_path = unix_path("reports-client");
    let client = UnixDatagram::bind(&client_path).unwrap();
    client.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // 2,000 reports of ~130 bytes: four times what a 64 KiB pipe holds.
    let big = vec![7u8; OVERSIZED];
    for i in 0..2000 {
        if let Err(e) = client.send_to(&big, &path) {
            panic!("datagram {i}: the server stopped taking datagrams: {e}");
        }
    }
    // Still serving: an ordinary datagram is answered.
    let started = Instant::now();
    client.send_to(b"still there?", &path).expect("send");
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap_or_else(|e| {
        panic!("no answer with stderr full after {:?}: {e}", started.elapsed())
    });
    assert_eq!(&buf[..n], b"still there?");

    // Read what the pipe holds now; then one more report gets through,
    // preceded by the count of those dropped.
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match stderr.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(chunk[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut nudged = 0;
    while !String::from_utf8_lossy(&text).contains("report lines dropped") {
        assert!(Instant::now() < deadline, "no drop count: {}", String::from_utf8_lossy(&text));
        if nudged < 20 {
            client.send_to(&big, &path).unwrap();
            nudged += 1;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => text.extend(chunk),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let notice = text.lines().find(|l| l.contains("report lines dropped")).unwrap();
    let dropped: u64 = notice
        .strip_prefix("sockserv: ")
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{notice:?}"));
    assert!(dropped > 0 && dropped <= 2000, "{notice}");
    let whole = text.lines().filter(|l| l.contains("does not fit")).count();
    eprintln!("{whole} report lines written whole, {dropped} dropped and counted");
    // Every line whole: none cut into another.
    for l in text.lines() {
        assert!(l.starts_with("sockserv: "), "a spliced or cut line: {l:?}");
    }

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_deadline(&mut child, Duration::from_secs(10)).expect("echo exits");
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_file(&client_path);
}
