//! The smoltcp stack fed arbitrary Ethernet frames (raw, or TCP / UDP /
//! ARP built from fuzz input, with sequence numbers that may follow the
//! stack's own so that handshakes complete) while a plain listener, a UDP
//! socket and a `TcpEventSource` with connections registered are live.
//!
//! Invariants: nothing panics or spins (the clock counts reads per step);
//! reads and writes never report more than the buffer; a UDP datagram is
//! whole or reported truncated with a size beyond the buffer; every UDP
//! datagram built from the input (some from spoofed sources in the subnet
//! that never answer ARP) is received or counted lost (its socket had 4
//! slots); and once every connection is dropped and the close and
//! handshake timeouts have passed, every pooled socket of both listeners
//! listens again (nothing leaks out of the pools) and no reply is left
//! stuck in the UDP socket's send queue.
#![no_main]

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

#[path = "../../tests/frames/mod.rs"]
mod frames;
use std::time::Duration;

use libfuzzer_sys::{arbitrary, fuzz_target};
use smoltcp::iface::{Config, Interface};
use smoltcp::phy::Device;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use sockserv_core::driver::{
    Clock, DatagramSocket, Event, EventSource, Interest, NbConnection, StreamListener,
};
use sockserv_smoltcp::{DatagramLoss, Loss, Options, Spin, Stack, Storage, TcpEventSource};

const EVENT_PORT: u16 = 7000;
const PLAIN_PORT: u16 = 7001;
const UDP_PORT: u16 = 7002;
const POOL: usize = 4;
const SLOTS: usize = 3;
/// Clock reads within one step past which the code under test spins.
const SPIN_BUDGET: u64 = 2_000_000;

/// Time that moves 1 µs per read (so that a bounded wait ends) and by
/// fuzz-chosen steps, and counts reads per step to catch a spin.
struct FuzzClock<'c> {
    now: &'c Cell<Duration>,
    reads: &'c Cell<u64>,
}

impl Clock for FuzzClock<'_> {
    fn now(&self) -> Duration {
        let reads = self.reads.get() + 1;
        self.reads.set(reads);
        assert!(reads < SPIN_BUDGET, "{reads} clock reads in one step: spinning");
        let t = self.now.get() + Duration::from_micros(1);
        self.now.set(t);
        t
    }
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Frame {
    Raw(Vec<u8>),
    /// An ARP request from the peer for our address.
    Arp,
    Tcp {
        /// One of four peer ports.
        peer: u8,
        to_plain: bool,
        /// FIN, SYN, RST, PSH, ACK, URG bits.
        flags: u8,
        /// `None`: the peer's next sequence number.
        seq: Option<u32>,
        /// `None`: acknowledge everything the stack sent this peer.
        ack: Option<u32>,
        window: u16,
        payload: Vec<u8>,
    },
    Udp {
        src_port: u16,
        /// `Some(host)`: from 192.168.69.host, an address nobody answers
        /// ARP for (a spoofed source), instead of the peer.
        spoofed: Option<u8>,
        payload: Vec<u8>,
    },
}

/// UDP datagrams lost for want of room in the socket (this run's hook).
static UDP_LOST: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, arbitrary::Arbitrary)]
enum Op {
    Frame(Frame),
    /// Moves the clock (ms).
    Advance(u16),
    /// Drops the connection in this slot.
    Drop(u8),
    /// Turns accepting on or off.
    Accepting(bool),
}

/// The peer's side of its TCP conversations, by peer port.
#[derive(Default)]
struct Peers {
    next_seq: [u32; 4],
}

impl Peers {
    fn port(peer: u8) -> u16 {
        40_000 + u16::from(peer % 4)
    }

    fn tcp(&mut self, tx: &VecDeque<Vec<u8>>, f: &Frame) -> Option<Vec<u8>> {
        let Frame::Tcp { peer, to_plain, flags, seq, ack, window, payload } = f else {
            return None;
        };
        let port = Self::port(*peer);
        let k = usize::from(peer % 4);
        let seq = seq.unwrap_or(self.next_seq[k]);
        let ack = ack.or_else(|| frames::last_sent(tx, port).map(|(_, next)| next)).unwrap_or(0);
        let flags = flags & 0x3f;
        let payload = &payload[..payload.len().min(1400)];
        let syn_fin = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
        self.next_seq[k] = seq.wrapping_add(payload.len() as u32).wrapping_add(syn_fin);
        let dst = if *to_plain { PLAIN_PORT } else { EVENT_PORT };
        Some(frames::tcp(port, dst, seq, ack, flags, *window, payload))
    }
}

