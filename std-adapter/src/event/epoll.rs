use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use embedded_io::ErrorType;
use sockserv_core::driver::{Event, EventSource, Interest, NbAccepted};

use super::conn::NbConn;
use super::{LISTENER, WAKER};
use crate::addr::Address;
use crate::socket::SocketListener;
use crate::sys::{Epoll, Events, Wants};

/// The event mode's readiness source on Linux: a listener, the shutdown
/// wake-up pipe and the connections in one epoll instance, level-triggered.
#[derive(Debug)]
pub struct EpollSource {
    epoll: Epoll,
    listener: SocketListener,
    events: Events,
    /// Per token, what it is registered for (`None`: not in epoll).
    registered: Vec<Option<Wants>>,
    /// The listener is shared with other loops' epoll instances and is
    /// registered `EPOLLEXCLUSIVE` (added while accepting, removed when not:
    /// an exclusive registration cannot be modified).
    exclusive: bool,
    /// Whether the listener is in this epoll (exclusive mode).
    listening: bool,
}

/// How many events one wait takes at most.
const EVENTS: usize = 1024;

fn wants(interest: Interest) -> Wants {
    Wants { read: interest.read, write: interest.write }
}

const NOTHING: Wants = Wants { read: false, write: false };
const READ: Wants = Wants { read: true, write: false };

impl EpollSource {
    /// A source for `listener` (bound and listening).
    ///
    /// # Errors
    /// epoll could not be created.
    pub fn new(listener: SocketListener) -> io::Result<Self> {
        let source = Self::with_mode(listener, false)?;
        source.epoll.add(source.listener.socket().as_fd(), LISTENER, NOTHING)?;
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
        let epoll = Epoll::new()?;
        epoll.add(listener.shared().wake_fd(), WAKER, READ)?;
        let events = Events::with_capacity(EVENTS);
        Ok(Self { epoll, listener, events, registered: Vec::new(), exclusive, listening: false })
    }

    /// The listener.
    pub fn listener(&self) -> &SocketListener {
        &self.listener
    }

    fn slot(&mut self, token: usize) -> &mut Option<Wants> {
        if self.registered.len() <= token {
            self.registered.resize(token + 1, None);
        }
        &mut self.registered[token]
    }

    /// A connection waiting for nothing is kept out of epoll altogether:
    /// epoll reports hang-ups and errors whatever the mask, and a socket the
    /// table will not read would be reported for ever (a spin).
    fn ctl(&mut self, token: usize, conn: &NbConn, interest: Interest) -> io::Result<()> {
        let wants = wants(interest);
        let registered = self.slot(token).is_some();
        let fd = conn.as_fd();
        match (registered, wants == NOTHING) {
            (false, true) => return Ok(()),
            (true, true) => self.epoll.delete(fd)?,
            (true, false) => self.epoll.modify(fd, token as u64, wants)?,
            (false, false) => self.epoll.add(fd, token as u64, wants)?,
        }
        *self.slot(token) = (wants != NOTHING).then_some(wants);
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
        let n = self.epoll.wait(&mut self.events, events.len(), timeout)?;
        for (i, event) in events.iter_mut().enumerate().take(n) {
            *event = match self.events.get(i) {
                (LISTENER, _) => Event::Accept,
                (WAKER, _) => {
                    self.listener.shared().drain();
                    Event::Woken
                }
                (token, ready) => Event::Conn { token: token as usize, read: ready.read },
            };
        }
        Ok(n)
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
            if on {
                self.epoll.add_exclusive(fd, LISTENER)?;
            } else {
                self.epoll.delete(fd)?;
            }
            self.listening = on;
            return Ok(());
        }
        self.epoll.modify(fd, LISTENER, if on { READ } else { NOTHING })
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
            let _ = self.epoll.delete(conn.as_fd());
        }
    }
}
