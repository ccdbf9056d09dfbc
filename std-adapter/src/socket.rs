//! Real sockets as core transports: [`SocketListener`] (TCP, Unix stream)
//! and [`SocketDatagram`] (UDP, Unix datagram), built with the CPython
//! knobs in [`Options`].

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_io::ErrorType;
use socket2::{Domain, Socket, Type};
use sockserv_core::driver::{Accepted, DatagramSocket, Readiness, Received, StreamListener, Wait};

use crate::activation::Inherited;
use crate::addr::{Address, BindAddr};
use crate::conn::Conn;
use crate::error::BindError;
use crate::replies::{self, Keeper, Replier, ReplyStats};
use crate::shutdown::{Shared, Waited};
use crate::sys::{self, PollSet, Wants};

/// CPython's server class attributes, with its names and meaning.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `listen()` backlog. Default: the system's `SOMAXCONN`
    /// (`/proc/sys/net/core/somaxconn`), as CPython now does (gh-80184:
    /// its old 5 made clients wait seconds).
    pub request_queue_size: i32,
    /// `SO_REUSEADDR` before bind (CPython's `allow_reuse_address`).
    /// Default [`ReuseAddress::Streams`]: TCP listeners get it, datagram
    /// sockets do not.
    pub allow_reuse_address: ReuseAddress,
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
    /// `IPV6_V6ONLY` before bind, IPv6 only: `Some(false)` makes `[::]`
    /// take IPv4 connections too (dual stack, as `python3 -m http.server`
    /// asks), `Some(true)` IPv6 alone. Default `None`: the system's
    /// (`/proc/sys/net/ipv6/bindv6only`, 0 on Linux: dual stack).
    pub only_v6: Option<bool>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            request_queue_size: sys::somaxconn(),
            allow_reuse_address: ReuseAddress::Streams,
            allow_reuse_port: false,
            max_packet_size: 65_536,
            bind_and_activate: true,
            stream_timeout: None,
            disable_nagle_algorithm: true,
            only_v6: None,
        }
    }
}

/// Which sockets get `SO_REUSEADDR` before bind.
///
/// Why TCP listeners get it by default: a connection the server closed
/// first stays in `TIME_WAIT` for a minute, and without `SO_REUSEADDR`
/// Linux refuses to bind the port again while any does ("Address already
/// in use"), so a server restarted right after a busy run could not
/// start. With it, the bind succeeds as long as no socket *listens* on
/// the port (two live servers still cannot share it by accident). Rust's
/// `std::net::TcpListener::bind` sets it on Unix for this reason, and
/// CPython's `HTTPServer` sets `allow_reuse_address`. Datagram sockets do
/// not get it by default: on Linux it would let a second UDP socket bind
/// the same port and take a share of its datagrams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReuseAddress {
    /// Listening (stream) inet sockets only. The default.
    #[default]
    Streams,
    /// Datagram sockets too (CPython's `allow_reuse_address = True` on a
    /// `UDPServer`).
    All,
    /// None (CPython's `TCPServer` default).
    Never,
}

impl ReuseAddress {
    fn applies_to(self, ty: Type) -> bool {
        match self {
            Self::Streams => ty == Type::STREAM,
            Self::All => true,
            Self::Never => false,
        }
    }
}

impl From<bool> for ReuseAddress {
    /// CPython's boolean: `true` is [`All`](Self::All), `false`
    /// [`Never`](Self::Never).
    fn from(yes: bool) -> Self {
        if yes { Self::All } else { Self::Never }
    }
}

