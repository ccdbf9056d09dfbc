//! What the runner tells the firmware, as `smoltcp_echo`'s own flags on
//! the kernel command line (QEMU's `-append`, read through semihosting's
//! SYS_GET_CMDLINE): `--addr IP:PORT [--gateway IP] [--proto tcp|udp]
//! [--mode sync|event] [--max-connections N] [--when-full drop|reset|refuse]
//! [--stop PATH]`. `--stop` names a host file whose existence asks the
//! firmware to stop (the runner creates it on SIGINT / SIGTERM).

use core::net::{Ipv4Addr, SocketAddrV4};

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

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    Drop,
    Reset,
    Refuse,
}

/// The longest `--stop` path, with its NUL.
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
    /// Parses the command line (the image's name, if QEMU puts it first,
    /// is skipped); an error is the flag (or word) that was wrong.
    /// Hand-written over bytes and table-driven (one comparison loop for
    /// every flag and value): `core::net`'s parsers cost a KiB of flash.
    pub fn parse(line: &[u8]) -> Result<Self, &[u8]> {
        let mut cfg = Config {
            addr: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            gateway: None,
            proto: Proto::Tcp,
            mode: Mode::Sync,
            max_connections: 16,
            when_full: WhenFull::Drop,
            stop: [0; STOP_PATH],
            stop_len: 0,
        };
        let mut words = Words(line);
        while let Some(flag) = words.next() {
            if !flag.starts_with(b"--") {
                continue;
            }
            let value = words.next().ok_or(flag)?;
            let ok = match pick(flag, &FLAGS).ok_or(flag)? {
                0 => value.iter().position(|&c| c == b':').and_then(|colon| {
                    let port = u16::try_from(number(&value[colon + 1..])?).ok()?;
                    cfg.addr = SocketAddrV4::new(ipv4(&value[..colon])?, port);
                    Some(())
                }),
                1 => ipv4(value).map(|ip| cfg.gateway = Some(ip)),
                2 => {
                    pick(value, &[b"tcp", b"udp"]).map(|i| cfg.proto = [Proto::Tcp, Proto::Udp][i])
                }
                3 => pick(value, &[b"sync", b"event"])
                    .map(|i| cfg.mode = [Mode::Sync, Mode::Event][i]),
                4 => number(value)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .map(|n| cfg.max_connections = n),
                5 => pick(value, &[b"drop", b"reset", b"refuse"]).map(|i| {
                    cfg.when_full = [WhenFull::Drop, WhenFull::Reset, WhenFull::Refuse][i]
                }),
                _ => (value.len() < STOP_PATH).then(|| {
                    cfg.stop[..value.len()].copy_from_slice(value);
                    cfg.stop_len = value.len() + 1;
                }),
            };
            ok.ok_or(flag)?;
        }
        if cfg.addr.port() == 0 {
            return Err(b"--addr");
        }
        Ok(cfg)
    }

    /// The stop file's NUL-terminated path, if any.
    pub fn stop_path(&self) -> Option<&[u8]> {
        (self.stop_len > 0).then(|| &self.stop[..self.stop_len])
    }
}

/// The flags, in the order `parse` matches them.
const FLAGS: [&[u8]; 7] = [
    b"--addr",
    b"--gateway",
    b"--proto",
    b"--mode",
    b"--max-connections",
    b"--when-full",
    b"--stop",
];

/// The index of `word` in `names`.
fn pick(word: &[u8], names: &[&[u8]]) -> Option<usize> {
    names.iter().position(|&n| n == word)
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

/// A decimal number of at most 5 digits.
fn number(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    s.iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
}

/// A dotted-quad IPv4 address.
fn ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for o in &mut octets {
        let part = parts.next().filter(|p| p.len() <= 3)?;
        *o = u8::try_from(number(part)?).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}
