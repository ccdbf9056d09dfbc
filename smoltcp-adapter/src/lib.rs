#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod error;
mod event;
mod gate;
mod loss;
mod net;
mod pool;
mod stack;
mod tcp;
mod udp;
mod wait;

pub use conn::TcpConn;
pub use error::{BindError, Error, ListenError};
pub use event::{NbTcpConn, TcpEventSource};
pub use loss::{DatagramLoss, Loss, Stats};
pub use stack::{Stack, Storage};
pub use tcp::{Options, TcpListener, WhenFull};
pub use udp::UdpSocket;
#[cfg(feature = "tap")]
pub use wait::TapWait;
pub use wait::{Spin, Wait};

// The clock for a host: core's, so that one `StdClock` serves every
// adapter.
#[cfg(feature = "tap")]
pub use sockserv_core::StdClock;

pub use smoltcp;
