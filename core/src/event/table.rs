//! The connection table: small per-connection state in slots that are
//! made on first use, buffers borrowed from a pool only while there is
//! something in them, and the state machine that moves bytes between a
//! connection, its buffers and its handler.

use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;

use embedded_io::{Error as _, ErrorKind};

use super::pool::{BufferPool, Held};
use super::{EventHandler, Next, Outbox, Step};
use crate::transport::{Interest, NbConnection};
use crate::{Phase, RequestError, Service};

/// Where a [`ConnTable`]'s slots live: a `heapless::Vec<Slot<..>, N>` for
/// a capacity fixed at compile time (`no_std`, no allocator), or a
/// growable vector on std (the std adapter's), so that slots never used
/// take no memory. Slots are pushed on first use and reused after.
pub trait SlotStorage<T> {
    /// The slots made so far.
    fn slots(&self) -> &[T];
    /// The slots made so far.
    fn slots_mut(&mut self) -> &mut [T];
    /// How many slots there may be at most (the table's capacity).
    fn max_slots(&self) -> usize;
    /// Adds a slot.
    ///
    /// # Errors
    /// There is no room for another: the item is handed back.
    fn push(&mut self, item: T) -> Result<(), T>;
}

impl<T, const N: usize> SlotStorage<T> for heapless::Vec<T, N> {
    fn slots(&self) -> &[T] {
        self
    }
    fn slots_mut(&mut self) -> &mut [T] {
        self
    }
    fn max_slots(&self) -> usize {
        N
    }
    fn push(&mut self, item: T) -> Result<(), T> {
        heapless::Vec::push(self, item)
    }
}

/// Borrowed slot storage is slot storage: a table can use slots that
/// live in a `static` (`&'static mut FixedSlots<..>`).
impl<T, S: SlotStorage<T> + ?Sized> SlotStorage<T> for &mut S {
    fn slots(&self) -> &[T] {
        (**self).slots()
    }
    fn slots_mut(&mut self) -> &mut [T] {
        (**self).slots_mut()
    }
    fn max_slots(&self) -> usize {
        (**self).max_slots()
    }
    fn push(&mut self, item: T) -> Result<(), T> {
        (**self).push(item)
    }
}

/// Slot storage whose capacity is lowered at run time: at most `max` of
/// the slots `S` could hold (a table sized by a command-line option over
/// [`FixedSlots`](crate::FixedSlots) of the largest size allowed).
///
/// ```
/// use sockserv::driver::SlotStorage;
/// use sockserv::{CappedSlots, FixedSlots};
///
/// let slots = CappedSlots::new(FixedSlots::<u8, 256>::new(), 16);
/// assert_eq!(slots.max_slots(), 16);
/// ```
#[derive(Debug)]
pub struct CappedSlots<S> {
    slots: S,
    max: usize,
}

impl<S> CappedSlots<S> {
    /// `slots` limited to `max` (the smaller of the two capacities holds).
    pub const fn new(slots: S, max: usize) -> Self {
        Self { slots, max }
    }

    /// The storage back.
    pub fn into_inner(self) -> S {
        self.slots
    }
}

impl<T, S: SlotStorage<T>> SlotStorage<T> for CappedSlots<S> {
    fn slots(&self) -> &[T] {
        self.slots.slots()
    }
    fn slots_mut(&mut self) -> &mut [T] {
        self.slots.slots_mut()
    }
    fn max_slots(&self) -> usize {
        self.slots.max_slots().min(self.max)
    }
    fn push(&mut self, item: T) -> Result<(), T> {
        if self.slots.slots().len() >= self.max_slots() {
            return Err(item);
        }
        self.slots.push(item)
    }
}

/// One place in a [`ConnTable`]: a live connection's state (without its
/// buffers, which are borrowed from the pool), or a link in the free list.
pub struct Slot<C, H, A>(State<C, H, A>);

enum State<C, H, A> {
    Free { next: u32 },
    Live(Live<C, H, A>),
}

/// No slot: the end of the free list.
const NONE: u32 = u32::MAX;

impl<C, H, A> Slot<C, H, A> {
    fn live(&self) -> Option<&Live<C, H, A>> {
        match &self.0 {
            State::Live(l) => Some(l),
            State::Free { .. } => None,
        }
    }
    fn live_mut(&mut self) -> Option<&mut Live<C, H, A>> {
        match &mut self.0 {
            State::Live(l) => Some(l),
            State::Free { .. } => None,
        }
    }
}

