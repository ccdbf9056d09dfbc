//! How the stack sleeps when it has nothing to do: a small trait the caller
//! provides, because only the caller knows its device (an interrupt, a
//! file descriptor, a queue in a test).

use core::time::Duration;

use smoltcp::iface::SocketSet;
use sockserv_core::driver::Readiness;

/// Sleeps until the device may have a frame to receive, `timeout` passes,
/// or someone wakes the server for shutdown.
///
/// The stack calls it when polling the interface made no progress, with
/// the sooner of the caller's deadline and smoltcp's own next timer
/// (`poll_delay`). Waking early is always allowed: the stack polls and, if
/// there is still nothing to do, waits again.
///
/// `sockets` is the stack's socket set, lent while the stack is idle: a
/// test can drive peer sockets that live in the same set (smoltcp's
/// `Loopback` device hands the interface its own frames), and firmware can
/// run other socket work there. Do not remove the stack's own sockets.
///
/// It answers with the core's [`Readiness`], as the transports' own waits
/// do: [`Ready`](Readiness::Ready) when the device may have a frame (or
/// the waiter did work on the sockets), [`TimedOut`](Readiness::TimedOut)
/// when `timeout` passed, [`Woken`](Readiness::Woken) when woken on
/// purpose for shutdown (the server then re-checks its
/// [`ShutdownSignal`](sockserv_core::ShutdownSignal)).
pub trait Wait<D> {
    /// Sleeps; see the trait docs.
    fn wait(
        &mut self,
        device: &mut D,
        sockets: &mut SocketSet<'_>,
        timeout: Option<Duration>,
    ) -> Readiness;
}

/// Never sleeps: the stack polls the interface in a loop. For devices that
/// are always ready (smoltcp's `Loopback`) and for tests; it burns a core
/// on real hardware.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spin;

impl<D> Wait<D> for Spin {
    fn wait(&mut self, _: &mut D, _: &mut SocketSet<'_>, _: Option<Duration>) -> Readiness {
        Readiness::TimedOut
    }
}

#[cfg(feature = "tap")]
pub use tap::TapWait;

#[cfg(feature = "tap")]
mod tap {
    extern crate std;

    use core::time::Duration;
    use std::os::fd::AsRawFd;

    use smoltcp::iface::SocketSet;

    use sockserv_core::driver::Readiness;

    use super::Wait;

    /// Waits on a TAP (or any file-descriptor) device with `poll(2)`
    /// through smoltcp's `phy::wait`, for at most `tick` at a time, then
    /// asks `woken` whether to wake the server for shutdown.
    ///
    /// smoltcp's wait watches one descriptor only (and this crate forbids
    /// `unsafe`), so a shutdown request is seen within one `tick` rather
    /// than at once; 50 ms is a good value.
    ///
    /// ```no_run
    /// use core::sync::atomic::{AtomicBool, Ordering};
    /// use core::time::Duration;
    /// static STOP: AtomicBool = AtomicBool::new(false);
    /// let wait = sockserv_smoltcp::TapWait::new(Duration::from_millis(50), || STOP.load(Ordering::SeqCst));
    /// # let _ = wait;
    /// ```
    #[derive(Debug)]
    pub struct TapWait<F> {
        tick: Duration,
        woken: F,
    }

    impl<F: FnMut() -> bool> TapWait<F> {
        /// A waiter that sleeps at most `tick` at a time and wakes the
        /// server when `woken` returns `true`.
        pub fn new(tick: Duration, woken: F) -> Self {
            Self { tick, woken }
        }
    }

    impl<D: AsRawFd, F: FnMut() -> bool> Wait<D> for TapWait<F> {
        fn wait(
            &mut self,
            device: &mut D,
            _: &mut SocketSet<'_>,
            timeout: Option<Duration>,
        ) -> Readiness {
            let slice = timeout.map_or(self.tick, |t| t.min(self.tick));
            let micros = i64::try_from(slice.as_micros()).unwrap_or(i64::MAX);
            let slept = smoltcp::time::Duration::from_micros(micros.unsigned_abs());
            // EINTR (a signal) ends the wait early, which is what we want.
            let _ = smoltcp::phy::wait(device.as_raw_fd(), Some(slept));
            if (self.woken)() {
                Readiness::Woken
            } else if timeout.is_some_and(|t| t <= self.tick) {
                Readiness::TimedOut
            } else {
                Readiness::Ready
            }
        }
    }
}
