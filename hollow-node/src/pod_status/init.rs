//! Init containers as the kubelet runs them: one after another, each until it exits 0, with the
//! restart back-off after failures (restartPolicy Always, OnFailure), or the pod Failed at the
//! first failure (Never). The pod is Pending and its containers wait with reason
//! `PodInitializing` until the last init container completed; kubectl shows `Init:1/2`,
//! `Init:CrashLoopBackOff` or (Never) `Init:Error` from these statuses.
//!
//! Native sidecars (`restartPolicy: Always`, see `sidecars`) take their place in the sequence
//! until they are started, then run on beside the rest.
//!
//! The sequence is anchored at the first start of the first init container, read back from the
//! status we wrote, so it survives restarts of this process.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::containers::{Exit, Run, previous_container};
use super::phases::{RestartPolicy, back_off_event, first_start_of, restart_at};
use super::probes::Probes;
use super::restarts::{Runs, start_of};
use super::sidecars::{self, Sidecar, is_sidecar, started_after};
use super::status::{BuildArgs, Builder};
use super::{MIN_REQUEUE, Outcome, PodEvent, add, pod_key, time_diff};
use crate::annotations::Lifecycle;
use crate::annotations::init::{InitScript, parse};
use crate::node_status::seconds;

/// Where the init sequence is, as offsets from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitAt {
    /// Init container `index` runs (or backs off), started first at `since`.
    Running { index: usize, since: Duration },
    /// Init container `index`, started at `since`, failed under restartPolicy Never.
    Failed { index: usize, since: Duration },
    /// Every init container completed; the last at `at`.
    Done { at: Duration },
}

/// One init container's part in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitPlan {
    pub script: InitScript,
    /// A native sidecar (`restartPolicy: Always`): the next init container starts once it is
    /// started, and it runs on.
    pub sidecar: bool,
    /// For a sidecar: when it is first started, from its first start (`None`: never).
    pub started: Option<Duration>,
}

impl InitPlan {
    /// How long it holds the sequence from its first start: a sidecar until it is started, an
    /// init container until its successful exit. `None`: for good.
    fn holds(&self) -> Option<Duration> {
        if self.sidecar {
            return self.started;
        }
        let s = &self.script;
        Some(start_of(s.run, i32::try_from(s.failures).unwrap_or(i32::MAX)).saturating_add(s.run))
    }
}

/// Where the sequence of `plans` is `elapsed` after its start; `restarts`: whether a failed
/// init container is restarted (restartPolicy Always or OnFailure; a sidecar always is).
pub fn sequence_at(plans: &[InitPlan], restarts: bool, elapsed: Duration) -> InitAt {
    let mut since = Duration::ZERO;
    for (index, p) in plans.iter().enumerate() {
        let s = &p.script;
        if !restarts && !p.sidecar && s.failures > 0 {
            return if elapsed < since.saturating_add(s.run) {
                InitAt::Running { index, since }
            } else {
                InitAt::Failed { index, since }
            };
        }
        let Some(end) = p.holds().map(|h| since.saturating_add(h)) else {
            return InitAt::Running { index, since };
        };
        if elapsed < end {
            return InitAt::Running { index, since };
        }
        since = end;
    }
    InitAt::Done { at: since }
}

/// What the init sequence decides for the pod now.
pub enum Init {
    /// No init containers, or they completed before (the status says so).
    Settled,
    /// The init containers completed (or, sidecars, started) at `at`, with these runs: the
    /// containers run. `next` and `events`: the sidecars' (which run on).
    Done {
        runs: Vec<Run>,
        at: jiff::Timestamp,
        next: Option<Duration>,
        events: Vec<PodEvent>,
    },
    /// The pod waits for its init containers (or failed on one).
    Pending {
        runs: Vec<Run>,
        failed: bool,
        next: Option<Duration>,
        events: Vec<PodEvent>,
    },
}

fn completed_before(prev: &PodStatus, inits: &[Container]) -> bool {
    let statuses = prev.init_container_statuses.as_deref().unwrap_or_default();
    statuses.len() == inits.len()
        && statuses.iter().all(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        })
}

