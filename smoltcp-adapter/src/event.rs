//! Event mode on smoltcp: the listener's pool as the accept side of an
//! [`EventSource`], its served sockets as [`NbConnection`]s, readiness
//! read off the sockets after every `iface.poll`.

use core::time::Duration;

use embedded_io::ErrorType;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpEndpoint;
use sockserv_core::driver::{Event, EventSource, Interest, NbAccepted, NbConnection, Readiness};

use crate::conn::Served;
use crate::error::Error;
use crate::net::Net;
use crate::pool::Watch;
use crate::tcp::TcpListener;

/// The event mode's readiness source on a smoltcp [`Stack`](crate::Stack):
/// a [`TcpListener`]'s pool plus the connections accepted from it, for
/// the core's [`EventServer`](sockserv_core::EventServer).
///
/// * **Accept:** a pooled socket that left LISTEN and finished the
///   handshake is an [`Event::Accept`] (while accepting is on). While it
///   is off (table full, accept back-off) the pool still takes connections
///   up to its backlog, as a kernel's listen queue does.
/// * **Readiness** of a registered connection is read off its socket
///   after every `iface.poll`: readable when it holds data, or can no
///   longer receive (EOF, reset); writable when its send buffer has room,
///   or can no longer send (the write then reports why). Only what the
///   connection registered for is reported: a socket waiting for nothing
///   is never reported, whatever happens to it, so nothing can spin.
/// * **Waiting** polls the interface and sleeps through the stack's
///   [`Wait`](crate::Wait) until a socket is ready, the timeout passes or
///   the wait says [`Readiness::Woken`] (reported as [`Event::Woken`]: the
///   server then re-checks its shutdown signal).
/// * Tokens are the core table's slot indices, kept beside each pooled
///   socket in the stack's [`Storage`](crate::Storage): no allocator, no
///   capacity of its own.
/// * A connection the table closes (dropped after a half-close) goes back
///   to the pool: once TCP's close is over (or `close_timeout` passed) its
///   socket listens again.
///
/// Size the pool for the table: the connections served at once, plus the
/// backlog, plus one or two finishing their close, and set
/// [`Options::max_connections`](crate::Options::max_connections) to the
/// table's capacity: then no `Accept` is reported while the table is
/// full, new connections wait in the backlog, and a client beyond it
/// meets [`Options::when_full`](crate::Options::when_full) (its SYN is
/// dropped and retried, by default) instead of the table's refusal.
///
/// ```
/// # use core::{convert::Infallible, time::Duration};
/// # use smoltcp::iface::{Config, Interface};
/// # use smoltcp::phy::{Loopback, Medium};
/// # use smoltcp::socket::tcp;
/// # use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
/// use sockserv_core::{EventHandler, EventServer, EventServerConfig, FixedPool, FixedSlots, Outbox, Step};
/// use sockserv_core::{service_fn, ShutdownFlag};
/// use sockserv_core::driver::Clock;
/// use sockserv_smoltcp::{Options, Spin, Stack, Storage, TcpEventSource};
///
/// struct Echo;
/// impl EventHandler for Echo {
///     type Error = Infallible;
///     fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Infallible> {
///         Ok(Step::consumed(out.write(input)))
///     }
/// }
/// # struct Uptime(std::time::Instant);
/// # impl Clock for Uptime { fn now(&self) -> Duration { self.0.elapsed() } }
/// # let mut device = Loopback::new(Medium::Ethernet);
/// # let config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
/// # let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
/// # iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(192, 168, 69, 1), 24)).unwrap());
/// # let socket = || tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 1024]), tcp::SocketBuffer::new(vec![0; 1024]));
///
/// // A stack as for sync mode; a pool sized for the table plus the backlog.
/// let mut storage = Storage::<8>::new();
/// let stack = Stack::new(iface, device, &mut storage, Spin, Uptime(std::time::Instant::now()));
/// let pool = [socket(), socket(), socket(), socket()];
/// let listener = stack.listen(7000, pool, Options { backlog: 1, ..Options::default() })?;
///
/// // The core's event loop over it, on the stack's clock: two
/// // connections sharing two 512-byte buffers. (`listener.into_event_server`
/// // makes the same server: see `EventTcpServer`.)
/// static FLAG: ShutdownFlag = ShutdownFlag::new();
/// let config = EventServerConfig { idle_timeout: Some(Duration::from_secs(60)), ..Default::default() };
/// let source = TcpEventSource::new(listener);
/// let clock = source.clock();
/// let mut server = EventServer::new(
///     source,
///     service_fn(|_| Echo),
///     clock,
///     &FLAG,
///     FixedSlots::<_, 2>::new(),
///     FixedPool::<512, 2>::new(),
///     config,
/// );
/// FLAG.request(); // (so that this example returns at once)
/// server.serve_forever(Duration::from_millis(500))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TcpEventSource<'s, 'a> {
    listener: TcpListener<'s, 'a>,
    accepting: bool,
    /// Where the next scan for ready sockets starts, so that a burst
    /// larger than the caller's event buffer cannot starve the rest.
    cursor: usize,
}

impl<'s, 'a> TcpEventSource<'s, 'a> {
    /// A source over `listener` (accepting off until the server turns it
    /// on).
    pub fn new(listener: TcpListener<'s, 'a>) -> Self {
        Self { listener, accepting: false, cursor: 0 }
    }

    /// The listener.
    pub fn get_ref(&self) -> &TcpListener<'s, 'a> {
        &self.listener
    }

    /// The listener back (connections accepted from it stay valid).
    pub fn into_inner(self) -> TcpListener<'s, 'a> {
        self.listener
    }

    fn net(&self) -> &'s dyn Net<'a> {
        self.listener.net()
    }

