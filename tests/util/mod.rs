//! Helpers shared by the real-socket tests (mio keeps its in `tests/util`).
#![allow(dead_code)]

pub mod echo;
pub mod procs;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod process;
pub mod root;

use sockserv::embedded_io;
use sockserv::std_adapter::{Address, BindAddr};
use sockserv::{BufStream, DatagramHandler, ReplyWriter, RequestError, Service, StreamHandler};

/// CPython's `TEST_STR`.
pub const TEST_STR: &[u8] = b"hello world\n";
/// How long a test client waits for an answer before failing.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A Unix socket path of our own in the temporary directory (removed if
/// it exists).
pub fn unix_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("sockserv-{}-{n}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// What a handler does (CPython's test handlers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// CPython's `MyHandler`: read one line, write it back.
    LineEcho,
    /// Echo every byte until EOF.
    Echo,
    /// Fail with an error (CPython's `BadHandler` raising `ValueError`).
    Fail,
    /// Panic.
    Panic,
}

/// A service that records hook calls, shared across threads (and written
/// to a file when a log path is set, for forked children).
#[derive(Clone)]
pub struct Recorder {
    pub behaviour: Behaviour,
    pub log: Arc<Mutex<Vec<String>>>,
    pub file: Option<PathBuf>,
    pub verify: bool,
}

impl Recorder {
    pub fn new(behaviour: Behaviour) -> Self {
        Self { behaviour, log: Arc::default(), file: None, verify: true }
    }

    /// Also appends every line to `path` (children of a forking server
    /// write there, as CPython's ErrorHandlerTest does).
    pub fn with_file(mut self, path: PathBuf) -> Self {
        self.file = Some(path);
        self
    }

    pub fn note(&self, line: String) {
        if let Some(path) = &self.file {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
            writeln!(f, "{line}").unwrap();
        }
        self.log.lock().unwrap().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.lines().iter().filter(|l| l.starts_with(prefix)).count()
    }
}

pub struct RecHandler(Recorder);

#[derive(Debug)]
pub enum HandlerError<E> {
    Io(E),
    Line(sockserv::ReadLineError<E>),
    Test,
}

impl<E> From<E> for HandlerError<E> {
    fn from(e: E) -> Self {
        Self::Io(e)
    }
}

impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for RecHandler
where
    S::Error: std::fmt::Debug,
{
    type Error = HandlerError<S::Error>;
    fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error> {
        self.0.note("Handler called".into());
        match self.0.behaviour {
            Behaviour::LineEcho => {
                let mut io = BufStream::<_, 1024>::new(stream);
                let mut line = [0u8; 1024];
                let n = io.read_line(&mut line).map_err(HandlerError::Line)?;
                embedded_io::Write::write_all(&mut io, &line[..n])?;
                Ok(())
            }
            Behaviour::Echo => {
                let mut buf = [0u8; 4096];
                loop {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    stream.write_all(&buf[..n])?;
                }
            }
            Behaviour::Fail => Err(HandlerError::Test),
            Behaviour::Panic => panic!("Test error"),
        }
    }
}

impl DatagramHandler for RecHandler {
    type Error = HandlerError<sockserv::ReplyFull>;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
        self.0.note("Handler called".into());
        match self.0.behaviour {
            Behaviour::LineEcho | Behaviour::Echo => {
                let line = match packet.iter().position(|&b| b == b'\n') {
                    Some(i) if self.0.behaviour == Behaviour::LineEcho => &packet[..=i],
                    _ => packet,
                };
                Ok(embedded_io::Write::write_all(reply, line)?)
            }
            Behaviour::Fail => Err(HandlerError::Test),
            Behaviour::Panic => panic!("Test error"),
        }
    }
}

impl Service<Address> for Recorder {
    type Handler = RecHandler;
    fn handler(&self, _: &Address) -> RecHandler {
        RecHandler(self.clone())
    }
    fn verify_request(&self, _: &sockserv::Request<'_, Address>) -> bool {
        self.verify
    }
    fn handle_error(&self, _: &Address, error: &RequestError<'_>) {
        let kind = match error {
            RequestError::Handler { .. } => "handler",
            RequestError::Panic(_) => "panic",
            RequestError::Truncated { .. } => "truncated",
            _ => "other",
        };
        self.note(format!("Error handled: {kind}: {error}"));
    }
}

/// CPython's `stream_examine`: send `TEST_STR`, read until a newline.
pub fn stream_examine(addr: &BindAddr) {
    let mut answer = Vec::new();
    match addr {
        BindAddr::Inet(a) => {
            let mut s = TcpStream::connect(a).unwrap();
            s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            s.write_all(TEST_STR).unwrap();
            read_line_into(&mut s, &mut answer);
        }
        BindAddr::Unix(p) => {
            let mut s = UnixStream::connect(p).unwrap();
            s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            s.write_all(TEST_STR).unwrap();
            read_line_into(&mut s, &mut answer);
        }
    }
    assert_eq!(answer, TEST_STR);
}

fn read_line_into(s: &mut impl Read, out: &mut Vec<u8>) {
    let mut buf = [0u8; 100];
    while !out.contains(&b'\n') {
        let n = s.read(&mut buf).expect("the server answered in time");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// CPython's `dgram_examine`: send `TEST_STR` as one datagram, expect it
/// back (a Unix client binds a path of its own so that it can be answered).
pub fn dgram_examine(addr: &BindAddr) {
    let mut buf = [0u8; 100];
    let n = match addr {
        BindAddr::Inet(a) => {
            let s = UdpSocket::bind(if a.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
            s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            s.send_to(TEST_STR, a).unwrap();
            s.recv(&mut buf).expect("the server answered in time")
        }
        BindAddr::Unix(p) => {
            let mine = unix_path("client");
            let s = UnixDatagram::bind(&mine).unwrap();
            s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            s.send_to(TEST_STR, p).unwrap();
            let n = s.recv(&mut buf).expect("the server answered in time");
            std::fs::remove_file(mine).unwrap();
            n
        }
    };
    assert_eq!(&buf[..n], TEST_STR);
}

/// Connects, sends `data`, half-closes, and reads everything back.
pub fn tcp_roundtrip(addr: &BindAddr, data: &[u8]) -> Vec<u8> {
    let BindAddr::Inet(a) = addr else { panic!("not a TCP address: {addr}") };
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s.write_all(data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
