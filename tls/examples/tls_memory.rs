//! What an event-mode TLS connection costs in memory: the figures of
//! `docs/DESIGN.md`'s TLS section.
//!
//! ```text
//! cargo build --release --example echo
//! cargo run --release -p sockserv-tls --example tls_memory -- [IDLE] [MID_HANDSHAKE]
//! ```
//! (defaults 10,000 and 1,000). A measurement tool, not an example to
//! copy: its counting allocator is the one `unsafe` of the tls crate's
//! tree (in-process RSS deltas are blurred by memory the allocator
//! reuses, so heap is counted instead). Makes a test certificate with `openssl`, then:
//!
//! 1. **Heap per session, in process** (a counting allocator): the
//!    handler `sockserv_tls::tls` makes for an event handler, driven
//!    through a whole handshake and one echo by a rustls client in memory
//!    (its output through `Outbox::gather`, as the table's outbox), then
//!    idle; the same after the ClientHello only (mid-handshake); and, for
//!    comparison, rustls's buffered `ServerConnection` fed the same way
//!    with `read_tls` / `write_tls` over slices.
//! 2. **Resident memory of the echo server** (`echo --mode event
//!    --tls-cert ...`, a process): VmRSS before and after IDLE clients
//!    each completed a handshake and one echo and then stay connected
//!    (each client keeps only its socket), and after MID_HANDSHAKE
//!    clients sent a ClientHello and nothing more.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use sockserv::{EventHandler, Outbox, Service, Step, service_fn};
use sockserv_tls::rustls::pki_types::pem::PemObject;
use sockserv_tls::rustls::pki_types::{CertificateDer, ServerName};
use sockserv_tls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, ServerConnection};
use sockserv_tls::{server_config_from_pem, tls};

/// Bytes allocated and not freed, process-wide.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator, counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Echo;

impl EventHandler for Echo {
    type Error = core::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        Ok(Step::consumed(out.write(input)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let idle = args.next().transpose()?.unwrap_or(10_000);
    let mid = args.next().transpose()?.unwrap_or(1_000);
    let (ca, cert, key) = certificate()?;
    let server_config = Arc::new(server_config_from_pem(&cert, &key)?);
    let client_config = client_config(&ca)?;
    in_process(&server_config, &client_config);
    echo_process(&cert, &key, &client_config, idle, mid)?;
    Ok(())
}

/// Part 1: heap per session, our event handler and rustls's buffered
/// connection, idle and mid-handshake.
fn in_process(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>) {
    const N: usize = 1000;
    let service = tls(Arc::clone(server), service_fn(|_| Echo));
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let inline = size_of::<sockserv_tls::TlsHandler<Echo>>();
    println!("TlsHandler<Echo> inline (in the table's slot): {inline} bytes");

    let mut wire = vec![0u8; 64 << 10];
    for (label, finish) in [("idle after a handshake and one echo", true), ("mid-handshake", false)]
    {
        let before = LIVE.load(Ordering::Relaxed);
        let mut kept = Vec::with_capacity(N);
        for _ in 0..N {
            let mut h = service.handler(&peer);
            h.opened(&mut Outbox::gather(&mut [])).unwrap();
            let mut c = ClientConnection::new(Arc::clone(client), name()).unwrap();
            drive_event(&mut h, &mut c, &mut wire, finish);
            drop(c);
            kept.push(h);
        }
        let per = (LIVE.load(Ordering::Relaxed) - before) as usize / N - size_of_val(&kept[0]);
        println!("event TlsHandler, {label}: {per} bytes of heap per session (+ {inline} inline)");
    }
    for (label, finish) in [("idle after a handshake and one echo", true), ("mid-handshake", false)]
    {
        let before = LIVE.load(Ordering::Relaxed);
        let mut kept = Vec::with_capacity(N);
        for _ in 0..N {
            let mut s = ServerConnection::new(Arc::clone(server)).unwrap();
            let mut c = ClientConnection::new(Arc::clone(client), name()).unwrap();
            drive_buffered(&mut s, &mut c, finish);
            drop(c);
            kept.push(s);
        }
        let per = (LIVE.load(Ordering::Relaxed) - before) as usize / N - size_of_val(&kept[0]);
        let inline = size_of::<ServerConnection>();
        println!(
            "rustls ServerConnection (buffered), {label}: {per} bytes of heap (+ {inline} inline)"
        );
    }
}

fn name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// Client and event handler talk through memory until the handshake and
/// one echo are done (`finish`), or only the ClientHello was taken.
fn drive_event<H: EventHandler>(h: &mut H, c: &mut ClientConnection, wire: &mut [u8], finish: bool)
where
    H::Error: std::fmt::Debug,
{
    let mut sent_data = false;
    let mut got = Vec::new();
    for _ in 0..20 {
        let mut input = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut input).unwrap();
        }
        if !input.is_empty() {
            let mut out = Outbox::gather(wire);
            let step = h.received_mut(&mut input, &mut out).unwrap();
            assert_eq!(step.consumed, input.len());
            let n = out.gathered();
            let mut back = &wire[..n];
            while !back.is_empty() {
                c.read_tls(&mut back).unwrap();
            }
            c.process_new_packets().unwrap();
            if !finish {
                return;
            }
        }
        if !c.is_handshaking() && !sent_data {
            c.writer().write_all(b"hello\n").unwrap();
            sent_data = true;
        }
        let mut buf = [0u8; 64];
        if let Ok(n) = c.reader().read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        if got == b"hello\n" {
            return;
        }
    }
    panic!("no echo in memory");
}

