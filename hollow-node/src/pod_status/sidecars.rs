//! Native sidecars (KEP-753): init containers with `restartPolicy: Always`. The kubelet starts
//! them in order with the other init containers, but starts the next one as soon as a sidecar
//! is *started* (at once, or once its startupProbe passed); a sidecar then runs on for the
//! pod's life, reported in `initContainerStatuses` as Running with `started: true` and `ready`
//! per its readinessProbe, counts for the pod's ContainersReady and Ready, is restarted with
//! the usual back-off when it exits or its liveness or startup probe kills it, whatever the
//! pod's restartPolicy, and is stopped once the main containers of a pod that does not restart
//! them have ended.
//!
//! Kubernetes 1.20 has no container `restartPolicy` (its apiserver drops the field on create);
//! k8s-openapi's `earliest` (1.33) types keep it, so a pod from a newer apiserver says here
//! which init containers are sidecars, and one from 1.20 never does.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::containers::{Exit, Run, exited_runs};
use super::phases::{back_off_event, restart_at};
use super::probes::{KILLED, Killing, Probes, failure_message};
use super::restarts::{Runs, start_of};
use super::{EventKind, PodEvent, time_diff};
use crate::annotations::init::InitScript;

/// Whether init container `c` is a native sidecar (`restartPolicy: Always`, the only value the
/// API allows on a container).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// How long after its first start a sidecar is first *started* (its startupProbe passed
/// `startup` after a start; zero without one), when its first `script.failures` runs exit
/// after `script.run` each: a run that ends before its startup probe passes never starts, so
/// the next init container waits for the first run that lasts long enough, or the first run
/// after the script (which runs on, or is killed no sooner than its startup probe passed).
/// `None` when the startup probe never passes.
pub fn started_after(script: &InitScript, startup: Option<Duration>) -> Option<Duration> {
    let up = startup?;
    if script.failures == 0 || script.run > up {
        return Some(up);
    }
    let failures = i32::try_from(script.failures).unwrap_or(i32::MAX);
    Some(start_of(script.run, failures).saturating_add(up))
}

/// How long each run of a sidecar lasts: its first `script.failures` runs exit 1 after
/// `script.run` each; each later run runs on, or is killed `kill` after its start when its
/// liveness or startup probe fails ([`Probes::kill`]).
///
/// The scripted exits come first: a scripted run ends at its scripted exit even if its probes
/// would kill it sooner, and the kills apply from the run after the script on. The annotations
/// say how those runs end, so they win; the probes then govern the run that would otherwise
/// run on, as they do a main container's, and the back-off carries on from the scripted exits
/// (the kubelet keeps one back-off per container, whatever ended the run).
pub fn runs(script: &InitScript, kill: Option<Duration>) -> Runs {
    Runs {
        first: script.run,
        count: i32::try_from(script.failures).unwrap_or(i32::MAX),
        then: kill,
    }
}

/// The reason and exit code of run `k` of a sidecar that runs as `runs`: a scripted failure,
/// or a probe's kill.
fn exit_of(runs: &Runs, k: i32) -> (&'static str, i32) {
    if runs.is_first(k) {
        ("Error", 1)
    } else {
        KILLED
    }
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
    /// Its status as we last wrote it: each kill's Events are recorded once.
    pub prev: Option<&'a ContainerStatus>,
    /// `neverReady`: it never passes readiness.
    pub never_ready: bool,
    /// The pod's IP, for the probes' failure messages.
    pub ip: &'a str,
}

