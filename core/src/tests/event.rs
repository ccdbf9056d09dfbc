//! Event mode through the mock: partial reads and writes, back-pressure,
//! a full table, idle timeouts, resets, shutdown with data buffered.

use core::cell::{Cell, RefCell};
use core::time::Duration;
use std::format;
use std::string::String;
use std::vec::Vec;

use embedded_io::ErrorKind;

use crate::driver::Slot;
use crate::mock::{MockAddr, MockConn, MockEventSource, MockNet, MockStream};
use crate::{EventHandler, EventServer, EventServerConfig, FixedPool, Next, Outbox, Step};
use crate::{RequestError, Service, ShutdownFlag};

const SEC: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    /// Echo what fits.
    Echo,
    /// Answer each whole line with "ok\n"; "quit\n" closes; "bad\n" fails.
    Lines,
    /// Greet on open, then echo.
    Greeter,
    /// Echo; when the peer closes, stay open (count the calls).
    Lingering,
    /// Greet on open, then swallow all input without answering.
    Sink,
    /// On open, send [`LONG`] in steps through `drained`, then close.
    Producer,
}

/// What a [`Kind::Producer`] sends: far more than one buffer.
static LONG: [u8; 1500] = {
    let mut a = [0u8; 1500];
    let mut i = 0;
    while i < 1500 {
        a[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    a
};

/// Records hook calls; stops the loop when `stop_when` says so.
pub(super) struct Ev<'n, 's> {
    kind: Kind,
    pub(super) net: &'n MockNet<'s>,
    flag: &'n ShutdownFlag,
    log: RefCell<Vec<String>>,
    verify: Cell<bool>,
    pub(super) turns: Cell<usize>,
    peer_closed_calls: Cell<usize>,
    first_error_at: Cell<Option<Duration>>,
    stop_when: fn(&Ev<'n, 's>) -> bool,
}

impl<'n, 's> Ev<'n, 's> {
    pub(super) fn new(
        kind: Kind,
        net: &'n MockNet<'s>,
        flag: &'n ShutdownFlag,
        stop_when: fn(&Ev<'n, 's>) -> bool,
    ) -> Self {
        Self {
            kind,
            net,
            flag,
            log: RefCell::default(),
            verify: Cell::new(true),
            turns: Cell::new(0),
            peer_closed_calls: Cell::new(0),
            first_error_at: Cell::new(None),
            stop_when,
        }
    }

    pub(super) fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.log.borrow().iter().filter(|l| l.starts_with(prefix)).count()
    }
}

impl<'e, 'n, 's> Service<MockAddr> for &'e Ev<'n, 's> {
    type Handler = H<'e, 'n, 's>;
    fn handler(&self, client: &MockAddr) -> Self::Handler {
        H { ev: self, client: *client, produced: 0 }
    }

    fn verify_request(&self, request: &crate::Request<'_, MockAddr>) -> bool {
        let client = request.client();
        self.log.borrow_mut().push(format!("verify {client}"));
        self.verify.get()
    }
    fn handle_error(&self, client: &MockAddr, error: &RequestError<'_>) {
        self.log.borrow_mut().push(format!("error {client}: {error}"));
        if self.first_error_at.get().is_none() {
            self.first_error_at.set(Some(self.net.now()));
        }
    }
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        self.log.borrow_mut().push(format!("accept error {:?}", error.kind()));
    }
    fn handle_table_full(&self, client: &MockAddr) {
        self.log.borrow_mut().push(format!("table full {client}"));
    }
    fn handle_buffers_exhausted(&self, client: &MockAddr) {
        self.log.borrow_mut().push(format!("no buffer {client}"));
    }
    fn service_actions(&self) {
        self.turns.set(self.turns.get() + 1);
        if (self.stop_when)(self) || self.turns.get() > 10_000 {
            self.flag.request();
        }
    }
}

pub(super) struct H<'e, 'n, 's> {
    ev: &'e Ev<'n, 's>,
    client: MockAddr,
    /// How much of [`LONG`] a producer has sent.
    produced: usize,
}

impl H<'_, '_, '_> {
    /// Writes the next part of [`LONG`]; asks to be told when it has left.
    fn produce(&mut self, out: &mut Outbox<'_>) -> Next {
        self.produced += out.write(&LONG[self.produced..]);
        if self.produced < LONG.len() {
            out.notify_drained();
            Next::Continue
        } else {
            Next::Close
        }
    }
}

