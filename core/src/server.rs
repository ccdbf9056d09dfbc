//! The server state machine: CPython's `BaseServer` loop, generic over the
//! transport, the service, the clock, the shutdown signal and the dispatch
//! strategy.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use embedded_io::{Error as _, ErrorType};

use crate::capacity::CapWatch;
use crate::handler::{DatagramHandler, Request, Service, StreamHandler};
use crate::request::{ReplySendError, serve_datagram, serve_stream, shutdown_stream};
use crate::transport::{Clock, DatagramSocket, Readiness, StreamListener, Wait};

/// How a server learns that it should stop: CPython's `__shutdown_request`
/// flag and `__is_shut_down` event.
///
/// [`ShutdownFlag`] is the allocation-free implementation; the std adapter
/// has one that also wakes the wait at once and lets `shutdown()` block
/// until the loop has returned.
pub trait ShutdownSignal {
    /// Whether a stop was asked for.
    fn is_requested(&self) -> bool;
    /// Told when `serve_forever` starts.
    fn loop_started(&self) {}
    /// Told when `serve_forever` returns; must clear the request, so that
    /// the server can serve again.
    fn loop_stopped(&self);
}

impl<T: ShutdownSignal + ?Sized> ShutdownSignal for &T {
    fn is_requested(&self) -> bool {
        (**self).is_requested()
    }
    fn loop_started(&self) {
        (**self).loop_started();
    }
    fn loop_stopped(&self) {
        (**self).loop_stopped();
    }
}

/// An allocation-free shutdown signal made of two atomics.
///
/// [`request`](Self::request) does not wait; [`is_running`](Self::is_running)
/// tells whether `serve_forever` is still looping. It can be a `static`.
#[derive(Debug, Default)]
#[doc(alias = "shutdown")]
pub struct ShutdownFlag {
    requested: AtomicBool,
    running: AtomicBool,
}

impl ShutdownFlag {
    /// A flag with no stop requested.
    pub const fn new() -> Self {
        Self { requested: AtomicBool::new(false), running: AtomicBool::new(false) }
    }

    /// Asks `serve_forever` to stop after its current turn (or at once, if
    /// it has not started yet). Safe to call from a handler or a hook.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Whether `serve_forever` is running.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

impl ShutdownSignal for ShutdownFlag {
    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
    fn loop_started(&self) {
        self.running.store(true, Ordering::SeqCst);
    }
    fn loop_stopped(&self) {
        self.requested.store(false, Ordering::SeqCst);
        self.running.store(false, Ordering::SeqCst);
    }
}

/// The concurrency strategy's server-level duties: CPython's mix-ins
/// override `service_actions`, `handle_timeout` and `server_close` to reap
/// and join their workers.
pub trait Dispatch {
    /// Once per `serve_forever` turn (forking: reap finished children;
    /// threading: drop finished threads).
    fn service_actions(&mut self) {}
    /// When `handle_request` times out.
    fn handle_timeout(&mut self) {}
    /// When the server closes (join / wait when blocking on close).
    fn server_close(&mut self) {}
    /// Whether the strategy can take another request now. At a cap
    /// (`max_threads`, `max_children`) it answers `false`, and
    /// `serve_forever` neither accepts nor watches the transport until it
    /// has room: new connections wait in the stack's backlog (not
    /// accepted and held, not closed), and a listener that stays readable
    /// cannot make the loop spin. Default: always.
    fn has_room(&self) -> bool {
        true
    }
    /// Sleeps until [`has_room`](Self::has_room) may have changed (a
    /// request finished) or `timeout` passed. The loop calls it with at
    /// most [`ROOM_WAIT`], so a stop is seen that soon. Default: returns.
    fn wait_for_room(&mut self, timeout: Duration) {
        let _ = timeout;
    }
    /// The cap [`has_room`](Self::has_room) answers for, as the reports
    /// name it: its name and size (`("max_threads", 8)`). Default: `None`
    /// (no cap; the reports then say "the dispatch").
    fn cap(&self) -> Option<(&'static str, usize)> {
        None
    }
}

/// A dispatch's cap as the reports name it.
struct CapName(Option<(&'static str, usize)>);

impl fmt::Display for CapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((name, n)) => write!(f, "{name} ({n})"),
            None => f.write_str("the dispatch"),
        }
    }
}

/// The longest [`Dispatch::wait_for_room`] the loop asks for: how soon a
/// stop is seen while the strategy is at its cap.
pub const ROOM_WAIT: Duration = Duration::from_millis(50);

