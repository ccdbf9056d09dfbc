//! The smoltcp stack against a peer made of hand-built Ethernet frames
//! (`frames`): cases a real peer cannot easily make, such as a peer that
//! vanishes for good (stops answering ARP) while the stack still owes it
//! a reset. Found by the `smoltcp_stack` fuzz target (issue 10).

mod frames;

use std::cell::Cell;
use std::time::Duration;

use frames::{ACK, FrameDevice, SYN};
use smoltcp::iface::{Config, Interface};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use sockserv::driver::Clock;
use sockserv::driver::StreamListener;
use sockserv_smoltcp::{Options, Spin, Stack, Storage, TcpListener};

const PORT: u16 = 7000;
const PEER_PORT: u16 = 40_000;

struct VClock<'c>(&'c Cell<Duration>);

impl Clock for VClock<'_> {
    fn now(&self) -> Duration {
        self.0.get()
    }
}

type FrameStack<'a, 'c> = Stack<'a, FrameDevice, Spin, VClock<'c>>;

fn socket<'a>() -> tcp::Socket<'a> {
    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 512]), tcp::SocketBuffer::new(vec![0; 512]))
}

fn states(stack: &FrameStack<'_, '_>) -> Vec<tcp::State> {
    stack.with_sockets(|set| {
        set.iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => Some(t.state()),
                _ => None,
            })
            .collect()
    })
}

/// Runs `case` on a stack listening on PORT with a pool of two (close
/// timeout 2 s, handshake timeout 1 s) that knows the peer's MAC.
fn with_stack(case: impl FnOnce(&FrameStack<'_, '_>, &Cell<Duration>, &mut TcpListener<'_, '_>)) {
    let now = Cell::new(Duration::ZERO);
    let mut device = FrameDevice::default();
    let config = Config::new(EthernetAddress(frames::OUR_MAC).into());
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(192, 168, 69, 1), 24)).unwrap());
    device.rx.push_back(frames::arp_request());
    let mut storage = Storage::<4>::new();
    let stack = Stack::new(iface, device, &mut storage, Spin, VClock(&now));
    let options = Options {
        backlog: 2,
        close_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let mut listener = stack.listen(PORT, [socket(), socket()], options).unwrap();
    stack.poll();
    case(&stack, &now, &mut listener);
}

/// The peer's SYN; returns the sequence number past the stack's SYN-ACK.
fn syn(stack: &FrameStack<'_, '_>) -> u32 {
    stack.with_device(|d| d.rx.push_back(frames::tcp(PEER_PORT, PORT, 1000, 0, SYN, 1024, b"")));
    stack.poll();
    let sent = stack.with_device(|d| frames::last_sent(&d.tx, PEER_PORT));
    let (flags, next) = sent.expect("the stack answered the SYN");
    assert_eq!(flags & (SYN | ACK), SYN | ACK, "a SYN-ACK");
    next
}

/// Moves the clock past smoltcp's 60 s neighbor lifetime (the peer no
/// longer answers ARP: its reset cannot leave), then polls through the
/// close timeout.
fn peer_vanishes(stack: &FrameStack<'_, '_>, now: &Cell<Duration>) {
    for _ in 0..70 {
        now.set(now.get() + Duration::from_secs(1));
        stack.poll();
    }
}

/// A peer that sent a SYN and vanished, seen by a stack that was not
/// polled for 65 s (a device asleep): the handshake timeout resets the
/// half-open socket, but the peer's ARP entry expired (60 s) and nobody
/// answers ARP, so the reset cannot be sent and smoltcp keeps the socket
/// CLOSED with its peer for ever. The pool must take it back anyway once
/// the close timeout has passed. (The fuzz target's first find.)
#[test]
fn a_half_open_socket_whose_reset_cannot_leave_listens_again() {
    with_stack(|stack, now, _| {
        syn(stack);
        now.set(Duration::from_secs(65));
        stack.poll();
        peer_vanishes(stack, now);
        assert_eq!(states(stack), [tcp::State::Listen; 2], "both pooled sockets listen again");
    });
}