impl EventHandler for H<'_, '_, '_> {
    type Error = &'static str;

    fn opened(&mut self, out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        self.ev.log.borrow_mut().push(format!("opened {}", self.client));
        if matches!(self.ev.kind, Kind::Greeter | Kind::Sink) {
            out.write_all(b"hi\n").map_err(|_| "no room")?;
        }
        if self.ev.kind == Kind::Producer {
            return Ok(self.produce(out));
        }
        Ok(Next::Continue)
    }

    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        match self.ev.kind {
            Kind::Echo | Kind::Greeter | Kind::Lingering | Kind::Producer => {
                Ok(Step::consumed(out.write(input)))
            }
            Kind::Sink => Ok(Step::consumed(input.len())),
            Kind::Lines => {
                let Some(end) = input.iter().position(|&b| b == b'\n') else {
                    return Ok(Step::consumed(0));
                };
                match &input[..=end] {
                    b"quit\n" => Ok(Step::close(end + 1)),
                    b"bad\n" => Err("bad line"),
                    b"len\n" if out.room() >= 16 => {
                        core::fmt::Write::write_fmt(out, format_args!("{} bytes\n", input.len()))
                            .map_err(|_| "cut")?;
                        Ok(Step::consumed(end + 1))
                    }
                    _ if out.write_all(b"ok\n").is_ok() => Ok(Step::consumed(end + 1)),
                    _ => Ok(Step::consumed(0)),
                }
            }
        }
    }

    fn peer_closed(&mut self, _out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        self.ev.peer_closed_calls.set(self.ev.peer_closed_calls.get() + 1);
        Ok(if self.ev.kind == Kind::Lingering { Next::Continue } else { Next::Close })
    }

    fn drained(&mut self, out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        self.ev.log.borrow_mut().push(format!("drained {}", self.client));
        Ok(self.produce(out))
    }

    fn closed(&mut self) {
        self.ev.log.borrow_mut().push(format!("closed {}", self.client));
    }
}

/// A server of `N` slots sharing `P` buffers of `B` bytes.
pub(super) type Server<'e, 'n, 's, const N: usize, const B: usize, const P: usize> = EventServer<
    MockEventSource<'n, 's>,
    &'e Ev<'n, 's>,
    &'n MockNet<'s>,
    &'n ShutdownFlag,
    heapless::Vec<Slot<MockStream<'n, 's>, H<'e, 'n, 's>, MockAddr>, N>,
    FixedPool<B, P>,
>;

/// A server that refuses connections past its table (the tests written
/// for refusals); [`server_with`] for any configuration.
pub(super) fn server<'e, 'n, 's, const N: usize, const B: usize, const P: usize>(
    ev: &'e Ev<'n, 's>,
    idle: Option<Duration>,
) -> Server<'e, 'n, 's, N, B, P> {
    let config = EventServerConfig {
        idle_timeout: idle,
        when_full: crate::WhenFull::Refuse,
        ..Default::default()
    };
    server_with(ev, config)
}

pub(super) fn server_with<'e, 'n, 's, const N: usize, const B: usize, const P: usize>(
    ev: &'e Ev<'n, 's>,
    config: EventServerConfig,
) -> Server<'e, 'n, 's, N, B, P> {
    EventServer::new(
        ev.net.event_source(),
        ev,
        ev.net,
        ev.flag,
        heapless::Vec::new(),
        FixedPool::new(),
        config,
    )
}

pub(super) fn all_closed(ev: &Ev<'_, '_>) -> bool {
    let n = ev.net.conn_count();
    ev.net.pending() == 0 && n > 0 && (0..n).all(|i| ev.net.conn(i).unwrap().closes() == 1)
}

#[test]
fn echo_one_byte_at_a_time_then_shutdown_write() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"hello world\n").one_byte_at_a_time());
    let ev = Ev::new(Kind::Echo, &net, &flag, all_closed);
    server::<4, 64, 8>(&ev, None).serve_forever(POLL).unwrap();
    let c = net.conn(0).unwrap();
    assert_eq!(c.output(), b"hello world\n");
    assert_eq!(
        (c.shutdown_writes(), c.closes()),
        (1, 1),
        "half-closed after the peer's EOF, then closed"
    );
    assert_eq!(ev.log(), ["verify 1", "opened 1", "closed 1"]);
}

#[test]
fn partial_writes_complete_as_the_peer_reads() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"0123456789abcdef").write_window(3));
    for i in 1..=5 {
        net.open_window_at(i * SEC, 0, 3);
    }
    let ev = Ev::new(Kind::Echo, &net, &flag, all_closed);
    server::<4, 64, 8>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(net.conn(0).unwrap().output(), b"0123456789abcdef");
    assert!(net.now() >= 5 * SEC, "it waited for the peer");
}

#[test]
fn a_full_send_buffer_stops_reading_until_it_drains() {
    static INPUT: [u8; 200] = [b'x'; 200];
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    // The peer sends 200 bytes and reads none of the echo.
    net.connect(MockConn::new(1, &INPUT).write_window(0));
    net.request_stop_at(9 * SEC, &flag);
    let ev = Ev::new(Kind::Echo, &net, &flag, |_| false);
    server::<2, 16, 4>(&ev, None).serve_forever(POLL).unwrap();
    let c = net.conn(0).unwrap();
    assert!(c.bytes_read() <= 32, "read {} bytes with 16 + 16 bytes of buffers", c.bytes_read());
    assert!(c.bytes_read() >= 16, "it did read until the buffers filled");
    assert_eq!(c.closes(), 1, "shutdown closed it after the grace period");
}

