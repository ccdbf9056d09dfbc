#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod event;
mod handshake;
mod service;
mod sni;
mod stream;

pub use config::{CertSwap, PemError, server_config_from_pem};
pub use event::handshake_info;
pub use handshake::HandshakeError;
pub use service::{DEFAULT_HANDSHAKE_TIMEOUT, Tls, TlsHandler, tls};
pub use stream::{TlsInfo, TlsStream};

/// The rustls crate this layer is built on (its `ServerConfig`, resolvers,
/// certificate types), so that the versions always match.
pub use rustls;
