//! A scripted transport and virtual clock for host unit tests: no network,
//! no allocator, no real time. Our `TestingDevice`.
//!
//! A [`MockNet`] holds a script of events, each due at a virtual time:
//! connections with the bytes their client sends ([`MockConn`]), datagrams,
//! and accept or receive failures. Listeners and sockets made from it take
//! events when they are due; waiting moves the virtual clock forward to the
//! next event or by the timeout. Everything a server does is recorded:
//! bytes written per connection, half-closes, closes, datagrams sent, and
//! counts of waits, pauses and accepts.
//!
//! Capacities are const generics of [`MockNet`], fixed at compile time
//! (no allocator): `CONNS` connections per net, `CAPTURE` bytes captured
//! per connection or sent datagram, `SENT` datagrams, `EVENTS` pending
//! events. [`MockNet::new`] has the host defaults ([`MAX_CONNS`],
//! [`CAPTURE`], [`MAX_SENT`], [`MAX_EVENTS`]: about 140 KB); a test on a
//! device names smaller ones with [`MockNet::with_capacities`]. Going past
//! them fails the scripting call (or the server's write, with
//! `OutOfMemory`).
//!
//! ```
//! use sockserv::mock::{MockConn, MockNet};
//!
//! // 4 connections, 256 bytes captured each, 2 datagrams, 8 events:
//! // about 1.6 KB on a 32-bit device.
//! let net = MockNet::<'_, 4, 256, 2, 8>::with_capacities();
//! net.connect(MockConn::new(1, b"hi"));
//! assert_eq!(net.pending(), 1);
//! ```

use core::cell::RefCell;
use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;

use embedded_io::{ErrorKind, ErrorType, Read, Write};
use heapless::{Deque, Vec};

use crate::server::ShutdownFlag;
use crate::share::ShareWriter;
use crate::transport::{
    Accepted, Clock, Connection, DatagramSocket, Event as IoEvent, EventSource, Interest,
    NbAccepted, NbConnection, Readiness, Received, StreamListener, Wait,
};

/// Pending events a net can hold, by default.
pub const MAX_EVENTS: usize = 64;
/// Connections a net can record, by default.
pub const MAX_CONNS: usize = 32;
/// Bytes captured per connection or sent datagram, by default.
pub const CAPTURE: usize = 2048;
/// The virtual time a wait that finds readiness at once takes.
pub const READY_WAIT: Duration = Duration::from_micros(100);

/// Datagrams a net can record as sent, by default.
pub const MAX_SENT: usize = 32;

/// A mock peer address.
pub type MockAddr = u32;

/// A client address type the mock can stand in for, so that a service
/// written for a real stack's addresses (the std adapter's `Address`
/// implements it with the `mock` feature) runs on the mock unchanged: the
/// listener, socket and event source of a net hand out `A::from_mock(id)`
/// for the scripted peer `id`, and datagram replies to `a` are recorded
/// as sent to `a.to_mock()`.
pub trait MockAddress: Clone + fmt::Debug {
    /// The address standing for the mock peer `id`.
    fn from_mock(id: MockAddr) -> Self;
    /// The mock peer an address stands for.
    fn to_mock(&self) -> MockAddr;
}

impl MockAddress for MockAddr {
    fn from_mock(id: MockAddr) -> Self {
        id
    }
    fn to_mock(&self) -> MockAddr {
        *self
    }
}

/// A mock failure, carrying the `embedded_io` kind it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MockError(pub ErrorKind);

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mock: {:?}", self.0)
    }
}

impl core::error::Error for MockError {}

impl embedded_io::Error for MockError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

/// A scripted client connection.
#[derive(Clone, Copy, Debug)]
pub struct MockConn<'s> {
    from: MockAddr,
    input: &'s [u8],
    read_chunk: usize,
    read_delay: Duration,
    reset_after: Option<usize>,
    write_error: Option<ErrorKind>,
    hold_open: bool,
    write_window: Option<usize>,
}

impl<'s> MockConn<'s> {
    /// A client at `from` that sends `input`, then closes its side (EOF).
    pub const fn new(from: MockAddr, input: &'s [u8]) -> Self {
        Self {
            from,
            input,
            read_chunk: usize::MAX,
            read_delay: Duration::ZERO,
            reset_after: None,
            write_error: None,
            hold_open: false,
            write_window: None,
        }
    }

    /// After its input the peer keeps the connection open without sending:
    /// non-blocking reads find nothing (a client that never speaks, or
    /// stops speaking); blocking reads fail with `TimedOut`, as a read
    /// timeout would.
    pub const fn hold_open(mut self) -> Self {
        self.hold_open = true;
        self
    }

    /// A slow reader: the peer accepts only `n` bytes until the test opens
    /// its window further ([`MockNet::open_window`]); writes beyond it
    /// would block.
    pub const fn write_window(mut self, n: usize) -> Self {
        self.write_window = Some(n);
        self
    }

    /// A slow peer: each read returns at most one byte.
    pub const fn one_byte_at_a_time(mut self) -> Self {
        self.read_chunk = 1;
        self
    }

    /// Each read returns at most `n` bytes (at least 1).
    pub const fn read_chunk(mut self, n: usize) -> Self {
        self.read_chunk = if n == 0 { 1 } else { n };
        self
    }

