//! Cumulative CPU time, as a kubelet's `usageCoreNanoSeconds` and `*_cpu_usage_seconds_total`
//! report it: the integral of the usage (`mock-kind.io/usage`, changeable at run time) since
//! the container (or node) started. A usage change starts a new segment from the total reached,
//! so the counter never goes back; a restarted container starts again from zero, as a real
//! one's cgroup does. Readers divide the growth by the time between two samples, so the rate
//! they see is exactly the usage. Pure.

use jiff::Timestamp;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// One container's (or node's) CPU counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuCounter {
    /// When the instance started: a different start is another instance.
    started: Timestamp,
    /// Start of the current segment, at the current rate.
    anchor: Timestamp,
    /// Core-nanoseconds used before `anchor`.
    before: u64,
    /// Nanocores used since `anchor`.
    nanocores: u64,
}

impl CpuCounter {
    /// A counter from zero at `started`, using `nanocores` since.
    pub fn new(started: Timestamp, nanocores: u64) -> Self {
        CpuCounter {
            started,
            anchor: started,
            before: 0,
            nanocores,
        }
    }

    /// The counter after a look at `now` found the instance started at `started` using
    /// `nanocores`: the same counter when nothing changed, a new segment when only the usage
    /// did, a new counter for a new instance.
    pub fn next(
        prev: Option<&CpuCounter>,
        started: Timestamp,
        nanocores: u64,
        now: Timestamp,
    ) -> Self {
        match prev {
            Some(p) if p.started == started && p.nanocores == nanocores => *p,
            Some(p) if p.started == started => {
                // Never anchor before the current segment: a clock that stepped back would
                // otherwise count the old rate twice.
                let at = now.max(p.anchor);
                CpuCounter {
                    started,
                    anchor: at,
                    before: p.at(at),
                    nanocores,
                }
            }
            _ => CpuCounter::new(started, nanocores),
        }
    }

    /// The rate now, in nanocores.
    pub fn nanocores(&self) -> u64 {
        self.nanocores
    }

    pub fn started(&self) -> Timestamp {
        self.started
    }

    /// Core-nanoseconds used from the start until `now` (a `now` before the segment counts
    /// nothing of it); saturates at `u64::MAX`.
    pub fn at(&self, now: Timestamp) -> u64 {
        let elapsed = now
            .as_nanosecond()
            .saturating_sub(self.anchor.as_nanosecond());
        let elapsed = u128::try_from(elapsed).unwrap_or(0);
        let segment = u128::from(self.nanocores).saturating_mul(elapsed) / NANOS_PER_SECOND;
        let total = u128::from(self.before).saturating_add(segment);
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    #[test]
    fn counters() {
        let half = 500_000_000; // 500m
        let start = t(1000);
        let running = CpuCounter::new(start, half);
        let raised = CpuCounter::next(Some(&running), start, 2 * half, t(1010));
        type Case = (&'static str, CpuCounter, Timestamp, u64);
        let cases: [Case; 7] = [
            ("at its start: zero", running, t(1000), 0),
            (
                "500m for 10 s: 5 core-seconds",
                running,
                t(1010),
                5_000_000_000,
            ),
            ("before its start: zero", running, t(900), 0),
            (
                "raised to 1 core at 10 s: 5 + 1 × 10",
                raised,
                t(1020),
                15_000_000_000,
            ),
            (
                "the raise keeps what was reached",
                raised,
                t(1010),
                5_000_000_000,
            ),
            (
                "same instance, same usage: unchanged",
                CpuCounter::next(Some(&running), start, half, t(1500)),
                t(1010),
                5_000_000_000,
            ),
            (
                "a restart (new start time) begins at zero",
                CpuCounter::next(Some(&raised), t(1030), half, t(1030)),
                t(1032),
                1_000_000_000,
            ),
        ];
        for (name, counter, now, want) in cases {
            assert_eq!(counter.at(now), want, "{name}");
        }
        let huge = CpuCounter::new(t(0), u64::MAX);
        assert_eq!(huge.at(t(4_000_000_000)), u64::MAX, "saturates");
    }

    proptest! {
        /// Whatever the usage does, the counter of one instance never goes back, and between two
        /// looks without a change it grows by exactly usage × time.
        #[test]
        fn monotonic_and_exact_between_changes(
            steps in proptest::collection::vec((0u64..10_000, 0u64..crate::usage::MAX_CPU_NANOS), 1..20),
        ) {
            let start = t(1_700_000_000);
            let mut c = CpuCounter::new(start, 0);
            let mut now = start;
            let mut last = 0;
            for (ms, nanocores) in steps {
                let later = now
                    .checked_add(jiff::SignedDuration::from_millis(ms as i64))
                    .expect("time");
                prop_assert!(c.at(later) >= last);
                let grown = c.at(later) - c.at(now);
                let want = u128::from(c.nanocores()) * u128::from(ms) * 1_000_000 / NANOS_PER_SECOND;
                prop_assert!(u128::from(grown).abs_diff(want) <= 1, "grown {grown}, want {want}");
                last = c.at(later);
                now = later;
                c = CpuCounter::next(Some(&c), start, nanocores, now);
                prop_assert_eq!(c.at(now), last);
            }
        }
    }
}
