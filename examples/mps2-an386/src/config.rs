//! What the runner tells the echo images: its own command line
//! (`smoltcp_echo`'s flags) parsed on the host, handed over as numbers on
//! the kernel command line (QEMU's `-append`, read through semihosting's
//! SYS_GET_CMDLINE), after a `--` word (QEMU puts the image's path
//! first):
//!
//! ```text
//! -- ADDR PORT GATEWAY PROTO MODE MAX_CONNECTIONS WHEN_FULL [STOP]
//! ```
//!
//! ADDR and GATEWAY are IPv4 addresses as 32-bit numbers (GATEWAY 0: none),
//! PROTO 0 tcp / 1 udp, MODE 0 sync / 1 event, WHEN_FULL 0 drop / 1 reset /
//! 2 refuse; STOP names a host file whose existence asks the firmware to
//! stop (the runner creates it on SIGINT / SIGTERM). A board has no
//! command line: there these settings are constants (or read from flash),
//! and the flags' parser would be flash spent on the host's job.

use core::net::{Ipv4Addr, SocketAddrV4};

use sockserv::smoltcp_adapter::WhenFull;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Event,
}

/// The longest stop path, with its NUL.
pub const STOP_PATH: usize = 128;

pub struct Config {
    pub addr: SocketAddrV4,
    pub gateway: Option<Ipv4Addr>,
    pub proto: Proto,
    pub mode: Mode,
    pub max_connections: u16,
    pub when_full: WhenFull,
    /// NUL-terminated; empty when not given.
    pub stop: [u8; STOP_PATH],
    pub stop_len: usize,
}

impl Config {
    /// Reads the settings; `None` when they are missing or out of range.
    pub fn parse(line: &[u8]) -> Option<Self> {
        let mut words = Words(line);
        while words.next()? != b"--" {}
        let mut n = [0u32; 7];
        for v in &mut n {
            *v = number(words.next()?)?;
        }
        let [addr, port, gateway, proto, mode, max, when_full] = n;
        let mut cfg = Config {
            addr: SocketAddrV4::new(addr.into(), u16::try_from(port).ok().filter(|&p| p > 0)?),
            gateway: (gateway != 0).then(|| gateway.into()),
            proto: *[Proto::Tcp, Proto::Udp].get(proto as usize)?,
            mode: *[Mode::Sync, Mode::Event].get(mode as usize)?,
            max_connections: u16::try_from(max).ok().filter(|&m| m > 0)?,
            when_full: *[WhenFull::Drop, WhenFull::Reset, WhenFull::Refuse]
                .get(when_full as usize)?,
            stop: [0; STOP_PATH],
            stop_len: 0,
        };
        if let Some(stop) = words.next().filter(|s| s.len() < STOP_PATH) {
            cfg.stop[..stop.len()].copy_from_slice(stop);
            cfg.stop_len = stop.len() + 1;
        }
        Some(cfg)
    }

    /// The stop file's NUL-terminated path, if any.
    pub fn stop_path(&self) -> Option<&[u8]> {
        (self.stop_len > 0).then(|| &self.stop[..self.stop_len])
    }
}

/// The words of a command line (separated by spaces or NULs).
struct Words<'l>(&'l [u8]);

impl<'l> Iterator for Words<'l> {
    type Item = &'l [u8];
    fn next(&mut self) -> Option<&'l [u8]> {
        let sep = |c: &u8| *c == b' ' || *c == 0;
        let start = self.0.iter().position(|c| !sep(c))?;
        let rest = &self.0[start..];
        let end = rest.iter().position(sep).unwrap_or(rest.len());
        self.0 = &rest[end..];
        Some(&rest[..end])
    }
}

/// A decimal number that fits in 32 bits.
fn number(s: &[u8]) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u32, |n, &c| {
        let d = c.checked_sub(b'0').filter(|&d| d < 10)?;
        n.checked_mul(10)?.checked_add(u32::from(d))
    })
}