    /// Each read moves the virtual clock forward by `delay` first.
    pub const fn read_delay(mut self, delay: Duration) -> Self {
        self.read_delay = delay;
        self
    }

    /// The peer resets after sending `n` bytes: the next read fails with
    /// `ConnectionReset`, and so do writes.
    pub const fn reset_after(mut self, n: usize) -> Self {
        self.reset_after = Some(n);
        self
    }

    /// Every write fails with `kind`.
    pub const fn write_error(mut self, kind: ErrorKind) -> Self {
        self.write_error = Some(kind);
        self
    }
}

#[derive(Clone, Copy, Debug)]
enum Event<'s> {
    Connect(MockConn<'s>),
    Datagram {
        from: MockAddr,
        data: &'s [u8],
    },
    Fail(ErrorKind),
    /// Readiness with nothing behind it (another process took it).
    Spurious,
    /// Another thread asks the server to stop while it waits.
    Stop(&'s ShutdownFlag),
    /// The peer of connection `conn` reads `n` more bytes.
    Window {
        conn: usize,
        n: usize,
    },
}

/// What a net recorded of one connection (up to `CAP` bytes of output).
#[derive(Clone, Debug, Default)]
pub struct ConnLog<const CAP: usize = CAPTURE> {
    from: MockAddr,
    output: Vec<u8, CAP>,
    writes: u32,
    bytes_read: usize,
    shutdown_writes: u32,
    closes: u32,
    reset_seen: bool,
}

impl<const CAP: usize> ConnLog<CAP> {
    /// The client's address.
    pub fn from(&self) -> MockAddr {
        self.from
    }
    /// The bytes the server wrote.
    pub fn output(&self) -> &[u8] {
        &self.output
    }
    /// How many writes (`send` calls) the server made with bytes to
    /// write, whether the connection took them or not.
    pub fn writes(&self) -> u32 {
        self.writes
    }
    /// How many input bytes the server read.
    pub fn bytes_read(&self) -> usize {
        self.bytes_read
    }
    /// How many times the server half-closed (`shutdown(SHUT_WR)`).
    pub fn shutdown_writes(&self) -> u32 {
        self.shutdown_writes
    }
    /// How many times the connection was closed (dropped).
    pub fn closes(&self) -> u32 {
        self.closes
    }
    /// Whether the server hit the scripted reset.
    pub fn reset_seen(&self) -> bool {
        self.reset_seen
    }
}

/// Counts of what servers did to a net.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MockStats {
    /// Calls to `wait`.
    pub waits: u32,
    /// Calls to `pause`.
    pub pauses: u32,
    /// Calls to `try_accept` / `try_recv_from`.
    pub accepts: u32,
    /// Of those, how many failed.
    pub accept_errors: u32,
}

/// Where a connection's script stands.
struct ConnScript<'s> {
    conn: MockConn<'s>,
    pos: usize,
}

impl ConnScript<'_> {
    fn reset_reached(&self) -> bool {
        self.conn.reset_after.is_some_and(|n| self.pos >= n)
    }

    fn readable(&self) -> bool {
        self.reset_reached() || self.pos < self.conn.input.len() || !self.conn.hold_open
    }

    fn writable(&self) -> bool {
        self.conn.write_error.is_some() || self.reset_reached() || self.conn.write_window != Some(0)
    }
}

impl<const CONNS: usize, const CAP: usize, const SENT: usize, const EVENTS: usize>
    State<'_, CONNS, CAP, SENT, EVENTS>
{
    /// Applies the stops and window openings due now; whether any was.
    fn apply_due(&mut self) -> bool {
        let mut any = false;
        while let Some((at, event)) = self.script.front().copied()
            && at <= self.now
        {
            match event {
                Event::Stop(flag) => flag.request(),
                Event::Window { conn, n } => {
                    if let Some(sc) = self.scripts.get_mut(conn) {
                        sc.conn.write_window = sc.conn.write_window.map(|w| w.saturating_add(n));
                    }
                }
                _ => break,
            }
            self.script.pop_front();
            any = true;
        }
        any
    }
}

struct State<'s, const CONNS: usize, const CAP: usize, const SENT: usize, const EVENTS: usize> {
    now: Duration,
    script: Deque<(Duration, Event<'s>), EVENTS>,
    conns: Vec<ConnLog<CAP>, CONNS>,
    scripts: Vec<ConnScript<'s>, CONNS>,
    /// The event mode's registrations: (token, connection, interest), in
    /// the order made.
    registered: Vec<(usize, usize, Interest), CONNS>,
    sent: Vec<(MockAddr, Vec<u8, CAP>), SENT>,
    stats: MockStats,
}

/// A scripted network with a virtual clock, holding up to `CONNS`
/// connections (`CAPTURE` bytes of output captured each), `SENT`
/// datagrams sent and `EVENTS` pending events. See the [module docs](self).
///
/// One event source at a time per net (registrations are the net's).
pub struct MockNet<
    's,
    const CONNS: usize = MAX_CONNS,
    const CAPTURE: usize = { self::CAPTURE },
    const SENT: usize = MAX_SENT,
    const EVENTS: usize = MAX_EVENTS,
> {
    state: RefCell<State<'s, CONNS, CAPTURE, SENT, EVENTS>>,
}

