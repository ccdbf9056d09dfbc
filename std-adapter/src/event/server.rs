use std::io;
use std::sync::Arc;
use std::time::Duration;

use sockserv_core::EventSource;
use sockserv_core::event::{EventServer, EventServerConfig, EventService, ServerSlot, Slot};

use super::{EpollSource, PollSource};
use crate::addr::{Address, BindAddr, IntoBindAddr};
use crate::server::Builder;
use crate::shutdown::{Shared, ShutdownHandle, Signal, StdClock};
use crate::socket::{BindError, SocketListener};

/// Knobs of the event mode.
#[derive(Clone, Copy, Debug)]
pub struct EventOptions {
    /// The connection table's capacity; a connection beyond it is refused
    /// (closed at once, `handle_table_full` told). Default 1,024. Each
    /// connection costs its two buffers (`RB + SB` bytes) whether used or
    /// not, allocated when the server is made.
    pub max_connections: usize,
    /// Close a connection after this long without a byte read or written,
    /// so that clients that never speak cannot hold a slot for ever.
    /// Default: 5 minutes. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// `TCP_NODELAY` on accepted TCP connections. Default **`true`**
    /// (unlike the blocking modes, which keep CPython's default): the table
    /// sends an answer in pieces of at most `SB` bytes, and with Nagle's
    /// algorithm each piece smaller than the MSS waits for the peer's
    /// delayed ACK (40 ms) — measured: 16 KiB echoes fell from ~100,000 to
    /// ~1,100 a second.
    pub disable_nagle_algorithm: bool,
    /// Back-off after a failed accept, shutdown grace, accept burst.
    pub server: EventServerConfig,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: Some(Duration::from_secs(300)),
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

type Slots<Src, Svc, const RB: usize, const SB: usize> = Box<[ServerSlot<Src, Svc, RB, SB>]>;

/// A stream server in event mode: socketserver's "explicit table of
/// partially finished requests" on one thread, over epoll (`Src =
/// EpollSource`, the default) or poll(2) (`PollSource`). `RB` and `SB` are
/// each connection's receive and send buffer sizes (4 KiB by default).
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
/// let mut server: EventTcpServer<_> = EventTcpServer::bind("127.0.0.1:0", FnService(|_: &_| Echo))?;
/// let stop = server.shutdown_handle();
/// let t = std::thread::spawn(move || server.serve_forever(Duration::from_millis(500)));
/// stop.shutdown().unwrap();
/// t.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EventStreamServer<Svc, Src = EpollSource, const RB: usize = 4096, const SB: usize = 4096>
where
    Src: FromListener,
    Svc: EventService<Address>,
{
    inner: EventServer<Src, Svc, StdClock, Signal, Slots<Src, Svc, RB, SB>, RB, SB>,
    shared: Arc<Shared>,
}

/// An event-mode TCP server (epoll).
pub type EventTcpServer<Svc, const RB: usize = 4096, const SB: usize = 4096> =
    EventStreamServer<Svc, EpollSource, RB, SB>;
/// An event-mode Unix stream server (epoll); bind it to a path.
pub type EventUnixStreamServer<Svc, const RB: usize = 4096, const SB: usize = 4096> =
    EventStreamServer<Svc, EpollSource, RB, SB>;

impl<Svc, Src, const RB: usize, const SB: usize> EventStreamServer<Svc, Src, RB, SB>
where
    Src: FromListener,
    Svc: EventService<Address>,
{
    /// Binds and listens with CPython's defaults and [`EventOptions`]'
    /// defaults.
    ///
    /// # Errors
    /// See [`Builder::event`].
    pub fn bind(address: impl IntoBindAddr, service: Svc) -> Result<Self, BindError> {
        Builder::new().event(address, service, EventOptions::default())
    }

    pub(crate) fn from_listener(
        listener: SocketListener,
        service: Svc,
        options: EventOptions,
    ) -> Result<Self, BindError> {
        let shared = Arc::clone(listener.shared());
        let address = listener.address().clone();
        let source =
            Src::from_listener(listener).map_err(|source| BindError { address, source })?;
        let slots: Slots<Src, Svc, RB, SB> =
            (0..options.max_connections).map(|_| Slot::new()).collect();
        let signal = Signal(Arc::clone(&shared));
        let inner = EventServer::new(
            source,
            service,
            StdClock::new(),
            signal,
            slots,
            options.idle_timeout,
            options.server,
        );
        Ok(Self { inner, shared })
    }

    /// CPython's `serve_forever(poll_interval)` in event mode; see
    /// [`EventServer::serve_forever`].
    ///
    /// # Errors
    /// Only if the source cannot wait at all.
    pub fn serve_forever(&mut self, poll_interval: Duration) -> io::Result<()> {
        self.inner.serve_forever(poll_interval)
    }

    /// A handle that stops `serve_forever` from another thread or a signal.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.shared))
    }

    /// The bound address (with the real port after binding port 0).
    pub fn server_address(&self) -> &BindAddr {
        self.inner.source().listener_ref().address()
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner.table().len()
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
    pub fn event<Svc, Src, const RB: usize, const SB: usize>(
        self,
        address: impl IntoBindAddr,
        service: Svc,
        options: EventOptions,
    ) -> Result<EventStreamServer<Svc, Src, RB, SB>, BindError>
    where
        Src: FromListener,
        Svc: EventService<Address>,
    {
        let mut builder = self;
        if options.disable_nagle_algorithm {
            builder = builder.disable_nagle_algorithm(true);
        }
        let listener = builder.listener(address)?;
        EventStreamServer::from_listener(listener, service, options)
    }
}
