//! Where a started pod is in its life: deletion (containers stopped within the capped grace
//! period, then the pod deleted), completion (scripted delays, Jobs) and running or crash-looping.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodStatus};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::containers::{Exit, Run};
use super::per_container;
use super::restarts::{Restarting, Runs, Span, crash_loop_at};
use super::status::{BuildArgs, Builder};
use super::{EventKind, MIN_REQUEUE, Outcome, PodEvent, add, time_diff};
use crate::annotations::Lifecycle;
use crate::node_status::seconds;

/// Succeeded or Failed: the kubelet leaves the pod alone.
pub fn terminal(status: &PodStatus) -> bool {
    matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
}

/// The pod's startTime: kept from the status, else now (the kubelet's first look).
pub fn start_time(b: &Builder<'_, '_>) -> jiff::Timestamp {
    b.prev.start_time.clone().map(|t| t.0).unwrap_or(b.now.0)
}

/// Kubelet deletion: stop the containers (within the grace period, capped), report them
/// terminated, then delete with grace period 0.
pub fn deleting(b: &Builder<'_, '_>, deleted: jiff::Timestamp, events: Vec<PodEvent>) -> Outcome {
    let pod = b.pod;
    let ctx = b.ctx;
    let phase = b.prev.phase.as_deref().unwrap_or("Pending");
    let terminal = terminal(&b.prev);
    let grace = Duration::from_secs(
        u64::try_from(pod.metadata.deletion_grace_period_seconds.unwrap_or(0)).unwrap_or(0),
    );
    let requested = jiff::Timestamp::from_millisecond(
        deleted.as_millisecond() - i64::try_from(grace.as_millis()).unwrap_or(0),
    )
    .unwrap_or(deleted);
    let due = add(requested, grace.min(ctx.settings.grace_cap));
    let started = phase == "Running" || terminal;
    let status = if started && !terminal {
        let run = Run::Terminated {
            reason: "Completed",
            exit_code: 0,
        };
        b.changed(b.build(BuildArgs {
            phase: phase.to_string(),
            run: &run,
            per_container: None,
            initialized: true,
            with_ip: true,
            ready_reason: Some("ContainersNotReady".into()),
        }))
    } else {
        None
    };
    let wait = time_diff(due, ctx.now);
    if wait.is_zero() || !started || terminal {
        Outcome {
            status,
            events,
            requeue: None,
            delete: true,
        }
    } else {
        Outcome {
            status,
            events,
            requeue: Some(wait),
            delete: false,
        }
    }
}

fn is_job_pod(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job" && o.api_version.starts_with("batch/"))
}

