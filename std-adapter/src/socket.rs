//! Real sockets as core transports: [`SocketListener`] (TCP, Unix stream)
//! and [`SocketDatagram`] (UDP, Unix datagram), built with the CPython
//! knobs in [`Options`].

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use embedded_io::ErrorType;
use socket2::{Domain, SockAddr, Socket, Type};
use sockserv_core::driver::{
    Accepted, DatagramSocket, Readiness, Received, ReplySendError, StreamListener, Wait,
};

use crate::activation::Inherited;
use crate::addr::{Address, BindAddr};
use crate::conn::Conn;
use crate::shutdown::Shared;
use crate::sys;

/// CPython's server class attributes, with its names and meaning.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `listen()` backlog. Default: the system's `SOMAXCONN`
    /// (`/proc/sys/net/core/somaxconn`), as CPython now does (gh-80184:
    /// its old 5 made clients wait seconds).
    pub request_queue_size: i32,
    /// `SO_REUSEADDR` before bind. Default `false`, as CPython.
    pub allow_reuse_address: bool,
    /// `SO_REUSEPORT` before bind, for IPv4/IPv6 only (Linux refuses it on
    /// Unix sockets, CPython gh-128916). Default `false`.
    pub allow_reuse_port: bool,
    /// The datagram receive buffer. Default 65,536: a 65,507-byte UDP
    /// datagram fits; a larger one is reported as truncated, never cut
    /// silently (CPython's 8192 cuts, gh-128319).
    pub max_packet_size: usize,
    /// Bind and listen when the server is made. With `false`, call
    /// `server_bind` and `server_activate` yourself (set socket options
    /// in between through `socket()`).
    pub bind_and_activate: bool,
    /// `StreamRequestHandler.timeout`: a read or write on a connection that
    /// waits longer fails with `TimedOut`. Default `None` (wait for ever).
    pub stream_timeout: Option<Duration>,
    /// `StreamRequestHandler.disable_nagle_algorithm`: `TCP_NODELAY` on
    /// accepted TCP connections (Unix sockets have no Nagle). Default
    /// `true`, where CPython's is `False`.
    ///
    /// Why: a [`Conn`] (and [`BufStream`](sockserv_core::BufStream))
    /// writes without buffering, as CPython's `wbufsize = 0` writer does, so
    /// an answer leaves in as many pieces as the handler writes: each
    /// read-sized piece of an echo, each piece of a `write!`, the tail of a
    /// send that found the socket buffer full. With Nagle on, a piece
    /// smaller than the segment size waits until the peer acknowledges the
    /// previous one, and the peer delays that acknowledgement (Linux: up to
    /// 40 ms), so an answer of two pieces can take 40 ms: a 64 KiB echo in
    /// 16 KiB reads ran at 1,100 requests/s over 50 connections, ~45 ms
    /// each with the server idle, and 5 to 20 times that with Nagle off.
    /// Turning it off costs only more small segments for a handler that
    /// writes many tiny pieces; one that cares writes each answer whole
    /// (one `write_all`). Event mode turns it off too, as asyncio and Go
    /// do.
    pub disable_nagle_algorithm: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            request_queue_size: sys::somaxconn(),
            allow_reuse_address: false,
            allow_reuse_port: false,
            max_packet_size: 65_536,
            bind_and_activate: true,
            stream_timeout: None,
            disable_nagle_algorithm: true,
        }
    }
}

/// A bind (or listen) that failed: names what the caller asked for (as
/// written), the address it resolved to (when it did) and the cause.
///
/// ```
/// # struct Nop;
/// # impl<S: embedded_io::Read + embedded_io::Write> sockserv::StreamHandler<S> for Nop {
/// #     type Error = S::Error;
/// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
/// # }
/// let e = sockserv::std_adapter::TcpServer::bind("127.0.0.1:99999", sockserv::service_fn(|_| Nop))
///     .err()
///     .unwrap();
/// assert_eq!(e.requested, "127.0.0.1:99999");
/// assert!(e.address.is_none(), "it did not resolve");
/// assert_eq!(e.to_string(), "cannot bind 127.0.0.1:99999: invalid port value");
/// ```
#[derive(Debug)]
pub struct BindError {
    /// What the caller passed, as written (`"localhost:80"`, a path).
    pub requested: String,
    /// What it resolved to; `None` when it did not resolve.
    pub address: Option<BindAddr>,
    /// Why it failed.
    pub source: io::Error,
}

impl BindError {
    /// Binding (or preparing to bind) the resolved `address` failed.
    pub(crate) fn at(address: &BindAddr, source: io::Error) -> Self {
        Self { requested: address.to_string(), address: Some(address.clone()), source }
    }

