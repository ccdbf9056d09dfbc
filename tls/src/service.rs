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
use crate::stream::{TlsInfo, TlsStream, info_of, peer};

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
pub struct Tls<Svc, F = NoHook> {
    inner: Svc,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    on_handshake: F,
}

/// The service's say once a connection's handshake completed: see
/// [`Tls::on_handshake`]. Implemented for closures
/// `Fn(&TlsInfo<'_>, &mut H) -> bool` and for [`NoHook`].
pub trait OnHandshake<H> {
    /// Called on the request's thread (or child) after the handshake and
    /// before the handler's `setup`, with what was negotiated and the
    /// handler the service made for this client. `false` closes the
    /// connection (with `close_notify`) without running the handler;
    /// reported at info.
    fn on_handshake(&self, info: &TlsInfo<'_>, handler: &mut H) -> bool;
}

/// No hook: every completed handshake is served.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl<H> OnHandshake<H> for NoHook {
    fn on_handshake(&self, _: &TlsInfo<'_>, _: &mut H) -> bool {
        true
    }
}

impl<H, F: Fn(&TlsInfo<'_>, &mut H) -> bool> OnHandshake<H> for F {
    fn on_handshake(&self, info: &TlsInfo<'_>, handler: &mut H) -> bool {
        self(info, handler)
    }
}

/// Wraps `service` in TLS with `config` (see [`Tls`]).
pub fn tls<Svc>(config: Arc<ServerConfig>, service: Svc) -> Tls<Svc> {
    Tls::new(config, service)
}

impl<Svc> Tls<Svc> {
    /// Wraps `service` in TLS with `config`, with the
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn new(config: Arc<ServerConfig>, service: Svc) -> Self {
        Self {
            inner: service,
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            on_handshake: NoHook,
        }
    }
}

impl<Svc, F> Tls<Svc, F> {
    /// Lets the service see each connection's TLS details — ALPN, SNI name,
    /// client certificates ([`TlsInfo`]) — once its handshake completed:
    /// `Service::handler` runs before the handshake, so `hook` gets the
    /// handler it made and may set it up from what was negotiated (a
    /// protocol per ALPN, a user per client certificate), or return `false`
    /// to close the connection before the handler runs. It runs on the
    /// request's thread or child, before the handler's `setup`; a clone of
    /// `hook` goes with each connection's handler (capture an `Arc` for
    /// state the service keeps).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use sockserv::std_adapter::ThreadingTcpServer;
    /// use sockserv::tls::{TlsInfo, server_config_from_pem, tls};
    /// use sockserv::{StreamHandler, embedded_io::{Read, Write}, service_fn};
    ///
    /// struct Proto { h2: bool }
    /// impl<S: Read + Write> StreamHandler<S> for Proto {
    ///     type Error = S::Error;
    ///     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
    /// }
    ///
    /// let mut config = server_config_from_pem("cert.pem", "key.pem")?;
    /// config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    /// let service = tls(Arc::new(config), service_fn(|_| Proto { h2: false }))
    ///     .on_handshake(|info: &TlsInfo<'_>, handler: &mut Proto| {
    ///         handler.h2 = info.alpn_protocol == Some(b"h2");
    ///         true // false: close the connection, the handler never runs
    ///     });
    /// let mut server = ThreadingTcpServer::bind("127.0.0.1:8443", service)?;
    /// server.serve_forever(std::time::Duration::from_millis(500))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn on_handshake<G>(self, hook: G) -> Tls<Svc, G> {
        Tls {
            inner: self.inner,
            config: self.config,
            handshake_timeout: self.handshake_timeout,
            on_handshake: hook,
        }
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

impl<A, Svc, F> Service<A> for Tls<Svc, F>
where
    A: std::fmt::Debug,
    Svc: Service<A>,
    F: OnHandshake<Svc::Handler> + Clone,
{
    type Handler = TlsHandler<Svc::Handler, F>;

    fn handler(&self, client: &A) -> Self::Handler {
        TlsHandler {
            inner: self.inner.handler(client),
            config: Arc::clone(&self.config),
            timeout: self.handshake_timeout,
            tls: None,
            on_handshake: self.on_handshake.clone(),
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
pub struct TlsHandler<H, F = NoHook> {
    inner: H,
    config: Arc<ServerConfig>,
    timeout: Duration,
    /// Blocking modes: the session, once the handshake completed.
    tls: Option<Box<ServerConnection>>,
    /// Blocking modes: the service's hook, run after the handshake.
    on_handshake: F,
    /// Event mode: the session, from `opened`.
    event: Option<Box<EventSession>>,
    /// The client's address, for event mode's reports (moved into the
    /// session).
    client: Option<Box<str>>,
}

impl<H, E, F> StreamHandler<Conn> for TlsHandler<H, F>
where
    H: for<'a> StreamHandler<TlsStream<'a>, Error = E>,
    E: std::fmt::Debug,
    F: OnHandshake<H>,
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
            Ok(mut tls) => {
                if !self.on_handshake.on_handshake(&info_of(&tls), &mut self.inner) {
                    report(
                        Level::Info,
                        format_args!("{}: refused after the TLS handshake", peer(conn)),
                    );
                    TlsStream::new(&mut tls, conn).close();
                    return Ok(());
                }
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
