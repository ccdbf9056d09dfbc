//! A Linux TAP device for the stack: smoltcp's `TunTapInterface` panics on
//! a read error other than `WouldBlock` and zeroes an MTU-sized buffer on
//! every receive (10 % of a core at MTU 65,521). This one reads every
//! frame into one buffer it keeps, and a read error is counted and
//! reported, never a panic.
//!
//! The only `unsafe` of the crate is here: the two `ioctl(2)`s that attach
//! the descriptor to an interface (`TUNSETIFF`) and ask its MTU
//! (`SIOCGIFMTU`). Reading and writing go through `std::fs::File`.
#![allow(unsafe_code)]

extern crate std;

use std::fs::{File, OpenOptions};
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::vec;
use std::vec::Vec;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use sockserv_core::logging::{Level, report};

/// `struct ifreq`: the interface's name, then a 24-byte union of which
/// the calls here use the first `int` (`ifr_flags` for `TUNSETIFF`,
/// `ifr_mtu` for `SIOCGIFMTU`).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IF_NAMESIZE],
    data: libc::c_int,
    _rest: [u8; 20],
}

impl IfReq {
    fn new(name: &str) -> io::Result<Self> {
        let bytes = name.as_bytes();
        // The kernel wants the name NUL-terminated within IF_NAMESIZE.
        if bytes.is_empty() || bytes.len() >= libc::IF_NAMESIZE || bytes.contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not an interface name"));
        }
        let mut req = Self { name: [0; libc::IF_NAMESIZE], data: 0, _rest: [0; 20] };
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }
}

/// `ioctl(fd, request, req)`, the result being `req.data`.
fn ioctl(fd: &impl AsRawFd, request: libc::Ioctl, req: &mut IfReq) -> io::Result<libc::c_int> {
    // SAFETY: `req` is a live, exclusively borrowed `struct ifreq` of the
    // kernel's size (40 bytes: 16 of name, 24 of union), which is what
    // both requests used here (`TUNSETIFF`, `SIOCGIFMTU`) read and write;
    // `fd` is open for the duration of the call (borrowed).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, core::ptr::from_mut(req)) };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(req.data) }
}

/// A Linux TAP device (Ethernet frames, no packet information header),
/// non-blocking, as a smoltcp [`Device`]; for [`TapWait`](crate::TapWait).
///
/// * Frames are read into one buffer of the interface's MTU, kept for
///   the device's life (nothing allocated or zeroed per frame); a frame
///   sent is written from a second one.
/// * A read error other than `WouldBlock` and `Interrupted` (the
///   interface was deleted: `EBADFD`) never panics: it is counted
///   ([`read_errors`](Self::read_errors)), reported once per episode
///   through the logging shim (`sockserv_core::logging`, an error), and
///   the device reads nothing until a read succeeds again. Until then its
///   [`as_raw_fd`](AsRawFd::as_raw_fd) is a descriptor that never becomes
///   readable, so that a waiter sleeps its whole slice rather than spin on
///   a descriptor in error; each poll tries the TAP again. A write error
///   drops the frame, counted the same way ([`write_errors`](Self::write_errors)).
#[derive(Debug)]
pub struct TapDevice {
    file: File,
    mtu: usize,
    rx: Vec<u8>,
    tx: Vec<u8>,
    read_errors: u64,
    write_errors: u64,
    /// Whether the last read failed (an episode is reported once).
    failing: bool,
    /// A pipe nobody writes to: what a waiter waits on while failing.
    quiet: (PipeReader, PipeWriter),
}

