//! The plaintext stream a handler gets: rustls between it and the socket.

use std::io;

use embedded_io::{ErrorType, Read, Write};
use rustls::pki_types::CertificateDer;
use rustls::{ProtocolVersion, ServerConnection, SupportedCipherSuite};
use sockserv_core::driver::Connection;
use sockserv_core::logging::{Level, report};
use sockserv_std::Conn;

/// A TLS connection as a blocking `embedded_io` [`Read`] + [`Write`] of
/// plaintext: what a handler behind [`Tls`](crate::Tls) gets instead of a
/// [`Conn`] (CPython's `SSLSocket` from `wrap_socket(server_side=True)`).
///
/// * A read returns decrypted bytes as soon as a record is complete; it
///   blocks (under the server's `stream_timeout`, and in the sequential
///   strategy until a stop) while no record is.
/// * EOF is `Ok(0)`, after the peer's `close_notify` and also when the peer
///   closed the TCP connection without one (reported at debug): CPython's
///   `suppress_ragged_eofs=True`. A protocol that must detect a truncation
///   frames its own messages (a length, a terminator).
/// * A write encrypts and sends everything it accepts before returning
///   (at most rustls's buffer limit, 64 KiB by default, per call).
/// * Errors are `io::Error`, as [`Conn`]'s: a bad record or an alert from
///   the peer is `InvalidData`, with rustls's error inside.
///
/// Handlers written for any `S: Read + Write` run on it unchanged; one
/// written for `TlsStream<'_>` itself can ask for [`info`](Self::info).
#[derive(Debug)]
pub struct TlsStream<'a> {
    tls: &'a mut ServerConnection,
    conn: &'a mut Conn,
}

/// What was negotiated on a connection, from [`TlsStream::info`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TlsInfo<'a> {
    /// The ALPN protocol both sides chose (e.g. `b"h2"`), if any.
    pub alpn_protocol: Option<&'a [u8]>,
    /// The host name the client asked for (SNI), if it sent one.
    pub server_name: Option<&'a str>,
    /// The client's certificate chain, when the configuration asked for
    /// one and the client sent it.
    pub peer_certificates: Option<&'a [CertificateDer<'static>]>,
    /// TLS 1.2 or 1.3.
    pub protocol_version: Option<ProtocolVersion>,
    /// The cipher suite in use.
    pub cipher_suite: Option<SupportedCipherSuite>,
}

impl<'a> TlsStream<'a> {
    pub(crate) fn new(tls: &'a mut ServerConnection, conn: &'a mut Conn) -> Self {
        Self { tls, conn }
    }

    /// What the handshake negotiated: ALPN, SNI name, client certificates.
    pub fn info(&self) -> TlsInfo<'_> {
        info_of(self.tls)
    }

    /// The rustls connection (for what [`info`](Self::info) does not say).
    pub fn get_ref(&self) -> &ServerConnection {
        self.tls
    }

    /// The socket under the TLS layer (writing to it directly breaks the
    /// TLS stream; options such as timeouts are fine).
    pub fn get_conn(&self) -> &Conn {
        self.conn
    }

    /// Sends what rustls has queued (records, alerts) to the socket.
    fn write_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut StdIo(self.conn))?;
        }
        Ok(())
    }

    /// Reads records from the socket until rustls has plaintext, EOF or an
    /// error for the reader.
    fn read_records(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.tls.read_tls(&mut StdIo(self.conn))?;
        if let Err(e) = self.tls.process_new_packets() {
            // Tell the peer why (the alert rustls queued), best effort.
            let _ = self.write_pending();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(())
    }

    /// Queues `close_notify` and sends it, ignoring a peer that is gone.
    pub(crate) fn close(&mut self) {
        self.tls.send_close_notify();
        let _ = self.write_pending();
    }
}

impl ErrorType for TlsStream<'_> {
    type Error = io::Error;
}

impl Read for TlsStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match io::Read::read(&mut self.tls.reader(), buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_records()?,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    let peer = peer(self.conn);
                    report(Level::Debug, format_args!("{peer}: closed without close_notify"));
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TlsStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.write_pending()?;
        let n = io::Write::write(&mut self.tls.writer(), buf)?;
        self.write_pending()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::Write::flush(&mut self.tls.writer())?;
        self.write_pending()
    }
}

impl Connection for TlsStream<'_> {
    /// Sends `close_notify`, then half-closes the socket.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.write_pending()?;
        self.conn.shutdown_write()
    }
}

/// What `tls`'s handshake negotiated.
pub(crate) fn info_of(tls: &ServerConnection) -> TlsInfo<'_> {
    TlsInfo {
        alpn_protocol: tls.alpn_protocol(),
        server_name: tls.server_name(),
        peer_certificates: tls.peer_certificates(),
        protocol_version: tls.protocol_version(),
        cipher_suite: tls.negotiated_cipher_suite(),
    }
}

/// The client's address for a report line.
pub(crate) fn peer(conn: &Conn) -> String {
    match conn.get_ref().peer_addr() {
        Ok(addr) => match addr.as_socket() {
            Some(inet) => inet.to_string(),
            None => format!("{:?}", addr.as_pathname().unwrap_or(std::path::Path::new("unix"))),
        },
        Err(_) => "a client".into(),
    }
}

/// [`Conn`] as `std::io`, for rustls's `read_tls` / `write_tls`: the same
/// calls (and so the same timeouts and stop wake-ups) as a plain handler's.
pub(crate) struct StdIo<'a>(pub(crate) &'a mut Conn);

impl io::Read for StdIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self.0, buf)
    }
}

impl io::Write for StdIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
