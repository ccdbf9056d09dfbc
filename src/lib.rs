#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use sockserv_core::*;

/// The std adapter (feature `std`, on by default): real sockets, threads,
/// fork.
#[cfg(feature = "std")]
pub use sockserv_std as std_adapter;
