//! Times as wrapping 32-bit milliseconds, for the state the stack keeps
//! per socket and per neighbour, and as 64-bit microseconds, for the
//! deadlines of the wait loops and smoltcp's `Instant`s (a leaf module).

use core::time::Duration;

/// A time on the stack's clock as wrapping 32-bit milliseconds: what the
/// listeners' pools and the neighbour watch keep and compare (`Duration`
/// arithmetic is `u64` + `u32` with carries, bulky on a 32-bit MCU).
/// The difference of two such times is right while less than 24 days
/// apart (`i32::MAX` ms); both follow their times at every poll. Out of
/// line: one copy for its several callers.
#[inline(never)]
pub(crate) fn millis(t: Duration) -> u32 {
    (t.as_secs() as u32).wrapping_mul(1000).wrapping_add(t.subsec_millis())
}

/// A timeout in those milliseconds: at most 24 days (`i32::MAX` ms).
pub(crate) fn timeout_millis(d: Duration) -> u32 {
    let ms = (d.as_secs().min(3_000_000) as u32) * 1000 + d.subsec_millis();
    ms.min(i32::MAX as u32)
}

/// A time on the stack's clock, or a span of it, in microseconds (see
/// [`micros`]): what the wait loops' deadlines are kept in, as smoltcp
/// keeps its `Instant`s (`Duration` arithmetic is `u64` + `u32` with
/// carries, bulky on a 32-bit MCU).
pub(crate) type Micros = u64;

/// `d` in microseconds (less than a microsecond left out), at most
/// `i64::MAX` (292,000 years): without `as_micros`' `u128` arithmetic,
/// bulky on a 32-bit MCU. Out of line: one copy for its several callers.
#[inline(never)]
pub(crate) fn micros(d: Duration) -> Micros {
    const MAX_SECS: u64 = i64::MAX as u64 / 1_000_000 - 1;
    d.as_secs().min(MAX_SECS) * 1_000_000 + u64::from(d.subsec_micros())
}
