#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(feature = "document-features", doc = "# Feature flags")]
#![cfg_attr(feature = "document-features", doc = document_features::document_features!())]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

mod bufio;
mod capacity;
mod event;
mod handler;
pub mod logging;
#[cfg(any(test, feature = "mock"))]
pub mod mock;
#[cfg(feature = "std")]
mod report;
mod request;
mod server;
mod share;
mod transport;

#[cfg(test)]
mod tests;

// The user's surface: handlers, services, servers, errors, shutdown.
pub use bufio::{BufStream, ReadLineError, StreamError};
pub use event::{
    CappedSlots, EventHandler, EventServer, EventServerConfig, FixedPool, FixedSlots, Next,
    OnShutdown, Outbox, ServerSlot, Step, TableStats, WhenFull,
};
pub use handler::{
    DatagramHandler, OnError, OnServiceActions, Phase, ReplyFull, ReplyWriter, Request,
    RequestError, Service, ServiceExt, ServiceFn, StreamHandler, Verify, service_fn,
};
pub use server::{
    DEFAULT_ACCEPT_BACKOFF, Inline, MAX_ACCEPT_BACKOFF, Server, ShutdownFlag, ShutdownSignal,
};
pub use share::ShareWriter;
#[cfg(feature = "std")]
pub use transport::StdClock;

pub use embedded_io;

pub mod driver {
    //! What a new transport or dispatch strategy implements, and the pieces a
    //! strategy drives requests with. A handler or a server's user never
    //! needs this module (as embassy keeps its driver API in
    //! `embassy-net-driver`).
    //!
    //! - A **blocking transport** implements [`StreamListener`] + [`Connection`]
    //!   (streams) or [`DatagramSocket`] (datagrams), and a [`Clock`]; the
    //!   [`Server`](crate::Server) runs over it wrapped in [`Stream`] or
    //!   [`Datagram`] ([`Transport`]).
    //! - A **non-blocking transport** implements [`EventSource`] +
    //!   [`NbConnection`] for the event mode.
    //! - A **strategy** (threads, fork, a pool) implements [`Dispatch`] and
    //!   [`StreamDispatch`] / [`DatagramDispatch`], and serves each request
    //!   with [`serve_stream`] / [`serve_datagram`].
    //! - An **event table** of one's own: [`ConnTable`], [`Slot`],
    //!   [`Outcome`], [`BufferPool`], [`SlotStorage`].

    pub use crate::capacity::CapWatch;
    pub use crate::event::{BufId, BufferPool, ConnTable, Outcome, Slot, SlotStorage, pair_mut};
    pub use crate::handler::ClientAddress;
    pub use crate::request::{ReplySendError, serve_datagram, serve_stream, shutdown_stream};
    pub use crate::server::{
        Datagram, DatagramDispatch, Dispatch, ROOM_WAIT, Stream, StreamDispatch, Transport,
    };
    pub use crate::transport::{
        Accepted, Clock, Connection, DatagramSocket, Event, EventSource, Interest, NbAccepted,
        NbConnection, Readiness, Received, StreamListener, Wait,
    };
}
