//! Links the `sockserv` facade with its `smoltcp` and `nal` features and
//! no `std`: serves one scripted mock request through the core's server
//! state machine, one request on the smoltcp adapter over a loopback
//! device of fixed frames in sync mode and one through the core's
//! `EventServer` (event mode), and one on the embedded-nal transport over
//! a scripted stack. There is no global allocator: if anything allocates,
//! linking fails.
//! Exit status 0 when every reply was right; 1, 2, 3 or 5 says which was
//! not (4: the `pull-alloc` allocation).
#![no_std]
#![no_main]

// The check checks itself: with the `pull-alloc` feature the binary
// allocates once, and must then fail to link.
#[cfg(feature = "pull-alloc")]
extern crate alloc;

mod http_check;
mod nal_check;
mod ring;
mod smoltcp_check;

use core::time::Duration;

use embedded_io::{Read, Write};
use sockserv::driver::Stream;
use sockserv::mock::{MockConn, MockNet};
use sockserv::{Inline, Server, ShutdownFlag, StreamHandler, service_fn};

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
}

#[unsafe(no_mangle)]
extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    #[cfg(feature = "pull-alloc")]
    if alloc::vec![0u8; _argc as usize].len() == usize::MAX {
        return 4;
    }
    let net = MockNet::new();
    net.connect(MockConn::new(1, b"hello world\n").one_byte_at_a_time());
    let service = service_fn(|_: &u32| Echo);
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
    if !nal_check::serve_one() {
        return 5;
    }
    if !http_check::serve_one() {
        return 6;
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
