//! Tests that need root (a network namespace and a TAP device): skipped
//! with a line saying so for other users, so that `cargo test --workspace`
//! passes for anyone; `.ci/run` sets [`REQUIRE`] so that there, as root,
//! a skip is a failure.

use std::io::Write;

/// Set to `1`, a test that needs root fails instead of skipping.
pub const REQUIRE: &str = "SOCKSERV_REQUIRE_ROOT_TESTS";

/// Whether the test `what` can run: true as root. Otherwise prints
/// `SKIPPED (needs root): WHAT` on stderr (straight to the descriptor,
/// so that libtest's capture does not hide it) and returns false, or
/// panics when [`REQUIRE`] is `1`.
pub fn can_run(what: &str) -> bool {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os(REQUIRE).is_none_or(|v| v != "1"),
        "{what} needs root, and {REQUIRE}=1 forbids skipping it"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED (needs root): {what}");
    false
}
