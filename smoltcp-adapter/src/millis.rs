//! Times as wrapping 32-bit milliseconds, for the state the stack keeps
//! per socket and per neighbour (a leaf module).

use core::time::Duration;

/// A time on the stack's clock as wrapping 32-bit milliseconds: what the
/// listeners' pools and the neighbour watch keep and compare (`Duration`
/// arithmetic is `u64` + `u32` with carries, bulky on a 32-bit MCU).
/// The difference of two such times is right while less than 24 days
/// apart (`i32::MAX` ms); both follow their times at every poll.
pub(crate) fn millis(t: Duration) -> u32 {
    (t.as_secs() as u32).wrapping_mul(1000).wrapping_add(t.subsec_millis())
}

/// A timeout in those milliseconds: at most 24 days (`i32::MAX` ms).
pub(crate) fn timeout_millis(d: Duration) -> u32 {
    let ms = (d.as_secs().min(3_000_000) as u32) * 1000 + d.subsec_millis();
    ms.min(i32::MAX as u32)
}
