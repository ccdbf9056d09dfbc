//! Handler traits (what users write) and the server hooks.
//!
//! Python splits a server into the server (connection-level work) and a
//! request handler (data-level work). Here the server-level part is a
//! [`Service`]: the server's hooks plus a factory that makes a fresh
//! handler per request. The service is Python's `self.server`: a handler
//! reaches shared state through what the service put into it when it made
//! the handler.

use core::fmt;
use core::marker::PhantomData;
use core::net::{IpAddr, SocketAddr};

use crate::logging::Level;

use embedded_io::{ErrorKind, ErrorType, Read, Write};

/// The equivalent of `socketserver.BaseRequestHandler` for stream
/// connections (`StreamRequestHandler`).
///
/// The server calls [`setup`](Self::setup); if it succeeded,
/// [`handle`](Self::handle) and then [`finish`](Self::finish) — even when
/// `handle` failed — as `BaseRequestHandler.__init__` does with
/// `setup(); try: handle() finally: finish()`. Each error goes to
/// [`Service::handle_error`] (both, when `handle` and `finish` fail).
///
/// Implement it generically over the stream, so that the same handler runs
/// on every transport:
///
/// ```
/// use embedded_io::{Read, Write};
/// use sockserv::StreamHandler;
///
/// /// Sends every byte back until the client closes its side.
/// struct Echo;
///
/// impl<S: Read + Write> StreamHandler<S> for Echo {
///     type Error = S::Error;
///     fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
///         let mut buf = [0u8; 512];
///         loop {
///             let n = stream.read(&mut buf)?;
///             if n == 0 {
///                 return Ok(());
///             }
///             stream.write_all(&buf[..n])?;
///         }
///     }
/// }
/// ```
#[doc(alias("StreamRequestHandler", "BaseRequestHandler"))]
pub trait StreamHandler<S: Read + Write> {
    /// What this handler's methods fail with; it reaches
    /// [`Service::handle_error`] as [`RequestError::Handler`].
    type Error: fmt::Debug;

    /// Runs before [`handle`](Self::handle). Default: nothing.
    ///
    /// # Errors
    /// Whatever the handler decides; `handle` is then skipped.
    fn setup(&mut self, _stream: &mut S) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Serves the request.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error>;

    /// Runs after [`handle`](Self::handle), even when it failed. Default:
    /// flushes the stream and ignores a peer that went away while flushing
    /// (CPython bpo-14574).
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn finish(&mut self, stream: &mut S) -> Result<(), Self::Error> {
        // A reset or broken pipe on the final flush is not the handler's fault.
        let _ = stream.flush();
        Ok(())
    }
}

/// The equivalent of `socketserver.DatagramRequestHandler`.
///
/// The handler gets the datagram as `&[u8]` and writes its answer into a
/// [`ReplyWriter`], a bounded buffer. After [`finish`](Self::finish) the
/// server sends what was written as one datagram to the sender — **an empty
/// datagram when nothing was written**, as CPython does — unless the handler
/// called [`ReplyWriter::suppress`]. As in CPython, the reply is sent even
/// when `handle` failed (the error still goes to [`Service::handle_error`]);
/// call `suppress` first if a failed request must not answer. When `setup`
/// fails, nothing else runs and nothing is sent (CPython's `finish`, which
/// sends, is skipped then too).
///
/// ```
/// use sockserv::{DatagramHandler, ReplyWriter};
/// use embedded_io::Write;
///
/// struct Echo;
///
/// impl DatagramHandler for Echo {
///     type Error = sockserv::ReplyFull;
///     fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
///         reply.write_all(packet)
///     }
/// }
/// ```
#[doc(alias = "DatagramRequestHandler")]
pub trait DatagramHandler {
    /// What this handler's methods fail with.
    type Error: fmt::Debug;

