//! The echo handler both echo examples serve, in all three forms: blocking
//! stream, event mode and datagram. `#[path]`-included by each example.

use std::sync::atomic::{AtomicUsize, Ordering};

use embedded_io::{Read, Write};
use sockserv::{DatagramHandler, ReplyFull, ReplyWriter, StreamHandler};
use sockserv::{EventHandler, Outbox, Step};

/// Sends every byte back until the client closes its side; each datagram
/// back whole.
pub struct Echo;

/// The blocking stream echo's read buffer, in bytes (`echo --buffer`):
/// each read takes at most this much, and each write sends what one read
/// got.
pub static STREAM_BUFFER: AtomicUsize = AtomicUsize::new(64 * 1024);

impl<S: Read + Write> StreamHandler<S> for Echo {
    type Error = S::Error;
    fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
        let mut buf = vec![0u8; STREAM_BUFFER.load(Ordering::Relaxed)];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    }
}

impl EventHandler for Echo {
    type Error = core::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        // What does not fit stays buffered until the client reads.
        Ok(Step::consumed(out.write(input)))
    }
}

impl DatagramHandler for Echo {
    type Error = ReplyFull;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), ReplyFull> {
        reply.write_all(packet)
    }
}

/// The TLS configuration of `--tls-cert` / `--tls-key` (`None` without
/// them), or a one-line error naming the file at fault.
#[allow(dead_code)] // udp_len-like examples include this file without TLS.
pub fn tls_config(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<Option<std::sync::Arc<sockserv_tls::rustls::ServerConfig>>, sockserv_tls::PemError> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            Ok(Some(std::sync::Arc::new(sockserv_tls::server_config_from_pem(cert, key)?)))
        }
        _ => Ok(None),
    }
}
