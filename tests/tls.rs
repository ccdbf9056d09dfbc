//! TLS (`sockserv_tls`, the facade's `sockserv::tls`) with real clients:
//! the echo example as a process with `--tls-cert/--tls-key` in every
//! blocking mode, served to Python's `ssl`, `openssl s_client` and a
//! rustls client; an in-process HTTPS handler served to `curl --cacert`;
//! the service's view of each handshake (`Tls::on_handshake`: ALPN, SNI,
//! client certificates) asked by curl; hostile clients (half a ClientHello
//! and silence, plaintext, random bytes, a reset in the handshake, a close
//! without close_notify, an alert or a bad record mid-stream, a client that
//! never reads after the handshake), each with its outcome while others are
//! served. The certificate is made at
//! test time with `openssl req`; none is committed.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use sockserv_tls::rustls::pki_types::pem::PemObject;
use sockserv_tls::rustls::pki_types::{CertificateDer, ServerName};
use sockserv_tls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use util::TEST_STR;
use util::echo::Server;
use util::procs::{group_cpu, group_threads};

/// How long a served client may wait for its echo while hostile clients
/// hold the server (the goal is 100 ms; the bound has slack for a loaded
/// machine, and each test prints what it measured).
const SERVED_WITHIN: Duration = Duration::from_secs(3);

/// A test CA and a certificate it signed for `localhost` / 127.0.0.1,
/// made once per test run with `openssl`: (ca.pem, cert.pem, key.pem).
fn certificate() -> &'static (PathBuf, PathBuf, PathBuf) {
    static PEM: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    PEM.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sockserv-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |name: &str| dir.join(name);
        std::fs::write(p("leaf.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
            .unwrap();
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let script = format!(
            "openssl req -x509 -days 1 -subj '/CN=sockserv test CA' {ec} -keyout ca.key -out ca.pem \
             && openssl req -subj /CN=localhost {ec} -keyout key.pem -out leaf.csr \
             && openssl x509 -req -days 1 -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -extfile leaf.ext -out cert.pem \
             && openssl req -subj /CN=localhost {ec} -keyout key2.pem -out leaf2.csr \
             && openssl x509 -req -days 1 -in leaf2.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -extfile leaf.ext -out cert2.pem"
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        (p("ca.pem"), p("cert.pem"), p("key.pem"))
    })
}

fn tls_args() -> Vec<String> {
    let (_, cert, key) = certificate();
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    vec!["--tls-cert".into(), s(cert), "--tls-key".into(), s(key)]
}

/// The echo example over TLS in `mode` (`pool` = threading with a pool).
fn start(mode: &str, extra: &[&str]) -> Server {
    let mut args = tls_args();
    let mode = match mode {
        "pool" => {
            args.extend(["--pool".into(), "64".into()]);
            "threading"
        }
        "event2" => {
            args.extend(["--workers".into(), "2".into()]);
            "event"
        }
        other => other,
    };
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with("tcp", mode, "127.0.0.1:0", &args)
}

/// Every stream mode: the blocking ones, event mode with one loop and
/// with two (`event2`).
const MODES: [&str; 6] = ["sync", "threading", "pool", "forking", "event", "event2"];

fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&certificate().0).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }))
}

/// A rustls client connected to `addr` (handshake not yet driven).
fn tls_client(addr: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    StreamOwned::new(ClientConnection::new(client_config(), name).unwrap(), tcp)
}

/// Connect, handshake, one echo of `TEST_STR`, close_notify, and the
/// server's close_notify back (rustls reads a close without one as an
/// `UnexpectedEof` error): how long the echo took.
fn echo_once(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = tls_client(addr);
    s.write_all(TEST_STR).unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, TEST_STR);
    let took = start.elapsed();
    s.conn.send_close_notify();
    s.flush().unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("the server's close_notify");
    assert!(rest.is_empty(), "{rest:?}");
    took
}

/// The server's stderr has no report of a failed request (a handshake
/// failure is info/debug, so the example, which installs no logger,
/// prints nothing for it; a handler error would be a warning line).
fn assert_quiet(server: &Server) {
    let err = server.stderr_text();
    assert!(!err.contains("failed"), "the server reported a failure: {err}");
}

// ---------------------------------------------------------------------
// Real clients
// ---------------------------------------------------------------------

const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection((host, int(port)), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        data = b"x" * 100000 + b"\n"
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        assert got == data, (len(got), len(data))
        print(s.version(), len(got))
"#;

#[test]
fn python_ssl_in_every_mode() {
    for mode in MODES {
        let server = start(mode, &[]);
        let out = Command::new("python3")
            .args(["-c", PYTHON_CLIENT, &server.addr, certificate().0.to_str().unwrap()])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{mode}: python ssl client: {}{}",
            String::from_utf8_lossy(&out.stderr),
            server.stderr_text()
        );
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(line.starts_with("TLSv1.3 100001"), "{mode}: {line}");
        assert_quiet(&server);
        server.stop_cleanly(libc::SIGTERM);
    }
}

#[test]
fn openssl_s_client_tls12_and_tls13_in_every_mode() {
    for mode in MODES {
        let server = start(mode, &[]);
        for version in ["-tls1_2", "-tls1_3"] {
            let mut child = Command::new("openssl")
                .args(["s_client", "-quiet", "-no_ign_eof", "-verify_return_error", version])
                .args(["-servername", "localhost", "-connect", &server.addr, "-CAfile"])
                .arg(&certificate().0)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("openssl runs");
            // s_client ends at its stdin's EOF: close it after the echo.
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"hello s_client\n").unwrap();
            // A server that never answers: s_client is killed after 10 s,
            // only while it is still unreaped (so the pid is still its).
            let pid = child.id() as libc::pid_t;
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = Arc::clone(&done);
            thread::spawn(move || {
                thread::sleep(Duration::from_secs(10));
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            });
            let mut line = String::new();
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                line,
                "hello s_client\n",
                "{mode} {version}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{mode} {version}: {}", out.status);
        }
        assert_quiet(&server);
        server.stop_cleanly(libc::SIGTERM);
    }
}

#[test]
fn a_rustls_client_in_every_mode() {
    for mode in MODES {
        let server = start(mode, &[]);
        for _ in 0..5 {
            echo_once(server.inet());
        }
        assert_quiet(&server);
        server.stop_cleanly(libc::SIGTERM);
    }
}

/// An HTTPS handler that answers with what `TlsStream::info` says, served
/// in-process on a threading server, asked by curl.
mod https {
    use std::sync::Arc;

    use sockserv::embedded_io::{Read, Write};
    use sockserv::std_adapter::ThreadingTcpServer;
    use sockserv::{StreamHandler, service_fn};
    use sockserv_tls::{TlsStream, server_config_from_pem, tls};

    struct Hello;

