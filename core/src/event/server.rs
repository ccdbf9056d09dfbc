//! The event loop around a [`ConnTable`]: CPython's `serve_forever` for the
//! event mode.

use core::fmt;
use core::num::NonZeroUsize;
use core::time::Duration;

use embedded_io::{Error as _, ErrorKind};

use super::{BufferPool, ConnTable, EventHandler, Outcome, Slot, SlotStorage};
use super::{millis64, timeout_millis};
use crate::Service;
use crate::capacity::CapWatch;
use crate::server::ShutdownSignal;
use crate::transport::{Clock, Event, EventSource, Interest, NbConnection};

/// What a server does with a new connection (or request) when it has no
/// room for it: its connection table (event mode) or its queue (a thread
/// pool) is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WhenFull {
    /// Wait for room (the default): stop accepting meanwhile, so new
    /// connections wait in the stack's listen backlog (and datagrams in
    /// the socket's receive buffer, past which the stack drops them). A
    /// stop ends the wait; a request already taken is then closed
    /// unserved.
    #[default]
    Wait,
    /// Refuse at once: a connection is closed, a datagram dropped without
    /// a reply, and [`Service::handle_table_full`] told (default: a
    /// warning).
    Refuse,
}

/// What open connections get when an [`EventServer`] is stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnShutdown {
    /// Send what is buffered, then close (within
    /// [`shutdown_grace`](EventServerConfig::shutdown_grace)). The default.
    #[default]
    Flush,
    /// Keep serving them as usual (reading, answering) until each closes
    /// or `shutdown_grace` passes: a restart's drain, where the clients
    /// the old process accepted get their answers while the new process
    /// takes the new ones.
    Finish,
}

/// Knobs of an [`EventServer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventServerConfig {
    /// How long accepting pauses after a failed accept (out of file
    /// descriptors), doubling while failures go on (at most
    /// [`MAX_ACCEPT_BACKOFF`](crate::MAX_ACCEPT_BACKOFF)): existing
    /// connections keep being served meanwhile. At most 24 days, to the
    /// millisecond.
    pub accept_backoff: Duration,
    /// How long a shutdown waits for connections to send what is buffered
    /// (or, with [`OnShutdown::Finish`], to finish) before closing them
    /// anyway. At most 24 days, to the millisecond.
    pub shutdown_grace: Duration,
    /// What open connections get on shutdown: [`OnShutdown::Flush`] (the
    /// default) or [`OnShutdown::Finish`].
    pub on_shutdown: OnShutdown,
    /// What a new connection gets when the table is full:
    /// [`WhenFull::Wait`] (the default) stops accepting until a connection
    /// closes, so new connections wait in the stack's backlog (the
    /// listener is not watched meanwhile: nothing spins);
    /// [`WhenFull::Refuse`] accepts them and refuses each at once (closed,
    /// `handle_table_full` told), for clients that should fail fast rather
    /// than wait.
    pub when_full: WhenFull,
    /// At most this many connections are accepted per readiness event, so
    /// that a flood of new connections cannot starve open ones.
    pub accept_burst: NonZeroUsize,
    /// Close a connection after this long without a byte read or written,
    /// so that clients that never speak (or never read) cannot hold a slot
    /// and its buffers for ever. `None`: never. At most 24 days (a longer
    /// one counts as 24 days), to the millisecond.
    pub idle_timeout: Option<Duration>,
}