/// How a stream request is run: inline, on a thread, in a child process...
/// CPython's `process_request`.
pub trait StreamDispatch<S, A, Svc: ?Sized>: Dispatch {
    /// Serves `stream` from `client`, usually by calling
    /// [`serve_stream`](crate::driver::serve_stream) wherever it runs it.
    fn process_request(&mut self, service: &Svc, stream: S, client: A);
}

/// How a datagram request is run. CPython's `process_request` for UDP.
pub trait DatagramDispatch<U: DatagramSocket + ?Sized, Svc: ?Sized>: Dispatch {
    /// Serves the datagram `packet` from `client`, usually by calling
    /// [`serve_datagram`](crate::driver::serve_datagram).
    fn process_request(
        &mut self,
        service: &Svc,
        socket: &mut U,
        packet: &[u8],
        truncated: Option<usize>,
        client: U::Address,
    );
}

/// One request at a time, on the server's own thread: the default of
/// `socketserver.TCPServer` / `UDPServer` (no mix-in).
///
/// `reply` is the datagram reply buffer (unused for streams); `Inline::new()`
/// gives a 512-byte array, enough for small protocols without an allocator.
#[derive(Debug)]
pub struct Inline<B = [u8; 512]> {
    reply: B,
}

impl Inline {
    /// Inline dispatch with a 512-byte datagram reply buffer.
    pub const fn new() -> Self {
        Self { reply: [0; 512] }
    }
}

impl Default for Inline {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: AsMut<[u8]>> Inline<B> {
    /// Inline dispatch with `reply` as the datagram reply buffer.
    pub const fn with_reply_buffer(reply: B) -> Self {
        Self { reply }
    }
}

impl<B> Dispatch for Inline<B> {}

impl<B, S, A, Svc> StreamDispatch<S, A, Svc> for Inline<B>
where
    S: crate::driver::Connection,
    A: fmt::Debug,
    Svc: Service<A, Handler: StreamHandler<S>> + ?Sized,
{
    fn process_request(&mut self, service: &Svc, stream: S, client: A) {
        serve_stream(service, stream, &client);
    }
}

impl<B, U, Svc> DatagramDispatch<U, Svc> for Inline<B>
where
    B: AsMut<[u8]>,
    U: DatagramSocket + ?Sized,
    Svc: Service<U::Address, Handler: DatagramHandler> + ?Sized,
{
    fn process_request(
        &mut self,
        service: &Svc,
        socket: &mut U,
        packet: &[u8],
        truncated: Option<usize>,
        client: U::Address,
    ) {
        let send = |data: &[u8], to: &U::Address| {
            socket.send_to(data, to).map_err(|e| ReplySendError::Failed(e.kind()))
        };
        serve_datagram(service, packet, truncated, &client, self.reply.as_mut(), send);
    }
}

/// The request-level half of a transport, as the server loop uses it:
/// wait and pause ([`Wait`]), and take one request through the dispatch. Sealed: it is
/// implemented by [`Stream`] (for [`StreamListener`]s) and [`Datagram`]
/// (for [`DatagramSocket`]s) only; a new stack implements those traits.
pub trait Transport<Svc: ?Sized, D>: Wait + sealed::Sealed {
    /// A client's address, as the hooks receive it.
    type Address: fmt::Debug;