/// When the first init container, whose runs last as `runs` says, first started, from its
/// status.
fn anchor(prev: &PodStatus, first: &Container, runs: &Runs) -> Option<jiff::Timestamp> {
    let c = previous_container(prev, &first.name, true)?;
    match c.state.as_ref()?.terminated.as_ref() {
        Some(t) => {
            let started = t.started_at.as_ref()?.0;
            let offset = runs.start_of(c.restart_count);
            let ms = i64::try_from(offset.as_millis()).ok()?;
            jiff::Timestamp::from_millisecond(started.as_millisecond().checked_sub(ms)?).ok()
        }
        None => first_start_of(c, runs),
    }
}

/// The init containers' progress for the pod being evaluated.
pub fn progress(b: &Builder<'_, '_>, spec: &PodSpec, lifecycle: &Lifecycle) -> Init {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    if inits.is_empty() || completed_before(&b.prev, inits) {
        return Init::Settled;
    }
    let names: Vec<&str> = inits.iter().map(|c| c.name.as_str()).collect();
    let empty = Default::default();
    let annotations = b.pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let (scripts, errors) = parse(&pod_key(b.pod), annotations, &names);
    let mut events: Vec<PodEvent> = errors
        .into_iter()
        .map(|e| PodEvent {
            kind: super::EventKind::InvalidAnnotation,
            message: e.to_string(),
        })
        .collect();
    let probes: Vec<Option<Probes>> = inits
        .iter()
        .map(|c| is_sidecar(c).then(|| Probes::of(c, lifecycle)))
        .collect();
    let plans: Vec<InitPlan> = scripts
        .iter()
        .zip(&probes)
        .map(|(s, p)| InitPlan {
            script: *s,
            sidecar: p.is_some(),
            started: p.as_ref().and_then(|p| started_after(s, p.started_at())),
        })
        .collect();
    let restarts = RestartPolicy::of(spec).restarts(false);
    let now = b.ctx.now;
    // A sidecar's kills count among its restarts.
    let first_script = scripts.first().copied().unwrap_or_default();
    let first_runs = match probes.first().and_then(Option::as_ref) {
        Some(p) => sidecars::runs(&first_script, p.kill().map(|(after, _)| after)),
        None => Runs::every(first_script.run),
    };
    let t0 = anchor(&b.prev, &inits[0], &first_runs).unwrap_or(now);
    let at = sequence_at(&plans, restarts, time_diff(now, t0));
    let ip = b
        .ctx
        .pod_ip
        .map_or_else(|| b.ctx.host_ip.to_string(), |ip| ip.to_string());
    let mut next: Option<Duration> = None;
    let due = |next: &mut Option<Duration>, n: Duration| {
        *next = Some(next.map_or(n, |m| m.min(n)));
    };
    // Sidecar `i`, first started at offset `since`, at `now`.
    let sidecar_run =
        |i: usize, since: Duration, events: &mut Vec<PodEvent>, next: &mut Option<Duration>| {
            let probes = probes[i].as_ref()?;
            let sidecar = Sidecar {
                container: &inits[i],
                script: scripts[i],
                probes,
                prev: previous_container(&b.prev, &inits[i].name, true),
                never_ready: lifecycle.never_ready,
                ip: &ip,
            };
            let r = sidecar.run_at(add(t0, since), now);
            if let Some(n) = r.next {
                due(next, n);
            }
            events.extend(r.events);
            Some(r.run)
        };
    let time = |d: Duration| Time(seconds(add(t0, d)));
    // Init container `i`, started first at `since`, completed after its scripted failures.
    let completed = |s: &InitScript, since: Duration| {
        let failures = i32::try_from(s.failures).unwrap_or(i32::MAX);
        let last_start = since.saturating_add(start_of(s.run, failures));
        let failed_run = |k: i32| {
            let start = since.saturating_add(start_of(s.run, k));
            Exit {
                reason: "Error",
                exit_code: 1,
                started: time(start),
                finished: time(start.saturating_add(s.run)),
            }
        };
        Run::Exited {
            exit: Exit {
                reason: "Completed",
                exit_code: 0,
                started: time(last_start),
                finished: time(last_start.saturating_add(s.run)),
            },
            restarts: failures,
            last: (failures > 0).then(|| failed_run(failures - 1)),
        }
    };
    let waiting = || Run::Waiting {
        reason: "PodInitializing",
        message: None,
    };
    let (index, since) = match at {
        InitAt::Running { index, since } | InitAt::Failed { index, since } => (index, since),
        InitAt::Done { at } => (scripts.len(), at),
    };
    let mut runs = Vec::with_capacity(scripts.len());
    let mut start = Duration::ZERO;
    for (i, p) in plans[..index].iter().enumerate() {
        let run = sidecar_run(i, start, &mut events, &mut next);
        runs.push(run.unwrap_or_else(|| completed(&p.script, start)));
        start = start.saturating_add(p.holds().unwrap_or_default());
    }
    match at {
        InitAt::Done { .. } => {
            return Init::Done {
                runs,
                at: add(t0, since),
                next,
                events,
            };
        }
        InitAt::Failed { index, since } => runs.push(Run::Exited {
            exit: Exit {
                reason: "Error",
                exit_code: 1,
                started: time(since),
                finished: time(since.saturating_add(scripts[index].run)),
            },
            restarts: 0,
            last: None,
        }),
        InitAt::Running { index, since } => {
            if let Some(run) = sidecar_run(index, since, &mut events, &mut next) {
                runs.push(run);
            } else {
                let s = &scripts[index];
                let every = Runs::every(s.run);
                let r = restart_at(add(t0, since), now, &every, |_| ("Error", 1), false);
                if r.backing_off {
                    events.push(back_off_event());
                }
                if let Some(n) = r.next {
                    due(&mut next, n);
                }
                runs.push(r.run);
            }
        }
    }
    runs.resize_with(scripts.len(), waiting);
    Init::Pending {
        runs,
        failed: matches!(at, InitAt::Failed { .. }),
        next,
        events,
    }
}

