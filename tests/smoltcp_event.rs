//! Event mode on smoltcp: the core's `EventServer` over a
//! `TcpEventSource`, in-process over smoltcp's `Loopback` device, with
//! smoltcp clients in the same socket set and a virtual clock (see
//! `smoltcp_world`).

mod smoltcp_world;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use smoltcp::socket::tcp;
use smoltcp::wire::IpEndpoint;
use smoltcp_world::{Client, PORT, TestStack, World, payload, pool};
use sockserv::driver::Clock;
use sockserv::{EventHandler, EventServerConfig, FixedPool, Next, Outbox, Step};
use sockserv::{RequestError, Service, ShutdownFlag};
use sockserv_smoltcp::{EventTcpServer, Options, Storage, TcpEventSource, WhenFull};

const POLL: Duration = Duration::from_millis(500);
/// More loop turns than any of these tests needs: the loop spun.
const MAX_TURNS: u32 = 20_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Every byte back until EOF, then close.
    Echo,
    /// One line back, then close.
    Line,
    /// Fails on the first bytes.
    Fail,
    /// Echo, but stays open after the peer's FIN (waits for nothing).
    KeepAfterEof,
}

/// The service: records hooks, counts loop turns and closed connections,
/// and stops the server when told to.
struct Rec<'w> {
    world: &'w World,
    kind: Kind,
    log: RefCell<Vec<String>>,
    turns: Cell<u32>,
    closed: Cell<usize>,
    /// Bytes the handlers put in their outboxes.
    written: Cell<usize>,
    /// Stop once this many connections closed.
    stop_after_closed: Cell<Option<usize>>,
    /// Stop at this virtual time.
    stop_at: Option<Duration>,
}

