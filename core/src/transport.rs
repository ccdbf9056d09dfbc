//! Transport traits: what the server state machine needs from a network stack.
//!
//! A transport is the equivalent of the socket half of `socketserver.TCPServer`
//! or `socketserver.UDPServer`: it can wait for readiness, accept a connection
//! or receive a datagram without blocking, and close. The std adapter
//! implements these over real sockets, the smoltcp adapter over a smoltcp
//! interface, and [`crate::mock`] over a script.

use core::fmt;
use core::time::Duration;

use embedded_io::{ErrorType, Read, Write};

/// What a wait on a transport ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// A connection or datagram may be waiting: try to accept / receive.
    Ready,
    /// The timeout passed with nothing to do.
    TimedOut,
    /// The wait was cut short on purpose (a shutdown wake-up). The server
    /// re-checks its shutdown signal.
    Woken,
}

/// A monotonic clock, for timeouts without `std`.
///
/// `now` counts from an arbitrary fixed origin; only differences matter.
pub trait Clock {
    /// The time elapsed since this clock's origin.
    fn now(&self) -> Duration;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

/// A monotonic [`Clock`] on `std::time::Instant`, counting from its
/// creation (feature `std`): the clock for any adapter on a host.
///
/// ```
/// use sockserv_core::StdClock;
/// use sockserv_core::driver::Clock;
/// let clock = StdClock::new();
/// assert!(clock.now() < core::time::Duration::from_secs(60));
/// ```
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug)]
pub struct StdClock(std::time::Instant);

#[cfg(feature = "std")]
impl StdClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self(std::time::Instant::now())
    }
}

#[cfg(feature = "std")]
impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "std")]
impl Clock for StdClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A connected stream: a blocking [`Read`] + [`Write`] with a half-close.
///
/// Dropping the stream closes it.
pub trait Connection: Read + Write {
    /// Shuts down the sending half (`shutdown(SHUT_WR)`): the peer reads EOF
    /// after everything written so far.
    ///
    /// # Errors
    /// The stack's error; a peer that already went away is reported, and the
    /// server ignores it (as CPython's `shutdown_request` does).
    fn shutdown_write(&mut self) -> Result<(), Self::Error>;
}

/// Waiting for readiness, shared by every blocking transport (a
/// [`StreamListener`] waits for a connection, a [`DatagramSocket`] for a
/// datagram) and by the server loop's [`Transport`](crate::driver::Transport).
pub trait Wait: ErrorType {
    /// Waits until a request (a connection, a datagram) may be taken, the timeout passes
    /// (`None`: no timeout) or the wait is woken for shutdown.
    ///
    /// Interruptions (EINTR) are retried inside, never reported.
    ///
    /// # Errors
    /// The stack failed to wait at all.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, Self::Error>;

    /// Sleeps for `duration` without watching for requests, but still
    /// returns [`Readiness::Woken`] at once when woken for shutdown.
    ///
    /// The server uses it to back off after a failed accept, so that a
    /// listener that stays readable (out of file descriptors) cannot make it
    /// spin.
    ///
    /// # Errors
    /// The stack failed to wait at all.
    fn pause(&mut self, duration: Duration) -> Result<Readiness, Self::Error>;
}

/// A listening stream socket: the equivalent of the socket owned by
/// `socketserver.TCPServer` / `UnixStreamServer`.
pub trait StreamListener: Wait {
    /// The connections this listener accepts.
    type Stream: Connection;
    /// A peer's address (`client_address`).
    type Address: Clone + fmt::Debug;

    /// Accepts one pending connection without blocking; `Ok(None)` when none
    /// is pending.
    ///
    /// # Errors
    /// The accept failed (for instance, out of file descriptors). The server
    /// drops the attempt, tells [`crate::Service::handle_accept_error`] and
    /// backs off.
    fn try_accept(&mut self) -> Result<Option<Accepted<Self>>, Self::Error>;
}

/// An accepted connection and its peer's address.
pub type Accepted<L> = (<L as StreamListener>::Stream, <L as StreamListener>::Address);

/// A received datagram's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received<A> {
    /// Bytes stored in the caller's buffer.
    pub len: usize,
    /// The sender.
    pub from: A,
    /// `Some(size)` when the datagram did not fit the buffer: it was
    /// `size` bytes (or more, when the stack cannot tell: then `size` is
    /// the buffer length plus one). Never silently cut.
    pub truncated: Option<usize>,
}

/// A datagram socket: the equivalent of the socket owned by
/// `socketserver.UDPServer` / `UnixDatagramServer`.
pub trait DatagramSocket: Wait {
    /// A peer's address.
    type Address: Clone + fmt::Debug;

