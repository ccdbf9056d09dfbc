//! The default hooks' stderr lines (feature `std`): each report is
//! formatted into a bounded buffer on the stack and leaves in one
//! `write(2)`, so the reports of threads and forked children never splice
//! into each other (`eprintln!` writes a line in as many pieces as it has
//! parts: up to 29 for one report). A line of at most `PIPE_BUF` bytes is
//! written atomically into a pipe.

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU64, Ordering};
use std::io::Write as _;
use std::sync::OnceLock;

/// The longest report line, newline included (Linux's `PIPE_BUF` is 4096:
/// a write this size into a pipe is never interleaved).
const MAX_LINE: usize = 1024;

/// What ends a report that did not fit.
const TRUNCATED: &[u8] = b" [...]\n";

/// A fixed buffer that keeps what fits and remembers that something did not.
pub(crate) struct Line {
    buf: [u8; MAX_LINE],
    len: usize,
    truncated: bool,
}

impl Line {
    pub(crate) const fn new() -> Self {
        Self { buf: [0; MAX_LINE], len: 0, truncated: false }
    }

    /// The line with its newline; a cut one ends with the marker.
    pub(crate) fn finish(&mut self) -> &[u8] {
        let room = MAX_LINE - TRUNCATED.len();
        if self.truncated || self.len >= MAX_LINE {
            let mut end = self.len.min(room);
            // Cut on a character boundary.
            while end > 0 && (self.buf[end] & 0xC0) == 0x80 {
                end -= 1;
            }
            self.buf[end..end + TRUNCATED.len()].copy_from_slice(TRUNCATED);
            self.len = end + TRUNCATED.len();
        } else {
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
        &self.buf[..self.len]
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the newline.
        let room = MAX_LINE - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

/// How a line reaches stderr, if a std adapter installed one
/// ([`set_line_writer`]).
static WRITER: OnceLock<fn(&[u8]) -> bool> = OnceLock::new();
/// Lines the writer dropped, ever.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines dropped since the last notice that said so.
static UNTOLD: AtomicU64 = AtomicU64::new(0);

/// Installs `write` as the way the stderr fallback writes a line: it must
/// write the whole line at once or not at all, without waiting, and say
/// whether it did. The first call wins.
pub(crate) fn set_line_writer(write: fn(&[u8]) -> bool) {
    let _ = WRITER.set(write);
}

/// Lines the installed writer could not write (stderr full) and dropped.
pub(crate) fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Writes `args` and a newline to stderr in one `write(2)` (cut to
/// [`MAX_LINE`] bytes with a ` [...]` marker). Errors are ignored, as
/// `eprintln!`'s panics would not help a failing request.
///
/// With a writer installed ([`set_line_writer`]) a line that stderr cannot
/// take at once is dropped and counted, and the next line that gets
/// through is preceded by one saying how many were dropped. Without one,
/// the write blocks while stderr is full.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = line.write_fmt(args);
    let Some(write) = WRITER.get() else {
        let _ = std::io::stderr().write_all(line.finish());
        return;
    };
    let untold = UNTOLD.load(Ordering::Relaxed);
    if untold > 0 {
        let mut notice = Line::new();
        let _ = write!(notice, "sockserv: {untold} report lines dropped: stderr was full");
        if !write(notice.finish()) {
            count_dropped();
            return;
        }
        UNTOLD.fetch_sub(untold, Ordering::Relaxed);
    }
    if !write(line.finish()) {
        count_dropped();
    }
}

fn count_dropped() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
    UNTOLD.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(args: fmt::Arguments<'_>) -> std::vec::Vec<u8> {
        let mut line = Line::new();
        let _ = line.write_fmt(args);
        line.finish().to_vec()
    }

    #[test]
    fn a_short_report_is_one_line() {
        assert_eq!(render(format_args!("a {} c", "b")), b"a b c\n");
    }

    #[test]
    fn a_long_report_is_cut_with_a_marker_and_stays_one_line() {
        let long = "é".repeat(2000);
        let out = render(format_args!("x{long}"));
        assert!(out.len() <= MAX_LINE);
        assert!(out.ends_with(TRUNCATED), "{:?}", &out[out.len() - 10..]);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(core::str::from_utf8(&out).is_ok(), "cut on a character boundary");
    }

    #[test]
    fn a_report_of_exactly_the_room_is_not_marked() {
        let s = "y".repeat(MAX_LINE - 1);
        let out = render(format_args!("{s}"));
        assert_eq!(out.len(), MAX_LINE);
        assert!(out.ends_with(b"y\n"));
    }
}
