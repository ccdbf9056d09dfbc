//! `python3 -m http.server` on sockserv: the same command line and first
//! line, HTTP/1.1 with keep-alive.
//!
//! ```text
//! cargo run --release --example http_server -- [PORT] [-b ADDRESS] [-d DIRECTORY]
//!     [--mode sync|threading|forking|event] [--pool N] [--workers N]
//!     [--max-connections N] [--tls-cert PEM --tls-key PEM]
//! ```
//!
//! Serves DIRECTORY (default: the current one) on PORT (8000) at ADDRESS
//! (default: `::` taking IPv4 too, as Python's dual-stack server does
//! where `getaddrinfo` puts IPv6 first; `0.0.0.0` without IPv6), and
//! prints Python's first line,
//! `Serving HTTP on :: port 8000 (http://[::]:8000/) ...`
//! (`[...]` in the URL for an IPv6 address). SIGINT / SIGTERM stop it with
//! exit status 0; a usage error exits 2.
//!
//! Answers as CPython's `SimpleHTTPRequestHandler` does: `GET` and `HEAD`;
//! a directory without its trailing `/` redirected (301); `index.html` or
//! `index.htm` for a directory, else Python's HTML listing (names sorted
//! case-insensitively, escaped, links percent-encoded, `/` after
//! directories, `@` after links); files with Python's `Content-Type`
//! guesses, `Content-Length` and `Last-Modified`; `If-Modified-Since`
//! (ignored beside `If-None-Match`) answered 304; other methods 501; Python's
//! HTML error page for 404 / 403 / 501 / 416. Query and fragment are
//! ignored for the path; `..` (also `%2e%2e`, and `%2f` as a separator)
//! stops at the top of the directory, as in Python.
//!
//! Where it differs from Python 3.13: HTTP/1.1 (keep-alive, pipelining)
//! instead of HTTP/1.0; errors keep the connection; a single byte `Range`
//! is answered 206 with `Content-Range` (`bytes=a-b`, `a-`, `-n`;
//! `If-Range` honoured with the `Last-Modified` date), an unsatisfiable one
//! 416, several ranges with the whole file (200); a path is opened by the
//! kernel beneath the directory (`openat2` with `RESOLVE_BENEATH`), so a
//! symbolic link that points outside it (or is absolute) is not followed:
//! 404 (Python follows any link); a file or directory the server may not
//! read is 403 (Python: 404); no access log.
//!
//! Modes: `threading` (the default, as Python's `ThreadingHTTPServer`;
//! `--pool N` for N worker threads), `sync` (one connection at a time),
//! `forking`, `event` (epoll loops, `--workers N` of them; bodies are
//! streamed as the peer reads, in 64 KiB pieces read with `pread`). In
//! the threading and forking modes a file body leaves with `sendfile(2)`.
//! `--tls-cert` / `--tls-key` serve HTTPS in the blocking modes (event mode
//! refuses them: exit 2).

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};
use sockserv::std_adapter::event::{EventOptions, EventTcpServer, Workers};
use sockserv::std_adapter::{
    Address, BindAddr, Builder, Close, Conn, Forking, Pool, Sequential, ShutdownHandle, Strategy,
    Threading,
};
use sockserv::{Service, StreamHandler, service_fn};
use sockserv_http::{Http, HttpEvents};
use sockserv_tls::{self as tls, rustls::ServerConfig};

#[path = "http_files/mod.rs"]
mod http_files;
use http_files::{Files, FilesEvents, Source};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Sync,
    Threading,
    Forking,
    Event,
}

/// A file server on sockserv: `python3 -m http.server`'s twin.
#[derive(Parser, Debug)]
struct Args {
    /// bind to this port
    #[arg(default_value_t = 8000)]
    port: u16,
    /// bind to this address (default: all interfaces)
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    bind: Option<String>,
    /// serve this directory (default: current directory)
    #[arg(short = 'd', long = "directory")]
    directory: Option<PathBuf>,
    /// How requests are served.
    #[arg(long, value_enum, default_value = "threading")]
    mode: Mode,
    /// Threading mode: N worker threads instead of a thread per connection.
    #[arg(long)]
    pool: Option<NonZeroUsize>,
    /// Event mode: how many event loops serve the port (0: one per CPU).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// A cap on open connections (threading: threads; forking: children,
    /// default 40; event: the table, default 10,000).
    #[arg(long)]
    max_connections: Option<NonZeroUsize>,
    /// Serve HTTPS with this PEM certificate chain (blocking modes).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The handler size: each of `Http`'s three buffers (the longest request
/// head it takes).
const HEAD: usize = 8 * 1024;

/// Event mode: the stack buffer a body piece is read into (one `pread`,
/// then written, per piece).
const STREAM: usize = 64 * 1024;

fn main() -> ExitCode {
    let args = Args::parse();
    let tls = match tls_config(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("http_server: {e}");
            return ExitCode::from(1);
        }
    };
    if tls.is_some() && args.mode == Mode::Event {
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--tls-cert serves HTTPS in the sync, threading and forking modes (not event)",
            )
            .exit();
    }
    match run(&args, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_server: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args, tls: Option<Arc<ServerConfig>>) -> Result<(), String> {
    let dir = match &args.directory {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|e| e.to_string())?,
    };
    let source =
        Arc::new(Source::disk(&dir).map_err(|e| format!("cannot serve {}: {e}", dir.display()))?);
    let address = address(args.bind.as_deref(), args.port)?;
    let grace = Close::Grace(Duration::from_secs(1));
    let strategy: Strategy = match args.mode {
        Mode::Sync => Sequential::new().into(),
        Mode::Threading if let Some(n) = args.pool => Pool::new(n).close(grace).into(),
        Mode::Threading => {
            let mut threading = Threading::new().close(grace);
            if let Some(cap) = args.max_connections {
                threading = threading.max_threads(cap);
            }
            threading.into()
        }
        Mode::Forking => {
            let mut forking = Forking::new().close(grace);
            if let Some(cap) = args.max_connections {
                forking = forking.max_children(cap);
            }
            forking.into()
        }
        Mode::Event => return serve_event(args, address, source),
    };
    let builder = Builder::new().only_v6(Some(false)).dispatch(strategy);
    if let Some(config) = tls {
        let service = service_fn(move |_| Http::<_, HEAD>::new(Files::new(Arc::clone(&source))));
        return serve(builder, address, tls::tls(config, service));
    }
    // sendfile through a second handle of the socket, except in sync mode:
    // there a wait must give way to a stop (Conn's cancellable writes),
    // which a blocking sendfile would not.
    let direct = args.mode != Mode::Sync;
    serve(builder, address, service_fn(move |_| Served::new(Arc::clone(&source), direct)))
}

