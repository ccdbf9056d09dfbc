//! The echo handler both echo examples serve, in all three forms: blocking
//! stream, event mode and datagram. `#[path]`-included by each example.
//! The handlers themselves are in `echo.rs`, shared with the mps2-an386
//! firmware; here the stream form gets its read buffer from the heap.

use std::sync::atomic::{AtomicUsize, Ordering};

use embedded_io::{Read, Write};
use sockserv::StreamHandler;

#[path = "echo.rs"]
mod echo;
pub use echo::Echo;

/// The blocking stream echo's read buffer, in bytes (`echo --buffer`):
/// each read takes at most this much, and each write sends what one read
/// got.
pub static STREAM_BUFFER: AtomicUsize = AtomicUsize::new(64 * 1024);

impl<S: Read + Write> StreamHandler<S> for Echo {
    type Error = S::Error;
    fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
        let mut buf = vec![0u8; STREAM_BUFFER.load(Ordering::Relaxed)];
        echo::echo_stream(stream, &mut buf)
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
