//! The transport conformance suite's server on the board
//! (`tests/conformance/firmware.rs` boots it through `../run --firmware
//! conformance`): the cases' own service (`Rec` and `Echo` of
//! `tests/conformance/cases.rs`: echo, count, and say each hook call) on
//! smoltcp over the LAN9118, one server per boot, driven by the command
//! line:
//!
//! ```text
//! --addr IP:PORT --stop PATH --server stream|datagram|event --ops handle,handle|forever --slots N
//! ```
//!
//! It serves `--ops` one after the other (`handle`: `handle_request`,
//! `forever`: `serve_forever` until the stop file exists), or in event
//! mode `serve_forever` on a table of `--slots` connections that refuses
//! when full; then keeps the stack going for the peers until the stop
//! file exists, lingers and exits 0. Lines (semihosting; the runner puts
//! them on its stderr): `hook: LINE` for each hook call, worded as `Rec`
//! words it; `op N: ok` or `op N: error: E` after each operation;
//! `took N us` (the operations, on the board's clock). This image is a
//! test fixture, not measured for size: it uses `core::fmt` for the hook
//! lines (the echo images do not).
#![no_std]
#![no_main]

use core::cell::Cell;
use core::fmt::{self, Write as _};
use core::time::Duration;

use cortex_m_rt::entry;
use embedded_io::{ErrorKind, Read, Write};
use sockserv::driver::{Clock, Readiness};
use sockserv::smoltcp_adapter::smoltcp::iface::{Config, Interface, SocketSet};
use sockserv::smoltcp_adapter::smoltcp::socket::{tcp, udp};
use sockserv::smoltcp_adapter::smoltcp::wire::{EthernetAddress, IpCidr, IpEndpoint};
use sockserv::smoltcp_adapter::{Options, Stack, Storage, TcpEventSource, TcpServer, UdpServer};
use sockserv::smoltcp_adapter::{Wait, smoltcp};
use sockserv::{CappedSlots, EventServer, EventServerConfig, FixedPool, FixedSlots};
use sockserv::{DatagramHandler, EventHandler, Next, Outbox, ReplyFull, ReplyWriter};
use sockserv::{RequestError, Service, ShutdownFlag, Step, StreamHandler, WhenFull};
use sockserv_mps2_an386::lan9118::{Frames, FreeRun, Lan9118};
use sockserv_mps2_an386::{hw, out};

/// The cases' datagram buffer (`cases::DGRAM_BUFFER`).
const DGRAM_BUFFER: usize = 64;
/// `serve_forever`'s poll interval (`cases::POLL`): only a wake-up ends a
/// wait in time.
const POLL: Duration = Duration::from_secs(60);
/// The most connections a table may have, and the listener's sockets.
const MAX_SLOTS: usize = 4;
const SOCKETS: usize = 5;
/// Each TCP socket's buffers, each way.
const TCP_BUFFER: usize = 2048;
const TICK: u32 = 250_000;
const STOP_CHECK: Duration = Duration::from_millis(50);
const LINGER: Duration = Duration::from_millis(500);

static FLAG: ShutdownFlag = ShutdownFlag::new();

/// One line on the host, formatted (at most 200 bytes).
struct Line {
    buf: [u8; 200],
    len: usize,
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn say(args: fmt::Arguments<'_>) {
    let mut line = Line { buf: [0; 200], len: 0 };
    let _ = line.write_fmt(args);
    out::line(&[&line.buf[..line.len]]);
}

/// The cases' `Rec`: each hook call, said as a line.
#[derive(Clone, Copy)]
struct Rec;

/// The cases' `Echo`: echoes until EOF; says how much it handled.
struct Echo(usize);

impl<S: Read + Write> StreamHandler<S> for Echo {
    type Error = ErrorKind;
    fn handle(&mut self, s: &mut S) -> Result<(), ErrorKind> {
        let mut buf = [0u8; 512];
        loop {
            let n = s.read(&mut buf).map_err(|e| embedded_io::Error::kind(&e))?;
            if n == 0 {
                say(format_args!("hook: handled {} bytes", self.0));
                return Ok(());
            }
            self.0 += n;
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
        self.0 += n;
        Ok(Step::consumed(n))
    }
    fn peer_closed(&mut self, _: &mut Outbox<'_>) -> Result<Next, ErrorKind> {
        say(format_args!("hook: handled {} bytes", self.0));
        Ok(Next::Close)
    }
    fn closed(&mut self) {}
}

impl Service<IpEndpoint> for Rec {
    type Handler = Echo;
    fn handler(&self, _: &IpEndpoint) -> Echo {
        Echo(0)
    }
    fn verify_request(&self, request: &sockserv::Request<'_, IpEndpoint>) -> bool {
        say(format_args!("hook: verify {:?}", request.client()));
        true
    }
    fn handle_error(&self, _: &IpEndpoint, error: &RequestError<'_>) {
        say(format_args!("hook: error: {error}"));
    }
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        say(format_args!("hook: accept error: {:?}", error.kind()));
    }
    fn handle_table_full(&self, client: &IpEndpoint) {
        say(format_args!("hook: table full {client:?}"));
    }
}

/// What the command line asks.
struct Args<'l> {
    addr: IpEndpoint,
    stop: [u8; 128],
    server: &'l str,
    ops: &'l str,
    slots: usize,
}