struct Live<C, H, A> {
    conn: C,
    handler: H,
    client: A,
    /// When it last read or wrote, in [`millis`].
    last_active: u32,
    /// Unconsumed input.
    recv: Held,
    /// Unsent output.
    send: Held,
    /// We read EOF.
    peer_closed: bool,
    /// `peer_closed` was told to the handler.
    told_peer_closed: bool,
    /// Send what is buffered, then close.
    closing: bool,
    /// The handler asked to be told when its output has left.
    drain_wanted: bool,
    /// It needed a buffer and the pool had none: it waits for one
    /// (not read from) until the server resumes it.
    starved: bool,
    interest: Interest,
}

/// What [`ConnTable::service`] left the connection in.
#[derive(Debug)]
pub enum Outcome<C> {
    /// Still open. `changed` says whether `interest` differs from what the
    /// source was last told (re-register when it does).
    Open {
        /// What to wait for next.
        interest: Interest,
        /// Whether it changed.
        changed: bool,
    },
    /// Closed: deregister the connection, then drop it.
    Closed(C),
    /// No connection under that token (a stale event).
    Absent,
}

/// Why a connection is being closed.
enum Failure<E> {
    Io(ErrorKind),
    Handler(E, Phase),
    Stalled,
}

/// What the table counts, for a server's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Connections the table took (each told `opened`).
    pub opened: u64,
    /// Times a connection needed a buffer and the pool had none (each
    /// also told to `handle_buffers_exhausted`).
    pub buffer_waits: u64,
    /// Connections waiting for a buffer now.
    pub starved: usize,
}

/// The equivalent of the "explicit table of partially finished requests"
/// that socketserver's documentation describes: up to
/// [`capacity`](Self::capacity) connections, serviced when their
/// transport reports readiness. It owns the connections' handles and the
/// buffer pool but does no waiting of its own.
///
/// * **Memory follows use:** a connection's state is small (its handle,
///   handler, peer address, a clock reading, two buffer references); it
///   borrows a buffer from the pool `P` to read into, and one to queue
///   output that the connection could not take at once, and gives each
///   back the moment it is empty. An idle connection holds none.
/// * **Output is written through:** while nothing is queued, what a
///   handler writes to its [`Outbox`] goes straight to the connection;
///   only what the connection does not take is copied into a buffer.
/// * **Back-pressure:** a connection whose send buffer is full is not read
///   from until it drains; a connection that needs a buffer when the pool
///   has none is not read from until one is given back (and
///   [`Service::handle_buffers_exhausted`] is told); a handler that consumes
///   nothing while its receive buffer is full is closed with
///   [`RequestError::Stalled`].
/// * **Idle connections** (nothing read or written for `idle_timeout`) are
///   closed by [`sweep`](Self::sweep) with [`RequestError::IdleTimeout`].
/// * **Half-closed peers** get everything already written before the close.
pub struct ConnTable<C, H, A, S, P> {
    slots: S,
    pool: P,
    len: usize,
    free: u32,
    /// Connections holding input but no send buffer: each may need one
    /// to answer, so at least this many buffers are kept free for them.
    claims: usize,
    /// Where the next search for a starved connection starts.
    resume_cursor: usize,
    stats: TableStats,
    /// In [`millis`] (at most 24 days).
    idle_timeout: Option<u32>,
    /// When the next sweep is due, in [`millis64`]; `None`: no timeout
    /// to sweep for.
    next_sweep: Option<u64>,
    _types: Types<C, H, A>,
}

impl TableStats {
    /// Counts a connection that starts or stops waiting for a buffer (and
    /// tells the hook when it starts).
    fn note_starved<C, H, A, Svc>(&mut self, was: bool, live: &Live<C, H, A>, service: &Svc)
    where
        Svc: Service<A> + ?Sized,
        A: fmt::Debug,
    {
        match (was, live.starved) {
            (false, true) => {
                self.starved += 1;
                self.buffer_waits += 1;
                service.handle_buffers_exhausted(&live.client);
            }
            (true, false) => self.starved -= 1,
            _ => {}
        }
    }
}

/// Marks the types a table holds without owning them in the struct.
type Types<C, H, A> = PhantomData<fn() -> (C, H, A)>;

impl<C, H, A, S: SlotStorage<Slot<C, H, A>>, P: BufferPool> ConnTable<C, H, A, S, P> {
    /// How many connections fit.
    pub fn capacity(&self) -> usize {
        self.slots.max_slots().min(NONE as usize)
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity()
    }

    /// The buffer pool.
    pub fn pool(&self) -> &P {
        &self.pool
    }

    /// What the table counted.
    pub fn stats(&self) -> TableStats {
        self.stats
    }
}

