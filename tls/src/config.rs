//! A server configuration from PEM files, the common case.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A server configuration from a PEM certificate chain (leaf first) and a
/// PEM private key (PKCS#8, PKCS#1 or SEC1): CPython's
/// `SSLContext.load_cert_chain(certfile, keyfile)`.
///
/// It uses this crate's crypto provider (rustls with *ring*), TLS 1.2 and
/// 1.3, and no client authentication. The result is a plain
/// [`ServerConfig`]: set `alpn_protocols`, a session store or a resolver on
/// it before wrapping it in an `Arc` for [`Tls`](crate::Tls); build a
/// `ServerConfig` yourself for client certificates.
///
/// # Errors
/// [`PemError`] names the file that could not be read, held no
/// certificate or key, or whose key does not match the certificate.
///
/// # Example
/// ```no_run
/// let mut config = sockserv_tls::server_config_from_pem("cert.pem", "key.pem")?;
/// config.alpn_protocols = vec![b"http/1.1".to_vec()];
/// let config = std::sync::Arc::new(config);
/// # Ok::<(), sockserv_tls::PemError>(())
/// ```
pub fn server_config_from_pem(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<ServerConfig, PemError> {
    let (cert, key) = (cert.as_ref(), key.as_ref());
    let bad = |path: &Path, what: String| PemError { path: path.display().to_string(), what };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, pem_message(e)))?;
    if chain.is_empty() {
        return Err(bad(cert, "no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, pem_message(e)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| bad(key, e.to_string()))
}

fn pem_message(e: pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => "no matching PEM block".into(),
        other => format!("{other:?}"),
    }
}

/// Why [`server_config_from_pem`] failed.
#[derive(Debug, Clone)]
pub struct PemError {
    /// The file at fault.
    pub path: String,
    /// What was wrong with it.
    pub what: String,
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

impl std::error::Error for PemError {}

/// A certificate that can be replaced while the server runs: a rustls
/// certificate resolver whose key pair is swapped by
/// [`replace_from_pem`](Self::replace_from_pem). Connections already
/// established keep theirs; every handshake after the call gets the new
/// one. No restart, no connection refused.
///
/// # Example
/// ```no_run
/// use sockserv_tls::CertSwap;
/// let certs = CertSwap::from_pem("cert.pem", "key.pem")?;
/// let config = std::sync::Arc::new(certs.server_config());
/// // ... serve with `config`; later, after a renewal:
/// certs.replace_from_pem("new-cert.pem", "new-key.pem")?;
/// # Ok::<(), sockserv_tls::PemError>(())
/// ```
#[derive(Debug)]
pub struct CertSwap {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl CertSwap {
    /// A resolver serving the PEM chain `cert` with the PEM key `key`.
    ///
    /// # Errors
    /// As [`server_config_from_pem`].
    pub fn from_pem(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Arc<Self>, PemError> {
        let current = std::sync::RwLock::new(Arc::new(certified_key(cert.as_ref(), key.as_ref())?));
        Ok(Arc::new(Self { current }))
    }

    /// Serves `cert` / `key` from the next handshake on. On an error the
    /// old certificate stays.
    ///
    /// # Errors
    /// As [`server_config_from_pem`].
    pub fn replace_from_pem(
        &self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<(), PemError> {
        let new = Arc::new(certified_key(cert.as_ref(), key.as_ref())?);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(())
    }

    /// A server configuration (ring, TLS 1.2 and 1.3, no client
    /// authentication) whose certificate comes from this resolver.
    pub fn server_config(self: &Arc<Self>) -> ServerConfig {
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn rustls::server::ResolvesServerCert>)
    }
}

impl rustls::server::ResolvesServerCert for CertSwap {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, PemError> {
    let bad = |path: &Path, what: String| PemError { path: path.display().to_string(), what };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, pem_message(e)))?;
    if chain.is_empty() {
        return Err(bad(cert, "no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, pem_message(e)))?;
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| bad(key, e.to_string()))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| bad(key, e.to_string()))?;
    Ok(certified)
}