impl<'w> Rec<'w> {
    fn new(world: &'w World, kind: Kind) -> Self {
        Self {
            world,
            kind,
            log: RefCell::default(),
            turns: Cell::new(0),
            closed: Cell::new(0),
            written: Cell::new(0),
            stop_after_closed: Cell::new(None),
            stop_at: None,
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

impl<'r, 'w> Service<IpEndpoint> for &'r Rec<'w> {
    type Handler = Handler<'r, 'w>;
    fn handler(&self, _: &IpEndpoint) -> Handler<'r, 'w> {
        Handler(self)
    }
    fn verify_request(&self, request: &sockserv::Request<'_, IpEndpoint>) -> bool {
        let client = request.client();
        self.note(format!("verify {client}"));
        true
    }
    fn handle_error(&self, _: &IpEndpoint, error: &RequestError<'_>) {
        self.note(format!("error: {error}"));
    }
    fn handle_table_full(&self, client: &IpEndpoint) {
        self.note(format!("table full {client}"));
    }
    fn service_actions(&self) {
        let turns = self.turns.get() + 1;
        self.turns.set(turns);
        let done = self.stop_after_closed.get().is_some_and(|n| self.closed.get() >= n);
        let late = self.stop_at.is_some_and(|t| self.world.clock.now() >= t);
        if done || late || turns >= MAX_TURNS {
            self.world.flag.request();
        }
    }
}

struct Handler<'r, 'w>(&'r Rec<'w>);

impl EventHandler for Handler<'_, '_> {
    type Error = &'static str;

    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        let rec = self.0;
        match rec.kind {
            Kind::Echo | Kind::KeepAfterEof => {
                let n = out.write(input);
                rec.written.set(rec.written.get() + n);
                Ok(Step::consumed(n))
            }
            Kind::Line => match input.iter().position(|&b| b == b'\n') {
                Some(i) if out.room() > i => {
                    rec.written.set(rec.written.get() + out.write(&input[..=i]));
                    Ok(Step::close(i + 1))
                }
                _ => Ok(Step::consumed(0)),
            },
            Kind::Fail => Err("test failure"),
        }
    }

    fn peer_closed(&mut self, _: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        self.0.note("peer closed".into());
        Ok(if self.0.kind == Kind::KeepAfterEof { Next::Continue } else { Next::Close })
    }

    fn closed(&mut self) {
        self.0.closed.set(self.0.closed.get() + 1);
    }
}

/// The adapter's name for it: the service, the pool, the capacity (and
/// a shutdown flag that is not a `static`).
type Server<'s, 'a, 'r, 'w, const N: usize, const B: usize> =
    EventTcpServer<'s, 'a, &'r Rec<'w>, FixedPool<B, N>, N, &'w ShutdownFlag>;

/// An event server with `N` slots sharing `N` buffers of `B` bytes over a
/// listener with a pool of `K` sockets.
fn server<'s, 'a, 'r, 'w, const N: usize, const B: usize, const K: usize>(
    stack: &'s TestStack<'a>,
    rec: &'r Rec<'w>,
    options: Options,
    idle: Option<Duration>,
) -> Server<'s, 'a, 'r, 'w, N, B> {
    let listener = stack.listen(PORT, pool::<K>(), options).unwrap();
    let world = rec.world;
    // The refusal tests (a full table without `max_connections`, and the
    // `Refuse` policy) want the table to accept and refuse; the core's
    // default stops accepting at a full table.
    let refuse = options.when_full == WhenFull::Refuse || options.max_connections.is_none();
    let config = EventServerConfig {
        idle_timeout: idle,
        when_full: if refuse { sockserv::WhenFull::Refuse } else { sockserv::WhenFull::Wait },
        ..Default::default()
    };
    // On the stack's clock (`world.clock`, given to the stack once).
    listener.into_event_server(rec, &world.flag, FixedPool::new(), config)
}

fn closed_by_server(state: tcp::State) -> bool {
    matches!(state, tcp::State::TimeWait | tcp::State::Closed | tcp::State::CloseWait)
}

#[test]
fn echo_three_clients_at_once_through_small_buffers() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut rec = Rec::new(&world, Kind::Echo);
    rec.stop_after_closed = Cell::new(Some(3));
    // Three 20 kB transfers through 1 KiB sockets and 64-byte table
    // buffers: partial reads and partial writes all the way.
    let mut srv = server::<4, 64, 6>(&stack, &rec, Options::default(), None);
    let data: Vec<Vec<u8>> = (0..3).map(|i| payload(20_000 + i * 333)).collect();
    let clients: Vec<usize> =
        (0..3).map(|i| world.connect(&stack, 41000 + i as u16, Client::new(&data[i]))).collect();
    srv.serve_forever(POLL).unwrap();
    world.settle(&stack);
    for (i, &c) in clients.iter().enumerate() {
        assert_eq!(world.received(c).len(), data[i].len(), "client {i}");
        assert_eq!(world.received(c), data[i], "client {i}");
        // The server's FIN came after the data.
        assert!(closed_by_server(world.state(&stack, c)), "{}", world.state(&stack, c));
    }
    assert_eq!(rec.count("verify"), 3);
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
    assert!(rec.turns.get() < MAX_TURNS);
    assert_eq!(srv.table().len(), 0);
}

#[test]
fn one_byte_segments_make_one_line() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut rec = Rec::new(&world, Kind::Line);
    rec.stop_after_closed = Cell::new(Some(1));
    let mut srv = server::<2, 64, 3>(&stack, &rec, Options::default(), None);
    let mut client = Client::new(b"hello world\nand more");
    client.chunk = 1;
    client.close_when_sent = false;
    let c = world.connect(&stack, 41010, client);
    srv.serve_forever(POLL).unwrap();
    world.settle(&stack);
    assert_eq!(world.received(c), b"hello world\n");
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
    // The line did arrive in many segments: many waits.
    assert!(world.waits.get() > 12, "waits: {}", world.waits.get());
    assert_eq!(world.state(&stack, c), tcp::State::CloseWait);
}

#[test]
fn back_pressure_stops_reading_until_the_peer_reads() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut rec = Rec::new(&world, Kind::Echo);
    // Stop while stalled, to look: everything in flight is bounded by the
    // buffers, not by the 100 kB the client wants to send.
    rec.stop_at = Some(Duration::from_secs(20));
    let mut srv = server::<2, 256, 3>(&stack, &rec, Options::default(), None);
    let data = payload(100_000);
    let mut client = Client::new(&data);
    // Reads nothing for 30 s, through a 1 KiB window.
    client.rx_buffer = 1024;
    client.read_from = Duration::from_secs(30);
    let c = world.connect(&stack, 41020, client);
    srv.serve_forever(POLL).unwrap();
    let sent = world.sent(c);
    // At most client rx 1 KiB + server tx 1 KiB + table 256 + 256 +
    // server rx 1 KiB + client tx 64 KiB: the table stopped reading.
    assert!(sent < 64 * 1024 + 4 * 1024, "the client sent {sent} bytes");
    assert!(world.received(c).is_empty());
    // The loop slept while stalled: about a turn per poll interval.
    assert!(rec.turns.get() < 200, "turns: {}", rec.turns.get());
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
}

