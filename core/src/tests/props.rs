//! Property tests (proptest, in the normal `cargo test`): the invariants
//! the fuzz targets check, with small inputs.

use core::time::Duration;
use std::vec::Vec;

use embedded_io::{ErrorKind, ErrorType, Read};
use proptest::prelude::*;

use super::{Behaviour, Recorder};
use crate::driver::{Datagram, Stream};
use crate::mock::{MockConn, MockError, MockNet};
use crate::{BufStream, Inline, ReadLineError, Server, ShutdownFlag};

/// A stream that hands out `data` in the given chunk sizes (cycled).
struct Chunked<'a> {
    data: &'a [u8],
    chunks: &'a [usize],
    next: usize,
}

impl ErrorType for Chunked<'_> {
    type Error = MockError;
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, MockError> {
        let chunk = self.chunks[self.next % self.chunks.len()];
        self.next += 1;
        let n = chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Lines of up to 40 bytes without a newline, and whether the last ends
/// with one.
fn lines() -> impl Strategy<Value = (Vec<Vec<u8>>, bool)> {
    let line =
        proptest::collection::vec(any::<u8>().prop_filter("no newline", |&b| b != b'\n'), 0..40);
    (proptest::collection::vec(line, 0..8), any::<bool>())
}

fn check_read_line<const N: usize>(lines: &[Vec<u8>], last_nl: bool, chunks: &[usize], cap: usize) {
    let mut input = Vec::new();
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut whole = l.clone();
        if i + 1 < lines.len() || last_nl {
            whole.push(b'\n');
        }
        input.extend_from_slice(&whole);
        if !whole.is_empty() {
            expected.push(whole);
        }
    }
    let mut io = BufStream::<_, N>::new(Chunked { data: &input, chunks, next: 0 });
    let mut line = std::vec![0u8; cap];
    for want in &expected {
        match io.read_line(&mut line) {
            Ok(n) => assert_eq!(&line[..n], &want[..], "a line that fits comes back exactly"),
            Err(ReadLineError::TooLong { limit }) => {
                assert_eq!(limit, cap);
                assert!(want.len() > cap, "TooLong only for a line longer than the buffer");
                assert_eq!(&line[..], &want[..cap], "the buffer holds the line's start");
                let rest = io.discard_line().unwrap();
                assert_eq!(rest, want.len() - cap, "discard_line skips exactly the rest");
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(io.read_line(&mut line).unwrap(), 0, "EOF after the last line");
}

proptest! {
    #[test]
    fn read_line_returns_exactly_the_lines(
        (lines, last_nl) in lines(),
        chunks in proptest::collection::vec(1usize..12, 1..6),
        cap in 1usize..48,
    ) {
        check_read_line::<1>(&lines, last_nl, &chunks, cap);
        check_read_line::<7>(&lines, last_nl, &chunks, cap);
        check_read_line::<64>(&lines, last_nl, &chunks, cap);
    }
}

/// What a scripted client does wrong, if anything.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// Reads return at most this many bytes.
    Chunk(usize),
    /// Resets after sending this share (per 256) of its input.
    Reset(u8),
    WriteError,
    /// Keeps the connection open after its input (a read timeout).
    HoldOpen,
    /// The accept fails (no connection).
    AcceptFails,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::None),
        (1usize..9).prop_map(Fault::Chunk),
        any::<u8>().prop_map(Fault::Reset),
        Just(Fault::WriteError),
        Just(Fault::HoldOpen),
        Just(Fault::AcceptFails),
    ]
}

proptest! {
    /// The blocking server over the mock with arbitrary faults: every
    /// connection is closed once and half-closed once; a clean one gets
    /// back exactly what it sent, with no error; a faulty one gets a
    /// prefix and its error is reported; failed accepts are counted and
    /// the next client is still served.
    #[test]
    fn the_blocking_server_echoes_or_reports(
        clients in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..200), fault()), 1..12),
    ) {
        let net = MockNet::new();
        let mut conns = Vec::new();
        for (i, (input, fault)) in clients.iter().enumerate() {
            let c = MockConn::new(i as u32, input);
            let c = match *fault {
                Fault::None => c,
                Fault::Chunk(n) => c.read_chunk(n),
                Fault::Reset(share) => c.reset_after(input.len() * share as usize / 256),
                Fault::WriteError => c.write_error(ErrorKind::BrokenPipe),
                Fault::HoldOpen => c.hold_open(),
                Fault::AcceptFails => {
                    net.fail(ErrorKind::OutOfMemory);
                    continue;
                }
            };
            net.connect(c);
            conns.push(i);
        }
        let rec = Recorder::new(Behaviour::Echo);
        let flag = ShutdownFlag::new();
        let mut server = Server::new(Stream(net.listener()), &rec, &net, &flag, Inline::new());
        server.set_timeout(Some(Duration::from_secs(1)));
        for _ in 0..clients.len() {
            server.handle_request().unwrap();
        }
        prop_assert_eq!(net.pending(), 0);
        prop_assert_eq!(net.conn_count(), conns.len());
        let fails = clients.iter().filter(|c| matches!(c.1, Fault::AcceptFails)).count();
        prop_assert_eq!(net.stats().accept_errors as usize, fails);
        for (k, &i) in conns.iter().enumerate() {
            let log = net.conn(k).unwrap();
            let (input, fault) = &clients[i];
            prop_assert_eq!(log.from(), i as u32);
            prop_assert_eq!((log.closes(), log.shutdown_writes()), (1, 1), "closed once");
            let errors = rec.count(&std::format!("error {i}:"));
            prop_assert!(input.starts_with(log.output()), "only what was sent comes back");
            match fault {
                Fault::None | Fault::Chunk(_) => {
                    prop_assert_eq!(log.output(), &input[..]);
                    prop_assert_eq!(errors, 0);
                }
                // Nothing to echo: no write to fail.
                Fault::WriteError if input.is_empty() => prop_assert_eq!(errors, 0),
                Fault::Reset(_) | Fault::WriteError | Fault::HoldOpen => {
                    prop_assert_eq!(errors, 1, "the failure is reported once");
                }
                Fault::AcceptFails => unreachable!(),
            }
        }
    }
}