fn parse(line: &str) -> Option<Args<'_>> {
    let mut args = Args {
        addr: IpEndpoint::new(core::net::Ipv4Addr::UNSPECIFIED.into(), 0),
        stop: [0; 128],
        server: "",
        ops: "",
        slots: 1,
    };
    let mut words = line.split([' ', '\0']).filter(|w| !w.is_empty());
    while let Some(flag) = words.next() {
        if !flag.starts_with("--") {
            continue;
        }
        let value = words.next()?;
        match flag {
            "--addr" => {
                let (ip, port) = value.split_once(':')?;
                let ip: core::net::Ipv4Addr = ip.parse().ok()?;
                args.addr = IpEndpoint::new(ip.into(), port.parse().ok()?);
            }
            "--stop" if value.len() < args.stop.len() => {
                args.stop[..value.len()].copy_from_slice(value.as_bytes());
            }
            "--server" => args.server = value,
            "--ops" => args.ops = value,
            "--slots" => args.slots = value.parse().ok().filter(|n| (1..=MAX_SLOTS).contains(n))?,
            _ => return None,
        }
    }
    (args.addr.port != 0 && args.stop[0] != 0).then_some(args)
}

/// Sleeps on the LAN9118's interrupt and SysTick; asks the server to stop
/// once the stop file exists.
struct Idle<'c> {
    clock: &'c FreeRun,
    stop: &'c [u8],
    next_check: Cell<Duration>,
    stopping: &'c Cell<bool>,
}

impl Idle<'_> {
    fn stop_requested(&self) -> bool {
        if self.stopping.get() {
            return true;
        }
        let now = self.clock.now();
        if now >= self.next_check.get() {
            self.next_check.set(now + STOP_CHECK);
            if hw::host_file_exists(self.stop) {
                self.stopping.set(true);
                FLAG.request();
            }
        }
        self.stopping.get()
    }
}

impl Wait<Lan9118<'_>> for Idle<'_> {
    fn wait(
        &mut self,
        device: &mut Lan9118<'_>,
        _: &mut SocketSet<'_>,
        timeout: Option<Duration>,
    ) -> Readiness {
        let stopping = self.stop_requested();
        if device.rx_pending() {
            return Readiness::Ready;
        }
        if timeout != Some(Duration::ZERO) {
            hw::wait_for_interrupt();
        }
        if stopping {
            Readiness::Woken
        } else if device.rx_pending() {
            Readiness::Ready
        } else {
            Readiness::TimedOut
        }
    }
}

type Net<'a, 'c> = Stack<'a, Lan9118<'c>, Idle<'c>, &'c FreeRun>;

#[entry]
fn main() -> ! {
    let mut line = [0u8; 512];
    let n = hw::host_cmdline(&mut line);
    let Some(args) = core::str::from_utf8(&line[..n]).ok().and_then(parse) else {
        out::line(&[b"error: bad command line"]);
        hw::host_exit(2)
    };
    let code = run(&args);
    hw::host_exit(code)
}

