//! A small web site served from memory by smoltcp over a Linux TAP device:
//! the `http_server` example's handler (the same `Files` answers: index,
//! listings, types, ranges, 404/501 pages) on an embedded TCP/IP stack,
//! as a device without a file system would serve its pages.
//!
//! ```text
//! cargo run --release --features tap --example smoltcp_http -- --tap IFACE --addr IP:PORT
//!     [--mode sync|event]
//! ```
//!
//! smoltcp gets the address IP/24 on IFACE. Prints `listening on IP:PORT`
//! first; SIGINT / SIGTERM stop it with exit status 0. `--mode sync`
//! serves one connection at a time with the blocking `Http` handler
//! (keep-alive); `--mode event` serves up to 16 at once from the core's
//! `EventServer` with `HttpEvents` (bodies streamed as the peer reads).
//!
//! Try it by hand in a private network namespace (as root):
//! ```text
//! unshare --net bash
//! ip tuntap add dev tap0 mode tap && ip addr add 192.168.69.100/24 dev tap0 && ip link set tap0 up
//! cargo run --release --features tap --example smoltcp_http -- --tap tap0 --addr 192.168.69.1:80 &
//! curl http://192.168.69.1/
//! ```

use std::io::Write as _;
use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sockserv::StdClock;
use sockserv::driver::Clock;
use sockserv::smoltcp_adapter::smoltcp::iface::{Config, Interface};
use sockserv::smoltcp_adapter::smoltcp::socket::tcp;
use sockserv::smoltcp_adapter::smoltcp::wire::{EthernetAddress, IpCidr, IpEndpoint};
use sockserv::smoltcp_adapter::{
    Options, Stack, Storage, TapDevice, TapWait, TcpEventSource, smoltcp,
};
use sockserv::{EventServer, EventServerConfig, FixedPool, FixedSlots, ShutdownFlag, service_fn};
use sockserv_http::{Http, HttpEvents};

#[path = "http_files/mod.rs"]
mod http_files;
use http_files::{Files, FilesEvents, Source};

/// The site: paths without the leading `/`.
static SITE: &[(&str, &[u8])] = &[
    ("index.html", b"<!DOCTYPE html>\n<html><head><title>sockserv on smoltcp</title>\n<link rel=\"stylesheet\" href=\"style.css\"></head>\n<body><h1>Hello from smoltcp</h1><p><a href=\"docs/\">docs</a></p></body></html>\n"),
    ("style.css", b"body { font-family: sans-serif; }\n"),
    ("docs/readme.txt", b"Served from memory by sockserv's HTTP layer on smoltcp.\n"),
    ("docs/data.json", b"{\"device\": \"tap\"}\n"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Sync,
    Event,
}

/// A web site from memory on smoltcp over a TAP device.
#[derive(Parser, Debug)]
struct Args {
    /// The existing TAP device to use.
    #[arg(long)]
    tap: String,
    /// smoltcp's IPv4 address (a /24) and the port to serve.
    #[arg(long)]
    addr: SocketAddrV4,
    /// How requests are served.
    #[arg(long, value_enum, default_value = "sync")]
    mode: Mode,
}

static FLAG: ShutdownFlag = ShutdownFlag::new();

const BACKLOG: usize = 4;
/// Event mode: connections served at once, and the buffers they share.
const MAX_CONNECTIONS: usize = 16;
const POOL: usize = BACKLOG + MAX_CONNECTIONS + 2;
const TCP_BUFFER: usize = 16 * 1024;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smoltcp_http: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let mut device = TapDevice::new(&args.tap)
        .map_err(|e| format!("cannot open TAP device {}: {e}", args.tap))?;
    let clock = StdClock::new();
    let mut config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0, 0x01]).into());
    config.random_seed = u64::from(std::process::id()) ^ clock.now().as_nanos() as u64;
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::from_micros(0));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new((*args.addr.ip()).into(), 24));
    });
    let wait = TapWait::new(Duration::from_millis(50), move || {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping {
            FLAG.request();
        }
        stopping
    });
    let storage = Box::leak(Box::new(Storage::<{ POOL + 2 }>::new()));
    let stack = Stack::new(iface, device, storage, wait, clock);
    let source = Arc::new(Source::Memory(SITE));
    let options = Options { backlog: BACKLOG, ..Options::default() };
    let listener =
        stack.listen(args.addr.port(), tcp_pool(), options).map_err(|e| e.to_string())?;
    announce(args)?;
    let poll = Duration::from_millis(500);
    let result = match args.mode {
        Mode::Sync => {
            let service =
                service_fn(move |_: &IpEndpoint| Http::<_>::new(Files::new(Arc::clone(&source))));
            listener.into_server(service, &FLAG).serve_forever(poll).map_err(|e| e.to_string())
        }
        Mode::Event => {
            let service = service_fn(move |_: &IpEndpoint| {
                HttpEvents::new(FilesEvents::new(Arc::clone(&source)))
            });
            let source = TcpEventSource::new(listener);
            let clock = source.clock();
            let mut server = EventServer::new(
                source,
                service,
                clock,
                &FLAG,
                FixedSlots::<_, MAX_CONNECTIONS>::new(),
                FixedPool::<TCP_BUFFER, 4>::new(),
                EventServerConfig::default(),
            );
            server.serve_forever(poll).map_err(|e| e.to_string())
        }
    };
    // smoltcp sends only while polled: finish what closed connections queued.
    stack.linger(Duration::from_secs(2));
    result
}

/// The TCP listener's pool of sockets, their buffers leaked (they live as
/// long as the program, as a firmware's statics do).
fn tcp_pool() -> Vec<tcp::Socket<'static>> {
    let buffer = || vec![0u8; TCP_BUFFER].leak();
    (0..POOL)
        .map(|_| {
            tcp::Socket::new(
                tcp::SocketBuffer::new(&mut buffer()[..]),
                tcp::SocketBuffer::new(&mut buffer()[..]),
            )
        })
        .collect()
}

fn announce(args: &Args) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", args.addr)
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}