    /// Stores what is ready in `events`, `Accept` first; returns how many.
    /// Out of line: `wait`'s loop is smaller that way on a Cortex-M.
    #[inline(never)]
    fn collect(&mut self, events: &mut [Event]) -> usize {
        let mut n = 0;
        let mut socks = self.net().sockets();
        let socks = &mut *socks;
        // The cap is still followed (and told) while not accepting.
        if self.listener.offers(socks, self.accepting && !events.is_empty()) {
            events[0] = Event::Accept;
            n = 1;
        }
        let port = self.listener.port();
        let len = socks.pool.len();
        for k in 0..len {
            let i = (self.cursor + k) % len;
            let Some((handle, watch)) = socks.pool.watched(i, port) else { continue };
            let (read, write) = readiness(socks.set.get::<tcp::Socket>(handle), watch.interest);
            if !(read || write) {
                continue;
            }
            let Some(slot) = events.get_mut(n) else {
                // Start here next time.
                self.cursor = i;
                return n;
            };
            *slot = Event::Conn { token: watch.token, read };
            n += 1;
        }
        self.cursor = (self.cursor + 1) % len.max(1);
        n
    }

    fn watch(&mut self, conn: &NbTcpConn<'_, '_>, watch: Option<Watch>) -> Result<(), Error> {
        let port = self.listener.port();
        if self.net().sockets().pool.set_watch(port, conn.socket.handle, watch) {
            Ok(())
        } else {
            Err(Error::FOREIGN)
        }
    }
}

/// What a socket is ready for, of what `interest` asks.
fn readiness(socket: &tcp::Socket<'_>, interest: Interest) -> (bool, bool) {
    let read = interest.read && (socket.can_recv() || !socket.may_recv());
    let write = interest.write && (socket.can_send() || !socket.may_send());
    (read, write)
}

impl ErrorType for TcpEventSource<'_, '_> {
    type Error = Error;
}

impl<'s, 'a> EventSource for TcpEventSource<'s, 'a> {
    type Conn = NbTcpConn<'s, 'a>;
    type Address = IpEndpoint;

    /// Polls the interface and reports what is ready; sleeps through the
    /// stack's [`Wait`](crate::Wait) while nothing is. Never fails.
    fn wait(&mut self, timeout: Option<Duration>, events: &mut [Event]) -> Result<usize, Error> {
        let net = self.net();
        let deadline = net.deadline(timeout);
        loop {
            net.poll();
            let n = self.collect(events);
            if n > 0 || events.is_empty() {
                return Ok(n);
            }
            if net.passed(deadline) {
                return Ok(0);
            }
            if net.idle(deadline) == Readiness::Woken {
                events[0] = Event::Woken;
                return Ok(1);
            }
        }
    }

    fn try_accept(&mut self) -> Result<Option<NbAccepted<Self>>, Error> {
        let net = self.net();
        Ok(self
            .listener
            .accept_socket()
            .map(|(handle, remote)| (NbTcpConn { socket: Served::new(net, handle) }, remote)))
    }

    fn set_accepting(&mut self, on: bool) -> Result<(), Error> {
        self.accepting = on;
        Ok(())
    }

    /// # Errors
    /// `InvalidInput` for a connection that was not accepted from this
    /// source's listener.
    fn register(
        &mut self,
        token: usize,
        conn: &mut NbTcpConn<'s, 'a>,
        interest: Interest,
    ) -> Result<(), Error> {
        self.watch(conn, Some(Watch { token, interest }))
    }

    /// # Errors
    /// As [`register`](Self::register).
    fn reregister(
        &mut self,
        token: usize,
        conn: &mut NbTcpConn<'s, 'a>,
        interest: Interest,
    ) -> Result<(), Error> {
        self.watch(conn, Some(Watch { token, interest }))
    }

    fn deregister(&mut self, _token: usize, conn: &mut NbTcpConn<'s, 'a>) {
        let _ = self.watch(conn, None);
    }
}

/// A TCP connection of the event mode on a smoltcp stack, accepted by a
/// [`TcpEventSource`]: never blocks, never polls the interface (the
/// source's `wait` does).
///
/// * `try_read`: what the socket holds, `Some(0)` at the peer's FIN,
///   `None` when nothing is there yet (and always for an empty buffer,
///   which cannot tell EOF); a reset is `ConnectionReset`.
/// * `try_write`: what fits in the socket's send buffer, `None` when it is
///   full; a reset is `ConnectionReset`, a write after `shutdown_write`
///   `BrokenPipe`.
/// * `shutdown_write` is smoltcp's `close()`: a FIN after the queued data.
///   Dropping it closes it the same way and gives its socket back to the
///   listener's pool once TCP's close is over.
pub struct NbTcpConn<'s, 'a> {
    socket: Served<'s, 'a>,
}

impl<'a> NbTcpConn<'_, 'a> {
    /// Runs `f` on the smoltcp socket (for its state, options, ...).
    pub fn with_socket<R>(&self, f: impl FnOnce(&mut tcp::Socket<'a>) -> R) -> R {
        self.socket.with(f)
    }

    /// The socket's handle in the stack's socket set.
    pub fn handle(&self) -> SocketHandle {
        self.socket.handle
    }
}

impl ErrorType for NbTcpConn<'_, '_> {
    type Error = Error;
}

impl NbConnection for NbTcpConn<'_, '_> {
    fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        self.socket.try_read(buf)
    }

    fn try_write(&mut self, buf: &[u8]) -> Result<Option<usize>, Error> {
        self.socket.try_write(buf)
    }

    fn shutdown_write(&mut self) -> Result<(), Error> {
        self.socket.shutdown_write()
    }
}
