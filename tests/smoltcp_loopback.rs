//! The smoltcp adapter in-process, sync mode, over smoltcp's `Loopback`
//! device: no privileges, no real time (see `smoltcp_world`).

mod smoltcp_world;

use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::rc::Rc;
use std::time::Duration;

use embedded_io::{ErrorKind, Read, Write};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::IpEndpoint;
use smoltcp_world::{
    Client, PORT, SERVER, World, ghost_arp, ghost_fragment, ghost_syn, ghost_udp_fragments,
    payload, pool,
};
use sockserv::driver::{Clock, Stream};
use sockserv::{
    BufStream, DatagramHandler, Inline, ReplyFull, ReplyWriter, RequestError, Server, Service,
    ShutdownFlag, StreamHandler,
};
use sockserv_smoltcp::{DatagramLoss, Loss, Options, Storage, TcpServer, UdpServer, WhenFull};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    /// Every byte back until EOF, through a 7-byte buffer.
    Echo,
    /// One line back (BufStream::read_line).
    Line,
    /// Fails at once.
    Fail,
}

/// A service that records every hook call.
#[derive(Clone)]
struct Rec {
    behaviour: Behaviour,
    verify: bool,
    log: Rc<RefCell<Vec<String>>>,
    /// Ask `flag` to stop after this many `service_actions`.
    stop_after: Option<(u32, &'static ShutdownFlag)>,
    actions: Rc<Cell<u32>>,
}

impl Rec {
    fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            verify: true,
            log: Rc::default(),
            stop_after: None,
            actions: Rc::default(),
        }
    }

    fn note(&self, line: String) {
        self.log.borrow_mut().push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.lines().iter().filter(|l| l.starts_with(prefix)).count()
    }
}

struct Handler(Rec);

#[derive(Debug)]
#[allow(dead_code)]
enum Failure<E> {
    Io(E),
    Line(sockserv::ReadLineError<E>),
    Test,
}

impl<E> From<E> for Failure<E> {
    fn from(e: E) -> Self {
        Self::Io(e)
    }
}

impl<S: Read + Write> StreamHandler<S> for Handler
where
    S::Error: Debug,
{
    type Error = Failure<S::Error>;
    fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error> {
        self.0.note("handle".into());
        match self.0.behaviour {
            Behaviour::Echo => {
                let mut buf = [0u8; 7];
                loop {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    stream.write_all(&buf[..n])?;
                }
            }
            Behaviour::Line => {
                let mut io = BufStream::<_, 256>::new(stream);
                let mut line = [0u8; 256];
                let n = io.read_line(&mut line).map_err(Failure::Line)?;
                io.write_all(&line[..n])?;
                Ok(())
            }
            Behaviour::Fail => Err(Failure::Test),
        }
    }
}

impl DatagramHandler for Handler {
    type Error = ReplyFull;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), ReplyFull> {
        self.0.note("handle".into());
        reply.write_all(packet)
    }
}

impl Service<IpEndpoint> for Rec {
    type Handler = Handler;
    fn handler(&self, _: &IpEndpoint) -> Handler {
        Handler(self.clone())
    }
    fn verify_request(&self, request: &sockserv::Request<'_, IpEndpoint>) -> bool {
        let client = request.client();
        self.note(format!("verify {client}"));
        self.verify
    }
    fn handle_error(&self, _: &IpEndpoint, error: &RequestError<'_>) {
        self.note(format!("error: {error}"));
    }
    fn handle_timeout(&self) {
        self.note("timeout".into());
    }
    fn service_actions(&self) {
        let n = self.actions.get() + 1;
        self.actions.set(n);
        if let Some((after, flag)) = self.stop_after
            && n >= after
        {
            flag.request();
        }
    }
}

#[test]
fn echo_many_segments_through_small_buffers() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<3>(), Options::default()).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    let data = payload(20_000);
    let c = world.connect(&stack, 40001, Client::new(&data));
    server.set_timeout(Some(Duration::from_secs(5)));
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(rec.lines(), ["verify 127.0.0.1:40001", "handle"]);
    // 20 000 bytes through 1 KiB socket buffers and a 7-byte handler buffer.
    assert_eq!(world.received(c), data);
    // The server half-closed after the handler: the client saw FIN.
    assert!(
        matches!(world.state(&stack, c), tcp::State::TimeWait | tcp::State::Closed),
        "client state {}",
        world.state(&stack, c)
    );
}

