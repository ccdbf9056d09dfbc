//! The echo server: every protocol and mode of sockserv's std adapter.
//!
//! ```text
//! cargo run --release --example echo -- [--proto tcp|udp|unix|unix-dgram]
//!     [--mode sync|threading|forking|event] [--addr HOST:PORT] [--path PATH]
//! ```
//!
//! Prints `listening on ADDR` first (the real port after port 0), echoes
//! until the client closes its side (stream) or each datagram back whole
//! (datagram), and exits 0 on SIGINT/SIGTERM, removing a Unix socket path.
//! `--mode event` serves streams from one thread with epoll, a connection
//! table of up to `--max-connections` (default 10,000) and a shared
//! buffer pool, or from
//! `--workers N` such loops (`0`: one per CPU), which share the port as
//! `--port-sharing` says and print what each served at exit
//! (`loop 0: 123 connections`, on stderr). At exit any mode that reached
//! its connection cap says how often (`echo: connection cap reached 2
//! times`, on stderr). `--mode threading --pool N`
//! serves from N worker threads (a request waits for one when all are
//! busy and N more wait) instead of a thread per request.
//! `--tls-cert PEM --tls-key PEM` serves streams over TLS (rustls) in
//! every stream mode (sync, threading with or without `--pool`, forking,
//! event with any `--workers`): the same echo, behind a handshake.
//!
//! Socket activation: started by a service manager (systemd, or
//! `systemd-socket-activate -l 9999 echo`; `--datagram` for UDP), it
//! serves the socket it was passed (`LISTEN_FDS`) instead of binding, a
//! stream or a datagram server as the socket is; `--fd N` serves an
//! inherited descriptor by number.
//!
//! SIGHUP restarts without refusing anyone: between two requests the
//! server starts a new echo (the same program and arguments) with the
//! listening socket passed as fd 3 (`LISTEN_FDS`), prints `handed over to
//! pid N`, stops accepting, lets running requests finish (`--grace`,
//! default 1 s) and exits; the new process accepts from the same queue.

use std::io::Write as _;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};
use sockserv::std_adapter::activation::{self, Inherited};
use sockserv::std_adapter::event::{EventOptions, EventTcpServer, PortSharing, Workers};
use sockserv::std_adapter::{Address, Conn};
use sockserv::std_adapter::{
    BindAddr, BindError, Builder, Close, Forking, IntoBindAddr, Pool, Sequential, ShutdownHandle,
    Strategy, Threading,
};
use sockserv::{Service, ServiceExt, StreamHandler, service_fn};
use sockserv_tls::{self as tls, rustls::ServerConfig};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
    Unix,
    UnixDgram,
}

impl Proto {
    fn is_datagram(self) -> bool {
        matches!(self, Self::Udp | Self::UnixDgram)
    }
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
    /// A cap on open connections: at it the server stops accepting until
    /// one closes (new clients wait in the kernel's backlog). Threading:
    /// `max_threads` (default none); forking: `max_children` (default 40);
    /// event: the connection table's capacity (default 10,000); sync
    /// serves one at a time anyway.
    #[arg(long)]
    max_connections: Option<NonZeroUsize>,
    /// Serve inherited descriptor N (a bound socket; listening if a
    /// stream) instead of binding.
    #[arg(long)]
    fd: Option<i32>,
    /// Seconds running requests get to finish when the server stops
    /// (threading, forking, event; a restart's drain).
    #[arg(long, default_value_t = 1.0)]
    grace: f64,
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
    /// Threading mode: N worker threads instead of a thread per request.
    #[arg(long)]
    pool: Option<NonZeroUsize>,
    /// Streams in the blocking modes: serve TLS with this PEM certificate
    /// chain (leaf first).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds a client may take to complete the TLS handshake.
    #[arg(long, default_value_t = 10.0)]
    tls_handshake_timeout: f64,
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
    shared::STREAM_BUFFER.store(args.buffer as usize, Ordering::Relaxed);
    let tls = match shared::tls_config(args.tls_cert.as_deref(), args.tls_key.as_deref()) {
        Ok(tls) => {
            let timeout = Duration::from_secs_f64(args.tls_handshake_timeout.max(0.001));
            tls.map(|config| (config, timeout))
        }
        Err(e) => {
            eprintln!("echo: {e}");
            return ExitCode::from(1);
        }
    };
    if tls.is_some() && args.proto.is_datagram() {
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--tls-cert serves streams (tcp, unix), not datagrams",
            )
            .exit();
    }
    let result = match inherited(&args) {
        Ok(Some(socket)) => {
            let proto = if socket.is_datagram() { Proto::Udp } else { Proto::Tcp };
            run(&args, proto, socket, tls)
        }
        Ok(None) => match address(&args) {
            Ok(address) => run(&args, args.proto, address, tls),
            Err(e) => Err(Failure::Bind(e)),
        },
        Err(e) => Err(Failure::Io(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::from(1)
        }
    }
}

