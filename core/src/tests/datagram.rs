//! The datagram server: replies, the empty reply, truncation.

use std::vec;

use super::{Behaviour, Recorder};
use crate::driver::Datagram;
use crate::mock::{MockNet, MockSocket};
use crate::{Inline, Server, ShutdownFlag};

type DgramServer<'a, 's, 'f> = Server<
    Datagram<MockSocket<'a, 's>, [u8; 16]>,
    &'a Recorder<'f>,
    &'a MockNet<'s>,
    &'a ShutdownFlag,
    Inline,
>;

fn server<'a, 's, 'f>(
    net: &'a MockNet<'s>,
    rec: &'a Recorder<'f>,
    flag: &'a ShutdownFlag,
) -> DgramServer<'a, 's, 'f> {
    let transport = Datagram { socket: net.socket(), buffer: [0u8; 16] };
    Server::new(transport, rec, net, flag, Inline::new())
}

#[test]
fn a_datagram_goes_back_to_its_sender_whole() {
    let net = MockNet::new();
    net.datagram(4, b"hello world\n");
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    let (to, bytes) = net.sent(0).unwrap();
    assert_eq!((to, bytes.as_slice()), (4, &b"hello world\n"[..]));
    assert_eq!(rec.log(), vec!["verify 4", "setup 4", "handle 4", "finish 4"]);
}

#[test]
fn a_handler_that_writes_nothing_sends_an_empty_datagram() {
    let net = MockNet::new();
    net.datagram(4, b"ping");
    let rec = Recorder::new(Behaviour::Silent);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(net.sent_count(), 1);
    assert!(net.sent(0).unwrap().1.is_empty());
}

#[test]
fn an_oversized_datagram_is_reported_not_cut() {
    // CPython gh-128319: it silently cut datagrams at max_packet_size.
    let net = MockNet::new();
    net.datagram(5, &[b'x'; 40]);
    net.datagram(6, b"next");
    let flag = ShutdownFlag::new();
    let rec = Recorder::new(Behaviour::Echo);
    let mut srv = server(&net, &rec, &flag);
    srv.handle_request().unwrap();
    assert_eq!(
        rec.log(),
        vec!["verify 5", "error 5: datagram of 40 bytes does not fit the 16-byte buffer; dropped"]
    );
    assert_eq!(net.sent_count(), 0, "no reply to a truncated datagram");
    srv.handle_request().unwrap();
    assert_eq!(net.sent(0).unwrap().1.as_slice(), b"next", "the next sender is served");
}

#[test]
fn a_refused_datagram_gets_no_reply() {
    let net = MockNet::new();
    net.datagram(5, b"x");
    let rec = Recorder::new(Behaviour::Echo);
    rec.verify.set(false);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(net.sent_count(), 0);
    assert_eq!(rec.log(), vec!["verify 5"]);
}

#[test]
fn a_failing_handler_still_replies_as_cpython_does() {
    let net = MockNet::new();
    net.datagram(5, b"x");
    let rec = Recorder::new(Behaviour::Fail);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(rec.count("error 5"), 1);
    assert_eq!(net.sent_count(), 1, "DatagramRequestHandler.finish always sends");
}

#[test]
fn a_reply_larger_than_the_buffer_fails_whole() {
    let net = MockNet::new();
    net.datagram(5, &[b'y'; 16]);
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    // A 4-byte reply buffer: the echo of 16 bytes does not fit.
    let transport = Datagram { socket: net.socket(), buffer: [0u8; 16] };
    let mut srv = Server::new(transport, &rec, &net, &flag, Inline::with_reply_buffer([0u8; 4]));
    srv.handle_request().unwrap();
    assert_eq!(rec.count("error 5: handler failed in Handle: Io(ReplyFull { capacity: 4 })"), 1);
    assert!(net.sent(0).unwrap().1.is_empty(), "nothing partial was written");
}

#[test]
fn a_suppressed_reply_is_not_sent() {
    let net = MockNet::new();
    net.datagram(5, b"quiet");
    let rec = Recorder::new(Behaviour::Suppress);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(net.sent_count(), 0);
    assert_eq!(rec.count("error"), 0);
}

#[test]
fn a_failing_setup_sends_nothing() {
    let net = MockNet::new();
    net.datagram(5, b"x");
    let rec = Recorder::new(Behaviour::FailSetup);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(net.sent_count(), 0, "CPython's finish (which sends) is skipped too");
    assert_eq!(rec.log(), vec!["verify 5", "setup 5", "error 5: handler failed in Setup: Refused"]);
}

#[test]
fn a_failing_finish_is_reported_and_the_reply_still_sent() {
    let net = MockNet::new();
    net.datagram(5, b"x");
    let rec = Recorder::new(Behaviour::FailFinish);
    let flag = ShutdownFlag::new();
    server(&net, &rec, &flag).handle_request().unwrap();
    assert_eq!(rec.count("error 5: handler failed in Finish: FinishFailed"), 1);
    assert_eq!(net.sent_count(), 1, "the (empty) reply is still sent, as CPython's finish does");
}

#[test]
fn a_reply_that_cannot_leave_at_once_is_dropped_and_reported_distinctly() {
    let rec = Recorder::new(Behaviour::Echo);
    let mut reply = [0u8; 16];
    let would_block = |_: &[u8], _: &u32| Err(crate::driver::ReplySendError::WouldBlock);
    assert!(!crate::driver::serve_datagram(&&rec, b"hello", None, &5, &mut reply, would_block));
    let failed = |_: &[u8], _: &u32| Err(embedded_io::ErrorKind::BrokenPipe.into());
    assert!(!crate::driver::serve_datagram(&&rec, b"hi", None, &6, &mut reply, failed));
    assert_eq!(
        rec.log(),
        vec![
            "setup 5",
            "handle 5",
            "finish 5",
            "error 5: the 5-byte reply could not leave without waiting (the peer's queue is full); dropped",
            "setup 6",
            "handle 6",
            "finish 6",
            "error 6: sending the reply failed: BrokenPipe",
        ]
    );
}

#[test]
fn verify_request_sees_the_datagram() {
    // CPython's verify_request gets the request (for UDP, the datagram);
    // here the datagram's view holds the packet.
    use crate::ServiceExt;
    let net = MockNet::new();
    net.datagram(4, b"deny me");
    net.datagram(5, b"serve me");
    let rec = Recorder::new(Behaviour::Echo);
    let flag = ShutdownFlag::new();
    let service = (&rec).verify(|req| req.packet().is_some_and(|p| !p.starts_with(b"deny")));
    let transport = Datagram { socket: net.socket(), buffer: [0u8; 16] };
    let mut srv = Server::new(transport, service, &net, &flag, Inline::new());
    srv.handle_request().unwrap();
    srv.handle_request().unwrap();
    assert_eq!(net.sent_count(), 1);
    let (to, bytes) = net.sent(0).unwrap();
    assert_eq!((to, bytes.as_slice()), (5, &b"serve me"[..]));
}
