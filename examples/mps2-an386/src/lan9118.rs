//! A polled driver for the SMSC LAN9118 as smoltcp's `phy::Device`,
//! following QEMU's `hw/net/lan9118.c`: a soft reset through HW_CFG.SRST,
//! the MAC address through the MAC CSR's ADDRL/ADDRH, MAC_CR
//! TXEN|RXEN|FDPX, TX_CFG.TX_ON; a frame goes out as TX command words A
//! and B and its data, one comes in as an RX status word (from
//! RX_FIFO_INF's count) and its data. Its RX interrupt only wakes the
//! CPU's `WFI` (see `hw::wait_for_interrupt`). Safe code over `hw`.

use sockserv::smoltcp_adapter::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use sockserv::smoltcp_adapter::smoltcp::time::Instant;

use crate::hw::{eth_read, eth_write};

const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const ID_REV: usize = 0x50;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5c;
const BYTE_TEST: usize = 0x64;
const RX_CFG: usize = 0x6c;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_DP_CTRL: usize = 0x78;
const RX_FIFO_INF: usize = 0x7c;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const FREE_RUN: usize = 0x9c;
const MAC_CSR_CMD: usize = 0xa4;
const MAC_CSR_DATA: usize = 0xa8;

const MAC_CR: u32 = 1;
const ADDRH: u32 = 2;
const ADDRL: u32 = 3;

const HW_CFG_SRST: u32 = 1;
const TX_CFG_TX_ON: u32 = 1 << 1;
const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_FDPX: u32 = 1 << 20;
const CSR_BUSY: u32 = 1 << 31;
const CSR_READ: u32 = 1 << 30;
/// INT_EN / INT_STS: a frame's status arrived in the RX status FIFO.
const INT_RSFL: u32 = 1 << 3;
/// IRQ_CFG: enabled, active high, push-pull.
const IRQ_EN_HIGH_PUSHPULL: u32 = (1 << 8) | (1 << 4) | 1;
/// RX_DP_CTRL: discard the frame at the head of the RX data FIFO.
const RX_FFWD: u32 = 1 << 31;
/// RX status word: error summary.
const RX_ES: u32 = 1 << 15;

/// The largest Ethernet frame (without FCS).
pub const MTU: usize = 1514;
/// What the controller may hand over: a frame and its FCS.
const RX_MAX: usize = MTU + 4;

/// The frame buffers the driver borrows: one to receive into, one to
/// transmit from (smoltcp answers a frame while still reading it, so both
/// are live at once). Kept apart from the driver so that moving the
/// driver moves two pointers, not 3 KiB.
pub struct Frames {
    rx: [u8; RX_MAX],
    tx: [u8; MTU],
}

impl Frames {
    pub const fn new() -> Self {
        Self { rx: [0; RX_MAX], tx: [0; MTU] }
    }
}

/// The controller and its frame buffers.
pub struct Lan9118<'b> {
    rx: &'b mut [u8; RX_MAX],
    tx: &'b mut [u8; MTU],
    /// Frames dropped: a receive error or a frame too long.
    pub rx_dropped: u32,
}

/// Why the controller could not be started.
#[derive(Clone, Copy, Debug)]
pub enum InitError {
    /// BYTE_TEST did not read 0x87654321: no LAN9118 at the address.
    NotFound,
    /// The soft reset or the MAC CSR did not complete.
    Timeout,
}

impl<'b> Lan9118<'b> {
    pub fn new(frames: &'b mut Frames) -> Self {
        Self { rx: &mut frames.rx, tx: &mut frames.tx, rx_dropped: 0 }
    }

    /// Resets the controller and starts it with `mac`.
    pub fn init(&mut self, mac: [u8; 6]) -> Result<(), InitError> {
        if eth_read(BYTE_TEST) != 0x8765_4321 {
            return Err(InitError::NotFound);
        }
        let _ = eth_read(ID_REV);
        eth_write(HW_CFG, HW_CFG_SRST);
        spin_until(|| eth_read(HW_CFG) & HW_CFG_SRST == 0)?;
        spin_until(|| eth_read(PMT_CTRL) & 1 != 0)?;
        let low = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
        let high = u32::from(mac[4]) | u32::from(mac[5]) << 8;
        mac_write(ADDRL, low)?;
        mac_write(ADDRH, high)?;
        mac_write(MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN | MAC_CR_FDPX)?;
        // RX data offset 0; TX on.
        eth_write(RX_CFG, 0);
        eth_write(TX_CFG, TX_CFG_TX_ON);
        eth_write(INT_STS, u32::MAX);
        eth_write(INT_EN, INT_RSFL);
        eth_write(IRQ_CFG, IRQ_EN_HIGH_PUSHPULL);
        Ok(())
    }

    /// Whether a received frame waits in the RX FIFO (clears the
    /// interrupt status, so that the next frame raises it again).
    pub fn rx_pending(&self) -> bool {
        eth_write(INT_STS, INT_RSFL);
        eth_read(RX_FIFO_INF) >> 16 & 0xff != 0
    }

