//! A server program (an example, or its Python twin) as a real process:
//! started, its first line `listening on ADDR` read, signalled, reaped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a program may take to print its first line, or to exit.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// Which implementation of an example to run.
#[derive(Clone, Copy, Debug)]
pub enum Lang {
    /// `examples/NAME.rs`, built by cargo.
    Rust,
    /// `examples/python/NAME.py` on Python's socketserver.
    Python,
}

/// A running server program; killed and reaped on drop.
pub struct Program {
    child: Child,
    /// The address of its first line.
    pub addr: SocketAddr,
    /// The Unix socket path of its first line, for a Unix server (`addr`
    /// is then `0.0.0.0:0`).
    pub path: Option<PathBuf>,
    stderr: Arc<Mutex<Vec<u8>>>,
    reaped: bool,
}

impl Program {
    /// Starts example `name` in `lang` with `args` and reads its address.
    pub fn start(lang: Lang, name: &str, args: &[&str]) -> Self {
        let mut cmd = match lang {
            Lang::Rust => Command::new(example_binary(name)),
            Lang::Python => {
                let mut c = Command::new("python3");
                c.arg(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join(format!("examples/python/{name}.py")),
                );
                c
            }
        };
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} ({lang:?}) starts: {e}"));
        let stderr = super::echo::collect(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(out.read_line(&mut line).map(|_| line));
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let mut program =
            Self { child, addr: ([0, 0, 0, 0], 0).into(), path: None, stderr, reaped: false };
        let line = match rx.recv_timeout(PROCESS_TIMEOUT) {
            Ok(Ok(line)) => line,
            other => panic!("{name} ({lang:?}): no first line ({other:?}); {}", program.stderr()),
        };
        let addr = line.trim_end().strip_prefix("listening on ");
        if let Some(path) = addr.filter(|a| a.starts_with('/')) {
            program.path = Some(path.into());
            return program;
        }
        program.addr = match addr.and_then(|a| a.parse().ok()) {
            Some(a) => a,
            None => panic!("{name} ({lang:?}): first line {line:?}; {}", program.stderr()),
        };
        assert_ne!(program.addr.port(), 0, "the real port is printed");
        program
    }

    /// Sends `sig` and waits (bounded) for the exit.
    pub fn signal(&mut self, sig: libc::c_int) -> ExitStatus {
        assert!(self.child.try_wait().unwrap().is_none(), "exited early; {}", self.stderr());
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        self.wait()
    }

    /// Waits for the program to exit by itself (at most
    /// [`PROCESS_TIMEOUT`], then fails).
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.reaped = true;
                // A moment for the stderr thread to take the last bytes.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("did not exit within {PROCESS_TIMEOUT:?}; {}", self.stderr());
    }

    /// What the program wrote on stderr so far.
    pub fn stderr(&self) -> String {
        format!("stderr: {}", String::from_utf8_lossy(&self.stderr.lock().unwrap()))
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `target/<profile>/examples/NAME`, brought up to date by cargo once per
/// test binary and name (a stale example would test old code).
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|n| n == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "--example", name]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "cargo build --example {name}");
        built.push(name.into());
    }
    dir.join("examples").join(name)
}
