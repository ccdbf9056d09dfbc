//! `memcpy`, `memmove` and `memset` as byte loops: 0.1 KB of flash where
//! compiler_builtins' word-at-a-time versions take 1.06 KB (the copies
//! here are frames and socket buffers of at most 1.5 KB; QEMU runs the
//! loop at well over a megabyte per millisecond). Volatile accesses keep
//! LLVM from recognising the loops as calls to these very functions.
//! They override compiler_builtins' weak definitions at link time.

use core::ptr::{read_volatile, write_volatile};

/// # Safety
/// `dst` and `src` valid for `n` bytes (they may overlap).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller passes regions valid for `n` bytes; copying
    // upwards when `dst` is below `src` (downwards otherwise) reads each
    // byte before it is overwritten.
    unsafe {
        if (dst as usize) <= (src as usize) {
            let mut i = 0;
            while i < n {
                write_volatile(dst.add(i), read_volatile(src.add(i)));
                i += 1;
            }
        } else {
            let mut i = n;
            while i > 0 {
                i -= 1;
                write_volatile(dst.add(i), read_volatile(src.add(i)));
            }
        }
    }
    dst
}

/// # Safety
/// `dst` and `src` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract is memmove's (without the overlap).
    unsafe { memmove(dst, src, n) }
}

/// # Safety
/// `dst` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller passes a region valid for `n` bytes.
        unsafe { write_volatile(dst.add(i), c as u8) };
        i += 1;
    }
    dst
}
