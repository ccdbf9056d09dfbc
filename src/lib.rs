#![doc = include_str!("../README.md")]
//!
//! # One line a server
//!
//! The closure that makes a handler needs no annotation, and the server's
//! type needs none either:
//!
//! ```
//! # use std::convert::Infallible;
//! # use sockserv::{DatagramHandler, ReplyWriter, ServiceExt, StreamHandler, embedded_io::{Read, Write}};
//! # use sockserv::{EventHandler, Outbox, Step};
//! # struct Echo;
//! # impl<S: Read + Write> StreamHandler<S> for Echo {
//! #     type Error = S::Error;
//! #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
//! # }
//! # struct Hello;
//! # impl EventHandler for Hello {
//! #     type Error = Infallible;
//! #     fn received(&mut self, i: &[u8], out: &mut Outbox<'_>) -> Result<Step, Infallible> {
//! #         Ok(Step::close(i.len()))
//! #     }
//! # }
//! # struct Len;
//! # impl DatagramHandler for Len {
//! #     type Error = sockserv::ReplyFull;
//! #     fn handle(&mut self, p: &[u8], r: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
//! #         r.write_all(p.len().to_string().as_bytes())
//! #     }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut server = sockserv::std_adapter::ThreadingTcpServer::bind("127.0.0.1:0", sockserv::service_fn(|_| Echo))?;
//! # let stop = server.shutdown_handle(); stop.request();
//! # server.serve_forever(std::time::Duration::from_millis(10))?;
//! let mut server = sockserv::std_adapter::event::EventTcpServer::bind("127.0.0.1:0", sockserv::service_fn(|_| Hello))?;
//! # let stop = server.shutdown_handle(); stop.request();
//! # server.serve_forever(std::time::Duration::from_millis(10))?;
//! let only_local = sockserv::service_fn(|_| Len).verify(|addr| addr.ip().is_some_and(|ip| ip.is_loopback()));
//! let mut server = sockserv::std_adapter::UdpServer::bind(("127.0.0.1", 0), only_local)?;
//! # let stop = server.shutdown_handle(); stop.request();
//! # server.serve_forever(std::time::Duration::from_millis(10))?;
//! # Ok(()) }
//! ```
//!
//! A server can be held in a field or passed to a function with one type
//! parameter (the service) and no where-clause (an event server's service
//! is bound by `Service`, which names its handler type):
//!
//! ```
//! use std::time::Duration;
//! use sockserv::Service;
//! use sockserv::std_adapter::{Address, ThreadingTcpServer, event::EventTcpServer};
//!
//! struct App<S, E: Service<Address>> {
//!     blocking: ThreadingTcpServer<S>,
//!     events: EventTcpServer<E>,
//! }
//!
//! fn run<S>(server: &mut ThreadingTcpServer<S>) -> std::io::Result<()> {
//!     server.serve_forever(Duration::from_millis(500))
//! }
//!
//! fn run_events<E: Service<Address>>(server: &mut EventTcpServer<E>) -> std::io::Result<()> {
//!     server.serve_forever(Duration::from_millis(500))
//! }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(feature = "document-features", doc = "# Feature flags")]
#![cfg_attr(feature = "document-features", doc = document_features::document_features!())]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use sockserv_core::*;

/// The std adapter (feature `std`, on by default): real sockets, threads,
/// fork.
#[cfg(feature = "std")]
#[doc(inline)]
pub use sockserv_std as std_adapter;

/// The smoltcp adapter (feature `smoltcp`, `no_std`; feature `tap` adds
/// its TAP device support, with `std`): the same handlers on a `no_std`
/// TCP/IP stack.
#[cfg(feature = "smoltcp")]
#[doc(inline)]
pub use sockserv_smoltcp as smoltcp_adapter;

/// The embedded-nal transport (feature `nal`, `no_std`): the same handlers
/// on any `embedded_nal::TcpFullStack` / `UdpFullStack`.
#[cfg(feature = "nal")]
#[doc(inline)]
pub use sockserv_nal as nal_adapter;

/// HTTP/1.1, sans I/O (feature `http`, `no_std`, no allocator): request
/// heads with limits, streamed bodies, keep-alive, response heads, chunked
/// encoding, for blocking and event-mode handlers alike.
#[cfg(feature = "http")]
#[doc(inline)]
pub use sockserv_http as http;
#[cfg(feature = "tls")]
#[doc(inline)]
pub use sockserv_tls as tls;
