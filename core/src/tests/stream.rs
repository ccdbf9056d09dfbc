//! The stream server's states and hooks, one test each.

use core::time::Duration;
use std::vec;

use super::{Behaviour, Recorder};
use crate::driver::Stream;
use crate::mock::{MockConn, MockListener, MockNet};
use crate::{Inline, Server, ShutdownFlag};

pub(crate) type MockServer<'a, 's, 'f> = Server<
    Stream<MockListener<'a, 's>>,
    &'a Recorder<'f>,
    &'a MockNet<'s>,
    &'a ShutdownFlag,
    Inline,
>;

pub(crate) fn server<'a, 's, 'f>(
    net: &'a MockNet<'s>,
    rec: &'a Recorder<'f>,
    flag: &'a ShutdownFlag,
) -> MockServer<'a, 's, 'f> {
    Server::new(Stream(net.listener()), rec, net, flag, Inline::new())
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn handle_request_runs_setup_handle_finish_then_shuts_down() {
    let net = MockNet::new();
    net.connect(MockConn::new(7, b"hello world\n"));
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();

    assert_eq!(rec.log(), vec!["verify 7", "setup 7", "handle 7", "finish 7"]);
    let conn = net.conn(0).unwrap();
    assert_eq!(conn.output(), b"hello world\n");
    assert_eq!(conn.shutdown_writes(), 1, "shutdown_request half-closes once");
    assert_eq!(conn.closes(), 1, "and closes once");
}

#[test]
fn finish_runs_even_when_handle_fails() {
    let net = MockNet::new();
    net.connect(MockConn::new(1, b""));
    let rec = Recorder::new(Behaviour::Fail);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(
        rec.log(),
        vec![
            "verify 1",
            "setup 1",
            "handle 1",
            "finish 1",
            "error 1: handler failed in Handle: Refused"
        ]
    );
    assert_eq!(net.conn(0).unwrap().closes(), 1);
}

#[test]
fn handle_request_without_timeout_waits_for_a_late_connection() {
    let net = MockNet::new();
    net.connect_at(5 * SEC, MockConn::new(3, b"x"));
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(net.now(), 5 * SEC);
    assert_eq!(rec.count("timeout"), 0);
    assert_eq!(net.conn(0).unwrap().output(), b"x");
}

#[test]
fn handle_request_serves_a_connection_arriving_before_the_deadline() {
    let net = MockNet::new();
    net.connect_at(2 * SEC, MockConn::new(3, b"x"));
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let mut srv = server(&net, &rec, &flag);
    srv.set_timeout(Some(3 * SEC));
    srv.handle_request().unwrap();
    assert_eq!(rec.count("timeout"), 0);
    assert_eq!(net.conn_count(), 1);
    assert_eq!(net.now(), 2 * SEC);
}

#[test]
fn handle_request_times_out_at_the_deadline_not_before() {
    let net = MockNet::new();
    net.connect_at(10 * SEC, MockConn::new(3, b"x"));
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let mut srv = server(&net, &rec, &flag);
    srv.set_timeout(Some(3 * SEC));
    srv.handle_request().unwrap();
    assert_eq!(rec.log(), vec!["timeout"]);
    assert_eq!(net.now(), 3 * SEC);
    assert_eq!(net.conn_count(), 0, "the late connection is still pending");
    assert_eq!(net.pending(), 1);
}

#[test]
fn serve_forever_runs_service_actions_once_per_turn() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(3, &flag);
    for (i, at) in [0u32, 2, 4].into_iter().enumerate() {
        net.connect_at(Duration::from_secs(at.into()), MockConn::new(i as u32, b"ab"));
    }
    server(&net, &rec, &flag).serve_forever(SEC).unwrap();

    let stats = net.stats();
    assert_eq!(rec.count("handle"), 3);
    // A turn either waits or, right after taking a request, tries again at
    // once: two such tries followed the first two requests (the third one's
    // turn asked to stop).
    assert_eq!(rec.count("service_actions") as u32, stats.waits + 2, "one per turn");
    // Connections at 0 s, 2 s and 4 s with a 1 s poll interval: the loop
    // turned on its own while idle, not only when requests came.
    assert!(stats.waits >= 5, "waits = {}", stats.waits);
    assert!(!flag.is_running());
    assert!(!crate::ShutdownSignal::is_requested(&flag), "the request is cleared on return");
}

#[test]
fn no_request_is_accepted_once_shutdown_was_asked() {
    // bpo-35017: the flag is checked again after the wait, before accepting.
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(1, &flag);
    net.connect(MockConn::new(1, b"a"));
    net.connect(MockConn::new(2, b"b"));
    server(&net, &rec, &flag).serve_forever(SEC).unwrap();
    assert_eq!(net.conn_count(), 1, "the second connection was not accepted");
    assert_eq!(net.pending(), 1);
}

#[test]
fn a_handler_can_stop_the_loop_without_deadlock() {
    // gh-83978: calling shutdown from a handler deadlocks CPython. Here a
    // handler (or hook) only asks; the loop stops after its turn.
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(0, &flag);
    server(&net, &rec, &flag).serve_forever(SEC).unwrap();
    assert_eq!(rec.log(), vec!["service_actions"]);
}

#[test]
fn a_failing_setup_skips_handle_and_finish() {
    // CPython: setup(); try: handle() finally: finish() — setup is outside.
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"x"));
    let rec = Recorder::new(Behaviour::FailSetup);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(rec.log(), vec!["verify 1", "setup 1", "error 1: handler failed in Setup: Refused"]);
    let c = net.conn(0).unwrap();
    assert_eq!((c.shutdown_writes(), c.closes()), (1, 1));
}