impl Default for MockNet<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'s> MockNet<'s> {
    /// An empty net at virtual time zero, with the host capacities (32
    /// connections of 2 KiB captured, 32 datagrams, 64 events).
    pub const fn new() -> Self {
        Self::with_capacities()
    }
}

impl<'s, const CONNS: usize, const CAP: usize, const SENT: usize, const EVENTS: usize>
    MockNet<'s, CONNS, CAP, SENT, EVENTS>
{
    /// An empty net at virtual time zero, with the capacities of its type:
    /// `MockNet::<'_, 4, 256, 2, 8>::with_capacities()`.
    pub const fn with_capacities() -> Self {
        Self {
            state: RefCell::new(State {
                now: Duration::ZERO,
                script: Deque::new(),
                conns: Vec::new(),
                scripts: Vec::new(),
                registered: Vec::new(),
                sent: Vec::new(),
                stats: MockStats { waits: 0, pauses: 0, accepts: 0, accept_errors: 0 },
            }),
        }
    }

    fn push(&self, at: Duration, event: Event<'s>) -> Result<(), MockError> {
        let mut st = self.state.borrow_mut();
        // Keep the script in time order: insert after every event due no later.
        let mut tail: Vec<(Duration, Event<'s>), EVENTS> = Vec::new();
        while let Some(last) = st.script.back() {
            if last.0 <= at {
                break;
            }
            let last = st.script.pop_back().ok_or(MockError(ErrorKind::Other))?;
            tail.push(last).map_err(|_| MockError(ErrorKind::OutOfMemory))?;
        }
        let full = st.script.push_back((at, event)).is_err();
        while let Some(e) = tail.pop() {
            st.script.push_back(e).map_err(|_| MockError(ErrorKind::OutOfMemory))?;
        }
        if full { Err(MockError(ErrorKind::OutOfMemory)) } else { Ok(()) }
    }

    /// Scripts a connection arriving now.
    ///
    /// # Panics
    /// When the script is full ([`MAX_EVENTS`]): a test-setup mistake.
    pub fn connect(&self, conn: MockConn<'s>) {
        let now = self.now();
        self.connect_at(now, conn);
    }

    /// Scripts a connection arriving at virtual time `at`.
    ///
    /// # Panics
    /// When the script is full.
    pub fn connect_at(&self, at: Duration, conn: MockConn<'s>) {
        self.push(at, Event::Connect(conn)).expect("mock script full");
    }

    /// Scripts a datagram from `from` arriving now.
    ///
    /// # Panics
    /// When the script is full.
    pub fn datagram(&self, from: MockAddr, data: &'s [u8]) {
        let now = self.now();
        self.push(now, Event::Datagram { from, data }).expect("mock script full");
    }

    /// Scripts a failing accept / receive (for instance
    /// `ErrorKind::OutOfMemory` standing for EMFILE) due now: the socket
    /// reports readiness and the accept fails.
    ///
    /// # Panics
    /// When the script is full.
    pub fn fail(&self, kind: ErrorKind) {
        let now = self.now();
        self.push(now, Event::Fail(kind)).expect("mock script full");
    }

    /// Scripts readiness at `at` that yields nothing when the server tries
    /// to accept or receive (the connection went to another process).
    ///
    /// # Panics
    /// When the script is full.
    pub fn spurious_ready_at(&self, at: Duration) {
        self.push(at, Event::Spurious).expect("mock script full");
    }

    /// Scripts another thread asking the server to stop at virtual time
    /// `at`, while the server waits: `flag` is requested and the wait wakes
    /// (`Woken`, or `Ready` when a connection is due at the same time — the
    /// race of CPython bpo-35017).
    ///
    /// # Panics
    /// When the script is full.
    pub fn request_stop_at(&self, at: Duration, flag: &'s ShutdownFlag) {
        self.push(at, Event::Stop(flag)).expect("mock script full");
    }

    /// Lets the peer of the `i`-th connection take `n` more bytes (see
    /// [`MockConn::write_window`]).
    pub fn open_window(&self, i: usize, n: usize) {
        let mut st = self.state.borrow_mut();
        if let Some(sc) = st.scripts.get_mut(i) {
            sc.conn.write_window = sc.conn.write_window.map(|w| w.saturating_add(n));
        }
    }

    /// Scripts the peer of the `i`-th connection reading `n` more bytes at
    /// virtual time `at` (a wait ends then).
    ///
    /// # Panics
    /// When the script is full.
    pub fn open_window_at(&self, at: Duration, i: usize, n: usize) {
        self.push(at, Event::Window { conn: i, n }).expect("mock script full");
    }

    /// A readiness source for the event mode over this net, handing out
    /// client addresses of type `A` (inferred from the service).
    pub fn event_source<A: MockAddress>(&self) -> MockEventSource<'_, 's, A> {
        MockEventSource { net: self, accepting: false, _a: PhantomData }
    }

    /// The virtual time.
    pub fn now(&self) -> Duration {
        self.state.borrow().now
    }

    /// Moves the virtual clock forward.
    pub fn advance(&self, by: Duration) {
        let mut st = self.state.borrow_mut();
        st.now = st.now.saturating_add(by);
    }

    /// Events not yet taken.
    pub fn pending(&self) -> usize {
        self.state.borrow().script.len()
    }

    /// The record of the `i`-th connection accepted (from 0).
    pub fn conn(&self, i: usize) -> Option<ConnLog<CAP>> {
        self.state.borrow().conns.get(i).cloned()
    }

    /// How many connections were accepted.
    pub fn conn_count(&self) -> usize {
        self.state.borrow().conns.len()
    }

    /// The `i`-th datagram sent: its destination and bytes.
    pub fn sent(&self, i: usize) -> Option<(MockAddr, Vec<u8, CAP>)> {
        self.state.borrow().sent.get(i).cloned()
    }

    /// How many datagrams were sent.
    pub fn sent_count(&self) -> usize {
        self.state.borrow().sent.len()
    }

    /// Counts of waits, pauses and accepts.
    pub fn stats(&self) -> MockStats {
        self.state.borrow().stats
    }

    /// A stream listener over this net.
    pub fn listener<A: MockAddress>(&self) -> MockListener<'_, 's, A> {
        MockListener { net: self, _a: PhantomData }
    }

    /// A datagram socket over this net.
    pub fn socket<A: MockAddress>(&self) -> MockSocket<'_, 's, A> {
        MockSocket { net: self, _a: PhantomData }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Readiness, MockError> {
        let mut st = self.state.borrow_mut();
        st.stats.waits += 1;
        let next = st.script.front().map(|e| e.0);
        let ready = match (next, timeout) {
            (Some(at), _) if at <= st.now => true,
            (Some(at), None) => {
                st.now = at;
                true
            }
            (Some(at), Some(t)) if at <= st.now.saturating_add(t) => {
                st.now = at;
                true
            }
            (_, Some(t)) => {
                st.now = st.now.saturating_add(t);
                false
            }
            // Nothing scripted and no timeout: a real socket would block for
            // ever; the mock reports the script as exhausted instead.
            (None, None) => return Err(MockError(ErrorKind::TimedOut)),
        };
        if !ready {
            return Ok(Readiness::TimedOut);
        }
        // Stops due now happen during this wait: they set the flag and wake it.
        let stopped = st.apply_due();
        let due = st.script.front().is_some_and(|e| e.0 <= st.now);
        Ok(if due {
            Readiness::Ready
        } else if stopped {
            Readiness::Woken
        } else {
            Readiness::TimedOut
        })
    }

    /// Moves the clock by `t` unless a scripted stop comes first (then to
    /// it, requesting it). Returns whether a stop happened.
    fn stop_within(&self, t: Duration) -> bool {
        let mut st = self.state.borrow_mut();
        st.stats.waits += 1;
        let end = st.now.saturating_add(t);
        if let Some((at, Event::Stop(_) | Event::Window { .. })) = st.script.front().copied()
            && at <= end
        {
            st.now = st.now.max(at);
            return st.apply_due();
        }
        st.now = end;
        false
    }

    fn pause(&self, d: Duration) -> Readiness {
        let mut st = self.state.borrow_mut();
        st.stats.pauses += 1;
        st.now = st.now.saturating_add(d);
        Readiness::TimedOut
    }

    fn take(&self) -> Option<Event<'s>> {
        let mut st = self.state.borrow_mut();
        st.stats.accepts += 1;
        let now = st.now;
        match st.script.front() {
            Some((at, _)) if *at <= now => match st.script.pop_front().map(|e| e.1) {
                Some(Event::Spurious) => None,
                // Not taken by accept; leave it for the next wait.
                Some(stop @ (Event::Stop(_) | Event::Window { .. })) => {
                    let _ = st.script.push_front((now, stop));
                    None
                }
                other => other,
            },
            _ => None,
        }
    }

    fn count_accept_error(&self) {
        self.state.borrow_mut().stats.accept_errors += 1;
    }

    fn with_conn<R>(
        &self,
        id: usize,
        f: impl FnOnce(&mut ConnLog<CAP>, &mut ConnScript<'s>, &mut Duration) -> R,
    ) -> R {
        let mut st = self.state.borrow_mut();
        let State { conns, scripts, now, .. } = &mut *st;
        f(&mut conns[id], &mut scripts[id], now)
    }

    fn read_conn(&self, id: usize, buf: &mut [u8]) -> Result<Option<usize>, MockError> {
        self.with_conn(id, |log, sc, now| {
            *now = now.saturating_add(sc.conn.read_delay);
            if sc.reset_reached() {
                log.reset_seen = true;
                return Err(MockError(ErrorKind::ConnectionReset));
            }
            let limit = sc.conn.reset_after.unwrap_or(usize::MAX).min(sc.conn.input.len());
            let n = buf.len().min(sc.conn.read_chunk).min(limit.saturating_sub(sc.pos));
            if n == 0 && !buf.is_empty() && sc.conn.hold_open {
                return Ok(None);
            }
            buf[..n].copy_from_slice(&sc.conn.input[sc.pos..sc.pos + n]);
            sc.pos += n;
            log.bytes_read += n;
            Ok(Some(n))
        })
    }

    fn write_conn(&self, id: usize, data: &[u8]) -> Result<Option<usize>, MockError> {
        self.with_conn(id, |log, sc, _| {
            if !data.is_empty() {
                log.writes += 1;
            }
            if let Some(kind) = sc.conn.write_error {
                return Err(MockError(kind));
            }
            if sc.reset_reached() {
                log.reset_seen = true;
                return Err(MockError(ErrorKind::ConnectionReset));
            }
            let n = data.len().min(sc.conn.write_window.unwrap_or(usize::MAX));
            if n == 0 && !data.is_empty() {
                return Ok(None);
            }
            log.output
                .extend_from_slice(&data[..n])
                .map_err(|_| MockError(ErrorKind::OutOfMemory))?;
            if let Some(w) = &mut sc.conn.write_window {
                *w -= n;
            }
            Ok(Some(n))
        })
    }

    fn readiness(&self, id: usize) -> (bool, bool) {
        let st = self.state.borrow();
        st.scripts.get(id).map_or((false, false), |sc| (sc.readable(), sc.writable()))
    }
}

impl<const CONNS: usize, const CAP: usize, const SENT: usize, const EVENTS: usize> Clock
    for MockNet<'_, CONNS, CAP, SENT, EVENTS>
{
    fn now(&self) -> Duration {
        MockNet::now(self)
    }
}

/// What the listener, streams, event source and socket of a net call on
/// it, with its capacities erased (so that their types carry none).
trait Core<'s> {
    fn wait(&self, timeout: Option<Duration>) -> Result<Readiness, MockError>;
    fn pause(&self, d: Duration) -> Readiness;
    fn take(&self) -> Option<Event<'s>>;
    fn count_accept_error(&self);
    /// Records an accepted connection; its index.
    fn open(&self, conn: MockConn<'s>) -> Result<usize, MockError>;
    fn read_conn(&self, id: usize, buf: &mut [u8]) -> Result<Option<usize>, MockError>;
    fn write_conn(&self, id: usize, data: &[u8]) -> Result<Option<usize>, MockError>;
    fn count_shutdown_write(&self, id: usize);
    fn count_close(&self, id: usize);
    /// Whether the connection's stream was dropped (closed).
    fn is_closed(&self, id: usize) -> bool;
    fn readiness(&self, id: usize) -> (bool, bool);
    fn apply_due(&self) -> bool;
    /// Whether a connection (or a failure) is due now.
    fn accept_due(&self) -> bool;
    /// A wait that found readiness at once: it takes [`READY_WAIT`].
    fn ready_wait(&self);
    fn stop_within(&self, t: Duration) -> bool;
    fn register(&self, token: usize, id: usize, interest: Interest) -> Result<(), MockError>;
    fn reregister(&self, token: usize, interest: Interest) -> Result<(), MockError>;
    fn deregister(&self, token: usize);
    /// Calls `f(token, id, interest)` for each registration, in order.
    fn registered(&self, f: &mut dyn FnMut(usize, usize, Interest));
    fn send(&self, to: MockAddr, data: &[u8]) -> Result<(), MockError>;
}

impl<'s, const CONNS: usize, const CAP: usize, const SENT: usize, const EVENTS: usize> Core<'s>
    for MockNet<'s, CONNS, CAP, SENT, EVENTS>
{
    fn wait(&self, timeout: Option<Duration>) -> Result<Readiness, MockError> {
        Self::wait(self, timeout)
    }
    fn pause(&self, d: Duration) -> Readiness {
        Self::pause(self, d)
    }
    fn take(&self) -> Option<Event<'s>> {
        Self::take(self)
    }
    fn count_accept_error(&self) {
        Self::count_accept_error(self);
    }
    fn open(&self, conn: MockConn<'s>) -> Result<usize, MockError> {
        let mut st = self.state.borrow_mut();
        let log = ConnLog { from: conn.from, ..ConnLog::default() };
        if st.conns.push(log).is_err() || st.scripts.push(ConnScript { conn, pos: 0 }).is_err() {
            st.stats.accept_errors += 1;
            return Err(MockError(ErrorKind::OutOfMemory));
        }
        Ok(st.conns.len() - 1)
    }
    fn read_conn(&self, id: usize, buf: &mut [u8]) -> Result<Option<usize>, MockError> {
        Self::read_conn(self, id, buf)
    }
    fn write_conn(&self, id: usize, data: &[u8]) -> Result<Option<usize>, MockError> {
        Self::write_conn(self, id, data)
    }
    fn count_shutdown_write(&self, id: usize) {
        self.with_conn(id, |log, _, _| log.shutdown_writes += 1);
    }
    fn count_close(&self, id: usize) {
        self.with_conn(id, |log, _, _| log.closes += 1);
    }
    fn is_closed(&self, id: usize) -> bool {
        self.with_conn(id, |log, _, _| log.closes > 0)
    }
    fn readiness(&self, id: usize) -> (bool, bool) {
        Self::readiness(self, id)
    }
    fn apply_due(&self) -> bool {
        self.state.borrow_mut().apply_due()
    }
    fn accept_due(&self) -> bool {
        let st = self.state.borrow();
        let now = st.now;
        st.script.front().is_some_and(|(at, e)| {
            *at <= now && !matches!(e, Event::Stop(_) | Event::Window { .. })
        })
    }
    fn ready_wait(&self) {
        let mut st = self.state.borrow_mut();
        st.stats.waits += 1;
        st.now = st.now.saturating_add(READY_WAIT);
    }
    fn stop_within(&self, t: Duration) -> bool {
        Self::stop_within(self, t)
    }
    fn register(&self, token: usize, id: usize, interest: Interest) -> Result<(), MockError> {
        let mut st = self.state.borrow_mut();
        st.registered.push((token, id, interest)).map_err(|_| MockError(ErrorKind::OutOfMemory))
    }
    fn reregister(&self, token: usize, interest: Interest) -> Result<(), MockError> {
        let mut st = self.state.borrow_mut();
        let entry = st
            .registered
            .iter_mut()
            .find(|e| e.0 == token)
            .ok_or(MockError(ErrorKind::NotFound))?;
        entry.2 = interest;
        Ok(())
    }
    fn deregister(&self, token: usize) {
        self.state.borrow_mut().registered.retain(|e| e.0 != token);
    }
    fn registered(&self, f: &mut dyn FnMut(usize, usize, Interest)) {
        let registered = self.state.borrow().registered.clone();
        for &(token, id, interest) in &registered {
            f(token, id, interest);
        }
    }
    fn send(&self, to: MockAddr, data: &[u8]) -> Result<(), MockError> {
        let bytes = Vec::from_slice(data).map_err(|_| MockError(ErrorKind::InvalidInput))?;
        let mut st = self.state.borrow_mut();
        st.sent.push((to, bytes)).map_err(|_| MockError(ErrorKind::OutOfMemory))
    }
}

/// A stream listener over a [`MockNet`], handing out addresses of type `A`.
pub struct MockListener<'n, 's, A = MockAddr> {
    net: &'n dyn Core<'s>,
    _a: PhantomData<fn() -> A>,
}

impl<A> ErrorType for MockListener<'_, '_, A> {
    type Error = MockError;
}

impl<'n, 's, A: MockAddress> Wait for MockListener<'n, 's, A> {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, MockError> {
        self.net.wait(timeout)
    }

    fn pause(&mut self, duration: Duration) -> Result<Readiness, MockError> {
        Ok(self.net.pause(duration))
    }
}

impl<'n, 's, A: MockAddress> StreamListener for MockListener<'n, 's, A> {
    type Stream = MockStream<'n, 's>;
    type Address = A;

    fn try_accept(&mut self) -> Result<Option<Accepted<Self>>, MockError> {
        match self.net.take() {
            None => Ok(None),
            Some(Event::Connect(conn)) => {
                let id = self.net.open(conn)?;
                let stream = MockStream { net: self.net, id };
                Ok(Some((stream, A::from_mock(conn.from))))
            }
            Some(Event::Fail(kind)) => {
                self.net.count_accept_error();
                Err(MockError(kind))
            }
            Some(Event::Datagram { .. }) => Err(MockError(ErrorKind::Unsupported)),
            Some(Event::Spurious | Event::Stop(_) | Event::Window { .. }) => Ok(None),
        }
    }
}

/// One accepted mock connection: reads the scripted input, records writes.
/// Blocking ([`Read`]/[`Write`]) and non-blocking ([`NbConnection`]).
pub struct MockStream<'n, 's> {
    net: &'n dyn Core<'s>,
    id: usize,
}

impl MockStream<'_, '_> {
    /// The connection's index in the net's records.
    pub fn id(&self) -> usize {
        self.id
    }
}

impl ErrorType for MockStream<'_, '_> {
    type Error = MockError;
}

impl Read for MockStream<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, MockError> {
        // A held-open peer with nothing to say: what a read timeout gives.
        self.net.read_conn(self.id, buf)?.ok_or(MockError(ErrorKind::TimedOut))
    }
}