#[test]
fn partial_reads_one_byte_segments_make_one_line() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<2>(), Options::default()).unwrap();
    let rec = Rec::new(Behaviour::Line);
    let flag = ShutdownFlag::new();
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    let mut client = Client::new(b"hello world\n");
    client.chunk = 1;
    client.close_when_sent = false;
    let c = world.connect(&stack, 40002, client);
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(world.received(c), b"hello world\n");
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
    // More than one wait: the bytes did come one segment at a time.
    assert!(world.waits.get() > 12, "waits: {}", world.waits.get());
}

#[test]
fn verify_request_false_closes_without_a_handler() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<2>(), Options::default()).unwrap();
    let mut rec = Rec::new(Behaviour::Echo);
    rec.verify = false;
    let flag = ShutdownFlag::new();
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    let mut client = Client::new(b"");
    client.close_when_sent = false;
    let c = world.connect(&stack, 40003, client);
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(rec.lines(), ["verify 127.0.0.1:40003"]);
    assert!(world.received(c).is_empty());
    // The server's FIN arrived: the client's receive side is closed.
    assert_eq!(world.state(&stack, c), tcp::State::CloseWait);
}

#[test]
fn handler_error_reaches_handle_error_and_the_server_goes_on() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<3>(), Options::default()).unwrap();
    let rec = Rec::new(Behaviour::Fail);
    let flag = ShutdownFlag::new();
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    world.connect(&stack, 40004, Client::new(b"x"));
    server.handle_request().unwrap();
    assert_eq!(rec.count("error: handler failed in Handle: Test"), 1, "{:?}", rec.lines());
    // The same listener, now with a handler that works.
    let (transport, _, dispatch) = server.into_parts();
    let echo = Rec::new(Behaviour::Echo);
    let mut server = Server::new(transport, echo, &world.clock, &flag, dispatch);
    let c = world.connect(&stack, 40005, Client::new(b"still serving"));
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(world.received(c), b"still serving");
}

#[test]
fn handle_timeout_after_the_virtual_deadline() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<2>(), Options::default()).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    // The adapter's sync server: its deadline is on the stack's clock
    // (`world.clock`, given to the stack once).
    let mut server: TcpServer<'_, '_, _, _> = listener.into_server(rec.clone(), &flag);
    server.set_timeout(Some(Duration::from_secs(3)));
    server.handle_request().unwrap();
    assert_eq!(rec.lines(), ["timeout"]);
    assert!(world.clock.now() >= Duration::from_secs(3));
    assert!(world.clock.now() < Duration::from_secs(4), "{:?}", world.clock.now());
}

#[test]
fn serve_forever_runs_service_actions_and_stops_on_the_flag() {
    static FLAG: ShutdownFlag = ShutdownFlag::new();
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<3>(), Options::default()).unwrap();
    let mut rec = Rec::new(Behaviour::Echo);
    rec.stop_after = Some((5, &FLAG));
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &FLAG, Inline::new());
    let c = world.connect(&stack, 40006, Client::new(b"served inside serve_forever"));
    server.serve_forever(Duration::from_millis(500)).unwrap();
    world.settle(&stack);
    assert_eq!(rec.actions.get(), 5);
    assert_eq!(rec.count("handle"), 1);
    assert_eq!(world.received(c), b"served inside serve_forever");
    assert!(!FLAG.is_running());
}

