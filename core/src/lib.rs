#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

mod bufio;
mod capacity;
pub mod event;
mod handler;
pub mod logging;
#[cfg(any(test, feature = "mock"))]
pub mod mock;
#[cfg(feature = "std")]
mod report;
mod request;
mod server;
mod transport;

#[cfg(test)]
mod tests;

pub use bufio::{BufStream, ReadLineError, StreamError};
pub use capacity::CapWatch;
pub use handler::{
    DatagramHandler, FnService, OnError, OnServiceActions, Phase, ReplyFull, ReplyWriter,
    RequestError, Service, ServiceExt, StreamHandler, Verify,
};
pub use request::{ReplySendError, serve_datagram, serve_stream, shutdown_stream};
pub use server::{
    DEFAULT_ACCEPT_BACKOFF, Datagram, DatagramDispatch, Dispatch, Inline, MAX_ACCEPT_BACKOFF,
    ROOM_WAIT, Server, ShutdownFlag, ShutdownSignal, Stream, StreamDispatch, Transport,
};
#[cfg(feature = "std")]
pub use transport::StdClock;
pub use transport::{
    Accepted, Clock, Connection, DatagramSocket, Event, EventSource, Interest, NbAccepted,
    NbConnection, Readiness, Received, StreamListener,
};

pub use embedded_io;