/// The socket a service manager passed (`LISTEN_FDS`), or `--fd`'s.
fn inherited(args: &Args) -> std::io::Result<Option<Inherited>> {
    let passed = activation::listen_fds()?.into_iter().next();
    match args.fd {
        Some(fd) if passed.is_none() => {
            if fd < 3 {
                return Err(std::io::Error::other(format!("--fd {fd} is a standard stream")));
            }
            // SAFETY: `--fd` names a descriptor the launcher passed to this
            // process; nothing in it has opened or used that number.
            Ok(Some(unsafe { Inherited::from_raw_fd(fd) }))
        }
        _ => Ok(passed),
    }
}

fn address(args: &Args) -> Result<BindAddr, BindError> {
    match args.proto {
        Proto::Tcp | Proto::Udp => args.addr.as_str().into_bind_addr(),
        Proto::Unix | Proto::UnixDgram => Ok(BindAddr::Unix(
            args.path.clone().unwrap_or_else(|| std::env::temp_dir().join("sockserv-echo.sock")),
        )),
    }
}

fn run(
    args: &Args,
    proto: Proto,
    address: impl IntoBindAddr,
    tls: Option<(Arc<ServerConfig>, Duration)>,
) -> Result<(), Failure> {
    // Closing must not wait for clients that keep their connection
    // open: a signal stops the server within `--grace` (forking: the
    // children still serving get it too, then SIGTERM, so no process of
    // the example's is left once it has exited).
    let grace = Duration::from_secs_f64(args.grace.max(0.0));
    match args.mode {
        Mode::Sync => serve(proto, address, Sequential::new(), tls),
        Mode::Threading if let Some(n) = args.pool => {
            serve(proto, address, Pool::new(n).close(Close::Grace(grace)), tls)
        }
        Mode::Threading => {
            let mut threading = Threading::new().close(Close::Grace(grace));
            if let Some(cap) = args.max_connections {
                threading = threading.max_threads(cap);
            }
            serve(proto, address, threading, tls)
        }
        Mode::Forking => {
            let mut forking = Forking::new().close(Close::Grace(grace));
            if let Some(cap) = args.max_connections {
                forking = forking.max_children(cap);
            }
            serve(proto, address, forking, tls)
        }
        Mode::Event => serve_event(proto, address, event_options(args, grace), tls),
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

fn serve(
    proto: Proto,
    address: impl IntoBindAddr,
    strategy: impl Into<Strategy>,
    tls: Option<(Arc<ServerConfig>, Duration)>,
) -> Result<(), Failure> {
    let restart = Restart::default();
    let service = service_fn(|_| Echo).on_service_actions(restart.check());
    let builder = Builder::new().dispatch(strategy.into());
    let poll = Duration::from_millis(500);
    match proto {
        Proto::Tcp | Proto::Unix => match tls {
            Some((config, timeout)) => {
                let service = tls::tls(config, service).handshake_timeout(timeout);
                serve_stream(builder, address, &restart, service)
            }
            None => serve_stream(builder, address, &restart, service),
        },
        Proto::Udp | Proto::UnixDgram => {
            let mut server = builder.datagram(address, service).map_err(Failure::Bind)?;
            let stop = server.shutdown_handle();
            restart.arm(&stop, server.datagram_socket().socket())?;
            announce(server.server_address(), &stop)?;
            let served = server.serve_forever(poll).map_err(Failure::Io);
            say_cap_reached(server.cap_reached());
            served
        }
    }
}

/// The stream server of the blocking modes, `service` plain or behind TLS.
fn serve_stream<Svc>(
    builder: Builder<Strategy>,
    address: impl IntoBindAddr,
    restart: &Restart,
    service: Svc,
) -> Result<(), Failure>
where
    Svc: Service<Address, Handler: StreamHandler<Conn> + Send> + Clone + Send + 'static,
{
    let mut server = builder.stream(address, service).map_err(Failure::Bind)?;
    let stop = server.shutdown_handle();
    restart.arm(&stop, server.listener().socket())?;
    announce(server.server_address(), &stop)?;
    let served = server.serve_forever(Duration::from_millis(500)).map_err(Failure::Io);
    say_cap_reached(server.cap_reached());
    served
}

/// At exit, on stderr: how many times the server stopped accepting at its
/// connection cap (`echo: connection cap reached N times`), if it did.
fn say_cap_reached(times: u64) {
    if times > 0 {
        eprintln!("echo: connection cap reached {times} times");
    }
}

/// SIGHUP: a successor on the same socket, then a stop between requests.
#[derive(Clone, Default)]
struct Restart {
    hup: Arc<AtomicBool>,
    /// The stop, and the server's socket by number: a duplicate held here
    /// would live on in forked children and keep the port after a stop.
    parts: Arc<OnceLock<(ShutdownHandle, RawFd)>>,
}

impl Restart {
    /// Watches SIGHUP for the server that `stop` stops, serving `socket`.
    fn arm(&self, stop: &ShutdownHandle, socket: &impl AsFd) -> Result<(), Failure> {
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&self.hup))
            .map_err(Failure::Io)?;
        let _ = self.parts.set((stop.clone(), socket.as_fd().as_raw_fd()));
        Ok(())
    }

    /// The `service_actions` hook: after a SIGHUP, start the successor and
    /// stop; if it cannot start, say so and keep serving.
    fn check(&self) -> impl Fn() + Clone + Send + 'static {
        let this = self.clone();
        move || {
            if !this.hup.swap(false, Ordering::SeqCst) {
                return;
            }
            let Some(&(ref stop, fd)) = this.parts.get() else { return };
            // SAFETY: this hook runs inside the server's `serve_forever`,
            // so the server, which owns socket `fd`, is alive.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            match activation::spawn_successor(&[fd], &["echo"]) {
                Ok(pid) => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "handed over to pid {pid}").and_then(|()| out.flush());
                    stop.request();
                }
                Err(e) => eprintln!("echo: restart failed, serving on: {e}"),
            }
        }
    }
}