impl<C, H, A, S, P> ConnTable<C, H, A, S, P>
where
    C: NbConnection,
    H: EventHandler,
    A: fmt::Debug,
    S: SlotStorage<Slot<C, H, A>>,
    P: BufferPool,
{
    /// A table over empty slot storage `slots` and the buffer pool `pool`.
    /// `idle_timeout`: close connections idle that long (at most 24 days,
    /// to the millisecond).
    pub fn new(slots: S, pool: P, idle_timeout: Option<Duration>) -> Self {
        debug_assert!(slots.slots().is_empty(), "slot storage must start empty");
        Self {
            slots,
            pool,
            len: 0,
            free: NONE,
            claims: 0,
            resume_cursor: 0,
            stats: TableStats::default(),
            idle_timeout: idle_timeout.map(timeout_millis),
            // Without a table timeout, nothing to sweep until a handler
            // has a timeout of its own.
            next_sweep: idle_timeout.map(|_| 0),
            _types: PhantomData,
        }
    }

    fn live(&self, token: usize) -> Option<&Live<C, H, A>> {
        self.slots.slots().get(token)?.live()
    }

    /// The connection under `token`, to (re)register it with a source.
    pub fn conn_mut(&mut self, token: usize) -> Option<&mut C> {
        self.slots.slots_mut().get_mut(token)?.live_mut().map(|l| &mut l.conn)
    }

    /// The client under `token`.
    pub fn client(&self, token: usize) -> Option<&A> {
        self.live(token).map(|l| &l.client)
    }

    /// Every token a connection may be under (the slots made so far).
    pub fn tokens(&self) -> core::ops::Range<usize> {
        0..self.slots.slots().len()
    }

    /// Whether a connection is open under `token`.
    pub fn is_live(&self, token: usize) -> bool {
        self.live(token).is_some()
    }

    /// A free slot's index (made if needed), taken off the free list.
    fn take_slot(&mut self) -> Option<usize> {
        if self.free != NONE {
            let token = self.free as usize;
            if let State::Free { next } = self.slots.slots()[token].0 {
                self.free = next;
            }
            return Some(token);
        }
        let token = self.slots.slots().len();
        if token >= self.capacity() {
            return None;
        }
        self.slots.push(Slot(State::Free { next: NONE })).ok()?;
        Some(token)
    }

    /// Takes a free slot for `conn`; its handler is told
    /// [`opened`](EventHandler::opened) and may answer at once. Returns the
    /// token and the outcome (register the connection with the outcome's
    /// interest, or drop it if it closed already).
    ///
    /// # Errors
    /// The table is full: everything is handed back.
    pub fn insert<Svc>(
        &mut self,
        conn: C,
        client: A,
        handler: H,
        service: &Svc,
        now: Duration,
    ) -> Result<(usize, Outcome<C>), (C, A, H)>
    where
        Svc: Service<A> + ?Sized,
    {
        self.insert_at(conn, client, handler, service, millis64(now))
    }

    /// [`insert`](Self::insert) at `now` in [`millis64`].
    pub(crate) fn insert_at<Svc>(
        &mut self,
        conn: C,
        client: A,
        handler: H,
        service: &Svc,
        now: u64,
    ) -> Result<(usize, Outcome<C>), (C, A, H)>
    where
        Svc: Service<A> + ?Sized,
    {
        let Some(token) = self.take_slot() else { return Err((conn, client, handler)) };
        self.len += 1;
        self.stats.opened += 1;
        let slot = &mut self.slots.slots_mut()[token];
        slot.0 = State::Live(Live {
            conn,
            handler,
            client,
            last_active: now as u32,
            recv: Held::none(),
            send: Held::none(),
            peer_closed: false,
            told_peer_closed: false,
            closing: false,
            drain_wanted: false,
            starved: false,
            interest: Interest::default(),
        });
        Ok((token, self.advance(token, None, service, now)))
    }

    /// Services the connection under `token` after its source reported it
    /// readable and/or writable (or after a buffer it waited for came
    /// free): sends what is buffered, reads what arrived (if it may),
    /// offers the input to the handler, sends again.
    pub fn service<Svc>(
        &mut self,
        token: usize,
        read: bool,
        service: &Svc,
        now: Duration,
    ) -> Outcome<C>
    where
        Svc: Service<A> + ?Sized,
    {
        self.advance(token, Some(read), service, millis64(now))
    }

    /// [`service`](Self::service) at `now` in [`millis64`].
    pub(crate) fn service_at<Svc>(
        &mut self,
        token: usize,
        read: bool,
        service: &Svc,
        now: u64,
    ) -> Outcome<C>
    where
        Svc: Service<A> + ?Sized,
    {
        self.advance(token, Some(read), service, now)
    }

    /// One step of the connection under `token` and what follows from
    /// it: `opened` for a new connection (`read: None`), else a service
    /// step; then the decision and its outcome. One function for both,
    /// so that the decision's code exists once.
    fn advance<Svc>(
        &mut self,
        token: usize,
        read: Option<bool>,
        service: &Svc,
        clock_now: u64,
    ) -> Outcome<C>
    where
        Svc: Service<A> + ?Sized,
    {
        let Some(slot) = self.slots.slots_mut().get_mut(token) else { return Outcome::Absent };
        let Some(live) = slot.live_mut() else { return Outcome::Absent };
        let now = clock_now as u32;
        let was_starved = core::mem::take(&mut live.starved);
        let others = self.claims - usize::from(is_claim(live));
        let mut bufs = Bufs { pool: &mut self.pool, others };
        let result = match read {
            Some(read) => step(live, &mut bufs, read || was_starved, now),
            None => answer(live, &mut bufs, now, Phase::Opened).and_then(|(step, _)| {
                live.closing = step.next == Next::Close;
                flush(live, &mut bufs, now)?;
                drain(live, &mut bufs, now).map(drop)
            }),
        };
        let decision = decide(live, &mut bufs, result, service);
        self.claims = others + usize::from(is_claim(live));
        self.stats.note_starved(was_starved, live, service);
        self.note_timeout(token, clock_now);
        self.apply(token, decision, service)
    }

    /// A connection waiting for a buffer, if the pool has one free now:
    /// service it next (with [`service`](Self::service)). Connections are
    /// resumed in turn, starting after the last one resumed.
    pub fn next_starved(&mut self) -> Option<usize> {
        if self.stats.starved == 0 || self.pool.free() <= self.claims {
            return None;
        }
        let n = self.slots.slots().len();
        for i in 0..n {
            let token = (self.resume_cursor + i) % n;
            if self.live(token).is_some_and(|l| l.starved) {
                self.resume_cursor = token + 1;
                return Some(token);
            }
        }
        debug_assert!(false, "starved count without a starved connection");
        None
    }

    /// Closes connections idle for `idle_timeout` (or for their handler's
    /// shorter [`EventHandler::idle_timeout`]), reporting
    /// [`RequestError::IdleTimeout`]; `closed` gets each one's token and
    /// handle (deregister, then drop). Scans at most every quarter of the
    /// timeout, so an idle connection closes within 1.25 timeouts (a
    /// handler's own timeout: when it is due, or a quarter of it after
    /// the last scan).
    pub fn sweep<Svc>(&mut self, service: &Svc, now: Duration, closed: impl FnMut(usize, C))
    where
        Svc: Service<A> + ?Sized,
    {
        self.sweep_at(service, millis64(now), closed);
    }

    /// [`sweep`](Self::sweep) at `now` in [`millis64`].
    pub(crate) fn sweep_at<Svc>(
        &mut self,
        service: &Svc,
        now: u64,
        mut closed: impl FnMut(usize, C),
    ) where
        Svc: Service<A> + ?Sized,
    {
        if self.next_sweep.is_none_or(|at| now < at) {
            return;
        }
        let ms = now as u32;
        let quarter = |t: u32| (t / 4).max(1);
        // How long from now the next sweep is due.
        let mut next = self.idle_timeout.map(quarter);
        for token in 0..self.slots.slots().len() {
            let Some(live) = self.live(token) else { continue };
            let own = live.handler.idle_timeout().map(timeout_millis);
            let Some(timeout) = min_timeout(own, self.idle_timeout) else { continue };
            let idle_for = ms.wrapping_sub(live.last_active);
            if idle_for >= timeout {
                if let Some(conn) = self.close(token, Some(RequestError::IdleTimeout), service) {
                    closed(token, conn);
                }
            } else if let Some(own) = own {
                // Due when its own timeout passes, at least a quarter of
                // it from now.
                next = min_timeout(next, Some((own - idle_for).max(quarter(own))));
            }
        }
        self.next_sweep = next.map(|d| now + u64::from(d));
    }

    /// Brings the next sweep forward to when the connection under `token`
    /// is due by its handler's own idle timeout (`now` in [`millis64`]).
    fn note_timeout(&mut self, token: usize, now: u64) {
        if let Some(live) = self.live(token)
            && let Some(own) = live.handler.idle_timeout()
        {
            let idle_for = (now as u32).wrapping_sub(live.last_active);
            let due = now + u64::from(timeout_millis(own).saturating_sub(idle_for));
            self.next_sweep = Some(self.next_sweep.map_or(due, |at| at.min(due)));
        }
    }

    /// When the next [`sweep`](Self::sweep) is due, if any connection is
    /// open and there is an idle timeout (the table's or a handler's).
    pub fn next_sweep(&self) -> Option<Duration> {
        self.next_sweep_at().map(Duration::from_millis)
    }

    /// [`next_sweep`](Self::next_sweep) in [`millis64`].
    pub(crate) fn next_sweep_at(&self) -> Option<u64> {
        self.next_sweep.filter(|_| self.len > 0)
    }

    /// Starts a graceful shutdown: every connection stops reading (its
    /// unread input is dropped) and will close once what is buffered has
    /// been sent. Service each [`live`](Self::is_live) token afterwards
    /// (with no readiness) to send and to learn its new interest or its
    /// close.
    pub fn close_gracefully(&mut self) {
        let Self { slots, pool, claims, .. } = self;
        for live in slots.slots_mut().iter_mut().filter_map(Slot::live_mut) {
            live.closing = true;
            *claims -= usize::from(is_claim(live));
            live.recv.clear(pool);
        }
    }

    /// Closes every connection now, without reporting (the end of a
    /// shutdown whose grace period passed).
    pub fn close_all(&mut self, mut closed: impl FnMut(usize, C)) {
        for token in 0..self.slots.slots().len() {
            if let Some(conn) = self.release(token) {
                closed(token, conn);
            }
        }
    }

    /// Carries out what [`decide`] chose for the connection under `token`.
    fn apply<Svc>(&mut self, token: usize, decision: Decision, service: &Svc) -> Outcome<C>
    where
        Svc: Service<A> + ?Sized,
    {
        let why = match decision {
            Decision::Open { interest, changed } => return Outcome::Open { interest, changed },
            Decision::Release => None,
            Decision::Fail(kind) => Some(RequestError::Io(kind)),
        };
        self.close(token, why, service).into()
    }

    /// Reports `why` (if any) and releases the slot.
    fn close<Svc>(
        &mut self,
        token: usize,
        why: Option<RequestError<'_>>,
        service: &Svc,
    ) -> Option<C>
    where
        Svc: Service<A> + ?Sized,
    {
        if let (Some(why), Some(client)) = (why, self.client(token)) {
            service.handle_error(client, &why);
        }
        self.release(token)
    }

    /// Closes the connection under `token` without reporting anything and
    /// hands it back (deregister, then drop it).
    pub fn remove(&mut self, token: usize) -> Option<C> {
        self.release(token)
    }

    /// Tells the handler, gives its buffers back, frees the slot, hands
    /// the connection back.
    fn release(&mut self, token: usize) -> Option<C> {
        let slot = self.slots.slots_mut().get_mut(token)?;
        let live = slot.live_mut()?;
        live.handler.closed();
        self.claims -= usize::from(is_claim(live));
        live.recv.clear(&mut self.pool);
        live.send.clear(&mut self.pool);
        if live.starved {
            self.stats.starved -= 1;
        }
        let State::Live(Live { conn, .. }) =
            core::mem::replace(&mut slot.0, State::Free { next: self.free })
        else {
            unreachable!("checked live above")
        };
        self.free = token as u32;
        self.len -= 1;
        Some(conn)
    }
}

