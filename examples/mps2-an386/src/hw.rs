//! Every `unsafe` of the firmware: the LAN9118's registers, SysTick, the
//! idle wait, semihosting calls and the stack painting (and, on RISC-V,
//! the start-up code). The rest of the firmware is safe code over the
//! small functions here. The LAN9118, SysTick and the wait are ARM only
//! (mps2-an386); semihosting and the stack painting serve both targets.

use core::sync::atomic::{AtomicBool, Ordering};

// ---------------------------------------------------------------- LAN9118

#[cfg(target_arch = "arm")]
/// The LAN9118 on mps2-an386 (QEMU's `hw/arm/mps2.c`).
const LAN9118: usize = 0x4020_0000;
#[cfg(target_arch = "arm")]
/// Its register window (the FIFO ports and the direct registers).
const LAN9118_LEN: usize = 0x100;

#[cfg(target_arch = "arm")]
/// Reads the LAN9118 register at byte offset `reg` (a multiple of 4 below
/// 0x100; anything else reads 0).
#[inline]
pub fn eth_read(reg: usize) -> u32 {
    if reg >= LAN9118_LEN || reg % 4 != 0 {
        return 0;
    }
    // SAFETY: an aligned word inside the LAN9118's register window, a
    // device register that is always mapped on this machine; volatile so
    // that every FIFO pop happens.
    unsafe { core::ptr::read_volatile((LAN9118 + reg) as *const u32) }
}

#[cfg(target_arch = "arm")]
/// Writes the LAN9118 register at byte offset `reg` (ignored outside the
/// window).
#[inline]
pub fn eth_write(reg: usize, value: u32) {
    if reg >= LAN9118_LEN || reg % 4 != 0 {
        return;
    }
    // SAFETY: as in `eth_read`; the register window holds no memory the
    // program uses.
    unsafe { core::ptr::write_volatile((LAN9118 + reg) as *mut u32, value) }
}

// ---------------------------------------------------------------- SysTick and the wait

#[cfg(target_arch = "arm")]
const SYST_CSR: usize = 0xE000_E010;
#[cfg(target_arch = "arm")]
const SYST_RVR: usize = 0xE000_E014;
#[cfg(target_arch = "arm")]
const SYST_CVR: usize = 0xE000_E018;
#[cfg(target_arch = "arm")]
const ICSR: usize = 0xE000_ED04;
#[cfg(target_arch = "arm")]
const NVIC_ISER0: usize = 0xE000_E100;
#[cfg(target_arch = "arm")]
const NVIC_ICPR0: usize = 0xE000_E280;
#[cfg(target_arch = "arm")]
/// The LAN9118's interrupt line on mps2-an385/an386.
pub const ETH_IRQ: u32 = 13;

#[cfg(target_arch = "arm")]
/// Starts SysTick on the 25 MHz core clock with `ticks` per period and
/// masks interrupts (PRIMASK): nothing runs in handler mode; a pending
/// SysTick or LAN9118 interrupt only ends `wait_for_interrupt`.
pub fn start_ticks(ticks: u32) {
    // SAFETY: SysTick, NVIC and PRIMASK are the core's own registers,
    // always mapped; no handler is installed for these exceptions, and
    // PRIMASK keeps them from being taken (pending ones still wake WFI).
    unsafe {
        core::arch::asm!("cpsid i", options(nomem, nostack, preserves_flags));
        core::ptr::write_volatile(SYST_RVR as *mut u32, ticks.saturating_sub(1) & 0x00FF_FFFF);
        core::ptr::write_volatile(SYST_CVR as *mut u32, 0);
        // CLKSOURCE (core clock) | TICKINT | ENABLE.
        core::ptr::write_volatile(SYST_CSR as *mut u32, 0b111);
        core::ptr::write_volatile(NVIC_ISER0 as *mut u32, 1 << ETH_IRQ);
    }
}

#[cfg(target_arch = "arm")]
/// Sleeps until SysTick or the LAN9118 raises an interrupt (QEMU's CPU
/// idles meanwhile), then clears both pending bits.
pub fn wait_for_interrupt() {
    // SAFETY: WFI only sleeps; the pending bits cleared are the two this
    // module arms (ICSR.PENDSTCLR, the NVIC's clear-pending register).
    unsafe {
        core::arch::asm!("dsb", "wfi", options(nomem, nostack, preserves_flags));
        core::ptr::write_volatile(ICSR as *mut u32, 1 << 25);
        core::ptr::write_volatile(NVIC_ICPR0 as *mut u32, 1 << ETH_IRQ);
    }
}

// ---------------------------------------------------------------- semihosting

const SYS_OPEN: usize = 0x01;
const SYS_CLOSE: usize = 0x02;
const SYS_WRITE: usize = 0x05;
const SYS_GET_CMDLINE: usize = 0x15;
const SYS_EXIT_EXTENDED: usize = 0x20;

/// One semihosting call: `op` with the parameter block `args`.
#[cfg(target_arch = "arm")]
fn semihost(op: usize, args: &mut [usize]) -> isize {
    let r: isize;
    // SAFETY: the semihosting trap (BKPT 0xAB, QEMU's -semihosting) reads
    // and writes only the parameter block and the buffers it names, all of
    // which the callers below hand over as live, correctly sized slices.
    unsafe {
        core::arch::asm!("bkpt #0xab", inout("r0") op => r, in("r1") args.as_mut_ptr(), options(nostack));
    }
    r
}

