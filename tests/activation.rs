//! Socket activation and restarts with real processes: the echo example
//! started by systemd's own `systemd-socket-activate` (Debian's `systemd`
//! package; `.ci/run` installs it), served from an inherited descriptor,
//! and handed over to a new process on SIGHUP under a churn of clients.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use sockserv::service_fn;
use sockserv::std_adapter::activation::Inherited;
use sockserv::std_adapter::{Builder, TcpServer, UdpServer};
use util::echo::{echo_bin, echo_cmd, wait_deadline};
use util::{CLIENT_TIMEOUT, unix_path};

/// A handler for servers that are never made.
struct Nop;

impl<S: sockserv::embedded_io::Read + sockserv::embedded_io::Write> sockserv::StreamHandler<S>
    for Nop
{
    type Error = S::Error;
    fn handle(&mut self, _: &mut S) -> Result<(), S::Error> {
        Ok(())
    }
}

impl sockserv::DatagramHandler for Nop {
    type Error = core::convert::Infallible;
    fn handle(&mut self, _: &[u8], _: &mut sockserv::ReplyWriter<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A port free now (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The lines a child writes on stdout, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(10)).expect("a line from the server")
}

fn echo_once(mut s: impl Read + Write) -> std::io::Result<()> {
    let msg = [b'x'; 64];
    s.write_all(&msg)?;
    let mut got = [0u8; 64];
    s.read_exact(&mut got)?;
    if got != msg {
        return Err(std::io::Error::other("wrong echo"));
    }
    Ok(())
}

fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s
}

/// `systemd-socket-activate [extra] -l LISTEN echo ARGS`; the tool
/// execs echo on the first connection, with the socket as fd 3.
fn activate(extra: &[&str], listen: &str, args: &[&str]) -> Child {
    let tool = "systemd-socket-activate";
    let mut cmd = std::process::Command::new(tool);
    cmd.args(extra).args(["-l", listen]).arg(echo_bin()).args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| panic!("{tool} (Debian's systemd package) runs: {e}"))
}

fn stop(mut child: Child) {
    // SAFETY-free: kill(2) through libc on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_deadline(&mut child, Duration::from_secs(10)).expect("echo exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

fn activated_tcp(mode: &str) {
    let port = free_port();
    let mut child = activate(&[], &format!("127.0.0.1:{port}"), &["--mode", mode]);
    // The tool listens before it runs echo; the first client waits in the
    // backlog until echo takes the socket.
    thread::sleep(Duration::from_millis(200));
    echo_once(tcp(port)).unwrap();
    let rx = lines(&mut child);
    assert_eq!(next_line(&rx), format!("listening on 127.0.0.1:{port}"));
    for _ in 0..5 {
        echo_once(tcp(port)).unwrap();
    }
    stop(child);
}

#[test]
fn systemd_socket_activate_tcp_sync() {
    activated_tcp("sync");
}

#[test]
fn systemd_socket_activate_tcp_threading() {
    activated_tcp("threading");
}

#[test]
fn systemd_socket_activate_tcp_forking() {
    activated_tcp("forking");
}

#[test]
fn systemd_socket_activate_tcp_event() {
    activated_tcp("event");
}

#[test]
fn systemd_socket_activate_unix_stream() {
    let path = unix_path("activated");
    let mut child = activate(&[], path.to_str().unwrap(), &["--mode", "event"]);
    thread::sleep(Duration::from_millis(200));
    let s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    echo_once(s).unwrap();
    let rx = lines(&mut child);
    assert_eq!(next_line(&rx), format!("listening on {}", path.display()));
    stop(child);
    // The socket is the tool's: echo does not remove its path.
    assert!(path.exists(), "an inherited socket's path is not the server's to remove");
    let _ = std::fs::remove_file(path);
}

/// A datagram socket passed with `--datagram`: echo sees its type and
/// serves datagrams without `--proto udp`.
#[test]
fn systemd_socket_activate_udp() {
    let port = free_port();
    let child = activate(&["--datagram"], &format!("127.0.0.1:{port}"), &["--mode", "threading"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 64];
    // The first datagram makes the tool exec echo; resend until answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        if let Ok((n, _)) = client.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"ping");
            break;
        }
        assert!(Instant::now() < deadline, "no echo from the activated UDP server");
    }
    stop(child);
}