impl Default for EventServerConfig {
    fn default() -> Self {
        Self {
            accept_backoff: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(1),
            on_shutdown: OnShutdown::Flush,
            when_full: WhenFull::Wait,
            accept_burst: NonZeroUsize::new(128).unwrap(),
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

type Table<Src, Svc, S, P> = ConnTable<
    <Src as EventSource>::Conn,
    <Svc as Service<<Src as EventSource>::Address>>::Handler,
    <Src as EventSource>::Address,
    S,
    P,
>;

/// The slot type an [`EventServer`] over `Src` serving `Svc` stores.
pub type ServerSlot<Src, Svc> = Slot<
    <Src as EventSource>::Conn,
    <Svc as Service<<Src as EventSource>::Address>>::Handler,
    <Src as EventSource>::Address,
>;

/// A server in event mode: one thread, many connections, each served as
/// its transport reports readiness. The same hooks as the other modes:
/// `verify_request` (a refused connection is closed at once),
/// `handle_error` (per connection; the others keep being served),
/// `handle_accept_error` (accepting pauses, serving goes on),
/// `handle_table_full`, `service_actions` (once per turn), and shutdown
/// (stop accepting, send what is buffered, close, return).
///
/// `S` holds the slots (a `heapless::Vec` of [`ServerSlot`]s, or the std
/// adapter's growable storage) and `P` the buffers ([`FixedPool`](super::FixedPool)
/// or the std adapter's lazily allocated pool).
#[doc(alias("selectors", "select"))]
pub struct EventServer<Src, Svc, Clk, Sh, S, P>
where
    Src: EventSource,
    Svc: Service<Src::Address>,
{
    source: Src,
    service: Svc,
    clock: Clk,
    shutdown: Sh,
    table: Table<Src, Svc, S, P>,
    config: EventServerConfig,
    /// When accepting resumes after a failed accept, in [`millis64`].
    accept_resume: Option<u64>,
    accept_failures: u32,
    /// Accepting is off because the table is full.
    at_cap: bool,
    /// Episodes at the cap: from the table filling up to the first accept
    /// that finds nobody waiting with room in the table.
    cap: CapWatch,
}

/// The table's cap as the reports name it.
struct TableCap(usize);

impl fmt::Display for TableCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the connection table ({} connections)", self.0)
    }
}

/// How many readiness events one wait collects.
const EVENTS: usize = 64;

impl<Src, Svc, Clk, Sh, S, P> EventServer<Src, Svc, Clk, Sh, S, P>
where
    Src: EventSource,
    Src::Address: fmt::Debug,
    Svc: Service<Src::Address, Handler: EventHandler>,
    Clk: Clock,
    Sh: ShutdownSignal + Clone,
    S: SlotStorage<ServerSlot<Src, Svc>>,
    P: BufferPool,
{
    /// A server over `source` with a table over empty slot storage `slots`
    /// and the buffers of `pool`.
    pub fn new(
        source: Src,
        service: Svc,
        clock: Clk,
        shutdown: Sh,
        slots: S,
        pool: P,
        config: EventServerConfig,
    ) -> Self {
        let table = ConnTable::new(slots, pool, config.idle_timeout);
        Self {
            source,
            service,
            clock,
            shutdown,
            table,
            config,
            accept_resume: None,
            accept_failures: 0,
            at_cap: false,
            cap: CapWatch::new(),
        }
    }

    /// CPython's `serve_forever(poll_interval)` for the event mode: serve
    /// until the shutdown signal is seen, then stop accepting, give open
    /// connections up to `shutdown_grace` to send what is buffered, close
    /// them all and return. It can be called again afterwards.
    ///
    /// # Errors
    /// Only when the source cannot wait at all (connections are closed
    /// first).
    pub fn serve_forever(&mut self, poll_interval: Duration) -> Result<(), Src::Error> {
        self.shutdown.loop_started();
        // Cleared even if a handler or hook panics out of the loop.
        let signal = self.shutdown.clone();
        let _stopped = crate::server::Stopped(&signal);
        let result = self.serve_loop(poll_interval);
        self.cap.stopped();
        let drained = self.drain();
        result.and(drained)
    }

    fn serve_loop(&mut self, poll_interval: Duration) -> Result<(), Src::Error> {
        self.accept_resume = None;
        self.at_cap = false;
        self.source.set_accepting(true)?;
        let mut events = [Event::Woken; EVENTS];
        while !self.shutdown.is_requested() {
            let timeout = self.wait_timeout(poll_interval);
            let n = self.source.wait(Some(timeout), &mut events)?;
            // No connection is accepted once a stop was asked for.
            if self.shutdown.is_requested() {
                break;
            }
            // One clock read per batch of events, not one per event.
            let now = millis64(self.clock.now());
            for event in &events[..n] {
                match *event {
                    Event::Accept => self.accept(now)?,
                    Event::Conn { token, read } => self.service(token, read, now),
                    Event::Woken => {}
                }
            }
            self.resume_starved(now);
            self.housekeeping(now)?;
            self.service.service_actions();
        }
        Ok(())
    }

    /// Until the next deadline of ours, at most `poll_interval`.
    fn wait_timeout(&self, poll_interval: Duration) -> Duration {
        let now = millis64(self.clock.now());
        let next = match (self.accept_resume, self.table.next_sweep_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map_or(poll_interval, |at| from_millis(at.saturating_sub(now)).min(poll_interval))
    }

    /// Resumes accepting after a back-off; closes idle connections.
    fn housekeeping(&mut self, now: u64) -> Result<(), Src::Error> {
        let mut resume = false;
        if self.accept_resume.is_some_and(|at| now >= at) {
            self.accept_resume = None;
            resume = !self.at_cap;
        }
        let Self { table, source, service, .. } = self;
        table.sweep_at(service, now, |token, mut conn| source.deregister(token, &mut conn));
        if self.at_cap && !self.table.is_full() {
            // A connection closed: accept again (unless backing off).
            self.at_cap = false;
            resume = self.accept_resume.is_none();
        }
        if resume {
            self.source.set_accepting(true)?;
            if self.cap.is_at_cap() {
                // Take who waited now (or find nobody waits: the episode
                // ends) instead of at the listener's next event.
                self.accept(now)?;
            }
        }
        Ok(())
    }

    /// Accepts until the listener would block (at most `accept_burst`).
    fn accept(&mut self, now: u64) -> Result<(), Src::Error> {
        if self.accept_resume.is_some() {
            return Ok(());
        }
        for _ in 0..self.config.accept_burst.get() {
            if self.table.is_full() && self.config.when_full == WhenFull::Wait {
                // The rest wait in the backlog until a connection closes.
                self.at_cap = true;
                self.cap.update_at(true, now as u32, &TableCap(self.table.capacity()));
                self.source.set_accepting(false)?;
                break;
            }
            match self.source.try_accept() {
                Ok(Some((conn, client))) => {
                    self.accept_failures = 0;
                    self.admit(conn, client, now);
                }
                Ok(None) => {
                    // Nobody waits and there is room: the episode is over.
                    if !self.table.is_full() {
                        self.cap.update_at(false, now as u32, &TableCap(self.table.capacity()));
                    }
                    break;
                }
                Err(e) => {
                    self.service.handle_accept_error(&e);
                    self.accept_failures += 1;
                    let pause = crate::server::backoff_after(
                        self.config.accept_backoff,
                        self.accept_failures,
                    );
                    self.accept_resume = Some(now + u64::from(timeout_millis(pause)));
                    self.source.set_accepting(false)?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Verifies a new connection and gives it a slot (or refuses it).
    fn admit(&mut self, mut conn: Src::Conn, client: Src::Address, now: u64) {
        if self.service.verify_request(&crate::Request::Connection { client: &client }) {
            let Some((refused, client)) = self.insert(conn, client, now) else { return };
            self.service.handle_table_full(&client);
            conn = refused;
        }
        // Refused (unverified, or no room): closed at once.
        let _ = conn.shutdown_write();
    }

    /// Gives a verified connection a slot (its handler is made only if
    /// there is room) and registers it; hands it back without room.
    fn insert(
        &mut self,
        conn: Src::Conn,
        client: Src::Address,
        now: u64,
    ) -> Option<(Src::Conn, Src::Address)> {
        if self.table.is_full() {
            return Some((conn, client));
        }
        let handler = self.service.handler(&client);
        match self.table.insert_at(conn, client, handler, &self.service, now) {
            Ok((token, Outcome::Open { interest, .. })) => self.register(token, interest),
            Ok(_) => {}
            Err((conn, client, _)) => return Some((conn, client)),
        }
        None
    }

    fn register(&mut self, token: usize, interest: Interest) {
        let Some(conn) = self.table.conn_mut(token) else { return };
        if let Err(e) = self.source.register(token, conn, interest) {
            self.fail_registry(token, e.kind());
        }
    }

    /// A connection the registry refused is closed and reported.
    fn fail_registry(&mut self, token: usize, kind: ErrorKind) {
        if let Some(client) = self.table.client(token) {
            self.service.handle_error(client, &crate::RequestError::Io(kind));
        }
        if let Some(mut conn) = self.table.remove(token) {
            self.source.deregister(token, &mut conn);
        }
    }

    fn service(&mut self, token: usize, read: bool, now: u64) {
        match self.table.service_at(token, read, &self.service, now) {
            Outcome::Open { interest, changed: true } => {
                let Some(conn) = self.table.conn_mut(token) else { return };
                if let Err(e) = self.source.reregister(token, conn, interest) {
                    self.fail_registry(token, e.kind());
                }
            }
            Outcome::Closed(mut conn) => self.source.deregister(token, &mut conn),
            Outcome::Open { .. } | Outcome::Absent => {}
        }
    }

    /// Serves connections that wait for a buffer, while the pool has one
    /// free (buffers were given back during this batch of events).
    fn resume_starved(&mut self, now: u64) {
        // Bounded: each connection resumed either gets going or starves
        // again with the pool empty.
        for _ in 0..self.table.stats().starved {
            let Some(token) = self.table.next_starved() else { break };
            self.service(token, true, now);
        }
    }

    /// Shutdown: stop accepting; read and answer what each connection had
    /// received when the stop came (one service call each, as for a
    /// readiness event the loop did not get to); let connections send what
    /// is buffered for up to `shutdown_grace`; close the rest.
    ///
    /// Reading first matters: a socket closed with unread input makes the
    /// kernel send a reset instead of a FIN, and a reset discards what the
    /// client has not read yet, answers included.
    fn drain(&mut self) -> Result<(), Src::Error> {
        let accepting_off = self.source.set_accepting(false);
        let now = millis64(self.clock.now());
        let deadline = now + u64::from(timeout_millis(self.config.shutdown_grace));
        if self.config.on_shutdown == OnShutdown::Flush {
            for token in self.table.tokens() {
                if self.table.is_live(token) {
                    self.service(token, true, now);
                }
            }
            self.table.close_gracefully();
            for token in self.table.tokens() {
                if self.table.is_live(token) {
                    // Sends what it can now; re-registers for writing only, or closes.
                    self.service(token, false, now);
                }
            }
        }
        let mut events = [Event::Woken; EVENTS];
        let mut result = Ok(());
        while !self.table.is_empty() {
            let now = millis64(self.clock.now());
            if now >= deadline {
                break;
            }
            match self.source.wait(Some(from_millis(deadline - now)), &mut events) {
                Ok(n) => {
                    let now = millis64(self.clock.now());
                    for event in &events[..n] {
                        if let Event::Conn { token, read } = *event {
                            self.service(token, read, now);
                        }
                    }
                    self.resume_starved(now);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let Self { table, source, .. } = self;
        table.close_all(|token, mut conn| source.deregister(token, &mut conn));
        accepting_off.and(result)
    }
}

impl<Src, Svc, Clk, Sh, S, P> EventServer<Src, Svc, Clk, Sh, S, P>
where
    Src: EventSource,
    Svc: Service<Src::Address>,
{
    /// How many times the table was full and accepting stopped:
    /// episodes, each reported once as a warning when the table filled up
    /// and once (info) when an accept found room and nobody waiting.
    pub fn cap_reached(&self) -> u64 {
        self.cap.reached()
    }

    /// The connection table.
    pub fn table(&self) -> &Table<Src, Svc, S, P> {
        &self.table
    }

    /// The readiness source.
    pub fn source(&self) -> &Src {
        &self.source
    }

    /// The readiness source.
    pub fn source_mut(&mut self) -> &mut Src {
        &mut self.source
    }

    /// The service.
    pub fn service_ref(&self) -> &Svc {
        &self.service
    }

    /// The shutdown signal.
    pub fn shutdown_signal(&self) -> &Sh {
        &self.shutdown
    }
}

/// Milliseconds as a [`Duration`], at most `u32::MAX` of them (49
/// days: a wait that long ends early, and the loop waits again).
fn from_millis(ms: u64) -> Duration {
    let ms = ms.min(u64::from(u32::MAX)) as u32;
    Duration::new(u64::from(ms / 1000), ms % 1000 * 1_000_000)
}
