//! sockserv: Python's `socketserver` rebuilt in Rust, embedded-first.
//!
//! This facade re-exports [`sockserv_core`]; see the workspace README.
#![no_std]
#![forbid(unsafe_code)]

pub use sockserv_core::*;
