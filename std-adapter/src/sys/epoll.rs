//! epoll(7): the event mode's readiness on Linux, level-triggered.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{Ready, Wants, timeout_ms};

/// An epoll instance (close-on-exec).
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

/// What one wait reported: up to the capacity it was made with.
pub(crate) struct Events(Vec<libc::epoll_event>);

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("capacity", &self.0.len()).finish()
    }
}

impl Events {
    /// Room for `capacity` events per wait.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self(vec![libc::epoll_event { events: 0, u64: 0 }; capacity])
    }

    /// The `i`th event of the last wait: its token and readiness (hang-up
    /// and error count as readable, error as writable, so that the next
    /// read or write collects them).
    pub(crate) fn get(&self, i: usize) -> (u64, Ready) {
        let ev = self.0[i];
        let bits = ev.events;
        let read = bits & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        let write = bits & (libc::EPOLLOUT | libc::EPOLLERR) as u32 != 0;
        (ev.u64, Ready { read, write })
    }
}

fn mask(wants: Wants) -> u32 {
    let mut m = 0;
    if wants.read {
        m |= libc::EPOLLIN as u32;
    }
    if wants.write {
        m |= libc::EPOLLOUT as u32;
    }
    m
}

impl Epoll {
    /// A new instance.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes flags and returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: i32, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are open (borrowed); `ev` is a valid event.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Adds `fd` under `token`, waiting for `wants` (nothing: registered,
    /// reporting only hang-ups and errors).
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64, wants: Wants) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, mask(wants), token)
    }

    /// Adds a listener other instances wait on too, readable,
    /// `EPOLLEXCLUSIVE` (one waiting instance is woken per connection). An
    /// exclusive registration cannot be modified, only deleted.
    pub(crate) fn add_exclusive(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let events = (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32;
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Changes what `fd` waits for.
    pub(crate) fn modify(&self, fd: BorrowedFd<'_>, token: u64, wants: Wants) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, mask(wants), token)
    }

    /// Removes `fd`.
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for at most `max` events into `events`; returns how many.
    /// Retries EINTR with the time left.
    pub(crate) fn wait(
        &self,
        events: &mut Events,
        max: usize,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let max = max.min(events.0.len());
        let buf = &mut events.0[..max];
        loop {
            let ms = timeout_ms(deadline);
            let max = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: `buf` has room for `max` events; the epoll fd is open.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), buf.as_mut_ptr(), max, ms) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