/// A served connection dropped after its peer vanished for good (gone
/// from the network without a FIN: its ARP entry expires, nobody answers
/// ARP): the FIN, then the reset after the close timeout, cannot leave;
/// the socket must still come back to the pool, or every such client
/// would take one pooled socket away for ever.
#[test]
fn a_dropped_connection_whose_peer_vanished_listens_again() {
    with_stack(|stack, now, listener| {
        let next = syn(stack);
        stack.with_device(|d| {
            d.rx.push_back(frames::tcp(PEER_PORT, PORT, 1001, next, ACK, 1024, b""));
        });
        stack.poll();
        let (conn, from) = listener.try_accept().unwrap().expect("the connection was accepted");
        assert_eq!(from.port, PEER_PORT);
        peer_vanishes(stack, now);
        drop(conn);
        peer_vanishes(stack, now);
        assert_eq!(states(stack), [tcp::State::Listen; 2], "both pooled sockets listen again");
    });
}

/// One datagram from an address in our subnet that nobody answers ARP
/// for (a spoofed source) gets a reply smoltcp cannot send; smoltcp keeps
/// it at the head of the UDP socket's send queue, and every later reply,
/// to anyone, would wait behind it for ever (before the fix: 0 of 3
/// replies left in 120 s of virtual time). The stack gives up on the
/// address after 3 s of ARP requests: the three replies leave, and the
/// dropped one is counted and reported.
#[test]
fn a_reply_to_an_unresolvable_address_does_not_block_the_others() {
    use smoltcp::socket::udp;
    use sockserv::driver::DatagramSocket;
    let now = Cell::new(Duration::ZERO);
    let mut device = FrameDevice::default();
    let config = Config::new(EthernetAddress(frames::OUR_MAC).into());
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(192, 168, 69, 1), 24)).unwrap());
    device.rx.push_back(frames::arp_request());
    let mut storage = Storage::<2>::new();
    let stack = Stack::new(iface, device, &mut storage, Spin, VClock(&now));
    let meta = || vec![udp::PacketMetadata::EMPTY; 8];
    let socket = udp::Socket::new(
        udp::PacketBuffer::new(meta(), vec![0; 4096]),
        udp::PacketBuffer::new(meta(), vec![0; 4096]),
    );
    let mut udp = stack.bind_udp(7002, socket).unwrap();
    let mut spoofed = frames::udp(5555, 7002, b"spoofed");
    spoofed[14 + 12..14 + 16].copy_from_slice(&[192, 168, 69, 77]);
    stack.with_device(|d| d.rx.push_back(spoofed));
    for port in 6000..6003 {
        stack.with_device(|d| d.rx.push_back(frames::udp(port, 7002, b"real")));
    }
    stack.poll();
    let mut buf = [0u8; 64];
    while let Ok(Some(got)) = udp.try_recv_from(&mut buf) {
        udp.send_to(&buf[..got.len], &got.from).unwrap();
    }
    for _ in 0..400 {
        now.set(now.get() + Duration::from_millis(300));
        stack.poll();
    }
    // The replies sent to the peer's link address (the one to the spoofed
    // source leaves addressed to our own, which no host takes).
    let replies = stack.with_device(|d| {
        d.tx.iter()
            .filter(|f| f.len() > 23 && f[12..14] == [8, 0] && f[14 + 9] == 17)
            .filter(|f| f[0..6] == frames::PEER_MAC)
            .count()
    });
    assert_eq!(replies, 3, "the replies to the peer that answers ARP left");
    assert_eq!(stack.stats().unresolved, 1, "the reply to the spoofed source, counted");
    // Once the spoofed address answers ARP, replies to it go to it again.
    let mut answer = frames::arp_request();
    answer[14 + 14..14 + 18].copy_from_slice(&[192, 168, 69, 77]);
    answer[14 + 8..14 + 14].copy_from_slice(&[2, 0, 0, 0, 0, 77]);
    answer[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 77]);
    stack.with_device(|d| d.rx.push_back(answer));
    let mut again = frames::udp(5555, 7002, b"spoofed");
    again[14 + 12..14 + 16].copy_from_slice(&[192, 168, 69, 77]);
    stack.with_device(|d| d.rx.push_back(again));
    stack.poll();
    while let Ok(Some(got)) = udp.try_recv_from(&mut buf) {
        udp.send_to(&buf[..got.len], &got.from).unwrap();
    }
    stack.poll();
    let last = stack.with_device(|d| d.tx.back().cloned()).unwrap();
    assert_eq!(last[0..6], [2, 0, 0, 0, 0, 77], "the reply went to the address's own MAC");
    assert_eq!(stack.stats().unresolved, 1);
}

