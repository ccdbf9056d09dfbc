//! sockserv: Python's `socketserver` rebuilt in Rust, embedded-first.
//!
//! This facade re-exports [`sockserv_core`]; see the workspace README.
#![no_std]
#![forbid(unsafe_code)]

pub use sockserv_core::*;

/// The std adapter (feature `std`, on by default): real sockets, threads,
/// fork.
#[cfg(feature = "std")]
pub use sockserv_std as std_adapter;