    impl StreamHandler<TlsStream<'_>> for Hello {
        type Error = std::io::Error;
        fn handle(&mut self, s: &mut TlsStream<'_>) -> Result<(), std::io::Error> {
            // The request head, up to its blank line.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                head.extend_from_slice(&buf[..n]);
            }
            let info = s.info();
            let body = format!(
                "alpn={} sni={} client_certs={}\n",
                String::from_utf8_lossy(info.alpn_protocol.unwrap_or(b"none")),
                info.server_name.unwrap_or("none"),
                info.peer_certificates.map_or(0, <[_]>::len),
            );
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .map_err(|_| std::io::Error::other("format"))
        }
    }

    /// The leaf certificate a client is served.
    pub(super) fn served_leaf(addr: std::net::SocketAddr) -> Vec<u8> {
        let mut s = super::tls_client(addr);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).unwrap();
        }
        s.conn.peer_certificates().unwrap()[0].to_vec()
    }

    pub(super) fn leaf_der(path: &std::path::Path) -> Vec<u8> {
        use sockserv_tls::rustls::pki_types::CertificateDer;
        use sockserv_tls::rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(path).unwrap().to_vec()
    }

    /// CertSwap: after replace_from_pem, the next handshake gets the new
    /// certificate, with no restart; a bad file leaves the old one.
    #[test]
    fn the_certificate_is_replaced_while_serving() {
        let (_, cert, key) = super::certificate();
        let dir = cert.parent().unwrap();
        let certs = sockserv_tls::CertSwap::from_pem(cert, key).unwrap();
        let service = tls(Arc::new(certs.server_config()), service_fn(|_| Hello));
        let mut server = ThreadingTcpServer::bind("127.0.0.1:0", service).unwrap();
        let addr: std::net::SocketAddr = server.server_address().to_string().parse().unwrap();
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || {
            server.serve_forever(std::time::Duration::from_millis(100)).unwrap()
        });
        assert_eq!(served_leaf(addr), leaf_der(cert));
        certs.replace_from_pem(dir.join("cert2.pem"), dir.join("key2.pem")).unwrap();
        assert_eq!(served_leaf(addr), leaf_der(&dir.join("cert2.pem")));
        // A key that does not match: refused, the second certificate stays.
        assert!(certs.replace_from_pem(cert, dir.join("key2.pem")).is_err());
        assert_eq!(served_leaf(addr), leaf_der(&dir.join("cert2.pem")));
        stop.shutdown().unwrap();
        serving.join().unwrap();
    }

    /// What the service's hook saw and set, per connection.
    #[derive(Default)]
    struct Seen {
        negotiated: String,
        setup_saw: String,
    }

    /// A handler the service sets up from the handshake (`on_handshake`)
    /// before its `setup`; it answers with what it was told.
    struct Told {
        told: Option<String>,
        log: Arc<std::sync::Mutex<Vec<Seen>>>,
    }

    impl<S: Read + Write> StreamHandler<S> for Told {
        type Error = S::Error;
        fn setup(&mut self, _: &mut S) -> Result<(), S::Error> {
            let mut log = self.log.lock().unwrap();
            log.last_mut().unwrap().setup_saw = self.told.clone().unwrap_or_default();
            Ok(())
        }
        fn handle(&mut self, s: &mut S) -> Result<(), S::Error> {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                head.extend_from_slice(&buf[..n]);
            }
            let body = format!("{}\n", self.told.as_deref().unwrap_or("nothing"));
            s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        }
    }

    fn curl(port: &str, host: &str, extra: &[&str]) -> std::process::Output {
        let (ca, cert, key) = super::certificate();
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(ca)
            .args(["--cert"])
            .arg(cert)
            .args(["--key"])
            .arg(key)
            .args(extra)
            .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
            .arg(format!("https://{host}:{port}/"))
            .output()
            .expect("curl runs")
    }

    /// The service sees each connection's ALPN protocol, SNI name and
    /// client certificate once its handshake is done (`Tls::on_handshake`,
    /// on the request's thread, before the handler's `setup`), sets up the
    /// handler from them, and may refuse the connection: curl with a client
    /// certificate, once per ALPN protocol, and once with a name the hook
    /// refuses.
    #[test]
    fn the_service_sees_alpn_sni_and_client_certificates_before_setup() {
        use sockserv_tls::TlsInfo;
        use sockserv_tls::rustls::pki_types::pem::PemObject;
        use sockserv_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use sockserv_tls::rustls::{self, RootCertStore, ServerConfig};

        let (ca, cert, key) = super::certificate();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .allow_unauthenticated()
        .build()
        .unwrap();
        let chain = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let log: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let for_handlers = Arc::clone(&log);
        let for_hook = Arc::clone(&log);
        let service = tls(
            Arc::new(config),
            service_fn(move |_| Told { told: None, log: Arc::clone(&for_handlers) }),
        )
        .on_handshake(move |info: &TlsInfo<'_>, handler: &mut Told| {
            let negotiated = format!(
                "alpn={} sni={} client_cert={}",
                String::from_utf8_lossy(info.alpn_protocol.unwrap_or(b"none")),
                info.server_name.unwrap_or("none"),
                // curl sends its leaf and the CA it found for it.
                info.peer_certificates.is_some_and(|chain| !chain.is_empty()),
            );
            let refuse = info.server_name == Some("refused.localhost");
            handler.told = Some(negotiated.clone());
            for_hook.lock().unwrap().push(Seen { negotiated, setup_saw: String::new() });
            !refuse
        });
        let mut server = ThreadingTcpServer::bind("127.0.0.1:0", service).unwrap();
        let port = server.server_address().to_string();
        let port = port.rsplit(':').next().unwrap().to_owned();
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || {
            server.serve_forever(std::time::Duration::from_millis(100)).unwrap()
        });
        let h1 = curl(&port, "localhost", &["--http1.1"]);
        let h2 = curl(&port, "localhost", &["--http2"]);
        // The certificate does not name refused.localhost: -k.
        let refused = curl(&port, "refused.localhost", &["-k", "--http1.1"]);
        stop.shutdown().unwrap();
        serving.join().unwrap();
        let text = |o: &std::process::Output| {
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        };
        assert_eq!(
            String::from_utf8_lossy(&h1.stdout),
            "alpn=http/1.1 sni=localhost client_cert=true\n",
            "{}",
            text(&h1)
        );
        // curl offers h2 first: the handler is told so (it answers
        // HTTP/1.1 bytes, which curl cannot read as h2: only the service's
        // log is checked for that one).
        assert!(!refused.status.success(), "refused: {}", text(&refused));
        assert!(refused.stdout.is_empty(), "refused: {}", text(&refused));
        let log = log.lock().unwrap();
        let seen: Vec<(&str, &str)> =
            log.iter().map(|s| (s.negotiated.as_str(), s.setup_saw.as_str())).collect();
        assert_eq!(
            seen,
            [
                (
                    "alpn=http/1.1 sni=localhost client_cert=true",
                    "alpn=http/1.1 sni=localhost client_cert=true"
                ),
                (
                    "alpn=h2 sni=localhost client_cert=true",
                    "alpn=h2 sni=localhost client_cert=true"
                ),
                // Refused: the handler's setup never ran.
                ("alpn=http/1.1 sni=refused.localhost client_cert=true", ""),
            ],
            "h2 curl: {}",
            text(&h2)
        );
    }

    #[test]
    fn curl_cacert_sees_alpn_and_sni() {
        let (ca, cert, key) = super::certificate();
        let mut config = server_config_from_pem(cert, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let service = tls(Arc::new(config), service_fn(|_| Hello));
        let mut server = ThreadingTcpServer::bind("127.0.0.1:0", service).unwrap();
        let port = server.server_address().to_string();
        let port = port.rsplit(':').next().unwrap().to_owned();
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || {
            server.serve_forever(std::time::Duration::from_millis(100)).unwrap()
        });
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(ca)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .arg(format!("https://localhost:{port}/"))
            .output()
            .expect("curl runs");
        stop.shutdown().unwrap();
        serving.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "alpn=http/1.1 sni=localhost client_certs=0\n",
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Event mode: an HTTP responder whose `opened` keeps what
/// `handshake_info` says, asked by curl; and a certificate replaced while
/// the event loop serves.
mod https_event {
    use std::sync::Arc;

    use sockserv::std_adapter::BindAddr;
    use sockserv::std_adapter::event::EventTcpServer;
    use sockserv::{EventHandler, Next, Outbox, Step, service_fn};
    use sockserv_tls::{handshake_info, server_config_from_pem, tls};

    /// Answers one request with the negotiated ALPN and SNI, then closes.
    struct Hello {
        said: String,
    }

    impl EventHandler for Hello {
        type Error = core::fmt::Error;
        fn opened(&mut self, _out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
            self.said = handshake_info(|info| {
                format!(
                    "alpn={} sni={} client_certs={}\n",
                    String::from_utf8_lossy(info.alpn_protocol.unwrap_or(b"none")),
                    info.server_name.unwrap_or("none"),
                    info.peer_certificates.map_or(0, <[_]>::len),
                )
            })
            .unwrap_or_default();
            Ok(Next::Continue)
        }
        fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
            if !input.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(Step::consumed(0));
            }
            let body = &self.said;
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            write!(out, "{body}")?;
            Ok(Step::close(input.len()))
        }
    }

    fn serve<Svc>(
        service: Svc,
    ) -> (std::net::SocketAddr, sockserv::std_adapter::ShutdownHandle, std::thread::JoinHandle<()>)
    where
        Svc: sockserv::Service<sockserv::std_adapter::Address, Handler: EventHandler + Send>
            + Clone
            + Send
            + 'static,
    {
        let mut server = EventTcpServer::bind("127.0.0.1:0", service).unwrap();
        let BindAddr::Inet(addr) = *server.server_address() else { unreachable!() };
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || {
            server.serve_forever(std::time::Duration::from_millis(100)).unwrap()
        });
        (addr, stop, serving)
    }

    #[test]
    fn curl_cacert_sees_alpn_and_sni_in_event_mode() {
        let (ca, cert, key) = super::certificate();
        let mut config = server_config_from_pem(cert, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let service = tls(Arc::new(config), service_fn(|_| Hello { said: String::new() }));
        let (addr, stop, serving) = serve(service);
        let port = addr.port();
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(ca)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .arg(format!("https://localhost:{port}/"))
            .output()
            .expect("curl runs");
        stop.shutdown().unwrap();
        serving.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "alpn=http/1.1 sni=localhost client_certs=0\n",
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_certificate_is_replaced_while_the_event_loop_serves() {
        let (_, cert, key) = super::certificate();
        let dir = cert.parent().unwrap();
        let certs = sockserv_tls::CertSwap::from_pem(cert, key).unwrap();
        let service =
            tls(Arc::new(certs.server_config()), service_fn(|_| Hello { said: String::new() }));
        let (addr, stop, serving) = serve(service);
        assert_eq!(super::https::served_leaf(addr), super::https::leaf_der(cert));
        certs.replace_from_pem(dir.join("cert2.pem"), dir.join("key2.pem")).unwrap();
        let second = super::https::leaf_der(&dir.join("cert2.pem"));
        assert_eq!(super::https::served_leaf(addr), second);
        stop.shutdown().unwrap();
        serving.join().unwrap();
    }
}

// ---------------------------------------------------------------------
// Hostile clients
// ---------------------------------------------------------------------

/// The first 40 bytes of a TLS 1.2 ClientHello record (its header says
/// 512 bytes follow): half a handshake.
fn half_client_hello() -> Vec<u8> {
    let mut v = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    v.extend([0x42; 29]);
    v
}

/// 50 clients send half a ClientHello and go silent: in the concurrent
/// modes others are served meanwhile, nothing spins, and after the
/// handshake timeout (1 s here) every one of them is closed by the
/// server and its threads are gone.
#[test]
fn half_client_hellos_and_silence() {
    for mode in ["threading", "pool", "forking", "event", "event2"] {
        // Forking's default cap (40 children) would make the 51st wait.
        let mut server = start(mode, &["--tls-handshake-timeout", "1", "--max-connections", "100"]);
        let addr = server.inet();
        echo_once(addr);
        let pgid = server.pid();
        let threads_before = group_threads(pgid);
        let silent: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(&half_client_hello()).unwrap();
                s
            })
            .collect();
        thread::sleep(Duration::from_millis(200));
        let cpu_before = group_cpu(pgid);
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            worst = worst.max(echo_once(addr));
        }
        println!("{mode}: served in at most {worst:?} beside 50 silent handshakes");
        assert!(worst < SERVED_WITHIN, "{mode}: an echo took {worst:?}");
        // The timeout closes them: each reads EOF (or a reset) well
        // before 5 s; none gets any plaintext.
        let start = Instant::now();
        for mut s in silent {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    assert_eq!(buf[0], 0x15, "{mode}: only an alert may come: {:?}", &buf[..n])
                }
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{mode}: {e}"),
            }
        }
        let closed_after = start.elapsed();
        assert!(closed_after < Duration::from_secs(5), "{mode}: {closed_after:?}");
        let cpu = group_cpu(pgid) - cpu_before;
        println!("{mode}: server CPU while 50 handshakes waited out the timeout: {cpu:?}");
        assert!(cpu < Duration::from_millis(700), "{mode}: the server spun: {cpu:?}");
        thread::sleep(Duration::from_millis(300));
        if !matches!(mode, "pool" | "forking") {
            // (A pool starts its threads as they are needed.)
            let after = group_threads(pgid);
            assert!(after <= threads_before + 1, "{mode}: threads {threads_before} -> {after}");
        }
        echo_once(addr);
        server.assert_alive();
        assert_quiet(&server);
        server.stop_cleanly(libc::SIGTERM);
    }
}

