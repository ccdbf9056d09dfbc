//! The listeners' socket pools: smoltcp has no accept queue, so a backlog
//! is a set of sockets listening on one port. This table remembers what
//! each pooled socket is doing and re-arms listeners as soon as one leaves
//! LISTEN.

use core::time::Duration;

use crate::millis::timeout_millis;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::IpEndpoint;
use sockserv_core::driver::Interest;

/// What a pooled socket is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Closed, ready to listen again.
    Free,
    /// In LISTEN.
    Listening,
    /// Took a SYN: a connection waiting to be accepted (the `ticket`-th
    /// to arrive), since when.
    Queued { ticket: u32, since: u32 },
    /// Handed to a [`TcpConn`](crate::TcpConn).
    Served,
    /// The connection was dropped; TCP's close is finishing (since when).
    Closing(u32),
}

/// One pooled socket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    handle: SocketHandle,
    port: u16,
    backlog: usize,
    /// The timeouts, in [`millis`](crate::millis::millis).
    close_timeout: u32,
    handshake_timeout: u32,
    /// Whether a SYN that finds no listening socket is dropped (not reset).
    drop_syns: bool,
    role: Role,
    /// Its listener was dropped: remove the socket once it is closed.
    retired: bool,
    /// Event mode: the table's token and what the served socket waits for.
    watch: Option<Watch>,
}

/// A served socket's registration with an event source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Watch {
    /// The connection table's slot index.
    pub(crate) token: usize,
    /// What it waits for.
    pub(crate) interest: Interest,
}

impl Entry {
    pub(crate) fn new(
        handle: SocketHandle,
        port: u16,
        backlog: usize,
        close_timeout: Duration,
        handshake_timeout: Duration,
        drop_syns: bool,
    ) -> Self {
        Self {
            handle,
            port,
            backlog,
            close_timeout: timeout_millis(close_timeout),
            handshake_timeout: timeout_millis(handshake_timeout),
            drop_syns,
            role: Role::Free,
            retired: false,
            watch: None,
        }
    }

    fn pending(&self, port: u16) -> bool {
        self.port == port
            && !self.retired
            && matches!(self.role, Role::Listening | Role::Queued { .. })
    }
}

/// A storage slot of the pool table (opaque).
#[derive(Clone, Copy, Debug)]
pub struct Slot(Option<Entry>);

impl Slot {
    pub(crate) const EMPTY: Self = Self(None);

    /// [`EMPTY`](Self::EMPTY), made at run time.
    pub(crate) fn empty() -> Self {
        Self(None)
    }
}

/// The pool table, in the caller's storage.
#[derive(Debug)]
pub(crate) struct Pool<'a> {
    slots: &'a mut [Slot],
    /// Slots at and past this index are empty (slots fill from the
    /// front), so the walks made at every poll skip them.
    hi: usize,
    next_ticket: u32,
}

/// A socket whose close is over: CLOSED with no RST left to send, or
/// TIME-WAIT (which `listen` may reuse at once).
fn reclaimable(socket: &tcp::Socket<'_>) -> bool {
    match socket.state() {
        State::TimeWait => true,
        State::Closed => socket.remote_endpoint().is_none(),
        _ => false,
    }
}

/// A connection that can be handed to the server.
fn acceptable(socket: &tcp::Socket<'_>) -> bool {
    matches!(socket.state(), State::Established | State::CloseWait)
}

impl<'a> Pool<'a> {
    pub(crate) fn new(slots: &'a mut [Slot]) -> Self {
        Self { slots, hi: 0, next_ticket: 0 }
    }

    fn entries(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.slots[..self.hi].iter_mut().filter_map(|s| s.0.as_mut())
    }

    fn live(&self) -> impl Iterator<Item = &Entry> {
        self.slots[..self.hi].iter().filter_map(|s| s.0.as_ref())
    }

    /// Empty slots.
    pub(crate) fn free(&self) -> usize {
        self.slots.iter().filter(|s| s.0.is_none()).count()
    }

    /// Whether a live listener uses `port`.
    pub(crate) fn has_port(&self, port: u16) -> bool {
        self.live().any(|e| e.port == port && !e.retired)
    }

