//! Bad input and failures: the server reports each and keeps serving.

use core::time::Duration;

use embedded_io::ErrorKind;

use super::stream::server;
use super::{Behaviour, Recorder};
use crate::mock::{MockConn, MockNet};
use crate::{DEFAULT_ACCEPT_BACKOFF, ShutdownFlag};

const POLL: Duration = Duration::from_millis(500);

#[test]
fn an_over_long_line_is_an_error_and_the_next_client_is_served() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Lines).stopping_after(2, &flag);
    net.connect(MockConn::new(1, b"short\nthis line is far longer than sixteen bytes\n"));
    net.connect(MockConn::new(2, b"fine\n"));
    server(&net, &rec, &flag).serve_forever(POLL).unwrap();
    assert_eq!(net.conn(0).unwrap().output(), b"ok\n", "the short line was answered");
    assert_eq!(rec.count("error 1: handler failed in Handle: Line(TooLong { limit: 16 })"), 1);
    assert_eq!(net.conn(0).unwrap().closes(), 1);
    assert_eq!(net.conn(1).unwrap().output(), b"ok\n");
}

#[test]
fn a_reset_mid_request_is_reported_and_the_next_client_is_served() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(2, &flag);
    net.connect(MockConn::new(1, b"0123456789abcdef").reset_after(10));
    net.connect(MockConn::new(2, b"ok"));
    server(&net, &rec, &flag).serve_forever(POLL).unwrap();
    let first = net.conn(0).unwrap();
    assert!(first.reset_seen());
    assert_eq!(first.output(), b"01234567", "what arrived before the reset was echoed");
    assert_eq!(rec.count("error 1: handler failed in Handle: Io(MockError(ConnectionReset))"), 1);
    assert_eq!(net.conn(1).unwrap().output(), b"ok");
}

#[test]
fn a_slow_peer_one_byte_at_a_time_is_served_whole() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Lines).stopping_after(1, &flag);
    net.connect(MockConn::new(1, b"a\nbb\nccc\n").one_byte_at_a_time());
    server(&net, &rec, &flag).serve_forever(POLL).unwrap();
    assert_eq!(net.conn(0).unwrap().output(), b"ok\nok\nok\n");
    assert_eq!(rec.count("error"), 0);
}

#[test]
fn a_peer_gone_while_we_write_is_reported() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(2, &flag);
    net.connect(MockConn::new(1, b"abc").write_error(ErrorKind::BrokenPipe));
    net.connect(MockConn::new(2, b"x"));
    server(&net, &rec, &flag).serve_forever(POLL).unwrap();
    assert_eq!(rec.count("error 1: handler failed in Handle: Io(MockError(BrokenPipe))"), 1);
    assert_eq!(net.conn(1).unwrap().output(), b"x");
}

#[test]
fn accept_failing_repeatedly_backs_off_instead_of_spinning() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(1, &flag);
    for _ in 0..20 {
        net.fail(ErrorKind::OutOfMemory); // EMFILE
    }
    net.connect(MockConn::new(1, b"still here"));
    server(&net, &rec, &flag).serve_forever(POLL).unwrap();

    let stats = net.stats();
    assert_eq!(stats.accept_errors, 20);
    assert_eq!(rec.count("accept error OutOfMemory"), 20, "each failure is told");
    assert_eq!(stats.pauses, 20, "one back-off pause after each failure");
    assert!(net.now() >= 20 * DEFAULT_ACCEPT_BACKOFF, "virtual time passed: {:?}", net.now());
    assert_eq!(net.conn(0).unwrap().output(), b"still here", "and then it served");
}

#[test]
fn a_handler_that_fails_every_time_never_stops_the_server() {
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Fail).stopping_after(6, &flag);
    for i in 0..6 {
        net.connect(MockConn::new(i, b"x"));
    }
    server(&net, &rec, &flag).serve_forever(POLL).unwrap();
    assert_eq!(rec.count("error"), 6);
    for i in 0..6 {
        let c = net.conn(i).unwrap();
        assert_eq!((c.shutdown_writes(), c.closes()), (1, 1), "connection {i}");
    }
}

#[test]
fn the_back_off_doubles_while_accepts_keep_failing_up_to_a_cap() {
    let ms = |n| crate::server::backoff_after(Duration::from_millis(50), n).as_millis();
    assert_eq!([1, 2, 3, 4, 5, 6, 50].map(ms), [50, 100, 200, 400, 800, 1000, 1000]);
    // 20 failures in a row: 50 + 100 + ... + 800 + 15 x 1000 ms of pauses.
    let net = MockNet::new();
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo).stopping_after(1, &flag);
    for _ in 0..20 {
        net.fail(ErrorKind::OutOfMemory);
    }
    net.connect(MockConn::new(1, b"x"));
    server(&net, &rec, &flag).serve_forever(POLL).unwrap();
    assert_eq!(net.now(), Duration::from_millis(50 + 100 + 200 + 400 + 800 + 15 * 1000));
}

#[test]
fn request_error_debug_is_its_structure_and_display_a_sentence() {
    use crate::{Phase, RequestError};
    use embedded_io::ErrorKind;
    use std::format;
    let e = core::fmt::Error;
    let err = RequestError::handler(Phase::Received, &e);
    assert_eq!(
        format!("{err:?}"),
        r#"Handler { phase: Received, error: Error, error_type: "core::fmt::Error" }"#
    );
    assert_eq!(
        format!("{err}"),
        "handler failed in Received: Error (core::fmt::Error in `received`: a `write!` failed, \
         e.g. an answer that did not fit the room)"
    );
    let reset = RequestError::Io(ErrorKind::ConnectionReset);
    assert_eq!(format!("{reset:?}"), "Io(ConnectionReset)");
    assert_eq!(format!("{reset}"), "connection failed: ConnectionReset");
    let other = RequestError::handler(Phase::Handle, &"refused");
    assert_eq!(format!("{other}"), r#"handler failed in Handle: "refused""#);
}
