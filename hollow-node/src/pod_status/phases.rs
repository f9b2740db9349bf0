//! Where a started pod is in its life: deletion (containers stopped within the capped grace
//! period, then the pod deleted), completion (scripted delays, Jobs) and running or crash-looping.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, PodStatus};

use super::containers::Run;
use super::restarts::crash_loop_at;
use super::status::{BuildArgs, Builder};
use super::{MIN_REQUEUE, Outcome, PodEvent, add, time_diff};
use crate::annotations::Lifecycle;

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

/// Containers started: the pod completes when a scripted delay (or a Job's default run) is
/// over, else runs (or crash-loops).
pub fn running(
    b: &Builder<'_, '_>,
    spec: &PodSpec,
    lifecycle: &Lifecycle,
    events: Vec<PodEvent>,
) -> Outcome {
    let pod = b.pod;
    let ctx = b.ctx;
    let prev = &b.prev;
    let now_ts = b.now.0;
    let start_time = start_time(b);
    // The moment the containers (first) started: kept from the status once written.
    let running_since = prev
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.clone())
        .map(|t| t.0)
        .min()
        .unwrap_or(now_ts);
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let finish: Option<(Duration, bool)> = match (lifecycle.delay_succeeded, lifecycle.delay_failed)
    {
        (_, Some(d)) => Some((d, false)),
        (Some(d), None) => Some((d, true)),
        (None, None) if is_job_pod(pod) && restart_policy != "Always" => {
            Some((ctx.settings.job_complete_after, true))
        }
        _ => None,
    };
    let mut requeue = None;
    if let Some((d, success)) = finish {
        let due = add(running_since, d);
        if ctx.now >= due {
            let run = if success {
                Run::Terminated {
                    reason: "Completed",
                    exit_code: 0,
                }
            } else {
                Run::Terminated {
                    reason: "Error",
                    exit_code: 1,
                }
            };
            let status = b.build(BuildArgs {
                phase: if success { "Succeeded" } else { "Failed" }.into(),
                run: &run,
                initialized: true,
                with_ip: true,
                ready_reason: Some("PodCompleted".into()),
            });
            return Outcome {
                status: b.changed(status),
                events,
                requeue: None,
                delete: false,
            };
        }
        requeue = Some(time_diff(due, ctx.now).max(MIN_REQUEUE));
    }
    let run = match lifecycle.crash_loop {
        Some(first) => {
            // Anchored at startTime so it survives restarts of this process.
            let (restarts, backoff, next) = crash_loop_at(first, time_diff(ctx.now, start_time));
            requeue = Some(
                requeue
                    .map_or(next, |r: Duration| r.min(next))
                    .max(MIN_REQUEUE),
            );
            Run::CrashLoop { restarts, backoff }
        }
        None => Run::Running {
            ready: !lifecycle.never_ready,
        },
    };
    let status = b.build(BuildArgs {
        phase: "Running".into(),
        run: &run,
        initialized: true,
        with_ip: true,
        ready_reason: None,
    });
    Outcome {
        status: b.changed(status),
        events,
        requeue,
        delete: false,
    }
}
