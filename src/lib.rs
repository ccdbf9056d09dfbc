#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use sockserv_core::*;

/// The std adapter (feature `std`, on by default): real sockets, threads,
/// fork.
#[cfg(feature = "std")]
pub use sockserv_std as std_adapter;

/// The smoltcp adapter (feature `smoltcp`, with its TAP support): the same
/// handlers on a `no_std` TCP/IP stack, and the embedded-nal transport
/// when `sockserv-smoltcp/embedded-nal` is on.
#[cfg(feature = "smoltcp")]
pub use sockserv_smoltcp as smoltcp_adapter;