impl Write for MockStream<'_, '_> {
    fn write(&mut self, data: &[u8]) -> Result<usize, MockError> {
        self.net.write_conn(self.id, data)?.ok_or(MockError(ErrorKind::TimedOut))
    }

    fn flush(&mut self) -> Result<(), MockError> {
        Ok(())
    }
}

impl Connection for MockStream<'_, '_> {
    fn shutdown_write(&mut self) -> Result<(), MockError> {
        self.net.count_shutdown_write(self.id);
        Ok(())
    }
}

impl NbConnection for MockStream<'_, '_> {
    fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, MockError> {
        self.net.read_conn(self.id, buf)
    }

    fn try_write(&mut self, data: &[u8]) -> Result<Option<usize>, MockError> {
        self.net.write_conn(self.id, data)
    }

    fn shutdown_write(&mut self) -> Result<(), MockError> {
        Connection::shutdown_write(self)
    }
}

impl Drop for MockStream<'_, '_> {
    fn drop(&mut self) {
        self.net.count_close(self.id);
    }
}

/// The event mode's readiness source over a [`MockNet`]: a connection is
/// readable when it has bytes, EOF or a reset to deliver, writable when its
/// peer's window is open. With nothing ready, waiting moves the virtual
/// clock like [`MockListener::wait`].
pub struct MockEventSource<'n, 's, A = MockAddr> {
    net: &'n dyn Core<'s>,
    accepting: bool,
    _a: PhantomData<fn() -> A>,
}

