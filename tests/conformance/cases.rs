//! The case list: what every transport must do, as functions over a
//! [`Fixture`]. A transport module implements the fixture (how to make a
//! server on it and how its peers behave) and instantiates every case with
//! [`conformance!`](crate::conformance). Where a transport differs for
//! real, its fixture says so ([`Fixture::differs`]) and the case checks
//! what the fixture states instead: a difference is never a skipped check.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use embedded_io::{ErrorKind, Read, Write};
use sockserv::{DatagramHandler, ReplyFull, ReplyWriter, RequestError, Service, StreamHandler};
use sockserv::{EventHandler, Next, Outbox, Step};

/// The bytes of the half-close case: more than one segment on every
/// stack (smoltcp loopback pools have 1 KiB buffers), less than the mock's
/// capture.
pub const DATA_LEN: usize = 1500;
/// The datagram server's receive buffer.
pub const DGRAM_BUFFER: usize = 64;
/// `serve_forever`'s poll interval: longer than any case, so only a
/// wake-up can end a wait in time.
pub const POLL: Duration = Duration::from_secs(60);
/// A stop that took longer than this did not wake the wait.
pub const WAKE_BOUND: Duration = Duration::from_secs(5);

/// How a scripted peer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Sends, half-closes, reads to EOF.
    HalfClose,
    /// Sends, waits for the first byte of the answer, then resets (RST).
    ResetAfterReply,
    /// Sends, reads, never closes: reads until the server's EOF.
    HoldOpen,
}

/// One stream peer: what it sends, how it ends.
#[derive(Clone, Debug)]
pub struct Script {
    pub send: Vec<u8>,
    pub end: End,
}

impl Script {
    pub fn new(send: &[u8], end: End) -> Self {
        Self { send: send.to_vec(), end }
    }
}

/// What a run of a server sees: its peers, and what happens around them.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Stream peers, connecting at once, in this order.
    pub clients: Vec<Script>,
    /// Datagrams of these sizes, from one peer socket, in order.
    pub datagrams: Vec<usize>,
    /// A stop is requested this long after serving began (from another
    /// thread, or from the stack's wait where the stack has one thread).
    pub stop_after: Option<Duration>,
    /// The transport's next accept fails (however the fixture can make
    /// it fail), before the clients are accepted.
    pub accept_error: bool,
}

/// What one peer got.
#[derive(Clone, Debug, Default)]
pub struct PeerResult {
    /// Its address, formatted as the server's hooks see it (`{:?}`).
    pub addr: String,
    /// Everything it received until EOF (or its error).
    pub received: Vec<u8>,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// What a run produced.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub peers: Vec<PeerResult>,
    /// The datagram replies the peer socket received, in order.
    pub replies: Vec<Vec<u8>>,
    /// How long serving took, on the fixture's clock.
    pub took: Duration,
    /// The run happened in a child process (which made the checks and
    /// passed): nothing is left to check here.
    pub in_child: bool,
}

/// What the case asks of the server.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    HandleRequest,
    ServeForever,
}

/// The server under test, one operation at a time.
pub type Serve<'a> = &'a mut dyn FnMut(Op) -> Result<(), String>;

/// The cases, to name a difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    PeerAddress,
    Reset,
    AcceptError,
    Exhaustion,
    OversizedDatagram,
    StopWakesAnIdleRead,
}

/// How a transport really differs in a case.
#[derive(Clone, Copy, Debug)]
pub struct Differs {
    /// Why (printed by the case).
    pub why: &'static str,
    /// The line the hooks get instead of the common one, which the case
    /// then checks; `None` where the case cannot be made at all (the
    /// case says so and checks nothing more).
    pub instead: Option<&'static str>,
}

impl Differs {
    pub const fn new(why: &'static str, instead: Option<&'static str>) -> Option<Self> {
        Some(Self { why, instead })
    }
}

