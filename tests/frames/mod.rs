//! Ethernet frames by hand for the smoltcp stack: a device that takes
//! frames from a queue and keeps what the stack sends, and builders for
//! the peer's ARP, TCP and UDP frames. Shared by `tests/smoltcp_frames.rs`
//! and the `smoltcp_stack` fuzz target (`fuzz/`, through `#[path]`).
#![allow(dead_code)] // each user takes part of it

use std::collections::VecDeque;

use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};

pub const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const OUR_IP: [u8; 4] = [192, 168, 69, 1];
pub const PEER_IP: [u8; 4] = [192, 168, 69, 100];

/// TCP flags.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Frames in from a queue; frames out kept (the last 32) so that a test or
/// the fuzzer's peer can answer what the stack sent. Checksums are not
/// checked (ChecksumCapabilities::ignored), so raw frames reach TCP.
#[derive(Default)]
pub struct FrameDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
}

pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        if self.0.len() >= 32 {
            self.0.pop_front();
        }
        self.0.push_back(frame);
        r
    }
}

impl Device for FrameDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}

pub fn eth(ethertype: u16, dst: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet from the peer to us carrying `l4` (protocol `proto`).
pub fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&PEER_IP);
    p.extend_from_slice(&OUR_IP);
    p.extend_from_slice(l4);
    eth(0x0800, OUR_MAC, &p)
}

/// The peer asks who has our address (the stack learns the peer's MAC).
pub fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&PEER_MAC);
    a.extend_from_slice(&PEER_IP);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&OUR_IP);
    eth(0x0806, [0xff; 6], &a)
}

/// A TCP segment from the peer's `from` port to our `to` port.
pub fn tcp(
    from: u16,
    to: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&from.to_be_bytes());
    t.extend_from_slice(&to.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[5 << 4, flags]);
    t.extend_from_slice(&window.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(payload);
    ipv4(6, &t)
}

/// A UDP datagram from the peer's `from` port to our `to` port.
pub fn udp(from: u16, to: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    let mut u = Vec::new();
    u.extend_from_slice(&from.to_be_bytes());
    u.extend_from_slice(&to.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ipv4(17, &u)
}

/// The last TCP segment the stack sent to the peer's `port`: (its flags,
/// the sequence number just past it: what the peer acknowledges).
pub fn last_sent(tx: &VecDeque<Vec<u8>>, port: u16) -> Option<(u8, u32)> {
    tx.iter().rev().find_map(|f| {
        let ip = f.get(14..)?;
        if f.get(12..14)? != [8, 0] || ip.get(9)? != &6 {
            return None;
        }
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let tcp = ip.get(ihl..)?;
        if u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]) != port {
            return None;
        }
        let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
        let data_off = usize::from(tcp.get(12)? >> 4) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let payload = total.saturating_sub(ihl + data_off);
        let flags = *tcp.get(13)?;
        let syn_fin = u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
        Some((flags, seq.wrapping_add(payload as u32).wrapping_add(syn_fin)))
    })
}
