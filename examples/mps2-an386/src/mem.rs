//! The copies and fills the compiler emits (`__aeabi_memcpy`,
//! `__aeabi_memmove`, `__aeabi_memset`, `__aeabi_memclr` and their aligned
//! variants) as byte loops: 0.1 KB of flash where compiler_builtins'
//! word-at-a-time versions take 1.06 KB. The copies are of frames and
//! socket buffers (at most 1.5 KB); QEMU runs the loop at well over a
//! megabyte per millisecond. Volatile accesses keep LLVM from recognising
//! the loops as calls to these very functions. They override
//! compiler_builtins' weak definitions at link time; nothing in the images
//! calls the C names (`memcpy`, ...), which compiler_builtins still defines.

use core::ptr::{read_volatile, write_volatile};

/// The one copy loop. Its name is not a C library function's: LLVM
/// turns a call to `memmove` into its own memmove intrinsic, which
/// lowers to `__aeabi_memmove`, which would be this call again.
///
/// # Safety
/// `dst` and `src` valid for `n` bytes (they may overlap).
#[inline(never)]
unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
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
}

/// The one fill loop (named for the reason `copy` is).
///
/// # Safety
/// `dst` valid for `n` bytes.
#[inline(never)]
unsafe fn fill(dst: *mut u8, byte: u8, n: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller passes a region valid for `n` bytes.
        unsafe { write_volatile(dst.add(i), byte) };
        i += 1;
    }
}

// The ARM EABI names the compiler calls (`__aeabi_memset` takes the
// length before the byte). compiler_builtins defines them weakly.
macro_rules! aeabi_copy {
    ($($name:ident),*) => {$(
        /// # Safety
        /// As `memmove`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dst: *mut u8, src: *const u8, n: usize) {
            // SAFETY: the caller's contract is `copy`'s.
            unsafe { copy(dst, src, n) };
        }
    )*};
}
aeabi_copy!(
    __aeabi_memcpy,
    __aeabi_memcpy4,
    __aeabi_memcpy8,
    __aeabi_memmove,
    __aeabi_memmove4,
    __aeabi_memmove8
);

macro_rules! aeabi_set {
    ($($name:ident),*) => {$(
        /// # Safety
        /// As `memset`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dst: *mut u8, n: usize, c: i32) {
            // SAFETY: the caller's contract is `fill`'s.
            unsafe { fill(dst, c as u8, n) };
        }
    )*};
}
aeabi_set!(__aeabi_memset, __aeabi_memset4, __aeabi_memset8);

macro_rules! aeabi_clr {
    ($($name:ident),*) => {$(
        /// # Safety
        /// As `memset`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dst: *mut u8, n: usize) {
            // SAFETY: the caller's contract is `fill`'s.
            unsafe { fill(dst, 0, n) };
        }
    )*};
}
aeabi_clr!(__aeabi_memclr, __aeabi_memclr4, __aeabi_memclr8);

/// Keeps the functions above through LTO: the calls to them appear only
/// when LLVM lowers copies after LTO has dropped what looked unused
/// (these tables stay in the image: 48 bytes).
#[used]
static KEEP: [unsafe extern "C" fn(*mut u8, *const u8, usize); 6] = [
    __aeabi_memcpy,
    __aeabi_memcpy4,
    __aeabi_memcpy8,
    __aeabi_memmove,
    __aeabi_memmove4,
    __aeabi_memmove8,
];
#[used]
static KEEP_SET: [unsafe extern "C" fn(*mut u8, usize, i32); 3] =
    [__aeabi_memset, __aeabi_memset4, __aeabi_memset8];
#[used]
static KEEP_CLR: [unsafe extern "C" fn(*mut u8, usize); 3] =
    [__aeabi_memclr, __aeabi_memclr4, __aeabi_memclr8];
