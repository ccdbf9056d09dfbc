use std::io;
use std::sync::Arc;
use std::time::Duration;

use sockserv_core::EventSource;
use sockserv_core::Service;
use sockserv_core::event::{EventHandler, EventServer, EventServerConfig, ServerSlot};

use super::pool::{GrowSlots, LazyPool};
use super::{EpollSource, PollSource};
use crate::addr::{Address, BindAddr, IntoBindAddr};
use crate::server::Builder;
use crate::shutdown::{Shared, ShutdownHandle, Signal, StdClock};
use crate::socket::{BindError, SocketListener};

/// Knobs of the event mode.
#[derive(Clone, Copy, Debug)]
pub struct EventOptions {
    /// The connection table's capacity, a cap on open connections: at it
    /// the server stops accepting until one closes (new connections wait
    /// in the kernel's backlog), or with `server.refuse_when_full` accepts
    /// and refuses them (closed at once, `handle_table_full` told).
    /// Default 1,024. A slot is
    /// made when a connection first needs it (about 100 bytes plus the
    /// handler; see `docs/DESIGN.md`), and holds no buffer of its own.
    pub max_connections: usize,
    /// The size of every buffer of the pool: one read takes at most this
    /// much, and what a connection cannot take at once is queued in one.
    /// Default 64 KiB, so a 64 KiB message needs one read and one write.
    pub buffer_size: usize,
    /// How many buffers may be lent at once (a connection borrows one to
    /// read into and one for output the connection could not take at
    /// once, and gives each back as soon as it is empty). Beyond it a
    /// connection waits (`handle_buffers_exhausted` told). Default 1,024
    /// (64 MiB at most with the default size).
    pub max_buffers: usize,
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
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            buffer_size: 64 * 1024,
            max_buffers: 1024,
            keep_buffers: 64,
            disable_nagle_algorithm: true,
            server: EventServerConfig::default(),
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
    /// The listener.
    fn listener_ref(&self) -> &SocketListener;
}

impl FromListener for EpollSource {
    fn from_listener(listener: SocketListener) -> io::Result<Self> {
        EpollSource::new(listener)
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
/// partially finished requests" on one thread, over epoll (`Src =
/// EpollSource`, the default) or poll(2) (`PollSource`). Connections
/// borrow buffers from a pool allocated as it is used
/// ([`EventOptions::buffer_size`], [`EventOptions::max_buffers`]): an
/// idle server holds none.
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use sockserv_std::FnService;
/// use sockserv_std::event::EventTcpServer;
/// use sockserv_core::event::{EventHandler, Outbox, Step};
///
/// struct Echo;
/// impl EventHandler for Echo {
///     type Error = Infallible;
///     fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Infallible> {
///         Ok(Step::consumed(out.write(input)))
///     }
/// }
///
/// let mut server = EventTcpServer::bind("127.0.0.1:0", FnService(|_| Echo))?;
/// let stop = server.shutdown_handle();
/// let t = std::thread::spawn(move || server.serve_forever(Duration::from_millis(500)));
/// stop.shutdown().unwrap();
/// t.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The only bound its type carries is `Svc: Service<Address>`: hold it in
/// a field or pass it to a function as `EventTcpServer<S>` with
/// `S: Service<Address>`.
pub struct EventStreamServer<Svc, Src = EpollSource>
where
    Src: EventSource<Address = Address>,
    Svc: Service<Address>,
{
    inner: Inner<Svc, Src>,
    shared: Arc<Shared>,
    /// The loop, fixed when the server was made.
    serve: fn(&mut Inner<Svc, Src>, Duration) -> io::Result<()>,
    /// The listener's bound address.
    address: BindAddr,
}

type Inner<Svc, Src> = EventServer<Src, Svc, StdClock, Signal, Slots<Src, Svc>, LazyPool>;

/// An event-mode TCP server (epoll).
pub type EventTcpServer<Svc> = EventStreamServer<Svc, EpollSource>;
/// An event-mode Unix stream server (epoll); bind it to a path.
pub type EventUnixStreamServer<Svc> = EventStreamServer<Svc, EpollSource>;

impl<Svc, Src> EventStreamServer<Svc, Src>
where
    Src: FromListener,
    Svc: Service<Address, Handler: EventHandler>,
{
    /// Binds and listens with CPython's defaults and [`EventOptions`]'
    /// defaults.
    ///
    /// # Errors
    /// See [`Builder::event`].
    pub fn bind(address: impl IntoBindAddr, service: Svc) -> Result<Self, BindError> {
        Builder::new().event(address, service, EventOptions::default())
    }

    /// The listening socket (for [`crate::activation::spawn_successor`]).
    pub fn listener(&self) -> &SocketListener {
        self.inner.source().listener_ref()
    }

    pub(crate) fn from_listener(
        listener: SocketListener,
        service: Svc,
        options: EventOptions,
    ) -> Result<Self, BindError> {
        let shared = Arc::clone(listener.shared());
        let address = listener.address().clone();
        let source =
            Src::from_listener(listener).map_err(|source| BindError::at(&address, source))?;
        let slots = GrowSlots::new(options.max_connections);
        let pool = LazyPool::new(options.buffer_size, options.max_buffers, options.keep_buffers);
        let signal = Signal(Arc::clone(&shared));
        let inner =
            EventServer::new(source, service, StdClock::new(), signal, slots, pool, options.server);
        Ok(Self { inner, shared, serve: EventServer::serve_forever, address })
    }
}

impl<Svc, Src> EventStreamServer<Svc, Src>
where
    Src: EventSource<Address = Address, Error = io::Error>,
    Svc: Service<Address>,
{
    /// CPython's `serve_forever(poll_interval)` in event mode; see
    /// [`EventServer::serve_forever`].
    ///
    /// # Errors
    /// Only if the source cannot wait at all.
    pub fn serve_forever(&mut self, poll_interval: Duration) -> io::Result<()> {
        (self.serve)(&mut self.inner, poll_interval)
    }

    /// A handle that stops `serve_forever` from another thread or a signal.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.shared))
    }

    /// The bound address (with the real port after binding port 0).
    pub fn server_address(&self) -> &BindAddr {
        &self.address
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner.table().len()
    }

    /// Buffers lent to connections now (an idle connection holds none).
    pub fn buffers_lent(&self) -> usize {
        self.inner.table().pool().lent()
    }

    /// What the connection table counted (waits for a buffer, ...).
    pub fn stats(&self) -> sockserv_core::event::TableStats {
        self.inner.table().stats()
    }

    /// The service.
    pub fn service(&self) -> &Svc {
        self.inner.service_ref()
    }
}

impl<D> Builder<D> {
    /// An event-mode stream server (TCP for socket addresses, Unix for
    /// paths). The dispatch strategy set on the builder does not apply; the
    /// socket options do (`request_queue_size`, reuse); Nagle is off when
    /// either the builder or `options` says so.
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
        Src: FromListener,
        Svc: Service<Address, Handler: EventHandler>,
    {
        let mut builder = self;
        if options.disable_nagle_algorithm {
            builder = builder.disable_nagle_algorithm(true);
        }
        let listener = builder.listener(address)?;
        EventStreamServer::from_listener(listener, service, options)
    }
}
