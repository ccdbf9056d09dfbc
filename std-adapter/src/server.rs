//! The server types: CPython's twelve server classes as aliases of two
//! generic servers.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use sockserv_core::driver::{
    Datagram, DatagramDispatch, Dispatch, Stream, StreamDispatch, Transport,
};
use sockserv_core::{DatagramHandler, Server, Service, StreamHandler};

use crate::activation::Inherited;
use crate::addr::{Address, BindAddr};
use crate::conn::Conn;
use crate::dispatch::{Forking, Sequential, Threading};
use crate::error::BindError;
use crate::shutdown::{Shared, ShutdownHandle, Signal, StdClock};
use crate::socket::{Options, SocketDatagram, SocketListener};
use crate::source::{IntoBindAddr, Source};

/// A transport of the std adapter: knows its bound address.
pub trait Bound {
    /// The address bound.
    fn bound_address(&self) -> &BindAddr;
}

impl Bound for Stream<SocketListener> {
    fn bound_address(&self) -> &BindAddr {
        self.0.address()
    }
}

impl Bound for Datagram<SocketDatagram, Vec<u8>> {
    fn bound_address(&self) -> &BindAddr {
        self.socket.address()
    }
}

/// A server on real sockets: CPython's `TCPServer`, `UDPServer`,
/// `UnixStreamServer`, `UnixDatagramServer` and their threading / forking
/// variants, which are aliases of this type (see [`TcpServer`] and the
/// rest). `D` is the dispatch strategy (the mix-in).
///
/// Dropping the server is CPython's `server_close()` (and `with server:`):
/// the strategy joins threads / waits for children as configured, the
/// socket closes, and a Unix socket path the server created is removed.
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use sockserv::{service_fn, StreamHandler};
/// use sockserv::std_adapter::ThreadingTcpServer;
///
/// struct Echo;
/// impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for Echo {
///     type Error = S::Error;
///     fn handle(&mut self, s: &mut S) -> Result<(), S::Error> {
///         let mut buf = [0u8; 1024];
///         loop {
///             let n = s.read(&mut buf)?;
///             if n == 0 { return Ok(()); }
///             s.write_all(&buf[..n])?;
///         }
///     }
/// }
///
/// let mut server = ThreadingTcpServer::bind("127.0.0.1:0", service_fn(|_| Echo))?;
/// let addr = server.server_address().to_string();
/// let stop = server.shutdown_handle();
/// let loop_thread = std::thread::spawn(move || server.serve_forever(Duration::from_millis(500)));
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"hello world\n")?;
/// client.shutdown(std::net::Shutdown::Write)?;
/// let mut answer = String::new();
/// client.read_to_string(&mut answer)?;
/// assert_eq!(answer, "hello world\n");
///
/// stop.shutdown().unwrap();
/// loop_thread.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Its methods need no bounds of their own (the server's type was checked
/// when it was made), so it can be held in a field or passed to a
/// function as `ThreadingTcpServer<S>` with no where-clause.
pub struct SocketServer<T, Svc, D: Dispatch> {
    inner: Inner<T, Svc, D>,
    shared: Arc<Shared>,
    /// The loop's entry points, fixed when the server was made.
    serve: fn(&mut Inner<T, Svc, D>, Duration) -> io::Result<()>,
    handle: fn(&mut Inner<T, Svc, D>) -> io::Result<()>,
}

type Inner<T, Svc, D> = Server<T, Svc, StdClock, Signal, D>;

/// A stream server (TCP or Unix, by the address).
#[allow(type_alias_bounds)]
pub type StreamServer<Svc, D = Sequential> = SocketServer<Stream<SocketListener>, Svc, D>;
/// A datagram server (UDP or Unix, by the address).
pub type DatagramServer<Svc, D = Sequential> =
    SocketServer<Datagram<SocketDatagram, Vec<u8>>, Svc, D>;

