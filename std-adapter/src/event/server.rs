use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use sockserv_core::Service;
use sockserv_core::ShutdownSignal;
use sockserv_core::driver::EventSource;
use sockserv_core::{EventHandler, EventServer, EventServerConfig, ServerSlot, TableStats};

use super::pool::{GrowSlots, LazyPool};
use super::{EpollSource, PollSource};
use crate::addr::{Address, BindAddr};
use crate::error::BindError;
use crate::server::Builder;
use crate::shutdown::{Shared, ShutdownHandle, Signal, StdClock};
use crate::socket::SocketListener;
use crate::source::IntoBindAddr;

/// Knobs of the event mode.
#[derive(Clone, Copy, Debug)]
pub struct EventOptions {
    /// The connection table's capacity, a cap on open connections: at it
    /// the server stops accepting until one closes (new connections wait
    /// in the kernel's backlog), or with `server.when_full = WhenFull::Refuse` accepts
    /// and refuses them (closed at once, `handle_table_full` told).
    /// Default 1,024. A slot is
    /// made when a connection first needs it (about 100 bytes plus the
    /// handler; see `docs/DESIGN.md`), and holds no buffer of its own.
    pub max_connections: NonZeroUsize,
    /// The size of every buffer of the pool: one read takes at most this
    /// much, and what a connection cannot take at once is queued in one.
    /// Default 64 KiB, so a 64 KiB message needs one read and one write.
    pub buffer_size: NonZeroUsize,
    /// How many buffers may be lent at once (a connection borrows one to
    /// read into and one for output the connection could not take at
    /// once, and gives each back as soon as it is empty). Beyond it a
    /// connection waits (`handle_buffers_exhausted` told). Default 1,024
    /// (64 MiB at most with the default size). At least 2 (one connection
    /// reading while its output waits): fewer is refused when the server
    /// is built.
    pub max_buffers: NonZeroUsize,
    /// Free buffers kept allocated for the next connections; the others
    /// are freed as they come back. Default 64.
    pub keep_buffers: usize,
    /// `TCP_NODELAY` on accepted TCP connections. Default **`true`**
    /// (the blocking modes' default is documented on `Builder`): an
    /// answer may leave in several writes (what the connection took at
    /// once, then the queued rest), and with Nagle's algorithm a piece
    /// smaller than the MSS waits for the peer's delayed ACK (40 ms) —
    /// measured with 4 KiB buffers: 16 KiB echoes fell from ~100,000 to
    /// ~1,100 a second.
    pub disable_nagle_algorithm: bool,
    /// Back-off after a failed accept, shutdown grace, accept burst, idle
    /// timeout (default 5 minutes: clients that never speak or never read
    /// cannot hold a slot and its buffers for ever).
    pub server: EventServerConfig,
    /// How many event loops serve the port, each on a thread of its own
    /// with its own table and pool (and the limits above each). Default
    /// one loop, on the thread that calls `serve_forever`.
    pub workers: Workers,
    /// How several loops share the port (unused with one loop). Default
    /// [`PortSharing::ReusePort`].
    pub port_sharing: PortSharing,
}

/// How many event loops an event server runs
/// ([`EventOptions::workers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    /// This many loops.
    Count(NonZeroUsize),
    /// One per CPU (`std::thread::available_parallelism`, one when it
    /// cannot tell).
    PerCpu,
}

impl Workers {
    /// One loop, on the thread that calls `serve_forever` (the default).
    pub const ONE: Self = Self::Count(NonZeroUsize::MIN);

    /// How many loops this is on this machine.
    pub fn loops(self) -> usize {
        match self {
            Self::Count(n) => n.get(),
            Self::PerCpu => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        }
    }
}

impl Default for Workers {
    fn default() -> Self {
        Self::ONE
    }
}

impl From<NonZeroUsize> for Workers {
    fn from(n: NonZeroUsize) -> Self {
        Self::Count(n)
    }
}

/// How the loops of an event server with several
/// [`workers`](EventOptions::workers) share its port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PortSharing {
    /// A listening socket per loop, all bound to the address with
    /// `SO_REUSEPORT`: the kernel spreads new connections over them by a
    /// hash of the connection's addresses. Unix sockets cannot do this and
    /// share one listener (`Exclusive`). The first listener gets
    /// `SO_REUSEPORT` too, so another socket of the same user bound to the
    /// address with it would join the group and take a share. The
    /// default: it spreads connections evenly (measured in
    /// `docs/DESIGN.md`: 50 connections opened at once went 18–32 of 50
    /// to each of two loops, all 50 to one with `Exclusive`).
    #[default]
    ReusePort,
    /// One listening socket in every loop's epoll with `EPOLLEXCLUSIVE`:
    /// a new connection wakes one loop that is waiting (with poll(2), all
    /// of them; one accepts). The woken loop accepts all that is pending,
    /// so a burst of connections lands on one loop.
    Exclusive,
}

