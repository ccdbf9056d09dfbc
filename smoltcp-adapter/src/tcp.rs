//! The listener: a pool of smoltcp sockets on one port as a
//! [`StreamListener`].

use core::time::Duration;

use embedded_io::ErrorType;
use smoltcp::iface::SocketHandle;
use smoltcp::wire::IpEndpoint;
use sockserv_core::{Accepted, Readiness, StreamListener};

use crate::conn::TcpConn;
use crate::error::Error;
use crate::stack::Net;
use crate::wait::Woke;

/// A listener's knobs, named after CPython's where they have a twin.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `request_queue_size`: how many connections may be listening or
    /// waiting to be accepted at once (at most the pool's size). A SYN
    /// beyond it finds no listening socket and smoltcp answers it with a
    /// RST: the client sees "connection refused" at once, where a full
    /// Linux backlog would drop the SYN and let the client retry. Default 5
    /// (CPython's).
    pub backlog: usize,
    /// `StreamRequestHandler.timeout`: a read, or a write waiting for room,
    /// that waits longer fails with `TimedOut`. Default `None` (for ever).
    pub stream_timeout: Option<Duration>,
    /// `disable_nagle_algorithm`. Default `false`.
    pub disable_nagle_algorithm: bool,
    /// TCP keep-alive on accepted connections (smoltcp's `set_keep_alive`),
    /// with smoltcp's `set_timeout` at three intervals: a peer that stays
    /// silent that long is reset. Default `None`.
    pub keep_alive: Option<Duration>,
    /// How long a dropped connection may take to finish TCP's close
    /// (FIN-WAIT-2 with a peer that never closes) before its socket is
    /// reset and reused. Default 30 s.
    pub close_timeout: Duration,
    /// How long a connection may stay half-open (a SYN taken, the
    /// handshake not finished) before its socket is reset and listens
    /// again, so that SYNs from peers that vanished cannot hold the
    /// backlog for ever. Only the handshake is timed: an established
    /// connection waits to be accepted as long as it takes. Default 10 s.
    pub handshake_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backlog: 5,
            stream_timeout: None,
            disable_nagle_algorithm: false,
            keep_alive: None,
            close_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A TCP listener on a smoltcp [`Stack`](crate::Stack): the equivalent of
/// the socket of `socketserver.TCPServer`.
///
/// smoltcp has no accept queue: a listening socket *becomes* the
/// connection. So the listener owns a pool of sockets on its port and
/// keeps up to [`Options::backlog`] of them listening or holding a
/// connection not yet accepted, re-arming a free socket after every
/// socket state change the interface reports (between two received
/// frames). A client beyond the backlog gets a RST. A dropped
/// [`TcpConn`] keeps its socket until TCP's close is over (TIME-WAIT is
/// cut short: its socket may listen again at once), so give the pool
/// `backlog` + the connections served at once + one or two closing.
///
/// Dropping the listener closes its listening sockets, resets the
/// connections nobody accepted, and frees every socket of its pool once
/// its close is over.
pub struct TcpListener<'s, 'a> {
    net: &'s dyn Net<'a>,
    port: u16,
    options: Options,
}

impl<'s, 'a> TcpListener<'s, 'a> {
    pub(crate) fn new(net: &'s dyn Net<'a>, port: u16, options: Options) -> Self {
        Self { net, port, options }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The stack this listener lives on.
    pub(crate) fn net(&self) -> &'s dyn Net<'a> {
        self.net
    }

    /// Takes the oldest connection waiting on the port and applies the
    /// options to its socket.
    pub(crate) fn accept_socket(&self) -> Option<(SocketHandle, IpEndpoint)> {
        let mut guard = self.net.sockets();
        let socks = &mut *guard;
        let (handle, remote) = socks.pool.accept(self.port, &mut socks.set)?;
        let socket = socks.set.get_mut::<smoltcp::socket::tcp::Socket>(handle);
        socket.set_nagle_enabled(!self.options.disable_nagle_algorithm);
        if let Some(interval) = self.options.keep_alive {
            socket.set_keep_alive(Some(to_smol(interval)));
            socket.set_timeout(Some(to_smol(interval.saturating_mul(3))));
        }
        Some((handle, remote))
    }

    /// Whether a connection waits to be accepted.
    pub(crate) fn ready(&self) -> bool {
        let mut socks = self.net.sockets();
        let socks = &mut *socks;
        socks.pool.ready(self.port, &mut socks.set)
    }

    /// Polls and sleeps until `deadline`, or until `done` says so.
    fn run(&self, deadline: Option<Duration>, done: impl Fn(&Self) -> bool) -> Readiness {
        loop {
            self.net.poll();
            if done(self) {
                return Readiness::Ready;
            }
            if deadline.is_some_and(|d| self.net.now() >= d) {
                return Readiness::TimedOut;
            }
            if self.net.idle(deadline) == Woke::Woken {
                return Readiness::Woken;
            }
        }
    }
}

impl ErrorType for TcpListener<'_, '_> {
    type Error = Error;
}

impl<'s, 'a> StreamListener for TcpListener<'s, 'a> {
    type Stream = TcpConn<'s, 'a>;
    type Address = IpEndpoint;

    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, Error> {
        let deadline = timeout.map(|t| self.net.now().saturating_add(t));
        Ok(self.run(deadline, Self::ready))
    }

    fn pause(&mut self, duration: Duration) -> Result<Readiness, Error> {
        let deadline = self.net.now().saturating_add(duration);
        // Keep the interface going, but do not watch for connections.
        Ok(match self.run(Some(deadline), |_| false) {
            Readiness::Ready => Readiness::TimedOut,
            other => other,
        })
    }

    fn try_accept(&mut self) -> Result<Option<Accepted<Self>>, Error> {
        Ok(self.accept_socket().map(|(handle, remote)| {
            (TcpConn::new(self.net, handle, self.options.stream_timeout), remote)
        }))
    }
}

impl Drop for TcpListener<'_, '_> {
    fn drop(&mut self) {
        {
            let mut socks = self.net.sockets();
            let socks = &mut *socks;
            socks.pool.retire(self.port, &mut socks.set);
        }
        self.net.poll();
    }
}

pub(crate) fn to_smol(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