    /// Runs before [`handle`](Self::handle). Default: nothing.
    ///
    /// # Errors
    /// Whatever the handler decides; `handle` is then skipped.
    fn setup(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Serves one datagram.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error>;

    /// Runs after `handle`, even when it failed. Default: nothing.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn finish(&mut self, _reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Why a request did not complete, as [`Service::handle_error`] receives it.
///
/// `Display` is a sentence for a log line; `Debug` is the structure
/// (`Handler { phase: Received, error: Error, error_type: "core::fmt::Error" }`).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum RequestError<'a> {
    /// The handler returned an error in `phase`.
    Handler {
        /// Which of the handler's methods failed.
        phase: Phase,
        /// What it returned.
        error: &'a dyn fmt::Debug,
        /// The error's type (`core::any::type_name`), so that a bare
        /// `fmt::Error` or `()` still says what it is.
        error_type: &'static str,
    },
    /// The strategy could not start the request (a thread or a child
    /// process could not be made); the request was shut down unserved.
    Spawn(&'a dyn fmt::Debug),
    /// The handler panicked (only adapters that catch panics report this).
    Panic(&'a str),
    /// A datagram did not fit the receive buffer. It was not passed to the
    /// handler.
    Truncated {
        /// The datagram's size as far as the stack could tell.
        size: usize,
        /// The receive buffer's size (`max_packet_size`).
        capacity: usize,
    },
    /// Sending a datagram reply failed.
    Reply(ErrorKind),
    /// A datagram reply could not leave without waiting (on std: `sendto`
    /// failed with `EAGAIN`, as it does for a Unix-datagram peer whose
    /// receive queue is full). It was dropped, as a congested UDP path
    /// drops, so that no client can make the server wait or spin.
    ReplyDropped {
        /// The reply's size.
        len: usize,
    },
    /// The connection failed under an event-mode handler (reset, broken
    /// pipe, ...); it was closed.
    Io(ErrorKind),
    /// Event mode: nothing was read or written for the idle timeout; the
    /// connection was closed.
    IdleTimeout,
    /// Event mode: the receive buffer is full and the handler consumed
    /// none of it (a line or message longer than the buffer); the
    /// connection was closed.
    Stalled {
        /// The receive buffer's size.
        capacity: usize,
    },
}

/// Which handler method a [`RequestError::Handler`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Phase {
    /// `StreamHandler::setup` / `DatagramHandler::setup`.
    Setup,
    /// `StreamHandler::handle` / `DatagramHandler::handle`.
    Handle,
    /// `StreamHandler::finish` / `DatagramHandler::finish`.
    Finish,
    /// `EventHandler::opened`.
    Opened,
    /// `EventHandler::received`.
    Received,
    /// `EventHandler::peer_closed`.
    PeerClosed,
    /// `EventHandler::drained`.
    Drained,
}

impl fmt::Display for Phase {
    /// The handler method's name (`received`, `handle`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Setup => "setup",
            Self::Handle => "handle",
            Self::Finish => "finish",
            Self::Opened => "opened",
            Self::Received => "received",
            Self::PeerClosed => "peer_closed",
            Self::Drained => "drained",
        })
    }
}

impl<'a> RequestError<'a> {
    /// A handler failure in `phase` with `error` (its type recorded for the
    /// report).
    pub fn handler<E: fmt::Debug>(phase: Phase, error: &'a E) -> Self {
        Self::Handler { phase, error, error_type: core::any::type_name::<E>() }
    }
}

impl RequestError<'_> {
    /// The I/O error kind, for the failures that have one.
    pub fn io_kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Io(kind) | Self::Reply(kind) => Some(*kind),
            _ => None,
        }
    }

    /// Whether the peer went away (reset, broken pipe, aborted): routine
    /// for a server, reported at [`Level::Debug`].
    pub fn is_peer_gone(&self) -> bool {
        matches!(
            self.io_kind(),
            Some(
                ErrorKind::ConnectionReset
                    | ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
            )
        )
    }

    /// How serious it is, as the default `handle_error` logs it.
    pub fn level(&self) -> Level {
        match self {
            Self::Panic(_) | Self::Spawn(_) => Level::Error,
            _ if self.is_peer_gone() => Level::Debug,
            Self::IdleTimeout => Level::Info,
            _ => Level::Warn,
        }
    }
}

