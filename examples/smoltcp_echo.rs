//! The echo server on smoltcp, over an existing Linux TAP device.
//!
//! ```text
//! cargo run --release --features tap --example smoltcp_echo -- --tap IFACE --addr IP:PORT
//!     [--gateway IP] [--proto tcp|udp] [--mode sync|event]
//!     [--max-connections N] [--when-full drop|reset|refuse]
//!     [--tcp-buffer BYTES] [--ack-delay-ms MS] [--udp-slots N]
//! ```
//!
//! smoltcp gets the address IP/24 on IFACE and serves the same echo as the
//! `echo` example: every byte back until the client half-closes, then FIN
//! (tcp), or each datagram back whole (udp), up to 65,507 bytes (the
//! adapter's `large-datagrams` feature reassembles them; a datagram lost
//! in reassembly is reported on stderr as it happens). Prints
//! `listening on IP:PORT` first; SIGINT / SIGTERM stop it with exit status
//! 0 (within the 50 ms tick of the TAP wait), even while a client holds an
//! idle connection (in sync mode a read or write that must wait fails with
//! `Interrupted`), and it says on stderr how many SYNs it dropped and
//! datagrams it lost.
//!
//! `--mode event` serves TCP from the core's `EventServer`: a table of
//! `--max-connections` (16) connections sharing four 16 KiB buffers (a
//! connection holds one only while it has input or output) over a
//! `TcpEventSource`, idle connections closed after 5 minutes. The
//! listener offers no more than that many connections at once; the next
//! ones wait in the backlog (8) and, past it, meet `--when-full`: `drop`
//! (the default, as Linux: the SYN goes unanswered and the client
//! retries), `reset` (refused at once) or `refuse` (accepted, then closed
//! through the table-full hook). UDP needs no table: in event mode it is
//! served by the same non-blocking datagram loop as in sync mode.
//!
//! `--tcp-buffer` sizes each TCP socket's buffers (64 KiB; past that
//! smoltcp scales its window), `--ack-delay-ms` smoltcp's delayed ACK
//! (10 ms; 0 ACKs at once): the knobs `bench/tap_throughput.sh` turns.
//! `--udp-slots` sizes the UDP socket's receive and send queues in
//! datagrams (64, in 256 KiB each way): smoltcp drops a datagram that
//! arrives when the receive queue is full, so it must hold every datagram
//! that can arrive between two reads (one per client in flight). Each one
//! dropped is reported on stderr as it happens, and counted.
//!
//! Try it by hand in a private network namespace (as root):
//! ```text
//! unshare --net bash
//! ip tuntap add dev tap0 mode tap && ip addr add 192.168.69.100/24 dev tap0 && ip link set tap0 up
//! cargo run --release --features tap --example smoltcp_echo -- --tap tap0 --addr 192.168.69.1:7000 [--mode event] &
//! echo hello | nc -N 192.168.69.1 7000
//! ```

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sockserv::StdClock;
use sockserv::driver::{Clock, Datagram};
use sockserv::smoltcp_adapter::smoltcp::iface::{Config, Interface};
use sockserv::smoltcp_adapter::smoltcp::socket::{tcp, udp};
use sockserv::smoltcp_adapter::smoltcp::wire::{EthernetAddress, IpCidr, IpEndpoint};
use sockserv::smoltcp_adapter::{
    Loss, Options, Stack, Storage, TapDevice, TapWait, TcpEventSource, WhenFull, smoltcp,
};
use sockserv::{CappedSlots, EventServer, EventServerConfig, FixedPool, FixedSlots};
use sockserv::{Inline, Server, ShutdownFlag, service_fn};

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
    /// Event mode: how many connections are served at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=MAX_CONNECTIONS))]
    max_connections: u16,
    /// What a connection beyond the backlog gets.
    #[arg(long, value_enum, default_value = "drop")]
    when_full: Policy,
    /// Each TCP socket's receive and send buffers, in bytes (past 64 KiB
    /// smoltcp scales its window).
    #[arg(long, default_value_t = 64 * 1024)]
    tcp_buffer: usize,
    /// smoltcp's delayed ACK, in milliseconds (0: ACK at once).
    #[arg(long)]
    ack_delay_ms: Option<u64>,
    /// The UDP socket's queues, in datagrams each way.
    #[arg(long, default_value_t = UDP_SLOTS, value_parser = clap::value_parser!(u16).range(1..))]
    udp_slots: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Policy {
    Drop,
    Reset,
    Refuse,
}

impl From<Policy> for WhenFull {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Drop => WhenFull::Drop,
            Policy::Reset => WhenFull::Reset,
            Policy::Refuse => WhenFull::Refuse,
        }
    }
}

#[path = "shared/mod.rs"]
mod shared;
use shared::Echo;

static FLAG: ShutdownFlag = ShutdownFlag::new();

