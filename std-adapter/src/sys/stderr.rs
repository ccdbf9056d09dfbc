//! The report fallback's stderr writer: a line goes out whole at once or
//! is dropped (core counts it); it never waits for a reader.
//!
//! Setting `O_NONBLOCK` on descriptor 2 itself would change the open file
//! description the shell and every other process on that pipe or terminal
//! share. Instead a pipe, FIFO or terminal is opened a second time
//! (`/proc/self/fd/2`), which makes a private description of the same pipe
//! that can be non-blocking; a socket gets `send(MSG_DONTWAIT)`; a regular
//! file (or anything else) a plain `write(2)`, which does not wait for a
//! reader. Without `/proc`, a pipe or terminal is polled first (a line
//! written by another thread or process in between can still make the
//! write wait: best effort).
//!
//! No locks: forked children report too, and a lock held by another
//! thread at the fork would never be released in the child.

use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

const STDERR: i32 = 2;

/// The private non-blocking descriptor, and the file it was opened for
/// (stderr redirected elsewhere later gets a new one; the old one is left
/// open, since another thread may be writing to it).
static FD: AtomicI32 = AtomicI32::new(-1);
static OPENED_FOR: AtomicU64 = AtomicU64::new(0);

/// Writes `line` (at most `PIPE_BUF` bytes) to stderr without waiting;
/// whether it was written.
pub(crate) fn write_stderr_line(line: &[u8]) -> bool {
    // SAFETY: an all-zero `stat` is a valid value for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat; fstat on any number is safe.
    if unsafe { libc::fstat(STDERR, &mut st) } != 0 {
        return false;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => {
            // SAFETY: `line` is valid for reads of line.len() bytes.
            let n = unsafe {
                libc::send(
                    STDERR,
                    line.as_ptr().cast(),
                    line.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            n > 0
        }
        libc::S_IFIFO | libc::S_IFCHR => match private_fd(&st) {
            Some(fd) => write(fd, line),
            None => writable_now() && write(STDERR, line),
        },
        _ => write(STDERR, line),
    }
}

fn write(fd: i32, line: &[u8]) -> bool {
    // SAFETY: `line` is valid for reads of line.len() bytes.
    unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) > 0 }
}

/// Whether stderr can take a write now (poll, no wait).
fn writable_now() -> bool {
    let mut p = libc::pollfd { fd: STDERR, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd; a zero timeout does not wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLOUT != 0 }
}

/// The private non-blocking description of the pipe or terminal that is
/// stderr now, opened once per file.
fn private_fd(st: &libc::stat) -> Option<i32> {
    // dev_t and ino_t are narrower than u64 on some targets.
    #[allow(clippy::unnecessary_cast)]
    let key = ((st.st_dev as u64).rotate_left(32) ^ (st.st_ino as u64)) | 1;
    let fd = FD.load(Ordering::Acquire);
    if fd >= 0 && OPENED_FOR.load(Ordering::Acquire) == key {
        return Some(fd);
    }
    const PATH: &CStr = c"/proc/self/fd/2";
    let flags = libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: PATH is a NUL-terminated string; open takes flags only.
    let new = unsafe { libc::open(PATH.as_ptr(), flags) };
    if new < 0 {
        return None;
    }
    match FD.compare_exchange(fd, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            OPENED_FOR.store(key, Ordering::Release);
            Some(new)
        }
        Err(theirs) => {
            // Another thread opened one at the same moment: use theirs.
            // SAFETY: `new` is ours alone and was never published.
            unsafe { libc::close(new) };
            Some(theirs)
        }
    }
}
