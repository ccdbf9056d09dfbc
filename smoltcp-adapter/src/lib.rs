//! sockserv on smoltcp (lands with the embedded-transports issue).
#![no_std]
#![forbid(unsafe_code)]
