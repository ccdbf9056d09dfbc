//! The std shutdown signal: wakes the wait at once and lets `shutdown()`
//! block until `serve_forever` has returned.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, ThreadId};
use std::time::Duration;

use sockserv_core::ShutdownSignal;

use crate::sys;

/// What [`Shared::wait`] ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// A stop was asked for.
    Stop,
    /// The descriptor is ready.
    Ready,
    /// The timeout passed.
    TimedOut,
}

#[derive(Debug, Default)]
struct LoopState {
    /// The thread running `serve_forever`, while it runs.
    thread: Option<ThreadId>,
    /// CPython's `__is_shut_down` event: set when `serve_forever` returns.
    shut_down: bool,
}

/// The state shared by a server and its [`ShutdownHandle`]s.
#[derive(Debug)]
pub(crate) struct Shared {
    requested: Arc<AtomicBool>,
    state: Mutex<LoopState>,
    stopped: Condvar,
    wake_read: OwnedFd,
    wake_write: OwnedFd,
    /// The loops of a multi-loop event server, each with its own flag and
    /// wake-up pipe: a request here is a request to each of them (empty
    /// for a server of one loop).
    members: Vec<Arc<Shared>>,
}

impl Shared {
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        Self::group(Vec::new())
    }

    /// The state of a group of loops: a stop asked of it is asked of every
    /// member, and it counts as shut down once its own loop (the one that
    /// runs the members) has returned.
    pub(crate) fn group(members: Vec<Arc<Shared>>) -> io::Result<Arc<Self>> {
        // Every server makes one: from the first on, a report on stderr
        // never waits for a reader (a line stderr cannot take is dropped
        // and counted).
        sockserv_core::logging::set_line_writer(sys::write_stderr_line);
        let (wake_read, wake_write) = sys::pipe()?;
        Ok(Arc::new(Self {
            requested: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(LoopState::default()),
            stopped: Condvar::new(),
            wake_read,
            wake_write,
            members,
        }))
    }

    /// Whether `serve_forever` runs now and no stop is asked of it.
    pub(crate) fn is_serving(&self) -> bool {
        !self.is_requested() && self.lock().thread.is_some()
    }

    /// Whether a stop is requested now.
    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The descriptor that becomes readable when a stop is asked for.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_read.as_fd()
    }

    /// Waits until `fd` (if any) is ready for `wants`, a stop is asked
    /// for, or `timeout` passes: the blocking wait with a deadline and a
    /// wake-up that the listeners' `wait` and `pause` and a connection's
    /// cancellable reads and writes share. A wake-up is drained when
    /// `drain` says so (a loop re-checks the stop flag; a connection
    /// leaves it for the loop).
    pub(crate) fn wait(
        &self,
        fd: Option<(BorrowedFd<'_>, sys::Wants)>,
        timeout: Option<Duration>,
        drain: bool,
    ) -> io::Result<Waited> {
        let (woken, ready) = sys::poll_or_wake(self.wake_fd(), fd, timeout)?;
        if woken {
            if drain {
                self.drain();
            }
            return Ok(Waited::Stop);
        }
        Ok(if ready { Waited::Ready } else { Waited::TimedOut })
    }

    /// Empties the wake-up pipe after a wake-up was seen.
    pub(crate) fn drain(&self) {
        sys::pipe_drain(self.wake_read.as_fd());
    }

    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        sys::pipe_poke(self.wake_write.as_fd());
        for m in &self.members {
            m.request();
        }
    }

    /// Clears a request (and the members'): the loop has returned.
    fn clear(&self) {
        self.requested.store(false, Ordering::SeqCst);
        self.drain();
        for m in &self.members {
            m.clear();
        }
    }

    /// Whether `thread` runs this loop or one of its members'.
    fn runs_on(&self, thread: ThreadId) -> bool {
        self.lock().thread == Some(thread) || self.members.iter().any(|m| m.runs_on(thread))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoopState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The server's side of the shared shutdown state (a [`ShutdownSignal`]).
#[derive(Debug, Clone)]
pub struct Signal(pub(crate) Arc<Shared>);

impl ShutdownSignal for Signal {
    fn is_requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    fn loop_started(&self) {
        let mut st = self.0.lock();
        st.thread = Some(thread::current().id());
        st.shut_down = false;
    }

    fn loop_stopped(&self) {
        let mut st = self.0.lock();
        self.0.clear();
        st.thread = None;
        st.shut_down = true;
        self.0.stopped.notify_all();
    }
}

/// Why [`ShutdownHandle::shutdown`] did not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Called from the thread that runs `serve_forever` (a handler in sync
    /// mode, or a hook): waiting would deadlock (CPython gh-83978). The stop
    /// *was* requested; `serve_forever` returns after the current turn.
    FromServeThread,
}