/// Polls `done` every 20 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Open descriptors of process `pid`.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Open descriptors of process `pid` once the count holds still for 100
/// ms (at most 5 s): a client that saw the server's EOF may find the
/// server's descriptor for it not yet closed (it shuts the socket down
/// first, then closes it), and a baseline taken then is one too high.
fn settled_fd_count(pid: i32) -> usize {
    let start = Instant::now();
    let mut count = fd_count(pid);
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = fd_count(pid);
        if now == count || start.elapsed() > Duration::from_secs(5) {
            return now;
        }
        count = now;
    }
}

/// 1,000 clients send half a ClientHello and go silent at once, against
/// the event-mode echo with its default buffer pool (1,024 buffers): a
/// half handshake waits in a few bytes of its session, not in a pooled
/// buffer, so others are served at once (not after the handshake
/// timeout), the loop does not spin, and once the silent clients leave
/// every descriptor is closed and the server serves on.
#[test]
fn a_thousand_half_client_hellos_in_event_mode() {
    const SILENT: usize = 1000;
    // (A timeout long enough that none of them is closed by it while
    // the test runs on a loaded machine.)
    let mut server = start("event", &["--tls-handshake-timeout", "60"]);
    let addr = server.inet();
    echo_once(addr);
    let pid = server.pid();
    let fds_before = settled_fd_count(pid);
    let rss_before = group_rss_kib(pid);
    let silent: Vec<TcpStream> = (0..SILENT)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&half_client_hello()).unwrap();
            s
        })
        .collect();
    let accepted = wait_for(Duration::from_secs(30), || fd_count(pid) >= fds_before + SILENT);
    assert!(accepted, "descriptors {fds_before} -> {} with {SILENT} clients", fd_count(pid));
    thread::sleep(Duration::from_millis(200));
    let rss = group_rss_kib(pid);
    let cpu_before = group_cpu(pid);
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        worst = worst.max(echo_once(addr));
    }
    println!("event: served in at most {worst:?} beside {SILENT} silent half ClientHellos");
    println!(
        "event: resident {rss_before} KiB before, {rss} KiB with them ({} bytes each)",
        (rss.saturating_sub(rss_before) * 1024) / SILENT as u64
    );
    // (Goal: 100 ms; bounded generously for a loaded machine. Before the
    // fix the pool was held by them: the echo was refused.)
    assert!(worst < Duration::from_secs(1), "an echo took {worst:?}");
    // No spin: the loop sleeps while they are silent.
    let quiet_from = group_cpu(pid);
    thread::sleep(Duration::from_secs(1));
    let idle = group_cpu(pid) - quiet_from;
    println!(
        "event: server CPU {:?} for 5 echoes, {idle:?} over 1 s of silence",
        quiet_from - cpu_before
    );
    assert!(idle < Duration::from_millis(200), "the loop spun: {idle:?}");
    // They leave: every connection is closed, the server serves on.
    drop(silent);
    let gone = wait_for(Duration::from_secs(10), || fd_count(pid) <= fds_before);
    assert!(gone, "descriptors {fds_before} -> {} after they left", fd_count(pid));
    echo_once(addr);
    server.assert_alive();
    assert_quiet(&server);
    server.stop_cleanly(libc::SIGTERM);
}