impl EventOptions {
    /// How many loops `workers` asks for on this machine.
    pub fn loops(&self) -> usize {
        self.workers.loops()
    }

    /// Refuses what would make a server that cannot serve.
    fn check(&self) -> io::Result<()> {
        if self.max_buffers.get() < 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "EventOptions::max_buffers must be at least 2 (a connection reads into one while its output waits in another)",
            ));
        }
        Ok(())
    }
}

/// `n`, which is not zero.
const fn non_zero(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => panic!("zero"),
    }
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            max_connections: const { non_zero(1024) },
            buffer_size: const { non_zero(64 * 1024) },
            max_buffers: const { non_zero(1024) },
            keep_buffers: 64,
            disable_nagle_algorithm: true,
            server: EventServerConfig::default(),
            workers: Workers::ONE,
            port_sharing: PortSharing::default(),
        }
    }
}

/// A readiness source that can be made from a bound listener.
pub trait FromListener: EventSource<Address = Address, Error = io::Error> + Sized {
    /// Makes the source.
    ///
    /// # Errors
    /// The OS refused (epoll could not be created).
    fn from_listener(listener: SocketListener) -> io::Result<Self>;
    /// Makes the source for a listener that other loops' sources wait on
    /// too (by default as [`from_listener`](Self::from_listener)).
    ///
    /// # Errors
    /// As `from_listener`.
    fn from_shared_listener(listener: SocketListener) -> io::Result<Self> {
        Self::from_listener(listener)
    }
    /// The listener.
    fn listener_ref(&self) -> &SocketListener;
}

impl FromListener for EpollSource {
    fn from_listener(listener: SocketListener) -> io::Result<Self> {
        EpollSource::new(listener)
    }
    fn from_shared_listener(listener: SocketListener) -> io::Result<Self> {
        EpollSource::new_exclusive(listener)
    }
    fn listener_ref(&self) -> &SocketListener {
        self.listener()
    }
}

impl FromListener for PollSource {
    fn from_listener(listener: SocketListener) -> io::Result<Self> {
        Ok(PollSource::new(listener))
    }
    fn listener_ref(&self) -> &SocketListener {
        self.listener()
    }
}

type Slots<Src, Svc> = GrowSlots<ServerSlot<Src, Svc>>;

/// A stream server in event mode: socketserver's "explicit table of
/// partially finished requests", over epoll (`Src = EpollSource`, the
/// default) or poll(2) (`PollSource`). Connections borrow buffers from a
/// pool allocated as it is used ([`EventOptions::buffer_size`],
/// [`EventOptions::max_buffers`]): an idle server holds none.
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use sockserv::service_fn;
/// use sockserv::std_adapter::event::EventTcpServer;
/// use sockserv::{EventHandler, Outbox, Step};
///
/// struct Echo;
/// impl EventHandler for Echo {
///     type Error = Infallible;
///     fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Infallible> {
///         Ok(Step::consumed(out.write(input)))
///     }
/// }
///
/// let mut server = EventTcpServer::bind("127.0.0.1:0", service_fn(|_| Echo))?;
/// let stop = server.shutdown_handle();
/// let t = std::thread::spawn(move || server.serve_forever(Duration::from_millis(500)));
/// stop.shutdown().unwrap();
/// t.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// **Every core** ([`EventOptions::workers`]): with `workers` above one,
/// the server runs that many loops, each on a thread of its own with its
/// own table, pool and clone of the service (hooks run on the loop that
/// owns the connection, as threading runs them on the request's thread),
/// sharing the port as [`EventOptions::port_sharing`] says.
/// `serve_forever` runs the first loop on the calling thread and the
/// others on scoped threads, and returns once all have; one
/// [`ShutdownHandle`] (or signal) stops them all at once. Per-loop counts:
/// [`loop_stats`](Self::loop_stats).
///
/// The only bound its type carries is `Svc: Service<Address>`: hold it in
/// a field or pass it to a function as `EventTcpServer<S>` with
/// `S: Service<Address>`.
pub struct EventStreamServer<Svc, Src = EpollSource>
where
    Src: EventSource<Address = Address>,
    Svc: Service<Address>,
{
    loops: Vec<Inner<Svc, Src>>,
    /// The group's shutdown state (the only loop's, with one loop).
    shared: Arc<Shared>,
    /// The loops' driver, fixed when the server was made.
    serve: ServeFn<Svc, Src>,
    /// The listener's bound address.
    address: BindAddr,
}

