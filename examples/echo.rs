//! The echo server: every protocol and mode of sockserv's std adapter.
//!
//! ```text
//! cargo run --release --example echo -- [--proto tcp|udp|unix|unix-dgram]
//!     [--mode sync|threading|forking|event] [--addr HOST:PORT] [--path PATH]
//!     [--max-connections N] [--buffer BYTES]
//! ```
//!
//! Prints `listening on ADDR` first (the real port after port 0), echoes
//! until the client closes its side (stream) or each datagram back whole
//! (datagram), and exits 0 on SIGINT/SIGTERM, removing a Unix socket path.
//! `--mode event` serves streams from one thread with epoll and a fixed
//! connection table (`--max-connections`, default 10,000), or from
//! `--workers N` such loops (`0`: one per CPU), which share the port as
//! `--port-sharing` says and print what each served at exit
//! (`loop 0: 123 connections`, on stderr). `--mode threading --pool N`
//! serves from N pre-spawned worker threads (a request waits for one when
//! all are busy and N more wait) instead of a thread per request.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sockserv::FnService;
use sockserv::std_adapter::event::{EventOptions, EventTcpServer, PortSharing};
use sockserv::std_adapter::{
    BindAddr, BindError, Builder, Forking, IntoBindAddr, Pool, Sequential, ShutdownHandle,
    Strategy, Threading,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
    Unix,
    UnixDgram,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Sync,
    Threading,
    Forking,
    Event,
}

/// An echo server on sockserv.
#[derive(Parser, Debug)]
struct Args {
    /// The protocol.
    #[arg(long, value_enum, default_value = "tcp")]
    proto: Proto,
    /// How requests are served.
    #[arg(long, value_enum, default_value = "threading")]
    mode: Mode,
    /// HOST:PORT for tcp and udp (port 0: the system picks).
    #[arg(long, default_value = "127.0.0.1:9999")]
    addr: String,
    /// The socket path for unix and unix-dgram (default: sockserv-echo.sock
    /// in the temporary directory).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Event mode: the connection table's capacity (4 KiB + 4 KiB of
    /// buffers each).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Blocking modes (sync, threading, forking), streams: the echo's read
    /// buffer in bytes; each read takes at most this much and each write
    /// sends what one read got.
    #[arg(long, default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    buffer: u32,
    /// Event mode: how many event loops (threads) serve the port; 0 = one
    /// per CPU.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Event mode with several workers: a listener per loop
    /// (SO_REUSEPORT) or one shared (EPOLLEXCLUSIVE).
    #[arg(long, value_enum, default_value = "reuse-port")]
    port_sharing: Sharing,
    /// Threading mode: N pre-spawned workers instead of a thread per
    /// request.
    #[arg(long)]
    pool: Option<std::num::NonZeroUsize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Sharing {
    ReusePort,
    Exclusive,
}

#[path = "shared/mod.rs"]
mod shared;
use shared::Echo;

fn main() -> ExitCode {
    let args = Args::parse();
    shared::STREAM_BUFFER.store(args.buffer as usize, std::sync::atomic::Ordering::Relaxed);
    let address = match args.proto {
        Proto::Tcp | Proto::Udp => args.addr.as_str().into_bind_addr(),
        Proto::Unix | Proto::UnixDgram => Ok(BindAddr::Unix(
            args.path.clone().unwrap_or_else(|| std::env::temp_dir().join("sockserv-echo.sock")),
        )),
    };
    let address = match address {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo: cannot bind {}: {e}", args.addr);
            return ExitCode::from(1);
        }
    };
    let result = match args.mode {
        Mode::Sync => serve(args.proto, address, Sequential::new()),
        // Closing must not wait for clients that keep their connection
        // open: a signal stops the server within a second (forking: the
        // children still serving get `close_grace`, 1 s, then SIGTERM, so
        // no process of the example's is left once it has exited).
        Mode::Threading => match args.pool {
            None => serve(args.proto, address, Threading::new().block_on_close(false)),
            Some(n) => serve(args.proto, address, Pool::new(n).block_on_close(false)),
        },
        Mode::Forking => serve(args.proto, address, Forking::new().block_on_close(false)),
        Mode::Event => serve_event(args.proto, address, event_options(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::from(1)
        }
    }
}

/// Errors that end the example, each one line.
enum Failure {
    Bind(BindError),
    Io(std::io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bind(e) => write!(f, "{e}"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

fn serve(proto: Proto, address: BindAddr, strategy: impl Into<Strategy>) -> Result<(), Failure> {
    let service = FnService(|_| Echo);
    let builder = Builder::new().dispatch(strategy.into());
    let poll = Duration::from_millis(500);
    match proto {
        Proto::Tcp | Proto::Unix => {
            let mut server = builder.stream(address, service).map_err(Failure::Bind)?;
            announce(server.server_address(), &server.shutdown_handle())?;
            server.serve_forever(poll).map_err(Failure::Io)
        }
        Proto::Udp | Proto::UnixDgram => {
            let mut server = builder.datagram(address, service).map_err(Failure::Bind)?;
            announce(server.server_address(), &server.shutdown_handle())?;
            server.serve_forever(poll).map_err(Failure::Io)
        }
    }
}

/// Event mode: streams on the epoll-driven connection table; datagrams on
/// the datagram server, which already is a non-blocking loop over one
/// socket (one datagram per readiness, no per-client state).
fn serve_event(proto: Proto, address: BindAddr, options: EventOptions) -> Result<(), Failure> {
    let poll = Duration::from_millis(500);
    match proto {
        Proto::Tcp | Proto::Unix => {
            let service = FnService(|_| Echo);
            let mut server: EventTcpServer<_> =
                Builder::new().event(address, service, options).map_err(Failure::Bind)?;
            announce(server.server_address(), &server.shutdown_handle())?;
            let served = server.serve_forever(poll).map_err(Failure::Io);
            if server.workers() > 1 {
                for (i, s) in server.loop_stats().iter().enumerate() {
                    eprintln!("loop {i}: {} connections", s.table.opened);
                }
            }
            served
        }
        Proto::Udp | Proto::UnixDgram => serve(proto, address, Sequential::new()),
    }
}

fn event_options(args: &Args) -> EventOptions {
    let port_sharing = match args.port_sharing {
        Sharing::ReusePort => PortSharing::ReusePort,
        Sharing::Exclusive => PortSharing::Exclusive,
    };
    let max_connections = args.max_connections;
    EventOptions { max_connections, workers: args.workers, port_sharing, ..EventOptions::default() }
}

/// Stops on SIGINT / SIGTERM (no thread: safe with fork) and prints the
/// first line.
fn announce(address: &BindAddr, stop: &ShutdownHandle) -> Result<(), Failure> {
    stop.stop_on_termination().map_err(Failure::Io)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {address}").and_then(|()| out.flush()).map_err(Failure::Io)
}