    /// `requested` did not resolve to an address.
    pub(crate) fn unresolved(requested: impl fmt::Display, source: io::Error) -> Self {
        Self { requested: requested.to_string(), address: None, source }
    }
}

impl fmt::Display for BindError {
    /// `cannot bind ADDR: cause`, or `cannot bind REQUESTED (ADDR): cause`
    /// when what was asked for resolved to something that reads otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot bind {}", self.requested)?;
        if let Some(address) = &self.address
            && address.to_string() != self.requested
        {
            write!(f, " ({address})")?;
        }
        write!(f, ": {}", self.source)
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A socket of the address's family, created but not bound, with the
/// pre-bind options set. On error the socket is closed (dropped): nothing
/// leaks (CPython bpo-22435).
fn create(address: &BindAddr, ty: Type, opts: &Options) -> io::Result<Socket> {
    let socket = Socket::new(address.domain(), ty, None)?;
    let inet = address.domain() != Domain::UNIX;
    if opts.allow_reuse_address && inet {
        socket.set_reuse_address(true)?;
    }
    if opts.allow_reuse_port && inet {
        socket.set_reuse_port(true)?;
    }
    Ok(socket)
}

/// The common part of both socket kinds: the socket, its address, the
/// shutdown state, and the Unix path to remove on close.
#[derive(Debug)]
struct Bound {
    socket: Socket,
    address: BindAddr,
    shared: Arc<Shared>,
    created_path: Option<PathBuf>,
}

impl Bound {
    fn new(
        address: BindAddr,
        ty: Type,
        opts: &Options,
        shared: Arc<Shared>,
    ) -> Result<Self, BindError> {
        let socket =
            create(&address, ty, opts).map_err(|source| BindError::at(&address, source))?;
        Ok(Self { socket, address, shared, created_path: None })
    }

    /// An inherited socket, bound already: served as it is (non-blocking
    /// from now on); its Unix path, if any, is not ours to remove.
    fn inherited(inherited: Inherited, ty: Type, shared: Arc<Shared>) -> Result<Self, BindError> {
        let (socket, address) = inherited.into_socket(ty)?;
        socket.set_nonblocking(true).map_err(|source| BindError::at(&address, source))?;
        Ok(Self { socket, address, shared, created_path: None })
    }