#[test]
fn back_pressure_then_everything_is_delivered() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut rec = Rec::new(&world, Kind::Echo);
    rec.stop_after_closed = Cell::new(Some(1));
    let mut srv = server::<2, 256, 3>(&stack, &rec, Options::default(), None);
    let data = payload(100_000);
    let mut client = Client::new(&data);
    client.rx_buffer = 1024;
    client.read_from = Duration::from_secs(30);
    let c = world.connect(&stack, 41021, client);
    srv.serve_forever(POLL).unwrap();
    // The last bytes wait for the client's window, behind smoltcp's
    // backed-off zero-window probe: give them a few seconds.
    for _ in 0..10 {
        world.settle(&stack);
        if world.received(c).len() == data.len() {
            break;
        }
    }
    assert!(world.clock.now() >= Duration::from_secs(30));
    assert_eq!(world.received(c), data);
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
}

#[test]
fn a_full_table_refuses_the_next_connection_and_serves_the_others() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut rec = Rec::new(&world, Kind::Echo);
    rec.stop_at = Some(Duration::from_secs(5));
    // Two slots, a pool of five: the pool takes a third connection.
    let mut srv = server::<2, 64, 5>(&stack, &rec, Options::default(), None);
    let words: [&[u8]; 3] = [b"first", b"second", b"third"];
    let clients: Vec<usize> = (0..3)
        .map(|i| {
            let mut c = Client::new(words[i]);
            c.close_when_sent = false;
            world.connect(&stack, 41030 + i as u16, c)
        })
        .collect();
    srv.serve_forever(POLL).unwrap();
    world.settle(&stack);
    let lines = rec.lines();
    assert_eq!(rec.count("table full 127.0.0.1:4103"), 1, "{lines:?}");
    let echoed: Vec<bool> = (0..3).map(|i| world.received(clients[i]) == words[i]).collect();
    let refused: Vec<bool> = (0..3).map(|i| world.received(clients[i]).is_empty()).collect();
    assert_eq!(echoed.iter().filter(|&&e| e).count(), 2, "{echoed:?}");
    assert_eq!(refused.iter().filter(|&&r| r).count(), 1, "{refused:?}");
    // Everyone got the server's FIN: the refused at once, the others at
    // the shutdown.
    for &c in &clients {
        assert_eq!(world.state(&stack, c), tcp::State::CloseWait);
    }
}

/// Two table slots, a pool of five, `max_connections` 2, three clients
/// that stay open for a second: with `policy`, what the third one gets.
fn three_clients_on_two_slots(policy: WhenFull) -> (Vec<String>, Vec<Vec<u8>>) {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut rec = Rec::new(&world, Kind::Echo);
    rec.stop_at = Some(Duration::from_secs(20));
    let options = Options { max_connections: Some(2), when_full: policy, ..Options::default() };
    let mut srv = server::<2, 64, 5>(&stack, &rec, options, None);
    let words: [&[u8]; 3] = [b"first", b"second", b"third"];
    let clients: Vec<usize> = (0..3)
        .map(|i| {
            let mut c = Client::new(words[i]);
            // Each reads (and so closes) only after a second: all three
            // are connected at once.
            c.read_from = Duration::from_secs(1);
            world.connect(&stack, 41035 + i as u16, c)
        })
        .collect();
    srv.serve_forever(POLL).unwrap();
    world.settle(&stack);
    let received = clients.iter().map(|&c| world.received(c)).collect();
    (rec.lines(), received)
}

#[test]
fn at_max_connections_a_new_connection_waits_and_is_served_once_a_slot_frees() {
    let (lines, received) = three_clients_on_two_slots(WhenFull::Drop);
    assert_eq!(lines.iter().filter(|l| l.starts_with("table full")).count(), 0, "{lines:?}");
    assert_eq!(received, [b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]);
}

#[test]
fn with_the_refuse_policy_a_connection_past_max_connections_meets_the_table_full_hook() {
    let (lines, received) = three_clients_on_two_slots(WhenFull::Refuse);
    assert_eq!(lines.iter().filter(|l| l.starts_with("table full")).count(), 1, "{lines:?}");
    assert_eq!(received.iter().filter(|r| r.is_empty()).count(), 1, "{received:?}");
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let rec = Rec::new(&world, Kind::Echo);
    rec.stop_after_closed.set(Some(1));
    let idle = Some(Duration::from_secs(2));
    let mut srv = server::<2, 64, 3>(&stack, &rec, Options::default(), idle);
    let c = world.connect(&stack, 41040, Client::idle());
    srv.serve_forever(POLL).unwrap();
    let now = world.clock.now();
    assert_eq!(rec.count("error: idle for too long"), 1, "{:?}", rec.lines());
    // Swept every quarter of the timeout: closed within 1.25 timeouts.
    assert!(now >= Duration::from_secs(2) && now <= Duration::from_millis(2600), "{now:?}");
    world.settle(&stack);
    assert_eq!(world.state(&stack, c), tcp::State::CloseWait);
}