#[test]
fn backlog_overflow_gets_a_reset_with_the_reset_policy_and_the_pool_rearms() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let options = Options { backlog: 2, when_full: WhenFull::Reset, ..Options::default() };
    let listener = stack.listen(PORT, pool::<3>(), options).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let mut keep_open = Client::new(b"");
    keep_open.close_when_sent = false;
    let a = world.connect(&stack, 40010, Client::new(b"first"));
    let b = world.connect(&stack, 40011, Client::new(b"second"));
    let c = world.connect(&stack, 40012, Client::new(b"third"));
    let started = world.clock.now();
    // Nobody accepts: two connections fill the backlog.
    for _ in 0..5 {
        stack.poll();
    }
    assert_eq!(world.state(&stack, a), tcp::State::Established);
    assert_eq!(world.state(&stack, b), tcp::State::Established);
    // The third SYN found no listening socket: RST, not a timeout.
    assert_eq!(world.state(&stack, c), tcp::State::Closed);
    assert_eq!(world.clock.now(), started);
    // Accepting one frees a place in the backlog: a new client gets in.
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    server.handle_request().unwrap();
    let d = world.connect(&stack, 40013, Client::new(b"fourth"));
    server.handle_request().unwrap();
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(world.received(a), b"first");
    assert_eq!(world.received(b), b"second");
    assert_eq!(world.received(d), b"fourth");
    assert!(world.received(c).is_empty());
    assert_eq!(stack.stats().syns_dropped, 0, "Reset never drops");
}

#[test]
fn backlog_overflow_drops_the_syn_by_default_and_the_client_is_served_later() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let options = Options { backlog: 2, ..Options::default() };
    assert_eq!(options.when_full, WhenFull::Drop);
    let listener = stack.listen(PORT, pool::<3>(), options).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let a = world.connect(&stack, 40020, Client::new(b"first"));
    let b = world.connect(&stack, 40021, Client::new(b"second"));
    let c = world.connect(&stack, 40022, Client::new(b"third"));
    for _ in 0..5 {
        stack.poll();
    }
    assert_eq!(world.state(&stack, a), tcp::State::Established);
    assert_eq!(world.state(&stack, b), tcp::State::Established);
    // The third SYN found no listening socket: dropped, no RST, so the
    // client is still trying.
    assert_eq!(world.state(&stack, c), tcp::State::SynSent);
    assert_eq!(stack.stats().syns_dropped, 1);
    // Once the server accepts, a socket listens again and the client's
    // retransmitted SYN gets in: all three are served.
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    for _ in 0..3 {
        server.handle_request().unwrap();
    }
    world.settle(&stack);
    assert_eq!(world.received(a), b"first");
    assert_eq!(world.received(b), b"second");
    assert_eq!(world.received(c), b"third");
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
}

#[test]
fn client_reset_mid_request_is_a_handler_error() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<3>(), Options::default()).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    let mut client = Client::new(&payload(5000));
    client.abort_after = Some(3000);
    world.connect(&stack, 40020, client);
    server.handle_request().unwrap();
    let lines = rec.lines();
    assert_eq!(rec.count("error"), 1, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("ConnectionReset")), "{lines:?}");
    // And the next client is served.
    let c = world.connect(&stack, 40021, Client::new(b"after the reset"));
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(world.received(c), b"after the reset");
}

#[test]
fn idle_peer_times_out_with_stream_timeout() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let options = Options { stream_timeout: Some(Duration::from_secs(2)), ..Options::default() };
    let listener = stack.listen(PORT, pool::<2>(), options).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    let mut idle = Client::new(b"");
    idle.close_when_sent = false;
    let c = world.connect(&stack, 40030, idle);
    server.handle_request().unwrap();
    let lines = rec.lines();
    assert!(lines.iter().any(|l| l.contains("TimedOut")), "{lines:?}");
    assert!(world.clock.now() >= Duration::from_secs(2));
    world.settle(&stack);
    // The server closed its side after the timeout.
    assert_eq!(world.state(&stack, c), tcp::State::CloseWait);
}

#[test]
fn write_after_shutdown_is_broken_pipe_and_errors_map_to_kinds() {
    use sockserv::driver::{Connection, StreamListener, Wait};
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut listener = stack.listen(PORT, pool::<2>(), Options::default()).unwrap();
    let mut client = Client::new(b"abc");
    client.close_when_sent = false;
    world.connect(&stack, 40040, client);
    assert_eq!(
        listener.wait(Some(Duration::from_secs(1))).unwrap(),
        sockserv::driver::Readiness::Ready
    );
    let (mut conn, from) = listener.try_accept().unwrap().unwrap();
    assert_eq!(from.port, 40040);
    let mut buf = [0u8; 8];
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"abc");
    conn.shutdown_write().unwrap();
    let e = conn.write(b"late").unwrap_err();
    assert_eq!(embedded_io::Error::kind(&e), ErrorKind::BrokenPipe);
}

