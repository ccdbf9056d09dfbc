//! A pipelined counter in event mode: one thread, epoll, one counter for
//! every client.
//!
//! ```text
//! cargo run --example counter -- [HOST:PORT]   (default 127.0.0.1:9995)
//! printf 'INCR\nINCR\nGET\n' | nc -N 127.0.0.1 9995      # answers 1, 2, 2
//! ```
//!
//! One command a line, one answer a line: `INCR` → the new count, `GET` →
//! the count, anything else → `ERR unknown command`. A client may send any
//! number of commands without reading the answers (pipelining): the
//! handler takes a command only while its answer surely fits
//! ([`Outbox::answer_lines`]); the rest waits in the receive buffer until the
//! client reads, so a slow reader loses nothing and costs no more memory.
//! A line longer than the receive buffer (64 KiB) closes that connection.
//! Prints `listening on ADDR` first and exits 0 on SIGINT/SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sockserv::std_adapter::event::EventTcpServer;
use sockserv::*;

/// The longest answer: `ERR unknown command\n` (a `u64` takes 21 bytes).
const MAX_ANSWER: usize = 21;

/// One connection's handler: a handle on the shared count.
struct Counter(Arc<AtomicU64>);

impl EventHandler for Counter {
    type Error = std::fmt::Error;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        // Back-pressure: a command is taken only while its answer fits.
        let used = out.answer_lines(input, MAX_ANSWER, |line, out| match line.trim_ascii() {
            b"INCR" => writeln!(out, "{}", self.0.fetch_add(1, Ordering::Relaxed) + 1),
            b"GET" => writeln!(out, "{}", self.0.load(Ordering::Relaxed)),
            _ => writeln!(out, "ERR unknown command"),
        })?;
        Ok(Step::consumed(used))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:9995".into());
    let count = Arc::new(AtomicU64::new(0));
    let mut server = EventTcpServer::bind(addr, service_fn(move |_| Counter(count.clone())))?;
    let stop = server.shutdown_handle();
    stop.stop_on_termination()?;
    println!("listening on {}", server.server_address());
    server.serve_forever(Duration::from_millis(500))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockserv::mock::{MockConn, MockNet};

    /// Two clients pipeline commands; the second sends 300 (1.2 KB of
    /// answers, more than one of the mock's 512-byte buffers) and reads
    /// its answers 8 bytes at a time: every command is answered once, in
    /// order, none lost (fails when the room check is left out).
    #[test]
    fn pipelined_commands_from_a_slow_reader_are_all_answered() {
        let commands = "INCR\n".repeat(299) + "GET\n";
        let net = MockNet::new();
        net.connect(MockConn::new(1, b"INCR\nGET\nFLY\n"));
        net.connect(MockConn::new(2, commands.as_bytes()).write_window(8));
        net.open_window_at(Duration::from_secs(1), 1, 10_000);
        let count = Arc::new(AtomicU64::new(0));
        net.serve_events(service_fn(|_| Counter(count.clone()))).unwrap();
        assert_eq!(net.conn(0).unwrap().output(), b"1\n1\nERR unknown command\n");
        let want: String = (2..=300).map(|n| format!("{n}\n")).collect::<String>() + "300\n";
        assert_eq!(String::from_utf8_lossy(net.conn(1).unwrap().output()), want);
    }
}