#[test]
fn back_pressure_then_everything_flows_once_the_peer_reads() {
    static INPUT: [u8; 200] = [b'y'; 200];
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, &INPUT).write_window(0));
    net.open_window_at(10 * SEC, 0, 1_000);
    let ev = Ev::new(Kind::Echo, &net, &flag, all_closed);
    server::<2, 16, 4>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(net.conn(0).unwrap().output(), &INPUT[..]);
}

#[test]
fn at_a_full_table_a_new_connection_waits_and_is_served_once_one_closes() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"one"));
    net.connect(MockConn::new(2, b"two").hold_open());
    net.connect(MockConn::new(3, b"three"));
    net.request_stop_at(5 * SEC, &flag);
    let ev = Ev::new(Kind::Echo, &net, &flag, |_| false);
    server_with::<2, 64, 4>(&ev, EventServerConfig::default()).serve_forever(POLL).unwrap();
    assert_eq!(ev.count("table full"), 0, "nobody refused: {:?}", ev.log());
    assert_eq!(net.conn(0).unwrap().output(), b"one");
    assert_eq!(net.conn(2).unwrap().output(), b"three", "the third waited, then was served");
}

#[test]
fn a_full_table_refuses_new_connections_and_keeps_serving() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"one").hold_open());
    net.connect(MockConn::new(2, b"two").hold_open());
    net.connect(MockConn::new(3, b"three"));
    net.request_stop_at(5 * SEC, &flag);
    let ev = Ev::new(Kind::Echo, &net, &flag, |_| false);
    server::<2, 64, 4>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(ev.count("table full 3"), 1);
    let refused = net.conn(2).unwrap();
    assert_eq!((refused.bytes_read(), refused.closes()), (0, 1), "closed at once, unread");
    assert_eq!(net.conn(0).unwrap().output(), b"one");
    assert_eq!(net.conn(1).unwrap().output(), b"two");
}

#[test]
fn an_idle_connection_is_closed_and_reported() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"").hold_open());
    net.request_stop_at(20 * SEC, &flag);
    let ev = Ev::new(Kind::Echo, &net, &flag, |_| false);
    server::<2, 64, 4>(&ev, Some(4 * SEC)).serve_forever(SEC).unwrap();
    assert_eq!(ev.count("error 1: idle for too long; closed"), 1);
    assert_eq!(net.conn(0).unwrap().closes(), 1);
    assert_eq!(ev.count("closed 1"), 1, "the handler was told");
    let at = ev.first_error_at.get().unwrap();
    assert!(at >= 4 * SEC && at <= 5 * SEC, "closed {at:?} after opening: within 1.25 timeouts");
}

#[test]
fn an_idle_connection_is_closed_across_the_wrap_of_the_millisecond_clock() {
    // The table keeps times as wrapping 32-bit milliseconds: start 2 s
    // before they wrap (at 2^32 ms, 49.7 days).
    let start = Duration::from_millis(u64::from(u32::MAX)) - 2 * SEC;
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.advance(start);
    net.connect(MockConn::new(1, b"").hold_open());
    net.request_stop_at(start + 20 * SEC, &flag);
    let ev = Ev::new(Kind::Echo, &net, &flag, |_| false);
    server::<2, 64, 4>(&ev, Some(4 * SEC)).serve_forever(SEC).unwrap();
    assert_eq!(ev.count("error 1: idle for too long; closed"), 1);
    let at = ev.first_error_at.get().unwrap() - start;
    assert!(at >= 4 * SEC && at <= 5 * SEC, "closed {at:?} after opening: within 1.25 timeouts");
}

#[test]
fn the_first_connection_after_a_long_quiet_time_is_swept_on_time() {
    // Nobody for 30 days, and a poll interval longer than that: the loop
    // does not turn meanwhile. The connection that then comes is still
    // closed after its idle timeout, not weeks later.
    let arrival = 30 * 24 * 3600 * SEC;
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect_at(arrival, MockConn::new(1, b"").hold_open());
    net.request_stop_at(arrival + 20 * SEC, &flag);
    let ev = Ev::new(Kind::Echo, &net, &flag, |_| false);
    server::<2, 64, 4>(&ev, Some(4 * SEC)).serve_forever(2 * arrival).unwrap();
    assert_eq!(ev.count("error 1: idle for too long; closed"), 1, "{:?}", ev.log());
    let at = ev.first_error_at.get().unwrap() - arrival;
    assert!(at >= 4 * SEC && at <= 5 * SEC, "closed {at:?} after opening: within 1.25 timeouts");
}