/// Sync mode serves one connection at a time: a silent handshake holds it
/// for the handshake timeout, no longer; then the next client is served.
#[test]
fn sync_mode_a_silent_handshake_holds_the_server_only_until_the_timeout() {
    let server = start("sync", &["--tls-handshake-timeout", "0.5"]);
    let addr = server.inet();
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.write_all(&half_client_hello()).unwrap();
    thread::sleep(Duration::from_millis(50));
    let took = echo_once(addr);
    println!("sync: served after {took:?} behind one silent handshake (timeout 500 ms)");
    assert!(took >= Duration::from_millis(300), "served before the timeout? {took:?}");
    assert!(took < Duration::from_millis(500) + SERVED_WITHIN, "{took:?}");
    let mut buf = [0u8; 8];
    silent.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)), "closed by the server");
    assert_quiet(&server);
    server.stop_cleanly(libc::SIGTERM);
}

/// Not a handshake: the server answers with an alert (or just closes), at
/// once; the next client is served.
fn not_a_handshake(what: &str, bytes: &[u8]) {
    for mode in MODES {
        let server = start(mode, &[]);
        let addr = server.inet();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = Instant::now();
        s.write_all(bytes).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let took = start.elapsed();
        assert!(took < SERVED_WITHIN, "{mode} {what}: closed after {took:?}");
        assert!(got.is_empty() || got[0] == 0x15, "{mode} {what}: not an alert: {got:?}");
        echo_once(addr);
        assert_quiet(&server);
        server.stop_cleanly(libc::SIGTERM);
    }
}

#[test]
fn plaintext_instead_of_a_handshake() {
    not_a_handshake("plaintext", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

#[test]
fn random_bytes_instead_of_a_handshake() {
    // A fixed pseudo-random sequence (xorshift), so a failure reproduces.
    let mut x: u32 = 0x9e37_79b9;
    let bytes: Vec<u8> = (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    not_a_handshake("random", &bytes);
}

/// A reset (SO_LINGER 0) in the middle of the handshake: the server drops
/// the connection (debug report) and serves the next one.
#[test]
fn a_reset_in_the_handshake() {
    for mode in MODES {
        let server = start(mode, &[]);
        let addr = server.inet();
        for _ in 0..10 {
            let s = socket2::Socket::from(TcpStream::connect(addr).unwrap());
            (&s).write_all(&half_client_hello()).unwrap();
            s.set_linger(Some(Duration::ZERO)).unwrap();
            drop(s);
        }
        let took = echo_once(addr);
        assert!(took < SERVED_WITHIN, "{mode}: {took:?}");
        assert_quiet(&server);
        server.stop_cleanly(libc::SIGTERM);
    }
}

/// A client that completes the handshake, sends data and closes the TCP
/// connection without close_notify: the echo handler reads EOF (CPython's
/// `suppress_ragged_eofs`), no handler error is reported, and the server
/// serves on.
#[test]
fn a_close_without_close_notify() {
    for mode in MODES {
        let server = start(mode, &[]);
        let addr = server.inet();
        for _ in 0..5 {
            let mut s = tls_client(addr);
            s.write_all(TEST_STR).unwrap();
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, TEST_STR);
            // The TCP connection goes, no close_notify.
            s.sock.shutdown(std::net::Shutdown::Both).unwrap();
        }
        thread::sleep(Duration::from_millis(200));
        echo_once(addr);
        assert_quiet(&server);
        server.stop_cleanly(libc::SIGTERM);
    }
}

/// Nanoseconds the tasks of `pgid`'s group and of this test have waited on
/// a run queue so far (`/proc/PID/task/TID/schedstat`, second field): time
/// the machine gave to others, which no server can do anything about.
fn machine_delay(pgid: i32) -> Duration {
    let mut ns = 0u64;
    let pids = util::procs::group(pgid).into_iter().map(|p| p.pid.to_string());
    for pid in pids.chain(["self".into()]) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += stat.split_whitespace().nth(1).and_then(|f| f.parse().ok()).unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// How soon another client must be served while a hostile one acts (its
/// echo's time minus the time the machine made the server and the test
/// wait for a CPU).
const OTHERS_WITHIN: Duration = Duration::from_millis(100);

/// `echo_once` for a client that was already connected and handshaken
/// (`s`): one echo, its time minus the machine's run-queue delay.
fn echo_on(s: &mut StreamOwned<ClientConnection, TcpStream>, pgid: i32) -> (Duration, Duration) {
    let delay = machine_delay(pgid);
    let start = Instant::now();
    s.write_all(TEST_STR).unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, TEST_STR);
    let took = start.elapsed();
    (took, took.saturating_sub(machine_delay(pgid).saturating_sub(delay)))
}

/// A handshaken rustls client.
fn handshaken(addr: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    let mut s = tls_client(addr);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    s
}

/// Processes and threads of the server's group.
fn census(pgid: i32) -> (usize, u32) {
    (util::procs::group(pgid).len(), group_threads(pgid))
}

/// Waits up to 3 s for the group to be back to `before` (processes,
/// threads): what a hostile client took is given back once it left. The
/// pool (`--pool 64`) keeps the workers it started, up to its size.
fn back_to(pgid: i32, before: (usize, u32), what: &str) {
    let before = if what == "pool" { (before.0, before.1.max(64 + 2)) } else { before };
    let end = Instant::now() + Duration::from_secs(3);
    let mut now = census(pgid);
    while (now.0 > before.0 || now.1 > before.1) && Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
        now = census(pgid);
    }
    assert!(
        now.0 <= before.0 && now.1 <= before.1,
        "{what}: (processes, threads) {before:?} -> {now:?}"
    );
}

/// The blocking modes (event mode's own outcomes for these clients are in
/// `an_alert_mid_stream` and `a_client_that_never_reads`).
const BLOCKING: [&str; 4] = ["sync", "threading", "pool", "forking"];

/// What a client sends in the middle of a TLS stream instead of its next
/// record.
const MID_STREAM: [(&str, &[u8]); 3] = [
    // A fatal alert (handshake_failure) as a plaintext record: TLS 1.3
    // encrypts every record after the handshake, so it cannot decrypt.
    ("a plaintext fatal alert", &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]),
    // An application_data record whose 32 bytes are not what the keys make.
    (
        "a bad record",
        &[
            0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
        ],
    ),
    // A record header that announces 65,535 bytes: more than any TLS
    // record may hold (rustls refuses it from the header alone).
    ("an oversized record header", &[0x17, 0x03, 0x03, 0xff, 0xff]),
];