type Inner<Svc, Src> = EventServer<Src, Svc, StdClock, Signal, Slots<Src, Svc>, LazyPool>;
type ServeFn<Svc, Src> = fn(&mut [Inner<Svc, Src>], &Arc<Shared>, Duration) -> io::Result<()>;

/// An event-mode TCP server (epoll).
pub type EventTcpServer<Svc> = EventStreamServer<Svc, EpollSource>;
/// An event-mode Unix stream server (epoll); bind it to a path.
pub type EventUnixStreamServer<Svc> = EventStreamServer<Svc, EpollSource>;

/// What one loop of an event server counted
/// ([`EventStreamServer::loop_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Connections open now.
    pub connections: usize,
    /// Buffers lent now.
    pub buffers_lent: usize,
    /// The table's counts (connections opened, waits for a buffer, ...).
    pub table: TableStats,
    /// Times the loop's table was full and it stopped accepting
    /// (episodes, each reported once when it began and once when it
    /// ended).
    pub cap_reached: u64,
}

impl<Svc, Src> EventStreamServer<Svc, Src>
where
    Src: FromListener<Conn: Send> + Send,
    Svc: Service<Address, Handler: EventHandler + Send> + Clone + Send,
{
    /// Binds and listens with CPython's defaults and [`EventOptions`]'
    /// defaults (one loop).
    ///
    /// # Errors
    /// See [`Builder::event`].
    pub fn bind(address: impl IntoBindAddr, service: Svc) -> Result<Self, BindError> {
        Builder::new().event(address, service, EventOptions::default())
    }

    /// The (first loop's) listening socket (for
    /// [`crate::activation::spawn_successor`]).
    pub fn listener(&self) -> &SocketListener {
        self.loops[0].source().listener_ref()
    }

    fn from_listeners(
        listeners: Vec<SocketListener>,
        service: Svc,
        options: &EventOptions,
        shared: Arc<Shared>,
        sharing: PortSharing,
    ) -> Result<Self, BindError> {
        let address = listeners[0].address().clone();
        let serve: ServeFn<Svc, Src> = if listeners.len() == 1 { serve_one } else { serve_all };
        let loops = listeners
            .into_iter()
            .map(|l| {
                let signal = Signal(Arc::clone(l.shared()));
                let source = match sharing {
                    PortSharing::Exclusive => Src::from_shared_listener(l),
                    PortSharing::ReusePort => Src::from_listener(l),
                };
                let source = source.map_err(|e| BindError::at(&address, e))?;
                Ok(new_loop(source, service.clone(), signal, options))
            })
            .collect::<Result<_, BindError>>()?;
        Ok(Self { loops, shared, serve, address })
    }
}

fn new_loop<Svc, Src>(
    source: Src,
    service: Svc,
    signal: Signal,
    o: &EventOptions,
) -> Inner<Svc, Src>
where
    Src: EventSource<Address = Address, Error = io::Error>,
    Svc: Service<Address, Handler: EventHandler>,
{
    let slots = GrowSlots::new(o.max_connections.get());
    let pool = LazyPool::new(o.buffer_size.get(), o.max_buffers.get(), o.keep_buffers);
    EventServer::new(source, service, StdClock::new(), signal, slots, pool, o.server)
}

/// One loop, on the calling thread.
fn serve_one<Svc, Src>(
    loops: &mut [Inner<Svc, Src>],
    _: &Arc<Shared>,
    poll: Duration,
) -> io::Result<()>
where
    Src: EventSource<Address = Address, Error = io::Error>,
    Svc: Service<Address, Handler: EventHandler>,
{
    loops[0].serve_forever(poll)
}