impl<A> MockEventSource<'_, '_, A> {
    /// Whether accepting is on.
    pub fn is_accepting(&self) -> bool {
        self.accepting
    }
}

impl<A> ErrorType for MockEventSource<'_, '_, A> {
    type Error = MockError;
}

impl<'n, 's, A: MockAddress> EventSource for MockEventSource<'n, 's, A> {
    type Conn = MockStream<'n, 's>;
    type Address = A;

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        events: &mut [IoEvent],
    ) -> Result<usize, MockError> {
        // Stops and window openings due now happen even while busy.
        let woken = self.net.apply_due();
        let mut n = 0;
        let mut push = |e: IoEvent| {
            if let Some(slot) = events.get_mut(n) {
                *slot = e;
                n += 1;
            }
        };
        let net = self.net;
        net.registered(&mut |token, id, interest| {
            let (r, w) = net.readiness(id);
            let (read, write) = (interest.read && r, interest.write && w);
            if read || write {
                push(IoEvent::Conn { token, read });
            }
        });
        if self.accepting && self.net.accept_due() {
            push(IoEvent::Accept);
        }
        if woken {
            push(IoEvent::Woken);
        }
        if n > 0 {
            // Even a wait that finds readiness at once takes a moment, so
            // that a loop spinning on readiness it ignores runs out its
            // deadlines (and shows in `stats().waits`) instead of hanging.
            self.net.ready_wait();
            return Ok(n);
        }
        if !self.accepting {
            // Due connections stay in the backlog: only time and stops matter.
            let t = timeout.ok_or(MockError(ErrorKind::TimedOut))?;
            let woken = self.net.stop_within(t);
            return Ok(if woken { usize::from(!events.is_empty()) } else { 0 });
        }
        match self.net.wait(timeout)? {
            Readiness::Ready => {
                if let Some(slot) = events.first_mut() {
                    *slot = IoEvent::Accept;
                }
                Ok(1)
            }
            Readiness::Woken => {
                if let Some(slot) = events.first_mut() {
                    *slot = IoEvent::Woken;
                }
                Ok(1)
            }
            Readiness::TimedOut => Ok(0),
        }
    }

    fn try_accept(&mut self) -> Result<Option<NbAccepted<Self>>, MockError> {
        MockListener::<A> { net: self.net, _a: PhantomData }.try_accept()
    }

    fn set_accepting(&mut self, on: bool) -> Result<(), MockError> {
        self.accepting = on;
        Ok(())
    }

    fn register(
        &mut self,
        token: usize,
        conn: &mut Self::Conn,
        interest: Interest,
    ) -> Result<(), MockError> {
        self.net.register(token, conn.id, interest)
    }

    fn reregister(
        &mut self,
        token: usize,
        _: &mut Self::Conn,
        interest: Interest,
    ) -> Result<(), MockError> {
        self.net.reregister(token, interest)
    }

    fn deregister(&mut self, token: usize, _: &mut Self::Conn) {
        self.net.deregister(token);
    }
}

