//! The echo application on mps2-an386: `smoltcp_echo`'s handlers (the
//! same `examples/shared/echo.rs`) on smoltcp over the board's LAN9118,
//! TCP or UDP as the command line says (see `sockserv_mps2_an386::config`),
//! in the mode its image was built for (`bin/echo_event.rs`,
//! `bin/echo_sync.rs`: one image per mode, so that each carries only its
//! server). Run it with `../run`.
//!
//! Memory: everything lives on the stack of `main` (nothing is
//! allocated; the statics are a few bytes), so the measured peak stack is
//! the RAM the server needs.

use core::cell::Cell;
use core::time::Duration;

use cortex_m_rt::entry;
use embedded_io::{Read, Write};
use sockserv::driver::Readiness;
use sockserv::smoltcp_adapter::smoltcp::iface::{Config, Interface, SocketSet};
use sockserv::smoltcp_adapter::smoltcp::socket::{tcp, udp};
use sockserv::smoltcp_adapter::smoltcp::wire::{EthernetAddress, IpCidr, IpEndpoint};
use sockserv::smoltcp_adapter::{
    EventTcpServer, Options, Stack, Storage, TcpServer, UdpServer, Wait, WhenFull, smoltcp,
};
use sockserv::{EventServerConfig, FixedPool, ShutdownFlag, StreamHandler, service_fn};
use sockserv_mps2_an386::config::{self, Mode, Proto};
use sockserv_mps2_an386::lan9118::{Frames, FreeRun, Lan9118};
use sockserv_mps2_an386::{hw, out};

#[path = "../../shared/echo.rs"]
mod echo;
use echo::Echo;

/// The blocking stream echo's read buffer (the host examples' is 64 KiB
/// on the heap).
const STREAM_BUFFER: usize = 512;

impl<S: Read + Write> StreamHandler<S> for Echo {
    type Error = S::Error;
    fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
        let mut buf = [0u8; STREAM_BUFFER];
        echo::echo_stream(stream, &mut buf)
    }
}

/// How many connections may wait to be accepted at once.
const BACKLOG: usize = 2;
/// Event mode: the table's capacity (`--max-connections` beyond it is
/// capped) and the buffers its connections share.
const MAX_CONNECTIONS: usize = 4;
const EVENT_BUFFER: usize = 256;
const EVENT_BUFFERS: usize = 2;
/// The TCP listener's sockets: the table and the backlog.
const POOL: usize = MAX_CONNECTIONS + BACKLOG;
/// Each TCP socket's receive and send buffers (the receive buffer is the
/// window smoltcp offers).
const TCP_BUFFER: usize = 320;
/// The largest UDP payload in one Ethernet frame, and the UDP socket's
/// buffers (two datagrams each way).
const MAX_DATAGRAM: usize = 1472;
const UDP_BUFFER: usize = 2 * MAX_DATAGRAM;
/// How long a stopping server keeps sending what closed connections queued.
const LINGER: Duration = Duration::from_millis(500);
/// SysTick: 10 ms at 25 MHz.
const TICK: u32 = 250_000;
/// How often the wait looks for the runner's stop file: 50 ms in the
/// clock's 40-ns ticks.
const STOP_CHECK_TICKS: u32 = 1_250_000;

static FLAG: ShutdownFlag = ShutdownFlag::new();

#[entry]
fn main() -> ! {
    hw::paint_stack();
    let cfg = configure();
    let code = run(&cfg);
    out::line_num(b"P ", hw::peak_stack() as u32, b"");
    hw::host_exit(code)
}

/// The settings, read (in a frame of its own: the line's buffer is gone
/// once the server runs).
#[inline(never)]
fn configure() -> config::Config {
    let mut line = [0u8; 512];
    let n = hw::host_cmdline(&mut line);
    match config::Config::parse(&line[..n]) {
        Some(cfg) if cfg.mode == super::MODE => cfg,
        Some(_) => error(E_OTHER_MODE, 2),
        None => error(E_SETTINGS, 2),
    }
}

// What the firmware tells the runner: short records the runner words
// (as defmt keeps its format strings on the host, so the image carries
// no sentences). `L`: serving; `S SYNS DATAGRAMS`: what the stack
// dropped, counted; `C N`: `--max-connections` capped at N; `P N`: the
// peak stack; `E K`: error K (the runner's ERRORS table names them).
const E_NO_DEVICE: u32 = 1;
const E_GATEWAY: u32 = 2;
const E_LISTEN: u32 = 3;
const E_BIND: u32 = 4;
const E_OTHER_MODE: u32 = 5;
const E_SETTINGS: u32 = 6;

/// Reports error `kind` and exits with `code`.
fn error(kind: u32, code: u32) -> ! {
    out::line_num(b"E ", kind, b"");
    hw::host_exit(code)
}

/// Sleeps on the LAN9118's interrupt and SysTick; asks the server to stop
/// once the runner's stop file exists.
struct Idle<'c> {
    clock: &'c FreeRun,
    stop: Option<&'c [u8]>,
    /// The clock's raw count at the last look for the stop file.
    last_check: Cell<u32>,
    stopping: Cell<bool>,
}