/// A transport, as the cases need it.
pub trait Fixture {
    fn name(&self) -> &'static str;
    /// Where this transport really differs in `case`, and why.
    fn differs(&self, _case: Case) -> Option<Differs> {
        None
    }
    /// Makes a sync stream server on this transport with `rec` as its
    /// service, starts `run`'s peers, lets `serve` drive the server, and
    /// collects what the peers got.
    fn stream(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome;
    /// The same with a datagram server (receive buffer [`DGRAM_BUFFER`]).
    fn datagram(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome;
    /// An event-mode server with a table of `slots`, serving until
    /// `run.stop_after`. `None`: this transport has no event mode.
    fn event(&self, run: &Run, rec: &Rec, slots: usize) -> Option<Outcome>;
}

/// The service of every case: records each hook call, echoes.
#[derive(Clone, Default)]
pub struct Rec {
    log: Arc<Mutex<Vec<String>>>,
    /// Run at the first accept error (frees what made accept fail).
    relief: Arc<Mutex<Option<Relief>>>,
}

/// What frees the cause of an accept error.
type Relief = Box<dyn FnOnce() + Send>;

impl Rec {
    pub fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.lines().iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// `f` runs at the first accept error.
    pub fn on_accept_error(&self, f: impl FnOnce() + Send + 'static) {
        *self.relief.lock().unwrap() = Some(Box::new(f));
    }
}

/// Echoes until EOF; says how much it handled.
pub struct Echo(Rec, usize);

impl<S: Read + Write> StreamHandler<S> for Echo {
    type Error = ErrorKind;
    fn handle(&mut self, s: &mut S) -> Result<(), ErrorKind> {
        let mut buf = [0u8; 512];
        loop {
            let n = s.read(&mut buf).map_err(|e| embedded_io::Error::kind(&e))?;
            if n == 0 {
                self.0.note(format!("handled {} bytes", self.1));
                return Ok(());
            }
            self.1 += n;
            s.write_all(&buf[..n]).map_err(|e| embedded_io::Error::kind(&e))?;
        }
    }
}

impl DatagramHandler for Echo {
    type Error = ReplyFull;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), ReplyFull> {
        reply.write_all(packet)
    }
}

impl EventHandler for Echo {
    type Error = ErrorKind;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, ErrorKind> {
        let n = out.write(input);
        self.1 += n;
        Ok(Step::consumed(n))
    }
    fn peer_closed(&mut self, _: &mut Outbox<'_>) -> Result<Next, ErrorKind> {
        self.0.note(format!("handled {} bytes", self.1));
        Ok(Next::Close)
    }
    fn closed(&mut self) {}
}

impl<A: Debug> Service<A> for Rec {
    type Handler = Echo;
    fn handler(&self, _: &A) -> Echo {
        Echo(self.clone(), 0)
    }
    fn verify_request(&self, request: &sockserv::Request<'_, A>) -> bool {
        let client = request.client();
        self.note(format!("verify {client:?}"));
        true
    }
    fn handle_error(&self, _: &A, error: &RequestError<'_>) {
        self.note(format!("error: {error}"));
    }
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        self.note(format!("accept error: {:?}", error.kind()));
        if let Some(relief) = self.relief.lock().unwrap().take() {
            relief();
        }
    }
    fn handle_table_full(&self, client: &A) {
        self.note(format!("table full {client:?}"));
    }
}

/// `n` bytes that are not all alike.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn once(serve: Serve<'_>) {
    serve(Op::HandleRequest).expect("handle_request");
}

// ---- the cases ----

/// The address the hooks get is the peer's own (its local address).
pub fn peer_address_is_the_peers(f: &impl Fixture) {
    let rec = Rec::default();
    let run = Run { clients: vec![Script::new(b"hello", End::HalfClose)], ..Run::default() };
    let out = f.stream(&run, &rec, &mut once);
    // The fixture formats the peer's own address as this transport does.
    let addr = &out.peers[0].addr;
    if let Some(d) = f.differs(Case::PeerAddress) {
        println!("{}: {}: {addr}", f.name(), d.why);
    }
    assert_eq!(rec.lines(), [format!("verify {addr}"), "handled 5 bytes".into()], "{}", f.name());
    assert_eq!(out.peers[0].received, b"hello", "{}", f.name());
}

