//! tokio-rustls echo server, a peer in sockserv's TLS benchmarks.
//!
//! ```text
//! tokio-tls-echo current|multi HOST:PORT CERT.pem KEY.pem [BUFFER]
//! ```
//!
//! `current`: the current-thread runtime; `multi`: the multi-thread runtime
//! with its default worker count (one per CPU the process may run on). A
//! task per connection: the TLS handshake (`TlsAcceptor::accept`), then
//! reads of up to BUFFER bytes (default 16 KiB) written back until EOF, then
//! `shutdown` (close_notify). The `ServerConfig` is built the way
//! `sockserv_tls::server_config_from_pem` builds it: rustls with the ring
//! provider, its default protocol versions, no client authentication, one
//! certificate chain. Prints `listening on ADDR` first; SIGTERM ends it.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn config(cert: &str, key: &str) -> ServerConfig {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("certificate file")
        .collect::<Result<_, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("key PEM");
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 && args.len() != 6 {
        eprintln!("usage: tokio-tls-echo current|multi HOST:PORT CERT.pem KEY.pem [BUFFER]");
        std::process::exit(2);
    }
    let buffer: usize = match args.get(5).map(|b| b.parse()) {
        None => 16384,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("tokio-tls-echo: BUFFER must be a positive number of bytes");
            std::process::exit(2);
        }
    };
    let rt = match args[1].as_str() {
        "current" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        "multi" => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => {
            eprintln!("tokio-tls-echo: runtime must be current or multi");
            std::process::exit(2);
        }
    }
    .expect("runtime");
    let acceptor = TlsAcceptor::from(Arc::new(config(&args[3], &args[4])));
    let addr = args[2].clone();
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        let listener = TcpListener::bind(&addr).await.expect("bind");
        println!("listening on {}", listener.local_addr().unwrap());
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let Ok((s, _)) = r else { continue };
                    let _ = s.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut s) = acceptor.accept(s).await else { return };
                        let mut buf = vec![0u8; buffer];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        let _ = s.shutdown().await;
                    });
                }
                _ = term.recv() => return,
            }
        }
    });
}