/// How many connections may wait to be accepted at once.
const BACKLOG: usize = 8;
/// Event mode: the largest `--max-connections`, and the buffers its
/// connections share (borrowed while a connection has input to consume or
/// output to queue; an idle connection holds none).
const MAX_CONNECTIONS: i64 = 256;
const MAX_TABLE: usize = MAX_CONNECTIONS as usize;
const EVENT_BUFFER: usize = 16 * 1024;
const EVENT_BUFFERS: usize = 4;
/// Sockets in the TCP listener's pool: sync mode serves one connection at
/// a time; event mode up to the table's capacity. Two more for closes
/// that are finishing.
const SYNC_POOL: usize = BACKLOG + 1 + 2;
const MAX_POOL: usize = BACKLOG + MAX_CONNECTIONS as usize + 2;
/// The largest UDP payload IPv4 carries, and the UDP socket's buffers
/// (room for two of them each way).
const MAX_DATAGRAM: usize = 65_507;
/// The UDP socket's payload buffer each way: four of the largest
/// datagrams, or 64 datagrams of 4 KiB (Linux's default receive buffer
/// holds about 208 KiB).
const UDP_BUFFER: usize = 4 * 64 * 1024;
/// The UDP socket's packet slots each way: 20 clients with a datagram
/// each in flight, three times over.
const UDP_SLOTS: u16 = 64;
/// How long a stopping server keeps sending what closed connections queued.
const LINGER: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args = Args::parse();
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
    // The adapter's TAP device: one receive buffer for every frame, and a
    // read error (the interface deleted) reported, never a panic.
    let mut device = TapDevice::new(&args.tap)
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
    let storage = Box::leak(Box::new(Storage::<{ MAX_POOL + 2 }>::new()));
    let stack = Stack::new(iface, device, storage, wait, clock);
    let port = args.addr.port();
    let service = service_fn(|_: &IpEndpoint| Echo);
    let poll = Duration::from_millis(500);
    stack.on_loss(report_loss);
    let result = match args.proto {
        Proto::Tcp => {
            let max = usize::from(args.max_connections);
            let options = Options {
                backlog: BACKLOG,
                when_full: args.when_full.into(),
                max_connections: Some(max),
                ..Options::default()
            };
            let result = match args.mode {
                Mode::Sync => {
                    let listener = stack
                        .listen(port, tcp_pool(SYNC_POOL, args), options)
                        .map_err(|e| e.to_string())?;
                    announce(args)?;
                    // On the stack's clock, given once to `Stack::new`.
                    let mut server = listener.into_server(service, &FLAG);
                    server.serve_forever(poll).map_err(|e| e.to_string())
                }
                Mode::Event => {
                    let listener = stack
                        .listen(port, tcp_pool(BACKLOG + max + 2, args), options)
                        .map_err(|e| e.to_string())?;
                    announce(args)?;
                    // The table's slots fixed at compile time and capped at
                    // run time (--max-connections); the buffers a pool fixed
                    // at compile time, as on a microcontroller: every
                    // connection shares EVENT_BUFFERS. (A firmware with a
                    // capacity fixed at compile time writes
                    // `listener.into_event_server(service, &FLAG, pool, config)`.)
                    let source = TcpEventSource::new(listener);
                    let clock = source.clock();
                    let mut server = EventServer::new(
                        source,
                        service,
                        clock,
                        &FLAG,
                        CappedSlots::new(FixedSlots::<_, MAX_TABLE>::new(), max),
                        FixedPool::<EVENT_BUFFER, EVENT_BUFFERS>::new(),
                        // `--when-full refuse`: accept and refuse through
                        // the table-full hook (the core's default stops
                        // accepting at a full table).
                        EventServerConfig {
                            when_full: if options.when_full == WhenFull::Refuse {
                                sockserv::WhenFull::Refuse
                            } else {
                                sockserv::WhenFull::Wait
                            },
                            ..EventServerConfig::default()
                        },
                    );
                    server.serve_forever(poll).map_err(|e| e.to_string())
                }
            };
            // smoltcp sends only while polled: finish what closed
            // connections queued before the process goes.
            stack.linger(LINGER);
            result
        }
        Proto::Udp => {
            let meta = || vec![udp::PacketMetadata::EMPTY; usize::from(args.udp_slots)].leak();
            let socket = udp::Socket::new(
                udp::PacketBuffer::new(&mut meta()[..], buffer(UDP_BUFFER)),
                udp::PacketBuffer::new(&mut meta()[..], buffer(UDP_BUFFER)),
            );
            let socket = stack.bind_udp(port, socket).map_err(|e| e.to_string())?;
            announce(args)?;
            // One byte more than the largest datagram IPv4 carries, so
            // that none is cut (the adapter's `large-datagrams` feature
            // reassembles them; a loss is told to the hook).
            let transport = Datagram { socket, buffer: vec![0u8; MAX_DATAGRAM + 1] };
            let dispatch = Inline::with_reply_buffer(vec![0u8; MAX_DATAGRAM]);
            let clock = transport.socket.clock();
            let mut server = Server::new(transport, service, clock, &FLAG, dispatch);
            server.serve_forever(poll).map_err(|e| e.to_string())
        }
    };
    let stats = stack.stats();
    eprintln!(
        "smoltcp_echo: {} SYNs dropped while the backlog was full, {} datagrams lost on arrival, \
         {} packets dropped for neighbours that never answered ARP, \
         {} times at --max-connections",
        stats.syns_dropped, stats.datagrams_lost, stats.unresolved, stats.connection_cap_reached
    );
    result
}

/// Says what smoltcp lost as it happens (a SYN dropped by the backlog
/// policy is ordinary flow control: only counted).
fn report_loss(loss: Loss) {
    match loss {
        Loss::Datagram { from, reason } => {
            eprintln!("smoltcp_echo: a datagram from {from} was lost: {reason:?}");
        }
        Loss::Unresolved { to } => {
            eprintln!("smoltcp_echo: a packet to {to} was dropped: it does not answer ARP");
        }
        _ => {}
    }
}

/// The TCP listener's pool of `k` sockets.
fn tcp_pool(k: usize, args: &Args) -> Vec<tcp::Socket<'static>> {
    (0..k)
        .map(|_| {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(buffer(args.tcp_buffer)),
                tcp::SocketBuffer::new(buffer(args.tcp_buffer)),
            );
            if let Some(ms) = args.ack_delay_ms {
                socket.set_ack_delay((ms > 0).then(|| smoltcp::time::Duration::from_millis(ms)));
            }
            socket
        })
        .collect()
}

fn announce(args: &Args) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", args.addr)
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}