    /// Reads the next good frame into `self.rx`; its length.
    fn read_frame(&mut self) -> Option<usize> {
        loop {
            if eth_read(RX_FIFO_INF) >> 16 & 0xff == 0 {
                return None;
            }
            let status = eth_read(RX_STATUS_FIFO);
            // The length counts the FCS.
            let len = (status >> 16 & 0x3fff) as usize;
            if status & RX_ES != 0 || len < 4 || len > RX_MAX {
                self.rx_dropped = self.rx_dropped.wrapping_add(1);
                self.discard(len);
                continue;
            }
            for chunk in self.rx[..len].chunks_mut(4) {
                let word = eth_read(RX_DATA_FIFO).to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            return Some(len - 4);
        }
    }

    /// Drops a frame of `len` bytes from the RX data FIFO.
    fn discard(&mut self, len: usize) {
        let words = len.div_ceil(4);
        if words >= 4 {
            eth_write(RX_DP_CTRL, RX_FFWD);
            let _ = spin_until(|| eth_read(RX_DP_CTRL) & RX_FFWD == 0);
        } else {
            for _ in 0..words {
                let _ = eth_read(RX_DATA_FIFO);
            }
        }
    }

    fn tx_room(&self) -> bool {
        // TDFREE: free bytes in the TX data FIFO; a frame takes its data
        // and the two command words.
        (eth_read(TX_FIFO_INF) & 0xffff) as usize >= MTU + 8
    }
}

/// The FREE_RUN counter (25 MHz) as a clock: whole seconds counted in
/// 32 bits beside the counter's ticks since the last whole second, so
/// that reading it needs no 64-bit division (the 32-bit counter wraps
/// every 171 s; any reading in between keeps the count right).
pub struct FreeRun {
    /// Seconds since the counter started, up to `base`.
    secs: core::cell::Cell<u32>,
    /// The counter's value at that whole second.
    base: core::cell::Cell<u32>,
}

/// FREE_RUN ticks a second (40 ns each).
const TICKS_PER_SEC: u32 = 25_000_000;

impl FreeRun {
    pub const fn new() -> Self {
        Self { secs: core::cell::Cell::new(0), base: core::cell::Cell::new(0) }
    }

    /// The counter's raw value (40 ns ticks, wrapping every 171 s).
    pub fn ticks(&self) -> u32 {
        eth_read(FREE_RUN)
    }
}

impl sockserv::driver::Clock for FreeRun {
    fn now(&self) -> core::time::Duration {
        let mut ticks = self.ticks().wrapping_sub(self.base.get());
        while ticks >= TICKS_PER_SEC {
            ticks -= TICKS_PER_SEC;
            self.base.set(self.base.get().wrapping_add(TICKS_PER_SEC));
            self.secs.set(self.secs.get() + 1);
        }
        core::time::Duration::new(u64::from(self.secs.get()), ticks * 40)
    }
}

fn spin_until(mut done: impl FnMut() -> bool) -> Result<(), InitError> {
    for _ in 0..100_000 {
        if done() {
            return Ok(());
        }
    }
    Err(InitError::Timeout)
}

fn mac_write(reg: u32, value: u32) -> Result<(), InitError> {
    spin_until(|| eth_read(MAC_CSR_CMD) & CSR_BUSY == 0)?;
    eth_write(MAC_CSR_DATA, value);
    eth_write(MAC_CSR_CMD, CSR_BUSY | reg);
    spin_until(|| eth_read(MAC_CSR_CMD) & CSR_BUSY == 0)
}

#[allow(dead_code)]
fn mac_read(reg: u32) -> Result<u32, InitError> {
    spin_until(|| eth_read(MAC_CSR_CMD) & CSR_BUSY == 0)?;
    eth_write(MAC_CSR_CMD, CSR_BUSY | CSR_READ | reg);
    spin_until(|| eth_read(MAC_CSR_CMD) & CSR_BUSY == 0)?;
    Ok(eth_read(MAC_CSR_DATA))
}

impl Device for Lan9118<'_> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // An answer may go out while the frame is read: room first.
        if !self.tx_room() {
            return None;
        }
        let len = self.read_frame()?;
        let Self { rx, tx, .. } = self;
        Some((RxToken(&rx[..len]), TxToken(&mut **tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        self.tx_room().then_some(TxToken(&mut *self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }
}

/// A frame read from the controller.
pub struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// Room for one frame; sent when filled.
pub struct TxToken<'a>(&'a mut [u8; MTU]);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let frame = &mut self.0[..len];
        let r = f(frame);
        // Command A: first and last segment, buffer size; B: frame length.
        let len32 = len as u32;
        eth_write(TX_DATA_FIFO, 1 << 13 | 1 << 12 | len32);
        eth_write(TX_DATA_FIFO, len32);
        for chunk in frame.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            eth_write(TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        r
    }
}