/// The equivalent of `socketserver.TCPServer` (IPv4 or IPv6 by the address).
#[doc(alias = "TCPServer")]
pub type TcpServer<Svc> = StreamServer<Svc, Sequential>;
/// The equivalent of `socketserver.ThreadingTCPServer`.
#[doc(alias = "ThreadingTCPServer")]
pub type ThreadingTcpServer<Svc> = StreamServer<Svc, Threading>;
/// The equivalent of `socketserver.ForkingTCPServer`.
#[doc(alias = "ForkingTCPServer")]
pub type ForkingTcpServer<Svc> = StreamServer<Svc, Forking>;
/// The equivalent of `socketserver.UDPServer`.
#[doc(alias = "UDPServer")]
pub type UdpServer<Svc> = DatagramServer<Svc, Sequential>;
/// The equivalent of `socketserver.ThreadingUDPServer`.
#[doc(alias = "ThreadingUDPServer")]
pub type ThreadingUdpServer<Svc> = DatagramServer<Svc, Threading>;
/// The equivalent of `socketserver.ForkingUDPServer`.
#[doc(alias = "ForkingUDPServer")]
pub type ForkingUdpServer<Svc> = DatagramServer<Svc, Forking>;
/// The equivalent of `socketserver.UnixStreamServer` (bind it to a path).
pub type UnixStreamServer<Svc> = StreamServer<Svc, Sequential>;
/// The equivalent of `socketserver.ThreadingUnixStreamServer`.
pub type ThreadingUnixStreamServer<Svc> = StreamServer<Svc, Threading>;
/// The equivalent of `socketserver.ForkingUnixStreamServer`.
pub type ForkingUnixStreamServer<Svc> = StreamServer<Svc, Forking>;
/// The equivalent of `socketserver.UnixDatagramServer` (bind it to a path).
pub type UnixDatagramServer<Svc> = DatagramServer<Svc, Sequential>;
/// The equivalent of `socketserver.ThreadingUnixDatagramServer`.
pub type ThreadingUnixDatagramServer<Svc> = DatagramServer<Svc, Threading>;
/// The equivalent of `socketserver.ForkingUnixDatagramServer`.
pub type ForkingUnixDatagramServer<Svc> = DatagramServer<Svc, Forking>;

/// Builds a server with CPython's knobs ([`Options`]) and a strategy.
///
/// ```
/// # use sockserv::{service_fn, StreamHandler};
/// # use sockserv::std_adapter::{Builder, Close, Threading};
/// # struct Nop;
/// # impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for Nop {
/// #     type Error = S::Error;
/// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
/// # }
/// let server = Builder::new()
///     .request_queue_size(64)
///     .dispatch(Threading::new().close(Close::Leave))
///     .stream("[::1]:0", service_fn(|_| Nop));
/// # let _ = server; // IPv6 may be off on some machines
/// ```
#[derive(Debug, Default)]
pub struct Builder<D = Sequential> {
    options: Options,
    dispatch: D,
}

impl Builder {
    /// CPython's defaults, one request at a time.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<D> Builder<D> {
    /// The strategy: [`Sequential`], [`Threading`] or [`Forking`].
    pub fn dispatch<D2>(self, dispatch: D2) -> Builder<D2> {
        Builder { options: self.options, dispatch }
    }

    /// The socket options set so far.
    pub(crate) fn socket_options(&self) -> &Options {
        &self.options
    }

    /// All options at once.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Sets the listen backlog (CPython's `request_queue_size`; default the
    /// system's `SOMAXCONN`): [`Options::request_queue_size`].
    pub fn request_queue_size(mut self, n: i32) -> Self {
        self.options.request_queue_size = n;
        self
    }

    /// Sets `SO_REUSEADDR` before bind (CPython's `allow_reuse_address`):
    /// [`Options::allow_reuse_address`]; `true` or `false` as in CPython,
    /// or a [`ReuseAddress`](crate::ReuseAddress).
    pub fn allow_reuse_address(mut self, reuse: impl Into<crate::socket::ReuseAddress>) -> Self {
        self.options.allow_reuse_address = reuse.into();
        self
    }

    /// Sets `SO_REUSEPORT` before bind, inet only (CPython's
    /// `allow_reuse_port`): [`Options::allow_reuse_port`].
    pub fn allow_reuse_port(mut self, yes: bool) -> Self {
        self.options.allow_reuse_port = yes;
        self
    }

    /// Sets the datagram receive buffer (CPython's `max_packet_size`):
    /// [`Options::max_packet_size`].
    pub fn max_packet_size(mut self, n: usize) -> Self {
        self.options.max_packet_size = n;
        self
    }

    /// Whether the constructor binds and listens (CPython's
    /// `bind_and_activate`): [`Options::bind_and_activate`].
    pub fn bind_and_activate(mut self, yes: bool) -> Self {
        self.options.bind_and_activate = yes;
        self
    }