    /// CPython's `server_bind`: bind, then learn the real address (the port
    /// the system picked for port 0).
    fn bind(&mut self) -> Result<(), BindError> {
        let err = |source| BindError::at(&self.address, source);
        let addr = self.address.to_sockaddr().map_err(err)?;
        self.socket.bind(&addr).map_err(err)?;
        if let BindAddr::Unix(p) = &self.address {
            self.created_path = Some(p.clone());
        }
        if let Some(real) = self.socket.local_addr().ok().and_then(|a| a.as_socket()) {
            self.address = BindAddr::Inet(real);
        }
        self.socket.set_nonblocking(true).map_err(|source| BindError::at(&self.address, source))
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<Readiness> {
        let polled = sys::poll_readable(
            [self.shared.wake_fd(), std::os::fd::AsFd::as_fd(&self.socket)],
            timeout,
        )?;
        if polled.ready[0] {
            self.shared.drain();
            return Ok(Readiness::Woken);
        }
        Ok(if polled.any { Readiness::Ready } else { Readiness::TimedOut })
    }

    fn pause(&self, duration: Duration) -> io::Result<Readiness> {
        // Watch only the wake-up pipe.
        if sys::wait_readable(self.shared.wake_fd(), Some(duration))? {
            self.shared.drain();
            return Ok(Readiness::Woken);
        }
        Ok(Readiness::TimedOut)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        // `with server:` / server_close: the socket closes with `self.socket`;
        // a Unix path this server created is removed.
        if let Some(p) = self.created_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A listening TCP or Unix stream socket: CPython's `TCPServer.socket` /
/// `UnixStreamServer.socket`.
#[derive(Debug)]
pub struct SocketListener {
    inner: Bound,
    stream_timeout: Option<Duration>,
    nodelay: bool,
    backlog: i32,
}

impl SocketListener {
    pub(crate) fn new(
        address: BindAddr,
        opts: &Options,
        shared: Arc<Shared>,
    ) -> Result<Self, BindError> {
        let inner = Bound::new(address, Type::STREAM, opts, shared)?;
        let mut listener = Self {
            inner,
            stream_timeout: opts.stream_timeout,
            nodelay: opts.disable_nagle_algorithm,
            backlog: opts.request_queue_size,
        };
        if opts.bind_and_activate {
            listener.server_bind()?;
            listener.server_activate()?;
        }
        Ok(listener)
    }

    /// Serves an inherited listening socket (its own backlog stays).
    pub(crate) fn inherited(
        inherited: Inherited,
        opts: &Options,
        shared: Arc<Shared>,
    ) -> Result<Self, BindError> {
        let inner = Bound::inherited(inherited, Type::STREAM, shared)?;
        Ok(Self {
            inner,
            stream_timeout: opts.stream_timeout,
            nodelay: opts.disable_nagle_algorithm,
            backlog: opts.request_queue_size,
        })
    }

    /// CPython's `server_bind`.
    ///
    /// # Errors
    /// The bind failed; the error names the address.
    pub fn server_bind(&mut self) -> Result<(), BindError> {
        self.inner.bind()
    }

    /// CPython's `server_activate`: `listen(request_queue_size)`.
    ///
    /// # Errors
    /// The listen failed.
    pub fn server_activate(&mut self) -> Result<(), BindError> {
        let inner = &self.inner;
        inner.socket.listen(self.backlog).map_err(|source| BindError::at(&inner.address, source))
    }

    /// The address bound (with the real port after binding port 0).
    pub fn address(&self) -> &BindAddr {
        &self.inner.address
    }

    /// The socket, for options this crate does not cover.
    pub fn socket(&self) -> &Socket {
        &self.inner.socket
    }

    /// The shared shutdown state (its wake-up pipe).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// A second handle on the same listening socket (a `dup`), with its
    /// own shutdown state, for another event loop; it does not remove a
    /// Unix path on close (the original does).
    pub(crate) fn try_clone_with(&self, shared: Arc<Shared>) -> io::Result<Self> {
        let socket = self.inner.socket.try_clone()?;
        let address = self.inner.address.clone();
        Ok(Self {
            inner: Bound { socket, address, shared, created_path: None },
            stream_timeout: self.stream_timeout,
            nodelay: self.nodelay,
            backlog: self.backlog,
        })
    }

    /// Accepts one connection for the event mode: non-blocking, with
    /// `TCP_NODELAY` if asked; `Ok(None)` when none is pending.
    pub(crate) fn accept_nonblocking(&self) -> io::Result<Option<(Socket, Address)>> {
        let Some((socket, addr)) = self.accept_raw()? else { return Ok(None) };
        socket.set_nonblocking(true)?;
        self.set_nodelay(&socket)?;
        Ok(Some((socket, addr)))
    }

    /// One `accept`, retrying interruptions; `Ok(None)` when none is pending
    /// (or the connection was reset before we took it: not ours to report).
    fn accept_raw(&self) -> io::Result<Option<(Socket, Address)>> {
        loop {
            match self.inner.socket.accept() {
                Ok((socket, addr)) => return Ok(Some((socket, Address::from_sockaddr(&addr)))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn set_nodelay(&self, socket: &Socket) -> io::Result<()> {
        if self.nodelay && self.inner.address.domain() != Domain::UNIX {
            socket.set_tcp_nodelay(true)?;
        }
        Ok(())
    }

    fn prepare(&self, socket: &Socket) -> io::Result<()> {
        socket.set_nonblocking(false)?;
        if self.stream_timeout.is_some() {
            // CPython's settimeout covers both directions.
            socket.set_read_timeout(self.stream_timeout)?;
            socket.set_write_timeout(self.stream_timeout)?;
        }
        self.set_nodelay(socket)
    }
}

impl ErrorType for SocketListener {
    type Error = io::Error;
}

impl Wait for SocketListener {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Readiness> {
        self.inner.wait(timeout)
    }

    fn pause(&mut self, duration: Duration) -> io::Result<Readiness> {
        self.inner.pause(duration)
    }
}

impl StreamListener for SocketListener {
    type Stream = Conn;
    type Address = Address;

    fn try_accept(&mut self) -> io::Result<Option<Accepted<Self>>> {
        let Some((socket, addr)) = self.accept_raw()? else { return Ok(None) };
        // A connection we cannot configure is closed, not served.
        self.prepare(&socket)?;
        let shared = Arc::clone(&self.inner.shared);
        let conn = Conn::new(socket, shared, self.stream_timeout, self.inner.socket.as_raw_fd());
        Ok(Some((conn, addr)))
    }
}

/// A bound UDP or Unix datagram socket: CPython's `UDPServer.socket` /
/// `UnixDatagramServer.socket`.
///
/// Replies never wait: a reply the system cannot take at once (`EAGAIN`:
/// a Unix-datagram peer whose receive queue is full, or a full send
/// buffer) is dropped and reported to `Service::handle_error` as
/// `RequestError::ReplyDropped`, in every strategy, so a client that
/// never reads its replies cannot hold the loop, a thread or a child.
/// UDP drops such a datagram silently somewhere on the path anyway;
/// CPython's blocking `sendto` instead waits, which for a Unix datagram
/// peer that never reads is for ever.
#[derive(Debug)]
pub struct SocketDatagram {
    inner: Bound,
    sender: Arc<Socket>,
    max_packet_size: usize,
}

impl SocketDatagram {
    pub(crate) fn new(
        address: BindAddr,
        opts: &Options,
        shared: Arc<Shared>,
    ) -> Result<Self, BindError> {
        let inner = Bound::new(address, Type::DGRAM, opts, shared)?;
        let sender =
            inner.socket.try_clone().map_err(|source| BindError::at(&inner.address, source))?;
        let mut s = Self { inner, sender: Arc::new(sender), max_packet_size: opts.max_packet_size };
        if opts.bind_and_activate {
            s.server_bind()?;
        }
        Ok(s)
    }

    /// Serves an inherited datagram socket.
    pub(crate) fn inherited(
        inherited: Inherited,
        opts: &Options,
        shared: Arc<Shared>,
    ) -> Result<Self, BindError> {
        let inner = Bound::inherited(inherited, Type::DGRAM, shared)?;
        let sender =
            inner.socket.try_clone().map_err(|source| BindError::at(&inner.address, source))?;
        Ok(Self { inner, sender: Arc::new(sender), max_packet_size: opts.max_packet_size })
    }

    /// CPython's `server_bind` (datagram servers have no `server_activate`).
    ///
    /// # Errors
    /// The bind failed; the error names the address.
    pub fn server_bind(&mut self) -> Result<(), BindError> {
        self.inner.bind()
    }

    /// The address bound (with the real port after binding port 0).
    pub fn address(&self) -> &BindAddr {
        &self.inner.address
    }

    /// The socket, for options this crate does not cover.
    pub fn socket(&self) -> &Socket {
        &self.inner.socket
    }

    /// The reply buffer size strategies give a datagram handler:
    /// `max_packet_size`, as large as the biggest datagram received.
    pub fn max_reply(&self) -> usize {
        self.max_packet_size
    }

    /// The shared shutdown state (its wake-up pipe).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Whether the server is asked to stop.
    pub(crate) fn stop_requested(&self) -> bool {
        self.inner.shared.is_requested()
    }

    /// A handle to the same socket that can send from other threads (the
    /// threading strategy replies through it).
    pub fn sender(&self) -> Arc<Socket> {
        Arc::clone(&self.sender)
    }
}

/// Sends one datagram reply through `socket`, without waiting: a reply
/// that cannot leave at once is dropped ([`ReplySendError::WouldBlock`],
/// reported as `RequestError::ReplyDropped`).
pub(crate) fn send_reply(socket: &Socket, data: &[u8], to: &Address) -> Result<(), ReplySendError> {
    let failed = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock => ReplySendError::WouldBlock,
        kind => ReplySendError::Failed(kind.into()),
    };
    let to = to.to_sockaddr().map_err(failed)?;
    send_to(socket, data, &to).map_err(failed)
}

/// One `sendto(MSG_DONTWAIT)`, retrying interruptions only. A full queue
/// is `WouldBlock`, never a wait: for a Unix datagram socket, poll(2)
/// reports the server's socket writable while the *peer's* receive queue
/// is full, so waiting for room would spin, and a peer that never reads
/// would hold the server (or a thread, or a child) for ever.
fn send_to(socket: &Socket, data: &[u8], to: &SockAddr) -> io::Result<()> {
    loop {
        match socket.send_to_with_flags(data, to, libc::MSG_DONTWAIT) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(_) => {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "datagram sent partially"));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

impl ErrorType for SocketDatagram {
    type Error = io::Error;
}

impl Wait for SocketDatagram {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Readiness> {
        self.inner.wait(timeout)
    }

    fn pause(&mut self, duration: Duration) -> io::Result<Readiness> {
        self.inner.pause(duration)
    }
}

impl DatagramSocket for SocketDatagram {
    type Address = Address;

    fn try_recv_from(&mut self, buf: &mut [u8]) -> io::Result<Option<Received<Address>>> {
        match sys::recv_from_trunc(&self.inner.socket, buf) {
            Ok((size, from)) => {
                let len = size.min(buf.len());
                let truncated = (size > buf.len()).then_some(size);
                Ok(Some(Received { len, from: Address::from_sockaddr(&from), truncated }))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Never waits: a datagram the system cannot take at once fails with
    /// `io::ErrorKind::WouldBlock` (see [`SocketDatagram`]).
    fn send_to(&mut self, data: &[u8], to: &Address) -> io::Result<()> {
        send_to(&self.inner.socket, data, &to.to_sockaddr()?)
    }
}