impl fmt::Display for RequestError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handler { phase, error, error_type } => {
                write!(f, "handler failed in {phase:?}: {error:?}")?;
                if *error_type == core::any::type_name::<fmt::Error>() {
                    // Its Debug says only `Error`: say what it is and what
                    // usually raises it.
                    write!(
                        f,
                        " ({error_type} in `{phase}`: a `write!` failed, e.g. an answer \
                         that did not fit the room)"
                    )?;
                }
                Ok(())
            }
            Self::Spawn(e) => write!(f, "the request could not be started: {e:?}"),
            Self::Panic(msg) => write!(f, "handler panicked: {msg}"),
            Self::Truncated { size, capacity } => write!(
                f,
                "datagram of {size} bytes does not fit the {capacity}-byte buffer; dropped"
            ),
            Self::Reply(kind) => write!(f, "sending the reply failed: {kind:?}"),
            Self::ReplyDropped { len } => write!(
                f,
                "the {len}-byte reply could not leave without waiting (the peer's queue is full); dropped"
            ),
            Self::Io(kind) => write!(f, "connection failed: {kind:?}"),
            Self::IdleTimeout => f.write_str("idle for too long; closed"),
            Self::Stalled { capacity } => {
                write!(
                    f,
                    "the {capacity}-byte receive buffer is full and the handler took none of it; closed"
                )
            }
        }
    }
}

/// What [`Service::verify_request`] sees of a request: CPython's
/// `(request, client_address)` before a handler is made.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
#[doc(alias = "client_address")]
pub enum Request<'a, A> {
    /// A stream connection, accepted and not yet read from.
    Connection {
        /// The peer's address.
        client: &'a A,
    },
    /// A datagram (CPython's `request[0]`), as the handler will get it.
    Datagram {
        /// The sender's address.
        client: &'a A,
        /// The datagram.
        packet: &'a [u8],
    },
}

impl<'a, A> Request<'a, A> {
    /// The client's address (CPython's `client_address`).
    pub fn client(&self) -> &'a A {
        match *self {
            Self::Connection { client } | Self::Datagram { client, .. } => client,
        }
    }

    /// The datagram, for a datagram request.
    pub fn packet(&self) -> Option<&'a [u8]> {
        match *self {
            Self::Datagram { packet, .. } => Some(packet),
            Self::Connection { .. } => None,
        }
    }
}

impl<A: ClientAddress> Request<'_, A> {
    /// The client's IP address (`None` for a Unix peer): Python's
    /// `client_address[0]`. Callable in a `verify` closure before the
    /// address type is known.
    pub fn ip(&self) -> Option<IpAddr> {
        self.client().ip()
    }

    /// The client's port (`None` for a Unix peer): Python's
    /// `client_address[1]`.
    pub fn port(&self) -> Option<u16> {
        self.client().port()
    }
}

/// An address type's IP and port, so that [`Request::ip`] and
/// [`Request::port`] work whatever the transport (implemented for
/// `core::net::SocketAddr` here and by the adapters' own address types).
pub trait ClientAddress {
    /// The IP address, `None` when the address has none (a Unix socket).
    fn ip(&self) -> Option<IpAddr>;
    /// The port, `None` when the address has none.
    fn port(&self) -> Option<u16>;
}

impl ClientAddress for SocketAddr {
    fn ip(&self) -> Option<IpAddr> {
        Some(SocketAddr::ip(self))
    }
    fn port(&self) -> Option<u16> {
        Some(SocketAddr::port(self))
    }
}