    /// Sets the read and write timeout of accepted connections (CPython's
    /// `timeout` on the request socket): [`Options::stream_timeout`].
    pub fn stream_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.stream_timeout = timeout;
        self
    }

    /// Sets `TCP_NODELAY` on accepted connections (CPython's
    /// `disable_nagle_algorithm`): [`Options::disable_nagle_algorithm`].
    pub fn disable_nagle_algorithm(mut self, yes: bool) -> Self {
        self.options.disable_nagle_algorithm = yes;
        self
    }

    /// Sets `IPV6_V6ONLY` on IPv6 sockets before bind (`Some(false)`: dual
    /// stack): [`Options::only_v6`].
    pub fn only_v6(mut self, only: Option<bool>) -> Self {
        self.options.only_v6 = only;
        self
    }

    /// Resolves `address` and binds it with `bind`, or hands an inherited
    /// socket to `inherit`; an error names the address as the caller wrote
    /// it.
    fn bind_with<T>(
        address: impl IntoBindAddr,
        bind: impl FnOnce(BindAddr, Arc<Shared>) -> Result<T, BindError>,
        inherit: impl FnOnce(Inherited, Arc<Shared>) -> Result<T, BindError>,
    ) -> Result<T, BindError> {
        let written = address.as_written();
        let made = match address.into_source()? {
            Source::Bind(address) => bind(address.clone(), new_shared(&address)?),
            Source::Inherited(socket) => {
                let shared = Shared::new().map_err(|e| BindError::unresolved(&socket, e))?;
                inherit(socket, shared)
            }
        };
        made.map_err(|e| match written {
            Some(requested) => BindError { requested, ..e },
            None => e,
        })
    }

    /// A bound, listening socket with these options (or an inherited one).
    pub(crate) fn listener(&self, address: impl IntoBindAddr) -> Result<SocketListener, BindError> {
        let options = &self.options;
        Self::bind_with(
            address,
            |address, shared| SocketListener::new(address, options, shared),
            |socket, shared| SocketListener::inherited(socket, options, shared),
        )
    }

    /// A stream server (TCP for socket addresses, Unix for paths).
    ///
    /// # Errors
    /// The socket could not be made, bound or set listening; the error names
    /// the address and the cause, and no descriptor leaks.
    pub fn stream<Svc>(
        self,
        address: impl IntoBindAddr,
        service: Svc,
    ) -> Result<StreamServer<Svc, D>, BindError>
    where
        Svc: Service<Address, Handler: StreamHandler<Conn>>,
        D: StreamDispatch<Conn, Address, Svc>,
    {
        let listener = self.listener(address)?;
        let shared = Arc::clone(listener.shared());
        Ok(SocketServer::from_parts(Stream(listener), service, self.dispatch, shared))
    }

    /// A datagram server (UDP for socket addresses, Unix for paths).
    ///
    /// # Errors
    /// As [`stream`](Self::stream).
    pub fn datagram<Svc>(
        self,
        address: impl IntoBindAddr,
        service: Svc,
    ) -> Result<DatagramServer<Svc, D>, BindError>
    where
        Svc: Service<Address, Handler: DatagramHandler>,
        D: DatagramDispatch<SocketDatagram, Svc>,
    {
        let options = &self.options;
        let socket = Self::bind_with(
            address,
            |address, shared| SocketDatagram::new(address, options, shared),
            |socket, shared| SocketDatagram::inherited(socket, options, shared),
        )?;
        let shared = Arc::clone(socket.shared());
        let buffer = vec![0u8; self.options.max_packet_size];
        Ok(SocketServer::from_parts(Datagram { socket, buffer }, service, self.dispatch, shared))
    }
}

fn new_shared(address: &BindAddr) -> Result<Arc<Shared>, BindError> {
    Shared::new().map_err(|source| BindError::at(address, source))
}

impl<Svc, D> StreamServer<Svc, D>
where
    Svc: Service<Address, Handler: StreamHandler<Conn>>,
    D: StreamDispatch<Conn, Address, Svc> + Default,
{
    /// Binds and listens with CPython's defaults and the strategy's
    /// defaults. The family follows the address: `"127.0.0.1:0"`,
    /// `"[::1]:0"`, or a `Path` for a Unix socket.
    ///
    /// # Errors
    /// See [`Builder::stream`].
    pub fn bind(address: impl IntoBindAddr, service: Svc) -> Result<Self, BindError> {
        Builder::new().dispatch(D::default()).stream(address, service)
    }
}

impl<Svc, D: Dispatch> StreamServer<Svc, D> {
    /// The listening socket (CPython's `server.socket`).
    pub fn listener(&self) -> &SocketListener {
        &self.inner.transport().0
    }

    /// CPython's `server_bind` + `server_activate`, for a server built with
    /// `bind_and_activate(false)`.
    ///
    /// # Errors
    /// The bind or listen failed.
    pub fn bind_and_activate(&mut self) -> Result<(), BindError> {
        let l = &mut self.inner.transport_mut().0;
        l.server_bind()?;
        l.server_activate()
    }
}

