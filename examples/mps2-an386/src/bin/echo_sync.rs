//! The echo firmware's sync-mode image (TCP in sync mode, UDP); see `app.rs`.
#![no_std]
#![no_main]

use sockserv_mps2_an386::config::Mode;

const MODE: Mode = Mode::Sync;

#[path = "../app.rs"]
mod app;