/// The pod while its init containers run, or Failed on one (restartPolicy Never).
pub fn pending(
    b: &Builder<'_, '_>,
    failed: bool,
    next: Option<Duration>,
    events: Vec<PodEvent>,
) -> Outcome {
    let status = b.build(BuildArgs {
        phase: if failed { "Failed" } else { "Pending" }.into(),
        run: &Run::Waiting {
            reason: "PodInitializing",
            message: None,
        },
        per_container: None,
        initialized: false,
        with_ip: true,
        ready_reason: failed.then(|| "PodCompleted".into()),
    });
    Outcome {
        status: b.changed(status),
        events,
        requeue: next.map(|n| n.max(MIN_REQUEUE)),
        delete: false,
    }
}

/// When the last init container completed (or, a sidecar, started): from the sequence just
/// decided, else from the status.
fn initialized_at(b: &Builder<'_, '_>) -> Option<jiff::Timestamp> {
    if let Some(at) = b.init_done_at {
        return Some(at);
    }
    match b.init_runs.as_deref() {
        Some(runs) => match runs.last()? {
            Run::Exited { exit, .. } => Some(exit.finished.0),
            _ => None,
        },
        None => {
            let last = b.prev.init_container_statuses.as_deref()?.last()?;
            Some(
                last.state
                    .as_ref()?
                    .terminated
                    .as_ref()?
                    .finished_at
                    .as_ref()?
                    .0,
            )
        }
    }
}

/// Whether any main container already ran (its status left waiting).
fn containers_started(prev: &PodStatus) -> bool {
    prev.container_statuses.iter().flatten().any(|c| {
        c.state
            .as_ref()
            .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
    })
}

