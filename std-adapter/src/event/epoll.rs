use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use embedded_io::ErrorType;
use sockserv_core::driver::{Event, EventSource, Interest, NbAccepted};

use super::conn::NbConn;
use super::{LISTENER, WAKER};
use crate::addr::Address;
use crate::socket::SocketListener;
use crate::sys;

/// The event mode's readiness source on Linux: a listener, the shutdown
/// wake-up pipe and the connections in one epoll instance, level-triggered.
#[derive(Debug)]
pub struct EpollSource {
    epoll: OwnedFd,
    listener: SocketListener,
    buf: Vec<libc::epoll_event>,
    /// Per token, the events it is registered for (`None`: not in epoll).
    registered: Vec<Option<u32>>,
    /// The listener is shared with other loops' epoll instances and is
    /// registered `EPOLLEXCLUSIVE` (added while accepting, removed when not:
    /// an exclusive registration cannot be modified).
    exclusive: bool,
    /// Whether the listener is in this epoll (exclusive mode).
    listening: bool,
}

fn mask(interest: Interest) -> u32 {
    let mut m = 0;
    if interest.read {
        m |= libc::EPOLLIN as u32;
    }
    if interest.write {
        m |= libc::EPOLLOUT as u32;
    }
    m
}

impl EpollSource {
    /// A source for `listener` (bound and listening).
    ///
    /// # Errors
    /// epoll could not be created.
    pub fn new(listener: SocketListener) -> io::Result<Self> {
        let source = Self::with_mode(listener, false)?;
        let fd = source.listener.socket().as_fd();
        sys::epoll_ctl(source.epoll.as_fd(), libc::EPOLL_CTL_ADD, fd, 0, LISTENER)?;
        Ok(source)
    }

    /// A source for a listener other loops' sources wait on too: it is
    /// registered with `EPOLLEXCLUSIVE`, so a new connection wakes one
    /// waiting loop, not all of them.
    ///
    /// # Errors
    /// epoll could not be created.
    pub fn new_exclusive(listener: SocketListener) -> io::Result<Self> {
        Self::with_mode(listener, true)
    }

    fn with_mode(listener: SocketListener, exclusive: bool) -> io::Result<Self> {
        let epoll = sys::epoll_create()?;
        let wake = listener.shared().wake_fd();
        sys::epoll_ctl(epoll.as_fd(), libc::EPOLL_CTL_ADD, wake, libc::EPOLLIN as u32, WAKER)?;
        let buf = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        Ok(Self { epoll, listener, buf, registered: Vec::new(), exclusive, listening: false })
    }

    /// The listener.
    pub fn listener(&self) -> &SocketListener {
        &self.listener
    }

    fn slot(&mut self, token: usize) -> &mut Option<u32> {
        if self.registered.len() <= token {
            self.registered.resize(token + 1, None);
        }
        &mut self.registered[token]
    }

    /// A connection waiting for nothing is kept out of epoll altogether:
    /// epoll reports hang-ups and errors whatever the mask, and a socket the
    /// table will not read would be reported for ever (a spin).
    fn ctl(&mut self, token: usize, conn: &NbConn, interest: Interest) -> io::Result<()> {
        let events = mask(interest);
        let registered = self.slot(token).is_some();
        let op = match (registered, events) {
            (false, 0) => return Ok(()),
            (true, 0) => libc::EPOLL_CTL_DEL,
            (true, _) => libc::EPOLL_CTL_MOD,
            (false, _) => libc::EPOLL_CTL_ADD,
        };
        sys::epoll_ctl(self.epoll.as_fd(), op, conn.as_fd(), events, token as u64)?;
        *self.slot(token) = (events != 0).then_some(events);
        Ok(())
    }
}

impl ErrorType for EpollSource {
    type Error = io::Error;
}

impl EventSource for EpollSource {
    type Conn = NbConn;
    type Address = Address;

    fn wait(&mut self, timeout: Option<Duration>, events: &mut [Event]) -> io::Result<usize> {
        let max = events.len().min(self.buf.len());
        let n = sys::epoll_wait(self.epoll.as_fd(), &mut self.buf[..max], timeout)?;
        let mut out = 0;
        for i in 0..n {
            let ev = self.buf[i];
            let (token, bits) = (ev.u64, ev.events);
            let event = match token {
                LISTENER => Event::Accept,
                WAKER => {
                    self.listener.shared().drain();
                    Event::Woken
                }
                t => {
                    let t = t as usize;
                    let read = bits & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
                    let write = bits & (libc::EPOLLOUT | libc::EPOLLERR) as u32 != 0;
                    Event::Conn { token: t, read, write }
                }
            };
            events[out] = event;
            out += 1;
        }
        Ok(out)
    }

    fn try_accept(&mut self) -> io::Result<Option<NbAccepted<Self>>> {
        Ok(self.listener.accept_nonblocking()?.map(|(s, a)| (NbConn::new(s), a)))
    }

    fn set_accepting(&mut self, on: bool) -> io::Result<()> {
        let fd = self.listener.socket().as_fd();
        if self.exclusive {
            if on == self.listening {
                return Ok(());
            }
            let (op, events) = if on {
                (libc::EPOLL_CTL_ADD, (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32)
            } else {
                (libc::EPOLL_CTL_DEL, 0)
            };
            sys::epoll_ctl(self.epoll.as_fd(), op, fd, events, LISTENER)?;
            self.listening = on;
            return Ok(());
        }
        let events = if on { libc::EPOLLIN as u32 } else { 0 };
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_MOD, fd, events, LISTENER)
    }

    fn register(&mut self, token: usize, conn: &mut NbConn, interest: Interest) -> io::Result<()> {
        *self.slot(token) = None;
        self.ctl(token, conn, interest)
    }

    fn reregister(
        &mut self,
        token: usize,
        conn: &mut NbConn,
        interest: Interest,
    ) -> io::Result<()> {
        self.ctl(token, conn, interest)
    }

    fn deregister(&mut self, token: usize, conn: &mut NbConn) {
        if self.slot(token).take().is_some() {
            let _ = sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_DEL, conn.as_fd(), 0, 0);
        }
    }
}
