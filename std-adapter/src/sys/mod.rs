//! Every libc call of the std adapter lives here; the rest is safe Rust.
//!
//! Each function retries `EINTR` itself (CPython bpo-7978, bpo-35310).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

mod fds;
mod shared;
mod stderr;
pub(crate) use fds::{LISTEN_FDS_START, Successor, adopt_fd, unset_env};
pub(crate) use shared::SharedCounter;
pub(crate) use stderr::write_stderr_line;

/// Milliseconds left until `deadline` for poll/epoll (`-1`: no limit),
/// rounded up so that a short timeout does not become a busy 0.
fn timeout_ms(deadline: Option<Instant>) -> i32 {
    match deadline {
        None => -1,
        Some(d) => {
            let ms = d.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

/// A `pollfd` for `fd` waiting for `events`.
pub(crate) fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// Readiness of the descriptors given to [`poll_readable`].
pub(crate) struct Polled {
    /// Per descriptor, whether it is readable (or hung up / in error).
    pub ready: [bool; 2],
    /// Whether any descriptor was ready before the timeout.
    pub any: bool,
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no
/// limit).
pub(crate) fn poll_readable(
    fds: [BorrowedFd<'_>; 2],
    timeout: Option<Duration>,
) -> io::Result<Polled> {
    let mut pfds = fds.map(|fd| pollfd(fd.as_raw_fd(), libc::POLLIN));
    let n = poll_many(&mut pfds, timeout)?;
    Ok(Polled { ready: pfds.map(|p| p.revents != 0), any: n > 0 })
}

/// A close-on-exec duplicate of `fd` (`fcntl(F_DUPFD_CLOEXEC)`): a second
/// handle on the same open socket, owned by the caller.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) reads no memory of ours; on a
    // descriptor that is not open it fails with EBADF.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Waits until `fd` is readable or `timeout` passes; whether it is.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    Ok(poll_many(&mut [pollfd(fd.as_raw_fd(), libc::POLLIN)], timeout)? > 0)
}

/// A non-blocking, close-on-exec pipe: (read end, write end). The
/// shutdown waker (a self-pipe, so that a signal handler can write to it).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes one byte to a non-blocking pipe; a full pipe already wakes the
/// reader, so `EAGAIN` is success.
pub(crate) fn pipe_poke(fd: BorrowedFd<'_>) {
    loop {
        // SAFETY: writes 1 byte from a valid 1-byte buffer to an open fd.
        let r = unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Reads everything waiting in a non-blocking pipe.
pub(crate) fn pipe_drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reads at most buf.len() bytes into a valid buffer.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// `recvfrom(2)` with `MSG_TRUNC`: returns the datagram's real length even
/// when it was larger than `buf` (Linux: UDP and Unix datagram sockets).
pub(crate) fn recv_from_trunc(sock: &Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    loop {
        // SAFETY: `buf` is valid for writes of buf.len() bytes; the address
        // storage is filled by recvfrom and its length updated through the
        // pointer, which SockAddr::try_init hands us for exactly that.
        let res = unsafe {
            SockAddr::try_init(|storage, len| {
                let n = libc::recvfrom(
                    sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                    storage.cast(),
                    len,
                );
                if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
            })
        };
        match res {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The kernel's `net.core.somaxconn` (what CPython now uses as the default
/// backlog), or libc's `SOMAXCONN` when it cannot be read.
pub(crate) fn somaxconn() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(libc::SOMAXCONN)
}

/// The kernel's `net.core.wmem_max`: the largest send buffer an
/// unprivileged `SO_SNDBUF` gets (Linux doubles it), or the usual default
/// (212,992) when it cannot be read.
pub(crate) fn wmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(212_992)
}

/// Forks; the child runs `run` and leaves with `_exit(run())`, never
/// returning into the caller, running no destructor and flushing no stdio of
/// the parent's. Returns the child's pid in the parent.
///
/// Precondition (not checkable here, documented on `Forking`): in a process
/// with other threads the child may only do async-signal-safe work, because
/// locks held by those threads at the fork stay locked in the child. The
/// forking strategy requires a single-threaded process for that reason.
pub(crate) fn fork_run<F: FnOnce() -> i32>(run: F) -> io::Result<libc::pid_t> {
    // SAFETY: fork has no memory-safety preconditions of its own; the
    // child's restrictions are the caller's documented precondition, and the
    // child never returns from this function: it leaves through _exit.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // Whatever happens in the child (even a panic out of a hook),
            // it must never unwind back into the parent's code.
            let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or(1);
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(status) }
        }
        pid => Ok(pid),
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reaps `pid` if it has exited (`block`: wait until it does). Returns its
/// exit status (`Some`) once reaped, `None` if still running. Only ever
/// waits for the given pid (never `-1`: CPython issue 1540386).
pub(crate) fn reap(pid: libc::pid_t, block: bool) -> io::Result<Option<i32>> {
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid int for waitpid to write.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        match r {
            0 => return Ok(None),
            r if r == pid => return Ok(Some(status)),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// Waits until `wake` (if any) or one of `fds` becomes readable (any
/// number of them), at most `timeout`. Returns whether `wake` is readable.
pub(crate) fn poll_any(
    wake: Option<BorrowedFd<'_>>,
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let mut pfds: Vec<libc::pollfd> =
        wake.iter().chain(fds).map(|fd| pollfd(fd.as_raw_fd(), libc::POLLIN)).collect();
    poll_many(&mut pfds, timeout)?;
    Ok(wake.is_some() && pfds[0].revents != 0)
}

/// Sends `signal` to `pid`, a child of ours not yet reaped (so the pid
/// cannot have been reused). A child that is already gone is not an error.
pub(crate) fn kill(pid: libc::pid_t, signal: i32) {
    if pid > 0 {
        // SAFETY: kill takes two integers; `pid` is positive (a child's).
        unsafe { libc::kill(pid, signal) };
    }
}

/// Waits until `fd` can be written to or `wake` is readable (a stop
/// request), at most `timeout`. Returns (wake readable, socket ready).
pub(crate) fn poll_writable_or_wake(
    wake: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let mut fds = [pollfd(wake.as_raw_fd(), libc::POLLIN), pollfd(fd.as_raw_fd(), libc::POLLOUT)];
    poll_many(&mut fds, timeout)?;
    Ok((fds[0].revents != 0, fds[1].revents != 0))
}

/// `send(MSG_DONTWAIT | MSG_NOSIGNAL)` on a blocking socket: what fits, or
/// `WouldBlock`.
pub(crate) fn send_dontwait(sock: &Socket, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of buf.len() bytes; the fd is open.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// An epoll instance (close-on-exec).
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes flags and returns a new fd or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(op)` for `fd` with `events`, carrying `token`.
pub(crate) fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: i32,
    fd: BorrowedFd<'_>,
    events: u32,
    token: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: both descriptors are open (borrowed); `ev` is a valid event.
    let r = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `epoll_wait` into `buf`; returns how many events. Retries EINTR with
/// the time left.
pub(crate) fn epoll_wait(
    epoll: BorrowedFd<'_>,
    buf: &mut [libc::epoll_event],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = timeout_ms(deadline);
        let max = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        // SAFETY: `buf` has room for `max` events; the epoll fd is open.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), buf.as_mut_ptr(), max, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// poll(2) over any number of descriptors with their event masks; fills
/// `revents`. Retries EINTR with the time left. Every poll of this crate
/// goes through here.
pub(crate) fn poll_many(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = timeout_ms(deadline);
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Signals [`stop_signal_registered`] was told about (a bit per signal
/// number below 64), for [`after_fork_in_child`].
static STOP_SIGNALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Remembers `signal` as a stop signal, so that forked children reset it.
pub(crate) fn stop_signal_registered(signal: i32) {
    if (0..64).contains(&signal) {
        STOP_SIGNALS.fetch_or(1 << signal, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `recv(MSG_DONTWAIT)` on a blocking socket: what is there, or
/// `WouldBlock`.
pub(crate) fn recv_dontwait(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of buf.len() bytes; the fd is open.
    let n = unsafe {
        libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// In a forked child, before serving: closes the listening socket (the
/// child must not keep the port after the parent exits) and gives the stop
/// signals their default action back (the parent's handlers would only
/// set a flag the child never reads). Async-signal-safe calls only.
pub(crate) fn after_fork_in_child(listener: Option<RawFd>) {
    if let Some(fd) = listener {
        // SAFETY: the child owns its copy of the descriptor table; the
        // parent's Socket value for this fd is never used or dropped in the
        // child, which leaves with _exit.
        unsafe { libc::close(fd) };
    }
    let signals = STOP_SIGNALS.load(std::sync::atomic::Ordering::SeqCst);
    for sig in 0..64 {
        if signals & (1 << sig) != 0 {
            // SAFETY: signal(2) is async-signal-safe; SIG_DFL is valid.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}