/// A peer that half-closes still gets every byte of the answer, then EOF.
pub fn shutdown_write_delivers_everything(f: &impl Fixture) {
    let rec = Rec::default();
    let data = payload(DATA_LEN);
    let run = Run { clients: vec![Script::new(&data, End::HalfClose)], ..Run::default() };
    let out = f.stream(&run, &rec, &mut once);
    let peer = &out.peers[0];
    assert_eq!(peer.error, None, "{}", f.name());
    assert!(peer.received == data, "{}: {} of {} bytes", f.name(), peer.received.len(), data.len());
    assert_eq!(rec.lines()[1], format!("handled {DATA_LEN} bytes"), "{}", f.name());
}

/// A peer's RST reaches the handler as `ConnectionReset`; the next peer is
/// served.
pub fn a_reset_is_reported_as_a_reset(f: &impl Fixture) {
    let rec = Rec::default();
    let run = Run { clients: vec![Script::new(b"hello", End::ResetAfterReply)], ..Run::default() };
    f.stream(&run, &rec, &mut once);
    let lines = rec.lines();
    assert_eq!(lines.len(), 2, "{}: {lines:?}", f.name());
    let expected = match f.differs(Case::Reset) {
        Some(d) => {
            println!("{}: {}", f.name(), d.why);
            d.instead.expect("a reset is always reported somehow")
        }
        None => "error: handler failed in Handle: ConnectionReset",
    };
    assert_eq!(lines[1], expected, "{}", f.name());
    // The server goes on.
    let rec = Rec::default();
    let run = Run { clients: vec![Script::new(b"after", End::HalfClose)], ..Run::default() };
    let out = f.stream(&run, &rec, &mut once);
    assert_eq!(out.peers[0].received, b"after", "{}", f.name());
}

/// A failed accept reaches `handle_accept_error`; the loop pauses, goes
/// on, and serves the peer.
pub fn an_accept_error_is_reported_and_survived(f: &impl Fixture) {
    if let Some(d) = f.differs(Case::AcceptError) {
        assert!(d.instead.is_none());
        println!("{}: accept errors: {}", f.name(), d.why);
        return;
    }
    let rec = Rec::default();
    let run = Run {
        clients: vec![Script::new(b"served", End::HalfClose)],
        accept_error: true,
        stop_after: Some(Duration::from_secs(2)),
        ..Run::default()
    };
    let out = f.stream(&run, &rec, &mut |serve| serve(Op::ServeForever).expect("serve_forever"));
    if out.in_child {
        return;
    }
    let lines = rec.lines();
    assert!(lines[0].starts_with("accept error: "), "{}: {lines:?}", f.name());
    assert_eq!(lines.last().unwrap(), "handled 6 bytes", "{}: {lines:?}", f.name());
    assert_eq!(out.peers[0].received, b"served", "{}", f.name());
}

/// A full connection table refuses a connection through
/// `handle_table_full` (closed at once), serves the other, never panics.
pub fn a_full_table_is_an_error_never_a_panic(f: &impl Fixture) {
    let rec = Rec::default();
    let run = Run {
        clients: vec![Script::new(b"one", End::HoldOpen), Script::new(b"two", End::HoldOpen)],
        stop_after: Some(Duration::from_secs(1)),
        ..Run::default()
    };
    let Some(out) = f.event(&run, &rec, 1) else {
        let d = f.differs(Case::Exhaustion).expect("a transport without event mode says why");
        println!("{}: exhaustion: {}", f.name(), d.why);
        return;
    };
    let lines = rec.lines();
    assert_eq!(rec.count("table full "), 1, "{}: {lines:?}", f.name());
    let got: Vec<&[u8]> = out.peers.iter().map(|p| &p.received[..]).collect();
    let served = got.iter().filter(|g| **g == b"one" || **g == b"two").count();
    let refused = got.iter().filter(|g| g.is_empty()).count();
    assert_eq!((served, refused), (1, 1), "{}: {got:?} {lines:?}", f.name());
}

