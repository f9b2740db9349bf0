//! Lease timing as a kubelet does it, as pure functions: a renewal every `renew_interval`
//! (10 s) for a lease of `duration` (40 s), the first renewals of many nodes spread evenly over
//! one interval, each later one jittered a little so they never fall back into bursts, and a
//! failed renewal retried sooner but never under one second.

use std::time::Duration;

pub const MIN_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseTiming {
    pub duration: Duration,
    pub renew_interval: Duration,
    /// Fraction of the interval a renewal may move, either way (0.04 = ±4 %).
    pub jitter: f64,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(40),
            renew_interval: Duration::from_secs(10),
            jitter: 0.04,
        }
    }
}

impl LeaseTiming {
    /// Delay before node `index` of `count` first renews: evenly spread over one interval.
    pub fn first_delay(&self, index: usize, count: usize) -> Duration {
        if count <= 1 {
            return Duration::ZERO;
        }
        self.renew_interval.mul_f64(index as f64 / count as f64)
    }

    /// Delay until the next renewal. `sample` is a uniform random number in [0, 1) (injected
    /// so tests are deterministic); `since_success` is the age of the last successful renewal.
    pub fn next_delay(&self, renewed: bool, since_success: Duration, sample: f64) -> Duration {
        let spread = 1.0 + self.jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        let interval = self.renew_interval.mul_f64(spread);
        if renewed {
            return interval;
        }
        // Failed: retry at a quarter of the interval, but before the lease expires when
        // that is sooner, and never faster than MIN_RETRY.
        let to_expiry = self.duration.saturating_sub(since_success);
        (interval / 4).min(to_expiry).max(MIN_RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_jitter() {
        let t = LeaseTiming::default();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases: &[(&str, Duration, Duration)] = &[
            ("first node at once", t.first_delay(0, 4), s(0)),
            ("second of four", t.first_delay(1, 4), ms(2500)),
            ("last of four", t.first_delay(3, 4), ms(7500)),
            ("single node", t.first_delay(0, 1), s(0)),
            ("renewed, mid jitter", t.next_delay(true, s(0), 0.5), s(10)),
            (
                "renewed, low jitter",
                t.next_delay(true, s(0), 0.0),
                ms(9600),
            ),
            (
                "renewed, high jitter",
                t.next_delay(true, s(0), 1.0),
                ms(10400),
            ),
            (
                "failed retries at quarter",
                t.next_delay(false, s(5), 0.5),
                ms(2500),
            ),
            ("failed near expiry", t.next_delay(false, s(39), 0.5), s(1)),
            (
                "failed after expiry floors at 1s",
                t.next_delay(false, s(60), 0.5),
                s(1),
            ),
        ];
        for (name, got, want) in cases {
            let diff = got.abs_diff(*want);
            assert!(diff < ms(1), "{name}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn first_delays_never_reach_an_interval() {
        let t = LeaseTiming::default();
        for count in [1usize, 2, 7, 2000] {
            for i in 0..count {
                assert!(t.first_delay(i, count) < t.renew_interval, "{i}/{count}");
            }
        }
    }
}
