//! The forking strategy's children: started, reaped, waited for, ended.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys::{self, ExitStatus, Pid, Signal};

/// How often a wait looks again when a child has no pidfd (an old kernel)
/// or poll(2) failed.
const REAP_TICK: Duration = Duration::from_millis(10);

#[derive(Debug)]
struct Child {
    pid: Pid,
    /// Readable once the child has exited.
    pidfd: Option<OwnedFd>,
}

/// The children a forking server started and has not reaped yet, and what
/// became of those it reaped. Only ever waits for its own pids (never
/// `waitpid(-1)`, CPython issue 1540386).
#[derive(Debug, Default)]
pub(super) struct Children {
    running: Vec<Child>,
    pub(super) reaped: u64,
    pub(super) failed: u64,
    pub(super) last_status: Option<i32>,
}

impl Children {
    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    pub(super) fn push(&mut self, pid: Pid) {
        let pidfd = sys::pidfd_open(pid).ok();
        self.running.push(Child { pid, pidfd });
    }

    fn record(&mut self, status: Option<ExitStatus>) {
        self.reaped += 1;
        self.last_status = status.and_then(ExitStatus::code);
        let ok = self.last_status == Some(0);
        if !ok {
            self.failed += 1;
        }
    }

    /// Reaps every child that has exited, without waiting.
    pub(super) fn reap_exited(&mut self) {
        let mut statuses = Vec::new();
        self.running.retain(|c| match sys::reap(c.pid, false) {
            Ok(None) => true,
            Ok(Some(status)) => {
                statuses.push(Some(status));
                false
            }
            // Not our child any more (someone else reaped it): forget it.
            Err(_) => {
                statuses.push(None);
                false
            }
        });
        for s in statuses {
            self.record(s);
        }
    }

    /// Sleeps until a child exits or `deadline` passes.
    fn sleep(&self, deadline: Option<Instant>) {
        let fds: Vec<_> =
            self.running.iter().filter_map(|c| c.pidfd.as_ref().map(AsFd::as_fd)).collect();
        let mut timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if fds.len() < self.running.len() {
            timeout = Some(timeout.map_or(REAP_TICK, |t| t.min(REAP_TICK)));
        }
        if sys::poll_any(&fds, timeout).is_err() {
            std::thread::sleep(REAP_TICK);
        }
    }

    /// CPython's `collect_children` at `max_children`: reaps, and while
    /// `max` children are running waits for one to exit (`serve_forever`
    /// never comes here at the cap: it stops accepting instead, and sees
    /// a stop request; `handle_request` waits, as CPython's does).
    pub(super) fn wait_for_slot(&mut self, max: usize) {
        self.reap_exited();
        while self.running.len() >= max {
            self.sleep(None);
            self.reap_exited();
        }
    }

    /// Reaps; while `max` children run, sleeps until one exits or
    /// `timeout` passes.
    pub(super) fn wait_for_exit(&mut self, max: usize, timeout: Duration) {
        self.reap_exited();
        if self.running.len() >= max {
            self.sleep(Some(Instant::now() + timeout));
            self.reap_exited();
        }
    }

    /// Waits for every child to exit (CPython's `block_on_close`).
    pub(super) fn wait_all(&mut self) {
        for c in std::mem::take(&mut self.running) {
            let status = sys::reap(c.pid, true).ok().flatten();
            self.record(status);
        }
    }

    /// Gives the children `grace` to finish, then sends the ones left
    /// SIGTERM, gives them `grace` again, then SIGKILL; reaps them all.
    pub(super) fn end(&mut self, grace: Duration) {
        self.wait_until(Instant::now() + grace);
        for signal in [Signal::Term, Signal::Kill] {
            if self.running.is_empty() {
                return;
            }
            for c in &self.running {
                sys::kill(c.pid, signal);
            }
            self.wait_until(Instant::now() + grace);
        }
        self.wait_all();
    }

    fn wait_until(&mut self, deadline: Instant) {
        self.reap_exited();
        while !self.running.is_empty() && Instant::now() < deadline {
            self.sleep(Some(deadline));
            self.reap_exited();
        }
    }
}