#[test]
fn an_idle_timeout_does_not_close_a_busy_connection() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    // Trickles one byte per second for 8 s: never idle 4 s.
    net.connect(MockConn::new(1, b"abcdefgh").one_byte_at_a_time().read_delay(SEC).hold_open());
    net.request_stop_at(30 * SEC, &flag);
    let ev = Ev::new(Kind::Echo, &net, &flag, |_| false);
    server::<2, 64, 4>(&ev, Some(4 * SEC)).serve_forever(SEC).unwrap();
    assert_eq!(net.conn(0).unwrap().output(), b"abcdefgh");
    let errors = ev.count("error");
    assert_eq!(errors, 1, "closed once, after it went quiet: {:?}", ev.log());
}

#[test]
fn a_reset_mid_buffer_closes_that_connection_only() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"0123456789").reset_after(4).one_byte_at_a_time());
    net.connect(MockConn::new(2, b"fine"));
    let ev = Ev::new(Kind::Echo, &net, &flag, all_closed);
    server::<4, 64, 8>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(ev.count("error 1: connection failed: ConnectionReset"), 1);
    assert_eq!(net.conn(0).unwrap().shutdown_writes(), 0, "a broken connection is not half-closed");
    assert_eq!(net.conn(1).unwrap().output(), b"fine");
}

#[test]
fn shutdown_sends_what_is_buffered_within_the_grace_period() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"0123456789").write_window(4).hold_open());
    net.request_stop_at(SEC, &flag);
    // The peer reads the rest during the shutdown's grace period.
    net.open_window_at(Duration::from_millis(1500), 0, 100);
    let ev = Ev::new(Kind::Echo, &net, &flag, |_| false);
    server::<2, 64, 4>(&ev, None).serve_forever(POLL).unwrap();
    let c = net.conn(0).unwrap();
    assert_eq!(c.output(), b"0123456789", "buffered bytes were sent before closing");
    assert_eq!((c.shutdown_writes(), c.closes()), (1, 1));
}

#[test]
fn shutdown_gives_up_on_a_peer_that_never_reads() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"0123456789").write_window(4).hold_open());
    net.request_stop_at(SEC, &flag);
    let ev = Ev::new(Kind::Echo, &net, &flag, |_| false);
    server::<2, 64, 4>(&ev, None).serve_forever(POLL).unwrap();
    let c = net.conn(0).unwrap();
    assert_eq!(c.output(), b"0123");
    assert_eq!(c.closes(), 1, "closed when the grace period ended");
    assert!(net.now() >= 2 * SEC && net.now() < 3 * SEC, "{:?}", net.now());
}

#[test]
fn a_refused_connection_gets_no_handler() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(7, b"x"));
    let ev = Ev::new(Kind::Echo, &net, &flag, all_closed);
    ev.verify.set(false);
    server::<2, 64, 4>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(ev.log(), ["verify 7"]);
    let c = net.conn(0).unwrap();
    assert_eq!((c.bytes_read(), c.shutdown_writes(), c.closes()), (0, 1, 1));
}

#[test]
fn lines_a_handler_error_and_a_close_request() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"a\nb\nquit\nignored\n").hold_open());
    net.connect(MockConn::new(2, b"x\nbad\ny\n").hold_open());
    let ev = Ev::new(Kind::Lines, &net, &flag, all_closed);
    server::<4, 64, 8>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(net.conn(0).unwrap().output(), b"ok\nok\n", "quit closed after the answers");
    assert_eq!(net.conn(0).unwrap().shutdown_writes(), 1);
    assert_eq!(net.conn(1).unwrap().output(), b"ok\n");
    assert_eq!(ev.count("error 2: handler failed in Received: \"bad line\""), 1);
}

#[test]
fn a_line_longer_than_the_receive_buffer_stalls_and_is_closed() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"this line has no end in sight").hold_open());
    net.connect(MockConn::new(2, b"ok?\n"));
    let ev = Ev::new(Kind::Lines, &net, &flag, all_closed);
    server::<4, 8, 8>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(
        ev.count(
            "error 1: the 8-byte receive buffer is full and the handler took none of it; closed"
        ),
        1
    );
    assert_eq!(net.conn(1).unwrap().output(), b"ok\n");
}

#[test]
fn accept_errors_pause_accepting_but_not_serving() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"first").hold_open());
    for _ in 0..3 {
        net.fail(ErrorKind::OutOfMemory);
    }
    net.connect(MockConn::new(2, b"second"));
    let ev = Ev::new(Kind::Echo, &net, &flag, |ev| ev.net.conn(1).is_some_and(|c| c.closes() == 1));
    server::<4, 64, 8>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(ev.count("accept error OutOfMemory"), 3);
    assert_eq!(net.conn(0).unwrap().output(), b"first");
    assert_eq!(net.conn(1).unwrap().output(), b"second", "accepting resumed");
    assert!(net.now() >= 3 * crate::DEFAULT_ACCEPT_BACKOFF, "it backed off: {:?}", net.now());
}

