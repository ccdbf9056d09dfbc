#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod error;
mod event;
mod gate;
mod loss;
#[cfg(feature = "embedded-nal")]
pub mod nal;
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
pub use wait::{Spin, Wait, Woke};
#[cfg(feature = "tap")]
pub use wait::{StdClock, TapWait};

pub use smoltcp;
