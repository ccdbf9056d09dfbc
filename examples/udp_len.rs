//! A UDP server that answers each datagram with its length, refuses
//! clients of one IP address, and can stop itself from another thread.
//!
//! ```text
//! cargo run --example udp_len -- [--port 9997] [--deny IP] [--seconds N]
//! echo -n hello | nc -u -w1 127.0.0.1 9997      # answers "5\n"
//! ```
//!
//! Listens on 127.0.0.1. A datagram from the `--deny` address gets no
//! answer (one `refused ADDR` line on stderr, through `verify_request`).
//! With `--seconds N` a thread stops the server after N seconds through a
//! `ShutdownHandle` (the loop is woken at once, not at its next poll).
//! Prints `listening on ADDR` first and exits 0 on SIGINT/SIGTERM or when
//! stopped.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use sockserv::embedded_io::Write;
use sockserv::std_adapter::UdpServer;
use sockserv::*;

#[derive(Parser)]
struct Args {
    /// The port on 127.0.0.1 (0: the system picks).
    #[arg(long, default_value_t = 9997)]
    port: u16,
    /// Ignore datagrams from this IP address.
    #[arg(long)]
    deny: Option<IpAddr>,
    /// Stop after this many seconds (from another thread).
    #[arg(long)]
    seconds: Option<u64>,
}

/// Answers a datagram with its length in decimal and a newline.
struct Len;

impl DatagramHandler for Len {
    type Error = ReplyFull;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), ReplyFull> {
        Ok(writeln!(reply, "{}", packet.len())?)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let service = service_fn(|_| Len).verify(move |addr| {
        let denied = addr.ip() == args.deny;
        if denied {
            eprintln!("refused {}", addr.client());
        }
        !denied
    });
    let mut server = UdpServer::bind(("127.0.0.1", args.port), service)?;
    let stop = server.shutdown_handle();
    stop.stop_on_termination()?;
    if let Some(seconds) = args.seconds {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(seconds));
            stop.shutdown()
        });
    }
    println!("listening on {}", server.server_address());
    server.serve_forever(Duration::from_millis(500))?;
    Ok(())
}
