//! A test hook for crash tests: named points in the pipeline where the
//! process stops itself (SIGSTOP) when `OPTIWATCH_PAUSE_AT` lists the point's
//! name, so a test can `kill -9` it at an exact moment. Compiled in only with
//! the `failpoints` feature, which only the tests turn on (a release build
//! ignores the variable); when the variable is unset, each point costs one
//! cached lookup.

/// Stops the process here if the crash tests asked for it.
#[cfg(feature = "failpoints")]
pub fn pause_at(point: &str) {
    use std::sync::OnceLock;

    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    let points = POINTS.get_or_init(|| {
        std::env::var("OPTIWATCH_PAUSE_AT")
            .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default()
    });
    if points.iter().any(|p| p == point) {
        tracing::debug!(point, "pausing for a crash test");
        // SAFETY: raise(2) with a signal number; no memory is involved.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// Without the `failpoints` feature a point is nothing at all.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn pause_at(_point: &str) {}
