//! The event mode's back-pressure rule, through `MockNet::serve_events`:
//! a client that pipelines many commands and reads slowly.

use core::fmt::Write as _;
use core::time::Duration;
use std::vec::Vec;

use crate::mock::{MockConn, MockNet};
use core::cell::Cell;

use crate::{EventHandler, Outbox, ServiceExt, Step, service_fn};

/// 300 pipelined `INCR` lines: about 2 KiB of answers, four times the
/// mock's 512-byte send buffer.
fn pipeline() -> Vec<u8> {
    b"INCR\n".repeat(300)
}

fn answers(n: u64) -> Vec<u8> {
    let mut s = std::string::String::new();
    for i in 1..=n {
        write!(s, ":{i}\r\n").unwrap();
    }
    s.into_bytes()
}

/// Answers with `answer_lines`: only while room for an answer remains.
struct Careful(u64);

impl EventHandler for Careful {
    type Error = core::fmt::Error;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        let used = out.answer_lines(input, 23, |_line, out| {
            self.0 += 1;
            write!(out, ":{}\r\n", self.0)
        })?;
        Ok(Step::consumed(used))
    }
}

/// Acts on every complete command, room or not.
struct Careless(u64);

impl EventHandler for Careless {
    type Error = core::fmt::Error;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        let mut used = 0;
        while let Some(end) = input[used..].iter().position(|&b| b == b'\n') {
            self.0 += 1;
            write!(out, ":{}\r\n", self.0)?;
            used += end + 1;
        }
        Ok(Step::consumed(used))
    }
}

#[test]
fn a_slow_reader_that_pipelines_gets_every_answer_with_answer_lines() {
    let input = pipeline();
    let net = MockNet::new();
    // The client reads nothing for 2 s, then everything.
    net.connect(MockConn::new(1, &input).write_window(0));
    net.open_window_at(Duration::from_secs(2), 0, 1 << 20);
    let errors = Cell::new(0);
    let service = service_fn(|_| Careful(0)).on_error(|_, _| errors.set(errors.get() + 1));
    net.serve_events(service).unwrap();
    let c = net.conn(0).unwrap();
    assert_eq!(c.output(), answers(300).as_slice());
    assert_eq!(errors.get(), 0);
}

#[test]
fn without_the_room_check_the_same_client_loses_its_connection_mid_pipeline() {
    // What the rule prevents (the test that shows the rule is needed).
    let input = pipeline();
    let net = MockNet::new();
    net.connect(MockConn::new(1, &input).write_window(0));
    net.open_window_at(Duration::from_secs(2), 0, 1 << 20);
    let errors = Cell::new(0);
    let service = service_fn(|_| Careless(0)).on_error(|_, _| errors.set(errors.get() + 1));
    net.serve_events(service).unwrap();
    let c = net.conn(0).unwrap();
    assert!(c.output().len() < answers(300).len(), "{} bytes", c.output().len());
    assert_eq!(errors.get(), 1);
}
