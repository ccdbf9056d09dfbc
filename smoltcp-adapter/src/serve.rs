//! The servers of a smoltcp stack by name: the core's `Server` and
//! `EventServer` with everything this adapter fixes (the transport, the
//! stack's clock, the slot storage) filled in, so that a firmware writes
//! its server's type with the service and, for the event mode, the pool.

use core::time::Duration;

use smoltcp::wire::IpEndpoint;
use sockserv_core::driver::{BufferPool, Clock, Datagram, Stream};
use sockserv_core::{
    DatagramHandler, EventHandler, EventServerConfig, FixedSlots, Inline, Server, ServerSlot,
    Service, ShutdownFlag, ShutdownSignal, StreamHandler,
};

use crate::conn::TcpConn;
use crate::event::TcpEventSource;
use crate::net::Net;
use crate::tcp::TcpListener;
use crate::udp::UdpSocket;

/// The clock of a [`Stack`](crate::Stack), as the servers made from its
/// listeners and sockets read it: the clock is given once, to
/// [`Stack::new`](crate::Stack::new), and every server on the stack reads
/// the same one through this handle (which carries no clock type).
#[derive(Clone, Copy)]
pub struct StackClock<'s, 'a> {
    net: &'s dyn Net<'a>,
}

impl core::fmt::Debug for StackClock<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("StackClock").field(&self.net.now()).finish()
    }
}

impl Clock for StackClock<'_, '_> {
    fn now(&self) -> Duration {
        self.net.now()
    }
}

/// A TCP server in sync mode on a smoltcp stack (one request at a time,
/// on the caller's thread): `socketserver.TCPServer`. `Svc` makes the
/// handlers; `Sh` is the shutdown signal, a `static`
/// [`ShutdownFlag`] by default. Made by [`TcpListener::into_server`].
///
/// It carries no datagram reply buffer (`Inline<[u8; 0]>`): a stream
/// handler writes straight to its connection.
pub type TcpServer<'s, 'a, Svc, Sh = &'static ShutdownFlag> =
    Server<Stream<TcpListener<'s, 'a>>, Svc, StackClock<'s, 'a>, Sh, Inline<[u8; 0]>>;

/// A UDP server on a smoltcp stack: `socketserver.UDPServer`. It holds two
/// buffers of `N` bytes: the datagram received (one longer than `N` is
/// reported as truncated, never cut silently) and the reply. Made by
/// [`UdpSocket::into_server`].
pub type UdpServer<'s, 'a, Svc, const N: usize, Sh = &'static ShutdownFlag> =
    Server<Datagram<UdpSocket<'s, 'a>, [u8; N]>, Svc, StackClock<'s, 'a>, Sh, Inline<[u8; N]>>;

/// A TCP server in event mode on a smoltcp stack: the core's
/// [`EventServer`](sockserv_core::EventServer) over a
/// [`TcpEventSource`], with a table of `CONNS` connections (slots made
/// in place as connections first need them) sharing the buffers of the
/// pool `P`: a [`FixedPool`](sockserv_core::FixedPool) owned by
/// the server, or one borrowed from a `static`
/// (`&'static mut FixedPool<B, N>`). `Sh` is the shutdown signal, a
/// `static` [`ShutdownFlag`] by default. Made by
/// [`TcpListener::into_event_server`].
///
/// ```
/// # use sockserv_core::{EventHandler, FixedPool, Outbox, Step};
/// # use sockserv_smoltcp::EventTcpServer;
/// # #[derive(Clone, Copy)] struct Echo;
/// # impl EventHandler for Echo {
/// #     type Error = core::convert::Infallible;
/// #     fn received(&mut self, i: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
/// #         Ok(Step::consumed(out.write(i)))
/// #     }
/// # }
/// # impl sockserv_core::Service<sockserv_smoltcp::smoltcp::wire::IpEndpoint> for Echo {
/// #     type Handler = Echo;
/// #     fn handler(&self, _: &sockserv_smoltcp::smoltcp::wire::IpEndpoint) -> Echo { Echo }
/// # }
/// /// The firmware's server: 4 connections sharing four 512-byte buffers
/// /// that live in a `static`.
/// type EchoServer<'s> = EventTcpServer<'s, 'static, Echo, &'static mut FixedPool<512, 4>, 4>;
///
/// struct App<'s> {
///     server: EchoServer<'s>,
/// }
/// ```
pub type EventTcpServer<'s, 'a, Svc, P, const CONNS: usize, Sh = &'static ShutdownFlag> =
    sockserv_core::EventServer<
        TcpEventSource<'s, 'a>,
        Svc,
        StackClock<'s, 'a>,
        Sh,
        FixedSlots<ServerSlot<TcpEventSource<'s, 'a>, Svc>, CONNS>,
        P,
    >;

