//! The listener: a pool of smoltcp sockets on one port as a
//! [`StreamListener`].

use core::cell::Cell;
use core::time::Duration;

use embedded_io::ErrorType;
use smoltcp::iface::SocketHandle;
use smoltcp::wire::IpEndpoint;
use sockserv_core::driver::{Accepted, Readiness, StreamListener, Wait};
use sockserv_core::logging::{Level, report};

use crate::conn::{Served, TcpConn};
use crate::error::Error;
use crate::loss::Stats;
use crate::millis::{Micros, micros};
use crate::net::{Net, Sockets};
use crate::pool::Pool;

/// What a SYN gets when no socket of the listener's pool is listening:
/// the backlog is full, or every pooled socket is serving or closing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Dropped unanswered, as Linux and lwIP do with a full backlog: the
    /// client retransmits its SYN (after 1 s, 3 s, 7 s, ...) and is served
    /// once a socket listens again. Counted in
    /// [`Stats::syns_dropped`](crate::Stats::syns_dropped). The default.
    #[default]
    Drop,
    /// Answered with a RST, smoltcp's own behaviour: the client sees
    /// "connection refused" at once.
    Reset,
    /// Accepted, then refused by the server: the listener offers
    /// connections even past [`Options::max_connections`], so an event
    /// server with a full table closes them at once and tells
    /// `Service::handle_table_full` (the client sees its connection
    /// accepted, then closed). A SYN that finds every pooled socket busy
    /// is dropped, as with [`Drop`](Self::Drop).
    Refuse,
}

/// A listener's knobs, named after CPython's where they have a twin.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `request_queue_size`: how many connections may be listening or
    /// waiting to be accepted at once (at most the pool's size). A SYN
    /// beyond it finds no listening socket and meets
    /// [`when_full`](Self::when_full). Default 5 (CPython's).
    pub backlog: usize,
    /// What a SYN that finds no listening socket gets. Default
    /// [`WhenFull::Drop`] (the kernel's behaviour).
    pub when_full: WhenFull,
    /// How many accepted connections may be open at once: while that many
    /// are, the listener offers no more (`wait` does not report one, the
    /// event source reports no `Accept`), so new connections wait in the
    /// backlog and, beyond it, meet [`when_full`](Self::when_full). Set it
    /// to the event server's table capacity, so that the table never has
    /// to refuse. Ignored with [`WhenFull::Refuse`]. Default `None` (only
    /// the pool's size limits it).
    pub max_connections: Option<usize>,
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
    /// reset and reused. Default 30 s; at most 24 days (a longer one
    /// counts as 24 days).
    pub close_timeout: Duration,
    /// How long a connection may stay half-open (a SYN taken, the
    /// handshake not finished) before its socket is reset and listens
    /// again, so that SYNs from peers that vanished cannot hold the
    /// backlog for ever. Only the handshake is timed: an established
    /// connection waits to be accepted as long as it takes. Default 10 s;
    /// at most 24 days, as `close_timeout`.
    pub handshake_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backlog: 5,
            when_full: WhenFull::Drop,
            max_connections: None,
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
/// frames). A SYN beyond the backlog meets [`Options::when_full`]
/// (dropped by default, so the client retries). A dropped
/// [`TcpConn`] keeps its socket until TCP's close is over (TIME-WAIT is
/// cut short: its socket may listen again at once), so give the pool
/// `backlog` + the connections served at once + one or two closing.
///
/// When [`Options::max_connections`] are open, the listener says so once
/// through the logging shim (`sockserv_core::logging`, a warning), counts
/// the episode in [`Stats::connection_cap_reached`], and says again when
/// a connection closed and it offers connections again: an operator whose
/// clients wait can tell why.
///
/// Dropping the listener closes its listening sockets, resets the
/// connections nobody accepted, and frees every socket of its pool once
/// its close is over.
pub struct TcpListener<'s, 'a> {
    net: &'s dyn Net<'a>,
    port: u16,
    options: Options,
    /// Whether the last look found `max_connections` open.
    full: Cell<bool>,
}