fn tcp_socket<'a>() -> tcp::Socket<'a> {
    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 512]), tcp::SocketBuffer::new(vec![0; 512]))
}

fn listening<D: Device, W: sockserv_smoltcp::Wait<D>, C: Clock>(
    stack: &Stack<'_, D, W, C>,
) -> usize {
    stack.with_sockets(|set| {
        set.iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => Some(t.state()),
                _ => None,
            })
            .filter(|s| *s == tcp::State::Listen)
            .count()
    })
}

fuzz_target!(|ops: Vec<Op>| {
    if ops.len() > 256 {
        return;
    }
    let now = Cell::new(Duration::ZERO);
    let reads = Cell::new(0);
    let clock = || FuzzClock { now: &now, reads: &reads };
    let mut device = frames::FrameDevice::default();
    let config = Config::new(EthernetAddress(frames::OUR_MAC).into());
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::v4(192, 168, 69, 1), 24));
    });
    device.rx.push_back(frames::arp_request());
    let mut storage = Storage::<16>::new();
    let stack = Stack::new(iface, device, &mut storage, Spin, clock());
    let options = Options {
        backlog: POOL,
        close_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let pools = [tcp_socket(), tcp_socket(), tcp_socket(), tcp_socket()];
    let mut source = TcpEventSource::new(stack.listen(EVENT_PORT, pools, options).unwrap());
    let pools = [tcp_socket(), tcp_socket(), tcp_socket(), tcp_socket()];
    let mut plain = stack.listen(PLAIN_PORT, pools, options).unwrap();
    let udp_socket = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 2048]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 2048]),
    );
    let mut udp = stack.bind_udp(UDP_PORT, udp_socket).unwrap();
    UDP_LOST.store(0, Ordering::SeqCst);
    stack.on_loss(|loss| {
        if let Loss::Datagram { reason: DatagramLoss::QueueFull | DatagramLoss::TooLarge, .. } =
            loss
        {
            UDP_LOST.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (mut udp_sent, mut udp_received) = (0u64, 0u64);
    udp.set_send_timeout(Some(Duration::from_millis(10)));
    source.set_accepting(true).unwrap();
    let mut conns: [Option<sockserv_smoltcp::NbTcpConn>; SLOTS] = [None, None, None];
    let mut peers = Peers::default();
    for op in &ops {
        reads.set(0);
        match op {
            Op::Frame(Frame::Raw(bytes)) => stack.with_device(|d| d.rx.push_back(bytes.clone())),
            Op::Frame(Frame::Arp) => stack.with_device(|d| d.rx.push_back(frames::arp_request())),
            Op::Frame(f @ Frame::Tcp { .. }) => {
                let frame = stack.with_device(|d| peers.tcp(&d.tx, f));
                stack.with_device(|d| d.rx.extend(frame));
            }
            Op::Frame(Frame::Udp { src_port, spoofed, payload }) => {
                let payload = &payload[..payload.len().min(1400)];
                let mut frame = frames::udp((*src_port).max(1), UDP_PORT, payload);
                // Not us (.1), not the peer (.100), not the broadcast.
                if let Some(host) = spoofed.filter(|h| ![0, 1, 100, 255].contains(h)) {
                    frame[14 + 15] = host;
                }
                // An empty datagram cannot be told lost (see DatagramLoss).
                udp_sent += u64::from(!payload.is_empty());
                stack.with_device(|d| d.rx.push_back(frame));
            }
            Op::Advance(ms) => now.set(now.get() + Duration::from_millis(u64::from(*ms))),
            Op::Drop(k) => {
                if let Some(mut c) = conns[usize::from(k % SLOTS as u8)].take() {
                    source.deregister(usize::from(k % SLOTS as u8), &mut c);
                }
            }
            Op::Accepting(on) => source.set_accepting(*on).unwrap(),
        }
        udp_received += step(&mut source, &mut conns, &mut plain, &mut udp);
    }
    // Raw frames may carry datagrams too: at least every one built here.
    let lost = UDP_LOST.load(Ordering::SeqCst);
    assert!(
        udp_received + lost >= udp_sent,
        "{udp_sent} UDP datagrams sent, {udp_received} received, {lost} counted lost"
    );
    // Everything closes; once the timeouts pass every pooled socket listens.
    source.set_accepting(true).unwrap();
    for (k, c) in conns.iter_mut().enumerate() {
        if let Some(mut c) = c.take() {
            source.deregister(k, &mut c);
        }
    }
    // 20 s: the timeouts, and up to 4 queued replies to addresses that
    // never answer ARP given up on one after the other (3 s of requests
    // each, one request a second).
    for _ in 0..20 {
        reads.set(0);
        now.set(now.get() + Duration::from_secs(1));
        while let Ok(Some((c, _))) = source.try_accept() {
            drop(c);
        }
        while let Ok(Some((c, _))) = plain.try_accept() {
            drop(c);
        }
        stack.poll();
    }
    assert_eq!(listening(&stack), 2 * POOL, "every pooled socket listens again");
    assert_eq!(udp.with_socket(|s| s.send_queue()), 0, "a reply stuck in the send queue");
});

/// One turn of a server: accept into free slots (or drop when full), echo
/// what registered connections read, take plain connections and drop
/// them, echo UDP datagrams. Returns how many UDP datagrams came.
fn step<'s, 'a>(
    source: &mut TcpEventSource<'s, 'a>,
    conns: &mut [Option<sockserv_smoltcp::NbTcpConn<'s, 'a>>; SLOTS],
    plain: &mut sockserv_smoltcp::TcpListener<'s, 'a>,
    udp: &mut sockserv_smoltcp::UdpSocket<'s, 'a>,
) -> u64 {
    let mut events = [Event::Woken; 8];
    let n = source.wait(Some(Duration::ZERO), &mut events).unwrap();
    assert!(n <= events.len());
    for event in &events[..n] {
        match *event {
            Event::Accept => accept(source, conns),
            Event::Conn { token, read, .. } => {
                assert!(token < SLOTS, "a token we never gave: {token}");
                if read {
                    serve(source, conns, token);
                }
            }
            Event::Woken => {}
        }
    }
    while let Ok(Some((c, _))) = plain.try_accept() {
        drop(c);
    }
    let mut buf = [0u8; 64];
    let mut received = 0;
    while let Ok(Some(got)) = udp.try_recv_from(&mut buf) {
        received += u64::from(got.len > 0 || got.truncated.is_some());
        assert!(got.len <= buf.len());
        match got.truncated {
            Some(size) => assert!(size > buf.len(), "truncated to {size} of {}", buf.len()),
            None => {
                let _ = udp.send_to(&buf[..got.len], &got.from);
            }
        }
    }
    received
}

fn accept<'s, 'a>(
    source: &mut TcpEventSource<'s, 'a>,
    conns: &mut [Option<sockserv_smoltcp::NbTcpConn<'s, 'a>>; SLOTS],
) {
    while let Ok(Some((mut c, _))) = source.try_accept() {
        let Some(k) = conns.iter().position(Option::is_none) else { return };
        if source.register(k, &mut c, Interest { read: true, write: false }).is_ok() {
            conns[k] = Some(c);
        }
    }
}

fn serve<'s, 'a>(
    source: &mut TcpEventSource<'s, 'a>,
    conns: &mut [Option<sockserv_smoltcp::NbTcpConn<'s, 'a>>; SLOTS],
    k: usize,
) {
    let Some(c) = conns[k].as_mut() else { return };
    let mut buf = [0u8; 100];
    let close = match c.try_read(&mut buf) {
        Ok(Some(0)) => true,
        Ok(Some(n)) => {
            assert!(n <= buf.len());
            match c.try_write(&buf[..n]) {
                Ok(Some(w)) => {
                    assert!(w > 0 && w <= n, "wrote {w} of {n}");
                    false
                }
                Ok(None) => false,
                Err(_) => true,
            }
        }
        Ok(None) => false,
        Err(_) => true,
    };
    if close {
        let mut c = conns[k].take().unwrap();
        let _ = c.shutdown_write();
        source.deregister(k, &mut c);
    }
}