/// Every loop: the first on the calling thread, the others on scoped
/// threads. The group counts as running from the start to the moment the
/// last loop has returned; a loop that ends (an error, a panic) stops the
/// others.
fn serve_all<Svc, Src>(
    loops: &mut [Inner<Svc, Src>],
    group: &Arc<Shared>,
    poll: Duration,
) -> io::Result<()>
where
    Src: EventSource<Address = Address, Error = io::Error, Conn: Send> + Send,
    Svc: Service<Address, Handler: EventHandler + Send> + Send,
{
    let signal = Signal(Arc::clone(group));
    signal.loop_started();
    let _stopped = GroupStopped(&signal);
    let Some((first, rest)) = loops.split_first_mut() else { return Ok(()) };
    std::thread::scope(|scope| {
        let mut results = Vec::with_capacity(rest.len() + 1);
        let mut threads = Vec::with_capacity(rest.len());
        for (i, l) in rest.iter_mut().enumerate() {
            let run = move || {
                let _stop = StopOthers(group);
                l.serve_forever(poll)
            };
            let name = format!("sockserv-event-{}", i + 1);
            match std::thread::Builder::new().name(name).spawn_scoped(scope, run) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    group.request();
                    results.push(Err(e));
                    break;
                }
            }
        }
        results.push({
            let _stop = StopOthers(group);
            first.serve_forever(poll)
        });
        for t in threads {
            match t.join() {
                Ok(r) => results.push(r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results.into_iter().collect::<io::Result<Vec<()>>>().map(drop)
    })
}

/// Marks the group stopped, even when a loop panicked.
struct GroupStopped<'a>(&'a Signal);

impl Drop for GroupStopped<'_> {
    fn drop(&mut self) {
        self.0.loop_stopped();
    }
}

/// When a loop returns (or unwinds) while no stop was asked for, asks the
/// others to stop, so `serve_forever` returns as a whole.
struct StopOthers<'a>(&'a Arc<Shared>);

impl Drop for StopOthers<'_> {
    fn drop(&mut self) {
        if !self.0.is_requested() {
            self.0.request();
        }
    }
}

fn sum_stats(stats: impl Iterator<Item = LoopStats>) -> LoopStats {
    stats.fold(LoopStats::default(), |a, b| LoopStats {
        connections: a.connections + b.connections,
        buffers_lent: a.buffers_lent + b.buffers_lent,
        table: TableStats {
            opened: a.table.opened + b.table.opened,
            buffer_waits: a.table.buffer_waits + b.table.buffer_waits,
            starved: a.table.starved + b.table.starved,
        },
        cap_reached: a.cap_reached + b.cap_reached,
    })
}

impl<Svc, Src> EventStreamServer<Svc, Src>
where
    Src: EventSource<Address = Address, Error = io::Error>,
    Svc: Service<Address>,
{
    /// CPython's `serve_forever(poll_interval)` in event mode; see
    /// [`EventServer::serve_forever`]. With several loops, returns once
    /// all of them have.
    ///
    /// # Errors
    /// Only if a source cannot wait at all (or a loop's thread could not
    /// start); the other loops are stopped.
    pub fn serve_forever(&mut self, poll_interval: Duration) -> io::Result<()> {
        (self.serve)(&mut self.loops, &self.shared, poll_interval)
    }

    /// A handle that stops `serve_forever` (every loop) from another
    /// thread or a signal.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.shared))
    }

    /// The bound address (with the real port after binding port 0).
    pub fn server_address(&self) -> &BindAddr {
        &self.address
    }

    /// How many event loops serve (see [`EventOptions::workers`]).
    pub fn workers(&self) -> usize {
        self.loops.len()
    }

    /// Open connections (all loops).
    pub fn connections(&self) -> usize {
        sum_stats(self.loop_stats().into_iter()).connections
    }

    /// Buffers lent to connections now (an idle connection holds none).
    pub fn buffers_lent(&self) -> usize {
        sum_stats(self.loop_stats().into_iter()).buffers_lent
    }

    /// What the connection tables counted (waits for a buffer, ...),
    /// summed over the loops.
    pub fn stats(&self) -> TableStats {
        sum_stats(self.loop_stats().into_iter()).table
    }

    /// Each loop's counts, in loop order.
    pub fn loop_stats(&self) -> Vec<LoopStats> {
        self.loops
            .iter()
            .map(|l| LoopStats {
                connections: l.table().len(),
                buffers_lent: l.table().pool().lent(),
                table: l.table().stats(),
                cap_reached: l.cap_reached(),
            })
            .collect()
    }

    /// The service (the first loop's clone).
    pub fn service(&self) -> &Svc {
        self.loops[0].service_ref()
    }
}