/// A datagram larger than the receive buffer is reported
/// (`RequestError::Truncated`) and not handled; the next one is.
pub fn an_oversized_datagram_is_reported(f: &impl Fixture) {
    let rec = Rec::default();
    let run = Run { datagrams: vec![100, 10], ..Run::default() };
    let out = f.datagram(&run, &rec, &mut |serve| {
        serve(Op::HandleRequest).unwrap();
        serve(Op::HandleRequest).unwrap();
    });
    let lines = rec.lines();
    assert_eq!(lines.len(), 3, "{}: {lines:?}", f.name());
    let fits = format!("bytes does not fit the {DGRAM_BUFFER}-byte buffer; dropped");
    let expected = match f.differs(Case::OversizedDatagram) {
        None => format!("error: datagram of 100 {fits}"),
        Some(d) => {
            println!("{}: {}", f.name(), d.why);
            d.instead.expect("an oversized datagram is always reported").to_string()
        }
    };
    assert_eq!(lines[1], expected, "{}", f.name());
    assert_eq!(out.replies, [payload(10)], "{}", f.name());
}

/// A stop wakes the listener's wait, the datagram socket's wait, and a
/// read waiting on an idle peer, long before the poll interval.
pub fn a_stop_wakes_every_wait(f: &impl Fixture) {
    let stop = || Run { stop_after: Some(Duration::from_millis(300)), ..Run::default() };
    let forever = &mut |serve: Serve<'_>| serve(Op::ServeForever).expect("serve_forever");
    let out = f.stream(&stop(), &Rec::default(), forever);
    assert!(out.took < WAKE_BOUND, "{}: the listener's wait took {:?}", f.name(), out.took);
    let out = f.datagram(&stop(), &Rec::default(), forever);
    assert!(out.took < WAKE_BOUND, "{}: the datagram wait took {:?}", f.name(), out.took);
    // A handler waiting in a read on a peer that says nothing.
    let differs = f.differs(Case::StopWakesAnIdleRead);
    if let Some(d) = differs {
        println!("{}: {}", f.name(), d.why);
        if d.instead.is_none() {
            return;
        }
    }
    let rec = Rec::default();
    let run = Run { clients: vec![Script::new(b"", End::HoldOpen)], ..stop() };
    let out = f.stream(&run, &rec, forever);
    assert!(out.took < WAKE_BOUND, "{}: the idle read took {:?}", f.name(), out.took);
    let expected =
        differs.and_then(|d| d.instead).unwrap_or("error: handler failed in Handle: Interrupted");
    assert_eq!(rec.lines()[1], expected, "{}", f.name());
}

/// One `#[test]` per case for the fixture `$make` (an expression). With
/// `in $wrap`, each test runs `$wrap(case name, || the case)` instead
/// (the TAP module re-runs the case inside a network namespace).
#[macro_export]
macro_rules! conformance {
    ($make:expr) => {
        $crate::conformance!(in $crate::cases::direct, $make);
    };
    (in $wrap:path, $make:expr) => {
        $crate::conformance!(@tests $wrap, $make,
            peer_address_is_the_peers,
            shutdown_write_delivers_everything,
            a_reset_is_reported_as_a_reset,
            an_accept_error_is_reported_and_survived,
            a_full_table_is_an_error_never_a_panic,
            an_oversized_datagram_is_reported,
            a_stop_wakes_every_wait
        );
    };
    (@tests $wrap:path, $make:expr, $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                $wrap(stringify!($case), || $crate::cases::$case(&$make));
            }
        )*
    };
}

/// Runs the case here.
pub fn direct(_name: &str, case: impl FnOnce()) {
    case();
}
