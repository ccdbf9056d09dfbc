//! A loopback [`Device`] with no allocator: what is transmitted is
//! received back, in order, through a ring of a few fixed-size frames
//! (smoltcp's own `Loopback` keeps a `VecDeque<Vec<u8>>`, which would need
//! a heap).

use sockserv::smoltcp_adapter::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use sockserv::smoltcp_adapter::smoltcp::time::Instant;

/// The largest Ethernet frame (without FCS) the device carries.
const FRAME: usize = 1514;
/// Frames in flight at most; a transmit beyond them waits (smoltcp retries).
const FRAMES: usize = 8;

/// The ring of frames.
pub struct Ring {
    frames: [[u8; FRAME]; FRAMES],
    lens: [usize; FRAMES],
    /// The oldest frame.
    head: usize,
    /// How many frames are queued.
    count: usize,
}

impl Ring {
    pub const fn new() -> Self {
        Self { frames: [[0; FRAME]; FRAMES], lens: [0; FRAMES], head: 0, count: 0 }
    }

    fn pop(&mut self) -> Option<RxToken> {
        if self.count == 0 {
            return None;
        }
        let mut rx = RxToken { frame: [0; FRAME], len: self.lens[self.head] };
        rx.frame[..rx.len].copy_from_slice(&self.frames[self.head][..rx.len]);
        self.head = (self.head + 1) % FRAMES;
        self.count -= 1;
        Some(rx)
    }
}

impl Device for Ring {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let rx = self.pop()?;
        Some((rx, TxToken(self)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        (self.count < FRAMES).then_some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME;
        caps
    }
}

/// A received frame (a copy: the ring's slot is free again).
pub struct RxToken {
    frame: [u8; FRAME],
    len: usize,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.frame[..self.len])
    }
}

/// Room for one frame at the ring's tail (checked by `transmit`; a token
/// from `receive` has the slot its frame left).
pub struct TxToken<'a>(&'a mut Ring);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let ring = self.0;
        let tail = (ring.head + ring.count) % FRAMES;
        // smoltcp never asks for more than the MTU.
        let len = len.min(FRAME);
        let r = f(&mut ring.frames[tail][..len]);
        ring.lens[tail] = len;
        ring.count += 1;
        r
    }
}