impl std::fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "shutdown() called from the thread running serve_forever; the stop was requested but not awaited",
        )
    }
}

impl std::error::Error for ShutdownError {}

/// Stops a running `serve_forever` from anywhere: CPython's
/// `server.shutdown()`. Cheap to clone, `Send + Sync`.
///
/// ```
/// # use sockserv::service_fn;
/// # use sockserv::std_adapter::TcpServer;
/// # use std::time::Duration;
/// # struct Nop;
/// # impl<S: embedded_io::Read + embedded_io::Write> sockserv::StreamHandler<S> for Nop {
/// #     type Error = S::Error;
/// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
/// # }
/// let mut server = TcpServer::bind("127.0.0.1:0", service_fn(|_| Nop)).unwrap();
/// let handle = server.shutdown_handle();
/// let t = std::thread::spawn(move || server.serve_forever(Duration::from_secs(60)));
/// handle.shutdown().unwrap(); // returns as soon as the loop has: no 60 s wait
/// t.join().unwrap().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ShutdownHandle(pub(crate) Arc<Shared>);

impl ShutdownHandle {
    /// Asks `serve_forever` to stop, wakes it at once (not after up to
    /// `poll_interval`, CPython gh-88932), and blocks until it has returned.
    /// Called before `serve_forever` starts, it returns once the loop has
    /// started and stopped, as CPython's does. It neither closes the socket
    /// nor stops handler threads.
    ///
    /// # Errors
    /// [`ShutdownError::FromServeThread`] when called on the loop's own
    /// thread: the stop is requested, but waiting would deadlock.
    pub fn shutdown(&self) -> Result<(), ShutdownError> {
        self.0.request();
        if self.0.runs_on(thread::current().id()) {
            return Err(ShutdownError::FromServeThread);
        }
        let mut st = self.0.lock();
        while !st.shut_down {
            st = self.0.stopped.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        Ok(())
    }

    /// Asks `serve_forever` to stop and wakes it, without waiting.
    pub fn request(&self) {
        self.0.request();
    }

    /// Makes `signal` (for instance `SIGINT`, `SIGTERM`) request a stop and
    /// wake the loop. Only async-signal-safe work happens in the handler (an
    /// atomic store and a pipe write), through `signal-hook`.
    ///
    /// # Errors
    /// The signal cannot be handled (`SIGKILL`, ...).
    ///
    /// Forked children of a forking server get the signal's default
    /// action back.
    pub fn stop_on_signal(&self, signal: i32) -> io::Result<()> {
        signal_hook::flag::register(signal, Arc::clone(&self.0.requested))?;
        let write = self.0.wake_write.try_clone()?;
        signal_hook::low_level::pipe::register_raw(signal, write)?;
        for m in &self.0.members {
            ShutdownHandle(Arc::clone(m)).stop_on_signal(signal)?;
        }
        sys::stop_signal_registered(signal);
        Ok(())
    }

    /// [`stop_on_signal`](Self::stop_on_signal) for `SIGINT` and `SIGTERM`:
    /// Ctrl-C and a service manager's stop both end `serve_forever`.
    ///
    /// # Errors
    /// As `stop_on_signal`.
    pub fn stop_on_termination(&self) -> io::Result<()> {
        self.stop_on_signal(signal_hook::consts::SIGINT)?;
        self.stop_on_signal(signal_hook::consts::SIGTERM)
    }
}

pub(crate) use sockserv_core::StdClock;