impl<C> From<Option<C>> for Outcome<C> {
    fn from(conn: Option<C>) -> Self {
        conn.map_or(Outcome::Absent, Outcome::Closed)
    }
}

/// The shorter of two optional timeouts (in [`millis`]).
fn min_timeout(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a connection holds input but no send buffer (a claim on one).
fn is_claim<C, H, A>(live: &Live<C, H, A>) -> bool {
    live.recv.id().is_some() && live.send.id().is_none()
}

/// The pool as one connection's step sees it. A connection may take a
/// buffer only while enough stay free for the *other* connections that
/// hold input and no send buffer (each may need one to answer): so a
/// connection that holds input can always get a buffer for its answer,
/// and the pool can never be held entirely by connections that wait for
/// a buffer (a deadlock). A reader therefore needs two free buffers
/// beyond those claims; a pool needs at least two buffers.
struct Bufs<'p, P> {
    pool: &'p mut P,
    /// Claims of the other connections.
    others: usize,
}

impl<P: BufferPool> Bufs<'_, P> {
    /// Whether a buffer for input (`for_input`) or output may be taken
    /// for a connection now holding `recv` and `send`.
    fn may_take(&self, recv: &Held, send: &Held, for_input: bool) -> bool {
        let holds_input = recv.id().is_some() || for_input;
        let holds_output = send.id().is_some() || !for_input;
        let claim_after = usize::from(holds_input && !holds_output);
        self.pool.free() > self.others + claim_after
    }

    /// A buffer to read into: the one held, or one taken if allowed.
    fn take_input(&mut self, recv: &mut Held, send: &Held) -> bool {
        recv.id().is_some() || (self.may_take(recv, send, true) && recv.ensure(self.pool))
    }

    /// A buffer to queue output in: the one held, or one taken if allowed.
    fn take_output(&mut self, recv: &Held, send: &mut Held) -> bool {
        send.id().is_some() || (self.may_take(recv, send, false) && send.ensure(self.pool))
    }
}

