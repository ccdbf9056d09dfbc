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
    /// is skipped); an error names what was wrong.
    pub fn parse(line: &[u8]) -> Result<Self, &'static [u8]> {
        let line = core::str::from_utf8(line).map_err(|_| &b"command line not UTF-8"[..])?;
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
        let mut words = line.split(|c: char| c == ' ' || c == '\0').filter(|w| !w.is_empty());
        while let Some(flag) = words.next() {
            if !flag.starts_with("--") {
                continue;
            }
            let value = words.next().ok_or(&b"a flag without its value"[..])?;
            match flag {
                "--addr" => cfg.addr = value.parse().map_err(|_| &b"bad --addr"[..])?,
                "--gateway" => cfg.gateway = Some(value.parse().map_err(|_| &b"bad --gateway"[..])?),
                "--proto" => {
                    cfg.proto = match value {
                        "tcp" => Proto::Tcp,
                        "udp" => Proto::Udp,
                        _ => return Err(b"bad --proto"),
                    }
                }
                "--mode" => {
                    cfg.mode = match value {
                        "sync" => Mode::Sync,
                        "event" => Mode::Event,
                        _ => return Err(b"bad --mode"),
                    }
                }
                "--max-connections" => {
                    cfg.max_connections = value.parse().map_err(|_| &b"bad --max-connections"[..])?;
                    if cfg.max_connections == 0 {
                        return Err(b"bad --max-connections");
                    }
                }
                "--when-full" => {
                    cfg.when_full = match value {
                        "drop" => WhenFull::Drop,
                        "reset" => WhenFull::Reset,
                        "refuse" => WhenFull::Refuse,
                        _ => return Err(b"bad --when-full"),
                    }
                }
                "--stop" => {
                    let p = value.as_bytes();
                    if p.len() >= STOP_PATH {
                        return Err(b"--stop path too long");
                    }
                    cfg.stop[..p.len()].copy_from_slice(p);
                    cfg.stop_len = p.len() + 1;
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