/// A socket of the address's family, created but not bound, with the
/// pre-bind options set. On error the socket is closed (dropped): nothing
/// leaks (CPython bpo-22435).
fn create(address: &BindAddr, ty: Type, opts: &Options) -> io::Result<Socket> {
    let socket = Socket::new(address.domain(), ty, None)?;
    let inet = address.domain() != Domain::UNIX;
    if opts.allow_reuse_address.applies_to(ty) && inet {
        socket.set_reuse_address(true)?;
    }
    if opts.allow_reuse_port && inet {
        socket.set_reuse_port(true)?;
    }
    if let Some(only) = opts.only_v6
        && address.domain() == Domain::IPV6
    {
        socket.set_only_v6(only)?;
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
    /// A stream listener: forked children close it
    /// ([`sys::listener_opened`]).
    listener: bool,
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
        Ok(Self::with(socket, address, shared, ty))
    }

    fn with(socket: Socket, address: BindAddr, shared: Arc<Shared>, ty: Type) -> Self {
        let listener = ty == Type::STREAM;
        if listener {
            sys::listener_opened(socket.as_raw_fd());
        }
        Self { socket, address, shared, created_path: None, listener }
    }

    /// An inherited socket, bound already: served as it is (non-blocking
    /// from now on); its Unix path, if any, is not ours to remove.
    fn inherited(inherited: Inherited, ty: Type, shared: Arc<Shared>) -> Result<Self, BindError> {
        let (socket, address) = inherited.into_socket(ty)?;
        socket.set_nonblocking(true).map_err(|source| BindError::at(&address, source))?;
        Ok(Self::with(socket, address, shared, ty))
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
        let fd = Some((self.socket.as_fd(), READABLE));
        Ok(readiness(self.shared.wait(fd, timeout, true)?))
    }

    fn pause(&self, duration: Duration) -> io::Result<Readiness> {
        // Watch only the wake-up pipe.
        Ok(readiness(self.shared.wait(None, Some(duration), true)?))
    }
}

const READABLE: Wants = Wants { read: true, write: false };