/// A datagram socket over a [`MockNet`].
pub struct MockSocket<'n, 's, A = MockAddr> {
    net: &'n dyn Core<'s>,
    _a: PhantomData<fn() -> A>,
}

impl<A> ErrorType for MockSocket<'_, '_, A> {
    type Error = MockError;
}

impl<A: MockAddress> Wait for MockSocket<'_, '_, A> {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness, MockError> {
        self.net.wait(timeout)
    }

    fn pause(&mut self, duration: Duration) -> Result<Readiness, MockError> {
        Ok(self.net.pause(duration))
    }
}

impl<A: MockAddress> DatagramSocket for MockSocket<'_, '_, A> {
    type Address = A;

    fn try_recv_from(&mut self, buf: &mut [u8]) -> Result<Option<Received<A>>, MockError> {
        match self.net.take() {
            None => Ok(None),
            Some(Event::Datagram { from, data }) => {
                let len = data.len().min(buf.len());
                buf[..len].copy_from_slice(&data[..len]);
                let truncated = (data.len() > buf.len()).then_some(data.len());
                Ok(Some(Received { len, from: A::from_mock(from), truncated }))
            }
            Some(Event::Fail(kind)) => {
                self.net.count_accept_error();
                Err(MockError(kind))
            }
            Some(Event::Connect(_)) => Err(MockError(ErrorKind::Unsupported)),
            Some(Event::Spurious | Event::Stop(_) | Event::Window { .. }) => Ok(None),
        }
    }

