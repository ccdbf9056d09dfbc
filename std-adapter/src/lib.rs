#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(feature = "document-features", doc = "# Feature flags")]
#![cfg_attr(feature = "document-features", doc = document_features::document_features!())]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod activation;
mod addr;
mod conn;
pub mod dispatch;
pub mod event;
mod replies;
mod server;
mod shutdown;
mod socket;
mod sys;
mod writer;

#[doc(hidden)]
pub use addr::Source;
pub use addr::{Address, BindAddr, IntoBindAddr};
pub use conn::Conn;
pub use dispatch::{Forking, Pool, Sequential, Strategy, Threading};
pub use replies::{PEER_BYTES, REPLY_DEADLINE, ReplyStats, TOTAL_BYTES};
pub use server::{
    Bound, Builder, DatagramServer, ForkingTcpServer, ForkingUdpServer, ForkingUnixDatagramServer,
    ForkingUnixStreamServer, SocketServer, StreamServer, TcpServer, ThreadingTcpServer,
    ThreadingUdpServer, ThreadingUnixDatagramServer, ThreadingUnixStreamServer, UdpServer,
    UnixDatagramServer, UnixStreamServer,
};
pub use shutdown::{ShutdownError, ShutdownHandle, Signal};
pub use socket::{BindError, Options, SocketDatagram, SocketListener};
pub use writer::ConnWriter;
