//! The kubelet's restart back-off: when a container that keeps exiting runs, waits in
//! CrashLoopBackOff and restarts, as a function of the time since it first started.

use std::time::Duration;

/// The crash-loop state at `elapsed` since the container first started: the container crashes
/// right away and the kubelet restarts it after a back-off of `first`, doubling up to 5 min.
/// Returns (restarts so far, current back-off, time until the next restart).
pub fn crash_loop_at(first: Duration, elapsed: Duration) -> (i32, Duration, Duration) {
    let cap = Duration::from_secs(300);
    let mut restarts = 0i32;
    let mut t = Duration::ZERO;
    let mut backoff = first;
    loop {
        if t + backoff > elapsed {
            return (restarts, backoff, t + backoff - elapsed);
        }
        t += backoff;
        restarts = restarts.saturating_add(1);
        backoff = (backoff * 2).min(cap);
        if restarts > 100_000 {
            return (restarts, backoff, backoff);
        }
    }
}