/// The window between the last init container's completion and the main containers running:
/// the kubelet pulls and starts them, reporting them Waiting with reason `PodInitializing`
/// (kubectl's STATUS `PodInitializing`) in a Pending, Initialized pod. For a pod with init
/// containers `delayRunning` is this window. `None`: the containers start now.
pub fn starting(
    b: &Builder<'_, '_>,
    delay: Duration,
    events: &mut Vec<PodEvent>,
) -> Option<Outcome> {
    if containers_started(&b.prev) {
        return None;
    }
    let due = add(initialized_at(b)?, delay);
    if b.ctx.now >= due {
        return None;
    }
    let status = b.build(BuildArgs {
        phase: "Pending".into(),
        run: &Run::Waiting {
            reason: "PodInitializing",
            message: None,
        },
        per_container: None,
        initialized: true,
        with_ip: true,
        ready_reason: Some("ContainersNotReady".into()),
    });
    Some(Outcome {
        status: b.changed(status),
        events: std::mem::take(events),
        requeue: Some(time_diff(due, b.ctx.now).max(MIN_REQUEUE)),
        delete: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences() {
        let s = Duration::from_secs;
        let script = |run, failures| InitPlan {
            script: InitScript {
                run: s(run),
                failures,
            },
            sidecar: false,
            started: None,
        };
        let sidecar = |started: Option<u64>| InitPlan {
            script: InitScript::default(),
            sidecar: true,
            started: started.map(s),
        };
        let two = [script(5, 0), script(3, 2)];
        // Second container: runs at 5 (fails at 8, restarts at once), 8 (fails at 11, backs off
        // 10 s), 21 (completes at 24).
        let cases = [
            (
                "first runs",
                &two[..],
                true,
                0,
                InitAt::Running {
                    index: 0,
                    since: s(0),
                },
            ),
            (
                "second starts at 5",
                &two[..],
                true,
                5,
                InitAt::Running {
                    index: 1,
                    since: s(5),
                },
            ),
            (
                "second backs off",
                &two[..],
                true,
                15,
                InitAt::Running {
                    index: 1,
                    since: s(5),
                },
            ),
            ("done at 24", &two[..], true, 24, InitAt::Done { at: s(24) }),
            (
                "Never: the first failure ends it",
                &two[..],
                false,
                8,
                InitAt::Failed {
                    index: 1,
                    since: s(5),
                },
            ),
            (
                "Never: running before",
                &two[..],
                false,
                7,
                InitAt::Running {
                    index: 1,
                    since: s(5),
                },
            ),
            (
                "instant",
                &[script(0, 0), script(0, 0)][..],
                true,
                0,
                InitAt::Done { at: s(0) },
            ),
            ("none", &[][..], true, 0, InitAt::Done { at: s(0) }),
            (
                "the next starts once the sidecar started",
                &[script(5, 0), sidecar(Some(3)), script(2, 0)][..],
                true,
                8,
                InitAt::Running {
                    index: 2,
                    since: s(8),
                },
            ),
            (
                "a sidecar holds the next until started",
                &[sidecar(Some(3)), script(2, 0)][..],
                false,
                2,
                InitAt::Running {
                    index: 0,
                    since: s(0),
                },
            ),
            (
                "a sidecar never started holds it for good",
                &[sidecar(None), script(2, 0)][..],
                true,
                100_000,
                InitAt::Running {
                    index: 0,
                    since: s(0),
                },
            ),
            (
                "a sidecar last: done once started",
                &[script(1, 0), sidecar(Some(0))][..],
                false,
                1,
                InitAt::Done { at: s(1) },
            ),
        ];
        for (name, scripts, restarts, elapsed, want) in cases {
            assert_eq!(sequence_at(scripts, restarts, s(elapsed)), want, "{name}");
        }
    }

    proptest::proptest! {
        #[test]
        fn sequence_moves_forward(
            scripts in proptest::collection::vec(
                (0u64..100, 0u32..5, proptest::option::of(proptest::option::of(0u64..100))),
                0..4,
            ),
            restarts: bool,
            elapsed in 0u64..5_000,
            later in 0u64..5_000,
        ) {
            // `Some(started)`: a sidecar.
            let scripts: Vec<InitPlan> = scripts
                .into_iter()
                .map(|(run, failures, sidecar)| InitPlan {
                    script: InitScript { run: Duration::from_secs(run), failures },
                    sidecar: sidecar.is_some(),
                    started: sidecar.flatten().map(Duration::from_secs),
                })
                .collect();
            let rank = |a: InitAt| match a {
                InitAt::Running { index, .. } => (index, 0),
                InitAt::Failed { index, .. } => (index, 1),
                InitAt::Done { .. } => (usize::MAX, 0),
            };
            let now = sequence_at(&scripts, restarts, Duration::from_secs(elapsed));
            let after = sequence_at(&scripts, restarts, Duration::from_secs(elapsed + later));
            proptest::prop_assert!(rank(after) >= rank(now), "{now:?} then {after:?}");
            if let InitAt::Failed { .. } = now {
                proptest::prop_assert_eq!(after, now);
            }
        }
    }
}