    /// Receives one datagram into `buf` without blocking; `Ok(None)` when none
    /// is waiting. A datagram larger than `buf` is consumed and reported in
    /// [`Received::truncated`].
    ///
    /// # Errors
    /// The receive failed.
    fn try_recv_from(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<Received<Self::Address>>, Self::Error>;

    /// Sends `data` as one datagram to `to`. A stack may wait until it can
    /// take the datagram, or fail at once when it cannot (the std adapter
    /// never waits: a Unix-datagram peer that does not read must not hold
    /// the server).
    ///
    /// # Errors
    /// The send failed (too large, unreachable, ...).
    fn send_to(&mut self, data: &[u8], to: &Self::Address) -> Result<(), Self::Error>;
}

/// Which readiness a connection of the event mode waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Wake when bytes (or EOF) can be read.
    pub read: bool,
    /// Wake when bytes can be written.
    pub write: bool,
}

/// A connected stream that never blocks: the connection of the event mode
/// (CPython's "explicit table of partially finished requests").
pub trait NbConnection: ErrorType {
    /// Reads what is there: `Ok(Some(n))` bytes, `Ok(Some(0))` at EOF (the
    /// peer closed its side), `Ok(None)` when nothing is there yet.
    ///
    /// # Errors
    /// The connection failed (reset, ...).
    fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error>;

    /// Writes what fits now: `Ok(Some(n))` with `n > 0` for a non-empty
    /// `buf`, `Ok(None)` when nothing fits yet.
    ///
    /// # Errors
    /// The connection failed (reset, broken pipe, ...).
    fn try_write(&mut self, buf: &[u8]) -> Result<Option<usize>, Self::Error>;

    /// Shuts down the sending half: the peer reads EOF after what was sent.
    ///
    /// # Errors
    /// The stack's error (ignored by the table when closing).
    fn shutdown_write(&mut self) -> Result<(), Self::Error>;
}

/// A connection accepted by an [`EventSource`] and its peer's address.
pub type NbAccepted<S> = (<S as EventSource>::Conn, <S as EventSource>::Address);

/// A readiness event of the event mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The listener may have connections to accept.
    Accept,
    /// The connection registered under `token` is ready for what its
    /// [`Interest`] asked: readable, writable or both. The server sends
    /// whatever is queued each time it services a connection, so only
    /// readability is reported.
    Conn {
        /// The token it was registered with.
        token: usize,
        /// Readable (or EOF, or an error to collect); `false` when only
        /// writable.
        read: bool,
    },
    /// The wait was woken for shutdown.
    Woken,
}

/// The readiness source of the event mode: a non-blocking listener plus a
/// registry of connections (epoll on Linux, poll(2) elsewhere, `iface.poll`
/// on smoltcp, a script in the mock).
pub trait EventSource: ErrorType {
    /// The connections it accepts.
    type Conn: NbConnection;
    /// A peer's address.
    type Address: Clone + fmt::Debug;

    /// Waits up to `timeout` (`None`: no limit) for readiness and stores
    /// the events in `events`; returns how many. `Ok(0)` when the timeout
    /// passed. Interruptions are retried inside.
    ///
    /// # Errors
    /// The wait itself failed.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        events: &mut [Event],
    ) -> Result<usize, Self::Error>;

    /// Accepts one connection without blocking; `Ok(None)` when none is
    /// pending. The connection is non-blocking.
    ///
    /// # Errors
    /// The accept failed (for instance, out of file descriptors).
    fn try_accept(&mut self) -> Result<Option<NbAccepted<Self>>, Self::Error>;

    /// Starts or stops reporting [`Event::Accept`] (stopped while the
    /// table is full or after a failed accept).
    ///
    /// # Errors
    /// The registry failed.
    fn set_accepting(&mut self, on: bool) -> Result<(), Self::Error>;

    /// Starts reporting readiness of `conn` under `token`.
    ///
    /// # Errors
    /// The registry failed; the connection is then closed.
    fn register(
        &mut self,
        token: usize,
        conn: &mut Self::Conn,
        interest: Interest,
    ) -> Result<(), Self::Error>;

    /// Changes what `conn` waits for.
    ///
    /// # Errors
    /// The registry failed; the connection is then closed.
    fn reregister(
        &mut self,
        token: usize,
        conn: &mut Self::Conn,
        interest: Interest,
    ) -> Result<(), Self::Error>;

    /// Stops reporting `conn` (called before it is closed).
    fn deregister(&mut self, token: usize, conn: &mut Self::Conn);
}