/// Whether the connection would read now if it had a buffer: not closed
/// or closing, room in the buffer it holds (if any), and its send buffer
/// not full (back-pressure).
fn wants_read<C, H, A>(live: &Live<C, H, A>, pool: &impl BufferPool) -> bool {
    let room = live.recv.id().is_none() || live.recv.room(pool) > 0;
    !live.peer_closed && !live.closing && room && !live.send.is_full(pool)
}

/// Whether the connection may read now: it wants to, and holds a buffer
/// or may take one.
fn may_read<C, H, A, P: BufferPool>(live: &Live<C, H, A>, bufs: &Bufs<'_, P>) -> bool {
    wants_read(live, bufs.pool)
        && !live.starved
        && (live.recv.id().is_some() || bufs.may_take(&live.recv, &live.send, true))
}

/// What a connection waits for, from its state: read while it may
/// (`may_read`, as [`may_read`] says), write while something is queued or
/// the handler waits for its output to leave. A starved connection waits
/// for nothing but a buffer.
fn interest<C, H, A>(live: &Live<C, H, A>, may_read: bool) -> Interest {
    Interest {
        read: may_read,
        write: !live.starved && (!live.send.is_empty() || live.drain_wanted),
    }
}

/// What becomes of a connection after a step.
enum Decision {
    /// It stays open, waiting for `interest`.
    Open { interest: Interest, changed: bool },
    /// Close it without a report (done, or reported already).
    Release,
    /// Close it and report the failure.
    Fail(ErrorKind),
}

