//! The connection table: fixed slots, fixed buffers, and the state machine
//! that moves bytes between a connection, its buffers and its handler.

use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;

use embedded_io::{Error as _, ErrorKind};

use super::{Buf, EventHandler, Next, Outbox};
use crate::transport::{Interest, NbConnection};
use crate::{Hooks, RequestError};

/// One place in a [`ConnTable`]: a connection (when live) and its receive
/// (`RB` bytes) and send (`SB` bytes) buffers. Make them with
/// [`Slot::new`] (or `Default`).
pub struct Slot<C, H, A, const RB: usize, const SB: usize> {
    live: Option<Live<C, H, A>>,
    next_free: usize,
    recv: Buf<RB>,
    send: Buf<SB>,
}

impl<C, H, A, const RB: usize, const SB: usize> Default for Slot<C, H, A, RB, SB> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C, H, A, const RB: usize, const SB: usize> Slot<C, H, A, RB, SB> {
    /// An empty slot.
    pub const fn new() -> Self {
        Self { live: None, next_free: usize::MAX, recv: Buf::new(), send: Buf::new() }
    }
}

struct Live<C, H, A> {
    conn: C,
    handler: H,
    client: A,
    last_active: Duration,
    /// We read EOF.
    peer_closed: bool,
    /// `peer_closed` was told to the handler.
    told_peer_closed: bool,
    /// Send what is buffered, then close.
    closing: bool,
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
    Handler(E),
    Stalled,
}

/// The equivalent of the "explicit table of partially finished requests"
/// that socketserver's documentation describes: up to `slots.len()`
/// connections, each with a `RB`-byte receive and an `SB`-byte send buffer,
/// serviced when their transport reports readiness. It owns the
/// connections' handles but does no waiting of its own.
///
/// * **Back-pressure:** a connection whose send buffer is full is not read
///   from until it drains, so a fast sender with a slow reader cannot grow
///   memory; a handler that consumes nothing while the receive buffer is
///   full is closed with [`RequestError::Stalled`].
/// * **Idle connections** (nothing read or written for `idle_timeout`) are
///   closed by [`sweep`](Self::sweep) with [`RequestError::IdleTimeout`].
/// * **Half-closed peers** get everything already written before the close.
///
/// `S` is the storage: `[Slot<..>; N]` for a capacity fixed at compile time
/// (`no_std`, no allocator), or a boxed slice on std.
pub struct ConnTable<C, H, A, S, const RB: usize, const SB: usize> {
    slots: S,
    len: usize,
    free: usize,
    idle_timeout: Option<Duration>,
    next_sweep: Duration,
    _types: Types<C, H, A>,
}

/// Marks the types a table holds without owning them in the struct.
type Types<C, H, A> = PhantomData<fn() -> (C, H, A)>;

type Slots<C, H, A, const RB: usize, const SB: usize> = [Slot<C, H, A, RB, SB>];

