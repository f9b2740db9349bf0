//! When a node rewrites a NodeStatus that has not changed. A kubelet rewrites it every
//! `nodeStatusReportFrequency` (5 min) from its own start, so a real cluster's rewrites are
//! spread over the period. Hollow nodes register together: counted from registration, all of a
//! process's nodes would rewrite within the same seconds every period, a burst of node updates
//! that every node informer (scheduler, controllers) must take at once. Each node's first
//! rewrite is therefore placed at its own share of the period, and later ones one period apart.

use std::time::Duration;

/// How long after its registration node `index` of `count` first rewrites an unchanged status:
/// `(index + 1) / count` of `period`, so the rewrites of `count` nodes registered together are
/// evenly spread and none waits longer than a kubelet would.
pub fn first_refresh(index: usize, count: usize, period: Duration) -> Duration {
    let count = count.max(1);
    let share = (index.min(count - 1) + 1) as f64 / count as f64;
    period.mul_f64(share)
}

/// How long after a status write the next unchanged rewrite is due: the first write of a
/// process (its registration) gets the node's share, every later one the whole period.
pub fn next_refresh(first_write: bool, index: usize, count: usize, period: Duration) -> Duration {
    if first_write {
        first_refresh(index, count, period)
    } else {
        period
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: Duration = Duration::from_secs(300);

    #[test]
    fn shares_of_the_period() {
        for (index, count, want) in [
            (0, 1, P),
            (0, 0, P),
            (0, 2, Duration::from_secs(150)),
            (1, 2, P),
            (0, 2000, Duration::from_millis(150)),
            (999, 2000, Duration::from_secs(150)),
            (1999, 2000, P),
            // An index past the count (not expected) waits no longer than a period.
            (5000, 2000, P),
        ] {
            assert_eq!(first_refresh(index, count, P), want, "{index} of {count}");
        }
    }

    #[test]
    fn only_the_first_write_takes_a_share() {
        assert_eq!(next_refresh(true, 0, 4, P), Duration::from_secs(75));
        assert_eq!(next_refresh(false, 0, 4, P), P);
    }

    proptest! {
        #[test]
        fn never_later_than_a_period_and_ordered(count in 1usize..10_000, a in 0usize..10_000, b in 0usize..10_000, secs in 0u64..100_000) {
            let period = Duration::from_secs(secs);
            let (lo, hi) = (a.min(b), a.max(b));
            let (t_lo, t_hi) = (first_refresh(lo, count, period), first_refresh(hi, count, period));
            prop_assert!(t_hi <= period);
            prop_assert!(t_lo <= t_hi);
        }

        #[test]
        fn spread_evenly(count in 1usize..5_000, secs in 1u64..3_600) {
            // Within any tenth of the period, at most a tenth of the nodes rewrite (give or take
            // rounding at the edges).
            let period = Duration::from_secs(secs);
            let mut per_tenth = [0usize; 10];
            for i in 0..count {
                let t = first_refresh(i, count, period).as_secs_f64() / period.as_secs_f64();
                let k = ((t * 10.0).ceil() as usize).clamp(1, 10) - 1;
                per_tenth[k] += 1;
            }
            for n in per_tenth {
                prop_assert!(n <= count / 10 + 2, "{per_tenth:?}");
            }
        }
    }
}
