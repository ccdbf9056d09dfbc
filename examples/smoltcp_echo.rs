//! The echo server on smoltcp, over an existing Linux TAP device.
//!
//! ```text
//! cargo run --release --example smoltcp_echo -- --tap IFACE --addr IP:PORT
//!     [--gateway IP] [--proto tcp|udp] [--mode sync|event]
//! ```
//!
//! smoltcp gets the address IP/24 on IFACE and serves the same echo as the
//! `echo` example: every byte back until the client half-closes, then FIN
//! (tcp), or each datagram back whole (udp). Prints `listening on IP:PORT`
//! first; SIGINT / SIGTERM stop it with exit status 0 (within the 50 ms
//! tick of the TAP wait). `--mode event` waits for the core's event table.
//!
//! Try it by hand in a private network namespace (as root):
//! ```text
//! unshare --net bash
//! ip tuntap add dev tap0 mode tap && ip addr add 192.168.69.100/24 dev tap0 && ip link set tap0 up
//! cargo run --release --example smoltcp_echo -- --tap tap0 --addr 192.168.69.1:7000 &
//! echo hello | nc -N 192.168.69.1 7000
//! ```

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use embedded_io::{Read, Write};
use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{Device, Medium, TunTapInterface};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{EthernetAddress, IpCidr, IpEndpoint};
use sockserv::{
    Clock, Datagram, DatagramHandler, FnService, Inline, ReplyFull, ReplyWriter, Server,
    ShutdownFlag, Stream, StreamHandler,
};
use sockserv_smoltcp::{Options, Stack, StdClock, Storage, TapWait};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Sync,
    Event,
}

/// An echo server on smoltcp over a TAP device.
#[derive(Parser, Debug)]
struct Args {
    /// The existing TAP device to use.
    #[arg(long)]
    tap: String,
    /// smoltcp's IPv4 address (a /24) and the port to serve.
    #[arg(long)]
    addr: SocketAddrV4,
    /// A default IPv4 gateway.
    #[arg(long)]
    gateway: Option<Ipv4Addr>,
    /// The protocol.
    #[arg(long, value_enum, default_value = "tcp")]
    proto: Proto,
    /// How requests are served.
    #[arg(long, value_enum, default_value = "sync")]
    mode: Mode,
}

/// Sends every byte back until the client closes its side.
struct Echo;

impl<S: Read + Write> StreamHandler<S> for Echo {
    type Error = S::Error;
    fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    }
}

impl DatagramHandler for Echo {
    type Error = ReplyFull;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), ReplyFull> {
        reply.write_all(packet)
    }
}

static FLAG: ShutdownFlag = ShutdownFlag::new();

/// Sockets in the TCP listener's pool, and how many may wait at once.
const POOL: usize = 10;
const BACKLOG: usize = 8;
/// TCP buffers per socket.
const TCP_BUFFER: usize = 64 * 1024;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.mode == Mode::Event {
        eprintln!(
            "smoltcp_echo: --mode event is not available yet (it arrives with the core's event table)"
        );
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smoltcp_echo: {e}");
            ExitCode::from(1)
        }
    }
}

/// A buffer that lives as long as the program (no allocator needed by
/// smoltcp for it).
fn buffer(len: usize) -> &'static mut [u8] {
    vec![0u8; len].leak()
}

fn run(args: &Args) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let mut device = TunTapInterface::new(&args.tap, Medium::Ethernet)
        .map_err(|e| format!("cannot open TAP device {}: {e}", args.tap))?;
    let clock = StdClock::new();
    let mut config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0, 0x01]).into());
    config.random_seed = u64::from(std::process::id()) ^ clock.now().as_nanos() as u64;
    let now = smoltcp::time::Instant::from_micros(0);
    let mut iface = Interface::new(config, &mut device, now);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new((*args.addr.ip()).into(), 24));
    });
    if let Some(gw) = args.gateway {
        iface.routes_mut().add_default_ipv4_route(gw).map_err(|e| e.to_string())?;
    }
    // Wake the server within one tick of SIGINT / SIGTERM.
    let wait = TapWait::new(Duration::from_millis(50), move || {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping {
            FLAG.request();
        }
        stopping
    });
    let storage = Box::leak(Box::new(Storage::<{ POOL + 2 }>::new()));
    let stack = Stack::new(iface, device, storage, wait, clock);
    let port = args.addr.port();
    let service = FnService(|_: &IpEndpoint| Echo);
    let poll = Duration::from_millis(500);
    match args.proto {
        Proto::Tcp => {
            let pool = std::array::from_fn::<_, POOL, _>(|_| {
                tcp::Socket::new(
                    tcp::SocketBuffer::new(buffer(TCP_BUFFER)),
                    tcp::SocketBuffer::new(buffer(TCP_BUFFER)),
                )
            });
            let options = Options { backlog: BACKLOG, ..Options::default() };
            let listener = stack.listen(port, pool, options).map_err(|e| e.to_string())?;
            announce(args)?;
            let mut server = Server::new(Stream(listener), service, clock, &FLAG, Inline::new());
            server.serve_forever(poll).map_err(|e| e.to_string())
        }
        Proto::Udp => {
            let meta = || vec![udp::PacketMetadata::EMPTY; 16].leak();
            let socket = udp::Socket::new(
                udp::PacketBuffer::new(&mut meta()[..], buffer(64 * 1024)),
                udp::PacketBuffer::new(&mut meta()[..], buffer(64 * 1024)),
            );
            let socket = stack.bind_udp(port, socket).map_err(|e| e.to_string())?;
            let mtu = stack.with_device(|d| d.capabilities().ip_mtu());
            announce(args)?;
            // One byte more than the largest datagram the link carries.
            let transport = Datagram { socket, buffer: vec![0u8; mtu + 1] };
            let dispatch = Inline::with_reply_buffer(vec![0u8; mtu]);
            let mut server = Server::new(transport, service, clock, &FLAG, dispatch);
            server.serve_forever(poll).map_err(|e| e.to_string())
        }
    }
}

fn announce(args: &Args) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", args.addr)
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}
