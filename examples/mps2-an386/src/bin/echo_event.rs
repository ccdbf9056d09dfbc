//! The echo firmware's event-mode image (TCP in event mode, UDP); see `app.rs`.
#![no_std]
#![no_main]

use sockserv_mps2_an386::config::Mode;

const MODE: Mode = Mode::Event;

#[path = "../app.rs"]
mod app;
