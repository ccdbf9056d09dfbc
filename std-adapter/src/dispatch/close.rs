//! What closing a server does with the requests still running away from
//! its loop, and the wait behind it: one policy for every strategy.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::conn::Link;

/// What closing the server (`server_close`, or dropping it) does with
/// requests still running on handler threads, pool workers or child
/// processes: CPython's `block_on_close` and `daemon_threads` as one
/// value.
///
/// The default is [`Close::Grace`] of [`DEFAULT_GRACE`] (1 s, as event
/// mode's `shutdown_grace`), so that a server asked to stop (SIGTERM,
/// Ctrl-C) ends within a known time even with idle clients connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Wait for every request, however long its client keeps it:
    /// CPython's `block_on_close = True`. A client that never leaves
    /// holds the close for ever.
    Wait,
    /// Wait up to this long for the requests to finish, then end the
    /// rest: their connections are shut down (a handler waiting in a read
    /// sees EOF, a write fails), threads get as long again to return and
    /// are then left; children get SIGTERM, after as long again SIGKILL,
    /// and are reaped.
    Grace(Duration),
    /// Do not wait: the requests go on after the server is closed,
    /// CPython's `daemon_threads = True` / `block_on_close = False`.
    /// Threads end with the process; children outlive it.
    Leave,
}

/// The grace of the default [`Close`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);

impl Default for Close {
    fn default() -> Self {
        Self::Grace(DEFAULT_GRACE)
    }
}

/// A connection being served, as `Conn::watch` gives it: it can be shut
/// down, and does not keep the socket open.
pub(crate) type Watch = Weak<Link>;

/// A count of requests running away from the loop, and their
/// connections, that the loop and `server_close` wait on.
#[derive(Debug, Default)]
pub(crate) struct Running {
    state: Mutex<State>,
    /// A request ended.
    ended: Condvar,
}

#[derive(Debug, Default)]
struct State {
    count: usize,
    /// The connections of running stream requests (dead ones are pruned
    /// as new ones come).
    conns: Vec<Watch>,
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many requests run now.
    pub(crate) fn count(&self) -> usize {
        self.lock().count
    }

    /// Counts one more request (its connection, for a stream); the
    /// guard counts it as ended when dropped.
    pub(crate) fn start(self: &Arc<Self>, conn: Option<Watch>) -> Ends {
        let mut st = self.lock();
        st.count += 1;
        if let Some(conn) = conn {
            st.conns.retain(|c| c.strong_count() > 0);
            st.conns.push(conn);
        }
        Ends(Arc::clone(self))
    }

    fn end(&self) {
        let mut st = self.lock();
        st.count = st.count.saturating_sub(1);
        drop(st);
        self.ended.notify_all();
    }

    /// Waits until fewer than `limit` requests run or `timeout` passes
    /// (`None`: for ever); whether fewer do.
    pub(crate) fn wait_below(&self, limit: usize, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        while st.count >= limit {
            st = match deadline {
                None => self.ended.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.ended.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
        true
    }

    /// Shuts down every connection still served (both directions): a
    /// handler waiting in a read sees EOF, a write fails.
    pub(crate) fn shut_down_connections(&self) {
        let conns = std::mem::take(&mut self.lock().conns);
        for link in conns.iter().filter_map(Weak::upgrade) {
            link.shut_down();
        }
    }

    /// What [`Close`] says for requests counted here: wait for all,
    /// wait up to the grace then shut their connections down and wait as
    /// long again, or nothing. Returns whether none runs any more.
    pub(crate) fn close(&self, close: Close) -> bool {
        match close {
            Close::Wait => self.wait_below(1, None),
            Close::Grace(grace) => {
                if self.wait_below(1, Some(grace)) {
                    return true;
                }
                self.shut_down_connections();
                self.wait_below(1, Some(grace))
            }
            Close::Leave => self.count() == 0,
        }
    }
}

/// Counts a request as ended when dropped, even by a panic.
pub(crate) struct Ends(pub(crate) Arc<Running>);

impl Drop for Ends {
    fn drop(&mut self) {
        self.0.end();
    }
}