impl Sidecar<'_> {
    /// Its run at `now`, first started at `start`: restarted by the kubelet after each
    /// scripted exit and each kill, whatever the pod's restartPolicy.
    pub fn run_at(&self, start: jiff::Timestamp, now: jiff::Timestamp) -> SidecarRun {
        let kill = self.probes.kill();
        let runs = runs(&self.script, kill.map(|(after, _)| after));
        let r = restart_at(start, now, &runs, |k| exit_of(&runs, k), true);
        let mut events = Vec::new();
        if r.backing_off {
            events.push(back_off_event());
        }
        if let Some((_, why)) = kill {
            let killed = r.exits > 0 && !runs.is_first(r.exits - 1);
            if killed && r.exits > exited_runs(self.prev) {
                events.extend(why.events(self.container, Killing::Sidecar, self.ip));
            }
        }
        let (mut run, mut next) = (r.run, r.next);
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
    use crate::pod_status::restarts::{Restarting, Span};
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

    /// Where a sidecar that runs as `runs(script, kill)` is `elapsed` after its first start.
    fn life_at(
        sc: &InitScript,
        kill: Option<u64>,
        elapsed: Duration,
    ) -> (Restarting, Option<Duration>) {
        runs(sc, kill.map(s)).at(elapsed)
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
        let back_off = |restarts, backoff, (a, b)| Restarting::BackOff {
            restarts,
            backoff: s(backoff),
            last: Span {
                started: s(a),
                finished: s(b),
            },
        };
        // (name, script, killed after, elapsed, state, next change)
        let cases = [
            (
                "runs for good",
                script(5, 0),
                None,
                1_000,
                running(0, 0, None),
                None,
            ),
            (
                "first run",
                script(5, 2),
                None,
                3,
                running(0, 0, None),
                Some(2),
            ),
            (
                "restarted at once",
                script(5, 2),
                None,
                5,
                running(1, 5, Some((0, 5))),
                Some(5),
            ),
            (
                "backs off 10 s",
                script(5, 2),
                None,
                12,
                back_off(1, 10, (5, 10)),
                Some(8),
            ),
            (
                "the third run never ends",
                script(5, 2),
                None,
                5_000,
                running(2, 20, Some((5, 10))),
                None,
            ),
            // Killed 25 s into each run: at 25 (restarted at once), at 50 (back-off 10 s).
            (
                "killed, restarted at once",
                script(0, 0),
                Some(25),
                30,
                running(1, 25, Some((0, 25))),
                Some(20),
            ),
            (
                "killed again, backs off",
                script(0, 0),
                Some(25),
                55,
                back_off(1, 10, (25, 50)),
                Some(5),
            ),
            // The script first: exits at 5 and 10, the run from 20 is killed at 50 and waits
            // the doubled back-off the scripted exits left.
            (
                "the run after the script is killed",
                script(5, 2),
                Some(30),
                55,
                back_off(2, 20, (20, 50)),
                Some(15),
            ),
            (
                "a kill sooner than a scripted exit waits for it",
                script(5, 2),
                Some(3),
                4,
                running(0, 0, None),
                Some(1),
            ),
        ];
        for (name, sc, kill, elapsed, state, next) in cases {
            assert_eq!(
                life_at(&sc, kill, s(elapsed)),
                (state, next.map(s)),
                "{name}"
            );
        }
    }

    fn restarts_of(state: Restarting) -> i32 {
        match state {
            Restarting::Running { restarts, .. } | Restarting::BackOff { restarts, .. } => restarts,
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
            let (state, next) = life_at(&sc, None, s(elapsed));
            let restarts = restarts_of(state);
            prop_assert!(restarts <= i32::try_from(failures).unwrap_or(i32::MAX));
            // Running for good exactly when every scripted failure is behind it.
            let settled = matches!(state, Restarting::Running { restarts: r, .. }
                if r == i32::try_from(failures).unwrap_or(i32::MAX));
            prop_assert_eq!(next.is_none(), settled, "{:?}", state);
        }

        #[test]
        fn killed_sidecars_keep_restarting(
            run in 0u64..60,
            failures in 0u32..6,
            kill in 0u64..120,
            elapsed in 0u64..20_000,
            later in 0u64..2_000,
        ) {
            let sc = script(run, failures);
            let (state, next) = life_at(&sc, Some(kill), s(elapsed));
            let (after, _) = life_at(&sc, Some(kill), s(elapsed + later));
            prop_assert!(restarts_of(after) >= restarts_of(state), "{state:?} then {after:?}");
            // A sidecar its probes kill never runs for good; the back-off caps at 5 min.
            prop_assert!(next.is_some(), "{state:?}");
            if let Restarting::BackOff { backoff, .. } = state {
                prop_assert!(backoff <= s(300), "{state:?}");
            }
            // The script is kept: as many scripted exits, as long, as without the kills.
            if restarts_of(state) < i32::try_from(failures).unwrap_or(i32::MAX) {
                prop_assert_eq!((state, next), life_at(&sc, None, s(elapsed)));
            }
        }

        #[test]
        fn started_after_is_a_started_moment(
            run in 0u64..60,
            failures in 0u32..6,
            up in 0u64..60,
            kill in proptest::option::of(1u64..60),
        ) {
            let sc = script(run, failures);
            let Some(at) = started_after(&sc, Some(s(up))) else {
                return Err(TestCaseError::fail("a passing probe starts the sidecar"));
            };
            // At that moment the sidecar runs, and has run at least `up` in this run (a
            // liveness kill comes after the startup probe passed).
            let (state, _) = life_at(&sc, kill.map(|k| up + k), at);
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