/// `--fd N`: a descriptor inherited by number (here opened by the test
/// and left open across the exec, as a launcher does).
#[test]
fn inherited_fd_by_number() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let raw = listener.into_raw_fd();
    // Clear FD_CLOEXEC so the child inherits it under the same number.
    unsafe { libc::fcntl(raw, libc::F_SETFD, 0) };
    let mut child = echo_cmd(&["--fd", &raw.to_string(), "--mode", "sync"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    unsafe { libc::close(raw) };
    let rx = lines(&mut child);
    assert_eq!(next_line(&rx), format!("listening on 127.0.0.1:{port}"));
    echo_once(tcp(port)).unwrap();
    stop(child);
}

/// A descriptor of the wrong kind is a clear error, not a server.
#[test]
fn inherited_socket_of_the_wrong_kind_is_refused() {
    let udp = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
    let udp_fd = udp.as_raw_fd();
    let e = TcpServer::bind(Inherited::from(udp), service_fn(|_| Nop)).err().unwrap();
    assert_eq!(e.requested, format!("fd {udp_fd}"));
    assert!(e.to_string().contains("is a datagram socket; this server needs a stream one"), "{e}");

    let connected = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
    let fd = OwnedFd::from(connected.unwrap());
    let e = Builder::new().stream(Inherited::from(fd), service_fn(|_| Nop)).err().unwrap();
    assert!(e.to_string().contains("stream socket that is not listening"), "{e}");

    let file = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let e = UdpServer::bind(Inherited::from(file), service_fn(|_| Nop)).err().unwrap();
    assert!(e.to_string().contains("is not a socket"), "{e}");

    let listener = OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
    let e = UdpServer::bind(Inherited::from(listener), service_fn(|_| Nop)).err().unwrap();
    assert!(e.to_string().contains("is a stream socket; this server needs a datagram one"), "{e}");
}

/// The churn: clients connect one after another, each echoes 64 bytes
/// once and closes, until `stop`; counts the served and the failed.
fn churn(port: u16, stop: Arc<AtomicBool>) -> (Arc<AtomicUsize>, thread::JoinHandle<Vec<String>>) {
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    let t = thread::spawn(move || {
        let mut errors = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let r = TcpStream::connect(("127.0.0.1", port)).and_then(|s| {
                s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
                echo_once(s)
            });
            match r {
                Ok(()) => drop(count.fetch_add(1, Ordering::SeqCst)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        errors
    });
    (served, t)
}

/// Kills a process left by a failed test (it is not our child).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: kill(2) on the pid the old echo reported.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// Whether process `pid` exists (a zombie counts until reaped).
fn exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// SIGHUP under churn: the old echo hands the socket to a new process
/// and exits after its drain; no client sees an error; the new one serves
/// and exits on SIGTERM; nothing is left.
fn restart_under_churn(mode: &str) {
    // Orphaned grandchildren (the new echo, once the old one exits) are
    // reparented to this process, so it can reap them.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut old =
        echo_cmd(&["--mode", mode, "--addr", &addr]).stdout(Stdio::piped()).spawn().unwrap();
    let rx = lines(&mut old);
    assert_eq!(next_line(&rx), format!("listening on {addr}"));
    let stop = Arc::new(AtomicBool::new(false));
    let (served, churner) = churn(port, Arc::clone(&stop));
    thread::sleep(Duration::from_millis(300));
    let before = served.load(Ordering::SeqCst);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(old.id() as i32, libc::SIGHUP) };
    // The old one's `handed over to pid N` and the new one's `listening on`
    // line, in either order (both write to the same pipe).
    let mut two = [next_line(&rx), next_line(&rx)];
    two.sort();
    assert_eq!(two[1], format!("listening on {addr}"), "the new process serves the same socket");
    let new_pid: i32 = two[0]
        .strip_prefix("handed over to pid ")
        .unwrap_or_else(|| panic!("unexpected line {:?}", two[0]))
        .parse()
        .unwrap();
    let _guard = KillOnDrop(new_pid);
    let status = wait_deadline(&mut old, Duration::from_secs(10))
        .expect("the old echo exits after its drain");
    assert!(status.success(), "old echo: {status:?}");
    let at_exit = served.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let errors = churner.join().unwrap();
    let total = served.load(Ordering::SeqCst);
    eprintln!(
        "{mode}: {before} served before SIGHUP, {at_exit} when the old exited, {total} in all"
    );
    assert!(
        errors.is_empty(),
        "{} failed connections across the restart: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        before > 10 && total > at_exit + 10,
        "both processes served ({before}, {at_exit}, {total})"
    );
    assert!(exists(new_pid));
    // SAFETY: kill and waitpid on a process that is now our child (subreaper).
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(new_pid, &mut status, libc::WNOHANG) };
        if r == new_pid {
            break;
        }
        assert!(Instant::now() < deadline, "the new echo did not exit on SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "new echo status {status}");
    assert!(!exists(new_pid), "no process is left");
}

#[test]
fn restart_under_churn_sync() {
    restart_under_churn("sync");
}

#[test]
fn restart_under_churn_threading() {
    restart_under_churn("threading");
}

#[test]
fn restart_under_churn_forking() {
    restart_under_churn("forking");
}

#[test]
fn restart_under_churn_event() {
    restart_under_churn("event");
}