impl<'s, 'a> TcpListener<'s, 'a> {
    pub(crate) fn new(net: &'s dyn Net<'a>, port: u16, options: Options) -> Self {
        Self { net, port, options, full: Cell::new(false) }
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
        if self.at_limit(&socks.pool, &mut socks.losses.stats) {
            return None;
        }
        let (handle, remote) = socks.pool.accept(self.port, &mut socks.set)?;
        // This connection may fill the cap: say so now, not at the next look.
        self.at_limit(&socks.pool, &mut socks.losses.stats);
        let socket = socks.set.get_mut::<smoltcp::socket::tcp::Socket>(handle);
        socket.set_nagle_enabled(!self.options.disable_nagle_algorithm);
        if let Some(interval) = self.options.keep_alive {
            let interval = micros(interval);
            socket.set_keep_alive(Some(smoltcp::time::Duration::from_micros(interval)));
            let timeout = interval.saturating_mul(3);
            socket.set_timeout(Some(smoltcp::time::Duration::from_micros(timeout)));
        }
        Some((handle, remote))
    }

    /// Whether a connection waits to be accepted (and may be).
    pub(crate) fn ready(&self) -> bool {
        self.offers(&mut self.net.sockets(), true)
    }

    /// Whether a connection waits to be accepted (and may be), if
    /// `asked`; follows the cap (see [`at_limit`](Self::at_limit)) either
    /// way, as an event source whose server stopped accepting must.
    /// (`socks`: the stack's sockets, already borrowed.)
    pub(crate) fn offers(&self, socks: &mut Sockets<'_>, asked: bool) -> bool {
        !self.at_limit(&socks.pool, &mut socks.losses.stats)
            && asked
            && socks.pool.ready(self.port, &mut socks.set)
    }

    /// Whether [`Options::max_connections`] are open (and the policy
    /// honours it). Tells the logging shim when that changes, and counts
    /// each time it fills.
    fn at_limit(&self, pool: &Pool<'_>, stats: &mut Stats) -> bool {
        let limit = match self.options.when_full {
            WhenFull::Refuse => None,
            WhenFull::Drop | WhenFull::Reset => self.options.max_connections,
        };
        let Some(max) = limit else { return false };
        let full = pool.served(self.port) >= max;
        if full != self.full.replace(full) {
            if full {
                stats.connection_cap_reached = stats.connection_cap_reached.wrapping_add(1);
                let policy = match self.options.when_full {
                    WhenFull::Reset => "reset",
                    _ => "dropped (the clients retry)",
                };
                report(
                    Level::Warn,
                    format_args!(
                        "port {}: {max} connections open (max_connections): new ones wait in \
                         the backlog ({}), then their SYNs are {policy}",
                        self.port, self.options.backlog
                    ),
                );
            } else {
                report(
                    Level::Warn,
                    format_args!(
                        "port {}: below {max} connections again (max_connections): accepting",
                        self.port
                    ),
                );
            }
        }
        full
    }

    /// Polls and sleeps until `deadline`, or until `done` says so.
    fn run(&self, deadline: Option<Micros>, done: impl Fn(&Self) -> bool) -> Readiness {
        loop {
            self.net.poll();
            if done(self) {
                return Readiness::Ready;
            }
            if self.net.passed(deadline) {
                return Readiness::TimedOut;
            }
            if self.net.idle(deadline) == Readiness::Woken {
                return Readiness::Woken;
            }
        }
    }
}

impl ErrorType for TcpListener<'_, '_> {
    type Error = Error;
}

impl<'s, 'a> Wait for TcpListener<'s, 'a> {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, Error> {
        let deadline = self.net.deadline(timeout);
        Ok(self.run(deadline, Self::ready))
    }

    fn pause(&mut self, duration: Duration) -> Result<Readiness, Error> {
        let deadline = self.net.deadline(Some(duration));
        // Keep the interface going, but do not watch for connections.
        Ok(match self.run(deadline, |_| false) {
            Readiness::Ready => Readiness::TimedOut,
            other => other,
        })
    }
}

impl<'s, 'a> StreamListener for TcpListener<'s, 'a> {
    type Stream = TcpConn<'s, 'a>;
    type Address = IpEndpoint;

    fn try_accept(&mut self) -> Result<Option<Accepted<Self>>, Error> {
        Ok(self.accept_socket().map(|(handle, remote)| {
            (TcpConn::new(Served::new(self.net, handle), self.options.stream_timeout), remote)
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