#[test]
fn a_failing_finish_is_reported() {
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"x"));
    let rec = Recorder::new(Behaviour::FailFinish);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(rec.log().last().unwrap(), "error 1: handler failed in Finish: FinishFailed");
}

#[test]
fn when_handle_and_finish_both_fail_both_errors_are_reported() {
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"x"));
    let rec = Recorder::new(Behaviour::FailBoth);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(
        rec.log()[4..],
        [
            "error 1: handler failed in Handle: Refused",
            "error 1: handler failed in Finish: FinishFailed"
        ]
    );
}

#[test]
fn a_handler_that_stops_the_loop_ends_it_after_its_turn() {
    // gh-83978: asking from inside a handler must not deadlock.
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Stop).stopping_after(usize::MAX, &flag);
    net.connect(MockConn::new(1, b""));
    net.connect(MockConn::new(2, b""));
    server(&net, &rec, &flag).serve_forever(SEC).unwrap();
    assert_eq!(net.conn_count(), 1, "the second connection waits for the next serve_forever");
    assert_eq!(rec.count("service_actions"), 1, "the turn finished");
}

#[test]
fn a_stop_during_the_wait_wins_over_a_ready_connection() {
    // bpo-35017: the wait returns Ready, but a stop was asked meanwhile:
    // serve_forever must not accept.
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    let rec = Recorder::new(Behaviour::Echo);
    net.request_stop_at(3 * SEC, &flag);
    net.connect_at(3 * SEC, MockConn::new(1, b"late"));
    server(&net, &rec, &flag).serve_forever(SEC).unwrap();
    assert_eq!(net.conn_count(), 0);
    assert_eq!(net.pending(), 1);
    assert_eq!(net.now(), 3 * SEC);
    assert_eq!(
        rec.count("service_actions"),
        2,
        "turns ended at 1 s and 2 s; the 3 s wait ended in the stop"
    );
}

#[test]
fn a_stop_during_a_long_wait_wakes_it() {
    let flag = ShutdownFlag::new();
    let net = MockNet::new();
    let rec = Recorder::new(Behaviour::Echo);
    net.request_stop_at(Duration::from_millis(1500), &flag);
    server(&net, &rec, &flag).serve_forever(60 * SEC).unwrap();
    assert_eq!(net.now(), Duration::from_millis(1500), "woken, not after the 60 s poll interval");
    assert_eq!(rec.count("service_actions"), 0);
}

#[test]
fn a_spurious_readiness_does_not_end_handle_request() {
    let net = MockNet::new();
    net.spurious_ready_at(SEC);
    net.connect_at(2 * SEC, MockConn::new(1, b"x"));
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let mut srv = server(&net, &rec, &flag);
    srv.set_timeout(Some(5 * SEC));
    srv.handle_request().unwrap();
    assert_eq!(net.conn_count(), 1, "it went on waiting and served the real one");
    assert_eq!(rec.count("timeout"), 0);
}

#[test]
fn handle_request_waits_only_for_what_is_left_of_its_timeout() {
    // Readiness that yields nothing at 2 s; the deadline stays at 3 s.
    let net = MockNet::new();
    net.spurious_ready_at(2 * SEC);
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let mut srv = server(&net, &rec, &flag);
    srv.set_timeout(Some(3 * SEC));
    srv.handle_request().unwrap();
    assert_eq!(rec.log(), vec!["timeout"]);
    assert_eq!(net.now(), 3 * SEC, "timed out at the deadline, not 2 s + 3 s");
}

#[test]
fn a_panic_out_of_serve_forever_still_clears_the_stop_state() {
    // CPython's `finally:` in serve_forever.
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Panic);
    net.connect(MockConn::new(1, b""));
    let mut srv = server(&net, &rec, &flag);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| srv.serve_forever(SEC)));
    assert!(outcome.is_err());
    assert!(!flag.is_running(), "loop_stopped ran while unwinding");
}

/// A dispatch that counts the calls the loop owes it.
#[derive(Default)]
struct Counting {
    inner: Inline,
    service_actions: usize,
    timeouts: usize,
}

impl crate::driver::Dispatch for Counting {
    fn service_actions(&mut self) {
        self.service_actions += 1;
    }
    fn handle_timeout(&mut self) {
        self.timeouts += 1;
    }
}

impl<S, A, Svc> crate::driver::StreamDispatch<S, A, Svc> for Counting
where
    Inline: crate::driver::StreamDispatch<S, A, Svc>,
{
    fn process_request(&mut self, service: &Svc, stream: S, client: A) {
        self.inner.process_request(service, stream, client);
    }
}

#[test]
fn the_dispatch_gets_service_actions_and_handle_timeout() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(1, &flag);
    net.connect_at(2 * SEC, MockConn::new(1, b"x"));
    let mut srv = Server::new(Stream(net.listener()), &rec, &net, &flag, Counting::default());
    srv.serve_forever(SEC).unwrap();
    assert_eq!(srv.dispatch().service_actions, rec.count("service_actions"));
    assert!(srv.dispatch().service_actions >= 2);
    srv.set_timeout(Some(SEC));
    srv.handle_request().unwrap();
    assert_eq!(srv.dispatch().timeouts, 1);
}

#[test]
fn a_busy_server_takes_the_next_request_without_waiting_first() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(5, &flag);
    for i in 0..5 {
        net.connect(MockConn::new(i, b"x"));
    }
    server(&net, &rec, &flag).serve_forever(SEC).unwrap();
    assert_eq!(net.conn_count(), 5);
    assert_eq!(net.stats().waits, 1, "one wait, then one request per turn without waiting");
    assert_eq!(rec.count("service_actions"), 5, "still one service_actions per turn");
}