#[test]
fn udp_echo_and_truncation_reported() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let server_socket = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    );
    let socket = stack.bind_udp(7001, server_socket).unwrap();
    let client = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    );
    let big = payload(100);
    let h = stack.with_sockets(|set| {
        let h = set.add(client);
        let s = set.get_mut::<udp::Socket>(h);
        s.bind(5000).unwrap();
        s.send_slice(&big, (SERVER, 7001)).unwrap();
        s.send_slice(b"small", (SERVER, 7001)).unwrap();
        h
    });
    let rec = Rec::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    // The adapter's UDP server: 64-byte datagram and reply buffers, on
    // the stack's clock.
    let mut server: UdpServer<'_, '_, _, 64, _> = socket.into_server(rec.clone(), &flag);
    server.handle_request().unwrap();
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(
        rec.lines(),
        [
            "verify 127.0.0.1:5000",
            "error: datagram of 100 bytes does not fit the 64-byte buffer; dropped",
            "verify 127.0.0.1:5000",
            "handle",
        ]
    );
    let replies = stack.with_sockets(|set| {
        let s = set.get_mut::<udp::Socket>(h);
        let mut out = Vec::new();
        while let Ok((data, _)) = s.recv() {
            out.push(data.to_vec());
        }
        out
    });
    assert_eq!(replies, [b"small".to_vec()]);
}

#[test]
fn fragmented_datagrams_are_reassembled_and_one_with_no_buffer_is_reported() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HEARD: AtomicU32 = AtomicU32::new(0);
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    stack.on_loss(|loss| {
        if matches!(loss, Loss::Datagram { reason: DatagramLoss::BuffersBusy, .. }) {
            HEARD.fetch_add(1, Ordering::SeqCst);
        }
    });
    let server_socket = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 16384]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 16384]),
    );
    let mut socket = stack.bind_udp(7001, server_socket).unwrap();
    ghost_arp(&stack);
    // One 3,000-byte datagram alone: reassembled.
    let alone = payload(3000);
    for (off, bytes) in ghost_udp_fragments(6000, 7001, &alone) {
        ghost_fragment(&stack, 1, off, off + bytes.len() == alone.len() + 8, &bytes);
    }
    // Three at once, fragments interleaved: smoltcp has two reassembly
    // buffers (the large-datagrams feature), so the third is lost, and
    // said so.
    let three: Vec<Vec<u8>> = (0..3).map(|i| vec![b'a' + i as u8; 3000]).collect();
    let frags: Vec<_> = three.iter().map(|d| ghost_udp_fragments(6001, 7001, d)).collect();
    for k in 0..frags[0].len() {
        for (id, f) in frags.iter().enumerate() {
            let (off, bytes) = &f[k];
            ghost_fragment(&stack, 10 + id as u16, *off, k + 1 == f.len(), bytes);
        }
    }
    stack.poll();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Some(r) =
        sockserv::driver::DatagramSocket::try_recv_from(&mut socket, &mut buf).unwrap()
    {
        got.push(buf[..r.len].to_vec());
    }
    assert_eq!(got, [alone, three[0].clone(), three[1].clone()]);
    assert_eq!(stack.stats().datagrams_lost, 1);
    assert_eq!(HEARD.load(Ordering::SeqCst), 1);
}

#[test]
fn listen_refuses_when_storage_is_full_instead_of_panicking() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let _a = stack.listen(PORT, pool::<10>(), Options::default()).unwrap();
    assert_eq!(
        stack.listen(PORT + 1, pool::<7>(), Options::default()).err(),
        Some(sockserv_smoltcp::ListenError::Full)
    );
    assert_eq!(
        stack.listen(PORT, pool::<1>(), Options::default()).err(),
        Some(sockserv_smoltcp::ListenError::PortInUse)
    );
    let _b = stack.listen(PORT + 1, pool::<6>(), Options::default()).unwrap();
}

