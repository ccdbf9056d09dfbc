//! The service wrapper: TLS in front of any stream service.

use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection};
use sockserv_core::logging::report;
use sockserv_core::{Request, RequestError, Service, StreamHandler};
use sockserv_std::Conn;

use crate::handshake::{HandshakeError, handshake};
use crate::stream::{TlsStream, peer};

/// How long a client may take to complete the handshake, unless
/// [`Tls::handshake_timeout`] says otherwise: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream service served over TLS: the equivalent of wrapping
/// socketserver's request with `SSLContext.wrap_socket(server_side=True)`.
///
/// Each connection first completes a TLS handshake with the user's
/// [`ServerConfig`] (certificates or an SNI resolver, ALPN, client
/// certificates, session resumption: all rustls's), bounded by the
/// handshake timeout; then the inner service's handler runs `setup`,
/// `handle` and `finish` on a [`TlsStream`] — plaintext through the same
/// `Read + Write` it has on a plain socket — and `close_notify` is sent
/// before the connection closes. A handshake that fails or times out is
/// reported at info or debug ([`HandshakeError::level`]) through the
/// crate's logging and the connection closed; the handler never runs and
/// `handle_error` is not called.
///
/// Works with every blocking strategy of the std adapter (sequential,
/// threading, forking, pool); the other hooks are the inner service's.
/// Certificates can be replaced while serving with a resolver of your own
/// (`ServerConfig::cert_resolver`) that swaps what it returns.
///
/// # Example
/// ```no_run
/// use std::sync::Arc;
/// use sockserv::std_adapter::ThreadingTcpServer;
/// use sockserv::tls::{server_config_from_pem, tls};
/// use sockserv::{StreamHandler, embedded_io::{Read, Write}, service_fn};
///
/// struct Echo;
/// impl<S: Read + Write> StreamHandler<S> for Echo {
///     type Error = S::Error;
///     fn handle(&mut self, s: &mut S) -> Result<(), S::Error> {
///         let mut buf = [0; 4096];
///         loop {
///             let n = s.read(&mut buf)?;
///             if n == 0 { return Ok(()); }
///             s.write_all(&buf[..n])?;
///         }
///     }
/// }
///
/// let config = Arc::new(server_config_from_pem("cert.pem", "key.pem")?);
/// let mut server = ThreadingTcpServer::bind("127.0.0.1:8443", tls(config, service_fn(|_| Echo)))?;
/// server.serve_forever(std::time::Duration::from_millis(500))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Tls<Svc> {
    inner: Svc,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

/// Wraps `service` in TLS with `config` (see [`Tls`]).
pub fn tls<Svc>(config: Arc<ServerConfig>, service: Svc) -> Tls<Svc> {
    Tls::new(config, service)
}

impl<Svc> Tls<Svc> {
    /// Wraps `service` in TLS with `config`, with the
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn new(config: Arc<ServerConfig>, service: Svc) -> Self {
        Self { inner: service, config, handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT }
    }

    /// Sets how long a client may take to complete the handshake (from
    /// the start of the request to the server's last handshake flight).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &Svc {
        &self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> Svc {
        self.inner
    }
}

impl<A: std::fmt::Debug, Svc: Service<A>> Service<A> for Tls<Svc> {
    type Handler = TlsHandler<Svc::Handler>;

    fn handler(&self, client: &A) -> Self::Handler {
        TlsHandler {
            inner: self.inner.handler(client),
            config: Arc::clone(&self.config),
            timeout: self.handshake_timeout,
            tls: None,
        }
    }

    fn verify_request(&self, request: &Request<'_, A>) -> bool {
        self.inner.verify_request(request)
    }
    fn handle_error(&self, client: &A, error: &RequestError<'_>) {
        self.inner.handle_error(client, error);
    }
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        self.inner.handle_accept_error(error);
    }
    fn handle_table_full(&self, client: &A) {
        self.inner.handle_table_full(client);
    }
    fn handle_buffers_exhausted(&self, client: &A) {
        self.inner.handle_buffers_exhausted(client);
    }
    fn handle_timeout(&self) {
        self.inner.handle_timeout();
    }
    fn service_actions(&self) {
        self.inner.service_actions();
    }
}

/// The handler [`Tls`] makes: the handshake in `setup`, then the inner
/// handler over a [`TlsStream`].
#[derive(Debug)]
pub struct TlsHandler<H> {
    inner: H,
    config: Arc<ServerConfig>,
    timeout: Duration,
    /// The session, once the handshake completed.
    tls: Option<ServerConnection>,
}

impl<H, E> StreamHandler<Conn> for TlsHandler<H>
where
    H: for<'a> StreamHandler<TlsStream<'a>, Error = E>,
    E: std::fmt::Debug,
{
    type Error = E;

    /// Completes the handshake, then runs the inner handler's `setup`. A
    /// failed handshake is reported here and is not an error: `handle` and
    /// `finish` then do nothing.
    fn setup(&mut self, conn: &mut Conn) -> Result<(), E> {
        let result = ServerConnection::new(Arc::clone(&self.config))
            .map_err(HandshakeError::Tls)
            .and_then(|mut tls| handshake(&mut tls, conn, self.timeout).map(|()| tls));
        match result {
            Ok(tls) => {
                let tls = self.tls.insert(tls);
                self.inner.setup(&mut TlsStream::new(tls, conn))
            }
            Err(e) => {
                report(e.level(), format_args!("{}: {e}", peer(conn)));
                Ok(())
            }
        }
    }

    fn handle(&mut self, conn: &mut Conn) -> Result<(), E> {
        match &mut self.tls {
            Some(tls) => self.inner.handle(&mut TlsStream::new(tls, conn)),
            None => Ok(()),
        }
    }

    /// Runs the inner handler's `finish`, then sends `close_notify`.
    fn finish(&mut self, conn: &mut Conn) -> Result<(), E> {
        let Some(tls) = &mut self.tls else { return Ok(()) };
        let mut stream = TlsStream::new(tls, conn);
        let finished = self.inner.finish(&mut stream);
        stream.close();
        finished
    }
}