/// The blocking handler: `Http` over [`Files`], with the connection's
/// socket given to `Files` for `sendfile`.
struct Served {
    http: Http<Files, HEAD>,
    direct: Option<Arc<OnceLock<OwnedFd>>>,
}

impl Served {
    fn new(source: Arc<Source>, direct: bool) -> Self {
        let files = Files::new(source);
        let direct = direct.then(|| files.direct());
        Self { http: Http::new(files), direct }
    }
}

impl StreamHandler<Conn> for Served {
    type Error = sockserv_http::Error<std::io::Error>;

    fn handle(&mut self, conn: &mut Conn) -> Result<(), Self::Error> {
        if let Some(direct) = &self.direct
            && let Ok(socket) = conn.as_fd().try_clone_to_owned()
        {
            let _ = direct.set(socket);
        }
        self.http.handle(conn)
    }
}

fn serve<Svc>(builder: Builder<Strategy>, address: SocketAddr, service: Svc) -> Result<(), String>
where
    Svc: Service<Address, Handler: StreamHandler<Conn> + Send> + Clone + Send + 'static,
{
    let mut server = builder.stream(address, service).map_err(|e| e.to_string())?;
    let stop = server.shutdown_handle();
    announce(server.server_address(), &stop)?;
    server.serve_forever(Duration::from_millis(500)).map_err(|e| e.to_string())
}

fn serve_event(args: &Args, address: SocketAddr, source: Arc<Source>) -> Result<(), String> {
    let mut options = EventOptions {
        max_connections: args.max_connections.unwrap_or(NonZeroUsize::new(10_000).unwrap()),
        workers: NonZeroUsize::new(args.workers).map_or(Workers::PerCpu, Workers::Count),
        ..EventOptions::default()
    };
    options.server.shutdown_grace = Duration::from_secs(1);
    let service = service_fn(move |_| {
        HttpEvents::new(FilesEvents::new(Arc::clone(&source))).with_stream_buffer::<STREAM>()
    });
    let mut server: EventTcpServer<_> = Builder::new()
        .only_v6(Some(false))
        .event(address, service, options)
        .map_err(|e| e.to_string())?;
    let stop = server.shutdown_handle();
    announce(server.server_address(), &stop)?;
    server.serve_forever(Duration::from_millis(500)).map_err(|e| e.to_string())
}

/// Stops on SIGINT / SIGTERM and prints Python's first line.
fn announce(address: &BindAddr, stop: &ShutdownHandle) -> Result<(), String> {
    stop.stop_on_termination().map_err(|e| e.to_string())?;
    let BindAddr::Inet(address) = address else { return Err("not an IP address".into()) };
    let (host, port) = (address.ip(), address.port());
    let url_host = if address.is_ipv6() { format!("[{host}]") } else { host.to_string() };
    let mut out = std::io::stdout().lock();
    writeln!(out, "Serving HTTP on {host} port {port} (http://{url_host}:{port}/) ...")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

/// Where to listen: `-b HOST`'s first address (std's resolver, as
/// Python's `getaddrinfo`); without it `[::]` taking IPv4 too (dual stack,
/// as Python's `DualStackServer`), or `0.0.0.0` where IPv6 is unavailable.
fn address(bind: Option<&str>, port: u16) -> Result<SocketAddr, String> {
    if let Some(host) = bind {
        let mut found = (host, port).to_socket_addrs().map_err(|e| format!("{host}: {e}"))?;
        return found.next().ok_or_else(|| format!("{host}: no address"));
    }
    let ipv6 = std::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).is_ok();
    let any = if ipv6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
    Ok(SocketAddr::new(any, port))
}

/// The TLS configuration of `--tls-cert` / `--tls-key`, or a one-line
/// error naming the file at fault.
fn tls_config(args: &Args) -> Result<Option<Arc<ServerConfig>>, sockserv_tls::PemError> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(Arc::new(tls::server_config_from_pem(cert, key)?))),
        _ => Ok(None),
    }
}