    /// CPython's `_handle_request_noblock`: take one pending request, verify
    /// it, process it through `dispatch` (or shut it down if refused).
    /// Returns `Ok(false)` when nothing was pending.
    ///
    /// # Errors
    /// The accept or receive failed; nothing was served.
    fn handle_request_noblock(
        &mut self,
        service: &Svc,
        dispatch: &mut D,
    ) -> Result<bool, Self::Error>;
}

mod sealed {
    /// Keeps [`Transport`](super::Transport) to this crate's two kinds.
    pub trait Sealed {}
    impl<L> Sealed for super::Stream<L> {}
    impl<U, B> Sealed for super::Datagram<U, B> {}
}

/// A [`StreamListener`] as a server transport.
#[derive(Debug)]
pub struct Stream<L>(pub L);

impl<L: StreamListener> ErrorType for Stream<L> {
    type Error = L::Error;
}

impl<L: StreamListener> Wait for Stream<L> {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, L::Error> {
        self.0.wait(timeout)
    }
    fn pause(&mut self, duration: Duration) -> Result<Readiness, L::Error> {
        self.0.pause(duration)
    }
}

impl<L, Svc, D> Transport<Svc, D> for Stream<L>
where
    L: StreamListener,
    Svc: Service<L::Address> + ?Sized,
    D: StreamDispatch<L::Stream, L::Address, Svc>,
{
    type Address = L::Address;

    fn handle_request_noblock(
        &mut self,
        service: &Svc,
        dispatch: &mut D,
    ) -> Result<bool, L::Error> {
        let Some((stream, client)) = self.0.try_accept()? else {
            return Ok(false);
        };
        if service.verify_request(&Request::Connection { client: &client }) {
            dispatch.process_request(service, stream, client);
        } else {
            shutdown_stream(stream);
        }
        Ok(true)
    }
}

/// A [`DatagramSocket`] and its receive buffer (`max_packet_size` bytes) as
/// a server transport.
#[derive(Debug)]
pub struct Datagram<U, B> {
    /// The socket.
    pub socket: U,
    /// The receive buffer.
    pub buffer: B,
}

impl<U: DatagramSocket, B> ErrorType for Datagram<U, B> {
    type Error = U::Error;
}

impl<U: DatagramSocket, B> Wait for Datagram<U, B> {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, U::Error> {
        self.socket.wait(timeout)
    }
    fn pause(&mut self, duration: Duration) -> Result<Readiness, U::Error> {
        self.socket.pause(duration)
    }
}

impl<U, B, Svc, D> Transport<Svc, D> for Datagram<U, B>
where
    U: DatagramSocket,
    B: AsMut<[u8]>,
    Svc: Service<U::Address> + ?Sized,
    D: DatagramDispatch<U, Svc>,
{
    type Address = U::Address;

    fn handle_request_noblock(
        &mut self,
        service: &Svc,
        dispatch: &mut D,
    ) -> Result<bool, U::Error> {
        let buf = self.buffer.as_mut();
        let Some(got) = self.socket.try_recv_from(buf)? else {
            return Ok(false);
        };
        // Never trust a length: a transport that reports more than the
        // buffer holds gets its datagram treated as truncated.
        let capacity = buf.len();
        let (packet, truncated) = match buf.get(..got.len) {
            Some(p) => (p, got.truncated),
            None => (&buf[..], Some(got.len.max(capacity + 1))),
        };
        // UDP's shutdown_request is a no-op: a refused datagram is dropped.
        if service.verify_request(&Request::Datagram { client: &got.from, packet }) {
            dispatch.process_request(service, &mut self.socket, packet, truncated, got.from);
        }
        Ok(true)
    }
}

/// The equivalent of `socketserver.BaseServer`: the loop that waits for
/// requests and hands them to a dispatch strategy, with CPython's hooks.
///
/// * `T`: the transport ([`Stream`] or [`Datagram`] around a socket).
/// * `Svc`: the [`Service`] — hooks plus handler factory; Python's
///   `self.server` for the handlers.
/// * `C`: the [`Clock`] for `handle_request`'s timeout.
/// * `Sh`: the [`ShutdownSignal`].
/// * `D`: the dispatch strategy (CPython's mix-in), [`Inline`] by default.
///
/// # Example: a scripted request, no network
/// ```
/// # #[cfg(feature = "mock")] fn main() {
/// use core::time::Duration;
/// use sockserv::mock::{MockConn, MockNet};
/// use sockserv::{service_fn, Inline, Server, ShutdownFlag, StreamHandler};
/// use sockserv::driver::Stream;
/// use embedded_io::{Read, Write};
///
/// struct Upper;
/// impl<S: Read + Write> StreamHandler<S> for Upper {
///     type Error = S::Error;
///     fn handle(&mut self, s: &mut S) -> Result<(), S::Error> {
///         let mut buf = [0u8; 64];
///         let n = s.read(&mut buf)?;
///         buf[..n].make_ascii_uppercase();
///         s.write_all(&buf[..n])
///     }
/// }
///
/// let net = MockNet::new();
/// net.connect(MockConn::new(1, b"hi"));
/// let flag = ShutdownFlag::new();
/// let mut server = Server::new(Stream(net.listener()), service_fn(|_: &u32| Upper), &net, &flag, Inline::new());
/// server.set_timeout(Some(Duration::from_secs(1)));
/// server.handle_request().unwrap();
/// assert_eq!(net.conn(0).unwrap().output(), b"HI");
/// # }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
///
/// (The example needs the `mock` feature.)
#[doc(alias("BaseServer", "TCPServer", "UDPServer"))]
pub struct Server<T, Svc, C, Sh, D = Inline> {
    transport: T,
    service: Svc,
    clock: C,
    shutdown: Sh,
    dispatch: D,
    timeout: Option<Duration>,
    accept_backoff: Duration,
    cap: CapWatch,
}

/// Calls `loop_stopped` when dropped: `serve_forever`'s `finally`.
pub(crate) struct Stopped<'a, Sh: ShutdownSignal>(pub(crate) &'a Sh);