/// Turns the result of a step into a decision: a handler error or a stall
/// is reported at once and what the handler answered before it is still
/// sent (as in the blocking modes); a closing connection that has sent
/// everything is half-closed.
fn decide<C, H, A, P, Svc>(
    live: &mut Live<C, H, A>,
    bufs: &mut Bufs<'_, P>,
    result: Result<(), Failure<H::Error>>,
    service: &Svc,
) -> Decision
where
    C: NbConnection,
    H: EventHandler,
    A: fmt::Debug,
    P: BufferPool,
    Svc: Service<A> + ?Sized,
{
    let result = match result {
        Err(Failure::Handler(error, phase)) => {
            service.handle_error(&live.client, &RequestError::handler(phase, &error));
            close_after_flush(live, bufs)
        }
        Err(Failure::Stalled) => {
            let capacity = bufs.pool.buffer_size();
            service.handle_error(&live.client, &RequestError::Stalled { capacity });
            close_after_flush(live, bufs)
        }
        other => other,
    };
    match result {
        Ok(()) if live.closing && live.send.is_empty() => {
            let _ = live.conn.shutdown_write();
            Decision::Release
        }
        Ok(()) => {
            // One that would read but may not take a buffer waits for one
            // (it is resumed when one comes back), instead of for readiness.
            let may = may_read(live, bufs);
            if !may && wants_read(live, bufs.pool) {
                live.starved = true;
            }
            let interest = interest(live, may);
            let changed = interest != live.interest;
            live.interest = interest;
            Decision::Open { interest, changed }
        }
        Err(Failure::Io(kind)) => Decision::Fail(kind),
        // Reported above; close_after_flush turned them into Ok or Io.
        Err(Failure::Stalled | Failure::Handler(..)) => Decision::Release,
    }
}

/// How many read–process–send rounds one service call may run for one
/// connection (fairness: the others wait meanwhile).
const ROUNDS: usize = 8;

