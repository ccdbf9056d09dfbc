//! Episodes at a connection cap: a server that stops accepting because it
//! is full says so once when it gets there and once when it has room
//! again (nginx's "worker_connections are not enough"), and counts how
//! often it got there.

use core::time::Duration;

use crate::logging::{Level, report};

/// Tracks whether a server is at its connection cap, reporting each
/// episode through [`logging::report`](crate::logging::report): one
/// [`Level::Warn`] when the cap is reached, one [`Level::Info`] when it
/// is over (with how long it lasted), never one per turn of the loop.
///
/// The servers end an episode when they have room **and nobody waits**
/// (an accept or receive finds nothing pending), not at the first
/// connection that closes: a server kept at its cap by a queue of
/// clients, each let in as another leaves, is one episode, not one per
/// client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapWatch {
    /// When the current episode began (in wrapping 32-bit milliseconds),
    /// while at the cap.
    since: Option<u32>,
    reached: u64,
}

impl CapWatch {
    /// Not at the cap, nothing counted.
    pub const fn new() -> Self {
        Self { since: None, reached: 0 }
    }

    /// Tells the watch whether the server is full at `now`; reports and
    /// counts when that changed. `what` names the cap in the reports
    /// (`"max_threads (8)"`, `"connection table (1024)"`).
    pub fn update(&mut self, full: bool, now: Duration, what: &dyn core::fmt::Display) {
        self.update_at(full, crate::event::millis(now), what);
    }

    /// [`update`](Self::update) at `now` in wrapping 32-bit milliseconds.
    pub(crate) fn update_at(&mut self, full: bool, now: u32, what: &dyn core::fmt::Display) {
        match (self.since, full) {
            (None, true) => {
                self.since = Some(now);
                self.reached += 1;
                report(
                    Level::Warn,
                    format_args!(
                        "connection cap reached: {what} is full; new requests wait \
                         (connections in the listen backlog, datagrams in the receive \
                         buffer) until one finishes"
                    ),
                );
            }
            (Some(since), false) => {
                self.since = None;
                let ms = now.wrapping_sub(since);
                report(
                    Level::Info,
                    format_args!(
                        "below the connection cap again, nobody waiting: {what}, \
                         after {ms} ms at it"
                    ),
                );
            }
            _ => {}
        }
    }

    /// Ends an episode without a report: the server stopped.
    pub fn stopped(&mut self) {
        self.since = None;
    }

    /// Whether the server is at its cap now.
    pub fn is_at_cap(&self) -> bool {
        self.since.is_some()
    }

    /// How many times the cap was reached (episodes, not turns).
    pub fn reached(&self) -> u64 {
        self.reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_count_per_episode_not_per_turn() {
        let mut w = CapWatch::new();
        let t = Duration::from_millis;
        for i in 0..10 {
            w.update(true, t(i), &"x");
        }
        assert!(w.is_at_cap());
        assert_eq!(w.reached(), 1);
        for i in 10..20 {
            w.update(false, t(i), &"x");
        }
        assert!(!w.is_at_cap());
        assert_eq!(w.reached(), 1);
        w.update(true, t(30), &"x");
        assert_eq!(w.reached(), 2);
    }
}
