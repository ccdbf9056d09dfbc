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
    /// is skipped); an error names what was wrong. Hand-written over
    /// bytes: `core::net`'s parsers cost a KiB of flash.
    pub fn parse(line: &[u8]) -> Result<Self, &'static [u8]> {
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
        let mut words = line.split(|&c| c == b' ' || c == 0).filter(|w| !w.is_empty());
        while let Some(flag) = words.next() {
            if !flag.starts_with(b"--") {
                continue;
            }
            let value = words.next().ok_or(&b"a flag without its value"[..])?;
            match flag {
                b"--addr" => {
                    let colon = value.iter().position(|&c| c == b':').ok_or(&b"bad --addr"[..])?;
                    let ip = ipv4(&value[..colon]).ok_or(&b"bad --addr"[..])?;
                    let port = number(&value[colon + 1..])
                        .and_then(|p| u16::try_from(p).ok())
                        .ok_or(&b"bad --addr"[..])?;
                    cfg.addr = SocketAddrV4::new(ip, port);
                }
                b"--gateway" => cfg.gateway = Some(ipv4(value).ok_or(&b"bad --gateway"[..])?),
                b"--proto" => {
                    cfg.proto = match value {
                        b"tcp" => Proto::Tcp,
                        b"udp" => Proto::Udp,
                        _ => return Err(b"bad --proto"),
                    }
                }
                b"--mode" => {
                    cfg.mode = match value {
                        b"sync" => Mode::Sync,
                        b"event" => Mode::Event,
                        _ => return Err(b"bad --mode"),
                    }
                }
                b"--max-connections" => {
                    cfg.max_connections = number(value)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|&n| n > 0)
                        .ok_or(&b"bad --max-connections"[..])?;
                }
                b"--when-full" => {
                    cfg.when_full = match value {
                        b"drop" => WhenFull::Drop,
                        b"reset" => WhenFull::Reset,
                        b"refuse" => WhenFull::Refuse,
                        _ => return Err(b"bad --when-full"),
                    }
                }
                b"--stop" => {
                    if value.len() >= STOP_PATH {
                        return Err(b"--stop path too long");
                    }
                    cfg.stop[..value.len()].copy_from_slice(value);
                    cfg.stop_len = value.len() + 1;
                }
                _ => return Err(b"unknown flag"),
            }
        }
        if cfg.addr.port() == 0 {
            return Err(b"--addr IP:PORT is required");
        }
        Ok(cfg)
    }

    /// The stop file's NUL-terminated path, if any.
    pub fn stop_path(&self) -> Option<&[u8]> {
        (self.stop_len > 0).then(|| &self.stop[..self.stop_len])
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