impl<'s, 'a> TcpListener<'s, 'a> {
    /// The stack's clock.
    pub fn clock(&self) -> StackClock<'s, 'a> {
        StackClock { net: self.net() }
    }

    /// A sync-mode server on this listener, on the stack's clock: the
    /// equivalent of `socketserver.TCPServer(address, handler)` once the
    /// listener is bound.
    pub fn into_server<Svc, Sh>(self, service: Svc, shutdown: Sh) -> TcpServer<'s, 'a, Svc, Sh>
    where
        Svc: Service<IpEndpoint, Handler: StreamHandler<TcpConn<'s, 'a>>>,
        Sh: ShutdownSignal,
    {
        let clock = self.clock();
        Server::new(Stream(self), service, clock, shutdown, Inline::with_reply_buffer([]))
    }

    /// An event-mode server on this listener, on the stack's clock, with a
    /// table of `CONNS` connections (from the type asked for, see
    /// [`EventTcpServer`]) sharing the buffers of `pool`. Set
    /// [`Options::max_connections`](crate::Options::max_connections) to
    /// `CONNS` (see [`TcpEventSource`]). A table of no connection does not
    /// compile.
    pub fn into_event_server<Svc, P, Sh, const CONNS: usize>(
        self,
        service: Svc,
        shutdown: Sh,
        pool: P,
        config: EventServerConfig,
    ) -> EventTcpServer<'s, 'a, Svc, P, CONNS, Sh>
    where
        Svc: Service<IpEndpoint, Handler: EventHandler>,
        P: BufferPool,
        Sh: ShutdownSignal + Clone,
    {
        const { assert!(CONNS > 0, "an event server needs room for one connection") };
        let source = TcpEventSource::new(self);
        let clock = source.clock();
        sockserv_core::EventServer::new(
            source,
            service,
            clock,
            shutdown,
            FixedSlots::new(),
            pool,
            config,
        )
    }
}

impl<'s, 'a> TcpEventSource<'s, 'a> {
    /// The stack's clock.
    pub fn clock(&self) -> StackClock<'s, 'a> {
        self.get_ref().clock()
    }
}

impl<'s, 'a> UdpSocket<'s, 'a> {
    /// The stack's clock.
    pub fn clock(&self) -> StackClock<'s, 'a> {
        StackClock { net: self.net() }
    }

    /// A server on this socket, on the stack's clock, with datagram and
    /// reply buffers of `N` bytes (from the type asked for, see
    /// [`UdpServer`]): `socketserver.UDPServer`. Empty buffers do not
    /// compile.
    pub fn into_server<Svc, Sh, const N: usize>(
        self,
        service: Svc,
        shutdown: Sh,
    ) -> UdpServer<'s, 'a, Svc, N, Sh>
    where
        Svc: Service<IpEndpoint, Handler: DatagramHandler>,
        Sh: ShutdownSignal,
    {
        const { assert!(N > 0, "a UDP server needs a buffer of at least one byte") };
        let clock = self.clock();
        let transport = Datagram { socket: self, buffer: [0; N] };
        Server::new(transport, service, clock, shutdown, Inline::with_reply_buffer([0; N]))
    }
}