#[test]
fn opened_can_greet_and_serve_again_after_shutdown() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"x"));
    let ev = Ev::new(Kind::Greeter, &net, &flag, all_closed);
    let mut srv = server::<2, 64, 4>(&ev, None);
    srv.serve_forever(POLL).unwrap();
    assert_eq!(net.conn(0).unwrap().output(), b"hi\nx");
    net.connect(MockConn::new(2, b"y"));
    srv.serve_forever(POLL).unwrap();
    assert_eq!(net.conn(1).unwrap().output(), b"hi\ny");
    assert!(srv.table().is_empty());
}

#[test]
fn peer_closed_is_told_once_and_a_lingering_connection_waits_for_the_idle_timeout() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    // The echo waits for the peer to read, so the connection is serviced
    // again after the peer's EOF was seen.
    net.connect(MockConn::new(1, b"bye").write_window(0));
    net.open_window_at(2 * SEC, 0, 100);
    net.request_stop_at(30 * SEC, &flag);
    let ev = Ev::new(Kind::Lingering, &net, &flag, |_| false);
    server::<2, 64, 4>(&ev, Some(4 * SEC)).serve_forever(SEC).unwrap();
    assert_eq!(ev.peer_closed_calls.get(), 1);
    assert_eq!(net.conn(0).unwrap().output(), b"bye");
    assert_eq!(ev.count("error 1: idle for too long; closed"), 1, "{:?}", ev.log());
}

#[test]
fn pipelined_lines_to_a_slow_reader_get_every_answer() {
    // 200 lines arrive at once; the peer reads 4 bytes a second at first.
    static INPUT: [u8; 400] = {
        let mut a = [b'a'; 400];
        let mut i = 1;
        while i < 400 {
            a[i] = b'\n';
            i += 2;
        }
        a
    };
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, &INPUT).write_window(4));
    for i in 1..=20u32 {
        net.open_window_at(i * SEC, 0, 4);
    }
    net.open_window_at(30 * SEC, 0, 1_000);
    let ev = Ev::new(Kind::Lines, &net, &flag, all_closed);
    server::<2, 64, 4>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(ev.count("error"), 0, "{:?}", ev.log());
    let out = net.conn(0).unwrap();
    assert_eq!(out.output().len(), 600, "200 answers");
    assert!(out.output().chunks(3).all(|c| c == b"ok\n"));
}

#[test]
fn a_buffer_compacts_so_all_its_room_is_usable() {
    use crate::driver::BufferPool;
    use crate::event::pool::Held;
    let mut pool = FixedPool::<8, 2>::new();
    let mut b = Held::none();
    assert!(b.ensure(&mut pool));
    assert_eq!(pool.free(), 1, "one buffer is lent");
    b.free_mut(&mut pool)[..6].copy_from_slice(b"abcdef");
    b.fill(6);
    b.consume(4, &mut pool);
    assert_eq!((b.data(&pool), b.room(&pool)), (&b"ef"[..], 6));
    assert_eq!(
        b.free_mut(&mut pool).len(),
        6,
        "the free part is all the room, not the 2-byte tail"
    );
    assert_eq!(b.data(&pool), b"ef");
    b.consume(2, &mut pool);
    assert!(b.is_empty());
    assert_eq!(pool.free(), 2, "an empty buffer goes back to the pool at once");
    assert_eq!(b.room(&pool), 0, "and is no longer held");
}

#[test]
fn the_shutdown_drain_stops_reading_and_does_not_spin() {
    // At the stop the connection still reads (its greeting waits in the
    // send buffer; the peer reads nothing) and its peer keeps sending;
    // during the grace period it must wait to write only.
    static INPUT: [u8; 2000] = [b'z'; 2000];
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, &INPUT).write_window(0).one_byte_at_a_time().hold_open());
    net.request_stop_at(Duration::from_millis(5), &flag);
    let ev = Ev::new(Kind::Sink, &net, &flag, |_| false);
    server::<2, 64, 4>(&ev, None).serve_forever(POLL).unwrap();
    let waits = net.stats().waits;
    assert!(waits < 100, "{waits} waits: the drain spun on a readable socket it would not read");
    assert_eq!(net.conn(0).unwrap().closes(), 1);
}

/// Bytes `i` of a connection's input: distinct per connection.
fn pattern<const N: usize>(seed: u8) -> [u8; N] {
    core::array::from_fn(|i| seed.wrapping_add(i as u8))
}

