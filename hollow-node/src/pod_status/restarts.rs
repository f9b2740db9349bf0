//! The kubelet's restart back-off: when a container that keeps exiting runs, waits in
//! CrashLoopBackOff and restarts, as a function of the time since it first started.

use std::time::Duration;

/// The crash-loop state at `elapsed` since the container first started: the container crashes
/// right away and the kubelet restarts it after a back-off of `first`, doubling up to 5 min.
/// Returns (restarts so far, current back-off, time until the next restart).
pub fn crash_loop_at(first: Duration, elapsed: Duration) -> (i32, Duration, Duration) {
    let mut restarts = 0i32;
    let mut t = Duration::ZERO;
    let mut backoff = first;
    loop {
        if t + backoff > elapsed {
            return (restarts, backoff, t + backoff - elapsed);
        }
        t += backoff;
        restarts = restarts.saturating_add(1);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if restarts > 100_000 {
            return (restarts, backoff, backoff);
        }
    }
}

/// The kubelet's first restart back-off.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The kubelet's longest restart back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One run of a container, as offsets from its first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub started: Duration,
    pub finished: Duration,
}

/// Where a container that exits `run` after each start is, as the kubelet restarts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarting {
    /// Running since `started`, after `restarts` restarts; `last` is the run before.
    Running {
        restarts: i32,
        started: Duration,
        last: Option<Span>,
    },
    /// `last` exited; the kubelet waits `backoff` before restart number `restarts + 1`.
    BackOff {
        restarts: i32,
        backoff: Duration,
        last: Span,
    },
}

/// How long each run of a container lasts before it exits: the first `count` runs last
/// `first` each, the later ones `then` each (`None`: the first of them never exits). Two
/// lengths, because a sidecar's scripted failing runs come before the runs its probes kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    pub first: Duration,
    pub count: i32,
    pub then: Option<Duration>,
}

impl Runs {
    /// Every run lasts `run`.
    pub fn every(run: Duration) -> Self {
        Runs {
            first: run,
            count: 0,
            then: Some(run),
        }
    }

    /// How long run `k` (0: the first) lasts; `None`: it never exits.
    fn len(&self, k: i32) -> Option<Duration> {
        if k < self.count {
            Some(self.first)
        } else {
            self.then
        }
    }

    /// Whether run `k` is one of the first `count`.
    pub fn is_first(&self, k: i32) -> bool {
        k < self.count
    }

    /// The state at `elapsed` since the first start, and the time until it changes (`None`:
    /// running for good).
    pub fn at(&self, elapsed: Duration) -> (Restarting, Option<Duration>) {
        let mut s = Schedule::new(*self);
        let mut last = None;
        loop {
            let (restarts, started) = (s.restarts, s.start);
            let running = |next| {
                let state = Restarting::Running {
                    restarts,
                    started,
                    last,
                };
                (state, next)
            };
            let Some(run) = self.len(restarts) else {
                return running(None);
            };
            let end = started.saturating_add(run);
            if elapsed < end || restarts >= MAX_RUNS {
                return running(Some(end.saturating_sub(elapsed)));
            }
            let (span, wait) = s.exit_after(run);
            if elapsed < s.start {
                let state = Restarting::BackOff {
                    restarts,
                    backoff: wait,
                    last: span,
                };
                return (state, Some(s.start - elapsed));
            }
            last = Some(span);
        }
    }

    /// When the run after `restarts` restarts starts, counted from the first start (saturating
    /// at the end of a run that never exits).
    pub fn start_of(&self, restarts: i32) -> Duration {
        let mut s = Schedule::new(*self);
        while s.restarts < restarts.min(MAX_RUNS) {
            if s.exit().is_none() {
                break;
            }
        }
        s.start
    }
}

/// The kubelet's restarts (`kuberuntime` `doBackOff` with `flowcontrol.Backoff`), one run at a
/// time: the first exit restarts at once and starts a back-off of 10 s; each later exit waits
/// the back-off, then doubles it up to 5 min; an exit more than 10 min after the previous
/// back-off update (a long run) finds the back-off expired and restarts at once again.
struct Schedule {
    runs: Runs,
    start: Duration,
    restarts: i32,
    /// The back-off entry: current back-off and when it was last updated (an exit).
    entry: Option<(Duration, Duration)>,
}

impl Schedule {
    fn new(runs: Runs) -> Self {
        Schedule {
            runs,
            start: Duration::ZERO,
            restarts: 0,
            entry: None,
        }
    }

    /// The current run's exit and the wait before the next start; advances to that start.
    /// `None`: the current run never exits.
    fn exit(&mut self) -> Option<(Span, Duration)> {
        let run = self.runs.len(self.restarts)?;
        Some(self.exit_after(run))
    }

    /// [`Schedule::exit`] of a current run that lasts `run`.
    fn exit_after(&mut self, run: Duration) -> (Span, Duration) {
        let finished = self.start.saturating_add(run);
        let expiry = MAX_BACKOFF * 2;
        let (wait, entry) = match self.entry {
            Some((b, updated)) if finished.saturating_sub(updated) <= expiry => {
                (b, ((b * 2).min(MAX_BACKOFF), finished))
            }
            _ => (Duration::ZERO, (INITIAL_BACKOFF, finished)),
        };
        let span = Span {
            started: self.start,
            finished,
        };
        self.entry = Some(entry);
        self.start = finished.saturating_add(wait);
        self.restarts = self.restarts.saturating_add(1);
        (span, wait)
    }
}