impl<D> Builder<D> {
    /// An event-mode stream server (TCP for socket addresses, Unix for
    /// paths), with [`EventOptions::workers`] loops. The dispatch strategy
    /// set on the builder does not apply; the socket options do
    /// (`request_queue_size`, reuse), except Nagle's algorithm, which
    /// follows [`EventOptions::disable_nagle_algorithm`] (the builder's
    /// `disable_nagle_algorithm` is replaced by it).
    ///
    /// The service is cloned per loop and each loop may run on a thread of
    /// its own, hence `Clone + Send` (and handlers `Send`); with one loop
    /// (the default) nothing leaves the calling thread.
    ///
    /// # Errors
    /// The socket could not be made, bound or set listening, or epoll could
    /// not be created; the error names the address.
    pub fn event<Svc, Src>(
        self,
        address: impl IntoBindAddr,
        service: Svc,
        options: EventOptions,
    ) -> Result<EventStreamServer<Svc, Src>, BindError>
    where
        Src: FromListener<Conn: Send> + Send,
        Svc: Service<Address, Handler: EventHandler + Send> + Clone + Send,
    {
        let mut builder = self.disable_nagle_algorithm(options.disable_nagle_algorithm);
        let workers = options.loops();
        let want_reuse = workers > 1 && options.port_sharing == PortSharing::ReusePort;
        if want_reuse {
            builder = builder.allow_reuse_port(true);
        }
        let first = builder.listener(address)?;
        options.check().map_err(|e| BindError::at(first.address(), e))?;
        // Unix sockets cannot share a path by SO_REUSEPORT: they share one.
        let reuse_port = want_reuse && !matches!(first.address(), BindAddr::Unix(_));
        let listeners = more_listeners(&builder, first, workers, reuse_port)?;
        let shared = if workers == 1 {
            Arc::clone(listeners[0].shared())
        } else {
            let members = listeners.iter().map(|l| Arc::clone(l.shared())).collect();
            Shared::group(members).map_err(|e| BindError::at(listeners[0].address(), e))?
        };
        // One listener in every loop's epoll: each wakes exclusively.
        let exclusive = workers > 1 && !reuse_port;
        let sharing = if exclusive { PortSharing::Exclusive } else { PortSharing::ReusePort };
        EventStreamServer::from_listeners(listeners, service, &options, shared, sharing)
    }
}

/// The listeners of `workers` loops: `first`, then either sockets of their
/// own bound to its address with `SO_REUSEPORT`, or `dup`s of it; each
/// with its own shutdown state.
fn more_listeners<D>(
    builder: &Builder<D>,
    first: SocketListener,
    workers: usize,
    reuse_port: bool,
) -> Result<Vec<SocketListener>, BindError> {
    let address = first.address().clone();
    let mut listeners = vec![first];
    for _ in 1..workers {
        let shared = Shared::new().map_err(|e| BindError::at(&address, e))?;
        let l = if reuse_port {
            SocketListener::new(address.clone(), builder.socket_options(), shared)?
        } else {
            listeners[0].try_clone_with(shared).map_err(|e| BindError::at(&address, e))?
        };
        listeners.push(l);
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::TcpStream;

    use sockserv_core::service_fn;
    use sockserv_core::{EventHandler, Outbox, Step};

    use super::*;

    struct Nop;
    impl EventHandler for Nop {
        type Error = Infallible;
        fn received(&mut self, i: &[u8], _: &mut Outbox<'_>) -> Result<Step, Infallible> {
            Ok(Step::consumed(i.len()))
        }
    }

    /// Whether a connection the event server accepts has `TCP_NODELAY`.
    fn accepted_nodelay(options: EventOptions) -> bool {
        let server: EventTcpServer<_> =
            Builder::new().event("127.0.0.1:0", service_fn(|_| Nop), options).unwrap();
        let BindAddr::Inet(addr) = server.server_address().clone() else { unreachable!() };
        let _client = TcpStream::connect(addr).unwrap();
        let listener = server.loops[0].source().listener_ref();
        let (socket, _) = loop {
            if let Some(accepted) = listener.accept_nonblocking().unwrap() {
                break accepted;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        socket.tcp_nodelay().unwrap()
    }

    #[test]
    fn event_options_decide_nagle_both_ways() {
        assert!(accepted_nodelay(EventOptions::default()));
        let on = EventOptions { disable_nagle_algorithm: false, ..EventOptions::default() };
        assert!(!accepted_nodelay(on), "Nagle stays on when the options say so");
    }
}
