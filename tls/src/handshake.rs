//! The server side of the handshake on a blocking socket, under one
//! deadline.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use rustls::ServerConnection;
use socket2::Socket;
use sockserv_core::logging::Level;
use sockserv_std::Conn;

/// Why a handshake did not complete. The connection is closed; the handler
/// never runs. Reported at [`Level::Info`] (a timeout, a protocol error: a
/// client that speaks something else, or distrusts the certificate) or
/// [`Level::Debug`] (the client went away), never as a handler error.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The handshake did not complete within the handshake timeout.
    TimedOut,
    /// The client closed the connection before the handshake completed.
    Closed,
    /// The socket failed (a reset, ...).
    Io(io::Error),
    /// The client sent something that is not a valid TLS handshake, or an
    /// alert (rustls's error; the alert rustls chose was sent back).
    Tls(rustls::Error),
}

impl HandshakeError {
    /// How serious a report of this failure is.
    pub fn level(&self) -> Level {
        match self {
            Self::Closed | Self::Io(_) => Level::Debug,
            Self::TimedOut | Self::Tls(_) => Level::Info,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut => f.write_str("TLS handshake timed out"),
            Self::Closed => f.write_str("closed during the TLS handshake"),
            Self::Io(e) => write!(f, "TLS handshake failed: {e}"),
            Self::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Runs the handshake to completion on `conn`'s socket, reading and
/// writing it directly with `SO_RCVTIMEO` / `SO_SNDTIMEO` set to what is
/// left of `timeout` (so one bound covers every step, whatever the
/// strategy), then puts the socket's own timeouts back.
pub(crate) fn handshake(
    tls: &mut ServerConnection,
    conn: &Conn,
    timeout: Duration,
) -> Result<(), HandshakeError> {
    let socket = conn.get_ref();
    let saved = (socket.read_timeout(), socket.write_timeout());
    let result = drive(tls, socket, Instant::now() + timeout);
    if let (Ok(read), Ok(write)) = saved {
        let _ = socket.set_read_timeout(read);
        let _ = socket.set_write_timeout(write);
    }
    result
}

fn drive(
    tls: &mut ServerConnection,
    socket: &Socket,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    while tls.is_handshaking() {
        flush(tls, socket, deadline)?;
        if !tls.is_handshaking() {
            break;
        }
        socket.set_read_timeout(Some(left(deadline)?)).map_err(HandshakeError::Io)?;
        match tls.read_tls(&mut &*socket) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {}
            Err(e) => return Err(io_error(e)),
        }
        if let Err(e) = tls.process_new_packets() {
            // Send the alert rustls queued, briefly: the peer may be gone.
            let _ = flush(tls, socket, Instant::now() + Duration::from_millis(100));
            return Err(HandshakeError::Tls(e));
        }
    }
    // The last flight (TLS 1.2's Finished, 1.3's session tickets).
    flush(tls, socket, deadline)
}

fn flush(
    tls: &mut ServerConnection,
    socket: &Socket,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    while tls.wants_write() {
        socket.set_write_timeout(Some(left(deadline)?)).map_err(HandshakeError::Io)?;
        tls.write_tls(&mut &*socket).map_err(io_error)?;
    }
    Ok(())
}

/// What is left until `deadline` (at least 1 ms: zero means "no timeout"
/// to the socket), or `TimedOut`.
fn left(deadline: Instant) -> Result<Duration, HandshakeError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(HandshakeError::TimedOut);
    }
    Ok((deadline - now).max(Duration::from_millis(1)))
}

fn io_error(e: io::Error) -> HandshakeError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandshakeError::TimedOut,
        io::ErrorKind::UnexpectedEof => HandshakeError::Closed,
        _ => HandshakeError::Io(e),
    }
}