impl<Sh: ShutdownSignal> Drop for Stopped<'_, Sh> {
    fn drop(&mut self) {
        self.0.loop_stopped();
    }
}

/// The longest pause after failed accepts.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The pause after `failures` failed accepts in a row: `base`, doubling
/// with each further failure, at most [`MAX_ACCEPT_BACKOFF`] (so that a
/// lasting EMFILE costs a few wake-ups and lines a second, not a spin).
pub(crate) fn backoff_after(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(5);
    base.saturating_mul(1 << doublings).min(MAX_ACCEPT_BACKOFF.max(base))
}

/// How long `serve_forever` pauses after a failed accept or receive, by
/// default (doubling while failures go on, up to [`MAX_ACCEPT_BACKOFF`]).
pub const DEFAULT_ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl<T, Svc, C, Sh, D> Server<T, Svc, C, Sh, D>
where
    T: Transport<Svc, D>,
    Svc: Service<<T as Transport<Svc, D>>::Address>,
    C: Clock,
    Sh: ShutdownSignal,
    D: Dispatch,
{
    /// A server over a transport that is already bound and listening.
    pub fn new(transport: T, service: Svc, clock: C, shutdown: Sh, dispatch: D) -> Self {
        Self {
            transport,
            service,
            clock,
            shutdown,
            dispatch,
            timeout: None,
            accept_backoff: DEFAULT_ACCEPT_BACKOFF,
            cap: CapWatch::new(),
        }
    }

    /// CPython's `serve_forever(poll_interval)`: handle requests until the
    /// shutdown signal is seen.
    ///
    /// Each turn waits up to `poll_interval` for a request (unless the
    /// previous turn took one: then it tries at once), re-checks the
    /// shutdown signal (no request is accepted once a stop was asked for,
    /// bpo-35017), handles at most one request, then runs
    /// `service_actions` (the dispatch's, then the service's). It ignores
    /// [`timeout`](Self::set_timeout). After a failed accept it pauses
    /// [`accept_backoff`](Self::set_accept_backoff) (doubling while accepts
    /// keep failing, up to [`MAX_ACCEPT_BACKOFF`]) instead of waiting on the
    /// listener, so a listener that stays readable (out of file
    /// descriptors) cannot make it spin. It can be called again after it
    /// returned.
    ///
    /// # Errors
    /// Only when the transport cannot wait at all; requests that fail never
    /// stop the loop.
    pub fn serve_forever(&mut self, poll_interval: Duration) -> Result<(), T::Error> {
        self.shutdown.loop_started();
        // CPython's `finally:`: the request is cleared and waiters told even
        // when a handler or hook panics out of the loop.
        let _stopped = Stopped(&self.shutdown);
        let result = Self::serve_loop(
            &mut self.transport,
            &self.service,
            &mut self.dispatch,
            (&self.shutdown, &self.clock, &mut self.cap),
            poll_interval,
            self.accept_backoff,
        );
        // A stop ends an episode quietly (the next run reports afresh).
        self.cap.stopped();
        result
    }

    fn serve_loop(
        transport: &mut T,
        service: &Svc,
        dispatch: &mut D,
        (shutdown, clock, cap): (&Sh, &C, &mut CapWatch),
        poll_interval: Duration,
        accept_backoff: Duration,
    ) -> Result<(), T::Error> {
        let mut backoff = false;
        let mut failures = 0;
        // After a turn that took a request, the next turn tries to take one
        // at once instead of waiting first: under load that saves a wait
        // per request; when idle it costs the same (one try that finds
        // nothing, then the wait).
        let mut eager = false;
        while !shutdown.is_requested() {
            if !dispatch.has_room() {
                // An episode at the cap: reported once, when it begins.
                cap.update(true, clock.now(), &CapName(dispatch.cap()));
                dispatch.wait_for_room(poll_interval.min(ROOM_WAIT));
                // Once there is room, try at once: take who waits, or
                // find nobody does (the episode ends).
                eager = true;
                dispatch.service_actions();
                service.service_actions();
                continue;
            }
            let waited = !backoff && !eager;
            let ready = if backoff {
                transport.pause(backoff_after(accept_backoff, failures))?
            } else if eager {
                Readiness::Ready
            } else {
                transport.wait(Some(poll_interval))?
            };
            // bpo-35017: no request is accepted once a stop was asked for.
            if shutdown.is_requested() {
                break;
            }
            backoff = false;
            eager = false;
            if waited && ready == Readiness::TimedOut {
                cap.update(false, clock.now(), &CapName(dispatch.cap()));
            }
            if ready == Readiness::Ready {
                match Self::handle_request_noblock(transport, service, dispatch) {
                    Ok(true) => {
                        failures = 0;
                        eager = true;
                    }
                    // With room and nobody waiting, an episode at the cap
                    // is over.
                    Ok(false) => cap.update(false, clock.now(), &CapName(dispatch.cap())),
                    Err(()) => {
                        failures += 1;
                        backoff = true;
                    }
                }
            }
            dispatch.service_actions();
            service.service_actions();
        }
        Ok(())
    }

    /// Takes one pending request if any: `Ok(true)` if one was taken,
    /// `Ok(false)` if none was pending, `Err` if the accept failed (told to
    /// the hooks).
    fn handle_request_noblock(
        transport: &mut T,
        service: &Svc,
        dispatch: &mut D,
    ) -> Result<bool, ()> {
        transport
            .handle_request_noblock(service, dispatch)
            .map_err(|e| service.handle_accept_error(&e))
    }

    /// CPython's `handle_request()`: wait for one request and handle it,
    /// waiting at most [`timeout`](Self::set_timeout) (for ever when `None`).
    /// Wake-ups and interruptions do not cut the wait short. When the
    /// timeout passes, calls `handle_timeout` (the dispatch's, then the
    /// service's) and returns.
    ///
    /// # Errors
    /// Only when the transport cannot wait at all. A failed accept is
    /// reported to [`Service::handle_accept_error`] and counts as the request.
    pub fn handle_request(&mut self) -> Result<(), T::Error> {
        let deadline = self.timeout.map(|t| self.clock.now().saturating_add(t));
        let mut remaining = self.timeout;
        loop {
            if self.transport.wait(remaining)? == Readiness::Ready {
                let taken = Self::handle_request_noblock(
                    &mut self.transport,
                    &self.service,
                    &mut self.dispatch,
                );
                // A readiness that led to nothing (another process took the
                // connection) is not the request: keep waiting.
                if taken != Ok(false) {
                    return Ok(());
                }
            }
            if let Some(deadline) = deadline {
                let now = self.clock.now();
                if now >= deadline {
                    self.dispatch.handle_timeout();
                    self.service.handle_timeout();
                    return Ok(());
                }
                remaining = Some(deadline - now);
            }
        }
    }

    /// CPython's `server_close()` for the dispatch: joins threads or waits
    /// for children as the strategy was configured. The transport closes
    /// when the server is dropped.
    pub fn server_close(&mut self) {
        self.dispatch.server_close();
    }
}