/// Send, then read, process, send — again while a read filled all the
/// room it had (more is likely waiting) and the answer went out, up to
/// [`ROUNDS`] times. A message larger than the buffers is then served in
/// one readiness event instead of one per buffer-full.
fn step<C, H, A, P>(
    live: &mut Live<C, H, A>,
    bufs: &mut Bufs<'_, P>,
    read: bool,
    now: u32,
) -> Result<(), Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
    P: BufferPool,
{
    flush(live, bufs, now)?;
    drain(live, bufs, now)?;
    let mut waiting = false;
    for _ in 0..ROUNDS {
        let filled = read && read_some(live, bufs, now)?;
        process(live, bufs, now)?;
        flush(live, bufs, now)?;
        // A long answer that ended in `drained` with input read behind it
        // (pipelined requests): offer that input in the next round, as
        // no readiness event comes for bytes already read.
        waiting = drain(live, bufs, now)? && !live.recv.is_empty() && live.send.is_empty();
        if !(filled || waiting) || !live.send.is_empty() || live.starved {
            waiting = false;
            break;
        }
    }
    if waiting && !live.closing {
        // Rounds used up with input still waiting: come back when the
        // connection is writable (one more `drained` call, then the input).
        live.drain_wanted = true;
    }
    Ok(())
}

/// Reads once into the receive buffer (borrowing one if needed) if the
/// connection may read; returns whether the read filled all the room.
fn read_some<C, H, A, P>(
    live: &mut Live<C, H, A>,
    bufs: &mut Bufs<'_, P>,
    now: u32,
) -> Result<bool, Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
    P: BufferPool,
{
    if !may_read(live, bufs) || !bufs.take_input(&mut live.recv, &live.send) {
        return Ok(false);
    }
    let free = live.recv.free_mut(bufs.pool);
    let room = free.len();
    let result = live.conn.try_read(free);
    let filled = match result {
        Ok(Some(0)) => {
            live.peer_closed = true;
            false
        }
        Ok(Some(n)) => {
            live.recv.fill(n.min(room));
            live.last_active = now;
            n >= room
        }
        Ok(None) => false,
        Err(e) => return Err(Failure::Io(e.kind())),
    };
    live.recv.release_if_empty(bufs.pool);
    Ok(filled)
}

/// What [`answer`] saw.
#[derive(Clone, Copy)]
struct Answered {
    /// Bytes written (through or queued).
    wrote: usize,
    /// Whether the outbox had a send buffer with room (without one, only
    /// what the connection takes at once can be written).
    had_room: bool,
}

/// Runs one handler call (`phase`: `opened`, `received` with the
/// unconsumed input, `peer_closed` or `drained`) with an [`Outbox`] over
/// the connection (written through while nothing is queued) and a send
/// buffer (borrowed if the pool has one); queues what the connection did
/// not take. Returns the handler's answer as a [`Step`] (the methods that
/// return a [`Next`] consume nothing) and what the outbox saw.
///
/// One function for the four calls, not one per call: the outbox's
/// set-up and accounting exist once in the code of each handler type.
fn answer<C, H, A, P>(
    live: &mut Live<C, H, A>,
    bufs: &mut Bufs<'_, P>,
    now: u32,
    phase: Phase,
) -> Result<(Step, Answered), Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
    P: BufferPool,
{
    bufs.take_output(&live.recv, &mut live.send);
    let direct = live.send.is_empty();
    let (input, free) = live.recv.data_and_free(&mut live.send, bufs.pool);
    let had_room = !free.is_empty();
    let mut out = Outbox::new(direct.then_some(&mut live.conn as &mut dyn super::TryWrite), free);
    let next = |r: Result<Next, H::Error>| r.map(|next| Step { consumed: 0, next });
    let h = &mut live.handler;
    let result = match phase {
        Phase::Received => h.received_mut(input, &mut out),
        Phase::Opened => next(h.opened(&mut out)),
        Phase::PeerClosed => next(h.peer_closed(&mut out)),
        _ => next(h.drained(&mut out)),
    };
    let done = out.done();
    live.send.fill(done.queued);
    live.send.release_if_empty(bufs.pool);
    if done.queued + done.sent > 0 {
        live.last_active = now;
    }
    if let Some(kind) = done.failed {
        return Err(Failure::Io(kind));
    }
    if done.drain_wanted {
        live.drain_wanted = true;
    }
    let step = result.map_err(|e| Failure::Handler(e, phase))?;
    Ok((step, Answered { wrote: done.queued + done.sent, had_room }))
}