fn run(args: &Args<'_>) -> u32 {
    let clock = FreeRun::new();
    let mut frames = Frames::new();
    let mut device = Lan9118::new(&mut frames);
    let mac = [0x02, 0, 0, 0, 0, 0x01];
    if device.init(mac).is_err() {
        out::line(&[b"error: no LAN9118 at 0x40200000"]);
        return 1;
    }
    hw::start_ticks(TICK);
    let mut config = Config::new(EthernetAddress(mac).into());
    config.random_seed = clock.ticks().into();
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(args.addr.addr, 24));
    });
    let stop_len = args.stop.iter().position(|&c| c == 0).unwrap_or(0) + 1;
    let stopping = Cell::new(false);
    let idle = Idle {
        clock: &clock,
        stop: &args.stop[..stop_len],
        next_check: Cell::new(Duration::ZERO),
        stopping: &stopping,
    };
    let mut bufs = [[[0u8; TCP_BUFFER]; 2]; SOCKETS];
    let (mut rx_meta, mut tx_meta) =
        ([udp::PacketMetadata::EMPTY; 8], [udp::PacketMetadata::EMPTY; 8]);
    let (mut rx, mut tx) = ([0u8; 8192], [0u8; 8192]);
    let mut storage = Storage::<{ SOCKETS + 1 }>::default();
    let stack: Net<'_, '_> = Stack::new(iface, device, &mut storage, idle, &clock);
    let port = args.addr.port;
    let start = clock.now();
    match args.server {
        "datagram" => {
            let socket = udp::Socket::new(
                udp::PacketBuffer::new(&mut rx_meta[..], &mut rx[..]),
                udp::PacketBuffer::new(&mut tx_meta[..], &mut tx[..]),
            );
            let Ok(socket) = stack.bind_udp(port, socket) else {
                out::line(&[b"error: cannot bind"]);
                return 1;
            };
            announce(args);
            let mut server: UdpServer<'_, '_, _, DGRAM_BUFFER> = socket.into_server(Rec, &FLAG);
            ops(args.ops, |forever| {
                if forever { server.serve_forever(POLL) } else { server.handle_request() }
            });
        }
        server => {
            let sockets = bufs.iter_mut().map(|[rx, tx]| {
                tcp::Socket::new(
                    tcp::SocketBuffer::new(&mut rx[..]),
                    tcp::SocketBuffer::new(&mut tx[..]),
                )
            });
            let Ok(listener) = stack.listen(port, sockets, Options::default()) else {
                out::line(&[b"error: cannot listen"]);
                return 1;
            };
            announce(args);
            if server == "event" {
                let source = TcpEventSource::new(listener);
                let clock = source.clock();
                // As the TAP fixture's: a table of --slots that refuses
                // when full, two 512-byte buffers per connection.
                let mut server = EventServer::new(
                    source,
                    Rec,
                    clock,
                    &FLAG,
                    CappedSlots::new(FixedSlots::<_, MAX_SLOTS>::new(), args.slots),
                    FixedPool::<512, { 2 * MAX_SLOTS }>::new(),
                    EventServerConfig {
                        idle_timeout: None,
                        when_full: WhenFull::Refuse,
                        ..EventServerConfig::default()
                    },
                );
                ops("forever", |_| server.serve_forever(POLL));
            } else {
                let mut server: TcpServer<'_, '_, _> = listener.into_server(Rec, &FLAG);
                ops(args.ops, |forever| {
                    if forever { server.serve_forever(POLL) } else { server.handle_request() }
                });
            }
        }
    }
    let took = clock.now() - start;
    say(format_args!("took {} us", took.as_micros()));
    // The peers finish: keep the stack going until the host says stop.
    let idle_stop = || stopping.get() || hw::host_file_exists(&args.stop[..stop_len]);
    while !idle_stop() {
        stack.poll();
        let until = clock.now() + STOP_CHECK;
        while clock.now() < until {
            hw::wait_for_interrupt();
            stack.poll();
        }
    }
    stack.linger(LINGER);
    let stats = stack.stats();
    say(format_args!("{stats:?}"));
    0
}

/// Runs each of `list`'s operations (`handle` or `forever`) with `op`
/// (given whether it is `forever`), saying how each went.
fn ops<E: fmt::Debug>(list: &str, mut op: impl FnMut(bool) -> Result<(), E>) {
    for (i, name) in list.split(',').enumerate() {
        match op(name == "forever") {
            Ok(()) => say(format_args!("op {i}: ok")),
            Err(e) => say(format_args!("op {i}: error: {e:?}")),
        }
    }
}

fn announce(args: &Args<'_>) {
    say(format_args!("listening on {}", args.addr));
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    out::line(&[b"panic"]);
    hw::host_exit(101)
}