impl<C, H, A, S, const RB: usize, const SB: usize> ConnTable<C, H, A, S, RB, SB>
where
    C: NbConnection,
    H: EventHandler,
    A: fmt::Debug,
    S: AsMut<Slots<C, H, A, RB, SB>> + AsRef<Slots<C, H, A, RB, SB>>,
{
    /// A table over `slots` (which must all be empty, as [`Slot::new`]
    /// makes them). `idle_timeout`: close connections idle that long.
    pub fn new(mut slots: S, idle_timeout: Option<Duration>) -> Self {
        let all = slots.as_mut();
        let n = all.len();
        for (i, slot) in all.iter_mut().enumerate() {
            debug_assert!(slot.live.is_none(), "slots must start empty");
            slot.next_free = if i + 1 < n { i + 1 } else { usize::MAX };
        }
        let free = if n > 0 { 0 } else { usize::MAX };
        Self { slots, len: 0, free, idle_timeout, next_sweep: Duration::ZERO, _types: PhantomData }
    }

    /// How many connections fit.
    pub fn capacity(&self) -> usize {
        self.slots.as_ref().len()
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
        self.free == usize::MAX
    }

    /// The connection under `token`, to (re)register it with a source.
    pub fn conn_mut(&mut self, token: usize) -> Option<&mut C> {
        self.slots.as_mut().get_mut(token)?.live.as_mut().map(|l| &mut l.conn)
    }

    /// The client under `token`.
    pub fn client(&self, token: usize) -> Option<&A> {
        self.slots.as_ref().get(token)?.live.as_ref().map(|l| &l.client)
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
        Svc: Hooks<A> + ?Sized,
    {
        let token = self.free;
        let Some(slot) = self.slots.as_mut().get_mut(token) else {
            return Err((conn, client, handler));
        };
        self.free = slot.next_free;
        self.len += 1;
        slot.recv.clear();
        slot.send.clear();
        let live = Live {
            conn,
            handler,
            client,
            last_active: now,
            peer_closed: false,
            told_peer_closed: false,
            closing: false,
            interest: Interest::default(),
        };
        let live = slot.live.insert(live);
        let mut out = Outbox::new(slot.send.free_mut());
        let opened = live.handler.opened(&mut out);
        let written = out.written();
        slot.send.fill(written);
        let result = match opened {
            Ok(next) => {
                live.closing = next == Next::Close;
                flush(live, &mut slot.send, now)
            }
            Err(e) => Err(Failure::Handler(e)),
        };
        let outcome = self.settle(token, result, service, now);
        Ok((token, outcome))
    }

    /// Services the connection under `token` after its source reported it
    /// readable and/or writable: sends what is buffered, reads what arrived
    /// (if it may), offers the input to the handler, sends again.
    pub fn service<Svc>(
        &mut self,
        token: usize,
        read: bool,
        write: bool,
        service: &Svc,
        now: Duration,
    ) -> Outcome<C>
    where
        Svc: Hooks<A> + ?Sized,
    {
        let Some(slot) = self.slots.as_mut().get_mut(token) else { return Outcome::Absent };
        let Some(live) = slot.live.as_mut() else { return Outcome::Absent };
        let _ = write; // writing is attempted whenever something is buffered
        let result = step(live, &mut slot.recv, &mut slot.send, read, now);
        self.settle(token, result, service, now)
    }

    /// Closes connections idle for `idle_timeout`, reporting
    /// [`RequestError::IdleTimeout`]; `closed` gets each one's token and
    /// handle (deregister, then drop). Scans at most every quarter of the
    /// timeout, so an idle connection closes within 1.25 timeouts.
    pub fn sweep<Svc>(&mut self, service: &Svc, now: Duration, mut closed: impl FnMut(usize, C))
    where
        Svc: Hooks<A> + ?Sized,
    {
        let Some(timeout) = self.idle_timeout else { return };
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + (timeout / 4).max(Duration::from_millis(1));
        for token in 0..self.capacity() {
            let idle = self.slots.as_ref()[token]
                .live
                .as_ref()
                .is_some_and(|l| now.saturating_sub(l.last_active) >= timeout);
            if idle && let Some(conn) = self.close(token, Some(RequestError::IdleTimeout), service)
            {
                closed(token, conn);
            }
        }
    }

    /// When the next [`sweep`](Self::sweep) is due, if any connection is
    /// open and there is an idle timeout.
    pub fn next_sweep(&self) -> Option<Duration> {
        self.idle_timeout.filter(|_| self.len > 0).map(|_| self.next_sweep)
    }

    /// Starts a graceful shutdown: every connection stops reading and will
    /// close once what is buffered has been sent. Service each
    /// [`live`](Self::is_live) token afterwards (with no readiness) to send
    /// and to learn its new interest or its close.
    pub fn close_gracefully(&mut self) {
        for slot in self.slots.as_mut() {
            if let Some(live) = slot.live.as_mut() {
                live.closing = true;
                slot.recv.clear();
            }
        }
    }

    /// Whether a connection is open under `token`.
    pub fn is_live(&self, token: usize) -> bool {
        self.slots.as_ref().get(token).is_some_and(|s| s.live.is_some())
    }

    /// Closes every connection now, without reporting (the end of a
    /// shutdown whose grace period passed).
    pub fn close_all(&mut self, mut closed: impl FnMut(usize, C)) {
        for token in 0..self.capacity() {
            if let Some(conn) = self.release(token) {
                closed(token, conn);
            }
        }
    }

    /// Turns the result of a step into an outcome: closes on failure (and
    /// reports it) or when a closing connection has sent everything.
    fn settle<Svc>(
        &mut self,
        token: usize,
        result: Result<(), Failure<H::Error>>,
        service: &Svc,
        now: Duration,
    ) -> Outcome<C>
    where
        Svc: Hooks<A> + ?Sized,
    {
        let slot = &mut self.slots.as_mut()[token];
        let Some(live) = slot.live.as_mut() else { return Outcome::Absent };
        // A handler error or a stall is reported; what the handler answered
        // before it is still sent (as in the blocking modes), then the
        // connection closes.
        let result = match result {
            Err(Failure::Handler(e)) => {
                service.handle_error(&live.client, &RequestError::Handler(&e));
                close_after_flush(live, &mut slot.recv, &mut slot.send, now)
            }
            Err(Failure::Stalled) => {
                service.handle_error(&live.client, &RequestError::Stalled { capacity: RB });
                close_after_flush(live, &mut slot.recv, &mut slot.send, now)
            }
            other => other,
        };
        let failure = match result {
            Ok(()) if live.closing && slot.send.is_empty() => {
                let _ = live.conn.half_close();
                None
            }
            Ok(()) => {
                let interest = interest(live, &slot.recv, &slot.send);
                let changed = interest != live.interest;
                live.interest = interest;
                return Outcome::Open { interest, changed };
            }
            Err(f) => Some(f),
        };
        match failure {
            None => self.release(token).map_or(Outcome::Absent, Outcome::Closed),
            Some(Failure::Io(kind)) => {
                self.close(token, Some(RequestError::Io(kind)), service).into()
            }
            // Reported above; flush turned them into Ok or Io.
            Some(Failure::Stalled | Failure::Handler(_)) => self.release(token).into(),
        }
    }

    /// Reports `why` (if any) and releases the slot.
    fn close<Svc>(
        &mut self,
        token: usize,
        why: Option<RequestError<'_>>,
        service: &Svc,
    ) -> Option<C>
    where
        Svc: Hooks<A> + ?Sized,
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

    /// Tells the handler, frees the slot, hands the connection back.
    fn release(&mut self, token: usize) -> Option<C> {
        let free = self.free;
        let slot = self.slots.as_mut().get_mut(token)?;
        let mut live = slot.live.take()?;
        live.handler.closed();
        slot.recv.clear();
        slot.send.clear();
        slot.next_free = free;
        self.free = token;
        self.len -= 1;
        Some(live.conn)
    }
}

impl<C> From<Option<C>> for Outcome<C> {
    fn from(conn: Option<C>) -> Self {
        conn.map_or(Outcome::Absent, Outcome::Closed)
    }
}

/// What a connection waits for, from its state: read while there is room
/// on both sides (back-pressure), write while something is buffered.
fn interest<C, H, A, const RB: usize, const SB: usize>(
    live: &Live<C, H, A>,
    recv: &Buf<RB>,
    send: &Buf<SB>,
) -> Interest {
    Interest {
        read: !live.peer_closed && !live.closing && recv.room() > 0 && send.room() > 0,
        write: !send.is_empty(),
    }
}

/// How many read–process–send rounds one service call may run for one
/// connection (fairness: the others wait meanwhile).
const ROUNDS: usize = 8;

/// Send, then read, process, send — again while a read filled all the
/// room it had (more is likely waiting) and the answer went out, up to
/// [`ROUNDS`] times. A message larger than the buffers is then served in
/// one readiness event instead of one per buffer-full.
fn step<C, H, A, const RB: usize, const SB: usize>(
    live: &mut Live<C, H, A>,
    recv: &mut Buf<RB>,
    send: &mut Buf<SB>,
    read: bool,
    now: Duration,
) -> Result<(), Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
{
    flush(live, send, now)?;
    for _ in 0..ROUNDS {
        let mut filled = false;
        if read && interest(live, recv, send).read {
            let free = recv.free_mut();
            let room = free.len();
            match live.conn.try_read(free) {
                Ok(Some(0)) => live.peer_closed = true,
                Ok(Some(n)) => {
                    recv.fill(n);
                    live.last_active = now;
                    filled = n == room;
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::Io(e.kind())),
            }
        }
        process(live, recv, send)?;
        flush(live, send, now)?;
        if !filled || !send.is_empty() {
            break;
        }
    }
    Ok(())
}

/// Offers the input to the handler while it consumes and there is room to
/// answer; tells it once when the peer closed and it has taken all it will.
fn process<C, H, A, const RB: usize, const SB: usize>(
    live: &mut Live<C, H, A>,
    recv: &mut Buf<RB>,
    send: &mut Buf<SB>,
) -> Result<(), Failure<H::Error>>
where
    H: EventHandler,
{
    let mut waiting_for_more = recv.is_empty();
    while !live.closing && !recv.is_empty() && send.room() > 0 {
        let mut out = Outbox::new(send.free_mut());
        let step = live.handler.received(recv.data(), &mut out).map_err(Failure::Handler)?;
        let written = out.written();
        send.fill(written);
        let consumed = step.consumed.min(recv.len());
        recv.consume(consumed);
        if step.next == Next::Close {
            live.closing = true;
        }
        if consumed == 0 {
            // Full input, nothing taken, nothing answered and nothing left
            // to send (that could make room): no progress is possible.
            if recv.room() == 0 && written == 0 && send.is_empty() && !live.closing {
                return Err(Failure::Stalled);
            }
            waiting_for_more = true;
            break;
        }
        waiting_for_more = recv.is_empty();
    }
    if live.peer_closed
        && !live.told_peer_closed
        && !live.closing
        && waiting_for_more
        && send.room() > 0
    {
        live.told_peer_closed = true;
        let mut out = Outbox::new(send.free_mut());
        let next = live.handler.peer_closed(&mut out).map_err(Failure::Handler)?;
        let written = out.written();
        send.fill(written);
        if next == Next::Close {
            live.closing = true;
        }
    }
    Ok(())
}

/// Stops reading, drops unread input, sends what is buffered; the
/// connection closes once that is out.
fn close_after_flush<C, H, A, const RB: usize, const SB: usize>(
    live: &mut Live<C, H, A>,
    recv: &mut Buf<RB>,
    send: &mut Buf<SB>,
    now: Duration,
) -> Result<(), Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
{
    live.closing = true;
    recv.clear();
    flush(live, send, now)
}

/// Writes what is buffered until the connection would block.
fn flush<C, H, A, const SB: usize>(
    live: &mut Live<C, H, A>,
    send: &mut Buf<SB>,
    now: Duration,
) -> Result<(), Failure<H::Error>>
where
    C: NbConnection,
    H: EventHandler,
{
    while !send.is_empty() {
        match live.conn.try_write(send.data()) {
            Ok(Some(n)) if n > 0 => {
                send.consume(n);
                live.last_active = now;
            }
            Ok(_) => break,
            Err(e) => return Err(Failure::Io(e.kind())),
        }
    }
    Ok(())
}
