//! Every libc call of the std adapter lives here; the rest is safe Rust.
//!
//! Each function retries `EINTR` itself (CPython bpo-7978, bpo-35310).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

mod epoll;
pub mod fds;
pub mod files;
mod process;
mod shared;
mod socket;
mod stderr;

pub(crate) use epoll::{Epoll, Events};
pub use fds::Inherited;
pub(crate) use fds::{LISTEN_FDS_START, Successor, adopt_fd, unset_env};
pub(crate) use process::{
    ExitStatus, Pid, Signal, after_fork_in_child, fork_run, kill, listener_closed, listener_opened,
    pidfd_open, reap, stop_signal_registered,
};
pub(crate) use shared::SharedCounter;
pub(crate) use socket::{
    accept_nonblocking, dup_cloexec, is_not_socket, recv_dontwait, recv_from_trunc, send_dontwait,
    send_nosignal, send_to_dontwait, somaxconn, wmem_max,
};
pub(crate) use stderr::write_stderr_line;

/// What a descriptor waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wants {
    /// Readable (or EOF).
    pub read: bool,
    /// Writable.
    pub write: bool,
}

/// What a descriptor is ready for. A hang-up or an error counts as
/// readable, an error as writable too: the next read or write collects it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    /// Readable, hung up or in error.
    pub read: bool,
    /// Writable or in error.
    pub write: bool,
}

/// A poll(2) set, refilled before each wait (the poll readiness source).
#[derive(Debug, Default)]
pub(crate) struct PollSet(Vec<libc::pollfd>);

impl PollSet {
    /// Empties the set.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Adds `fd` waiting for `wants` (nothing: only hang-ups and errors).
    /// A descriptor closed meanwhile is reported by poll, never touched.
    pub(crate) fn push(&mut self, fd: RawFd, wants: Wants) {
        let mut events = 0;
        if wants.read {
            events |= libc::POLLIN;
        }
        if wants.write {
            events |= libc::POLLOUT;
        }
        self.0.push(pollfd(fd, events));
    }

    /// How many descriptors the set holds.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Waits until one is ready or `timeout` passes; how many are.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        poll_many(&mut self.0, timeout)
    }

    /// The `i`th descriptor's readiness after the wait.
    pub(crate) fn ready(&self, i: usize) -> Ready {
        let r = self.0[i].revents;
        Ready {
            read: r & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
            write: r & (libc::POLLOUT | libc::POLLERR) != 0,
        }
    }
}

/// Milliseconds left until `deadline` for poll/epoll (`-1`: no limit),
/// rounded up so that a short timeout does not become a busy 0.
pub(super) fn timeout_ms(deadline: Option<Instant>) -> i32 {
    match deadline {
        None => -1,
        Some(d) => {
            let ms = d.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

/// A `pollfd` for `fd` waiting for `events`.
fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// Waits until `wake` is readable (a stop request), `fd` (if any) is
/// ready for what it wants, or `timeout` passes (`None`: no limit).
/// Returns (wake readable, `fd` ready). The one wait of the adapter that a
/// stop request cuts short.
pub(crate) fn poll_or_wake(
    wake: BorrowedFd<'_>,
    fd: Option<(BorrowedFd<'_>, Wants)>,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let mut set = PollSet::default();
    set.push(wake.as_raw_fd(), Wants { read: true, write: false });
    if let Some((fd, wants)) = fd {
        set.push(fd.as_raw_fd(), wants);
    }
    set.wait(timeout)?;
    let ready = fd.is_some() && {
        let r = set.ready(1);
        r.read || r.write
    };
    Ok((set.ready(0).read, ready))
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

/// Waits until one of `fds` becomes readable (any number of them), at
/// most `timeout`.
pub(crate) fn poll_any(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|fd| pollfd(fd.as_raw_fd(), libc::POLLIN)).collect();
    poll_many(&mut pfds, timeout).map(drop)
}

/// poll(2) over any number of descriptors with their event masks; fills
/// `revents`. Retries EINTR with the time left. Every poll of this crate
/// goes through here.
fn poll_many(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
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