#[test]
fn sixteen_connections_share_four_buffers_and_every_byte_arrives() {
    // 16 connections of 100 bytes each through 4 buffers of 16 bytes; the
    // peers read 5 bytes, then nothing until their turn comes, so answers
    // queue and hold buffers while others wait.
    static INPUTS: std::sync::OnceLock<[[u8; 100]; 16]> = std::sync::OnceLock::new();
    let inputs = INPUTS.get_or_init(|| core::array::from_fn(|i| pattern(i as u8 * 16)));
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    for (i, input) in inputs.iter().enumerate() {
        net.connect(MockConn::new(i as u32, input).write_window(5));
        net.open_window_at(SEC + i as u32 * Duration::from_millis(100), i, 1_000);
    }
    let ev = Ev::new(Kind::Echo, &net, &flag, all_closed);
    let mut srv = server::<16, 16, 4>(&ev, None);
    srv.serve_forever(POLL).unwrap();
    for (i, input) in inputs.iter().enumerate() {
        assert_eq!(net.conn(i).unwrap().output(), &input[..], "connection {i}");
    }
    assert!(ev.count("no buffer") > 0, "with 4 buffers for 16 some waited: {:?}", ev.log());
    assert_eq!(ev.count("error"), 0, "{:?}", ev.log());
    let stats = srv.table().stats();
    assert_eq!(stats.buffer_waits as usize, ev.count("no buffer"));
    assert_eq!(stats.starved, 0, "nobody is left waiting");
    assert_eq!(srv.table().pool().lent(), 0, "every buffer went back to the pool");
    let waits = net.stats().waits;
    assert!(waits < 2_000, "{waits} waits: the waiting connections spun");
}

#[test]
fn two_buffers_for_four_connections_serve_them_all_without_spinning() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    let inputs: [&[u8]; 4] = [b"first line\n", b"second\n", b"third one\n", b"4th\n"];
    for (i, input) in inputs.iter().enumerate() {
        // Each peer reads nothing for a while: its answer holds the buffer.
        net.connect(MockConn::new(i as u32, input).write_window(0));
        net.open_window_at(SEC * (i as u32 + 1), i, 100);
    }
    let ev = Ev::new(Kind::Lines, &net, &flag, all_closed);
    let mut srv = server::<4, 16, 2>(&ev, None);
    srv.serve_forever(POLL).unwrap();
    for i in 0..4 {
        assert_eq!(net.conn(i).unwrap().output(), b"ok\n", "connection {i}");
    }
    assert!(ev.count("no buffer") >= 3, "{:?}", ev.log());
    assert_eq!(srv.table().pool().lent(), 0);
    assert!(net.stats().waits < 200, "{} waits", net.stats().waits);
}

#[test]
fn connections_holding_half_lines_cannot_take_the_whole_pool() {
    // Four peers each send half a line and wait; then the rest arrives.
    // If each could take a buffer for its half line, the four buffers
    // would all hold input and none could answer (nor could anyone else
    // read): a deadlock. The claims rule keeps a buffer for each answer.
    static HALVES: [&[u8]; 4] = [b"aaaa", b"bbbb", b"cccc", b"dddd"];
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    for (i, half) in HALVES.iter().enumerate() {
        net.connect(MockConn::new(i as u32, half).write_window(0).hold_open());
    }
    let ev = Ev::new(Kind::Lines, &net, &flag, |ev| ev.turns.get() > 50);
    let mut srv = server::<4, 16, 4>(&ev, None);
    srv.serve_forever(POLL).unwrap();
    // At most (4 - 1) / 2 + ... : with 4 buffers, two half lines are held
    // (each keeps one free for its answer); the others wait, unread.
    let held = srv.table().pool().lent();
    assert!(held <= 2, "{held} buffers hold half lines; answers would find none");
    assert!(ev.count("no buffer") >= 2, "{:?}", ev.log());
}

#[test]
fn a_connection_that_consumed_everything_holds_no_buffer() {
    // After the echo, the peer keeps its connection open and idle: the
    // table must hold no buffer for it.
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"hello").hold_open());
    net.connect(MockConn::new(2, b"world").hold_open());
    let ev = Ev::new(Kind::Echo, &net, &flag, |ev| ev.turns.get() > 20);
    // Two buffers for two connections: a reader needs two free (one for
    // its input, one kept for its answer), so the second is served only
    // because the first gave its buffers back once its input was consumed.
    let mut srv = server::<2, 64, 2>(&ev, None);
    srv.serve_forever(POLL).unwrap();
    assert_eq!(net.conn(0).unwrap().output(), b"hello");
    assert_eq!(net.conn(1).unwrap().output(), b"world");
    assert_eq!(ev.count("no buffer"), 0, "{:?}", ev.log());
}

#[test]
fn a_long_answer_goes_out_in_steps_through_drained() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"").write_window(100).hold_open());
    for t in 1..=20u32 {
        net.open_window_at(t * Duration::from_millis(100), 0, 100);
    }
    let ev = Ev::new(Kind::Producer, &net, &flag, all_closed);
    // 1,500 bytes through one 64-byte buffer (the answer needs no more;
    // a pool has at least two).
    let mut srv = server::<1, 64, 2>(&ev, None);
    srv.serve_forever(POLL).unwrap();
    let c = net.conn(0).unwrap();
    assert_eq!(c.output(), &LONG[..]);
    assert_eq!(c.shutdown_writes(), 1, "closed once everything was sent");
    assert!(ev.count("drained") >= 14, "{} calls", ev.count("drained"));
    assert!(net.stats().waits < 200, "{} waits", net.stats().waits);
    assert_eq!(srv.table().pool().lent(), 0);
}

