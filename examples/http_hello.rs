//! An HTTP/1.0 responder in event mode: one thread, epoll, no blocking.
//!
//! ```text
//! cargo run --example http_hello -- [HOST:PORT]   (default 127.0.0.1:8080)
//! curl http://127.0.0.1:8080/world
//! ```
//!
//! Waits for the request head (up to its blank line, `\r\n\r\n`; it may
//! arrive in any number of pieces), answers `200 OK` with `hello, PATH`
//! (any method), then closes. A request line that is not
//! `METHOD PATH HTTP/x` gets `400 Bad Request`; a head longer than 8 KiB (blank line included, or
//! 8 KiB received without one) gets `431 Request Header Fields Too Large`,
//! both then closed (a client still sending then may see a reset instead).
//! A client that never finishes its head is closed by the event mode's
//! idle timeout (5 minutes); the others are served meanwhile.
//! Prints `listening on ADDR` first and exits 0 on SIGINT/SIGTERM.

use std::fmt;
use std::time::Duration;

use sockserv::std_adapter::event::EventTcpServer;
use sockserv::*;

/// The largest request head served (well under the event mode's 64 KiB
/// receive buffer, so the handler, not the buffer, decides).
const MAX_HEAD: usize = 8 * 1024;

/// One connection's handler.
struct Hello;

impl EventHandler for Hello {
    type Error = fmt::Error;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, fmt::Error> {
        let end = input.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        let end = match end {
            Some(end) if end <= MAX_HEAD => end,
            None if input.len() < MAX_HEAD => return Ok(Step::consumed(0)), // wait for more
            _ => {
                write!(out, "HTTP/1.0 431 Request Header Fields Too Large\r\n\r\n")?;
                return Ok(Step::close(input.len()));
            }
        };
        let head = String::from_utf8_lossy(&input[..end]);
        let words: Vec<_> = head.lines().next().unwrap_or("").split(' ').collect();
        match words[..] {
            [_, path, version] if version.starts_with("HTTP/") => {
                let body = format!("hello, {path}\n");
                write!(out, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n")?;
                write!(out, "Content-Length: {}\r\n\r\n{body}", body.len())?;
            }
            _ => write!(out, "HTTP/1.0 400 Bad Request\r\n\r\n")?,
        }
        Ok(Step::close(end))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
    let mut server = EventTcpServer::bind(addr, service_fn(|_| Hello))?;
    let stop = server.shutdown_handle();
    stop.stop_on_termination()?;
    println!("listening on {}", server.server_address());
    server.serve_forever(Duration::from_millis(500))?;
    Ok(())
}
