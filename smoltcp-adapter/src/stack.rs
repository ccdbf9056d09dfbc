//! The stack value: a smoltcp interface, its device and a socket set with
//! caller-provided storage, shared by the listeners, sockets and
//! connections made from it.

use core::cell::{RefCell, RefMut};
use core::time::Duration;

use smoltcp::iface::{Interface, PollIngressSingleResult, PollResult, SocketSet, SocketStorage};
use smoltcp::phy::Device;
use smoltcp::socket::{tcp, udp};
use sockserv_core::driver::{Clock, Readiness};

use crate::error::{BindError, ListenError};
use crate::gate::{Checksums, Egress, Gate, Ours};
use crate::loss::{Arrival, DatagramLoss, Loss, Losses, Stats, Timing};
use crate::millis::{Micros, micros, millis};
use crate::net::{Net, Sockets, instant};
use crate::pool::{Entry, Pool, Slot};
use crate::tcp::{Options, TcpListener, WhenFull};
use crate::udp::UdpSocket;
use crate::wait::Wait;

/// The fixed storage a [`Stack`] keeps its sockets in: room for `N`
/// sockets (TCP, UDP, and any of your own), with no allocator.
///
/// Make it a `static` (through `static_cell` or similar) or a local that
/// outlives the stack. For a local, [`Storage::default()`] is the
/// smaller of the two constructors in flash: it writes each empty slot at
/// run time, where the `const` [`new`](Self::new) copies smoltcp's image
/// of an empty socket (a constant as large as a socket: 312 bytes on
/// Cortex-M).
#[derive(Debug)]
pub struct Storage<'a, const N: usize> {
    sockets: [SocketStorage<'a>; N],
    slots: [Slot; N],
}

impl<const N: usize> Storage<'_, N> {
    /// Empty storage for `N` sockets.
    pub const fn new() -> Self {
        Self { sockets: [SocketStorage::EMPTY; N], slots: [Slot::EMPTY; N] }
    }
}

impl<const N: usize> Default for Storage<'_, N> {
    /// Empty storage for `N` sockets, as [`new`](Self::new) makes it,
    /// written at run time (no constant image to copy from).
    fn default() -> Self {
        Self {
            sockets: core::array::from_fn(|_| SocketStorage::default()),
            slots: core::array::from_fn(|_| Slot::empty()),
        }
    }
}

struct Inner<'a, D, W> {
    iface: Interface,
    device: D,
    wait: W,
    socks: Sockets<'a>,
}

/// A smoltcp network stack as a sockserv transport: the interface, the
/// device, the sockets (in caller-provided [`Storage`]), a [`Wait`] to
/// sleep on and a [`Clock`].
///
/// Make listeners ([`listen`](Self::listen)) and UDP sockets
/// ([`bind_udp`](Self::bind_udp)) from it; they, and the connections they
/// accept, share the stack through a `&Stack` and poll the interface
/// whenever they wait, so everything on one stack runs on one thread.
///
/// # Panics
/// None of its methods panics on input from the network. A socket added
/// through [`with_sockets`](Self::with_sockets) beyond the storage's room
/// makes smoltcp panic, as `SocketSet::add` does: check first.
///
/// The stack keeps its parts in one `RefCell`: calling back into the stack
/// (any of its methods, or a listener, socket or connection made from it)
/// from inside [`Wait::wait`], `TapWait`'s closure or the closures of
/// [`with_interface`](Self::with_interface),
/// [`with_sockets`](Self::with_sockets), [`with_parts`](Self::with_parts)
/// or [`with_device`](Self::with_device) panics (already borrowed). Work
/// on the arguments those calls hand you instead.
pub struct Stack<'a, D, W, C> {
    inner: RefCell<Inner<'a, D, W>>,
    clock: C,
}