    fn send_to(&mut self, data: &[u8], to: &A) -> Result<(), MockError> {
        self.net.send(to.to_mock(), data)
    }
}

/// How many buffers [`MockNet::serve_events`] lends, of
/// [`EVENT_BUFFER`] bytes each.
pub const EVENT_BUFFERS: usize = 8;
/// The size of each buffer [`MockNet::serve_events`] lends.
pub const EVENT_BUFFER: usize = 512;
/// The most service turns [`MockNet::serve_events`] runs, so that a
/// handler that never lets a connection close cannot hang a test.
pub const MAX_TURNS: usize = 100_000;

impl<'s> MockNet<'s> {
    /// Runs an event-mode server (an [`EventServer`](crate::EventServer)
    /// over [`event_source`](Self::event_source), [`MAX_CONNS`] slots,
    /// [`EVENT_BUFFERS`] buffers of [`EVENT_BUFFER`] bytes, the default
    /// [`EventServerConfig`](crate::EventServerConfig)) on this net until
    /// every connection scripted so far has closed and no scripted event
    /// is left (or [`MAX_TURNS`] turns passed); then look at what each
    /// connection got with [`conn`](Self::conn). The virtual clock moves as
    /// the server waits, so timeouts cost no real time.
    ///
    /// ```
    /// use core::fmt::Write as _;
    /// use sockserv::mock::{MockConn, MockNet};
    /// use sockserv::{EventHandler, Outbox, Step};
    ///
    /// /// Answers each `INCR` line with the count so far.
    /// struct Counter(u64);
    ///
    /// impl EventHandler for Counter {
    ///     type Error = core::fmt::Error;
    ///     fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
    ///         let used = out.answer_lines(input, 24, |_line, out| {
    ///             self.0 += 1;
    ///             write!(out, ":{}\r\n", self.0)
    ///         })?;
    ///         Ok(Step::consumed(used))
    ///     }
    /// }
    ///
    /// let net = MockNet::new();
    /// net.connect(MockConn::new(1, b"INCR\nINCR\nINCR\n"));
    /// net.serve_events(sockserv::service_fn(|_| Counter(0))).unwrap();
    /// assert_eq!(net.conn(0).unwrap().output(), b":1\r\n:2\r\n:3\r\n");
    /// ```
    ///
    /// `service` serves [`MockAddr`] clients, so that `service_fn(|_| ..)`
    /// needs no annotation; a service written for another address type (a
    /// [`MockAddress`], such as std's `Address`) runs on
    /// [`event_source`](Self::event_source) through
    /// [`EventServer::new`](crate::EventServer::new).
    ///
    /// # Errors
    /// Only when the mock source fails to wait (it does not).
    pub fn serve_events<Svc>(&self, service: Svc) -> Result<crate::TableStats, MockError>
    where
        Svc: crate::Service<MockAddr, Handler: crate::EventHandler>,
    {
        let flag = ShutdownFlag::new();
        let until =
            UntilDone { inner: service, net: self, flag: &flag, turns: core::cell::Cell::new(0) };
        let mut server = crate::EventServer::new(
            self.event_source::<MockAddr>(),
            until,
            self,
            &flag,
            Vec::<_, MAX_CONNS>::new(),
            crate::FixedPool::<EVENT_BUFFER, EVENT_BUFFERS>::new(),
            crate::EventServerConfig::default(),
        );
        server.serve_forever(Duration::from_millis(100))?;
        Ok(server.table().stats())
    }

