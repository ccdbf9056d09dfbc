//! tokio echo server, a peer in sockserv's benchmarks.
//!
//! ```text
//! tokio-echo current|multi tcp|udp HOST:PORT [BUFFER]
//! ```
//!
//! `current`: the current-thread runtime; `multi`: the multi-thread runtime
//! with its default worker count (one per CPU the process may run on, so
//! one under `taskset -c 0`). TCP: a task per connection reading up to
//! BUFFER bytes (default 16 KiB) and writing them back until EOF. UDP: one task, each datagram sent
//! back whole. Prints `listening on ADDR` first; SIGTERM ends it.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 && args.len() != 5 {
        eprintln!("usage: tokio-echo current|multi tcp|udp HOST:PORT [BUFFER]");
        std::process::exit(2);
    }
    let buffer: usize = match args.get(4).map(|b| b.parse()) {
        None => 16384,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("tokio-echo: BUFFER must be a positive number of bytes");
            std::process::exit(2);
        }
    };
    let rt = match args[1].as_str() {
        "current" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        "multi" => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => {
            eprintln!("tokio-echo: runtime must be current or multi");
            std::process::exit(2);
        }
    }
    .expect("runtime");
    let udp = args[2] == "udp";
    let addr = args[3].clone();
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        if udp {
            let sock = UdpSocket::bind(&addr).await.expect("bind");
            println!("listening on {}", sock.local_addr().unwrap());
            let mut buf = vec![0u8; 65536];
            loop {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        if let Ok((n, peer)) = r {
                            let _ = sock.send_to(&buf[..n], peer).await;
                        }
                    }
                    _ = term.recv() => return,
                }
            }
        }
        let listener = TcpListener::bind(&addr).await.expect("bind");
        println!("listening on {}", listener.local_addr().unwrap());
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let Ok((mut s, _)) = r else { continue };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; buffer];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
                _ = term.recv() => return,
            }
        }
    });
}