/// Offers the input to the handler while it consumes and there is room to
/// answer; tells it once when the peer closed and it has taken all it will.
fn process<C, H, A, P>(
    live: &mut Live<C, H, A>,
    bufs: &mut Bufs<'_, P>,
    now: u32,
) -> Result<(), Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
    P: BufferPool,
{
    let mut waiting_for_more = live.recv.is_empty();
    while !live.closing && !live.recv.is_empty() && !live.send.is_full(bufs.pool) {
        let (step, answered) = answer(live, bufs, now, Phase::Received)?;
        let consumed = step.consumed.min(live.recv.len());
        let recv_full = live.recv.is_full(bufs.pool);
        live.recv.consume(consumed, bufs.pool);
        if step.next == Next::Close {
            live.closing = true;
        }
        if consumed == 0 {
            if answered.wrote == 0 && live.send.is_empty() && !live.closing {
                if !answered.had_room {
                    // It could not answer for want of a buffer (and the
                    // connection took nothing): wait for one.
                    live.starved = true;
                } else if recv_full {
                    // Full input, nothing taken, nothing answered although
                    // it could: no progress is possible.
                    return Err(Failure::Stalled);
                }
            }
            waiting_for_more = true;
            break;
        }
        waiting_for_more = live.recv.is_empty();
    }
    if live.peer_closed
        && !live.told_peer_closed
        && !live.closing
        && waiting_for_more
        && !live.send.is_full(bufs.pool)
    {
        live.told_peer_closed = true;
        let (step, _) = answer(live, bufs, now, Phase::PeerClosed)?;
        if step.next == Next::Close {
            live.closing = true;
        }
    }
    Ok(())
}

/// Tells the handler its output has left, when it asked to be told
/// ([`Outbox::notify_drained`]) and the send buffer is empty; again (a few
/// rounds) while it writes more and the connection takes it all. A call
/// that writes nothing ends its request (no spin on a writable socket).
/// Returns whether the handler was called.
fn drain<C, H, A, P>(
    live: &mut Live<C, H, A>,
    bufs: &mut Bufs<'_, P>,
    now: u32,
) -> Result<bool, Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
    P: BufferPool,
{
    let mut called = false;
    for _ in 0..ROUNDS {
        if !live.drain_wanted || !live.send.is_empty() || live.closing {
            return Ok(called);
        }
        called = true;
        live.drain_wanted = false;
        let (step, answered) = answer(live, bufs, now, Phase::Drained)?;
        if step.next == Next::Close {
            live.closing = true;
        }
        if answered.wrote == 0 {
            if !answered.had_room && live.drain_wanted && !live.closing {
                // It could not write for want of a buffer (and the
                // connection took nothing): wait for one, then call again.
                live.starved = true;
                return Ok(true);
            }
            live.drain_wanted = false;
        }
        flush(live, bufs, now)?;
    }
    Ok(called)
}

/// Stops reading, drops unread input, sends what is buffered; the
/// connection closes once that is out.
fn close_after_flush<C, H, A, P>(
    live: &mut Live<C, H, A>,
    bufs: &mut Bufs<'_, P>,
) -> Result<(), Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
    P: BufferPool,
{
    live.closing = true;
    live.recv.clear(bufs.pool);
    flush(live, bufs, live.last_active)
}

/// Writes what is queued until the connection would block; gives the
/// send buffer back once it is empty.
fn flush<C, H, A, P>(
    live: &mut Live<C, H, A>,
    bufs: &mut Bufs<'_, P>,
    now: u32,
) -> Result<(), Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
    P: BufferPool,
{
    while !live.send.is_empty() {
        match live.conn.try_write(live.send.data(bufs.pool)) {
            Ok(Some(n)) if n > 0 => {
                live.send.consume(n, bufs.pool);
                live.last_active = now;
            }
            Ok(_) => break,
            Err(e) => return Err(Failure::Io(e.kind())),
        }
    }
    Ok(())
}

/// A time on the server's clock in milliseconds: what the table and the
/// server keep their deadlines in (`Duration` arithmetic is `u64` + `u32`
/// with carries, bulky on a 32-bit MCU).
pub(crate) fn millis64(t: Duration) -> u64 {
    t.as_secs().wrapping_mul(1000).wrapping_add(u64::from(t.subsec_millis()))
}

/// A time on the server's clock as wrapping 32-bit milliseconds (the low
/// half of [`millis64`]): what each connection keeps as its last
/// activity. Two such times are compared right while less than 24 days
/// apart (`i32::MAX` ms); the sweep looks at every connection far more
/// often than that.
pub(crate) fn millis(t: Duration) -> u32 {
    millis64(t) as u32
}

/// A timeout in those milliseconds: at most 24 days.
pub(crate) fn timeout_millis(d: Duration) -> u32 {
    let ms = (d.as_secs().min(3_000_000) as u32) * 1000 + d.subsec_millis();
    ms.min(i32::MAX as u32)
}
