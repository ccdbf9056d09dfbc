//! The HTTP layer's benchmark server: files of one directory over
//! `sockserv::http` in event mode, streamed from the file as the peer reads
//! (`Reply::start` + `EventRespond::fill` with `pread`), keep-alive and
//! pipelining; nothing else (no listings, no ranges: that is
//! `examples/http_server`).
//!
//! ```text
//! cargo run --release --example http_static -- --dir DIR [--addr 127.0.0.1:8000] [--workers N]
//! ```
//!
//! Prints `listening on ADDR` once it accepts.

use std::fs::File;
use std::io::Write as _;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use sockserv::service_fn;
use sockserv::std_adapter::Builder;
use sockserv::std_adapter::event::{EventOptions, EventTcpServer, Workers};
use sockserv_http::{BodyLength, EventRespond, HttpEvents, Reply, RequestHead};

#[derive(Parser)]
struct Args {
    /// The directory served.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: String,
    /// Event loops (each with its own listener on the port).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Most connections per loop.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
}

/// One connection's application state: the file being answered.
struct Files {
    root: Arc<Path>,
    file: Option<(File, u64)>,
    found: bool,
}

/// Why a connection failed (its `Debug` form is what the server reports).
#[derive(Debug)]
#[allow(dead_code, reason = "read through Debug in the server's report")]
enum Failure {
    Reply(sockserv_http::ReplyError),
    Io(std::io::ErrorKind),
}

impl From<sockserv_http::ReplyError> for Failure {
    fn from(e: sockserv_http::ReplyError) -> Self {
        Self::Reply(e)
    }
}

impl EventRespond for Files {
    type Error = Failure;

    fn head(&mut self, request: &RequestHead<'_, '_>) -> Result<(), Failure> {
        self.file = None;
        let path = request.target.split(['?', '#']).next().unwrap_or("");
        let safe = path.starts_with('/') && !path.split('/').any(|p| p == ".." || p == ".");
        self.found = request.method == "GET" || request.method == "HEAD";
        if safe && self.found {
            let file = File::open(self.root.join(&path[1..]))
                .and_then(|f| f.metadata().map(|m| (m.is_file(), m.len(), f)));
            if let Ok((true, len, f)) = file {
                self.file = Some((f, len));
            }
        }
        Ok(())
    }

    fn respond(&mut self, reply: &mut Reply<'_, '_>) -> Result<(), Failure> {
        match &self.file {
            Some((_, len)) => {
                let fields: [(&str, &[u8]); 1] = [("Content-Type", b"application/octet-stream")];
                reply.start(200, &fields, BodyLength::Known(*len))?;
            }
            None if self.found => reply.send(404, &[], b"not found\n")?,
            None => reply.send(405, &[("Allow", b"GET, HEAD")], b"")?,
        }
        Ok(())
    }

    fn fill(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Failure> {
        let Some((file, _)) = &self.file else { return Ok(0) };
        file.read_at(buf, offset).map_err(|e| Failure::Io(e.kind()))
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let root: Arc<Path> = Arc::from(args.dir.canonicalize()?);
    let options = EventOptions {
        max_connections: NonZeroUsize::new(args.max_connections).expect("at least 1"),
        workers: NonZeroUsize::new(args.workers).map_or(Workers::PerCpu, Workers::Count),
        ..EventOptions::default()
    };
    let service = service_fn(move |_| {
        let app = Files { root: root.clone(), file: None, found: false };
        HttpEvents::new(app).with_stream_buffer::<65536>()
    });
    let mut server: EventTcpServer<_> = Builder::new()
        .event(args.addr.as_str(), service, options)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let stop = server.shutdown_handle();
    stop.stop_on_termination()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", server.server_address())?;
    out.flush()?;
    drop(out);
    server.serve_forever(Duration::from_millis(500))
}
