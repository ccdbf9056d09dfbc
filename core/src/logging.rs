//! The one place the core reports through: `log` (feature `log`), `defmt`
//! (feature `defmt`; the two are mutually exclusive, as in embassy-net's
//! `fmt.rs`), and stderr (feature `std`) when no logger is installed.

use core::fmt;

#[cfg(all(feature = "log", feature = "defmt"))]
compile_error!("sockserv-core: the `log` and `defmt` features are mutually exclusive");

/// How serious a report is. The default hooks log each report at its
/// level; their stderr fallback (no logger installed) prints
/// [`Warn`](Self::Warn) and [`Error`](Self::Error) only, so a peer that
/// resets or an idle client that is closed prints nothing there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Level {
    /// The server could not do its job for a request (a panic, a failed
    /// accept, a request that could not be started).
    Error,
    /// A request failed (a handler error, a datagram too large, ...).
    Warn,
    /// Something worth knowing that needs nothing done (an idle
    /// connection closed).
    Info,
    /// Routine: the peer went away (reset, broken pipe).
    Debug,
}

#[cfg(feature = "log")]
impl From<Level> for log::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Error => log::Level::Error,
            Level::Warn => log::Level::Warn,
            Level::Info => log::Level::Info,
            Level::Debug => log::Level::Debug,
        }
    }
}

/// Makes the stderr fallback write each line with `write` instead of a
/// blocking `write(2)` (feature `std`): `write` must write the whole line
/// at once or not at all, never wait, and return whether it wrote. A line
/// it cannot write is dropped and counted ([`dropped_lines`]), and the
/// next line that gets through is preceded by `sockserv: N report lines
/// dropped: stderr was full`. The std adapter installs one when it makes
/// its first server, so that a full stderr pipe nobody reads cannot block
/// a server in a report. The first call wins.
#[cfg(feature = "std")]
pub fn set_line_writer(write: fn(&[u8]) -> bool) {
    crate::report::set_line_writer(write);
}

/// How many report lines the stderr fallback dropped because stderr could
/// not take them at once (see [`set_line_writer`]; feature `std`).
#[cfg(feature = "std")]
pub fn dropped_lines() -> u64 {
    crate::report::dropped_lines()
}

/// Reports `args` at `level`: to `log` (target `sockserv`) when a logger
/// is installed (its max level is not `Off`), to `defmt`, or else — with
/// `std` — as one line on stderr (one `write(2)`, `sockserv: ` first) for
/// warnings and errors.
pub fn report(level: Level, args: fmt::Arguments<'_>) {
    #[cfg(feature = "log")]
    if log::max_level() != log::LevelFilter::Off {
        log::log!(target: "sockserv", level.into(), "{args}");
        return;
    }
    #[cfg(feature = "defmt")]
    match level {
        Level::Error => defmt::error!("sockserv: {}", defmt::Display2Format(&args)),
        Level::Warn => defmt::warn!("sockserv: {}", defmt::Display2Format(&args)),
        Level::Info => defmt::info!("sockserv: {}", defmt::Display2Format(&args)),
        Level::Debug => defmt::debug!("sockserv: {}", defmt::Display2Format(&args)),
    }
    #[cfg(feature = "std")]
    if level <= Level::Warn {
        crate::report::line(format_args!("sockserv: {args}"));
    }
    let _ = (level, args);
}
