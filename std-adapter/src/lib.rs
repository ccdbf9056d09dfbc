#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(feature = "document-features", doc = "# Feature flags")]
#![cfg_attr(feature = "document-features", doc = document_features::document_features!())]
#![deny(unsafe_code)]
#![warn(missing_docs)]

// The platform is stated at build time: epoll, pidfd, and Linux's socket
// flags and activation protocol are what this adapter is made of.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "sockserv-std supports Linux only (epoll, pidfd_open); on other systems \
     build sockserv without its default `std` feature"
);

pub mod activation;
mod addr;
mod conn;
pub mod dispatch;
mod error;
pub mod event;
#[cfg(test)]
mod layering;
mod replies;
mod server;
mod shutdown;
mod socket;
mod source;
mod sys;
mod writer;

pub use addr::{Address, BindAddr};
pub use conn::Conn;
pub use dispatch::{Close, Forking, Pool, Sequential, Strategy, Threading};
pub use error::BindError;
pub use replies::{PEER_BYTES, REPLY_DEADLINE, ReplyStats, TOTAL_BYTES};
pub use server::{
    Bound, Builder, DatagramServer, ForkingTcpServer, ForkingUdpServer, ForkingUnixDatagramServer,
    ForkingUnixStreamServer, SocketServer, StreamServer, TcpServer, ThreadingTcpServer,
    ThreadingUdpServer, ThreadingUnixDatagramServer, ThreadingUnixStreamServer, UdpServer,
    UnixDatagramServer, UnixStreamServer,
};
pub use shutdown::{ShutdownError, ShutdownHandle, Signal};
pub use socket::{Options, ReuseAddress, SocketDatagram, SocketListener};
pub use source::IntoBindAddr;
#[doc(hidden)]
pub use source::Source;
pub use writer::ConnWriter;

/// Serving files safely and fast: a path opened beneath a directory that
/// no `..` or symbolic link can leave ([`open_beneath`](files::open_beneath),
/// `openat2`), and a file sent to a connection by the kernel
/// ([`send_file`](files::send_file), `sendfile`). The `http_server`
/// example serves a directory with them.
pub mod files {
    pub use crate::sys::files::{open_beneath, send_file};
}