/// After a few echoes a client sends an alert or a bad record instead of
/// its next record: the server answers with an alert (or closes) at once,
/// says what happened (the handler's read fails with `InvalidData`, which
/// the echo reports), and a client connected beside it is served within
/// 100 ms meanwhile; nothing spins and the thread or child is gone after.
#[test]
fn an_alert_or_a_bad_record_mid_stream() {
    for mode in BLOCKING {
        let server = start(mode, &[]);
        let addr = server.inet();
        let pgid = server.pid();
        echo_once(addr);
        let before = census(pgid);
        for (what, bytes) in MID_STREAM {
            // In sync mode the server serves one connection at a time: the
            // other client connects only after the hostile one is done.
            let mut other = (mode != "sync").then(|| handshaken(addr));
            let mut s = handshaken(addr);
            for _ in 0..3 {
                s.write_all(TEST_STR).unwrap();
                let mut buf = [0u8; 12];
                s.read_exact(&mut buf).unwrap();
                assert_eq!(&buf, TEST_STR, "{mode} {what}");
            }
            let start = Instant::now();
            s.sock.write_all(bytes).unwrap();
            let mut got = Vec::new();
            match s.sock.read_to_end(&mut got) {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{mode} {what}: {e}")
                }
            }
            let closed = start.elapsed();
            println!("{mode}: {what}: closed after {closed:?} ({} bytes back)", got.len());
            assert!(closed < SERVED_WITHIN, "{mode} {what}: closed after {closed:?}");
            // An encrypted alert (TLS 1.3: an application_data record on
            // the wire) or nothing; never plaintext.
            assert!(got.is_empty() || got[0] == 0x17 || got[0] == 0x15, "{mode} {what}: {got:?}");
            let mut other = other.take().unwrap_or_else(|| handshaken(addr));
            let (took, net) = echo_on(&mut other, pgid);
            println!(
                "{mode}: {what}: the other client was served in {took:?} ({net:?} without run-queue waits)"
            );
            assert!(
                net < OTHERS_WITHIN,
                "{mode} {what}: the other client waited {took:?} ({net:?})"
            );
            other.conn.send_close_notify();
            let _ = other.flush();
        }
        let cpu = group_cpu(pgid);
        thread::sleep(Duration::from_millis(500));
        let idle = group_cpu(pgid) - cpu;
        assert!(idle < Duration::from_millis(100), "{mode}: {idle:?} of CPU in 500 ms idle");
        back_to(pgid, before, mode);
        let err = server.stderr_text();
        let reported =
            err.lines().filter(|l| l.contains("InvalidData") || l.contains("invalid")).count();
        assert!(reported >= MID_STREAM.len(), "{mode}: each bad stream is reported: {err}");
        echo_once(addr);
        server.stop_cleanly(libc::SIGTERM);
    }
}