/// Event mode: streams on the epoll-driven connection table; datagrams on
/// the datagram server, which already is a non-blocking loop over one
/// socket (one datagram per readiness, no per-client state).
fn serve_event(
    proto: Proto,
    address: impl IntoBindAddr,
    options: EventOptions,
    tls: Option<(Arc<ServerConfig>, Duration)>,
) -> Result<(), Failure> {
    match proto {
        Proto::Tcp | Proto::Unix => {
            let restart = Restart::default();
            let service = service_fn(|_| Echo).on_service_actions(restart.check());
            match tls {
                Some((config, timeout)) => {
                    let service = tls::tls(config, service).handshake_timeout(timeout);
                    serve_event_stream(address, options, &restart, service)
                }
                None => serve_event_stream(address, options, &restart, service),
            }
        }
        Proto::Udp | Proto::UnixDgram => serve(proto, address, Sequential::new(), None),
    }
}

/// The event-mode stream server, `service` plain or behind TLS.
fn serve_event_stream<Svc>(
    address: impl IntoBindAddr,
    options: EventOptions,
    restart: &Restart,
    service: Svc,
) -> Result<(), Failure>
where
    Svc: sockserv::Service<sockserv::std_adapter::Address, Handler: sockserv::EventHandler + Send>
        + Clone
        + Send,
{
    let poll = Duration::from_millis(500);
    let mut server: EventTcpServer<_> =
        Builder::new().event(address, service, options).map_err(Failure::Bind)?;
    let stop = server.shutdown_handle();
    restart.arm(&stop, server.listener().socket())?;
    announce(server.server_address(), &stop)?;
    let served = server.serve_forever(poll).map_err(Failure::Io);
    if server.workers() > 1 {
        for (i, s) in server.loop_stats().iter().enumerate() {
            eprintln!("loop {i}: {} connections", s.table.opened);
        }
    }
    let stats = server.loop_stats();
    say_cap_reached(stats.iter().map(|s| s.cap_reached).sum());
    served
}

fn event_options(args: &Args, grace: Duration) -> EventOptions {
    let port_sharing = match args.port_sharing {
        Sharing::ReusePort => PortSharing::ReusePort,
        Sharing::Exclusive => PortSharing::Exclusive,
    };
    let max_connections = args.max_connections.unwrap_or(NonZeroUsize::new(10_000).unwrap());
    let workers = NonZeroUsize::new(args.workers).map_or(Workers::PerCpu, Workers::Count);
    let mut options =
        EventOptions { max_connections, workers, port_sharing, ..EventOptions::default() };
    options.server.shutdown_grace = grace;
    // A stop (a signal, a restart) lets open connections finish.
    options.server.on_shutdown = sockserv::OnShutdown::Finish;
    options
}

/// Stops on SIGINT / SIGTERM (no thread: safe with fork) and prints the
/// first line.
fn announce(address: &BindAddr, stop: &ShutdownHandle) -> Result<(), Failure> {
    stop.stop_on_termination().map_err(Failure::Io)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {address}").and_then(|()| out.flush()).map_err(Failure::Io)
}