    /// Whether every connection scripted so far has closed and nothing
    /// scripted is left to happen.
    fn all_done(&self) -> bool {
        let n = self.conn_count();
        self.pending() == 0 && (0..n).all(|i| self.conn(i).is_some_and(|c| c.closes() > 0))
    }
}

/// A service that stops its server once the net is done (see
/// [`MockNet::serve_events`]).
struct UntilDone<'n, 's, S> {
    inner: S,
    net: &'n MockNet<'s>,
    flag: &'n ShutdownFlag,
    turns: core::cell::Cell<usize>,
}

impl<S: crate::Service<A>, A: fmt::Debug> crate::Service<A> for UntilDone<'_, '_, S> {
    type Handler = S::Handler;
    fn handler(&self, client: &A) -> S::Handler {
        self.inner.handler(client)
    }
    fn verify_request(&self, request: &crate::Request<'_, A>) -> bool {
        self.inner.verify_request(request)
    }
    fn handle_error(&self, client: &A, error: &crate::RequestError<'_>) {
        self.inner.handle_error(client, error);
    }
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        self.inner.handle_accept_error(error);
    }
    fn handle_table_full(&self, client: &A) {
        self.inner.handle_table_full(client);
    }
    fn handle_buffers_exhausted(&self, client: &A) {
        self.inner.handle_buffers_exhausted(client);
    }
    fn handle_timeout(&self) {
        self.inner.handle_timeout();
    }
    fn service_actions(&self) {
        self.inner.service_actions();
        self.turns.set(self.turns.get() + 1);
        if self.net.all_done() || self.turns.get() >= MAX_TURNS {
            self.flag.request();
        }
    }
}

/// A writer to a mock connection, from [`ShareWriter::share_writer`]:
/// records into the same connection's output as the stream does, so a
/// handler that keeps writers of other connections (a broadcast) runs on
/// the mock. Writes fail with `ConnectionReset` once the stream was
/// dropped (the connection closed), as a real socket's would.
pub struct MockWriter<'n, 's> {
    net: &'n dyn Core<'s>,
    id: usize,
}

impl ErrorType for MockWriter<'_, '_> {
    type Error = MockError;
}

impl Write for MockWriter<'_, '_> {
    fn write(&mut self, data: &[u8]) -> Result<usize, MockError> {
        if self.net.is_closed(self.id) {
            return Err(MockError(ErrorKind::ConnectionReset));
        }
        self.net.write_conn(self.id, data)?.ok_or(MockError(ErrorKind::TimedOut))
    }

    fn flush(&mut self) -> Result<(), MockError> {
        Ok(())
    }
}

impl<'n, 's> ShareWriter for MockStream<'n, 's> {
    type Writer = MockWriter<'n, 's>;
    fn share_writer(&self) -> Result<MockWriter<'n, 's>, MockError> {
        Ok(MockWriter { net: self.net, id: self.id })
    }
}
