//! The mps2-an386 firmware under QEMU, on a TAP device with the Linux
//! kernel as the peer: the smoltcp adapter on a Cortex-M4, the board's
//! LAN9118 driver between it and the wire. Each case re-runs itself inside
//! a network namespace it makes (as the TAP fixture's do), then boots
//! `examples/mps2-an386/run --firmware conformance` on `tap0` once per
//! server the case asks for. The server in the firmware
//! (`examples/mps2-an386/src/bin/conformance.rs`) serves with the cases'
//! own service, ported: the same hook lines, said through semihosting as
//! `hook: LINE`, which this fixture gives to the case's [`Rec`] in order.
//! The case's operations are known before the boot (the fixture records
//! them by calling the case's `serve` with a recorder) and passed on the
//! firmware's command line; each operation's result comes back as
//! `op N: ok` or `op N: error: E`, and the case's `serve` is then replayed
//! with those results. A stop is SIGTERM to the runner (its stop file, which
//! the firmware polls every 50 ms); `took` is measured on the board's clock.
//!
//! Needs root (the namespace, the TAP device): skipped otherwise by the
//! `root::can_run` rule. As root it needs the firmware's toolchain
//! (Debian's rustc-web, rust-web-src, cargo-web, binutils-arm-none-eabi)
//! and qemu-system-arm, which `examples/mps2-an386/ci` installs; without
//! them the case says `SKIPPED (needs ...)` and passes, unless
//! `SOCKSERV_REQUIRE_ROOT_TESTS=1` (`.ci/run`) makes that a failure.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::cases::{Case, Differs, Fixture, Op, Outcome, Rec, Run, Serve};
use crate::kernel;
use crate::smoltcp_loopback::ACCEPT_CANNOT_FAIL;
use crate::smoltcp_tap::{HOST, PORT, SMOLTCP, format, in_namespace_of};

pub struct Firmware;

/// The runner, with `smoltcp_echo`'s command line and `--firmware`.
fn runner() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/mps2-an386/run")
}

/// Up to this long for the runner's build check and QEMU's boot.
const BOOT: Duration = Duration::from_secs(90);

/// What the firmware's build and boot need that a fresh machine lacks
/// until `examples/mps2-an386/ci` has installed it.
fn missing_tools() -> Vec<&'static str> {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
    };
    let mut missing = Vec::new();
    if !std::path::Path::new("/usr/bin/rustc").is_file() {
        missing.push("Debian's rustc-web");
    }
    if !on_path("arm-none-eabi-ld") {
        missing.push("binutils-arm-none-eabi");
    }
    let qemu = std::env::var_os("QEMU_SYSTEM_ARM").is_some()
        || on_path("qemu-system-arm")
        || std::path::Path::new("/opt/sockserv-qemu/usr/bin/qemu-system-arm").is_file();
    if !qemu {
        missing.push("qemu-system-arm");
    }
    missing
}