/// A client completes the handshake, then sends requests as fast as it can
/// and never reads a reply: the server's echo blocks in its write once the
/// socket buffers are full, holding that one connection's thread, worker
/// or child, without spinning; a client beside it is served within
/// 100 ms; when the non-reader goes, so does what it held. Sync mode
/// serves one connection at a time, so there the next client is served as
/// soon as the non-reader leaves (the echo example sets no stream
/// timeout; with one, `Server::stream_timeout` would bound the hold).
#[test]
fn a_client_that_never_reads_after_the_handshake() {
    for mode in BLOCKING {
        let server = start(mode, &[]);
        let addr = server.inet();
        let pgid = server.pid();
        echo_once(addr);
        let before = census(pgid);
        let mut other = (mode != "sync").then(|| handshaken(addr));
        let mut hostile = handshaken(addr);
        hostile.sock.set_nonblocking(true).unwrap();
        // Records out until nothing more goes for 300 ms (both sides'
        // buffers full) or 64 MiB went.
        let chunk = vec![b'x'; 16 * 1024];
        let (mut sent, mut stuck_since) = (0usize, None::<Instant>);
        let flood_start = Instant::now();
        while sent < 64 << 20 && flood_start.elapsed() < Duration::from_secs(20) {
            if !hostile.conn.wants_write() {
                hostile.conn.writer().write_all(&chunk).unwrap();
            }
            match hostile.conn.write_tls(&mut hostile.sock) {
                Ok(n) => {
                    sent += n;
                    stuck_since = None;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let since = *stuck_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(300) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{mode}: the non-reader's write: {e}"),
            }
        }
        println!("{mode}: the non-reader sent {sent} bytes before the server stopped reading");
        assert!(stuck_since.is_some(), "{mode}: the server read 64 MiB without writing back?");
        let cpu = group_cpu(pgid);
        thread::sleep(Duration::from_millis(500));
        let held = group_cpu(pgid) - cpu;
        println!("{mode}: server CPU in 500 ms while held: {held:?}");
        assert!(held < Duration::from_millis(100), "{mode}: {held:?} of CPU in 500 ms: it spins");
        if let Some(other) = &mut other {
            let (took, net) = echo_on(other, pgid);
            println!(
                "{mode}: the other client was served in {took:?} ({net:?} without run-queue waits)"
            );
            assert!(net < OTHERS_WITHIN, "{mode}: the other client waited {took:?} ({net:?})");
            // And a new one.
            let took = echo_once(addr);
            assert!(took < SERVED_WITHIN, "{mode}: a new client waited {took:?}");
        }
        // The non-reader leaves (its unread replies make the close a reset).
        drop(hostile);
        let start = Instant::now();
        let mut next = other.take().unwrap_or_else(|| handshaken(addr));
        let (took, _) = echo_on(&mut next, pgid);
        println!(
            "{mode}: after the non-reader left, served in {:?} (echo {took:?})",
            start.elapsed()
        );
        assert!(start.elapsed() < SERVED_WITHIN, "{mode}: {:?}", start.elapsed());
        next.conn.send_close_notify();
        let _ = next.flush();
        drop(next);
        back_to(pgid, before, mode);
        server.stop_cleanly(libc::SIGTERM);
    }
}

/// Resident memory of the server's processes (VmRSS summed), in KiB.
fn group_rss_kib(pgid: i32) -> u64 {
    util::procs::group(pgid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{}/status", p.pid)).ok())
        .filter_map(|st| {
            let line = st.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// A TLS record the peer may not send after the handshake: a fatal
/// alert (handshake_failure) in plaintext.
const PLAINTEXT_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// An alert in the middle of the stream (after a served echo): the server
/// closes that connection at once (a blocking handler reads an
/// `InvalidData` error, reported as its failure; in event mode the TLS
/// layer ends the session and reports at info, the handler sees nothing)
/// and serves the next client.
#[test]
fn an_alert_mid_stream() {
    for mode in MODES {
        let server = start(mode, &[]);
        let addr = server.inet();
        let mut s = tls_client(addr);
        s.write_all(TEST_STR).unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        let start = Instant::now();
        s.sock.write_all(&PLAINTEXT_ALERT).unwrap();
        // The server's alert (TLS 1.3: an encrypted record, type 23), or
        // nothing, then EOF or a reset.
        let mut rest = Vec::new();
        let _ = s.sock.read_to_end(&mut rest);
        let took = start.elapsed();
        println!("{mode}: closed {took:?} after the alert ({} bytes back)", rest.len());
        assert!(took < SERVED_WITHIN, "{mode}: closed after {took:?}");
        let record = rest.first().copied();
        assert!(matches!(record, None | Some(0x15 | 0x17)), "{mode}: not an alert: {rest:?}");
        let served = echo_once(addr);
        assert!(served < SERVED_WITHIN, "{mode}: {served:?}");
        if mode.starts_with("event") {
            assert_quiet(&server);
        }
        server.stop_cleanly(libc::SIGTERM);
    }
}

/// A client that completes the handshake, then floods requests and never
/// reads: the server stops reading from it once its answers fill the
/// socket (back-pressure: the client's writes block), its memory stays
/// bounded, it does not spin, and others are served meanwhile. (Sync
/// mode serves one connection at a time: such a client holds it, as any
/// client that never reads holds a sequential server.)
#[test]
fn a_client_that_never_reads() {
    const FLOOD: usize = 32 << 20;
    for mode in &MODES[1..] {
        let server = start(mode, &[]);
        let addr = server.inet();
        let pgid = server.pid();
        echo_once(addr);
        let rss_before = group_rss_kib(pgid);
        let mut s = tls_client(addr);
        s.sock.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let flooder = thread::spawn(move || {
            let chunk = vec![b'x'; 16 << 10];
            let mut sent = 0;
            while sent < FLOOD {
                match s.write(&chunk) {
                    Ok(n) if n > 0 => sent += n,
                    _ => break,
                }
                // rustls buffers what the socket does not take: stop when
                // the socket stops taking it.
                if s.flush().is_err() {
                    break;
                }
            }
            (sent, s)
        });
        let (sent, s) = flooder.join().unwrap();
        println!("{mode}: the never-reading client got {sent} bytes in before its writes blocked");
        assert!(
            sent < FLOOD,
            "{mode}: the server read all {FLOOD} bytes of a client that never reads"
        );
        let cpu_before = group_cpu(pgid);
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            worst = worst.max(echo_once(addr));
        }
        println!("{mode}: others served in at most {worst:?} beside it");
        assert!(worst < SERVED_WITHIN, "{mode}: {worst:?}");
        thread::sleep(Duration::from_millis(500));
        let cpu = group_cpu(pgid) - cpu_before;
        let rss = group_rss_kib(pgid);
        println!("{mode}: server CPU {cpu:?} over ~0.5 s; RSS {rss_before} -> {rss} KiB");
        assert!(cpu < Duration::from_millis(400), "{mode}: the server spun: {cpu:?}");
        assert!(rss < rss_before + 16 * 1024, "{mode}: RSS {rss_before} -> {rss} KiB");
        drop(s);
        thread::sleep(Duration::from_millis(200));
        echo_once(addr);
        server.stop_cleanly(libc::SIGTERM);
    }
}

// ---------------------------------------------------------------------
// The example's arguments
// ---------------------------------------------------------------------

/// TLS where the example has none (datagrams) is a usage error (exit 2);
/// an unreadable or wrong PEM file is named, exit 1.
#[test]
fn echo_refuses_tls_where_it_has_none_and_names_a_bad_pem() {
    let tls = tls_args();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    for extra in [&["--proto", "udp"][..], &["--proto", "udp", "--mode", "event"]] {
        let args: Vec<&str> = [&["--addr", "127.0.0.1:0"][..], extra, &tls].concat();
        let (status, out, err) = util::echo::run_expecting_exit(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains("--tls-cert serves streams"), "{err}");
    }
    // The key where the certificate should be: no CERTIFICATE block.
    let (_, cert, key) = certificate();
    let (k, c) = (key.to_str().unwrap(), cert.to_str().unwrap());
    for mode in ["threading", "event"] {
        let args = ["--addr", "127.0.0.1:0", "--mode", mode, "--tls-cert", k, "--tls-key", c];
        let (status, out, err) = util::echo::run_expecting_exit(&args);
        assert_eq!(status.code(), Some(1), "{mode}: {out}{err}");
        assert!(err.starts_with(&format!("echo: {k}: ")), "{mode}: {err}");
        assert!(out.is_empty(), "{mode}: nothing listens: {out}");
    }
}

/// kv behind `--tls-cert/--tls-key`: the same commands and answers over
/// openssl s_client; SIGTERM still exits 0.
#[test]
fn kv_over_tls() {
    use util::process::{Lang, Program};
    let tls = tls_args();
    let mut args = vec!["127.0.0.1:0"];
    args.extend(tls.iter().map(String::as_str));
    let mut kv = Program::start(Lang::Rust, "kv", &args);
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-servername", "localhost"])
        .args(["-connect", &kv.addr.to_string(), "-CAfile"])
        .arg(&certificate().0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    // QUIT makes kv close, which ends s_client (-quiet ignores stdin's EOF).
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"SET greeting hello world\nGET greeting\nQUIT\n").unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "OK\nhello world\nBYE\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(kv.signal(libc::SIGTERM).code(), Some(0), "{}", kv.stderr());
}

/// Event mode in-process, every hostile client at once beside a client
/// being served: what each one gets, what the server reports (captured
/// through `log`), the loop thread's CPU time, and that nothing is left
/// once they are gone (no handler alive, no connection, no buffer lent).
mod event_in_process {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    use std::thread;
    use std::time::{Duration, Instant};

    use sockserv::std_adapter::Builder;
    use sockserv::std_adapter::event::{EventOptions, EventTcpServer};
    use sockserv::{EventHandler, Outbox, Step, service_fn};
    use sockserv_tls::{server_config_from_pem, tls};

    use super::{
        PLAINTEXT_ALERT, SERVED_WITHIN, TEST_STR, certificate, echo_once, half_client_hello,
        tls_client,
    };

    /// Handlers alive now (made by the service, dropped with their slot).
    static LIVE: AtomicUsize = AtomicUsize::new(0);

    struct Echo;

    impl Echo {
        fn new() -> Self {
            LIVE.fetch_add(1, Ordering::SeqCst);
            Echo
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl EventHandler for Echo {
        type Error = core::convert::Infallible;
        fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
            Ok(Step::consumed(out.write(input)))
        }
    }

    /// The same echo, not counted in `LIVE`: for the tests that drive a
    /// handler by hand while others, running at once, count theirs.
    struct Uncounted;

    impl EventHandler for Uncounted {
        type Error = core::convert::Infallible;
        fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
            Ok(Step::consumed(out.write(input)))
        }
    }

    /// A handshake whose bytes arrive in pieces, driven as the table
    /// drives the handler: while it runs, every call takes the whole input
    /// (what rustls cannot process yet waits in the session, so the
    /// table's pooled buffer goes back); the call that completes it hands
    /// the plaintext behind the client's Finished to the inner handler.
    /// (Before the session kept those bytes, every partial call consumed
    /// nothing.)
    #[test]
    fn a_handshake_in_pieces_gives_every_input_back() {
        use sockserv::{Next, Service};
        use sockserv_tls::rustls::ClientConnection;
        use sockserv_tls::rustls::pki_types::ServerName;

        let (_, cert, key) = certificate();
        let config = Arc::new(server_config_from_pem(cert, key).unwrap());
        let service = tls(config, service_fn(|_| Uncounted));
        let mut h = Service::<u32>::handler(&service, &7);
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = ClientConnection::new(super::client_config(), name).unwrap();
        let mut out_buf = vec![0u8; 64 << 10];
        let mut call = |h: &mut _, input: &mut [u8], back: &mut Vec<u8>| {
            let mut out = Outbox::gather(&mut out_buf);
            let step = EventHandler::received_mut(h, input, &mut out).unwrap();
            let n = out.gathered();
            back.extend_from_slice(&out_buf[..n]);
            step
        };
        let mut opened_buf = [0u8; 256];
        let mut out = Outbox::gather(&mut opened_buf);
        assert_eq!(EventHandler::opened(&mut h, &mut out).unwrap(), Next::Continue);

        // The ClientHello, one byte per call.
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        let mut back = Vec::new();
        for i in 0..hello.len() {
            let step = call(&mut h, &mut hello[i..i + 1], &mut back);
            assert_eq!(step, Step::consumed(1), "ClientHello byte {i} of {}", hello.len());
        }
        assert!(!back.is_empty(), "no server flight after the whole ClientHello");
        c.read_tls(&mut &back[..]).unwrap();
        c.process_new_packets().unwrap();

        // The client's Finished and a request in one flight, cut inside the
        // Finished record: the first piece waits in the session.
        c.writer().write_all(TEST_STR).unwrap();
        let mut flight = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut flight).unwrap();
        }
        let mut back = Vec::new();
        let (first, second) = flight.split_at_mut(20);
        assert_eq!(call(&mut h, first, &mut back), Step::consumed(20));
        let len = second.len();
        assert_eq!(call(&mut h, second, &mut back), Step::consumed(len));
        c.read_tls(&mut &back[..]).unwrap();
        c.process_new_packets().unwrap();
        let mut got = vec![0u8; TEST_STR.len()];
        c.reader().read_exact(&mut got).unwrap();
        assert_eq!(got, TEST_STR);
    }

    /// A handshake message larger than the session keeps (a ClientHello
    /// that says it is 60,000 bytes long, sent in whole records of 16 KiB,
    /// a piece per call): refused once more than two records wait, the
    /// input taken; never a pool buffer held for it.
    #[test]
    fn a_handshake_message_larger_than_two_records_is_refused() {
        use sockserv::Service;

        let (_, cert, key) = certificate();
        let config = Arc::new(server_config_from_pem(cert, key).unwrap());
        let service = tls(config, service_fn(|_| Uncounted));
        let mut h = Service::<u32>::handler(&service, &7);
        let mut out_buf = vec![0u8; 64 << 10];
        let mut out = Outbox::gather(&mut out_buf);
        EventHandler::opened(&mut h, &mut out).unwrap();
        // Handshake records of 16,384 bytes: the first starts a
        // ClientHello of 60,000 bytes.
        let record = |first: bool| {
            let mut r = vec![0x16, 0x03, 0x01, 0x40, 0x00];
            let mut body = vec![0u8; 16384];
            if first {
                body[..4].copy_from_slice(&[0x01, 0x00, 0xea, 0x60]);
                body[4..6].copy_from_slice(&[0x03, 0x03]);
            }
            r.extend(body);
            r
        };
        let mut closed = None;
        for i in 0..4 {
            let mut input = record(i == 0);
            let len = input.len();
            let mut out = Outbox::gather(&mut out_buf);
            let step = EventHandler::received_mut(&mut h, &mut input, &mut out).unwrap();
            assert_eq!(step.consumed, len, "record {i}: the input is taken");
            if step.next == sockserv::Next::Close {
                closed = Some(i);
                break;
            }
        }
        println!("a 60,000-byte ClientHello: closed at record {closed:?}");
        assert!(matches!(closed, Some(1 | 2)), "closed at {closed:?}");
    }

    /// Every report of the server, as (level, text).
    static LOG: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            LOG.lock().unwrap().push((record.level(), record.args().to_string()));
        }
        fn flush(&self) {}
    }

    /// The reports that name `port` (a client's).
    fn reports_about(port: u16) -> Vec<(log::Level, String)> {
        let needle = format!("127.0.0.1:{port}:");
        LOG.lock().unwrap().iter().filter(|(_, t)| t.contains(&needle)).cloned().collect()
    }

    /// CPU time of thread `tid` of this process so far.
    fn thread_cpu(tid: i32) -> Duration {
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let rest = &text[text.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        done()
    }

    #[test]
    fn every_hostile_client_at_once_and_nothing_left() {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Debug);
        let (_, cert, key) = certificate();
        let config = Arc::new(server_config_from_pem(cert, key).unwrap());
        let service =
            tls(config, service_fn(|_| Echo::new())).handshake_timeout(Duration::from_secs(1));
        let mut options = EventOptions::default();
        options.server.idle_timeout = Some(Duration::from_secs(3));
        let mut server: EventTcpServer<_> =
            Builder::new().event("127.0.0.1:0", service, options).unwrap();
        let sockserv::std_adapter::BindAddr::Inet(addr) = *server.server_address() else {
            unreachable!("bound to 127.0.0.1")
        };
        let stop = server.shutdown_handle();
        let (tid_tx, tid_rx) = mpsc::channel();
        let loop_thread = thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            server.serve_forever(Duration::from_millis(500)).unwrap();
            server
        });
        let tid = tid_rx.recv().unwrap();
        echo_once(addr);

        // Half a ClientHello and silence, 200 of them.
        let silent: Vec<TcpStream> = (0..200)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(&half_client_hello()).unwrap();
                s
            })
            .collect();
        // Plaintext instead of a handshake.
        let mut plain = TcpStream::connect(addr).unwrap();
        plain.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        // A reset in the handshake.
        let reset_port = {
            let s = socket2::Socket::from(TcpStream::connect(addr).unwrap());
            (&s).write_all(&half_client_hello()).unwrap();
            s.set_linger(Some(Duration::ZERO)).unwrap();
            s.local_addr().unwrap().as_socket().unwrap().port()
        };
        // An alert mid-stream.
        let mut alerting = tls_client(addr);
        alerting.write_all(TEST_STR).unwrap();
        let mut buf = [0u8; 12];
        alerting.read_exact(&mut buf).unwrap();
        alerting.sock.write_all(&PLAINTEXT_ALERT).unwrap();
        // A close without close_notify.
        let ragged_port = {
            let mut s = tls_client(addr);
            s.write_all(TEST_STR).unwrap();
            s.read_exact(&mut buf).unwrap();
            s.sock.shutdown(std::net::Shutdown::Both).unwrap();
            s.sock.local_addr().unwrap().port()
        };
        // A client that floods and never reads.
        let mut flooder = tls_client(addr);
        flooder.sock.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
        let chunk = vec![b'y'; 16 << 10];
        let mut flooded = 0usize;
        while flooded < 64 << 20 {
            if flooder.write(&chunk).is_err() || flooder.flush().is_err() {
                break;
            }
            flooded += chunk.len();
        }
        assert!(flooded < 64 << 20, "the server read all of a client that never reads");

        // Others are served meanwhile, and the loop does not spin.
        let cpu_before = thread_cpu(tid);
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            worst = worst.max(echo_once(addr));
        }
        println!("event: served in at most {worst:?} beside 200 silent handshakes and the rest");
        assert!(worst < SERVED_WITHIN, "an echo took {worst:?}");

        // Plaintext: an alert (or nothing) and a close, at once.
        plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let _ = plain.read_to_end(&mut got);
        assert!(got.is_empty() || got[0] == 0x15, "plaintext got {got:?}");
        let plain_port = plain.local_addr().unwrap().port();
        // The alert: the session ends; an encrypted alert back, then EOF.
        alerting.sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = alerting.sock.read_to_end(&mut rest);
        assert!(matches!(rest.first(), None | Some(0x15 | 0x17)), "alert got {rest:?}");
        let alert_port = alerting.sock.local_addr().unwrap().port();
        // The silent ones are closed at the handshake timeout (1 s).
        let start = Instant::now();
        for mut s in silent {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 64];
            assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "a silent handshake got bytes");
        }
        println!("event: 200 silent handshakes closed {:?} later", start.elapsed());
        let cpu = thread_cpu(tid) - cpu_before;
        println!("event: loop CPU while they waited: {cpu:?}");
        assert!(cpu < Duration::from_millis(500), "the loop spun: {cpu:?}");

        // Everyone leaves: nothing is left (the never-reader is closed by
        // its reset when dropped).
        drop(flooder);
        drop(alerting);
        drop(plain);
        let gone = wait_until(Duration::from_secs(10), || LIVE.load(Ordering::SeqCst) == 0);
        assert!(gone, "{} handlers still alive", LIVE.load(Ordering::SeqCst));
        echo_once(addr);
        stop.shutdown().unwrap();
        let server = loop_thread.join().unwrap();
        assert_eq!(server.connections(), 0);
        assert_eq!(server.buffers_lent(), 0, "buffers still lent after every client left");
        assert_eq!(server.stats().starved, 0);

        // What was said, and at what level: never a warning or a handler
        // error for any of them.
        let plain_said = reports_about(plain_port);
        println!("plaintext: {plain_said:?}");
        assert!(
            plain_said
                .iter()
                .any(|(l, t)| *l == log::Level::Info && t.contains("TLS handshake failed")),
            "{plain_said:?}"
        );
        let alert_said = reports_about(alert_port);
        println!("alert: {alert_said:?}");
        assert!(alert_said.iter().any(|(l, _)| *l == log::Level::Info), "{alert_said:?}");
        let ragged_said = reports_about(ragged_port);
        println!("no close_notify: {ragged_said:?}");
        assert!(
            ragged_said.iter().any(|(_, t)| t.contains("without close_notify")),
            "{ragged_said:?}"
        );
        println!("reset: {:?}", reports_about(reset_port));
        let log = LOG.lock().unwrap();
        let loud: Vec<_> = log.iter().filter(|(l, _)| *l <= log::Level::Warn).collect();
        assert!(loud.is_empty(), "warnings or errors: {loud:?}");
        let timeouts = log.iter().filter(|(_, t)| t.contains("idle for too long")).count();
        println!("event: {timeouts} handshake timeouts reported at info");
    }

    /// Answers each complete line with its length.
    struct Lines;

    impl EventHandler for Lines {
        type Error = core::fmt::Error;
        fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
            let used = out.answer_lines(input, 8, |line, out| writeln!(out, "{}", line.len()))?;
            Ok(Step::consumed(used))
        }
    }

    /// Every record ends in the middle of a line, 20,000 of them: the
    /// plaintext left over waits in the table's buffer after each read,
    /// and the spent records before it are given back each time (else
    /// they pile up, the buffer fills and the connection is closed as
    /// stalled after some thousands of records).
    #[test]
    fn records_that_end_mid_line_do_not_pile_up() {
        let (_, cert, key) = certificate();
        let config = Arc::new(server_config_from_pem(cert, key).unwrap());
        let mut server =
            EventTcpServer::bind("127.0.0.1:0", tls(config, service_fn(|_| Lines))).unwrap();
        let sockserv::std_adapter::BindAddr::Inet(addr) = *server.server_address() else {
            unreachable!("bound to 127.0.0.1")
        };
        let stop = server.shutdown_handle();
        let serving = thread::spawn(move || server.serve_forever(Duration::from_millis(100)));
        let mut c = tls_client(addr);
        const N: usize = 20_000;
        // "ab" then "c\nab" ... : each record holds the end of one line and
        // the start of the next.
        c.write_all(b"ab").unwrap();
        let mut answers = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..N {
            c.write_all(b"c\nab").unwrap();
            c.flush().unwrap();
            // Keep the answers flowing (the client's socket must not fill).
            c.sock.set_nonblocking(true).unwrap();
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                answers.extend_from_slice(&buf[..n]);
            }
            c.sock.set_nonblocking(false).unwrap();
        }
        c.write_all(b"c\n").unwrap();
        while answers.len() < (N + 1) * 2 {
            let n = c.read(&mut buf).expect("the answers");
            assert!(n > 0, "closed after {} of {} answers", answers.len() / 2, N + 1);
            answers.extend_from_slice(&buf[..n]);
        }
        // Each line is "abc\n": 4 bytes.
        assert!(answers.chunks(2).all(|a| a == b"4\n"), "an answer differs");
        stop.shutdown().unwrap();
        serving.join().unwrap().unwrap();
    }
}
