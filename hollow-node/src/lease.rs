//! Lease timing as a kubelet does it, as pure functions: a renewal every `renew_interval`
//! (10 s) for a lease of `duration` (40 s), the first renewals of many nodes spread evenly over
//! one interval, each later one jittered a little so they never fall back into bursts, and a
//! failed renewal retried with capped backoff (honouring the server's Retry-After) but never
//! under one second, and never after the lease would expire while it still can be saved.

use std::time::Duration;

use crate::retry::Backoff;

pub mod proto;

/// How renewals are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LeaseEncoding {
    /// A protobuf PUT with the last resourceVersion, as the kubelet renews (a JSON merge patch
    /// when that version is not known yet, or was overtaken).
    #[default]
    Protobuf,
    /// A JSON merge patch every time.
    Json,
}

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

    /// Delay until the next renewal after a successful one. `sample` is a uniform random
    /// number in [0, 1) (injected so tests are deterministic).
    pub fn next_delay(&self, sample: f64) -> Duration {
        let sample = if sample.is_finite() { sample } else { 0.5 };
        let spread = 1.0 + self.jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        self.renew_interval.mul_f64(spread)
    }

    /// Delay until the next renewal after one whose renewTime was stamped `since_stamp` ago
    /// has landed: the next renewTime falls one (jittered) interval after the last one, not
    /// after its answer, so a slow apiserver's answer time is not added to every Lease's age
    /// (renewals take 0.7 s on average, 5-10 s at the p99, in the 5,000-node storm). At once
    /// when the answer came later than that.
    pub fn next_delay_after(&self, since_stamp: Duration, sample: f64) -> Duration {
        self.next_delay(sample).saturating_sub(since_stamp)
    }

    /// Delay after `failures` failed renewals in a row, `since_success` after the last good
    /// one: backoff from [`MIN_RETRY`] up to one renew interval, at least the server's
    /// `retry_after`, but no later than the lease's expiry while that is still ahead (the
    /// last chance to keep the node Ready), and never under [`MIN_RETRY`].
    pub fn retry_delay(
        &self,
        failures: u32,
        since_success: Duration,
        retry_after: Option<Duration>,
        sample: f64,
    ) -> Duration {
        let backoff = Backoff {
            base: MIN_RETRY,
            cap: self.renew_interval,
        };
        let wait = backoff.delay(failures, retry_after, sample);
        let to_expiry = self.duration.saturating_sub(since_success);
        let wait = if to_expiry.is_zero() {
            wait
        } else {
            wait.min(to_expiry)
        };
        wait.max(MIN_RETRY)
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
            ("renewed, mid jitter", t.next_delay(0.5), s(10)),
            ("renewed, low jitter", t.next_delay(0.0), ms(9600)),
            ("renewed, high jitter", t.next_delay(1.0), ms(10400)),
            ("renewed, NaN sample", t.next_delay(f64::NAN), s(10)),
            (
                "a slow answer does not push the next renewal back",
                t.next_delay_after(ms(2500), 0.5),
                ms(7500),
            ),
            (
                "an answer later than an interval: renewed at once",
                t.next_delay_after(s(12), 1.0),
                s(0),
            ),
            (
                "first failure retries within a second",
                t.retry_delay(1, s(10), None, 1.0),
                s(1),
            ),
            (
                "third failure backs off",
                t.retry_delay(3, s(20), None, 1.0),
                s(4),
            ),
            (
                "backoff capped at the renew interval",
                t.retry_delay(9, s(1), None, 1.0),
                s(10),
            ),
            (
                "backoff never past the expiry ahead",
                t.retry_delay(5, s(35), None, 1.0),
                s(5),
            ),
            (
                "Retry-After honoured",
                t.retry_delay(1, s(10), Some(s(6)), 0.0),
                s(6),
            ),
            (
                "Retry-After cut at the expiry ahead",
                t.retry_delay(1, s(30), Some(s(20)), 0.0),
                s(10),
            ),
            (
                "near expiry floors at 1s",
                t.retry_delay(4, ms(39_500), None, 0.5),
                s(1),
            ),
            (
                "expired: plain backoff",
                t.retry_delay(5, s(60), None, 1.0),
                s(10),
            ),
        ];
        for (name, got, want) in cases {
            let diff = got.abs_diff(*want);
            assert!(diff < ms(1), "{name}: got {got:?}, want {want:?}");
        }
    }

    proptest::proptest! {
        /// Whatever the answer time and sample, the next renewal is due one jittered
        /// interval after the last one was stamped, or at once when that has passed.
        #[test]
        fn next_renewal_never_later_than_an_interval_after_the_stamp(
            since_ms in 0u64..=u64::from(u32::MAX),
            sample in proptest::num::f64::ANY,
        ) {
            let t = LeaseTiming::default();
            let since = Duration::from_millis(since_ms);
            let next = t.next_delay_after(since, sample);
            proptest::prop_assert_eq!(since + next, since.max(t.next_delay(sample)));
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
