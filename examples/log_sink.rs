//! A log sink on a Unix datagram socket: each datagram a client sends is
//! one line of the log file.
//!
//! ```text
//! cargo run --example log_sink -- SOCKET_PATH LOG_FILE
//! logger --socket-path SOCKET_PATH --socket-errors=on hello   (or any datagram client)
//! ```
//!
//! Appends each datagram to `LOG_FILE` (created if missing) with one
//! `write(2)`, a newline added unless the datagram ends with one; sends no
//! reply. A datagram larger than 64 KiB is reported and not written.
//! Prints `listening on SOCKET_PATH` first, exits 0 on SIGINT/SIGTERM and
//! removes the socket path.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use sockserv::std_adapter::UnixDatagramServer;
use sockserv::*;

/// One datagram's handler: a handle on the log file.
struct Sink(Arc<File>);

impl DatagramHandler for Sink {
    type Error = std::io::Error;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> std::io::Result<()> {
        reply.suppress();
        let line = [packet.strip_suffix(b"\n").unwrap_or(packet), b"\n"].concat();
        (&*self.0).write_all(&line)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (path, log) = (&args[1], &args[2]); // as Python's sys.argv[1:3]: a panic when missing
    let file = Arc::new(OpenOptions::new().create(true).append(true).open(log)?);
    let mut server = UnixDatagramServer::bind(path, service_fn(move |_| Sink(file.clone())))?;
    let stop = server.shutdown_handle();
    stop.stop_on_termination()?;
    println!("listening on {}", server.server_address());
    server.serve_forever(Duration::from_millis(500))?;
    Ok(())
}