#[test]
fn a_reset_mid_request_is_reported_and_the_others_are_served() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let rec = Rec::new(&world, Kind::Echo);
    rec.stop_after_closed.set(Some(2));
    let mut srv = server::<4, 64, 4>(&stack, &rec, Options::default(), None);
    let mut resetting = Client::new(&payload(5000));
    resetting.abort_after = Some(3000);
    world.connect(&stack, 41050, resetting);
    let c = world.connect(&stack, 41051, Client::new(&payload(4000)));
    srv.serve_forever(POLL).unwrap();
    world.settle(&stack);
    let lines = rec.lines();
    assert_eq!(rec.count("error"), 1, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("ConnectionReset")), "{lines:?}");
    assert_eq!(world.received(c), payload(4000));
}

#[test]
fn a_handler_error_closes_only_its_connection() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let rec = Rec::new(&world, Kind::Fail);
    rec.stop_after_closed.set(Some(1));
    let mut srv = server::<2, 64, 3>(&stack, &rec, Options::default(), None);
    let mut client = Client::new(b"boom");
    client.close_when_sent = false;
    let c = world.connect(&stack, 41060, client);
    srv.serve_forever(POLL).unwrap();
    world.settle(&stack);
    assert_eq!(
        rec.count("error: handler failed in Received: \"test failure\""),
        1,
        "{:?}",
        rec.lines()
    );
    assert_eq!(world.state(&stack, c), tcp::State::CloseWait);
}

#[test]
fn shutdown_delivers_what_the_table_buffered() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut rec = Rec::new(&world, Kind::Echo);
    rec.stop_at = Some(Duration::from_secs(1));
    let mut srv = server::<2, 512, 3>(&stack, &rec, Options::default(), None);
    let data = payload(6000);
    let mut client = Client::new(&data);
    client.close_when_sent = false;
    client.rx_buffer = 1024;
    // Starts reading after the stop, within the 1 s shutdown grace.
    client.read_from = Duration::from_millis(1500);
    let c = world.connect(&stack, 41070, client);
    srv.serve_forever(POLL).unwrap();
    let stopped_at = world.clock.now();
    assert!(stopped_at < Duration::from_millis(2100), "{stopped_at:?}");
    assert_eq!(srv.table().len(), 0);
    // Nothing polls once serve_forever returned: linger sends the rest.
    assert!(stack.linger(Duration::from_secs(5)));
    world.settle(&stack);
    let written = rec.written.get();
    // The client had read nothing at the stop, and its window and the
    // server socket's send buffer hold 2 KiB: the rest was in the table.
    assert!(written > 2048, "written: {written}");
    assert_eq!(world.received(c), data[..written]);
    assert_eq!(world.state(&stack, c), tcp::State::CloseWait);
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
}

#[test]
fn a_connection_waiting_for_nothing_does_not_spin_the_loop() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let mut rec = Rec::new(&world, Kind::KeepAfterEof);
    rec.stop_at = Some(Duration::from_secs(10));
    let mut srv = server::<2, 64, 3>(&stack, &rec, Options::default(), None);
    // Sends and half-closes; the handler keeps the connection with nothing
    // to send: its socket (CLOSE-WAIT, EOF) waits for nothing.
    let c = world.connect(&stack, 41080, Client::new(b"x"));
    srv.serve_forever(POLL).unwrap();
    assert_eq!(world.received(c), b"x");
    assert_eq!(rec.count("peer closed"), 1);
    // 10 s at one turn per 500 ms poll interval, plus the traffic.
    assert!(rec.turns.get() < 60, "turns: {}", rec.turns.get());
    world.settle(&stack);
    assert!(closed_by_server(world.state(&stack, c)), "{}", world.state(&stack, c));
}

