//! Node fault schedules in the manner of cluster-api-provider-kubemark: healthy for
//! `unhealthy_after`, then unhealthy for `unhealthy_duration` (forever when zero), and with
//! `flapping` the cycle repeats: healthy for `healthy_duration`, unhealthy again, and so on.

use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultSchedule {
    /// Zero: the schedule never makes a node unhealthy.
    pub unhealthy_after: Duration,
    pub unhealthy_duration: Duration,
    pub healthy_duration: Duration,
    pub flapping: bool,
}

/// Health at `elapsed` since the node was registered, and the time until it next changes.
pub fn health_at(s: &FaultSchedule, elapsed: Duration) -> (bool, Option<Duration>) {
    if s.unhealthy_after.is_zero() {
        return (true, None);
    }
    if elapsed < s.unhealthy_after {
        return (true, Some(s.unhealthy_after - elapsed));
    }
    let since = elapsed - s.unhealthy_after;
    if s.unhealthy_duration.is_zero() {
        return (false, None);
    }
    if !s.flapping || s.healthy_duration.is_zero() {
        if since < s.unhealthy_duration {
            return (false, Some(s.unhealthy_duration - since));
        }
        return (true, None);
    }
    let period = s.unhealthy_duration + s.healthy_duration;
    let phase = Duration::from_nanos((since.as_nanos() % period.as_nanos()) as u64);
    if phase < s.unhealthy_duration {
        (false, Some(s.unhealthy_duration - phase))
    } else {
        (true, Some(period - phase))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let s = Duration::from_secs;
        let once = FaultSchedule {
            unhealthy_after: s(10),
            unhealthy_duration: s(5),
            ..Default::default()
        };
        let forever = FaultSchedule {
            unhealthy_after: s(10),
            ..Default::default()
        };
        let flap = FaultSchedule {
            unhealthy_after: s(10),
            unhealthy_duration: s(5),
            healthy_duration: s(20),
            flapping: true,
        };
        type Case = (&'static str, FaultSchedule, u64, (bool, Option<Duration>));
        let cases: &[Case] = &[
            ("no faults", FaultSchedule::default(), 100, (true, None)),
            ("before fault", once, 3, (true, Some(s(7)))),
            ("during fault", once, 12, (false, Some(s(3)))),
            ("after single fault", once, 15, (true, None)),
            ("forever", forever, 1000, (false, None)),
            ("flap first fault", flap, 10, (false, Some(s(5)))),
            ("flap healthy", flap, 16, (true, Some(s(19)))),
            ("flap second fault", flap, 36, (false, Some(s(4)))),
        ];
        for (name, sched, at, want) in cases {
            assert_eq!(health_at(sched, s(*at)), *want, "{name}");
        }
    }
}