impl TapDevice {
    /// Attaches to the TAP interface `name` (creating it if it does not
    /// exist, which needs `CAP_NET_ADMIN`), with the interface's MTU.
    ///
    /// # Errors
    /// Opening `/dev/net/tun`, attaching, or asking the MTU failed.
    pub fn new(name: &str) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReq::new(name)?;
        req.data = libc::IFF_TAP | libc::IFF_NO_PI;
        ioctl(&file, libc::TUNSETIFF, &mut req)?;
        // SIOCGIFMTU on any socket of the interface's namespace.
        let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
        let mut req = IfReq::new(name)?;
        let ip_mtu = ioctl(&socket, libc::SIOCGIFMTU as libc::Ioctl, &mut req)?;
        let ip_mtu = usize::try_from(ip_mtu).map_err(|_| io::Error::other("negative MTU"))?;
        Self::from_file(file, ip_mtu)
    }

    /// A device over `file`, a TAP descriptor already attached (one handed
    /// over by a parent, or a file of your own to test with) whose IP MTU
    /// is `ip_mtu`. It should be non-blocking: a read that blocks holds
    /// the stack.
    ///
    /// # Errors
    /// Making the waiter's pipe failed.
    pub fn from_file(file: File, ip_mtu: usize) -> io::Result<Self> {
        // smoltcp counts the Ethernet header in the MTU.
        let mtu = ip_mtu + 14;
        Ok(Self {
            file,
            mtu,
            rx: vec![0; mtu],
            tx: vec![0; mtu],
            read_errors: 0,
            write_errors: 0,
            failing: false,
            quiet: io::pipe()?,
        })
    }

    /// Reads that failed (other than `WouldBlock` and `Interrupted`).
    pub fn read_errors(&self) -> u64 {
        self.read_errors
    }

    /// Frames dropped because writing them failed (other than
    /// `WouldBlock`: the kernel's queue full, the frame dropped as a
    /// full link would).
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// The TAP descriptor itself (see [`as_raw_fd`](AsRawFd::as_raw_fd)).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads one frame into the buffer; its length, if one came.
    fn read(&mut self) -> Option<usize> {
        loop {
            match self.file.read(&mut self.rx) {
                Ok(n) => {
                    if self.failing {
                        self.failing = false;
                        report(Level::Warn, format_args!("TAP device: reading again"));
                    }
                    return Some(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => {
                    self.read_errors = self.read_errors.wrapping_add(1);
                    if !self.failing {
                        self.failing = true;
                        report(
                            Level::Error,
                            format_args!("TAP device: read failed ({e}); trying again each poll"),
                        );
                    }
                    return None;
                }
            }
        }
    }
}

impl AsRawFd for TapDevice {
    /// The TAP descriptor, or while reads fail one that never becomes
    /// readable (see the type's docs).
    fn as_raw_fd(&self) -> RawFd {
        if self.failing { self.quiet.0.as_raw_fd() } else { self.file.as_raw_fd() }
    }
}

/// A frame read, in the device's buffer.
#[derive(Debug)]
pub struct TapRx<'a>(&'a [u8]);

/// Room to write a frame, then write it to the TAP descriptor.
#[derive(Debug)]
pub struct TapTx<'a> {
    file: &'a File,
    buffer: &'a mut [u8],
    errors: &'a mut u64,
}

impl phy::RxToken for TapRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TapTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buffer.len());
        let frame = &mut self.buffer[..len];
        // smoltcp writes every byte of a frame; cleared anyway, so that no
        // byte of an earlier frame could ever leave again.
        frame.fill(0);
        let r = f(frame);
        let mut file = self.file;
        match file.write(frame) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => *self.errors = self.errors.wrapping_add(1),
        }
        r
    }
}

impl Device for TapDevice {
    type RxToken<'a> = TapRx<'a>;
    type TxToken<'a> = TapTx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(TapRx<'_>, TapTx<'_>)> {
        let n = self.read()?;
        let rx = TapRx(&self.rx[..n]);
        let tx = TapTx { file: &self.file, buffer: &mut self.tx, errors: &mut self.write_errors };
        Some((rx, tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<TapTx<'_>> {
        Some(TapTx { file: &self.file, buffer: &mut self.tx, errors: &mut self.write_errors })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor whose reads fail (a directory: `EISDIR`): no panic,
    /// counted, and the waiter's descriptor stops being readable.
    #[test]
    fn a_read_error_is_counted_never_a_panic() {
        let dir = File::open("/").unwrap();
        let fd = dir.as_raw_fd();
        let mut device = TapDevice::from_file(dir, 1500).unwrap();
        assert!(device.receive(Instant::ZERO).is_none());
        assert!(device.receive(Instant::ZERO).is_none());
        assert_eq!(device.read_errors(), 2);
        assert_ne!(device.as_raw_fd(), fd, "a waiter no longer waits on the failing descriptor");
        // Sending still works as far as the device goes (the write fails, counted).
        let tx = device.transmit(Instant::ZERO).unwrap();
        phy::TxToken::consume(tx, 60, |b| b.fill(1));
        assert_eq!(device.write_errors(), 1);
    }

    #[test]
    fn a_frame_comes_from_the_kept_buffer() {
        // A pipe stands in for the TAP: each read is one "frame".
        let (reader, mut writer) = io::pipe().unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(reader));
        let mut device = TapDevice::from_file(file, 1500).unwrap();
        let buffer = device.rx.as_ptr();
        writer.write_all(b"frame one").unwrap();
        let (rx, _) = device.receive(Instant::ZERO).unwrap();
        assert_eq!(phy::RxToken::consume(rx, <[u8]>::to_vec), b"frame one");
        writer.write_all(b"two").unwrap();
        let (rx, _) = device.receive(Instant::ZERO).unwrap();
        assert_eq!(phy::RxToken::consume(rx, <[u8]>::to_vec), b"two");
        assert_eq!(device.rx.as_ptr(), buffer, "the same buffer");
        assert_eq!(device.read_errors(), 0);
    }
}
