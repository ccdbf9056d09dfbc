//! The in-process world of the smoltcp tests: a stack over smoltcp's
//! `Loopback` device, scripted smoltcp clients in the stack's own socket
//! set, and a virtual clock. The stack's `Wait` drives the clients and,
//! when none has anything to do, moves the clock to the deadline, so the
//! server runs inline, exactly as on a microcontroller.
#![allow(dead_code)] // each test crate uses part of it

use std::cell::{Cell, RefCell};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use sockserv::ShutdownFlag;
use sockserv::driver::{Clock, Readiness};
use sockserv_smoltcp::{Stack, Storage, Wait};

pub const SERVER: IpAddress = IpAddress::v4(127, 0, 0, 1);
pub const PORT: u16 = 7000;

/// Virtual time past this means a test waits for something that never
/// comes: it fails instead of hanging.
const RUNAWAY: Duration = Duration::from_secs(3600);

/// How many times the clock may be read without moving: past it, the code
/// under test spins (busy-polls without ever sleeping), and the test fails
/// instead of hanging.
const SPIN_BUDGET: u64 = 1_000_000;

/// A virtual clock: moves only when the waiter says so. Counts the reads
/// since it last moved, and panics past [`SPIN_BUDGET`].
#[derive(Default)]
pub struct VClock(pub Cell<Duration>, Cell<u64>);

impl Clock for VClock {
    fn now(&self) -> Duration {
        let reads = self.1.get() + 1;
        self.1.set(reads);
        assert!(
            reads < SPIN_BUDGET,
            "the clock was read {reads} times without moving: the code under test spins"
        );
        self.0.get()
    }
}

impl VClock {
    pub fn advance(&self, d: Duration) {
        self.set(self.0.get() + d);
    }

    pub fn set(&self, t: Duration) {
        if t != self.0.get() {
            self.1.set(0);
        }
        self.0.set(t);
    }
}

/// A scripted smoltcp TCP client in the stack's own socket set.
#[derive(Debug)]
pub struct Client {
    pub handle: Option<SocketHandle>,
    pub send: Vec<u8>,
    pub sent: usize,
    /// Bytes per send (1: one segment per byte, Nagle off).
    pub chunk: usize,
    pub close_when_sent: bool,
    /// Reset (abort) once this many bytes were sent.
    pub abort_after: Option<usize>,
    /// Reset (abort) once the first byte of the answer came.
    pub abort_on_reply: bool,
    /// The client's receive buffer (small: the peer's window closes soon).
    pub rx_buffer: usize,
    /// Reads nothing before this (virtual) time.
    pub read_from: Duration,
    pub received: Vec<u8>,
    pub closed: bool,
    pub aborted: bool,
}

impl Client {
    pub fn new(send: &[u8]) -> Self {
        Self {
            handle: None,
            send: send.to_vec(),
            sent: 0,
            chunk: usize::MAX,
            close_when_sent: true,
            abort_after: None,
            abort_on_reply: false,
            rx_buffer: 64 * 1024,
            read_from: Duration::ZERO,
            received: Vec::new(),
            closed: false,
            aborted: false,
        }
    }

    /// A client that connects, says nothing and keeps its side open.
    pub fn idle() -> Self {
        let mut c = Self::new(b"");
        c.close_when_sent = false;
        c
    }

    pub fn step(&mut self, set: &mut SocketSet<'_>, now: Duration) -> bool {
        let Some(handle) = self.handle else { return false };
        let s = set.get_mut::<tcp::Socket>(handle);
        let mut worked = false;
        while now >= self.read_from && s.can_recv() {
            let got = s.recv(|b| (b.len(), b.to_vec())).unwrap();
            self.received.extend_from_slice(&got);
            worked = true;
        }
        if self.closed || self.aborted || !s.may_send() {
            return worked;
        }
        let replied = self.abort_on_reply && !self.received.is_empty();
        if replied || self.abort_after.is_some_and(|n| self.sent >= n) {
            s.abort();
            self.aborted = true;
            return true;
        }
        let limit = self.abort_after.unwrap_or(usize::MAX).min(self.send.len());
        if self.sent < limit {
            let end = limit.min(self.sent.saturating_add(self.chunk));
            if let Ok(n) = s.send_slice(&self.send[self.sent..end])
                && n > 0
            {
                self.sent += n;
                worked = true;
            }
        } else if self.close_when_sent {
            s.close();
            self.closed = true;
            worked = true;
        }
        worked
    }
}