impl<'a, D, W, C> Stack<'a, D, W, C>
where
    D: Device,
    W: Wait<D>,
    C: Clock,
{
    /// A stack over `iface` (already configured: addresses, routes) and
    /// its `device`, keeping sockets in `storage`.
    pub fn new<const N: usize>(
        iface: Interface,
        device: D,
        storage: &'a mut Storage<'a, N>,
        wait: W,
        clock: C,
    ) -> Self {
        Self::with_storage(iface, device, &mut storage.sockets, &mut storage.slots, wait, clock)
    }

    /// [`new`](Self::new) without the storage's size: one copy of the
    /// code whatever sizes a program uses.
    #[inline(never)]
    fn with_storage(
        iface: Interface,
        device: D,
        sockets: &'a mut [SocketStorage<'a>],
        slots: &'a mut [Slot],
        wait: W,
        clock: C,
    ) -> Self {
        let capacity = sockets.len();
        let set = SocketSet::new(sockets);
        let pool = Pool::new(slots);
        let socks = Sockets { set, capacity, pool, losses: Losses::default(), udp: 0 };
        Self { inner: RefCell::new(Inner { iface, device, wait, socks }), clock }
    }

    /// Listens on `port` with a pool of `sockets` (smoltcp's backlog: see
    /// [`TcpListener`]): an array, or any iterator that knows its length
    /// (a `Vec` of a size chosen at run time).
    ///
    /// # Errors
    /// [`ListenError`]: no room in the storage, port in use, port 0, no
    /// sockets or a zero backlog. The sockets are dropped then (they only
    /// borrow their buffers).
    pub fn listen(
        &self,
        port: u16,
        sockets: impl IntoIterator<Item = tcp::Socket<'a>, IntoIter: ExactSizeIterator>,
        options: Options,
    ) -> Result<TcpListener<'_, 'a>, ListenError> {
        let sockets = sockets.into_iter();
        let k = sockets.len();
        if port == 0 || k == 0 || options.backlog == 0 {
            return Err(ListenError::Invalid);
        }
        let mut socks = self.sockets();
        let socks = &mut *socks;
        if socks.pool.has_port(port) {
            return Err(ListenError::PortInUse);
        }
        if !socks.has_room(k) || socks.pool.free() < k {
            return Err(ListenError::Full);
        }
        for socket in sockets.take(k) {
            let handle = socks.set.add(socket);
            let entry = Entry::new(
                handle,
                port,
                options.backlog.min(k),
                options.close_timeout,
                options.handshake_timeout,
                options.when_full != WhenFull::Reset,
            );
            // Cannot fail: checked above.
            let _ = socks.pool.add(entry);
        }
        socks.pool.refill(&mut socks.set, millis(self.clock.now()));
        Ok(TcpListener::new(self, port, options))
    }

    /// Binds a UDP `socket` to `port`.
    ///
    /// # Errors
    /// [`BindError`]: no room in the storage, port 0 or a socket already
    /// bound.
    pub fn bind_udp(
        &self,
        port: u16,
        mut socket: udp::Socket<'a>,
    ) -> Result<UdpSocket<'_, 'a>, BindError> {
        socket.bind(port).map_err(|_| BindError::Invalid)?;
        let mut socks = self.sockets();
        if !socks.has_room(1) {
            return Err(BindError::Full);
        }
        let handle = socks.set.add(socket);
        socks.udp += 1;
        Ok(UdpSocket::new(self, handle))
    }

    /// Polls the interface: receives and sends until nothing moves,
    /// re-arming listeners as it goes. Returns whether any socket's state
    /// may have changed. Listeners, sockets and connections poll whenever
    /// they wait; call it yourself to drive sockets of your own.
    pub fn poll(&self) -> bool {
        <Self as Net<'a>>::poll(self)
    }

    /// Keeps the stack going until every connection already closed has
    /// delivered what it queued and its FIN was acknowledged, or until
    /// `timeout` passes; returns whether everything was delivered.
    /// `SO_LINGER`'s analogue: call it before a program stops polling
    /// (after `serve_forever` returned), since smoltcp sends only while
    /// someone polls. Shutdown wake-ups do not end it early.
    pub fn linger(&self, timeout: Duration) -> bool {
        let deadline = self.deadline(Some(timeout));
        loop {
            <Self as Net<'a>>::poll(self);
            let lingering = {
                let socks = self.sockets();
                socks.pool.lingering(&socks.set)
            };
            if !lingering {
                return true;
            }
            if self.passed(deadline) {
                return false;
            }
            let _ = self.idle(deadline);
        }
    }

    /// What the stack counted so far: SYNs dropped, datagrams lost on
    /// arrival (fragments not reassembled, a UDP socket without room).
    pub fn stats(&self) -> Stats {
        self.sockets().losses.stats
    }

    /// Calls `hook` on each loss as it happens (besides counting it in
    /// [`stats`](Self::stats)): a SYN the backlog policy dropped, a
    /// datagram smoltcp could not reassemble or a UDP socket had no room
    /// for. It runs inside the poll:
    /// it must not call back into the stack.
    pub fn on_loss(&self, hook: fn(Loss)) {
        self.sockets().losses.hook = Some(hook);
    }

    /// Runs `f` on the interface (addresses, routes, ...).
    pub fn with_interface<R>(&self, f: impl FnOnce(&mut Interface) -> R) -> R {
        f(&mut self.inner.borrow_mut().iface)
    }

    /// Runs `f` on the socket set, for sockets of your own beside the
    /// server's (check the room first: `SocketSet::add` panics when the
    /// storage is full). Do not remove the server's sockets.
    pub fn with_sockets<R>(&self, f: impl FnOnce(&mut SocketSet<'a>) -> R) -> R {
        f(&mut self.sockets().set)
    }

    /// Runs `f` on the interface and the socket set together (to `connect`
    /// a socket of your own, which needs `iface.context()`).
    pub fn with_parts<R>(&self, f: impl FnOnce(&mut Interface, &mut SocketSet<'a>) -> R) -> R {
        let inner = &mut *self.inner.borrow_mut();
        f(&mut inner.iface, &mut inner.socks.set)
    }

    /// Runs `f` on the device.
    pub fn with_device<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        f(&mut self.inner.borrow_mut().device)
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}

impl<'a, D, W, C> Net<'a> for Stack<'a, D, W, C>
where
    D: Device,
    W: Wait<D>,
    C: Clock,
{
    fn now(&self) -> Duration {
        self.clock.now()
    }

    fn poll(&self) -> bool {
        let clock = self.clock.now();
        let (now, ms) = (micros(clock), millis(clock));
        let t = instant(now);
        let inner = &mut *self.inner.borrow_mut();
        let socks = &mut inner.socks;
        inner.iface.poll_maintenance(t);
        socks.losses.expire(now);
        let frame = FrameContext::new(&inner.iface, &inner.device, now, ms);
        let mut changed = false;
        // Timeouts (handshake, close) are followed once per poll.
        socks.pool.refill(&mut socks.set, ms);
        // Rounds of ingress then egress until one round moves nothing: a
        // loopback device receives what the egress just sent.
        loop {
            let (mut moved, state_changed) =
                ingress(&mut inner.iface, &mut inner.device, socks, &frame);
            changed |= state_changed;
            let mut egress = Egress {
                device: &mut inner.device,
                losses: &mut socks.losses,
                now: ms,
                ours: frame.ours.as_ref(),
            };
            while inner.iface.poll_egress(t, &mut egress, &mut socks.set)
                == PollResult::SocketStateChanged
            {
                moved = true;
                changed = true;
            }
            if !moved {
                return changed;
            }
            socks.pool.refill(&mut socks.set, ms);
        }
    }

    fn idle(&self, deadline: Option<Micros>) -> Readiness {
        let now = self.now_micros();
        let inner = &mut *self.inner.borrow_mut();
        // The earlier of smoltcp's next timer and `deadline`, both in
        // clock time; one already past is a zero timeout.
        let timer = inner.iface.poll_at(instant(now), &inner.socks.set);
        let timer = timer.map(|at| Micros::try_from(at.total_micros()).unwrap_or(0));
        let wake = match (timer, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = wake.map(|w| w.saturating_sub(now));
        if timeout == Some(0) {
            return Readiness::TimedOut;
        }
        let timeout = timeout.map(Duration::from_micros);
        inner.wait.wait(&mut inner.device, &mut inner.socks.set, timeout)
    }

    fn sockets(&self) -> RefMut<'_, Sockets<'a>> {
        RefMut::map(self.inner.borrow_mut(), |i| &mut i.socks)
    }

    fn ip_mtu(&self) -> usize {
        self.inner.borrow().device.capabilities().ip_mtu()
    }
}

/// What the gate needs to know about the frames of one poll.
struct FrameContext {
    medium: smoltcp::phy::Medium,
    /// The clock's time, in [`Micros`] and in [`millis`].
    now: Micros,
    ms: u32,
    timing: Timing,
    checksums: Checksums,
    ours: Option<Ours>,
}

impl FrameContext {
    /// The context of the frames of a poll at `now`. Out of line: the
    /// firmware image is smaller that way.
    #[inline(never)]
    fn new(iface: &Interface, device: &impl Device, now: Micros, ms: u32) -> Self {
        #[cfg(feature = "large-datagrams")]
        let timing = Timing { now, timeout: iface.reassembly_timeout().total_micros() };
        #[cfg(not(feature = "large-datagrams"))]
        let timing = Timing;
        let caps = device.capabilities();
        let checksums = Checksums { ipv4: caps.checksum.ipv4.rx(), udp: caps.checksum.udp.rx() };
        // `hardware_addr` panics on another medium.
        let ethernet = caps.medium == smoltcp::phy::Medium::Ethernet;
        let ours = match ethernet.then(|| iface.hardware_addr()) {
            Some(smoltcp::wire::HardwareAddress::Ethernet(mac)) => {
                let mut ips = [None; 4];
                let v4 = iface.ip_addrs().iter().filter_map(|c| match c.address() {
                    smoltcp::wire::IpAddress::Ipv4(a) => Some(a),
                    #[allow(unreachable_patterns)]
                    _ => None,
                });
                for (slot, ip) in ips.iter_mut().zip(v4) {
                    *slot = Some(ip);
                }
                Some(Ours { mac: mac.0, ips })
            }
            #[allow(unreachable_patterns)]
            _ => None,
        };
        Self { medium: caps.medium, now, ms, timing, checksums, ours }
    }
}

/// Receives every frame the device holds, through the gate (which drops
/// the SYNs the listeners' policy says to drop, where smoltcp would reset
/// them, and tells whether a frame was a SYN, FIN or RST). Returns whether
/// a frame came, and whether a socket's state may have changed.
fn ingress<D: Device>(
    iface: &mut Interface,
    device: &mut D,
    socks: &mut Sockets<'_>,
    frame: &FrameContext,
) -> (bool, bool) {
    let t = instant(frame.now);
    let (mut moved, mut changed) = (false, false);
    // A closing socket moves on with a plain ACK; any other role change
    // needs a SYN, FIN or RST.
    let mut watch_all = socks.pool.closing();
    let watch_udp = socks.udp > 0;
    loop {
        let mut control = false;
        // What the UDP sockets hold before the frame: if a datagram for one
        // of them leaves it unchanged, smoltcp dropped it.
        let queued = if watch_udp { udp_queued(&socks.set) } else { 0 };
        socks.losses.arrival = None;
        let mut gate = Gate {
            device: &mut *device,
            pool: &socks.pool,
            medium: frame.medium,
            losses: &mut socks.losses,
            control: &mut control,
            timing: frame.timing,
            udp: watch_udp.then_some(frame.checksums),
        };
        let result = iface.poll_ingress_single(t, &mut gate, &mut socks.set);
        if let Some(arrival) = socks.losses.arrival.take()
            && let Some(reason) = udp_drop(iface, &socks.set, &arrival, queued)
        {
            socks.losses.report(Loss::Datagram { from: arrival.from, reason });
        }
        match result {
            PollIngressSingleResult::None => return (moved, changed),
            PollIngressSingleResult::PacketProcessed => moved = true,
            PollIngressSingleResult::SocketStateChanged => {
                moved = true;
                changed = true;
                // Follow the pool after every frame that may have changed
                // a pooled socket's role, not once per batch: connections
                // that took a SYN get their tickets in arrival order
                // (accepted oldest first), and a socket this frame freed (a
                // reset, a finished close) listens again before the next
                // frame. A socket that took a SYN is not replaced: it still
                // counts against the backlog, as a connection in a kernel's
                // accept queue does. Data and ACKs of served connections
                // (nearly every frame under load) skip it.
                if control || watch_all {
                    socks.pool.refill(&mut socks.set, frame.ms);
                    watch_all = socks.pool.closing();
                }
            }
        }
    }
}

/// The payload bytes queued in every UDP socket's receive queue.
fn udp_queued(set: &SocketSet<'_>) -> usize {
    set.iter()
        .filter_map(|(_, s)| match s {
            smoltcp::socket::Socket::Udp(u) => Some(u.recv_queue()),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .sum()
}

/// Whether smoltcp dropped the UDP datagram `arrival` (and why), given
/// what the UDP sockets held before it (`queued`): it was for us, a socket
/// takes its port, and no socket's queue grew (as smoltcp's
/// `process_udp`, whose drop for want of room leaves no trace).
fn udp_drop(
    iface: &Interface,
    set: &SocketSet<'_>,
    arrival: &Arrival,
    queued: usize,
) -> Option<DatagramLoss> {
    if arrival.len == 0 || udp_queued(set) != queued {
        return None;
    }
    let to = arrival.to;
    let ours = iface.has_ip_addr(to)
        || to.is_broadcast()
        || iface.ip_addrs().iter().any(|cidr| match cidr {
            smoltcp::wire::IpCidr::Ipv4(c) => c.broadcast() == Some(to),
            #[allow(unreachable_patterns)]
            _ => false,
        });
    if !ours {
        return None;
    }
    // The first socket that takes the port, as smoltcp picks it.
    set.iter().find_map(|(_, s)| match s {
        smoltcp::socket::Socket::Udp(u) => {
            let ep = u.endpoint();
            let takes = ep.port == arrival.port
                && ep.addr.is_none_or(|a| a == to.into() || !iface.has_ip_addr(to));
            takes.then(|| {
                if arrival.len > u.payload_recv_capacity() {
                    DatagramLoss::TooLarge
                } else {
                    DatagramLoss::QueueFull
                }
            })
        }
        #[allow(unreachable_patterns)]
        _ => None,
    })
}
