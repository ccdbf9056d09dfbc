//! The stream server's states and hooks, one test each.

use core::time::Duration;
use std::vec;

use super::{Behaviour, Recorder};
use crate::mock::{MockConn, MockListener, MockNet};
use crate::{Inline, Server, ShutdownFlag, Stream};

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
        vec!["verify 1", "setup 1", "handle 1", "finish 1", "error 1: handler failed: Refused"]
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
    assert_eq!(rec.count("service_actions") as u32, stats.waits, "one per turn");
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
