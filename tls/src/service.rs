//! The service wrapper: TLS in front of any stream service.

use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection};
use sockserv_core::logging::Level;
use sockserv_core::logging::report;
use sockserv_core::{
    EventHandler, Next, Outbox, Request, RequestError, Service, Step, StreamHandler,
};
use sockserv_std::Conn;

use crate::event::{Driver, EventSession};
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
            event: None,
            client: Some(format!("{client:?}").into()),
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

/// The handler [`Tls`] makes. Blocking modes: the handshake in `setup`,
/// then the inner handler over a [`TlsStream`]. Event mode: rustls's
/// unbuffered connection between the connection's buffers and the inner
/// [`EventHandler`], which is told `opened` once the handshake completed
/// (see [`handshake_info`](crate::handshake_info)).
#[derive(Debug)]
pub struct TlsHandler<H> {
    inner: H,
    config: Arc<ServerConfig>,
    timeout: Duration,
    /// Blocking modes: the session, once the handshake completed.
    tls: Option<Box<ServerConnection>>,
    /// Event mode: the session, from `opened`.
    event: Option<Box<EventSession>>,
    /// The client's address, for event mode's reports (moved into the
    /// session).
    client: Option<Box<str>>,
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
                let tls = self.tls.insert(Box::new(tls));
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

impl<H: EventHandler> TlsHandler<H> {
    fn driver(&mut self) -> Option<Driver<'_, H>> {
        let frag = self.config.max_fragment_size.map_or(16384, |m| m.saturating_sub(5).max(1));
        let session = self.event.as_deref_mut()?;
        Some(Driver { session, inner: &mut self.inner, frag, timeout: self.timeout })
    }
}

/// Event mode: TLS between the connection table and the inner handler.
///
/// The handshake runs first, under the handshake timeout (as an idle
/// timeout of the connection's own, and checked against its start on
/// every call); the inner handler's `opened` follows it, then it gets
/// plaintext in `received`, its `Outbox` room sized so that its answer's
/// records fit the connection's. A failed handshake is reported at info
/// (debug when the client went away) and the connection closed, never as a
/// handler error. The inner handler closing (`Next::Close`) sends
/// `close_notify` after its answer. The peer's `close_notify`, and a TCP
/// EOF without one, are both `peer_closed`.
impl<H: EventHandler> EventHandler for TlsHandler<H> {
    type Error = H::Error;

    fn opened(&mut self, _out: &mut Outbox<'_>) -> Result<Next, H::Error> {
        let client = self.client.take().unwrap_or_else(|| "a client".into());
        match EventSession::new(Arc::clone(&self.config), client) {
            Ok(session) => {
                self.event = Some(Box::new(session));
                Ok(Next::Continue)
            }
            Err(e) => {
                report(Level::Warn, format_args!("TLS session not started: {e}"));
                Ok(Next::Close)
            }
        }
    }

    /// Copies the input and runs [`received_mut`](Self::received_mut) (the
    /// table calls that one, on its own buffer).
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, H::Error> {
        self.received_mut(&mut input.to_vec(), out)
    }

    fn received_mut(&mut self, input: &mut [u8], out: &mut Outbox<'_>) -> Result<Step, H::Error> {
        match self.driver() {
            Some(mut d) => d.received(input, out),
            None => Ok(Step::close(input.len())),
        }
    }

    fn peer_closed(&mut self, out: &mut Outbox<'_>) -> Result<Next, H::Error> {
        match self.driver() {
            Some(mut d) => d.peer_closed(out),
            None => Ok(Next::Close),
        }
    }

    fn drained(&mut self, out: &mut Outbox<'_>) -> Result<Next, H::Error> {
        match self.driver() {
            Some(mut d) => d.drained(out),
            None => Ok(Next::Continue),
        }
    }

    fn idle_timeout(&self) -> Option<Duration> {
        match &self.event {
            Some(s) if s.handshaking() => Some(self.timeout),
            Some(_) => self.inner.idle_timeout(),
            None => None,
        }
    }

    fn closed(&mut self) {
        if let Some(s) = &self.event {
            if s.handshaken() {
                self.inner.closed();
            } else if !s.is_over() {
                report(
                    Level::Debug,
                    format_args!("{}: closed during the TLS handshake", s.client()),
                );
            }
        }
    }
}