fn readiness(waited: Waited) -> Readiness {
    match waited {
        Waited::Stop => Readiness::Woken,
        Waited::Ready => Readiness::Ready,
        Waited::TimedOut => Readiness::TimedOut,
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if self.listener {
            sys::listener_closed(self.socket.as_raw_fd());
        }
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
            inner: Bound::with(socket, address, shared, Type::STREAM),
            stream_timeout: self.stream_timeout,
            nodelay: self.nodelay,
            backlog: self.backlog,
        })
    }

    /// Accepts one connection for the event mode: non-blocking, with
    /// `TCP_NODELAY` if asked; `Ok(None)` when none is pending.
    pub(crate) fn accept_nonblocking(&self) -> io::Result<Option<(Socket, Address)>> {
        let Some((socket, addr)) = self.accept_with(sys::accept_nonblocking)? else {
            return Ok(None);
        };
        self.set_nodelay(&socket)?;
        Ok(Some((socket, addr)))
    }

    /// One `accept`, retrying interruptions; `Ok(None)` when none is pending
    /// (or the connection was reset before we took it: not ours to report).
    fn accept_raw(&self) -> io::Result<Option<(Socket, Address)>> {
        self.accept_with(Socket::accept)
    }

    /// [`accept_raw`](Self::accept_raw) with the accept call given.
    fn accept_with(
        &self,
        accept: impl Fn(&Socket) -> io::Result<(Socket, socket2::SockAddr)>,
    ) -> io::Result<Option<(Socket, Address)>> {
        loop {
            match accept(&self.inner.socket) {
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
/// Replies never make the server wait. A UDP reply the system cannot take
/// at once (`EAGAIN`: a full send buffer) is dropped and reported to
/// `Service::handle_error` as `RequestError::ReplyDropped`, as a congested
/// path drops it anyway. A Unix-datagram reply whose peer's receive queue
/// is full waits instead, in order, in a bounded queue per peer that the
/// server loop retries until the peer reads (see [`ReplyStats`] and the
/// crate's README: "Unix datagrams"); the server goes on serving the
/// others meanwhile. CPython's blocking `sendto` waits in the server
/// itself, for ever when the peer never reads.
///
/// A Unix-datagram server also raises its send buffer to
/// `net.core.wmem_max`: Linux charges every reply sitting unread in a
/// peer's queue to the *sender's* send buffer, so that buffer is what a
/// client that never reads takes from the others.
#[derive(Debug)]
pub struct SocketDatagram {
    inner: Bound,
    sender: Arc<Socket>,
    replier: Replier,
    keeper: Option<Keeper>,
    max_packet_size: usize,
}

impl SocketDatagram {
    pub(crate) fn new(
        address: BindAddr,
        opts: &Options,
        shared: Arc<Shared>,
    ) -> Result<Self, BindError> {
        let inner = Bound::new(address, Type::DGRAM, opts, shared)?;
        let mut s = Self::with_replies(inner, opts)?;
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
        Self::with_replies(inner, opts)
    }

    /// The socket with its sender handle, and for Unix datagrams the
    /// keeper of waiting replies and the larger send buffer.
    fn with_replies(inner: Bound, opts: &Options) -> Result<Self, BindError> {
        let err = |source| BindError::at(&inner.address, source);
        let sender = Arc::new(inner.socket.try_clone().map_err(err)?);
        let (keeper, replier) = if inner.address.domain() == Domain::UNIX {
            inner.socket.set_send_buffer_size(sys::wmem_max()).map_err(err)?;
            let (keeper, replier) =
                Keeper::new(Arc::clone(&sender), opts.max_packet_size).map_err(err)?;
            (Some(keeper), replier)
        } else {
            (None, Keeper::none(Arc::clone(&sender)))
        };
        Ok(Self { inner, sender, replier, keeper, max_packet_size: opts.max_packet_size })
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

    /// A handle to the same socket that can send from other threads.
    pub fn sender(&self) -> Arc<Socket> {
        Arc::clone(&self.sender)
    }

    /// What every strategy replies through (from the loop, a thread or a
    /// forked child).
    pub(crate) fn replier(&self) -> &Replier {
        &self.replier
    }

    /// Unix datagrams: the replies that waited for a full peer queue, the
    /// ones dropped, and the ones waiting now (all zero for UDP, whose
    /// dropped replies go to `Service::handle_error` one by one).
    pub fn reply_stats(&self) -> ReplyStats {
        self.keeper.as_ref().map(Keeper::stats).unwrap_or_default()
    }

    /// [`Bound::wait`], also retrying waiting replies when they are due
    /// and taking the ones handed over: returns only for a datagram, a
    /// wake-up or `timeout`.
    fn wait_keeping(&mut self, timeout: Option<Duration>) -> io::Result<Readiness> {
        let Some(keeper) = self.keeper.as_mut() else { return self.inner.wait(timeout) };
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let due = keeper.next_due();
            let until = match (deadline, due) {
                (Some(d), Some(u)) => Some(d.min(u)),
                (d, u) => d.or(u),
            };
            let wait = until.map(|u| u.saturating_duration_since(Instant::now()));
            let mut set = PollSet::default();
            let read = Wants { read: true, write: false };
            set.push(self.inner.shared.wake_fd().as_raw_fd(), read);
            set.push(self.inner.socket.as_raw_fd(), read);
            set.push(keeper.fd().as_raw_fd(), read);
            set.wait(wait)?;
            let [woken, readable, handed] = [0, 1, 2].map(|i| {
                let r = set.ready(i);
                r.read || r.write
            });
            if woken {
                self.inner.shared.drain();
                return Ok(Readiness::Woken);
            }
            let now = Instant::now();
            if handed || due.is_some_and(|d| d <= now) {
                keeper.work(&self.inner.socket, now);
            }
            if readable {
                return Ok(Readiness::Ready);
            }
            if deadline.is_some_and(|d| d <= now) {
                return Ok(Readiness::TimedOut);
            }
        }
    }
}

impl ErrorType for SocketDatagram {
    type Error = io::Error;
}

impl Wait for SocketDatagram {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Readiness> {
        self.wait_keeping(timeout)
    }

    fn pause(&mut self, duration: Duration) -> io::Result<Readiness> {
        self.inner.pause(duration)
    }
}

impl DatagramSocket for SocketDatagram {
    type Address = Address;

    fn try_recv_from(&mut self, buf: &mut [u8]) -> io::Result<Option<Received<Address>>> {
        // A busy loop takes datagram after datagram without waiting: the
        // waiting replies get their turn here too.
        if let Some(keeper) = self.keeper.as_mut() {
            keeper.look(&self.inner.socket);
        }
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
        replies::send_to(&self.inner.socket, data, &to.to_sockaddr()?)
    }
}
