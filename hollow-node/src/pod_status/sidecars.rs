//! Native sidecars (KEP-753): init containers with `restartPolicy: Always`. The kubelet starts
//! them in order with the other init containers, but starts the next one as soon as a sidecar
//! is *started* (at once, or once its startupProbe passed); a sidecar then runs on for the
//! pod's life, reported in `initContainerStatuses` as Running with `started: true` and `ready`
//! per its readinessProbe, counts for the pod's ContainersReady and Ready, is restarted with
//! the usual back-off when it exits whatever the pod's restartPolicy, and is stopped once the
//! main containers of a pod that does not restart them have ended.
//!
//! Kubernetes 1.20 has no container `restartPolicy` (its apiserver drops the field on create);
//! k8s-openapi's `earliest` (1.33) types keep it, so a pod from a newer apiserver says here
//! which init containers are sidecars, and one from 1.20 never does.

use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::containers::{Exit, Run};
use super::phases::{back_off_event, restart_at};
use super::probes::{Probes, failure_message};
use super::restarts::{Restarting, Span, restarting_at, start_of};
use super::{EventKind, PodEvent, add, time_diff};
use crate::annotations::init::InitScript;
use crate::node_status::seconds;

/// Whether init container `c` is a native sidecar (`restartPolicy: Always`, the only value the
/// API allows on a container).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// How long after its first start a sidecar is first *started* (its startupProbe passed
/// `startup` after a start; zero without one), when its first `script.failures` runs exit
/// after `script.run` each: a run that ends before its startup probe passes never starts, so
/// the next init container waits for the first run that lasts long enough, or the last (which
/// runs on). `None` when the startup probe never passes.
pub fn started_after(script: &InitScript, startup: Option<Duration>) -> Option<Duration> {
    let up = startup?;
    if script.failures == 0 || script.run > up {
        return Some(up);
    }
    let failures = i32::try_from(script.failures).unwrap_or(i32::MAX);
    Some(start_of(script.run, failures).saturating_add(up))
}

/// Where a sidecar is at `elapsed` after its first start, as offsets from that start: its
/// first `script.failures` runs exit 1 after `script.run` each and are restarted with the
/// kubelet's back-off; the run after them never ends.
pub fn life_at(script: &InitScript, elapsed: Duration) -> (Restarting, Option<Duration>) {
    let failures = i32::try_from(script.failures).unwrap_or(i32::MAX);
    let last_start = start_of(script.run, failures);
    if failures == 0 || elapsed >= last_start {
        let last = (failures > 0).then(|| {
            let started = start_of(script.run, failures - 1);
            Span {
                started,
                finished: started.saturating_add(script.run),
            }
        });
        let state = Restarting::Running {
            restarts: failures,
            started: last_start,
            last,
        };
        return (state, None);
    }
    let (state, next) = restarting_at(script.run, elapsed);
    (state, Some(next))
}

/// A sidecar's run at the moment being evaluated, and what comes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarRun {
    pub run: Run,
    /// Time until it changes (an exit, a restart, a probe result).
    pub next: Option<Duration>,
    pub events: Vec<PodEvent>,
}

/// What a sidecar needs besides the clock.
pub struct Sidecar<'a> {
    pub container: &'a Container,
    pub script: InitScript,
    pub probes: &'a Probes,
    /// `neverReady`: it never passes readiness.
    pub never_ready: bool,
    /// The pod's IP, for the probes' failure messages.
    pub ip: &'a str,
}

impl Sidecar<'_> {
    /// Its run at `now`, first started at `start`.
    pub fn run_at(&self, start: jiff::Timestamp, now: jiff::Timestamp) -> SidecarRun {
        let elapsed = time_diff(now, start);
        let mut events = Vec::new();
        let (restarting, next) = life_at(&self.script, elapsed);
        let (mut run, mut next) = match (restarting, next) {
            // Past its scripted failures: it runs on.
            (
                Restarting::Running {
                    restarts,
                    started,
                    last,
                },
                None,
            ) => {
                let at = |d: Duration| Time(seconds(add(start, d)));
                let run = Run::Restarting {
                    restarts,
                    running_since: Some(at(started)),
                    ready: true,
                    started: true,
                    backoff: Duration::ZERO,
                    last: last.map(|s| Exit {
                        reason: "Error",
                        exit_code: 1,
                        started: at(s.started),
                        finished: at(s.finished),
                    }),
                };
                (run, None)
            }
            // Still in its failing runs: the kubelet's restarts, as for any container.
            _ => {
                let r = restart_at(start, now, self.script.run, ("Error", 1), true);
                if r.backing_off {
                    events.push(back_off_event());
                }
                (r.run, Some(r.next))
            }
        };
        if let Run::Restarting {
            running_since: Some(since),
            ready,
            started,
            ..
        } = &mut run
        {
            let offset = time_diff(now, since.0);
            let view = self.probes.at(offset);
            *started = view.started;
            *ready = view.ready && !self.never_ready;
            if let Some(n) = view.next {
                let n = n.saturating_sub(offset);
                next = Some(next.map_or(n, |m| m.min(n)));
            }
            if view.readiness_failing {
                events.push(PodEvent {
                    kind: EventKind::ReadinessFailed,
                    message: failure_message(
                        "Readiness",
                        self.container.readiness_probe.as_ref(),
                        self.ip,
                    ),
                });
            }
        }
        SidecarRun { run, next, events }
    }
}