#[test]
fn an_outbox_takes_formatted_answers() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"len\nmore after\n"));
    let ev = Ev::new(Kind::Lines, &net, &flag, all_closed);
    server::<1, 64, 2>(&ev, None).serve_forever(POLL).unwrap();
    assert_eq!(net.conn(0).unwrap().output(), b"15 bytes\nok\n");
}

/// The echo of [`a_server_runs_on_a_pool_and_slots_in_statics`].
struct StaticEcho;

impl EventHandler for StaticEcho {
    type Error = core::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        Ok(Step::consumed(out.write(input)))
    }
}

type StaticSlot = Slot<MockStream<'static, 'static>, StaticEcho, MockAddr>;

/// A firmware's placement: the pool and the slots are statics built by
/// `const fn`s at compile time (a `Mutex` and a thread-local stand for
/// `static_cell` here: mock connections are not `Send`), and the server
/// borrows them.
static POOL: std::sync::Mutex<FixedPool<16, 2>> = std::sync::Mutex::new(FixedPool::new());
std::thread_local! {
    static SLOTS: RefCell<crate::FixedSlots<StaticSlot, 2>> =
        const { RefCell::new(crate::FixedSlots::new()) };
}
/// A `const` pool too (each use a fresh one).
const FRESH: FixedPool<8, 3> = FixedPool::new();

#[test]
fn a_server_runs_on_a_pool_and_slots_in_statics() {
    use crate::driver::BufferPool;
    let net: &'static MockNet<'static> = std::boxed::Box::leak(std::boxed::Box::default());
    static FLAG: ShutdownFlag = ShutdownFlag::new();
    net.connect(MockConn::new(1, b"hello from a static pool, longer than one buffer\n"));
    net.connect(MockConn::new(2, b"second\n"));
    net.request_stop_at(10 * SEC, &FLAG);
    let mut pool = POOL.lock().unwrap();
    SLOTS.with_borrow_mut(|slots| serve_from_statics(net, &FLAG, slots, &mut pool));
    assert_eq!(
        net.conn(0).unwrap().output(),
        b"hello from a static pool, longer than one buffer\n"
    );
    assert_eq!(net.conn(1).unwrap().output(), b"second\n");
    assert_eq!(pool.lent(), 0, "every buffer back in the static pool");
    SLOTS.with_borrow(|slots| assert_eq!(slots.len(), 2, "both slots made in the static storage"));

    let mut fresh = FRESH;
    let ids: Vec<_> = core::iter::from_fn(|| fresh.take()).collect();
    assert_eq!(ids, [0, 1, 2], "a new pool lends low ids first, each once");
    fresh.give(1);
    fresh.give(0);
    assert_eq!((fresh.take(), fresh.take(), fresh.take()), (Some(0), Some(1), None));
}

fn serve_from_statics(
    net: &'static MockNet<'static>,
    flag: &'static ShutdownFlag,
    slots: &mut crate::FixedSlots<StaticSlot, 2>,
    pool: &mut FixedPool<16, 2>,
) {
    use crate::driver::BufferPool;
    assert_eq!((pool.free(), pool.lent(), pool.buffer_size()), (2, 0, 16), "a new pool is free");
    let mut server = EventServer::new(
        net.event_source(),
        crate::service_fn(|_: &MockAddr| StaticEcho),
        net,
        flag,
        slots,
        pool,
        EventServerConfig::default(),
    );
    server.serve_forever(POLL).unwrap();
    assert_eq!(server.table().capacity(), 2);
}

