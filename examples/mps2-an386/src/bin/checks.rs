//! On-target checks, pass/fail through QEMU's exit status (semihosting):
//! the core's mock in sync mode (one echo served byte by byte) and in
//! event mode (16 connections sharing 4 buffers, every byte echoed), and
//! the smoltcp adapter over an in-memory ring of frames (sync and event
//! mode; `tests/no_std_link`'s check, run on the target). Built for
//! thumbv7em-none-eabihf (mps2-an386) and riscv32imac-unknown-none-elf
//! (QEMU's virt machine). Exit status 0 when all pass; otherwise the
//! number of the first check that failed.
#![no_std]
#![no_main]

use core::cell::Cell;
use core::time::Duration;

use embedded_io::{Read, Write};
use sockserv::driver::Stream;
use sockserv::mock::{MockConn, MockNet};
use sockserv::{EventHandler, EventServer, EventServerConfig, FixedPool, FixedSlots};
use sockserv::{Inline, Outbox, Server, Service, ShutdownFlag, Step, StreamHandler, service_fn};
use sockserv_mps2_an386::{hw, out};

#[path = "../../../shared/echo.rs"]
mod echo;
pub use echo::Echo;

#[path = "../../../../tests/no_std_link/src/ring.rs"]
mod ring;
#[path = "../../../../tests/no_std_link/src/smoltcp_check.rs"]
mod smoltcp_check;

impl<S: Read + Write> StreamHandler<S> for Echo {
    type Error = S::Error;
    fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
        let mut buf = [0u8; 16];
        echo::echo_stream(stream, &mut buf)
    }
}

static FLAG: ShutdownFlag = ShutdownFlag::new();
static EVENT_FLAG: ShutdownFlag = ShutdownFlag::new();

/// Check 1: one request through the core's `Server` on the mock, read one
/// byte at a time.
fn mock_sync() -> bool {
    // The mock sized for a device: 1 connection, 64-byte capture.
    let net = MockNet::<'_, 1, 64, 1, 8>::with_capacities();
    net.connect(MockConn::new(1, b"hello from the target\n").one_byte_at_a_time());
    let service = service_fn(|_: &u32| Echo);
    let mut server = Server::new(Stream(net.listener()), service, &net, &FLAG, Inline::new());
    server.set_timeout(Some(Duration::from_secs(1)));
    if server.handle_request().is_err() {
        return false;
    }
    matches!(net.conn(0), Some(c) if c.output() == b"hello from the target\n" && c.closes() == 1)
}

/// The shared echo in event mode, counting closed connections: the server
/// stops once all have closed.
struct Counted<'c> {
    closed: &'c Cell<usize>,
    of: usize,
}

impl EventHandler for Counted<'_> {
    type Error = core::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        Echo.received(input, out)
    }
    fn closed(&mut self) {
        self.closed.set(self.closed.get() + 1);
        if self.closed.get() == self.of {
            EVENT_FLAG.request();
        }
    }
}

struct CountedService<'c>(&'c Cell<usize>, usize);

impl<'c> Service<u32> for CountedService<'c> {
    type Handler = Counted<'c>;
    fn handler(&self, _: &u32) -> Counted<'c> {
        Counted { closed: self.0, of: self.1 }
    }
}

const CONNS: usize = 16;
/// Sixteen different inputs, each longer than one of the 4 shared
/// buffers (64 bytes), read in 7-byte pieces and written back to a peer
/// that takes 5 bytes until its window opens (1 s apart, on the mock's
/// virtual clock), so that connections wait for buffers and for the peer.
const INPUTS: [&[u8]; CONNS] = [
    b"00 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #00",
    b"01 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #01",
    b"02 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #02",
    b"03 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #03",
    b"04 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #04",
    b"05 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #05",
    b"06 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #06",
    b"07 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #07",
    b"08 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #08",
    b"09 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #09",
    b"10 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #10",
    b"11 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #11",
    b"12 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #12",
    b"13 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #13",
    b"14 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #14",
    b"15 the quick brown fox jumps over the lazy dog, then the dog jumps back over the fox #15",
];

/// Check 2: 16 connections at once in the core's `EventServer` on the
/// mock, sharing 4 buffers of 64 bytes: every byte comes back, each
/// connection is closed once.
fn mock_event() -> bool {
    // 16 connections, 128-byte captures, 64 scripted events.
    let net = MockNet::<'_, CONNS, 128, 1, 64>::with_capacities();
    for (i, input) in INPUTS.iter().enumerate() {
        net.connect(MockConn::new(i as u32, input).read_chunk(7).write_window(5));
        // Each slow reader catches up a second later than the previous.
        net.open_window_at(Duration::from_secs(1 + i as u64), i, 4096);
    }
    let closed = Cell::new(0);
    let mut server = EventServer::new(
        net.event_source::<u32>(),
        CountedService(&closed, CONNS),
        &net,
        &EVENT_FLAG,
        FixedSlots::<_, CONNS>::new(),
        FixedPool::<64, 4>::new(),
        EventServerConfig { idle_timeout: None, ..EventServerConfig::default() },
    );
    // The mock's windows open as the virtual clock moves.
    net.request_stop_at(Duration::from_secs(60), &EVENT_FLAG);
    if server.serve_forever(Duration::from_millis(100)).is_err() {
        return false;
    }
    if closed.get() != CONNS || net.conn_count() != CONNS {
        out::line_num(b"closed: ", closed.get() as u32, b"");
        out::line_num(b"connections: ", net.conn_count() as u32, b"");
        return false;
    }
    (0..CONNS).all(|i| {
        matches!(net.conn(i), Some(c) if c.output() == INPUTS[c.from() as usize] && c.closes() == 1)
    })
}

fn checks() -> u32 {
    hw::paint_stack();
    let steps: [(&[u8], fn() -> bool); 4] = [
        (b"mock, sync mode: one echo, one byte at a time", mock_sync),
        (b"mock, event mode: 16 connections sharing 4 buffers", mock_event),
        (b"smoltcp adapter over a frame ring, sync mode", || {
            smoltcp_check::serve_one(smoltcp_check::Mode::Sync)
        }),
        (b"smoltcp adapter over a frame ring, event mode", || {
            smoltcp_check::serve_one(smoltcp_check::Mode::Event)
        }),
    ];
    for (i, (name, check)) in steps.iter().enumerate() {
        if !check() {
            out::line(&[b"FAIL: ", name]);
            return i as u32 + 1;
        }
        out::line(&[b"ok: ", name]);
    }
    out::line_num(b"peak stack ", hw::peak_stack() as u32, b" bytes");
    0
}

#[cfg(target_arch = "arm")]
#[cortex_m_rt::entry]
fn main() -> ! {
    hw::host_exit(checks())
}

#[cfg(target_arch = "riscv32")]
#[unsafe(no_mangle)]
extern "C" fn main() -> ! {
    hw::host_exit(checks())
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    out::line(&[b"panic"]);
    hw::host_exit(101)
}