impl<T, Svc, C, Sh, D> Server<T, Svc, C, Sh, D> {
    /// `handle_request`'s timeout (CPython's `timeout` attribute); `None`
    /// waits for ever.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// `handle_request`'s timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How many times `serve_forever` found the dispatch at its cap
    /// ([`Dispatch::has_room`] answering `false`): episodes, each reported
    /// once when it began (a warning) and once when it ended (info).
    pub fn cap_reached(&self) -> u64 {
        self.cap.reached()
    }

    /// How long `serve_forever` pauses after a failed accept.
    pub fn set_accept_backoff(&mut self, backoff: Duration) {
        self.accept_backoff = backoff;
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The service (Python's server object with its hooks and state).
    pub fn service(&self) -> &Svc {
        &self.service
    }

    /// The dispatch strategy.
    pub fn dispatch(&self) -> &D {
        &self.dispatch
    }

    /// The dispatch strategy.
    pub fn dispatch_mut(&mut self) -> &mut D {
        &mut self.dispatch
    }

    /// The shutdown signal.
    pub fn shutdown_signal(&self) -> &Sh {
        &self.shutdown
    }

    /// Takes the server apart.
    pub fn into_parts(self) -> (T, Svc, D) {
        (self.transport, self.service, self.dispatch)
    }
}
