//! The echo example (`examples/echo.rs`) as a running process, for the
//! tests that start it (`echo_example`, `hostile`).
//!
//! The binary is found next to the test (`target/<profile>/examples/echo`).
//! `cargo test` builds examples, `cargo test --test NAME` does not: when
//! run by cargo, the example is built (or brought up to date) once, with
//! `cargo build --example echo`, before the first server starts.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::unix_path;

/// How long the server may take to print its first line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to exit after a signal (or a failure).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The contract: a signal stops the server "within a second" (with slack
/// for a loaded machine running many tests at once).
pub const STOP_CONTRACT: Duration = Duration::from_millis(2500);

// ---------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------

/// `target/<profile>/examples/echo`, built once if cargo runs the tests.
pub fn echo_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/echo_example-HASH -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let bin = profile_dir.join("examples").join("echo");
        if let Ok(cargo) = std::env::var("CARGO") {
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "--example", "echo"]);
            match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => {}
                Some("release") => {
                    cmd.arg("--release");
                }
                Some(other) => {
                    cmd.args(["--profile", other]);
                }
            }
            let out = cmd
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdin(Stdio::null())
                .output()
                .expect("cargo runs");
            assert!(
                out.status.success(),
                "cargo build --example echo failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(bin.is_file(), "the echo example is not built at {}", bin.display());
        bin
    })
}

pub fn echo_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(echo_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        // Its own process group: the guard kills forked children too.
        .process_group(0)
        // A panic would show a backtrace hint and a "panicked" line.
        .env("RUST_BACKTRACE", "1");
    cmd
}

// ---------------------------------------------------------------------
// A running server
// ---------------------------------------------------------------------

/// A running echo server; killed (with its process group) on drop.
pub struct Server {
    pub child: Child,
    /// What follows `listening on ` in the first line.
    pub addr: String,
    pub path: Option<PathBuf>,
    /// Everything the server (and its forked children) wrote on stderr.
    pub stderr: Arc<Mutex<Vec<u8>>>,
    pub reaped: bool,
}

impl Server {
    /// Starts `echo --proto PROTO --mode MODE` on `--addr ADDR` (tcp, udp)
    /// or on a fresh `--path` (unix, unix-dgram), and reads its first line.
    pub fn start(proto: &str, mode: &str, addr: &str) -> Self {
        Self::start_with(proto, mode, addr, &[])
    }

    /// [`start`](Self::start) with more arguments (`--workers 2`, ...).
    pub fn start_with(proto: &str, mode: &str, addr: &str, extra: &[&str]) -> Self {
        let unix = proto.starts_with("unix");
        let path = unix.then(|| unix_path(&format!("echo-{proto}-{mode}")));
        let mut args = vec!["--proto", proto, "--mode", mode];
        let path_str;
        if let Some(p) = &path {
            path_str = p.to_str().expect("a UTF-8 temp path").to_owned();
            args.extend(["--path", &path_str]);
        } else {
            args.extend(["--addr", addr]);
        }
        args.extend(extra);
        let mut child = echo_cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the echo example starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr = collect(stderr);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(out.read_line(&mut line).map(|_| line));
            // Keep draining: the server never blocks on a full pipe.
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let mut server = Self { child, addr: String::new(), path, stderr, reaped: false };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading the first line: {e}"),
            Err(_) => panic!("no first line within {START_TIMEOUT:?}"),
        };
        assert!(
            line.ends_with('\n'),
            "the first line is a whole line: {line:?}{}",
            server.stderr_now()
        );
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}{}", server.stderr_now()));
        server.addr = addr.to_owned();
        if let Some(p) = &server.path {
            assert_eq!(
                Path::new(&server.addr),
                p.as_path(),
                "the first line names the socket path"
            );
            let kind = std::fs::metadata(p).expect("the socket path exists").file_type();
            assert!(kind.is_socket(), "{} is a socket", p.display());
        }
        server
    }

    /// The bound address of a tcp/udp server (checked: not port 0).
    pub fn inet(&self) -> SocketAddr {
        let a: SocketAddr = self.addr.parse().unwrap_or_else(|e| panic!("{:?}: {e}", self.addr));
        assert_ne!(a.port(), 0, "the real port is printed, not 0");
        a
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("a Unix server")
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Panics if the server has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            self.reaped = true;
            panic!("the server exited: {status}{}", self.stderr_now());
        }
    }

    /// Whatever the server wrote on stderr so far, when it has exited.
    pub fn stderr_now(&mut self) -> String {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            self.reaped = true;
            return format!("\nserver stderr: {}", self.stderr_text());
        }
        String::new()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends `sig` to the server (not its children) and waits for it to
    /// exit; returns its status, how long it took and its stderr.
    pub fn stop(mut self, sig: libc::c_int) -> (ExitStatus, Duration, String) {
        let (status, took) = self.signal_and_wait(sig);
        // Forked children may hold the pipe open: no waiting for its EOF,
        // only a moment for the last line to arrive.
        thread::sleep(Duration::from_millis(50));
        (status, took, self.stderr_text())
    }

    /// Sends `sig` to the server process only and reaps it (its forked
    /// children live on until the guard drops).
    pub fn signal_and_wait(&mut self, sig: libc::c_int) -> (ExitStatus, Duration) {
        self.assert_alive();
        let start = Instant::now();
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        let status = wait_deadline(&mut self.child, EXIT_TIMEOUT).unwrap_or_else(|| {
            panic!("the server did not exit within {EXIT_TIMEOUT:?} of signal {sig}")
        });
        self.reaped = true;
        (status, start.elapsed())
    }

    /// SIGTERM/SIGINT: status 0, quickly, and the Unix socket path is gone.
    pub fn stop_cleanly(self, sig: libc::c_int) {
        let path = self.path.clone();
        let (status, took, stderr) = self.stop(sig);
        assert_eq!(
            status.code(),
            Some(0),
            "exit status after signal {sig}: {status}; stderr: {stderr}"
        );
        assert!(took <= STOP_CONTRACT, "the server took {took:?} to stop after signal {sig}");
        if let Some(p) = path {
            assert!(!p.exists(), "the socket path {} is still there after shutdown", p.display());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole group: forked children too.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads `pipe` to its end in a thread of its own, into a shared buffer
/// (readable at any time, even while another process keeps the pipe open).
pub fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&buf);
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            out.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

/// Polls `try_wait` until `limit`; on timeout kills the process (and its
/// group) and returns `None`.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the example expecting it to exit by itself (a refusal): bounded.
pub fn run_expecting_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = echo_cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the echo example starts");
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let status = wait_deadline(&mut child, EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("echo {args:?} did not exit within {EXIT_TIMEOUT:?}"));
    // Nothing of its group may outlive it (and hold the pipes open).
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    thread::sleep(Duration::from_millis(50));
    let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&b.lock().unwrap()).into_owned();
    (status, text(&out), text(&err))
}