/// A stack that knows the peer's MAC, with a UDP socket on 7002 of
/// `slots` packet slots and `bytes` of payload buffer each way.
fn udp_stack<'a, 'c>(
    storage: &'a mut Storage<'a, 2>,
    now: &'c Cell<Duration>,
    slots: usize,
    bytes: usize,
) -> (&'a FrameStack<'a, 'c>, sockserv_smoltcp::UdpSocket<'a, 'a>) {
    use smoltcp::socket::udp;
    let mut device = FrameDevice::default();
    let config = Config::new(EthernetAddress(frames::OUR_MAC).into());
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(192, 168, 69, 1), 24)).unwrap());
    device.rx.push_back(frames::arp_request());
    let stack: &'a FrameStack<'a, 'c> =
        Box::leak(Box::new(Stack::new(iface, device, storage, Spin, VClock(now))));
    let meta = || vec![udp::PacketMetadata::EMPTY; slots];
    let socket = udp::Socket::new(
        udp::PacketBuffer::new(meta(), vec![0; bytes]),
        udp::PacketBuffer::new(meta(), vec![0; bytes]),
    );
    let udp = stack.bind_udp(7002, socket).unwrap();
    (stack, udp)
}

static QUEUE_FULL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A UDP socket with 4 packet slots and 5 datagrams between two polls:
/// smoltcp drops the fifth, which must be counted in the stats and told
/// to the hook (as a reassembly loss is), once; a datagram larger than the
/// socket's whole buffer is counted as too large; a datagram to a port no
/// socket takes (smoltcp answers port unreachable) and an empty one are
/// not losses of a socket. Fails without the adapter's arrival check (0
/// counted).
#[test]
fn datagrams_dropped_for_a_full_receive_queue_are_counted_and_reported() {
    use sockserv::driver::DatagramSocket;
    use sockserv_smoltcp::{DatagramLoss, Loss};
    let now = Cell::new(Duration::ZERO);
    let storage = Box::leak(Box::new(Storage::<2>::new()));
    let (stack, mut udp) = udp_stack(storage, &now, 4, 1024);
    stack.on_loss(|loss| {
        if let Loss::Datagram { reason: DatagramLoss::QueueFull, from } = loss {
            assert_eq!(from.octets(), frames::PEER_IP);
            QUEUE_FULL.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    stack.poll();
    for port in 6000..6005 {
        stack.with_device(|d| d.rx.push_back(frames::udp(port, 7002, b"datagram")));
    }
    stack.with_device(|d| d.rx.push_back(frames::udp(6100, 7999, b"nobody's port")));
    stack.poll();
    assert_eq!(stack.stats().datagrams_lost, 1, "the fifth found no slot");
    assert_eq!(QUEUE_FULL.load(std::sync::atomic::Ordering::SeqCst), 1);
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while let Ok(Some(r)) = udp.try_recv_from(&mut buf) {
        got.push(r.from.port);
    }
    assert_eq!(got, [6000, 6001, 6002, 6003]);
    // Room again: nothing more lost.
    stack.with_device(|d| d.rx.push_back(frames::udp(6005, 7002, b"datagram")));
    stack.poll();
    assert_eq!(stack.stats().datagrams_lost, 1);
    // Larger than the socket's 1024 bytes of buffer.
    stack.with_device(|d| d.rx.push_back(frames::udp(6006, 7002, &[7; 1200])));
    stack.poll();
    assert_eq!(stack.stats().datagrams_lost, 2, "a datagram larger than the buffer");
    assert_eq!(QUEUE_FULL.load(std::sync::atomic::Ordering::SeqCst), 1, "that one is TooLarge");
    assert_eq!(stack.stats().syns_dropped, 0);
}

static RECORDS: std::sync::Mutex<Vec<(log::Level, String)>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS.lock().unwrap().push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

/// The warnings about the connection cap so far.
fn cap_warnings() -> Vec<String> {
    let records = RECORDS.lock().unwrap();
    records
        .iter()
        .filter(|(level, msg)| *level == log::Level::Warn && msg.contains("max_connections"))
        .map(|(_, msg)| msg.clone())
        .collect()
}

/// A listener with `max_connections` 1: when the one connection is open
/// it says so once through the logging shim (a warning, counted in the
/// stats), however many clients wait; once when it clears; and once more
/// when the next connection fills it again. Fails before (nothing said,
/// nothing counted).
#[test]
fn a_listener_at_its_connection_cap_says_so_once_per_episode() {
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::LevelFilter::Trace);
    let now = Cell::new(Duration::ZERO);
    let mut device = FrameDevice::default();
    let config = Config::new(EthernetAddress(frames::OUR_MAC).into());
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(192, 168, 69, 1), 24)).unwrap());
    device.rx.push_back(frames::arp_request());
    let mut storage = Storage::<4>::new();
    let stack = Stack::new(iface, device, &mut storage, Spin, VClock(&now));
    let options = Options { backlog: 2, max_connections: Some(1), ..Options::default() };
    let mut listener = stack.listen(PORT, [socket(), socket(), socket()], options).unwrap();
    stack.poll();
    // A client on `port` completes its handshake.
    let connect = |port: u16| {
        stack.with_device(|d| d.rx.push_back(frames::tcp(port, PORT, 1000, 0, SYN, 1024, b"")));
        stack.poll();
        let (_, next) = stack.with_device(|d| frames::last_sent(&d.tx, port)).unwrap();
        stack.with_device(|d| d.rx.push_back(frames::tcp(port, PORT, 1001, next, ACK, 1024, b"")));
        stack.poll();
    };
    connect(40_000);
    let (first, _) = listener.try_accept().unwrap().expect("the first client");
    assert_eq!(stack.stats().connection_cap_reached, 1);
    assert_eq!(cap_warnings().len(), 1, "{:?}", cap_warnings());
    assert!(cap_warnings()[0].contains("port 7000: 1 connections open"), "{:?}", cap_warnings());
    // More clients wait; each look at the listener finds it full: no more words.
    connect(40_001);
    connect(40_002);
    for _ in 0..5 {
        assert!(listener.try_accept().unwrap().is_none(), "at the cap");
    }
    assert_eq!(stack.stats().connection_cap_reached, 1);
    assert_eq!(cap_warnings().len(), 1, "{:?}", cap_warnings());
    // The connection closes: it clears (said once), the next is accepted
    // and fills it again (a new episode).
    drop(first);
    let (_second, _) = listener.try_accept().unwrap().expect("the next client");
    let said = cap_warnings();
    assert_eq!(said.len(), 3, "{said:?}");
    assert!(said[1].contains("below 1 connections again"), "{said:?}");
    assert_eq!(stack.stats().connection_cap_reached, 2);
}