/// One semihosting call on RISC-V: the trap is EBREAK between the two
/// marker instructions, uncompressed.
#[cfg(target_arch = "riscv32")]
fn semihost(op: usize, args: &mut [usize]) -> isize {
    let r: isize;
    // SAFETY: as on ARM; the three instructions are the semihosting
    // sequence QEMU recognises (it must not be compressed or split).
    unsafe {
        core::arch::asm!(
            ".balign 16",
            ".option push",
            ".option norvc",
            "slli zero, zero, 0x1f",
            "ebreak",
            "srai zero, zero, 0x7",
            ".option pop",
            inout("a0") op => r,
            in("a1") args.as_mut_ptr(),
            options(nostack),
        );
    }
    r
}

/// Writes `bytes` to the host's stdout (semihosting handle 1 is
/// `:tt` opened for writing).
pub fn host_write(bytes: &[u8]) {
    let mut args = [stdout_handle(), bytes.as_ptr() as usize, bytes.len()];
    semihost(SYS_WRITE, &mut args);
}

static STDOUT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(usize::MAX);

fn stdout_handle() -> usize {
    let h = STDOUT.load(Ordering::Relaxed);
    if h != usize::MAX {
        return h;
    }
    // ":tt" in mode 4 ("w") is the console's output.
    let name = b":tt\0";
    let mut args = [name.as_ptr() as usize, 4, 3];
    let h = semihost(SYS_OPEN, &mut args);
    let h = if h < 0 { 1 } else { h as usize };
    STDOUT.store(h, Ordering::Relaxed);
    h
}

/// Whether the host file `path` (NUL-terminated) exists: the runner's
/// stop request.
pub fn host_file_exists(path: &[u8]) -> bool {
    if path.last() != Some(&0) {
        return false;
    }
    // Mode 0: "r".
    let mut args = [path.as_ptr() as usize, 0, path.len() - 1];
    let h = semihost(SYS_OPEN, &mut args);
    if h < 0 {
        return false;
    }
    let mut args = [h as usize];
    semihost(SYS_CLOSE, &mut args);
    true
}

/// The command line QEMU was given (`-append`), into `buf`; its length.
pub fn host_cmdline(buf: &mut [u8]) -> usize {
    let mut args = [buf.as_mut_ptr() as usize, buf.len()];
    if semihost(SYS_GET_CMDLINE, &mut args) != 0 {
        return 0;
    }
    args[1].min(buf.len())
}

/// Ends QEMU with exit status `code`.
pub fn host_exit(code: u32) -> ! {
    // ADP_Stopped_ApplicationExit with a status.
    let mut args = [0x20026, code as usize];
    loop {
        semihost(SYS_EXIT_EXTENDED, &mut args);
    }
}

// ---------------------------------------------------------------- stack painting

const PAINT: u32 = 0xC0DE_CAFE;

unsafe extern "C" {
    /// The linker script's (cortex-m-rt's link.x, or riscv.x): the first
    /// byte past `.bss`/`.uninit` and the initial stack pointer.
    static __euninit: u32;
    static _stack_start: u32;
}

static PAINTED: AtomicBool = AtomicBool::new(false);

fn stack_bounds() -> (usize, usize) {
    // Only the symbols' addresses are taken, never their values.
    (core::ptr::addr_of!(__euninit) as usize, core::ptr::addr_of!(_stack_start) as usize)
}

fn sp() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer register.
    #[cfg(target_arch = "arm")]
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: as above.
    #[cfg(target_arch = "riscv32")]
    unsafe {
        core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

/// Paints the unused stack (between the end of the statics and 64 bytes
/// below the current stack pointer) so that `peak_stack` can tell how deep
/// it ever went. Call once, first thing in `main`.
pub fn paint_stack() {
    if PAINTED.swap(true, Ordering::Relaxed) {
        return;
    }
    let (bottom, _) = stack_bounds();
    let top = (sp() - 64) & !3;
    let mut p = (bottom + 3) & !3;
    while p < top {
        // SAFETY: [bottom, sp - 64) is RAM between the statics and the
        // live stack: nothing lives there yet.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// The deepest the stack went since `paint_stack`, in bytes.
pub fn peak_stack() -> usize {
    let (bottom, top) = stack_bounds();
    let mut p = (bottom + 3) & !3;
    while p < top {
        // SAFETY: reads RAM between the statics and the stack's top.
        if unsafe { core::ptr::read_volatile(p as *const u32) } != PAINT {
            break;
        }
        p += 4;
    }
    top - p
}

// ---------------------------------------------------------------- the interrupt table

/// The device's interrupt vectors: none is ever taken (PRIMASK stays set;
/// a pending interrupt only ends WFI), so the table holds one entry, the
/// least cortex-m-rt's linker script accepts, rather than 240.
#[cfg(target_arch = "arm")]
#[used]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".vector_table.interrupts")]
static __INTERRUPTS: [usize; 1] = [0];

// ---------------------------------------------------------------- RISC-V start-up

// QEMU's virt machine (`-bios none`) jumps to the ELF entry in RAM: set
// the stack pointer, clear .bss, call `main` (the binary's).
#[cfg(target_arch = "riscv32")]
core::arch::global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    ".option push",
    ".option norelax",
    "la sp, _stack_start",
    "la t0, __sbss",
    "la t1, __ebss",
    "1: bgeu t0, t1, 2f",
    "sw zero, 0(t0)",
    "addi t0, t0, 4",
    "j 1b",
    "2: call main",
    "3: j 3b",
    ".option pop",
);

/// A fault (with `panic = immediate-abort`, a panic is an undefined
/// instruction, hence a HardFault): say so and end QEMU with status 101,
/// rather than hang.
#[cfg(target_arch = "arm")]
#[cortex_m_rt::exception]
unsafe fn HardFault(_: &cortex_m_rt::ExceptionFrame) -> ! {
    host_write(b"fault: panic or HardFault\n");
    host_exit(101)
}
