//! The board part of the mps2-an386 firmware: the LAN9118 driver
//! (`lan9118`), its clock (`FreeRun`) and the idle wait (`hw`), output
//! through semihosting without `core::fmt` (`out`), and the command line
//! the runner passes through QEMU's `-append` (`config`).
#![no_std]

#[cfg(target_arch = "arm")]
pub mod lan9118;

pub mod config;
pub mod hw;
pub mod out;