/// Everything a test's stack shares: the clock, the clients, how often
/// the stack waited, and a shutdown flag with the time the `Wait` asks
/// for it (as `TapWait` does on a signal).
#[derive(Default)]
pub struct World {
    pub clock: VClock,
    pub clients: RefCell<Vec<Client>>,
    pub waits: Cell<u32>,
    pub flag: ShutdownFlag,
    /// From this time on, every wait requests `flag` and says `Woken`.
    pub wake_at: Cell<Option<Duration>>,
    /// The timeout each wait was given (smoltcp's next timer or the
    /// caller's deadline, the sooner).
    pub timeouts: RefCell<Vec<Option<Duration>>>,
}

/// The stack's waiter: drives the clients; when none has work, moves the
/// virtual clock towards the deadline, one tick at most.
pub struct Peers<'w>(&'w World);

/// The longest virtual sleep of one wait.
pub const TICK: Duration = Duration::from_millis(100);

impl<D> Wait<D> for Peers<'_> {
    fn wait(&mut self, _: &mut D, set: &mut SocketSet<'_>, timeout: Option<Duration>) -> Readiness {
        let world = self.0;
        world.waits.set(world.waits.get() + 1);
        world.timeouts.borrow_mut().push(timeout);
        let now = world.clock.now();
        assert!(
            now < RUNAWAY,
            "virtual time ran away: the test waits for something that never comes"
        );
        let mut worked = false;
        for c in world.clients.borrow_mut().iter_mut() {
            worked |= c.step(set, now);
        }
        if worked {
            return Readiness::Ready;
        }
        // At most a tick at a time, as TapWait sleeps.
        world.clock.advance(timeout.map_or(TICK, |t| t.min(TICK)));
        if world.wake_at.get().is_some_and(|at| world.clock.now() >= at) {
            world.flag.request();
            return Readiness::Woken;
        }
        Readiness::TimedOut
    }
}

pub type TestStack<'a> = Stack<'a, Loopback, Peers<'a>, &'a VClock>;

impl World {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stack<'a>(&'a self, storage: &'a mut Storage<'a, 16>) -> TestStack<'a> {
        let mut device = Loopback::new(Medium::Ethernet);
        let config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
        let now = smoltcp::time::Instant::from_micros(0);
        let mut iface = Interface::new(config, &mut device, now);
        iface.update_ip_addrs(|a| a.push(IpCidr::new(SERVER, 8)).unwrap());
        Stack::new(iface, device, storage, Peers(self), &self.clock)
    }

    /// Adds a client that connects to the server from `local_port`;
    /// returns its index.
    pub fn connect(&self, stack: &TestStack<'_>, local_port: u16, mut client: Client) -> usize {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; client.rx_buffer]),
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        );
        let handle = stack.with_parts(|iface, set| {
            let h = set.add(socket);
            let s = set.get_mut::<tcp::Socket>(h);
            s.set_nagle_enabled(client.chunk == usize::MAX);
            s.connect(iface.context(), (SERVER, PORT), local_port).unwrap();
            h
        });
        client.handle = Some(handle);
        let mut clients = self.clients.borrow_mut();
        clients.push(client);
        clients.len() - 1
    }

    /// Polls and drives the clients until nothing moves for a while.
    pub fn settle(&self, stack: &TestStack<'_>) {
        for _ in 0..200 {
            stack.poll();
            stack.with_sockets(|set| {
                for c in self.clients.borrow_mut().iter_mut() {
                    c.step(set, self.clock.now());
                }
            });
            self.clock.advance(Duration::from_millis(5));
        }
    }

    pub fn state(&self, stack: &TestStack<'_>, i: usize) -> tcp::State {
        let h = self.clients.borrow()[i].handle.unwrap();
        stack.with_sockets(|set| set.get::<tcp::Socket>(h).state())
    }

    pub fn received(&self, i: usize) -> Vec<u8> {
        self.clients.borrow()[i].received.clone()
    }

    pub fn sent(&self, i: usize) -> usize {
        self.clients.borrow()[i].sent
    }
}

/// `K` pooled server sockets with 1 KiB buffers.
pub fn pool<const K: usize>() -> [tcp::Socket<'static>; K] {
    std::array::from_fn(|_| {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 1024]),
            tcp::SocketBuffer::new(vec![0; 1024]),
        )
    })
}

pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// A host on the loopback network with no socket of its own: frames the
/// test writes on its behalf go into the device, and what the server
/// sends back to it is dropped (its MAC is not the interface's).
pub const GHOST: Ipv4Address = Ipv4Address::new(127, 0, 0, 2);
const SERVER_V4: Ipv4Address = Ipv4Address::new(127, 0, 0, 1);
const GHOST_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
const SERVER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);

/// Puts one Ethernet frame of `len` bytes, filled by `fill`, into the
/// loopback device, as if it had arrived from the wire.
fn inject(stack: &TestStack<'_>, len: usize, fill: impl FnOnce(&mut [u8])) {
    use smoltcp::phy::{Device, TxToken};
    let now = smoltcp::time::Instant::ZERO;
    stack.with_device(|d| d.transmit(now).unwrap().consume(len, fill));
}

/// The ghost announces itself (an ARP request to the server), so that the
/// server knows where to send and its SYN-ACKs leave at once.
pub fn ghost_arp(stack: &TestStack<'_>) {
    use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol};
    let (src, dst) = (GHOST, SERVER_V4);
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: GHOST_MAC,
        source_protocol_addr: src,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: dst,
    };
    inject(stack, 14 + arp.buffer_len(), |buf| {
        let mut frame = EthernetFrame::new_unchecked(buf);
        frame.set_src_addr(GHOST_MAC);
        frame.set_dst_addr(EthernetAddress::BROADCAST);
        frame.set_ethertype(EthernetProtocol::Arp);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    });
}

/// A SYN to the server's `PORT` from the ghost's `src_port`; the ghost
/// never answers the SYN-ACK (a peer that vanished, or a SYN flood).
pub fn ghost_syn(stack: &TestStack<'_>, src_port: u16) {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket,
        TcpRepr, TcpSeqNumber,
    };
    let (src, dst) = (GHOST, SERVER_V4);
    let tcp = TcpRepr {
        src_port,
        dst_port: PORT,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 1024,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    inject(stack, 14 + ip.buffer_len() + tcp.buffer_len(), |buf| {
        let mut frame = EthernetFrame::new_unchecked(buf);
        frame.set_src_addr(GHOST_MAC);
        frame.set_dst_addr(SERVER_MAC);
        frame.set_ethertype(EthernetProtocol::Ipv4);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet, &caps);
        let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
        tcp.emit(&mut segment, &src.into(), &dst.into(), &caps);
    });
}

/// The fragments (IPv4 payload offset, bytes) of a UDP datagram of
/// `data` from the ghost's `src_port` to the server's `dst_port`, cut as
/// a 1500-byte link would.
pub fn ghost_udp_fragments(src_port: u16, dst_port: u16, data: &[u8]) -> Vec<(usize, Vec<u8>)> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{UdpPacket, UdpRepr};
    let mut udp = vec![0u8; 8 + data.len()];
    UdpRepr { src_port, dst_port }.emit(
        &mut UdpPacket::new_unchecked(&mut udp[..]),
        &GHOST.into(),
        &SERVER_V4.into(),
        data.len(),
        |buf| buf.copy_from_slice(data),
        &ChecksumCapabilities::default(),
    );
    udp.chunks(1480).enumerate().map(|(i, c)| (i * 1480, c.to_vec())).collect()
}

/// One IPv4 fragment of datagram `id` from the ghost: `bytes` at payload
/// `offset`, `last` or not.
pub fn ghost_fragment(stack: &TestStack<'_>, id: u16, offset: usize, last: bool, bytes: &[u8]) {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};
    inject(stack, 14 + 20 + bytes.len(), |buf| {
        let mut frame = EthernetFrame::new_unchecked(buf);
        frame.set_src_addr(GHOST_MAC);
        frame.set_dst_addr(SERVER_MAC);
        frame.set_ethertype(EthernetProtocol::Ipv4);
        let mut p = Ipv4Packet::new_unchecked(frame.payload_mut());
        p.set_version(4);
        p.set_header_len(20);
        p.set_total_len(u16::try_from(20 + bytes.len()).unwrap());
        p.set_ident(id);
        p.set_dont_frag(false);
        p.set_more_frags(!last);
        p.set_frag_offset(u16::try_from(offset).unwrap());
        p.set_hop_limit(64);
        p.set_next_header(IpProtocol::Udp);
        p.set_src_addr(GHOST);
        p.set_dst_addr(SERVER_V4);
        p.fill_checksum();
        p.payload_mut().copy_from_slice(bytes);
    });
}