    /// Whether a SYN to `port` is to be dropped before the interface sees
    /// it: a live listener with a dropping policy has no socket in LISTEN
    /// there (smoltcp would answer it with a RST).
    pub(crate) fn drops_syn(&self, port: u16) -> bool {
        let live = || self.live().filter(|e| e.port == port && !e.retired);
        live().any(|e| e.drop_syns) && !live().any(|e| matches!(e.role, Role::Listening))
    }

    /// Whether a dropped connection is still finishing its close.
    pub(crate) fn closing(&self) -> bool {
        self.live().any(|e| matches!(e.role, Role::Closing(_)))
    }

    /// How many connections of `port` are being served (accepted, not yet
    /// dropped).
    pub(crate) fn served(&self, port: u16) -> usize {
        self.live().filter(|e| e.port == port && matches!(e.role, Role::Served)).count()
    }

    /// Adds an entry; hands it back when the table is full.
    pub(crate) fn add(&mut self, entry: Entry) -> Result<(), Entry> {
        match self.slots.iter().position(|s| s.0.is_none()) {
            Some(i) => {
                self.slots[i].0 = Some(entry);
                self.hi = self.hi.max(i + 1);
                Ok(())
            }
            None => Err(entry),
        }
    }

    /// Follows every pooled socket's state, reclaims closed ones, aborts
    /// closes that lingered past their timeout, then re-arms each port up
    /// to its backlog.
    /// (`now` in [`millis`](crate::millis::millis).)
    pub(crate) fn refill(&mut self, set: &mut SocketSet<'_>, now: u32) {
        let mut ticket = self.next_ticket;
        for slot in self.slots[..self.hi].iter_mut() {
            let Some(entry) = slot.0.as_mut() else { continue };
            let socket = set.get_mut::<tcp::Socket>(entry.handle);
            entry.role = next_role(entry, socket, now, &mut ticket);
            if entry.retired && matches!(entry.role, Role::Free) {
                set.remove(entry.handle);
                slot.0 = None;
            }
        }
        self.next_ticket = ticket;
        while self.hi > 0 && self.slots[self.hi - 1].0.is_none() {
            self.hi -= 1;
        }
        self.rearm(set);
    }

    fn rearm(&mut self, set: &mut SocketSet<'_>) {
        for i in 0..self.hi {
            let Some(entry) = self.slots[i].0 else { continue };
            if entry.retired || !matches!(entry.role, Role::Free) {
                continue;
            }
            let pending = self.live().filter(|e| e.pending(entry.port));
            if pending.count() >= entry.backlog {
                continue;
            }
            let socket = set.get_mut::<tcp::Socket>(entry.handle);
            if socket.listen(entry.port).is_ok()
                && let Some(e) = self.slots[i].0.as_mut()
            {
                e.role = Role::Listening;
            }
        }
    }

    /// Whether `port` has a connection to accept.
    pub(crate) fn ready(&mut self, port: u16, set: &mut SocketSet<'_>) -> bool {
        self.entries().any(|e| {
            e.port == port
                && matches!(e.role, Role::Queued { .. })
                && acceptable(set.get::<tcp::Socket>(e.handle))
        })
    }

    /// Hands out the oldest acceptable connection on `port`. Out of line:
    /// the firmware image is smaller that way.
    #[inline(never)]
    pub(crate) fn accept(
        &mut self,
        port: u16,
        set: &mut SocketSet<'_>,
    ) -> Option<(SocketHandle, IpEndpoint)> {
        let entry = self
            .entries()
            .filter(|e| e.port == port && acceptable(set.get::<tcp::Socket>(e.handle)))
            .filter_map(|e| match e.role {
                Role::Queued { ticket, .. } => Some((ticket, e)),
                _ => None,
            })
            .min_by_key(|(t, _)| *t)?
            .1;
        let remote = set.get::<tcp::Socket>(entry.handle).remote_endpoint()?;
        entry.role = Role::Served;
        Some((entry.handle, remote))
    }

    /// A served connection was dropped (and its socket closed) at `now`
    /// (in [`millis`](crate::millis::millis)).
    pub(crate) fn release(&mut self, handle: SocketHandle, now: u32) {
        if let Some(e) = self.entries().find(|e| e.handle == handle) {
            e.role = Role::Closing(now);
            e.watch = None;
        }
    }

