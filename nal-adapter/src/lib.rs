#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::cell::RefCell;
use core::fmt;
use core::time::Duration;

use embedded_io::ErrorKind;
use embedded_nal::nb;
use sockserv_core::driver::{Clock, Readiness};

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

/// What a try that may have to wait gives: the operation's own answer
/// (its result or the stack's error), or, when it would still block, how
/// the wait ended (`TimedOut` or `Woken`, never `Ready`).
pub(crate) type Tried<R, E> = Result<Result<R, E>, Readiness>;

/// What a `wait` that tried the operation itself ends with. A failure is
/// the operation's to report: it is kept in `pending` for the next
/// accept / receive, and the wait says `Ready`.
pub(crate) fn readiness<E>(tried: Tried<(), E>, pending: &mut Option<E>) -> Readiness {
    match tried {
        Ok(Ok(())) => Readiness::Ready,
        Ok(Err(e)) => {
            *pending = Some(e);
            Readiness::Ready
        }
        Err(ended) => ended,
    }
}

/// The error for a read, write or send whose wait ended unfinished.
pub(crate) fn unfinished<E>(ended: Readiness) -> NalError<E> {
    let kind = match ended {
        Readiness::Woken => ErrorKind::Interrupted,
        Readiness::TimedOut | Readiness::Ready => ErrorKind::TimedOut,
    };
    NalError::new(kind, None)
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
    ) -> Tried<R, E> {
        loop {
            match op(&mut self.stack.borrow_mut()) {
                Ok(r) => return Ok(Ok(r)),
                Err(nb::Error::Other(e)) => return Ok(Err(e)),
                Err(nb::Error::WouldBlock) => {}
            }
            if deadline.is_some_and(|d| self.clock.now() >= d) {
                return Err(Readiness::TimedOut);
            }
            if self.nap(deadline) && wake {
                return Err(Readiness::Woken);
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