/// The same with rustls's buffered server connection.
fn drive_buffered(s: &mut ServerConnection, c: &mut ClientConnection, finish: bool) {
    let mut sent_data = false;
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut to_server).unwrap();
        }
        let mut slice = &to_server[..];
        while !slice.is_empty() {
            s.read_tls(&mut slice).unwrap();
            s.process_new_packets().unwrap();
        }
        let mut buf = [0u8; 64];
        if let Ok(n) = s.reader().read(&mut buf)
            && n > 0
        {
            s.writer().write_all(&buf[..n]).unwrap();
        }
        let mut to_client = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut to_client).unwrap();
        }
        let mut back = &to_client[..];
        while !back.is_empty() {
            c.read_tls(&mut back).unwrap();
        }
        c.process_new_packets().unwrap();
        if !finish {
            return;
        }
        if !c.is_handshaking() && !sent_data {
            c.writer().write_all(b"hello\n").unwrap();
            sent_data = true;
        }
        if let Ok(6) = c.reader().read(&mut buf) {
            return;
        }
    }
    panic!("no echo in memory (buffered)");
}

/// Part 2: the echo example's resident memory.
fn echo_process(
    cert: &Path,
    key: &Path,
    client: &Arc<ClientConfig>,
    idle: usize,
    mid: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let echo = exe.parent().ok_or("no examples dir")?.join("echo");
    let max = (idle + mid + 100).to_string();
    let mut child = Command::new(&echo)
        .args(["--mode", "event", "--addr", "127.0.0.1:0", "--max-connections", &max])
        .args(["--tls-handshake-timeout", "600", "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e} (cargo build --release --example echo)", echo.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr = line.trim().rsplit(' ').next().ok_or("no address")?.to_owned();
    let rss = || rss_kib(child.id());
    let connect = || -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(s)
    };
    // One client first: the pool's first buffers, the loop's scratch.
    let warm: Vec<TcpStream> =
        (0..10).map(|_| idle_client(connect()?, client)).collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(300));
    let base = rss()?;
    let mut idle_conns = Vec::with_capacity(idle);
    for _ in 0..idle {
        idle_conns.push(idle_client(connect()?, client)?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after_idle = rss()?;
    let mut mid_conns = Vec::with_capacity(mid);
    for _ in 0..mid {
        mid_conns.push(mid_handshake_client(connect()?, client)?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after_mid = rss()?;
    let per_idle = (after_idle.saturating_sub(base)) * 1024 / idle as u64;
    let per_mid = (after_mid.saturating_sub(after_idle)) * 1024 / mid as u64;
    println!("echo --mode event --tls-cert: VmRSS {base} KiB with 10 clients served and idle");
    println!("  + {idle} idle TLS connections: {after_idle} KiB ({per_idle} bytes each)");
    println!("  + {mid} mid-handshake connections: {after_mid} KiB ({per_mid} bytes each)");
    drop((warm, idle_conns, mid_conns));
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// Handshake, one echo, then the client keeps only its socket.
fn idle_client(mut s: TcpStream, config: &Arc<ClientConfig>) -> std::io::Result<TcpStream> {
    let mut c = ClientConnection::new(Arc::clone(config), name()).map_err(std::io::Error::other)?;
    let mut tls = rustls::Stream::new(&mut c, &mut s);
    tls.write_all(b"hello\n")?;
    let mut buf = [0u8; 6];
    tls.read_exact(&mut buf)?;
    Ok(s)
}

/// A ClientHello, the server's answer read, nothing more.
fn mid_handshake_client(
    mut s: TcpStream,
    config: &Arc<ClientConfig>,
) -> std::io::Result<TcpStream> {
    let mut c = ClientConnection::new(Arc::clone(config), name()).map_err(std::io::Error::other)?;
    while c.wants_write() {
        c.write_tls(&mut s)?;
    }
    // Wait for the server's flight, so that it has processed the hello.
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf)?;
    Ok(s)
}

fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    Ok(line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0))
}

fn certificate() -> std::io::Result<(PathBuf, PathBuf, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("sockserv-tls-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )?;
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let script = format!(
        "openssl req -x509 -days 1 -subj '/CN=sockserv test CA' {ec} -keyout ca.key -out ca.pem \
         && openssl req -subj /CN=localhost {ec} -keyout key.pem -out leaf.csr \
         && openssl x509 -req -days 1 -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -extfile leaf.ext -out cert.pem"
    );
    let out = Command::new("sh").args(["-c", &script]).current_dir(&dir).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok((dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem")))
}

fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, Box<dyn std::error::Error>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