/// What a server serves with: `socketserver.BaseServer`'s overridable
/// methods, with its defaults, plus the factory that makes a fresh handler
/// for each request (CPython's `RequestHandlerClass`). One trait for every
/// mode: the server asks for a [`Handler`](Self::Handler) that implements
/// what it needs ([`StreamHandler`], [`DatagramHandler`] or
/// [`EventHandler`](crate::EventHandler)).
///
/// The service is Python's `self.server`: a handler reaches shared state
/// through what the service put into it. Every method takes `&self`: with
/// the threading strategy they run on handler threads, as CPython's do
/// (which clones the service per request: put shared state behind an
/// `Arc`). Most servers need no service of their own: [`service_fn`] makes
/// one from a closure, and [`ServiceExt`] overrides one hook at a time.
///
/// ```
/// use sockserv::{Request, Service, StreamHandler};
/// # struct Echo;
/// # impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for Echo {
/// #     type Error = S::Error;
/// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
/// # }
///
/// /// Serves only clients whose address is even.
/// struct EvenOnly;
///
/// impl Service<u32> for EvenOnly {
///     type Handler = Echo;
///     fn handler(&self, _client: &u32) -> Echo {
///         Echo
///     }
///     fn verify_request(&self, request: &Request<'_, u32>) -> bool {
///         request.client() % 2 == 0
///     }
/// }
/// ```
#[doc(alias = "BaseServer")]
pub trait Service<A: fmt::Debug> {
    /// The handler made for each request.
    type Handler;

    /// Makes the handler for a request from `client`.
    fn handler(&self, client: &A) -> Self::Handler;

    /// Returns whether to serve `request` (CPython's
    /// `verify_request(request, client_address)`): a datagram's view holds
    /// the packet, a connection's its client address. A refused connection
    /// is shut down and closed without making a handler; a refused
    /// datagram is dropped. Default: `true`.
    fn verify_request(&self, _request: &Request<'_, A>) -> bool {
        true
    }

    /// Told when a request failed (CPython's `handle_error`). The server
    /// keeps serving. Default: a report at [`RequestError::level`] through
    /// the crate's logging ([`logging::report`](crate::logging::report):
    /// `log` or `defmt` when enabled and a logger is installed; else, with
    /// `std`, warnings and errors as one stderr line written with one
    /// `write(2)`, so concurrent threads' and children's lines never
    /// splice; else nothing).
    fn handle_error(&self, client: &A, error: &RequestError<'_>) {
        let args = format_args!("request from {client:?} failed: {error}");
        crate::logging::report(error.level(), args);
    }

    /// Told when an accept or receive failed (for instance, out of file
    /// descriptors: `error` displays the system's message, `error.kind()`
    /// gives the portable kind). CPython drops these silently; the server still drops
    /// the attempt and backs off, but says so here. Default: a report at
    /// [`Level::Error`] (see [`handle_error`](Self::handle_error)).
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        let args = format_args!("accept failed: {error} ({:?}); backing off", error.kind());
        crate::logging::report(Level::Error, args);
    }

    /// Told when a connection was refused because the event mode's table
    /// is full, or a request because a thread pool's queue is full and it
    /// refuses (the std adapter's `WhenFull::Refuse`): the connection is
    /// closed at once (a datagram dropped); the others keep being served.
    /// Default: a report at [`Level::Warn`].
    fn handle_table_full(&self, client: &A) {
        let args = format_args!("connection table full; refused {client:?}");
        crate::logging::report(Level::Warn, args);
    }

    /// Told when a connection of the event mode needed a buffer (to read
    /// into, or to queue an answer the connection could not take at once)
    /// and every buffer of the pool was lent: the connection waits, not
    /// read from, until another connection gives a buffer back (nothing is
    /// lost; the peer's data waits in the transport). Told once each time
    /// a connection starts waiting. Default: nothing (it is back-pressure,
    /// not a failure; the table counts it in
    /// [`TableStats::buffer_waits`](crate::TableStats)).
    fn handle_buffers_exhausted(&self, client: &A) {
        let _ = client;
    }

    /// Called when [`crate::Server::handle_request`]'s timeout passes
    /// (CPython's `handle_timeout`). Default: nothing.
    fn handle_timeout(&self) {}

    /// Called once per turn of [`crate::Server::serve_forever`] (CPython's
    /// `service_actions`). Default: nothing.
    fn service_actions(&self) {}
}