/// Guards the schedule's loops: with the back-off at least 10 s from the second exit on, a
/// pod would need years of restarts to reach it.
const MAX_RUNS: i32 = 10_000_000;

/// When the run after `restarts` restarts starts, counted from the first start, for a
/// container whose every run lasts `run`.
pub fn start_of(run: Duration, restarts: i32) -> Duration {
    Runs::every(run).start_of(restarts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// The state of a container whose every run lasts `run`, which always changes.
    fn restarting_at(run: Duration, elapsed: Duration) -> (Restarting, Duration) {
        let (state, next) = Runs::every(run).at(elapsed);
        (state, next.unwrap_or(Duration::MAX))
    }

    fn span(started: u64, finished: u64) -> Span {
        Span {
            started: s(started),
            finished: s(finished),
        }
    }

    #[test]
    fn restart_schedule() {
        use Restarting::{BackOff, Running};
        let run = |restarts, started, last| Running {
            restarts,
            started: s(started),
            last,
        };
        let back = |restarts, backoff, last| BackOff {
            restarts,
            backoff: s(backoff),
            last,
        };
        // (name, run length, elapsed, state, time until it changes)
        let cases = [
            ("first run", 5, 0, run(0, 0, None), 5),
            ("first run ends", 5, 4, run(0, 0, None), 1),
            (
                "first exit restarts at once",
                5,
                5,
                run(1, 5, Some(span(0, 5))),
                5,
            ),
            (
                "second exit backs off 10 s",
                5,
                10,
                back(1, 10, span(5, 10)),
                10,
            ),
            (
                "restarted after 10 s",
                5,
                20,
                run(2, 20, Some(span(5, 10))),
                5,
            ),
            (
                "third exit backs off 20 s",
                5,
                25,
                back(2, 20, span(20, 25)),
                20,
            ),
            ("then 40 s", 5, 50, back(3, 40, span(45, 50)), 40),
            // exits at 5, 10, 25, 50, 95, 180, 345, 650 (waits 0,10,20,40,80,160,300)
            ("capped at 5 min", 5, 345, back(6, 300, span(340, 345)), 300),
            ("still capped", 5, 650, back(7, 300, span(645, 650)), 300),
            // A 700 s run: each exit is more than 10 min after the previous one.
            (
                "long runs restart at once",
                700,
                1400,
                run(2, 1400, Some(span(700, 1400))),
                700,
            ),
            ("instant exits", 0, 0, back(1, 10, span(0, 0)), 10),
        ];
        for (name, len, elapsed, want, next) in cases {
            assert_eq!(restarting_at(s(len), s(elapsed)), (want, s(next)), "{name}");
        }
    }

    #[test]
    fn back_off_resets_after_ten_minutes() {
        // 400 s runs: exit 1 at 400 (restart at once), exit 2 at 800, 400 s after the last
        // back-off update: waits 10 s; exit 3 at 1210, 410 s after: waits 20 s.
        let (state, _) = restarting_at(s(400), s(1215));
        assert_eq!(
            state,
            Restarting::BackOff {
                restarts: 2,
                backoff: s(20),
                last: span(810, 1210)
            }
        );
        // 590 s runs: exit 2 at 1180 waits 10 s; exit 3 at 1780 is 600 s after: not expired
        // (the kubelet's test is strictly more than 10 min), waits 20 s.
        let (state, _) = restarting_at(s(590), s(1781));
        assert!(
            matches!(state, Restarting::BackOff { backoff, .. } if backoff == s(20)),
            "{state:?}"
        );
        // 600 s runs: exit 3 at 1810 is 610 s after exit 2: expired, restarts at once.
        let (state, _) = restarting_at(s(600), s(1811));
        assert!(
            matches!(state, Restarting::Running { restarts: 3, .. }),
            "{state:?}"
        );
    }

    proptest::proptest! {
        #[test]
        fn schedule_invariants(run in 0u64..900, elapsed in 0u64..20_000, later in 0u64..2_000) {
            let (state, next) = restarting_at(s(run), s(elapsed));
            let (after, _) = restarting_at(s(run), s(elapsed + later));
            let restarts = |r: Restarting| match r {
                Restarting::Running { restarts, .. } | Restarting::BackOff { restarts, .. } => restarts,
            };
            proptest::prop_assert!(restarts(after) >= restarts(state), "{state:?} then {after:?}");
            match state {
                Restarting::Running { started, last, .. } => {
                    proptest::prop_assert!(started <= s(elapsed) && s(elapsed) < started + s(run) || run == 0);
                    proptest::prop_assert_eq!(next, (started + s(run)).saturating_sub(s(elapsed)));
                    if let Some(l) = last {
                        proptest::prop_assert!(l.finished <= started);
                    }
                }
                Restarting::BackOff { backoff, last, .. } => {
                    proptest::prop_assert!(backoff >= INITIAL_BACKOFF && backoff <= MAX_BACKOFF);
                    proptest::prop_assert!(last.finished <= s(elapsed));
                    proptest::prop_assert_eq!(next, last.finished + backoff - s(elapsed));
                    proptest::prop_assert!(next > Duration::ZERO);
                }
            }
        }
    }

    #[test]
    fn start_of_matches_the_schedule() {
        for len in [0, 1, 5, 290, 600, 700] {
            for elapsed in (0..5000).step_by(7) {
                let (state, _) = restarting_at(s(len), s(elapsed));
                if let Restarting::Running {
                    restarts, started, ..
                } = state
                {
                    assert_eq!(
                        start_of(s(len), restarts),
                        started,
                        "run {len} at {elapsed}"
                    );
                }
            }
        }
    }
}