#[test]
fn half_open_syns_from_a_vanished_peer_give_the_backlog_back() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let options = Options {
        backlog: 2,
        when_full: WhenFull::Reset,
        handshake_timeout: Duration::from_secs(3),
        close_timeout: Duration::from_secs(60),
        ..Options::default()
    };
    let listener = stack.listen(PORT, pool::<3>(), options).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    // Two SYNs from a host that never completes the handshake fill the
    // backlog with half-open connections.
    ghost_arp(&stack);
    ghost_syn(&stack, 50001);
    ghost_syn(&stack, 50002);
    world.settle(&stack);
    let half_open = stack.with_sockets(|set| {
        set.iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => Some(t.state()),
                _ => None,
            })
            .filter(|&s| s == tcp::State::SynReceived)
            .count()
    });
    assert_eq!(half_open, 2, "the ghost's SYNs were taken");
    let refused = world.connect(&stack, 40070, Client::new(b"refused"));
    world.settle(&stack);
    assert_eq!(world.state(&stack, refused), tcp::State::Closed, "the backlog is full");
    // After the handshake timeout the half-open sockets are reset and
    // listen again: a new client is served.
    world.clock.advance(Duration::from_secs(3));
    world.settle(&stack);
    let c = world.connect(&stack, 40071, Client::new(b"welcome"));
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    server.set_timeout(Some(Duration::from_secs(5)));
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(world.received(c), b"welcome");
    assert_eq!(rec.count("timeout"), 0, "{:?}", rec.lines());
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
}

/// How many of the stack's TCP sockets are in `state`.
fn sockets_in(stack: &smoltcp_world::TestStack<'_>, state: tcp::State) -> usize {
    stack.with_sockets(|set| {
        set.iter()
            .filter(|(_, s)| matches!(s, smoltcp::socket::Socket::Tcp(t) if t.state() == state))
            .count()
    })
}

#[test]
fn pool_plus_one_syns_from_a_vanished_peer_then_a_real_client_waits_and_is_served() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let options =
        Options { backlog: 3, handshake_timeout: Duration::from_secs(3), ..Options::default() };
    let listener = stack.listen(PORT, pool::<3>(), options).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    // Four SYNs (the pool + 1) from a host that never finishes a handshake.
    ghost_arp(&stack);
    for port in 50001..=50004 {
        ghost_syn(&stack, port);
    }
    world.settle(&stack);
    assert_eq!(sockets_in(&stack, tcp::State::SynReceived), 3, "three SYNs were taken");
    assert_eq!(stack.stats().syns_dropped, 1, "the fourth was dropped, not reset");
    // A real client now finds no listening socket: its SYN is dropped too,
    // so it keeps retrying instead of being refused.
    let c = world.connect(&stack, 40072, Client::new(b"patience"));
    world.settle(&stack);
    assert_eq!(world.state(&stack, c), tcp::State::SynSent, "not refused");
    assert!(stack.stats().syns_dropped >= 2);
    // After the handshake timeout the half-open sockets are reset and
    // listen again; the client's next SYN gets in and it is served.
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    server.set_timeout(Some(Duration::from_secs(30)));
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(world.received(c), b"patience");
    assert_eq!(rec.count("timeout"), 0, "{:?}", rec.lines());
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
}

