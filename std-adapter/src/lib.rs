#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod activation;
mod addr;
mod conn;
pub mod dispatch;
mod error;
pub mod event;
#[cfg(test)]
mod layering;
mod server;
mod shutdown;
mod socket;
mod source;
mod sys;

pub use addr::{Address, BindAddr};
pub use conn::Conn;
pub use dispatch::{Forking, Pool, Sequential, Strategy, Threading, WhenFull};
pub use error::BindError;
pub use server::{
    Bound, Builder, DatagramServer, ForkingTcpServer, ForkingUdpServer, ForkingUnixDatagramServer,
    ForkingUnixStreamServer, SocketServer, StreamServer, TcpServer, ThreadingTcpServer,
    ThreadingUdpServer, ThreadingUnixDatagramServer, ThreadingUnixStreamServer, UdpServer,
    UnixDatagramServer, UnixStreamServer,
};
pub use shutdown::{ShutdownError, ShutdownHandle, Signal, StdClock};
pub use socket::{Options, ReuseAddress, SocketDatagram, SocketListener};
pub use source::IntoBindAddr;
#[doc(hidden)]
pub use source::Source;

pub use sockserv_core::{
    BufStream, DatagramHandler, FnService, OnError, OnServiceActions, ReadLineError, ReplyFull,
    ReplyWriter, RequestError, Service, ServiceExt, StreamError, StreamHandler, Verify,
    embedded_io,
};
