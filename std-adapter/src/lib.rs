#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod activation;
mod addr;
mod conn;
pub mod dispatch;
pub mod event;
mod server;
mod shutdown;
mod socket;
mod sys;

#[doc(hidden)]
pub use addr::Source;
pub use addr::{Address, BindAddr, IntoBindAddr};
pub use conn::Conn;
pub use dispatch::{Forking, Pool, Sequential, Strategy, Threading};
pub use server::{
    Bound, Builder, DatagramServer, ForkingTcpServer, ForkingUdpServer, ForkingUnixDatagramServer,
    ForkingUnixStreamServer, SocketServer, StreamServer, TcpServer, ThreadingTcpServer,
    ThreadingUdpServer, ThreadingUnixDatagramServer, ThreadingUnixStreamServer, UdpServer,
    UnixDatagramServer, UnixStreamServer,
};
pub use shutdown::{ShutdownError, ShutdownHandle, Signal};
pub use socket::{BindError, Options, SocketDatagram, SocketListener};