#[test]
fn a_wait_sleeps_no_longer_than_smoltcps_retransmit_timer() {
    use sockserv::driver::{Readiness, Wait};
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut listener = stack.listen(PORT, pool::<2>(), Options::default()).unwrap();
    // A SYN-ACK to a peer that never answers: unacknowledged, so smoltcp
    // must be polled again when its retransmit timer (1 s at first) fires.
    ghost_arp(&stack);
    ghost_syn(&stack, 50003);
    world.timeouts.borrow_mut().clear();
    let waited = listener.wait(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(waited, Readiness::TimedOut);
    let timeouts = world.timeouts.borrow();
    let first = timeouts.first().copied().flatten().expect("a bounded wait");
    assert!(first > Duration::ZERO && first <= Duration::from_secs(1), "{first:?}");
    // Backed off, but each wait still ends at smoltcp's next timer.
    assert!(timeouts.iter().all(|t| t.is_some_and(|t| t < Duration::from_secs(30))));
}

#[test]
fn a_close_that_never_finishes_gives_its_socket_back_after_close_timeout() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let options =
        Options { backlog: 1, close_timeout: Duration::from_secs(3), ..Options::default() };
    let listener = stack.listen(PORT, pool::<1>(), options).unwrap();
    let rec = Rec::new(Behaviour::Line);
    let flag = ShutdownFlag::new();
    let mut server = Server::new(Stream(listener), rec.clone(), &world.clock, &flag, Inline::new());
    // A client that never closes: the server's socket stays in FIN-WAIT-2.
    let mut lingering = Client::new(b"one line\n");
    lingering.close_when_sent = false;
    let a = world.connect(&stack, 40050, lingering);
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(world.received(a), b"one line\n");
    assert_eq!(world.state(&stack, a), tcp::State::CloseWait);
    // The only socket is still closing: a new client's SYN is dropped and
    // the client keeps trying (a client beyond the pool).
    let b = world.connect(&stack, 40051, Client::new(b"welcome back\n"));
    world.settle(&stack);
    assert_eq!(world.state(&stack, b), tcp::State::SynSent);
    assert!(stack.stats().syns_dropped >= 1);
    // After close_timeout the socket is reset, freed and listening again:
    // the waiting client gets in and is served.
    world.clock.advance(Duration::from_secs(4));
    server.handle_request().unwrap();
    world.settle(&stack);
    assert_eq!(world.state(&stack, a), tcp::State::Closed, "the lingering peer was reset");
    assert_eq!(world.received(b), b"welcome back\n");
}

#[test]
fn dropping_a_listener_frees_its_sockets_and_port() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<12>(), Options::default()).unwrap();
    drop(listener);
    for _ in 0..3 {
        stack.poll();
    }
    let again = stack.listen(PORT, pool::<12>(), Options::default());
    assert!(again.is_ok(), "{:?}", again.err());
}

#[test]
fn a_stop_interrupts_a_read_waiting_on_an_idle_peer() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<2>(), Options::default()).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let mut server =
        Server::new(Stream(listener), rec.clone(), &world.clock, &world.flag, Inline::new());
    let c = world.connect(&stack, 40060, Client::idle());
    // The stack's Wait asks for the stop at 2 s (TapWait does on SIGINT).
    world.wake_at.set(Some(Duration::from_secs(2)));
    server.handle_request().unwrap();
    let lines = rec.lines();
    assert_eq!(rec.count("error"), 1, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("Interrupted")), "{lines:?}");
    let now = world.clock.now();
    assert!(now >= Duration::from_secs(2) && now < Duration::from_secs(3), "{now:?}");
    assert!(sockserv::ShutdownSignal::is_requested(&world.flag));
    world.settle(&stack);
    // The request ended as usual: the server closed its side.
    assert_eq!(world.state(&stack, c), tcp::State::CloseWait);
}

#[test]
fn a_stop_interrupts_a_write_waiting_on_a_peer_that_does_not_read() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<2>(), Options::default()).unwrap();
    let rec = Rec::new(Behaviour::Echo);
    let mut server =
        Server::new(Stream(listener), rec.clone(), &world.clock, &world.flag, Inline::new());
    // Sends 50 kB and never reads: the echo's writes fill its 1 KiB window
    // and the server's 1 KiB send buffer, then must wait.
    let mut client = Client::new(&payload(50_000));
    client.close_when_sent = false;
    client.rx_buffer = 1024;
    client.read_from = Duration::MAX;
    world.connect(&stack, 40061, client);
    world.wake_at.set(Some(Duration::from_secs(2)));
    server.handle_request().unwrap();
    let lines = rec.lines();
    assert_eq!(rec.count("error"), 1, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("Interrupted")), "{lines:?}");
    let now = world.clock.now();
    assert!(now >= Duration::from_secs(2) && now < Duration::from_secs(3), "{now:?}");
}