/// The mock on a device: capacities small enough for a microcontroller's
/// RAM (4 connections, 64 bytes captured each, 1 datagram, 8 events),
/// serving the event mode; going past them fails as documented.
#[test]
fn a_mock_with_small_capacities_serves_and_refuses_past_them() {
    type Small<'s> = MockNet<'s, 4, 64, 1, 8>;
    let small = core::mem::size_of::<Small<'_>>();
    let host = core::mem::size_of::<MockNet<'_>>();
    assert!(small < 4 * 1024, "a small mock is {small} bytes");
    assert!(host > 100 * 1024, "the host default keeps room for long tests ({host} bytes)");
    std::println!("mock: {small} bytes with 4/64/1/8, {host} bytes with the defaults");

    let flag = ShutdownFlag::new();
    let net = Small::with_capacities();
    for i in 0..5 {
        net.connect(MockConn::new(i, b"ping\n"));
    }
    net.request_stop_at(10 * SEC, &flag);
    // 8 events: a ninth cannot be scripted.
    for _ in 0..2 {
        net.spurious_ready_at(20 * SEC);
    }
    assert_eq!(net.pending(), 8);
    let over = std::panic::catch_unwind(|| {
        let net = Small::with_capacities();
        for _ in 0..9 {
            net.spurious_ready_at(SEC);
        }
    });
    assert!(over.is_err(), "a ninth event overflows the script");
    let mut server = EventServer::new(
        net.event_source(),
        crate::service_fn(|_: &MockAddr| StaticEcho),
        &net,
        &flag,
        crate::FixedSlots::<_, 4>::new(),
        FixedPool::<32, 2>::new(),
        EventServerConfig { when_full: crate::WhenFull::Refuse, ..EventServerConfig::default() },
    );
    server.serve_forever(POLL).unwrap();
    drop(server);
    assert_eq!(net.conn_count(), 4, "a fifth connection does not fit the net");
    assert_eq!(net.stats().accept_errors, 1, "and its accept failed (OutOfMemory)");
    for i in 0..4 {
        assert_eq!(net.conn(i).unwrap().output(), b"ping\n");
    }
}

/// A connection's output past the net's capture fails the write.
#[test]
fn a_small_mock_capture_fails_the_write_past_it() {
    use embedded_io::Write as _;
    let net = MockNet::<'_, 1, 4, 1, 2>::with_capacities();
    net.connect(MockConn::new(1, b""));
    let (mut stream, _) =
        crate::driver::StreamListener::try_accept(&mut net.listener::<MockAddr>())
            .unwrap()
            .unwrap();
    assert_eq!(stream.write(b"1234"), Ok(4));
    assert_eq!(stream.write(b"5"), Err(crate::mock::MockError(ErrorKind::OutOfMemory)));
    drop(stream);
    assert_eq!(net.conn(0).unwrap().output(), b"1234");
}

#[test]
fn a_formatted_answer_leaves_in_one_write() {
    // `write!(out, "{} bytes\n", n)` is two pieces; they used to leave as
    // two sends (three for ":{n}\r\n"), now as one after the call.
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"len\nlen\n"));
    let ev = Ev::new(Kind::Lines, &net, &flag, all_closed);
    server::<4, 64, 8>(&ev, None).serve_forever(POLL).unwrap();
    let c = net.conn(0).unwrap();
    assert_eq!(c.output(), b"8 bytes\n4 bytes\n");
    assert_eq!(c.writes(), 2, "one write per answer");
}

/// A handler with an idle timeout of its own (as TLS has while its
/// handshake runs).
struct OwnTimeout(Duration);

impl EventHandler for OwnTimeout {
    type Error = core::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        Ok(Step::consumed(out.write(input)))
    }
    fn idle_timeout(&self) -> Option<Duration> {
        Some(self.0)
    }
}

/// When each connection was reported idle.
struct OwnTimeoutSvc<'n, 's> {
    net: &'n MockNet<'s>,
    idle_at: RefCell<Vec<Duration>>,
}

impl Service<MockAddr> for &OwnTimeoutSvc<'_, '_> {
    type Handler = OwnTimeout;
    fn handler(&self, _: &MockAddr) -> OwnTimeout {
        OwnTimeout(2 * SEC)
    }
    fn handle_error(&self, _: &MockAddr, error: &RequestError<'_>) {
        if matches!(error, RequestError::IdleTimeout) {
            self.idle_at.borrow_mut().push(crate::transport::Clock::now(&self.net));
        }
    }
}

#[test]
fn a_handlers_own_idle_timeout_closes_before_the_tables() {
    for table in [None, Some(60 * SEC)] {
        let flag = ShutdownFlag::new();
        let net = MockNet::new();
        net.connect(MockConn::new(1, b"").hold_open());
        net.request_stop_at(20 * SEC, &flag);
        let svc = OwnTimeoutSvc { net: &net, idle_at: RefCell::new(Vec::new()) };
        let config = EventServerConfig { idle_timeout: table, ..Default::default() };
        let mut server = EventServer::new(
            net.event_source(),
            &svc,
            &net,
            &flag,
            heapless::Vec::<Slot<MockStream<'_, '_>, OwnTimeout, MockAddr>, 2>::new(),
            FixedPool::<64, 4>::new(),
            config,
        );
        server.serve_forever(SEC).unwrap();
        let at = svc.idle_at.borrow().clone();
        assert_eq!(at.len(), 1, "table timeout {table:?}: {at:?}");
        // Due at 2 s; the sweep is brought forward to it (within 1.25 x).
        assert!(at[0] >= 2 * SEC && at[0] <= 2 * SEC + SEC / 2, "{table:?}: closed at {:?}", at[0]);
        assert_eq!(net.conn(0).unwrap().closes(), 1);
    }
}
