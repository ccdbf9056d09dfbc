use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use embedded_io::ErrorType;
use sockserv_core::driver::{Event, EventSource, Interest, NbAccepted};

use super::conn::NbConn;
use crate::addr::Address;
use crate::socket::SocketListener;
use crate::sys::{PollSet, Wants};

/// The portable fallback of [`EpollSource`](super::EpollSource): poll(2)
/// over the listener, the wake-up pipe and every connection, rebuilt each
/// wait (O(connections) per wait: fine for hundreds, not for 10,000).
#[derive(Debug)]
pub struct PollSource {
    listener: SocketListener,
    accepting: bool,
    /// Per token: the descriptor and what it waits for.
    conns: Vec<Option<(RawFd, Interest)>>,
    fds: PollSet,
    tokens: Vec<usize>,
    /// Where the next wait starts looking, so that more ready connections
    /// than one wait reports take turns (no starvation of high tokens).
    next_start: usize,
}

impl PollSource {
    /// A source for `listener` (bound and listening).
    pub fn new(listener: SocketListener) -> Self {
        Self {
            listener,
            accepting: false,
            conns: Vec::new(),
            fds: PollSet::default(),
            tokens: Vec::new(),
            next_start: 0,
        }
    }

    /// The listener.
    pub fn listener(&self) -> &SocketListener {
        &self.listener
    }

    fn set(&mut self, token: usize, entry: Option<(RawFd, Interest)>) {
        if self.conns.len() <= token {
            self.conns.resize(token + 1, None);
        }
        self.conns[token] = entry;
    }
}

impl ErrorType for PollSource {
    type Error = io::Error;
}

impl EventSource for PollSource {
    type Conn = NbConn;
    type Address = Address;

    fn wait(&mut self, timeout: Option<Duration>, events: &mut [Event]) -> io::Result<usize> {
        self.fds.clear();
        self.tokens.clear();
        self.fds
            .push(self.listener.shared().wake_fd().as_raw_fd(), Wants { read: true, write: false });
        let listen = Wants { read: self.accepting, write: false };
        self.fds.push(self.listener.socket().as_raw_fd(), listen);
        let n = self.conns.len();
        let start = if n == 0 { 0 } else { self.next_start % n };
        for token in (start..n).chain(0..start) {
            let Some((fd, interest)) = self.conns[token] else { continue };
            if !interest.read && !interest.write {
                continue; // nothing to wait for (and no hang-up spin)
            }
            self.fds.push(fd, Wants { read: interest.read, write: interest.write });
            self.tokens.push(token);
        }
        self.fds.wait(timeout)?;
        let mut ready = Vec::with_capacity(2);
        if self.fds.ready(0).read {
            self.listener.shared().drain();
            ready.push(Event::Woken);
        }
        if self.fds.ready(1).read {
            ready.push(Event::Accept);
        }
        let mut out = 0;
        for event in ready {
            if out < events.len() {
                events[out] = event;
                out += 1;
            }
        }
        self.next_start = 0;
        for (i, &token) in (2..self.fds.len()).zip(&self.tokens) {
            let r = self.fds.ready(i);
            if !r.read && !r.write {
                continue;
            }
            if out == events.len() {
                // More are ready than fit: start with this one next time.
                self.next_start = token;
                break;
            }
            events[out] = Event::Conn { token, read: r.read };
            out += 1;
        }
        Ok(out)
    }

    fn try_accept(&mut self) -> io::Result<Option<NbAccepted<Self>>> {
        Ok(self.listener.accept_nonblocking()?.map(|(s, a)| (NbConn::new(s), a)))
    }

    fn set_accepting(&mut self, on: bool) -> io::Result<()> {
        self.accepting = on;
        Ok(())
    }

    fn register(&mut self, token: usize, conn: &mut NbConn, interest: Interest) -> io::Result<()> {
        self.set(token, Some((conn.as_fd().as_raw_fd(), interest)));
        Ok(())
    }

    fn reregister(
        &mut self,
        token: usize,
        conn: &mut NbConn,
        interest: Interest,
    ) -> io::Result<()> {
        self.register(token, conn, interest)
    }

    fn deregister(&mut self, token: usize, _: &mut NbConn) {
        self.set(token, None);
    }
}