#[test]
fn closed_connections_give_their_sockets_back_to_the_pool() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let rec = Rec::new(&world, Kind::Echo);
    // Two sockets, one listening: six clients one after the other can only
    // be served if every closed socket listens again.
    let options = Options { backlog: 1, ..Options::default() };
    let mut srv = server::<2, 64, 2>(&stack, &rec, options, None);
    for i in 0..6 {
        let msg = format!("client {i}");
        let c = world.connect(&stack, 41090 + i, Client::new(msg.as_bytes()));
        rec.stop_after_closed.set(Some(i as usize + 1));
        srv.serve_forever(POLL).unwrap();
        world.settle(&stack);
        assert_eq!(world.received(c), msg.as_bytes(), "client {i}");
    }
    assert_eq!(rec.count("error"), 0, "{:?}", rec.lines());
}

#[test]
fn a_wake_up_from_the_wait_stops_the_server_at_once() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let rec = Rec::new(&world, Kind::Echo);
    let mut srv = server::<2, 64, 3>(&stack, &rec, Options::default(), None);
    let c = world.connect(&stack, 41100, Client::idle());
    // The stack's Wait asks for the stop at 3 s (TapWait does on SIGINT);
    // the poll interval alone would not end the wait before 60 s.
    world.wake_at.set(Some(Duration::from_secs(3)));
    srv.serve_forever(Duration::from_secs(60)).unwrap();
    let now = world.clock.now();
    assert!(now >= Duration::from_secs(3) && now < Duration::from_secs(4), "{now:?}");
    world.settle(&stack);
    assert_eq!(world.state(&stack, c), tcp::State::CloseWait);
}

#[test]
fn reading_into_an_empty_buffer_is_not_eof() {
    use sockserv::driver::{EventSource, NbConnection};
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<2>(), Options::default()).unwrap();
    let mut source = TcpEventSource::new(listener);
    let mut client = Client::new(b"data");
    client.close_when_sent = false;
    world.connect(&stack, 41110, client);
    world.settle(&stack);
    let (mut conn, _) = source.try_accept().unwrap().expect("a connection to accept");
    // Data waits and the peer is open: no room is "nothing yet", not EOF.
    assert_eq!(conn.try_read(&mut []).unwrap(), None);
    let mut buf = [0u8; 16];
    assert_eq!(conn.try_read(&mut buf).unwrap(), Some(4));
    assert_eq!(conn.try_read(&mut []).unwrap(), None);
}

#[test]
fn three_ready_connections_through_a_one_event_buffer_are_each_reported() {
    use sockserv::driver::{Event, EventSource, Interest};
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    let listener = stack.listen(PORT, pool::<4>(), Options::default()).unwrap();
    let mut source = TcpEventSource::new(listener);
    for i in 0..3 {
        let mut client = Client::new(b"ready");
        client.close_when_sent = false;
        world.connect(&stack, 41120 + i, client);
    }
    world.settle(&stack);
    let mut conns = Vec::new();
    while let Some((mut conn, _)) = source.try_accept().unwrap() {
        let token = conns.len();
        source.register(token, &mut conn, Interest { read: true, write: false }).unwrap();
        conns.push(conn);
    }
    assert_eq!(conns.len(), 3);
    // All three stay readable (nobody reads): each wait has room for one
    // event, and the scan must not report the same connection every time.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut events = [Event::Woken];
        let n = source.wait(Some(Duration::ZERO), &mut events).unwrap();
        assert_eq!(n, 1);
        match events[0] {
            Event::Conn { token, read: true } => seen.push(token),
            other => panic!("{other:?}"),
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2]);
}

#[test]
#[should_panic(expected = "the code under test spins")]
fn the_test_world_fails_a_loop_that_never_sleeps() {
    let world = World::new();
    let mut storage = Storage::new();
    let stack = world.stack(&mut storage);
    // Polling without ever waiting reads the clock but never moves it.
    loop {
        stack.poll();
    }
}

/// The smoltcp event mode's figure for issue 9 (documented in
/// `docs/DESIGN.md`): a connection's state in the table without buffers,
/// for a handler without state of its own.
#[test]
fn a_connections_state_without_buffers_is_at_most_256_bytes() {
    struct Stateless;
    impl EventHandler for Stateless {
        type Error = core::convert::Infallible;
        fn received(&mut self, i: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
            Ok(Step::consumed(out.write(i)))
        }
    }
    type Slot<'s, 'a> =
        sockserv::driver::Slot<sockserv_smoltcp::NbTcpConn<'s, 'a>, Stateless, IpEndpoint>;
    let size = std::mem::size_of::<Slot<'_, '_>>();
    println!("a smoltcp slot is {size} bytes");
    assert!(size <= 256, "a smoltcp slot is {size} bytes");
}
