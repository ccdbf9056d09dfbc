//! Processes: fork, pidfd, reaping, signals.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// A child's process id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pid(libc::pid_t);

impl Pid {
    pub(crate) fn from_raw(pid: libc::pid_t) -> Self {
        Self(pid)
    }
}

/// How a reaped child ended (`waitpid`'s status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExitStatus(i32);

impl ExitStatus {
    /// The exit code, when the child exited (`None`: a signal ended it).
    pub(crate) fn code(self) -> Option<i32> {
        libc::WIFEXITED(self.0).then(|| libc::WEXITSTATUS(self.0))
    }
}

/// The signals the std adapter sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `SIGTERM`: asks to end.
    Term,
    /// `SIGKILL`: ends.
    Kill,
}

/// Forks; the child runs `run` and leaves with `_exit(run())`, never
/// returning into the caller, running no destructor and flushing no stdio of
/// the parent's. Returns the child's pid in the parent.
///
/// Precondition (not checkable here, documented on `Forking`): in a process
/// with other threads the child may only do async-signal-safe work, because
/// locks held by those threads at the fork stay locked in the child. The
/// forking strategy requires a single-threaded process for that reason.
pub(crate) fn fork_run<F: FnOnce() -> i32>(run: F) -> io::Result<Pid> {
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
        pid => Ok(Pid(pid)),
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits.
pub(crate) fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.0, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reaps `pid` if it has exited (`block`: wait until it does). Returns its
/// exit status (`Some`) once reaped, `None` if still running. Only ever
/// waits for the given pid (never `-1`: CPython issue 1540386).
pub(crate) fn reap(pid: Pid, block: bool) -> io::Result<Option<ExitStatus>> {
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid int for waitpid to write.
        let r = unsafe { libc::waitpid(pid.0, &mut status, flags) };
        match r {
            0 => return Ok(None),
            r if r == pid.0 => return Ok(Some(ExitStatus(status))),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// Sends `signal` to `pid`, a child of ours not yet reaped (so the pid
/// cannot have been reused). A child that is already gone is not an error.
pub(crate) fn kill(pid: Pid, signal: Signal) {
    let signal = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    if pid.0 > 0 {
        // SAFETY: kill takes two integers; `pid` is positive (a child's).
        unsafe { libc::kill(pid.0, signal) };
    }
}

/// Signals [`stop_signal_registered`] was told about (a bit per signal
/// number below 64), for [`after_fork_in_child`].
static STOP_SIGNALS: AtomicU64 = AtomicU64::new(0);

/// Remembers `signal` as a stop signal, so that forked children reset it.
pub(crate) fn stop_signal_registered(signal: i32) {
    if (0..64).contains(&signal) {
        STOP_SIGNALS.fetch_or(1 << signal, Ordering::SeqCst);
    }
}

/// Listening sockets of this process (`-1`: a free place), for
/// [`after_fork_in_child`] to close. Atomics, not a lock: the child reads
/// them after a fork, where only async-signal-safe work is allowed.
static LISTENERS: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];

/// Remembers `fd` as a listening socket that forked children close.
/// Beyond 64 listeners the rest stay open in children (they would keep
/// the port while they run, nothing worse).
pub(crate) fn listener_opened(fd: RawFd) {
    for place in &LISTENERS {
        if place.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return;
        }
    }
}

/// Forgets `fd` (called before it is closed).
pub(crate) fn listener_closed(fd: RawFd) {
    for place in &LISTENERS {
        if place.compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return;
        }
    }
}

/// In a forked child, before serving: closes the listening sockets (the
/// child must not keep a port after the parent exits) and gives the stop
/// signals their default action back (the parent's handlers would only
/// set a flag the child never reads). Async-signal-safe calls only.
pub(crate) fn after_fork_in_child() {
    for place in &LISTENERS {
        let fd = place.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: the child owns its copy of the descriptor table; the
            // parent's Socket value for this fd is never used or dropped in
            // the child, which leaves with _exit.
            unsafe { libc::close(fd) };
        }
    }
    let signals = STOP_SIGNALS.load(Ordering::SeqCst);
    for sig in 0..64 {
        if signals & (1 << sig) != 0 {
            // SAFETY: signal(2) is async-signal-safe; SIG_DFL is valid.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}