/// The sidecars among `runs` (by init container index) stopped at `at`, as the kubelet stops
/// them once the pod's main containers have ended: each exits 0 on its SIGTERM (`Completed`),
/// one after another from the last (at the status's one-second resolution they share
/// `finishedAt`). A sidecar waiting out a back-off keeps its last exit.
pub fn stop(runs: &mut [Run], inits: &[Container], at: &Time) {
    for (run, c) in runs.iter_mut().zip(inits).rev() {
        if !is_sidecar(c) {
            continue;
        }
        let Run::Restarting {
            restarts,
            running_since,
            last,
            ..
        } = run
        else {
            continue;
        };
        *run = match running_since {
            Some(since) => Run::Exited {
                exit: Exit {
                    reason: "Completed",
                    exit_code: 0,
                    started: since.clone(),
                    finished: at.clone(),
                },
                restarts: *restarts,
                last: last.take(),
            },
            None => match last.take() {
                Some(exit) => Run::Exited {
                    exit,
                    restarts: *restarts,
                    last: None,
                },
                None => continue,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn script(run: u64, failures: u32) -> InitScript {
        InitScript {
            run: s(run),
            failures,
        }
    }

    #[test]
    fn started_after_cases() {
        // (name, script, startup probe passes after, started after)
        let cases = [
            ("no startup probe", script(0, 0), Some(0), Some(0)),
            ("startup probe at 7 s", script(0, 0), Some(7), Some(7)),
            ("never started", script(0, 0), None, None),
            (
                "failing runs outlast the probe",
                script(10, 2),
                Some(3),
                Some(3),
            ),
            // Runs of 2 s at 0 and 2 (restarted at once), the next at 14 after 10 s back-off.
            ("failing runs too short", script(2, 2), Some(3), Some(17)),
            ("short runs, no probe", script(2, 2), Some(0), Some(0)),
        ];
        for (name, sc, startup, want) in cases {
            assert_eq!(started_after(&sc, startup.map(s)), want.map(s), "{name}");
        }
    }

    #[test]
    fn life() {
        let running = |restarts, started, last: Option<(u64, u64)>| Restarting::Running {
            restarts,
            started: s(started),
            last: last.map(|(a, b)| Span {
                started: s(a),
                finished: s(b),
            }),
        };
        // (name, script, elapsed, state, next change)
        let cases = [
            (
                "runs for good",
                script(5, 0),
                1_000,
                running(0, 0, None),
                None,
            ),
            ("first run", script(5, 2), 3, running(0, 0, None), Some(2)),
            (
                "restarted at once",
                script(5, 2),
                5,
                running(1, 5, Some((0, 5))),
                Some(5),
            ),
            (
                "backs off 10 s",
                script(5, 2),
                12,
                Restarting::BackOff {
                    restarts: 1,
                    backoff: s(10),
                    last: Span {
                        started: s(5),
                        finished: s(10),
                    },
                },
                Some(8),
            ),
            (
                "the third run never ends",
                script(5, 2),
                5_000,
                running(2, 20, Some((5, 10))),
                None,
            ),
        ];
        for (name, sc, elapsed, state, next) in cases {
            assert_eq!(life_at(&sc, s(elapsed)), (state, next.map(s)), "{name}");
        }
    }

    proptest! {
        #[test]
        fn restarts_stop_at_the_failures(
            run in 0u64..60,
            failures in 0u32..6,
            elapsed in 0u64..100_000,
        ) {
            let sc = script(run, failures);
            let (state, next) = life_at(&sc, s(elapsed));
            let restarts = match state {
                Restarting::Running { restarts, .. } | Restarting::BackOff { restarts, .. } => {
                    restarts
                }
            };
            prop_assert!(restarts <= i32::try_from(failures).unwrap_or(i32::MAX));
            // Running for good exactly when every scripted failure is behind it.
            let settled = matches!(state, Restarting::Running { restarts: r, .. }
                if r == i32::try_from(failures).unwrap_or(i32::MAX));
            prop_assert_eq!(next.is_none(), settled, "{:?}", state);
        }

        #[test]
        fn started_after_is_a_started_moment(
            run in 0u64..60,
            failures in 0u32..6,
            up in 0u64..60,
        ) {
            let sc = script(run, failures);
            let Some(at) = started_after(&sc, Some(s(up))) else {
                return Err(TestCaseError::fail("a passing probe starts the sidecar"));
            };
            // At that moment the sidecar runs, and has run at least `up` in this run.
            let (state, _) = life_at(&sc, at);
            let Restarting::Running { started, .. } = state else {
                return Err(TestCaseError::fail(format!("{state:?} at {at:?}")));
            };
            prop_assert!(at.saturating_sub(started) >= s(up), "{state:?} at {at:?}");
            prop_assert!(started_after(&sc, None).is_none());
        }
    }

    #[test]
    fn stop_ends_running_sidecars_only() {
        let t = |sec| Time(jiff::Timestamp::from_second(sec).expect("ts"));
        let sidecar = Container {
            name: "proxy".into(),
            restart_policy: Some("Always".into()),
            ..Default::default()
        };
        let init = Container {
            name: "setup".into(),
            ..Default::default()
        };
        let done = Run::Exited {
            exit: Exit {
                reason: "Completed",
                exit_code: 0,
                started: t(0),
                finished: t(1),
            },
            restarts: 0,
            last: None,
        };
        let running = Run::Restarting {
            restarts: 1,
            running_since: Some(t(5)),
            ready: true,
            started: true,
            backoff: Duration::ZERO,
            last: None,
        };
        let mut runs = vec![done.clone(), running];
        stop(&mut runs, &[init, sidecar], &t(9));
        assert_eq!(
            runs[0], done,
            "an init container that completed is left alone"
        );
        assert_eq!(
            runs[1],
            Run::Exited {
                exit: Exit {
                    reason: "Completed",
                    exit_code: 0,
                    started: t(5),
                    finished: t(9),
                },
                restarts: 1,
                last: None,
            },
            "the sidecar exits 0 when stopped"
        );
    }
}
