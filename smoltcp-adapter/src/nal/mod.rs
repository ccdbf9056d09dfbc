//! The embedded-nal transport: the same handlers on any
//! `embedded_nal::TcpFullStack` / `UdpFullStack` (a Wi-Fi module's AT
//! firmware, an offloaded TCP/IP chip, `std-embedded-nal` on a host).
//!
//! # What embedded-nal cannot express, and how this transport copes
//! * **No readiness wait.** Every call is non-blocking (`nb::WouldBlock`)
//!   and nothing says when to retry. The transport retries every `tick`
//!   (10 ms by default) and sleeps in between through a function the
//!   caller supplies (`FnMut(Duration) -> bool`: sleep about that long,
//!   return `true` to wake the server for shutdown). Latency is up to one
//!   tick; the CPU sleeps in between. Every wait, a connection's read
//!   and write and a datagram's send included, ends when the sleep
//!   function asks for a shutdown wake-up (reads and writes then fail
//!   with `Interrupted`).
//! * **No backlog size.** `listen` takes no queue length: the stack
//!   decides (std-embedded-nal: std's 128). A waiting connection is
//!   accepted while waiting (embedded-nal has no peek) and held until the
//!   server takes it.
//! * **No truncation report, no peek.** `receive` cuts a datagram to the
//!   buffer without saying so. The socket receives into its own buffer
//!   (the `stash`); a datagram that *fills* it may have been cut, and is
//!   reported as truncated (its size unknown: the stash length plus one),
//!   never handed to the handler cut. Make the stash one byte larger than
//!   the largest datagram you serve.
//! * **No half-close.** `close` ends both directions, so
//!   [`Connection::shutdown_write`](sockserv_core::Connection::shutdown_write)
//!   closes the socket: the peer reads EOF after the data, but can no
//!   longer send.
//! * **Coarse errors.** `TcpErrorKind` has only `PipeClosed` (mapped to
//!   `BrokenPipe`) and `Other`: a reset is `Other`.
//! * **Blocking sockets.** A stack may block inside `receive` (the sockets
//!   std-embedded-nal accepts do); the stream timeout cannot fire then.

use core::cell::RefCell;
use core::fmt;
use core::time::Duration;

use embedded_io::ErrorKind;
use embedded_nal::nb;
use sockserv_core::{Clock, Readiness};

mod tcp;
mod udp;

pub use tcp::{NalConn, NalListener};
pub use udp::NalUdp;

/// An embedded-nal stack with what waiting needs: a [`Clock`] and a sleep
/// function. Listeners, connections and UDP sockets share it by reference.
pub struct NalStack<T, C, P> {
    stack: RefCell<T>,
    clock: C,
    sleep: RefCell<P>,
    tick: Duration,
}

/// A failed operation: an `embedded_io` kind and, when the stack reported
/// it, the stack's own error.
#[derive(Debug)]
pub struct NalError<E> {
    kind: ErrorKind,
    /// The stack's error, if it came from the stack.
    pub source: Option<E>,
}

impl<E> NalError<E> {
    pub(crate) fn new(kind: ErrorKind, source: Option<E>) -> Self {
        Self { kind, source }
    }
}

impl<E: fmt::Debug> fmt::Display for NalError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{:?}: {e:?}", self.kind),
            None => write!(f, "{:?}", self.kind),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for NalError<E> {}

impl<E: fmt::Debug> embedded_io::Error for NalError<E> {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Why [`NalStack::retry`] gave up.
pub(crate) enum Gave<E> {
    Failed(E),
    TimedOut,
    Woken,
}

impl<E> Gave<E> {
    /// What a `wait` that tried the operation itself ends with. A failure
    /// is the operation's to report: it is kept in `pending` for the next
    /// accept / receive, and the wait says `Ready`.
    pub(crate) fn into_readiness(tried: Result<(), Self>, pending: &mut Option<E>) -> Readiness {
        match tried {
            Ok(()) => Readiness::Ready,
            Err(Gave::TimedOut) => Readiness::TimedOut,
            Err(Gave::Woken) => Readiness::Woken,
            Err(Gave::Failed(e)) => {
                *pending = Some(e);
                Readiness::Ready
            }
        }
    }
}

impl<T, C: Clock, P: FnMut(Duration) -> bool> NalStack<T, C, P> {
    /// Wraps `stack`; `sleep(d)` sleeps about `d` and returns `true` to
    /// wake the server for shutdown.
    pub fn new(stack: T, clock: C, sleep: P) -> Self {
        Self {
            stack: RefCell::new(stack),
            clock,
            sleep: RefCell::new(sleep),
            tick: Duration::from_millis(10),
        }
    }

    /// How long to sleep between two tries of a call that would block.
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Runs `f` on the stack.
    pub fn with_stack<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.stack.borrow_mut())
    }

    pub(crate) fn deadline(&self, timeout: Option<Duration>) -> Option<Duration> {
        timeout.map(|t| self.clock.now().saturating_add(t))
    }

    /// Sleeps one tick (less if `deadline` is nearer); `true` if woken.
    fn nap(&self, deadline: Option<Duration>) -> bool {
        let left = deadline.map_or(self.tick, |d| d.saturating_sub(self.clock.now()));
        (self.sleep.borrow_mut())(left.min(self.tick))
    }

    /// Calls `op` until it stops saying `WouldBlock`, napping in between,
    /// up to `deadline`. With `wake`, a shutdown wake-up ends the wait.
    pub(crate) fn retry<R, E>(
        &self,
        deadline: Option<Duration>,
        wake: bool,
        mut op: impl FnMut(&mut T) -> nb::Result<R, E>,
    ) -> Result<R, Gave<E>> {
        loop {
            match op(&mut self.stack.borrow_mut()) {
                Ok(r) => return Ok(r),
                Err(nb::Error::Other(e)) => return Err(Gave::Failed(e)),
                Err(nb::Error::WouldBlock) => {}
            }
            if deadline.is_some_and(|d| self.clock.now() >= d) {
                return Err(Gave::TimedOut);
            }
            if self.nap(deadline) && wake {
                return Err(Gave::Woken);
            }
        }
    }

    /// Sleeps for `duration` (a transport's `pause`): `Woken` if a
    /// shutdown wake-up came first, else `TimedOut`.
    pub(crate) fn pause(&self, duration: Duration) -> Readiness {
        let deadline = self.clock.now().saturating_add(duration);
        while self.clock.now() < deadline {
            if self.nap(Some(deadline)) {
                return Readiness::Woken;
            }
        }
        Readiness::TimedOut
    }
}