/// How the kubelet treats a container that exits: the pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(spec: &PodSpec) -> Self {
        match spec.restart_policy.as_deref() {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited (with code 0 when `success`) is started again.
    pub fn restarts(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

/// How long the containers run before they exit, and whether they exit 0: the scripted
/// delays (delayFailed wins over delaySucceeded), else a Job pod's default run.
fn scripted_exit(
    b: &Builder<'_, '_>,
    lifecycle: &Lifecycle,
    policy: RestartPolicy,
) -> Option<(Duration, bool)> {
    match (lifecycle.delay_succeeded, lifecycle.delay_failed) {
        (_, Some(d)) => Some((d, false)),
        (Some(d), None) => Some((d, true)),
        (None, None) if is_job_pod(b.pod) && policy != RestartPolicy::Always => {
            Some((b.ctx.settings.job_complete_after, true))
        }
        _ => None,
    }
}

pub fn back_off_event() -> PodEvent {
    PodEvent {
        kind: EventKind::BackOff,
        message: "Back-off restarting failed container".into(),
    }
}

/// Containers started: they run, exit as scripted and are restarted or end the pod as the
/// restartPolicy says, or crash-loop.
pub fn running(
    b: &Builder<'_, '_>,
    spec: &PodSpec,
    lifecycle: &Lifecycle,
    mut events: Vec<PodEvent>,
) -> Outcome {
    let policy = RestartPolicy::of(spec);
    let ready = !lifecycle.never_ready;
    if let Some(first) = lifecycle.crash_loop {
        if !policy.restarts(false) {
            // Never: the first crash ends the pod.
            return completed(b, false, events);
        }
        // Anchored at startTime so it survives restarts of this process.
        let (restarts, backoff, next) = crash_loop_at(first, time_diff(b.ctx.now, start_time(b)));
        events.push(back_off_event());
        let run = Run::CrashLoop { restarts, backoff };
        return in_phase_running(b, lifecycle, &run, events, Some(next.max(MIN_REQUEUE)));
    }
    match scripted_exit(b, lifecycle, policy) {
        None => in_phase_running(
            b,
            lifecycle,
            &Run::Running {
                ready,
                started: true,
            },
            events,
            None,
        ),
        Some((run, success)) if policy.restarts(success) => {
            restarting(b, lifecycle, run, success, ready, events)
        }
        Some((run, success)) => {
            // The moment the containers started: kept from the status once written.
            let since = b
                .prev
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.clone())
                .map(|t| t.0)
                .min()
                .unwrap_or(b.now.0);
            let due = add(since, run);
            if b.ctx.now >= due {
                return completed(b, success, events);
            }
            let requeue = time_diff(due, b.ctx.now).max(MIN_REQUEUE);
            let run = Run::Running {
                ready,
                started: true,
            };
            in_phase_running(b, lifecycle, &run, events, Some(requeue))
        }
    }
}

/// The containers exited and stay exited: the pod is Succeeded or Failed.
fn completed(b: &Builder<'_, '_>, success: bool, events: Vec<PodEvent>) -> Outcome {
    let (reason, exit_code) = exit_reason(success);
    let status = b.build(BuildArgs {
        phase: if success { "Succeeded" } else { "Failed" }.into(),
        run: &Run::Terminated { reason, exit_code },
        per_container: None,
        initialized: true,
        with_ip: true,
        ready_reason: Some("PodCompleted".into()),
    });
    Outcome {
        status: b.changed(status),
        events,
        requeue: None,
        delete: false,
    }
}

fn exit_reason(success: bool) -> (&'static str, i32) {
    if success {
        ("Completed", 0)
    } else {
        ("Error", 1)
    }
}

/// The pod Running with its containers in `run`, each refined by its probes (which may kill
/// it: under restartPolicy Never, once every container is killed the pod has Failed).
fn in_phase_running(
    b: &Builder<'_, '_>,
    lifecycle: &Lifecycle,
    run: &Run,
    mut events: Vec<PodEvent>,
    requeue: Option<Duration>,
) -> Outcome {
    let probed = per_container::apply(b, lifecycle, run);
    events.extend(probed.events);
    let requeue = match (requeue, probed.next) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let status = b.build(BuildArgs {
        phase: if probed.all_terminated {
            "Failed"
        } else {
            "Running"
        }
        .into(),
        run,
        per_container: Some(&probed.runs),
        initialized: true,
        with_ip: true,
        ready_reason: probed.all_terminated.then(|| "PodCompleted".into()),
    });
    Outcome {
        status: b.changed(status),
        events,
        requeue: requeue
            .filter(|_| !probed.all_terminated)
            .map(|r| r.max(MIN_REQUEUE)),
        delete: false,
    }
}

/// The containers exit after `run` each time and the kubelet restarts them with its back-off.
fn restarting(
    b: &Builder<'_, '_>,
    lifecycle: &Lifecycle,
    run: Duration,
    success: bool,
    ready: bool,
    mut events: Vec<PodEvent>,
) -> Outcome {
    let runs = Runs::every(run);
    let first = first_start(&b.prev, &runs).unwrap_or(b.now.0);
    let r = restart_at(first, b.ctx.now, &runs, |_| exit_reason(success), ready);
    if r.backing_off {
        events.push(back_off_event());
    }
    in_phase_running(
        b,
        lifecycle,
        &r.run,
        events,
        r.next.map(|n| n.max(MIN_REQUEUE)),
    )
}

/// Where a container whose runs exit as `runs` says is, restarted by the kubelet.
pub struct Restart {
    pub run: Run,
    /// Time until that changes (`None`: it runs on for good).
    pub next: Option<Duration>,
    /// Runs that have exited so far.
    pub exits: i32,
    pub backing_off: bool,
}

/// The restart state at `now` of a container first started at `first` whose runs last as
/// `runs` says, run `k` (0: the first) exiting with `exit(k)` (reason, code).
pub fn restart_at(
    first: jiff::Timestamp,
    now: jiff::Timestamp,
    runs: &Runs,
    exit: impl Fn(i32) -> (&'static str, i32),
    ready: bool,
) -> Restart {
    let (state, next) = runs.at(time_diff(now, first));
    let at = |d: Duration| Time(seconds(add(first, d)));
    let exit = |k: i32, s: Span| {
        let (reason, exit_code) = exit(k);
        Exit {
            reason,
            exit_code,
            started: at(s.started),
            finished: at(s.finished),
        }
    };
    match state {
        Restarting::Running {
            restarts,
            started,
            last,
        } => Restart {
            run: Run::Restarting {
                restarts,
                running_since: Some(at(started)),
                ready,
                started: true,
                backoff: Duration::ZERO,
                last: last.map(|s| exit(restarts.saturating_sub(1), s)),
            },
            next,
            exits: restarts,
            backing_off: false,
        },
        Restarting::BackOff {
            restarts,
            backoff,
            last,
        } => Restart {
            run: Run::Restarting {
                restarts,
                running_since: None,
                ready: false,
                started: false,
                backoff,
                last: Some(exit(restarts, last)),
            },
            next,
            exits: restarts.saturating_add(1),
            backing_off: true,
        },
    }
}

/// When the containers first started, from the status we wrote (the first container that
/// says).
fn first_start(prev: &PodStatus, runs: &Runs) -> Option<jiff::Timestamp> {
    prev.container_statuses
        .iter()
        .flatten()
        .find_map(|c| first_start_of(c, runs))
}

/// When a container first started, from its status: the current run's start (or the exited
/// run's, while backing off) less the schedule of `runs` up to its restart count. Survives restarts of
/// this process.
pub fn first_start_of(c: &ContainerStatus, runs: &Runs) -> Option<jiff::Timestamp> {
    let state = c.state.as_ref()?;
    let started = match (&state.running, &state.waiting) {
        (Some(r), _) => r.started_at.clone()?,
        (None, Some(_)) => c
            .last_state
            .as_ref()?
            .terminated
            .as_ref()?
            .started_at
            .clone()?,
        (None, None) => return None,
    };
    let offset = i64::try_from(runs.start_of(c.restart_count).as_millis()).ok()?;
    jiff::Timestamp::from_millisecond(started.0.as_millisecond().checked_sub(offset)?).ok()
}