    /// Registers (or, with `None`, deregisters) the served socket `handle`
    /// of `port` with the event mode. `false` when it is not one.
    pub(crate) fn set_watch(
        &mut self,
        port: u16,
        handle: SocketHandle,
        watch: Option<Watch>,
    ) -> bool {
        let served = self
            .entries()
            .find(|e| e.handle == handle && e.port == port && matches!(e.role, Role::Served));
        match served {
            Some(e) => {
                e.watch = watch;
                true
            }
            None => false,
        }
    }

    /// How many slots may hold a socket (those past it are empty).
    pub(crate) fn len(&self) -> usize {
        self.hi
    }

    /// The registration of slot `i`, if it holds a registered served
    /// socket of `port`.
    pub(crate) fn watched(&self, i: usize, port: u16) -> Option<(SocketHandle, Watch)> {
        let e = self.slots.get(i)?.0.as_ref()?;
        let watch = e.watch.filter(|_| e.port == port && matches!(e.role, Role::Served))?;
        Some((e.handle, watch))
    }

    /// Whether a closed connection still has queued data or its FIN not
    /// yet acknowledged by the peer.
    pub(crate) fn lingering(&self, set: &SocketSet<'_>) -> bool {
        self.live().any(|e| {
            matches!(e.role, Role::Closing(_))
                && !matches!(
                    set.get::<tcp::Socket>(e.handle).state(),
                    State::FinWait2 | State::TimeWait | State::Closed | State::Listen
                )
        })
    }

    /// A listener was dropped: stop listening, reset connections nobody
    /// accepted, and remove each socket once its close is over.
    pub(crate) fn retire(&mut self, port: u16, set: &mut SocketSet<'_>) {
        for e in self.entries().filter(|e| e.port == port && !e.retired) {
            e.retired = true;
            let socket = set.get_mut::<tcp::Socket>(e.handle);
            match e.role {
                Role::Listening => socket.close(),
                Role::Queued { .. } => socket.abort(),
                Role::Free | Role::Served | Role::Closing(_) => {}
            }
        }
    }
}

/// The role a pooled socket has now, given what smoltcp did to it.
/// (`now` in [`millis`](crate::millis::millis).) Out of line: `refill`
/// is smaller that way on a Cortex-M.
#[inline(never)]
fn next_role(entry: &Entry, socket: &mut tcp::Socket<'_>, now: u32, ticket: &mut u32) -> Role {
    match entry.role {
        Role::Listening | Role::Queued { .. } if socket.is_listening() => Role::Listening,
        Role::Listening if socket.is_open() => {
            *ticket = ticket.wrapping_add(1);
            Role::Queued { ticket: *ticket, since: now }
        }
        Role::Listening | Role::Queued { .. } if !socket.is_open() => closing(socket, now),
        Role::Queued { since, .. }
            if socket.state() == State::SynReceived
                && now.wrapping_sub(since) >= entry.handshake_timeout =>
        {
            // A peer that sent a SYN and vanished: smoltcp would resend
            // the SYN-ACK for ever and the socket would hold its place in
            // the backlog. Reset it (it comes back once the RST is out).
            socket.abort();
            closing(socket, now)
        }
        Role::Closing(_) if reclaimable(socket) => Role::Free,
        Role::Closing(since) if now.wrapping_sub(since) >= entry.close_timeout => {
            if socket.state() == State::Closed {
                // Its reset has not left by now: smoltcp keeps a CLOSED
                // socket's peer until the RST is out, and a peer that
                // vanished (its ARP entry expired, nobody answers) never
                // lets it out. Give up on the RST (listen() forgets the
                // peer): the socket must not leave the pool for ever.
                Role::Free
            } else {
                // A peer that never finishes the close (FIN-WAIT-2 for
                // ever) gives its socket back with a reset.
                socket.abort();
                Role::Closing(since)
            }
        }
        role => role,
    }
}

/// A socket that left the connection: free at once if its close is over.
fn closing(socket: &tcp::Socket<'_>, now: u32) -> Role {
    if reclaimable(socket) { Role::Free } else { Role::Closing(now) }
}
