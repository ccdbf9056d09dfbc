//! A counter in memory shared with forked children.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// One `AtomicU64` in an anonymous `MAP_SHARED` mapping: a forked child
/// adds to the same counter its parent reads.
pub(crate) struct SharedCounter {
    ptr: NonNull<AtomicU64>,
}

// SAFETY: the pointee is an AtomicU64 (Sync, Send); the mapping lives as
// long as the value and is only reached through `&AtomicU64`.
unsafe impl Send for SharedCounter {}
// SAFETY: as above: all access goes through the atomic.
unsafe impl Sync for SharedCounter {}

impl SharedCounter {
    /// A counter at zero.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: an anonymous mapping with no address hint touches no
        // existing memory; the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size_of::<AtomicU64>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The mapping is zero-filled and page-aligned: a valid AtomicU64 at 0.
        let ptr = NonNull::new(p.cast::<AtomicU64>()).ok_or(io::ErrorKind::OutOfMemory)?;
        Ok(Self { ptr })
    }

    pub(crate) fn get(&self) -> &AtomicU64 {
        // SAFETY: `ptr` points into our live mapping, initialised (zeroed)
        // and aligned for an AtomicU64; only shared references are handed out.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for SharedCounter {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference to
        // it outlives `self` (get borrows self).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), size_of::<AtomicU64>()) };
    }
}

impl std::fmt::Debug for SharedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedCounter").field(self.get()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn a_forked_child_adds_to_the_parents_counter() {
        let counter = SharedCounter::new().unwrap();
        counter.get().fetch_add(1, Ordering::Relaxed);
        // The child does only an atomic add before _exit: async-signal-safe,
        // as a fork from this multi-threaded test process requires.
        let pid = crate::sys::fork_run(|| {
            counter.get().fetch_add(2, Ordering::Relaxed);
            0
        })
        .unwrap();
        assert_eq!(crate::sys::reap(pid, true).unwrap().and_then(|s| s.code()), Some(0));
        assert_eq!(counter.get().load(Ordering::Relaxed), 3);
    }
}