/// Forwards every method of a service `S` to `$inner`, but those listed.
macro_rules! forward_service {
    ($inner:ident; $($skip:ident)*) => {
        forward_service!(@one $inner verify_request (request: &Request<'_, A>) -> bool; $($skip)*);
        forward_service!(@one $inner handle_error (client: &A, error: &RequestError<'_>) -> (); $($skip)*);
        forward_service!(@one $inner handle_accept_error (error: &dyn embedded_io::Error) -> (); $($skip)*);
        forward_service!(@one $inner handle_table_full (client: &A) -> (); $($skip)*);
        forward_service!(@one $inner handle_buffers_exhausted (client: &A) -> (); $($skip)*);
        forward_service!(@one $inner handle_timeout () -> (); $($skip)*);
        forward_service!(@one $inner service_actions () -> (); $($skip)*);
    };
    (@one $inner:ident $name:ident ($($arg:ident: $ty:ty),*) -> $ret:ty; $($skip:ident)*) => {
        forward_service!(@pick $name [$($skip)*] {
            fn $name(&self, $($arg: $ty),*) -> $ret {
                self.$inner.$name($($arg),*)
            }
        });
    };
    (@pick $name:ident [] { $($item:tt)* }) => { $($item)* };
    (@pick verify_request [verify_request $($rest:ident)*] { $($item:tt)* }) => {};
    (@pick handle_error [handle_error $($rest:ident)*] { $($item:tt)* }) => {};
    (@pick service_actions [service_actions $($rest:ident)*] { $($item:tt)* }) => {};
    (@pick $name:ident [$other:ident $($rest:ident)*] { $($item:tt)* }) => {
        forward_service!(@pick $name [$($rest)*] { $($item)* });
    };
}

impl<S: Service<A> + ?Sized, A: fmt::Debug> Service<A> for &S {
    type Handler = S::Handler;
    fn handler(&self, client: &A) -> S::Handler {
        (**self).handler(client)
    }
    fn verify_request(&self, request: &Request<'_, A>) -> bool {
        (**self).verify_request(request)
    }
    fn handle_error(&self, client: &A, error: &RequestError<'_>) {
        (**self).handle_error(client, error);
    }
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        (**self).handle_accept_error(error);
    }
    fn handle_table_full(&self, client: &A) {
        (**self).handle_table_full(client);
    }
    fn handle_buffers_exhausted(&self, client: &A) {
        (**self).handle_buffers_exhausted(client);
    }
    fn handle_timeout(&self) {
        (**self).handle_timeout();
    }
    fn service_actions(&self) {
        (**self).service_actions();
    }
}

/// A service with the default hooks around a handler-making closure,
/// made by [`service_fn`]. The type has a name to write in a field
/// (`ServiceFn<F, A>`); the closure is what [`service_fn`] infers.
pub struct ServiceFn<F, A> {
    make: F,
    _client: PhantomData<fn(&A)>,
}

/// Makes a service from a closure `&A -> Handler` (the closure gets the
/// client's address), with the default hooks: CPython's
/// `RequestHandlerClass` when the handler needs nothing from the request.
/// The bound sits on the function, so the closure's argument is inferred
/// from the server it is given to:
///
/// ```
/// # use sockserv::{Service, StreamHandler, service_fn};
/// # struct Echo;
/// # impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for Echo {
/// #     type Error = S::Error;
/// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
/// # }
/// let service = service_fn(|_| Echo);
/// # fn serves<A: core::fmt::Debug>(_: impl Service<A>) {}
/// # serves::<u32>(service);
/// ```
///
/// Hooks are overridden with [`ServiceExt`] (`service_fn(..).verify(..)`).
#[doc(alias = "RequestHandlerClass")]
pub fn service_fn<A, H, F>(make: F) -> ServiceFn<F, A>
where
    F: Fn(&A) -> H,
{
    ServiceFn { make, _client: PhantomData }
}

impl<F: Clone, A> Clone for ServiceFn<F, A> {
    fn clone(&self) -> Self {
        Self { make: self.make.clone(), _client: PhantomData }
    }
}

impl<F: Copy, A> Copy for ServiceFn<F, A> {}

impl<F, A> fmt::Debug for ServiceFn<F, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceFn")
    }
}

impl<F, H, A> Service<A> for ServiceFn<F, A>
where
    F: Fn(&A) -> H,
    A: fmt::Debug,
{
    type Handler = H;
    fn handler(&self, client: &A) -> H {
        (self.make)(client)
    }
}

/// Overrides one hook of a service with a closure, keeping the others.
pub trait ServiceExt<A: fmt::Debug>: Service<A> + Sized {
    /// Serves only requests for which `verify` returns `true` (CPython's
    /// `verify_request`). The closure's argument needs no annotation:
    /// [`Request`]'s methods ([`ip`](Request::ip), [`port`](Request::port),
    /// [`packet`](Request::packet)) work before the server fixes the
    /// address type.
    ///
    /// ```
    /// # use sockserv::{Service, ServiceExt, StreamHandler, Request, service_fn};
    /// # use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    /// # struct Echo;
    /// # impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for Echo {
    /// #     type Error = S::Error;
    /// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
    /// # }
    /// let denied = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 13));
    /// let service = service_fn(|_| Echo).verify(move |addr| addr.ip() != Some(denied));
    /// # fn serves<S: Service<SocketAddr>>(s: &S) -> &S { s }
    /// # let service = serves(&service);
    ///
    /// let from = |ip| SocketAddr::new(ip, 4000);
    /// assert!(!service.verify_request(&Request::Connection { client: &from(denied) }));
    /// assert!(service.verify_request(&Request::Connection { client: &from([127, 0, 0, 1].into()) }));
    /// ```
    ///
    /// A datagram's view holds the packet:
    ///
    /// ```
    /// # use sockserv::{DatagramHandler, ReplyWriter, ReplyFull, Service, ServiceExt, Request, service_fn};
    /// # struct Len;
    /// # impl DatagramHandler for Len {
    /// #     type Error = ReplyFull;
    /// #     fn handle(&mut self, _: &[u8], _: &mut ReplyWriter<'_>) -> Result<(), ReplyFull> { Ok(()) }
    /// # }
    /// let service = service_fn(|_| Len).verify(|req| !req.packet().is_some_and(<[u8]>::is_empty));
    /// # fn serves<S: Service<u32>>(s: &S) -> &S { s }
    /// # let service = serves(&service);
    /// assert!(!service.verify_request(&Request::Datagram { client: &7, packet: b"" }));
    /// assert!(service.verify_request(&Request::Datagram { client: &7, packet: b"hi" }));
    /// ```
    fn verify<V: Fn(&Request<'_, A>) -> bool>(self, verify: V) -> Verify<Self, V> {
        Verify { inner: self, verify }
    }

    /// Reports failed requests to `on_error` instead of the default
    /// (CPython's `handle_error`).
    fn on_error<E: Fn(&A, &RequestError<'_>)>(self, on_error: E) -> OnError<Self, E> {
        OnError { inner: self, on_error }
    }

    /// Runs `actions` once per `serve_forever` turn, between requests
    /// (CPython's `service_actions`): a place to act on a flag a signal
    /// set, without interrupting a request.
    fn on_service_actions<F: Fn()>(self, actions: F) -> OnServiceActions<Self, F> {
        OnServiceActions { inner: self, actions }
    }
}

impl<S: Service<A>, A: fmt::Debug> ServiceExt<A> for S {}

/// A service whose `verify_request` is a closure ([`ServiceExt::verify`]).
#[derive(Clone, Copy, Debug)]
pub struct Verify<S, V> {
    inner: S,
    verify: V,
}

impl<S, V, A> Service<A> for Verify<S, V>
where
    S: Service<A>,
    V: Fn(&Request<'_, A>) -> bool,
    A: fmt::Debug,
{
    type Handler = S::Handler;
    fn handler(&self, client: &A) -> S::Handler {
        self.inner.handler(client)
    }
    fn verify_request(&self, request: &Request<'_, A>) -> bool {
        (self.verify)(request)
    }
    forward_service!(inner; verify_request);
}

/// A service whose `handle_error` is a closure ([`ServiceExt::on_error`]).
#[derive(Clone, Copy, Debug)]
pub struct OnError<S, E> {
    inner: S,
    on_error: E,
}

impl<S, E, A> Service<A> for OnError<S, E>
where
    S: Service<A>,
    E: Fn(&A, &RequestError<'_>),
    A: fmt::Debug,
{
    type Handler = S::Handler;
    fn handler(&self, client: &A) -> S::Handler {
        self.inner.handler(client)
    }
    fn handle_error(&self, client: &A, error: &RequestError<'_>) {
        (self.on_error)(client, error);
    }
    forward_service!(inner; handle_error);
}

/// A service whose `service_actions` is a closure
/// ([`ServiceExt::on_service_actions`]).
#[derive(Clone, Copy, Debug)]
pub struct OnServiceActions<S, F> {
    inner: S,
    actions: F,
}

impl<S: Service<A>, F: Fn(), A: fmt::Debug> Service<A> for OnServiceActions<S, F> {
    type Handler = S::Handler;
    fn handler(&self, client: &A) -> S::Handler {
        self.inner.handler(client)
    }
    fn service_actions(&self) {
        (self.actions)();
    }
    forward_service!(inner; service_actions);
}

/// A write that did not fit: a [`ReplyWriter`]'s buffer, or the room of
/// an [`Outbox`](crate::event::Outbox) (`write_all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyFull {
    /// How many bytes there was room for: a [`ReplyWriter`]'s whole
    /// capacity, an `Outbox`'s [`room`](crate::event::Outbox::room) when
    /// the write was refused; 0 when unknown (a `Display` implementation
    /// failed inside `write!`).
    pub capacity: usize,
}

impl fmt::Display for ReplyFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reply does not fit: room for {} bytes", self.capacity)
    }
}