impl Idle<'_> {
    fn stop_requested(&self) -> bool {
        if self.stopping.get() {
            return true;
        }
        let now = self.clock.ticks();
        if now.wrapping_sub(self.last_check.get()) < STOP_CHECK_TICKS {
            return false;
        }
        self.last_check.set(now);
        if self.stop.is_some_and(hw::host_file_exists) {
            self.stopping.set(true);
            FLAG.request();
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

fn run(cfg: &config::Config) -> u32 {
    let clock = FreeRun::new();
    let mut frames = Frames::new();
    let mut device = Lan9118::new(&mut frames);
    let mac = [0x02, 0, 0, 0, 0, 0x01];
    if device.init(mac).is_err() {
        error(E_NO_DEVICE, 1);
    }
    hw::start_ticks(TICK);
    let mut config = Config::new(EthernetAddress(mac).into());
    config.random_seed = clock.ticks().into();
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new((*cfg.addr.ip()).into(), 24));
    });
    if let Some(gw) = cfg.gateway {
        if iface.routes_mut().add_default_ipv4_route(gw).is_err() {
            error(E_GATEWAY, 1);
        }
    }
    let idle = Idle {
        clock: &clock,
        stop: cfg.stop_path(),
        last_check: Cell::new(0u32.wrapping_sub(STOP_CHECK_TICKS)),
        stopping: Cell::new(false),
    };
    let ok = match cfg.proto {
        Proto::Tcp => tcp_echo(cfg, iface, device, idle, &clock),
        Proto::Udp => udp_echo(cfg, iface, device, idle, &clock),
    };
    if ok { 0 } else { 1 }
}

#[inline(never)]
fn tcp_echo(
    cfg: &config::Config,
    iface: Interface,
    device: Lan9118<'_>,
    idle: Idle<'_>,
    clock: &FreeRun,
) -> bool {
    let mut bufs = [[[0u8; TCP_BUFFER]; 2]; POOL];
    let mut storage = Storage::<{ POOL }>::default();
    let stack: Net<'_, '_> = Stack::new(iface, device, &mut storage, idle, clock);
    let max = usize::from(cfg.max_connections).min(MAX_CONNECTIONS);
    if usize::from(cfg.max_connections) > MAX_CONNECTIONS {
        out::line_num(b"C ", MAX_CONNECTIONS as u32, b"");
    }
    let when_full = cfg.when_full;
    let options =
        Options { backlog: BACKLOG, when_full, max_connections: Some(max), ..Options::default() };
    let sockets = bufs.iter_mut().map(|[rx, tx]| {
        tcp::Socket::new(tcp::SocketBuffer::new(&mut rx[..]), tcp::SocketBuffer::new(&mut tx[..]))
    });
    let Ok(listener) = stack.listen(cfg.addr.port(), sockets, options) else {
        error(E_LISTEN, 1);
    };
    out::line(&[b"L"]);
    let service = service_fn(|_: &IpEndpoint| Echo);
    let poll = Duration::from_millis(500);
    let ok = match super::MODE {
        Mode::Sync => {
            let mut server: TcpServer<'_, '_, _> = listener.into_server(service, &FLAG);
            server.serve_forever(poll).is_ok()
        }
        Mode::Event => {
            let config = EventServerConfig {
                when_full: if when_full == WhenFull::Refuse {
                    sockserv::WhenFull::Refuse
                } else {
                    sockserv::WhenFull::Wait
                },
                shutdown_grace: Duration::from_millis(500),
                ..EventServerConfig::default()
            };
            let pool = FixedPool::<EVENT_BUFFER, EVENT_BUFFERS>::new();
            let mut server: EventTcpServer<'_, '_, _, _, MAX_CONNECTIONS> =
                listener.into_event_server(service, &FLAG, pool, config);
            server.serve_forever(poll).is_ok()
        }
    };
    stack.linger(LINGER);
    report(&stack);
    ok
}

#[inline(never)]
fn udp_echo(
    cfg: &config::Config,
    iface: Interface,
    device: Lan9118<'_>,
    idle: Idle<'_>,
    clock: &FreeRun,
) -> bool {
    let mut rx_meta = [udp::PacketMetadata::EMPTY; 4];
    let mut tx_meta = [udp::PacketMetadata::EMPTY; 4];
    let mut rx = [0u8; UDP_BUFFER];
    let mut tx = [0u8; UDP_BUFFER];
    let mut storage = Storage::<1>::default();
    let stack: Net<'_, '_> = Stack::new(iface, device, &mut storage, idle, clock);
    let socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx[..]),
    );
    let Ok(socket) = stack.bind_udp(cfg.addr.port(), socket) else {
        error(E_BIND, 1);
    };
    out::line(&[b"L"]);
    let service = service_fn(|_: &IpEndpoint| Echo);
    // A datagram longer than the buffer would be reported as truncated;
    // without fragmentation none is longer than MAX_DATAGRAM.
    let mut server: UdpServer<'_, '_, _, MAX_DATAGRAM> = socket.into_server(service, &FLAG);
    let ok = server.serve_forever(Duration::from_millis(500)).is_ok();
    drop(server);
    report(&stack);
    ok
}

/// What the stack dropped, counted (the runner words it as
/// `smoltcp_echo` does; the tests that drive either server read it).
fn report(stack: &Net<'_, '_>) {
    let stats = stack.stats();
    let (mut syns, mut datagrams) = ([0u8; 10], [0u8; 10]);
    out::line(&[
        b"S ",
        out::num(stats.syns_dropped, &mut syns),
        b" ",
        out::num(stats.datagrams_lost, &mut datagrams),
    ]);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    out::line(&[b"panic"]);
    hw::host_exit(101)
}
