//! The service wrapper: TLS in front of any stream service.

use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection};
use sockserv_core::logging::report;
use sockserv_core::{Request, RequestError, Service, StreamHandler};
use sockserv_std::Conn;

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
    /// # use std::sync::Arc;
    /// # use sockserv::tls::{TlsInfo, server_config_from_pem, tls};
    /// # use sockserv::service_fn;
    /// # struct Proto { h2: bool }
    /// # let config = Arc::new(server_config_from_pem("cert.pem", "key.pem")?);
    /// let service = tls(config, service_fn(|_| Proto { h2: false }))
    ///     .on_handshake(|info: &TlsInfo<'_>, handler: &mut Proto| {
    ///         handler.h2 = info.alpn_protocol == Some(b"h2");
    ///         true
    ///     });
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
pub struct TlsHandler<H, F = NoHook> {
    inner: H,
    config: Arc<ServerConfig>,
    timeout: Duration,
    /// The session, once the handshake completed.
    tls: Option<ServerConnection>,
    on_handshake: F,
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
                        sockserv_core::logging::Level::Info,
                        format_args!("{}: refused after the TLS handshake", peer(conn)),
                    );
                    TlsStream::new(&mut tls, conn).close();
                    return Ok(());
                }
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