/// Builds the conformance image once per test process, outside the
/// namespace and its per-case time limit (a first build takes minutes).
fn in_namespace(name: &str, case: impl FnOnce()) {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let inside = std::env::var_os("SOCKSERV_CONFORMANCE_TAP").is_some();
    // SAFETY: geteuid(2) takes nothing and cannot fail. (As non-root the
    // case is skipped by `root::can_run`: nothing to build.)
    let root = unsafe { libc::geteuid() } == 0;
    if !inside && root {
        let missing = missing_tools();
        if !missing.is_empty() {
            let needs = missing.join(", ");
            assert!(
                std::env::var_os(crate::root::REQUIRE).is_none_or(|v| v != "1"),
                "conformance firmware::{name} needs {needs} (examples/mps2-an386/ci installs \
                 them), and {}=1 forbids skipping it",
                crate::root::REQUIRE
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (needs {needs}; examples/mps2-an386/ci installs them): conformance firmware::{name}"
            );
            return;
        }
        BUILT.call_once(|| {
            let out = Command::new(runner())
                .args(["--firmware", "conformance", "--build"])
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", runner().display()));
            assert!(
                out.status.success(),
                "the firmware's conformance image did not build (it needs Debian's rustc-web, \
                 rust-web-src, cargo-web and binutils-arm-none-eabi: examples/mps2-an386/ci \
                 installs them):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
    }
    in_namespace_of("firmware", name, case);
}

/// A booted firmware: the runner, and its lines (stdout and stderr, the
/// runner's `mps2-an386: ` prefix taken off) as they come.
struct Board {
    runner: Child,
    lines: Receiver<String>,
    /// Every line so far, for the failure messages.
    seen: Vec<String>,
}

impl Board {
    /// Boots the conformance server: `server` (stream, datagram, event)
    /// on `port`, running `ops`, with a table of `slots`.
    fn boot(server: &str, port: u16, ops: &[Op], slots: usize) -> Self {
        let ops: Vec<&str> = ops
            .iter()
            .map(|op| match op {
                Op::HandleRequest => "handle",
                Op::ServeForever => "forever",
            })
            .collect();
        let ops = if ops.is_empty() { "forever".to_string() } else { ops.join(",") };
        let mut runner = Command::new(runner())
            .args(["--firmware", "conformance", "--tap", "tap0", "--addr"])
            .arg(format!("{SMOLTCP}:{port}"))
            .args(["--", "--server", server, "--ops", &ops, "--slots", &slots.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", runner().display()));
        let (tx, lines) = mpsc::channel();
        let out = runner.stdout.take().unwrap();
        let err = runner.stderr.take().unwrap();
        let tx2 = tx.clone();
        thread::spawn(move || forward(BufReader::new(out), &tx));
        thread::spawn(move || forward(BufReader::new(err), &tx2));
        let mut board = Self { runner, lines, seen: Vec::new() };
        let listening = format!("listening on {SMOLTCP}:{port}");
        board.until(BOOT, |l| l == listening);
        resolve();
        board
    }

    /// Reads lines until `done` says one is the awaited one; panics with
    /// everything seen if none comes within `timeout` or the runner ends.
    fn until(&mut self, timeout: Duration, mut done: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = done(&line);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the firmware: nothing awaited within {timeout:?}:\n{}", self.log())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.runner.wait();
                    panic!("the firmware's runner ended ({status:?}):\n{}", self.log())
                }
            }
        }
    }

    fn log(&self) -> String {
        self.seen.join("\n")
    }

    /// SIGTERM to the runner: the firmware's stop.
    fn stop(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.runner.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Stops the firmware, waits for the runner's exit status (0) and
    /// gives back every line it said.
    fn finish(mut self) -> Vec<String> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) =
            self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        let status = self.runner.wait().expect("the runner's status");
        assert!(status.success(), "the firmware's runner exited with {status}:\n{}", self.log());
        self.seen
    }
}

fn forward(input: impl BufRead, tx: &mpsc::Sender<String>) {
    for line in input.lines().map_while(Result::ok) {
        let line = line.strip_prefix("mps2-an386: ").unwrap_or(&line).to_string();
        if tx.send(line).is_err() {
            return;
        }
    }
}

/// Lets the kernel learn the firmware's link address before the peers
/// start (a datagram to the discard port makes it ask), as the TAP
/// fixture does: a first SYN that meets an unresolved neighbour may be
/// lost and come again only a second later.
fn resolve() {
    let probe = std::net::UdpSocket::bind((HOST, 0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let _ = probe.send_to(b"", (SMOLTCP, 9));
        let neigh = Command::new("ip").args(["neigh", "show", &SMOLTCP.to_string()]).output();
        if neigh.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("lladdr")) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("the kernel never learnt the firmware's link address on tap0");
}

/// The operations the case's `serve` asks for, in order (recorded, not
/// run).
fn record(serve: &mut dyn FnMut(Serve<'_>)) -> Vec<Op> {
    let mut ops = Vec::new();
    serve(&mut |op| {
        ops.push(op);
        Ok(())
    });
    ops
}

/// Runs the case's `serve` again, each operation answering what the
/// firmware's did (`op N: ok` / `op N: error: E`).
fn replay(serve: &mut dyn FnMut(Serve<'_>), lines: &[String]) {
    let results: Vec<Result<(), String>> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("op "))
        .filter_map(|l| l.split_once(": "))
        .map(|(_, r)| if r == "ok" { Ok(()) } else { Err(r.to_string()) })
        .collect();
    let mut results = results.into_iter();
    serve(&mut |_| results.next().expect("the firmware ran fewer operations than asked"));
}

/// The hook lines to the case's recorder, in order; how long the
/// operations took on the board's clock.
fn collect(rec: &Rec, lines: &[String]) -> Duration {
    for line in lines.iter().filter_map(|l| l.strip_prefix("hook: ")) {
        rec.note(line.to_string());
    }
    let took = lines.iter().find_map(|l| l.strip_prefix("took ")?.strip_suffix(" us"));
    let took = took.and_then(|t| t.parse().ok()).unwrap_or_else(|| {
        panic!("the firmware did not say how long it took:\n{}", lines.join("\n"))
    });
    Duration::from_micros(took)
}

/// Asks for the stop `after` the boot, from another thread.
fn stop_later(board: &Board, after: Option<Duration>) {
    if let Some(after) = after {
        let pid = board.runner.id() as libc::pid_t;
        thread::spawn(move || {
            thread::sleep(after);
            // SAFETY: kill(2) on our child's pid (reaped only by `finish`,
            // which comes after the case's peers are done).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        });
    }
}

/// Waits for the peers (each gives up after its own 10 s timeout).
fn join(peers: Vec<kernel::Peer>) -> Vec<crate::cases::PeerResult> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while peers.iter().any(|p| !p.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    peers.into_iter().map(|p| p.join(format)).collect()
}

fn server_addr(port: u16) -> SocketAddr {
    (SMOLTCP, port).into()
}

/// Waits until the firmware has run every operation (its `took` line).
fn await_ops(board: &mut Board) {
    board.until(Duration::from_secs(60), |l| l.starts_with("took "));
}

impl Fixture for Firmware {
    fn name(&self) -> &'static str {
        "mps2-an386 firmware over TAP"
    }

    fn differs(&self, case: Case) -> Option<Differs> {
        match case {
            Case::AcceptError => Differs::new(ACCEPT_CANNOT_FAIL, None),
            _ => None,
        }
    }

    fn stream(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        assert!(!run.accept_error, "declared: a smoltcp accept cannot fail");
        let ops = record(serve);
        let mut board = Board::boot("stream", PORT, &ops, 1);
        let peers = kernel::start(server_addr(PORT), &run.clients);
        stop_later(&board, run.stop_after);
        await_ops(&mut board);
        let peers = join(peers);
        let lines = board.finish();
        let took = collect(rec, &lines);
        replay(serve, &lines);
        Outcome { peers, took, ..Outcome::default() }
    }

    fn datagram(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        let ops = record(serve);
        let mut board = Board::boot("datagram", PORT + 1, &ops, 1);
        let local: SocketAddr = (HOST, 0).into();
        let peer = kernel::datagrams(local, server_addr(PORT + 1), &run.datagrams);
        stop_later(&board, run.stop_after);
        await_ops(&mut board);
        let replies = peer.join().unwrap();
        let lines = board.finish();
        let took = collect(rec, &lines);
        replay(serve, &lines);
        Outcome { replies, took, ..Outcome::default() }
    }

    fn event(&self, run: &Run, rec: &Rec, slots: usize) -> Option<Outcome> {
        let mut board = Board::boot("event", PORT, &[Op::ServeForever], slots);
        let peers = kernel::start(server_addr(PORT), &run.clients);
        stop_later(&board, run.stop_after);
        await_ops(&mut board);
        let peers = join(peers);
        let lines = board.finish();
        let took = collect(rec, &lines);
        assert!(
            lines.iter().any(|l| l == "op 0: ok"),
            "serve_forever failed on the firmware:\n{}",
            lines.join("\n")
        );
        Some(Outcome { peers, took, ..Outcome::default() })
    }
}

crate::conformance!(in in_namespace, Firmware);
