//! State-machine tests through the mock transport: put the server in a
//! state, feed it an event, assert what it did.

use std::cell::{Cell, RefCell};
use std::format;
use std::string::String;
use std::vec::Vec;

use embedded_io::{Read, Write};

use crate::mock::MockAddr;
use crate::{
    BufStream, DatagramHandler, ReadLineError, ReplyWriter, RequestError, Service, ShutdownFlag,
    StreamHandler,
};

mod backpressure;
mod bufio;
mod cpython;
mod datagram;
mod event;
mod event_props;
mod faults;
mod props;
mod stream;

/// A service that records every hook call in order, like the log file of
/// CPython's `ErrorHandlerTest`.
pub(crate) struct Recorder<'f> {
    pub log: RefCell<Vec<String>>,
    pub verify: Cell<bool>,
    pub behaviour: Behaviour,
    /// Request a stop once this many requests were handled.
    pub stop_after: Option<(usize, &'f ShutdownFlag)>,
    pub handled: Cell<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Behaviour {
    /// Echo everything until EOF (datagrams: echo the packet).
    Echo,
    /// Fail in `handle` with an error.
    Fail,
    /// Panic in `handle`.
    Panic,
    /// Read lines into a 16-byte buffer and answer each with `ok\n`.
    Lines,
    /// Write nothing (datagrams: the default empty reply).
    Silent,
    /// Fail in `setup`.
    FailSetup,
    /// Succeed in `handle`, fail in `finish`.
    FailFinish,
    /// Fail in `handle` and in `finish`.
    FailBoth,
    /// Datagrams: echo, then suppress the reply.
    Suppress,
    /// Ask the loop to stop from inside the handler (the `stop_after` flag).
    Stop,
}

impl<'f> Recorder<'f> {
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            log: RefCell::new(Vec::new()),
            verify: Cell::new(true),
            behaviour,
            stop_after: None,
            handled: Cell::new(0),
        }
    }

    pub fn stopping_after(mut self, n: usize, flag: &'f ShutdownFlag) -> Self {
        self.stop_after = Some((n, flag));
        self
    }

    pub fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.log.borrow().iter().filter(|l| l.starts_with(prefix)).count()
    }

    fn push(&self, line: String) {
        self.log.borrow_mut().push(line);
    }
}

/// The handler the recorder makes; it logs into the recorder.
pub(crate) struct RecHandler<'r, 'f> {
    rec: &'r Recorder<'f>,
    client: MockAddr,
}

impl RecHandler<'_, '_> {
    fn note(&self, what: &str) {
        self.rec.push(format!("{what} {}", self.client));
    }

    fn finish_result<E>(&self) -> Result<(), TestError<E>> {
        match self.rec.behaviour {
            Behaviour::FailFinish | Behaviour::FailBoth => Err(TestError::FinishFailed),
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
pub(crate) enum TestError<E> {
    Io(E),
    Line(ReadLineError<E>),
    Refused,
    FinishFailed,
}

impl<E> From<E> for TestError<E> {
    fn from(e: E) -> Self {
        Self::Io(e)
    }
}

impl<S: Read + Write> StreamHandler<S> for RecHandler<'_, '_>
where
    S::Error: core::fmt::Debug,
{
    type Error = TestError<S::Error>;

    fn setup(&mut self, _: &mut S) -> Result<(), Self::Error> {
        self.note("setup");
        if self.rec.behaviour == Behaviour::FailSetup { Err(TestError::Refused) } else { Ok(()) }
    }

    fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error> {
        self.note("handle");
        self.rec.handled.set(self.rec.handled.get() + 1);
        match self.rec.behaviour {
            Behaviour::Echo => {
                let mut buf = [0u8; 8];
                loop {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    stream.write_all(&buf[..n])?;
                }
            }
            Behaviour::Panic => panic!("handler panicked on purpose"),
            Behaviour::Lines => {
                let mut io = BufStream::<_, 8>::new(stream);
                let mut line = [0u8; 16];
                loop {
                    match io.read_line(&mut line) {
                        Ok(0) => return Ok(()),
                        Ok(_) => io.write_all(b"ok\n")?,
                        Err(e) => return Err(TestError::Line(e)),
                    }
                }
            }
            Behaviour::Fail | Behaviour::FailBoth => Err(TestError::Refused),
            Behaviour::Stop => {
                self.rec.stop_after.expect("a flag to stop").1.request();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn finish(&mut self, stream: &mut S) -> Result<(), Self::Error> {
        self.note("finish");
        stream.flush()?;
        self.finish_result()
    }
}

impl<'r, 'f> Service<MockAddr> for &'r Recorder<'f> {
    type Handler = RecHandler<'r, 'f>;
    fn handler(&self, client: &MockAddr) -> Self::Handler {
        RecHandler { rec: self, client: *client }
    }
    fn verify_request(&self, request: &crate::Request<'_, MockAddr>) -> bool {
        let client = request.client();
        self.push(format!("verify {client}"));
        self.verify.get()
    }
    fn handle_error(&self, client: &MockAddr, error: &RequestError<'_>) {
        self.push(format!("error {client}: {error}"));
    }
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        self.push(format!("accept error {:?}", error.kind()));
    }
    fn handle_timeout(&self) {
        self.push("timeout".into());
    }
    fn service_actions(&self) {
        self.push("service_actions".into());
        if let Some((n, flag)) = self.stop_after
            && self.handled.get() >= n
        {
            flag.request();
        }
    }
}

impl DatagramHandler for RecHandler<'_, '_> {
    type Error = TestError<crate::ReplyFull>;

    fn setup(&mut self) -> Result<(), Self::Error> {
        self.note("setup");
        if self.rec.behaviour == Behaviour::FailSetup { Err(TestError::Refused) } else { Ok(()) }
    }

    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
        self.note("handle");
        self.rec.handled.set(self.rec.handled.get() + 1);
        match self.rec.behaviour {
            Behaviour::Echo | Behaviour::Lines => Ok(reply.write_all(packet)?),
            Behaviour::Suppress => {
                reply.write_all(packet)?;
                reply.suppress();
                Ok(())
            }
            Behaviour::Fail | Behaviour::FailBoth => Err(TestError::Refused),
            Behaviour::Panic => panic!("handler panicked on purpose"),
            _ => Ok(()),
        }
    }

    fn finish(&mut self, _: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
        self.note("finish");
        self.finish_result()
    }
}
