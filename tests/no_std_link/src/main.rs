//! Links `sockserv-core` without `std` and serves one scripted request
//! through the real server state machine, then links `sockserv-smoltcp`
//! without `std` and serves one request over smoltcp's Loopback device in
//! sync mode and one through the core's `EventServer` (event mode).
//! Exit status 0 when every reply was right; 1, 2 or 3 says which was not.
#![no_std]
#![no_main]

extern crate alloc;

mod smoltcp_check;

use core::alloc::{GlobalAlloc, Layout};

use core::time::Duration;

use embedded_io::{Read, Write};
use sockserv_core::mock::{MockConn, MockNet};
use sockserv_core::{FnService, Inline, Server, ShutdownFlag, Stream, StreamHandler};

struct Echo;

impl<S: Read + Write> StreamHandler<S> for Echo {
    type Error = S::Error;
    fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
        let mut buf = [0u8; 16];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    }
}

static FLAG: ShutdownFlag = ShutdownFlag::new();

// The C runtime calls `main`; libc provides `_start` and `exit`.
#[link(name = "c")]
unsafe extern "C" {
    fn abort() -> !;
    fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> i32;
    fn free(ptr: *mut u8);
}

/// libc's allocator, for smoltcp's Loopback device (the adapter itself
/// allocates nothing).
struct Malloc;

// SAFETY: posix_memalign returns suitably aligned, unaliased memory of at
// least `size` bytes (or fails, reported as null); free takes it back.
unsafe impl GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let align = layout.align().max(core::mem::size_of::<usize>());
        let mut ptr = core::ptr::null_mut();
        // SAFETY: `align` is a power of two and a multiple of the pointer size.
        if unsafe { posix_memalign(&mut ptr, align, layout.size().max(1)) } == 0 {
            ptr
        } else {
            core::ptr::null_mut()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: `ptr` came from `alloc` above.
        unsafe { free(ptr) }
    }
}

#[global_allocator]
static ALLOCATOR: Malloc = Malloc;

#[unsafe(no_mangle)]
extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"hello world\n").one_byte_at_a_time());
    let service = FnService(|_: &u32| Echo);
    let mut server = Server::new(Stream(net.listener()), service, &net, &FLAG, Inline::new());
    server.set_timeout(Some(Duration::from_secs(1)));
    if server.handle_request().is_err() {
        return 1;
    }
    match net.conn(0) {
        Some(c) if c.output() == b"hello world\n" && c.closes() == 1 => {}
        _ => return 1,
    }
    if !smoltcp_check::serve_one(smoltcp_check::Mode::Sync) {
        return 2;
    }
    if !smoltcp_check::serve_one(smoltcp_check::Mode::Event) {
        return 3;
    }
    0
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: abort(3) has no preconditions and never returns.
    unsafe { abort() }
}

/// The prebuilt `core` of the only toolchain here was compiled with
/// unwinding and still names this symbol; with `panic = "abort"` nothing
/// calls it.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