impl<Svc, D> DatagramServer<Svc, D>
where
    Svc: Service<Address, Handler: DatagramHandler>,
    D: DatagramDispatch<SocketDatagram, Svc> + Default,
{
    /// Binds with CPython's defaults and the strategy's defaults.
    ///
    /// # Errors
    /// See [`Builder::datagram`].
    pub fn bind(address: impl IntoBindAddr, service: Svc) -> Result<Self, BindError> {
        Builder::new().dispatch(D::default()).datagram(address, service)
    }
}

impl<Svc, D: Dispatch> DatagramServer<Svc, D> {
    /// The socket (CPython's `server.socket`).
    pub fn datagram_socket(&self) -> &SocketDatagram {
        &self.inner.transport().socket
    }

    /// CPython's `server_bind`, for a server built with
    /// `bind_and_activate(false)`.
    ///
    /// # Errors
    /// The bind failed.
    pub fn bind_and_activate(&mut self) -> Result<(), BindError> {
        self.inner.transport_mut().socket.server_bind()
    }
}

impl<T, Svc, D> SocketServer<T, Svc, D>
where
    T: Transport<Svc, D, Error = io::Error> + Bound,
    Svc: Service<<T as Transport<Svc, D>>::Address>,
    D: Dispatch,
{
    fn from_parts(transport: T, service: Svc, dispatch: D, shared: Arc<Shared>) -> Self {
        let signal = Signal(Arc::clone(&shared));
        let inner = Server::new(transport, service, StdClock::new(), signal, dispatch);
        Self { inner, shared, serve: Server::serve_forever, handle: Server::handle_request }
    }
}

impl<T: Bound, Svc, D: Dispatch> SocketServer<T, Svc, D> {
    /// CPython's `serve_forever(poll_interval)`: serve until
    /// [`ShutdownHandle::shutdown`]. The wait is woken at once by a
    /// shutdown; `poll_interval` only paces `service_actions`.
    ///
    /// # Errors
    /// Only if the socket cannot be waited on at all.
    pub fn serve_forever(&mut self, poll_interval: Duration) -> io::Result<()> {
        (self.serve)(&mut self.inner, poll_interval)
    }

    /// CPython's `handle_request()`: one request, waiting at most
    /// [`timeout`](Self::set_timeout); `handle_timeout` when it passes.
    ///
    /// # Errors
    /// Only if the socket cannot be waited on at all.
    pub fn handle_request(&mut self) -> io::Result<()> {
        (self.handle)(&mut self.inner)
    }

    /// A handle that stops `serve_forever` from another thread or a signal.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.shared))
    }

    /// CPython's `server_address`: the bound address, with the real port
    /// after binding port 0.
    pub fn server_address(&self) -> &BindAddr {
        self.inner.transport().bound_address()
    }

    /// CPython's `timeout` for `handle_request`.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.inner.set_timeout(timeout);
    }

    /// How long `serve_forever` backs off after a failed accept (50 ms).
    pub fn set_accept_backoff(&mut self, backoff: Duration) {
        self.inner.set_accept_backoff(backoff);
    }
}

impl<T, Svc, D: Dispatch> SocketServer<T, Svc, D> {
    /// The service (hooks and shared state).
    pub fn service(&self) -> &Svc {
        self.inner.service()
    }

    /// How many times `serve_forever` stopped accepting because the
    /// strategy was at its cap (`max_threads`, `max_children`, a full
    /// pool): episodes, each reported once as a warning when it began and
    /// once at info level when there was room again.
    pub fn cap_reached(&self) -> u64 {
        self.inner.cap_reached()
    }

    /// The strategy (for instance to read `Threading::live_threads`).
    pub fn dispatch(&self) -> &D {
        self.inner.dispatch()
    }

    /// The strategy.
    pub fn dispatch_mut(&mut self) -> &mut D {
        self.inner.dispatch_mut()
    }
}

impl<T, Svc, D: Dispatch> SocketServer<T, Svc, D> {
    /// CPython's `server_close()`: joins threads / waits for children as
    /// the strategy says, closes the socket, removes a Unix socket path the
    /// server created. Dropping the server does the same.
    pub fn server_close(self) {
        drop(self);
    }
}

impl<T, Svc, D: Dispatch> Drop for SocketServer<T, Svc, D> {
    fn drop(&mut self) {
        self.inner.dispatch_mut().server_close();
    }
}