impl core::error::Error for ReplyFull {}

/// `write!` into a [`ReplyWriter`] fails with `WriteFmtError<ReplyFull>`;
/// this lets a datagram handler with `type Error = ReplyFull` use `?` on
/// it (a `Display` that fails reads as a reply that did not fit).
impl From<embedded_io::WriteFmtError<ReplyFull>> for ReplyFull {
    fn from(e: embedded_io::WriteFmtError<ReplyFull>) -> Self {
        match e {
            embedded_io::WriteFmtError::Other(full) => full,
            _ => ReplyFull { capacity: 0 },
        }
    }
}

impl embedded_io::Error for ReplyFull {
    fn kind(&self) -> ErrorKind {
        ErrorKind::OutOfMemory
    }
}

/// The reply buffer of a datagram handler (CPython's `wfile` of
/// `DatagramRequestHandler`), bounded by the slice it writes into.
///
/// A write that does not fit whole writes nothing and fails with
/// [`ReplyFull`]: never a partial write.
#[derive(Debug)]
pub struct ReplyWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    suppressed: bool,
}

impl<'a> ReplyWriter<'a> {
    /// A writer into `buf`, empty.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0, suppressed: false }
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The buffer's capacity.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Asks the server not to send any reply for this datagram (not even an
    /// empty one).
    pub fn suppress(&mut self) {
        self.suppressed = true;
    }

    /// Whether [`suppress`](Self::suppress) was called.
    pub fn is_suppressed(&self) -> bool {
        self.suppressed
    }

    /// Discards what was written.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl ErrorType for ReplyWriter<'_> {
    type Error = ReplyFull;
}

impl Write for ReplyWriter<'_> {
    fn write(&mut self, data: &[u8]) -> Result<usize, ReplyFull> {
        let end = self
            .len
            .checked_add(data.len())
            .filter(|&end| end <= self.buf.len())
            .ok_or(ReplyFull { capacity: self.buf.len() })?;
        self.buf[self.len..end].copy_from_slice(data);
        self.len = end;
        Ok(data.len())
    }

    fn flush(&mut self) -> Result<(), ReplyFull> {
        Ok(())
    }
}
