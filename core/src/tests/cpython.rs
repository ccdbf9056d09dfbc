//! Cases of CPython's `test_socketserver.py` that need no real socket.

use core::time::Duration;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::vec;

use super::stream::server;
use super::{Behaviour, Recorder};
use crate::mock::{MockConn, MockNet};
use crate::{ShutdownFlag, ShutdownSignal};

/// `ErrorHandlerTest.test_sync_handled`: a handler error reaches
/// `handle_error` once, after the handler ran.
#[test]
fn error_handler_sync_handled() {
    let net = MockNet::new();
    net.connect(MockConn::new(1, b""));
    let rec = Recorder::new(Behaviour::Fail);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(rec.count("handle 1"), 1, "Handler called");
    assert_eq!(rec.count("error 1"), 1, "Error handled");
}

/// `ErrorHandlerTest.test_sync_not_handled`: CPython lets `SystemExit`
/// through without `handle_error`; the Rust analogue is a panic, which the
/// inline (sync) strategy lets unwind to the caller.
#[test]
fn error_handler_sync_not_handled() {
    let net = MockNet::new();
    net.connect(MockConn::new(1, b""));
    let rec = Recorder::new(Behaviour::Panic);
    let flag = ShutdownFlag::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| server(&net, &rec, &flag).handle_request()));
    assert!(outcome.is_err(), "the panic reached the caller");
    assert_eq!(rec.count("handle 1"), 1, "Handler called");
    assert_eq!(rec.count("error"), 0, "Error not handled");
    let conn = net.conn(0).unwrap();
    assert_eq!(conn.shutdown_writes(), 1, "shutdown_request still half-closed while unwinding");
    assert_eq!(conn.closes(), 1, "and closed");
}

/// `MiscTestCase.test_shutdown_request_called_if_verify_request_false`
/// (issue #26309): a refused request is shut down exactly once.
#[test]
fn shutdown_request_called_if_verify_request_false() {
    let net = MockNet::new();
    net.connect(MockConn::new(9, b"ignored"));
    let rec = Recorder::new(Behaviour::Echo);
    rec.verify.set(false);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    let conn = net.conn(0).unwrap();
    assert_eq!(conn.shutdown_writes(), 1);
    assert_eq!(conn.closes(), 1);
    assert_eq!(conn.bytes_read(), 0);
    assert_eq!(rec.log(), vec!["verify 9"], "no handler was made");
}

/// `handle_request` with `timeout` set and nothing arriving calls
/// `handle_timeout` (CPython's `handle_request` docs and `test_socketserver`
/// timeout usage).
#[test]
fn handle_request_timeout_calls_handle_timeout() {
    let net = MockNet::new();
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let mut srv = server(&net, &rec, &flag);
    srv.set_timeout(Some(Duration::from_millis(250)));
    srv.handle_request().unwrap();
    assert_eq!(rec.log(), vec!["timeout"]);
    assert_eq!(net.now(), Duration::from_millis(250));
}

/// `shutdown()` called before `serve_forever` starts: the loop starts,
/// sees the request and returns without serving (CPython's `test_shutdown`
/// relies on this).
#[test]
fn shutdown_before_serve_forever_starts() {
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"a"));
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    flag.request();
    server(&net, &rec, &flag).serve_forever(Duration::from_millis(500)).unwrap();
    assert_eq!(net.stats().waits, 0);
    assert_eq!(net.conn_count(), 0);
    assert!(!flag.is_requested());
}

/// `serve_forever` can run again after a shutdown.
#[test]
fn serve_again_after_shutdown() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(1, &flag);
    net.connect(MockConn::new(1, b"one"));
    let mut srv = server(&net, &rec, &flag);
    srv.serve_forever(Duration::from_millis(500)).unwrap();
    assert_eq!(net.conn_count(), 1);

    net.connect(MockConn::new(2, b"two"));
    // The recorder stops once handled >= 1, i.e. after the next turn.
    srv.serve_forever(Duration::from_millis(500)).unwrap();
    assert_eq!(net.conn_count(), 2);
    assert_eq!(net.conn(1).unwrap().output(), b"two");
}