/// Ping is answered by default: the adapter's default
/// `auto-icmp-echo-reply` feature (smoltcp's, which the adapter's
/// `default-features = false` on smoltcp would otherwise leave off) makes
/// the interface answer an ICMP echo request with an echo reply carrying
/// the same identifier, sequence number and payload.
#[test]
fn ping_is_answered() {
    with_stack(|stack, _, _| {
        // Type 8 (echo request), code 0, checksum (not checked here),
        // identifier 0x1234, sequence 7, then the payload.
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 7];
        icmp.extend_from_slice(b"are you there?");
        stack.with_device(|d| {
            d.tx.clear();
            d.rx.push_back(frames::ipv4(1, &icmp));
        });
        stack.poll();
        let reply = stack.with_device(|d| {
            d.tx.iter().find_map(|f| {
                let ip = f.get(14..)?;
                (f.get(12..14)? == [8, 0] && ip.get(9)? == &1).then(|| ip[20..].to_vec())
            })
        });
        let reply = reply.expect("an ICMP packet answered the echo request");
        assert_eq!(reply[0], 0, "an echo reply");
        assert_eq!(&reply[4..8], &icmp[4..8], "the same identifier and sequence number");
        assert_eq!(&reply[8..], b"are you there?", "the same payload");
    });
}
