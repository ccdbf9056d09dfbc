//! Lines on the host's console through semihosting, without `core::fmt`:
//! byte strings and decimal numbers only (the runner sorts the lines onto
//! its stdout and stderr).

use crate::hw::host_write;

/// Writes the parts, then a newline.
pub fn line(parts: &[&[u8]]) {
    for p in parts {
        host_write(p);
    }
    host_write(b"\n");
}

/// `n` in decimal, in `buf`.
pub fn num(n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A line `prefix` + `n` + `suffix`.
pub fn line_num(prefix: &[u8], n: u32, suffix: &[u8]) {
    let mut buf = [0u8; 10];
    line(&[prefix, num(n, &mut buf), suffix]);
}
