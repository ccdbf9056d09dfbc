//! The datagram path with arbitrary sizes, receive and reply buffers, and
//! a transport that may claim any length or truncation: a datagram that
//! fits is handed whole and echoed whole to its sender; one that does not
//! (or that the transport calls truncated, or claims more bytes than the
//! buffer holds) is reported and never handed on, cut or otherwise; a
//! reply that does not fit the reply buffer is reported, never sent cut.
#![no_main]

use core::time::Duration;

use embedded_io::ErrorType;
use libfuzzer_sys::{arbitrary, fuzz_target};
use sockserv_core::driver::{Datagram, DatagramSocket, Readiness, Received, Wait};
use sockserv_core::mock::MockError;
use sockserv_core::{Inline, Server, ShutdownFlag};
use sockserv_fuzz::Recorder;

#[derive(Clone, Debug, arbitrary::Arbitrary)]
struct Claim {
    /// The datagram's real bytes.
    data: Vec<u8>,
    /// Lies the socket tells: a length instead of the real one, a
    /// truncation it made up.
    claim_len: Option<u16>,
    claim_truncated: Option<u16>,
}

struct Liar {
    claims: Vec<Claim>,
    next: usize,
    sent: Vec<(u32, Vec<u8>)>,
}

impl ErrorType for Liar {
    type Error = MockError;
}

impl Wait for Liar {
    fn wait(&mut self, _: Option<Duration>) -> Result<Readiness, MockError> {
        Ok(Readiness::Ready)
    }
    fn pause(&mut self, _: Duration) -> Result<Readiness, MockError> {
        Ok(Readiness::TimedOut)
    }
}

impl DatagramSocket for Liar {
    type Address = u32;
    fn try_recv_from(&mut self, buf: &mut [u8]) -> Result<Option<Received<u32>>, MockError> {
        let Some(c) = self.claims.get(self.next) else { return Ok(None) };
        let from = self.next as u32;
        self.next += 1;
        let real = c.data.len().min(buf.len());
        buf[..real].copy_from_slice(&c.data[..real]);
        let honest_trunc = (c.data.len() > buf.len()).then_some(c.data.len());
        let len = c.claim_len.map_or(real, usize::from);
        let truncated = c.claim_truncated.map(usize::from).or(honest_trunc);
        Ok(Some(Received { len, from, truncated }))
    }
    fn send_to(&mut self, data: &[u8], to: &u32) -> Result<(), MockError> {
        self.sent.push((*to, data.to_vec()));
        Ok(())
    }
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    recv_buf: u8,
    reply_buf: u8,
    claims: Vec<Claim>,
}

fuzz_target!(|input: Input| {
    if input.claims.len() > 64 {
        return;
    }
    let recv_size = usize::from(input.recv_buf);
    let reply_size = usize::from(input.reply_buf);
    let rec = Recorder::default();
    let flag = ShutdownFlag::new();
    let socket = Liar { claims: input.claims.clone(), next: 0, sent: Vec::new() };
    let transport = Datagram { socket, buffer: vec![0u8; recv_size] };
    let dispatch = Inline::with_reply_buffer(vec![0u8; reply_size]);
    let mut server = Server::new(transport, &rec, FixedClock, &flag, dispatch);
    for _ in &input.claims {
        server.handle_request().unwrap();
    }
    let (transport, _, _) = server.into_parts();
    let mut sent = transport.socket.sent.iter();
    for (i, c) in input.claims.iter().enumerate() {
        let from = i as u32;
        let real = c.data.len().min(recv_size);
        let len = c.claim_len.map_or(real, usize::from);
        let honest_trunc = (c.data.len() > recv_size).then_some(c.data.len());
        let truncated = c.claim_truncated.map(usize::from).or(honest_trunc);
        let handed = rec.count(from, "handle ");
        if len <= recv_size && truncated.is_none() {
            assert_eq!(rec.count(from, &format!("handle {len};")), 1, "handed whole");
            assert_eq!(rec.count(from, "error: datagram of"), 0);
            let (to, bytes) = sent.next().expect("every served datagram gets a reply");
            assert_eq!(*to, from);
            if len <= reply_size {
                // A length within the buffer is the transport's word: the
                // handler gets exactly `len` bytes, the real ones first.
                let known = real.min(len);
                assert_eq!(bytes.len(), len, "echoed whole");
                assert_eq!(&bytes[..known], &c.data[..known]);
            } else {
                assert!(bytes.is_empty(), "a reply that does not fit is not sent cut");
                assert_eq!(rec.count(from, "error: handler failed in Handle: ReplyFull"), 1);
            }
        } else {
            assert_eq!(handed, 0, "a truncated datagram is never handed on");
            assert_eq!(rec.count(from, "error: datagram of"), 1, "and it is reported");
        }
    }
    assert!(sent.next().is_none(), "no reply without a request");
});

struct FixedClock;

impl sockserv_core::driver::Clock for FixedClock {
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}