proptest! {
    /// Datagrams of arbitrary sizes against a 16-byte receive buffer: one
    /// that fits is echoed whole to its sender; a larger one is reported
    /// as truncated with its real size and never reaches the handler.
    #[test]
    fn datagrams_fit_whole_or_are_reported(
        sizes in proptest::collection::vec(0usize..40, 1..20),
    ) {
        let payloads: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &n)| std::vec![i as u8; n]).collect();
        let net = MockNet::new();
        for (i, p) in payloads.iter().enumerate() {
            net.datagram(i as u32, p);
        }
        let rec = Recorder::new(Behaviour::Echo);
        let flag = ShutdownFlag::new();
        let transport = Datagram { socket: net.socket(), buffer: [0u8; 16] };
        let mut server = Server::new(transport, &rec, &net, &flag, Inline::new());
        server.set_timeout(Some(Duration::from_secs(1)));
        for _ in &payloads {
            server.handle_request().unwrap();
        }
        let mut sent = 0;
        for (i, p) in payloads.iter().enumerate() {
            if p.len() > 16 {
                let line = std::format!(
                    "error {i}: datagram of {} bytes does not fit the 16-byte buffer; dropped",
                    p.len()
                );
                prop_assert_eq!(rec.count(&line), 1);
                let handled = std::format!("handle {i}");
                prop_assert!(!rec.log().contains(&handled), "never handed cut");
            } else {
                let (to, bytes) = net.sent(sent).unwrap();
                prop_assert_eq!((to, bytes.as_slice()), (i as u32, &p[..]));
                sent += 1;
            }
        }
        prop_assert_eq!(net.sent_count(), sent);
    }
}

/// A datagram socket that claims whatever it is told: any length (even
/// more than the buffer holds) and any truncation.
struct Liar {
    claims: Vec<(usize, Option<usize>)>,
    sent: Vec<usize>,
}

impl ErrorType for Liar {
    type Error = MockError;
}

impl crate::driver::Wait for Liar {
    fn wait(&mut self, _: Option<Duration>) -> Result<crate::driver::Readiness, MockError> {
        Ok(crate::driver::Readiness::Ready)
    }
    fn pause(&mut self, _: Duration) -> Result<crate::driver::Readiness, MockError> {
        Ok(crate::driver::Readiness::TimedOut)
    }
}

impl crate::driver::DatagramSocket for Liar {
    type Address = u32;
    fn try_recv_from(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<crate::driver::Received<u32>>, MockError> {
        let Some((len, truncated)) = self.claims.pop() else { return Ok(None) };
        buf.fill(0xAB);
        Ok(Some(crate::driver::Received { len, from: self.claims.len() as u32, truncated }))
    }
    fn send_to(&mut self, data: &[u8], _: &u32) -> Result<(), MockError> {
        self.sent.push(data.len());
        Ok(())
    }
}

proptest! {
    /// Whatever a transport claims, the handler only ever gets bytes that
    /// are in the buffer, and a claim beyond it or a truncation is
    /// reported, never handed on.
    #[test]
    fn a_lying_transport_never_hands_a_cut_datagram(
        claims in proptest::collection::vec((0usize..40, proptest::option::of(0usize..80)), 1..10),
    ) {
        let rec = Recorder::new(Behaviour::Echo);
        let flag = ShutdownFlag::new();
        let transport = Datagram { socket: Liar { claims: claims.clone(), sent: Vec::new() }, buffer: [0u8; 16] };
        let net = MockNet::new();
        let mut server = Server::new(transport, &rec, &net, &flag, Inline::new());
        for _ in &claims {
            server.handle_request().unwrap();
        }
        let (transport, _, _) = server.into_parts();
        let mut expected_sent = Vec::new();
        for (k, &(len, truncated)) in claims.iter().enumerate().rev() {
            let from = k as u32;
            let handled = rec.log().contains(&std::format!("handle {from}"));
            let reported = rec.count(&std::format!("error {from}: datagram of ")) == 1;
            if len <= 16 && truncated.is_none() {
                prop_assert!(handled && !reported);
                expected_sent.push(len);
            } else {
                prop_assert!(!handled && reported, "claim {len} / {truncated:?}: {:?}", rec.log());
            }
        }
        prop_assert_eq!(transport.socket.sent, expected_sent);
    }
}
