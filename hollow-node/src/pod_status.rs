//! The status a kubelet would report for a pod bound to one of our nodes: a pure function of the
//! pod (spec, status, annotations), the clock, the pod's IP and whether the Secrets, ConfigMaps
//! (and the keys of them it names) and PersistentVolumeClaims it references exist.
//!
//! Timestamps already in the status are kept when the state they describe did not change, so a
//! second evaluation of a pod we already wrote yields the same status and no write.
//!
//! [`evaluate`] is the entry point; the rules live in submodules by concern: `references`
//! (missing objects and keys), `init` (init containers in order), `phases` (deletion,
//! completion, restart policy), `restarts` (the back-off), `probes` (the prober's timing),
//! `per_container` (each container under its probes, liveness kills), `containers` (one
//! container's status), `sidecars` (native sidecars: init containers with `restartPolicy:
//! Always`), `ephemeral` (`kubectl debug` containers) and `status` (the pod-level status).

mod containers;
mod ephemeral;
mod init;
mod per_container;
mod phases;
mod probes;
mod references;
mod restarts;
mod sidecars;
mod status;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};

use crate::annotations::Lifecycle;

use containers::Run;
use status::Builder;

pub use containers::{container_id, normalize_image};
pub use ephemeral::as_container;
pub use references::{ObjRef, RefKind, RefState, has_key, references};
pub use restarts::crash_loop_at;
pub use status::{host_network, qos_class, status_differs};

/// Settings that are the same for every pod of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodSettings {
    /// How long a Job's pod (restartPolicy Never/OnFailure, no annotation) runs before it
    /// succeeds.
    pub job_complete_after: Duration,
    /// Cap on terminationGracePeriodSeconds when a pod is deleted.
    pub grace_cap: Duration,
    /// How soon a pod waiting for a missing object is looked at again (also when the object
    /// appears: the glue requeues it then).
    pub retry_missing: Duration,
}

impl Default for PodSettings {
    fn default() -> Self {
        PodSettings {
            job_complete_after: Duration::from_secs(5),
            grace_cap: Duration::from_secs(1),
            retry_missing: Duration::from_secs(20),
        }
    }
}

/// The kinds of Event the kubelet records for a pod, each with its own reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An annotation was malformed or out of range (and handled as absent).
    InvalidAnnotation,
    /// A volume's Secret, ConfigMap or PVC is missing (or the PVC not bound).
    FailedMount,
    /// An env or envFrom Secret or ConfigMap is missing: CreateContainerConfigError.
    CreateContainerConfig,
    /// A container exited and waits out the restart back-off.
    BackOff,
    /// A readiness probe failed (Unhealthy).
    ReadinessFailed,
    /// A liveness probe failed `failureThreshold` times: the container is killed (Unhealthy).
    LivenessFailed,
    /// A startup probe failed `failureThreshold` times: the container is killed (Unhealthy).
    StartupFailed,
    /// The kubelet kills a container that failed its liveness or startup probe.
    Killing,
}

impl EventKind {
    /// The Event's reason, as the kubelet writes it.
    pub fn reason(self) -> &'static str {
        match self {
            EventKind::InvalidAnnotation => "InvalidAnnotation",
            EventKind::FailedMount => "FailedMount",
            EventKind::CreateContainerConfig => "Failed",
            EventKind::BackOff => "BackOff",
            EventKind::ReadinessFailed | EventKind::LivenessFailed | EventKind::StartupFailed => {
                "Unhealthy"
            }
            EventKind::Killing => "Killing",
        }
    }

    /// The action of an events.k8s.io/v1 Event: what the kubelet was doing.
    pub fn action(self) -> &'static str {
        match self {
            EventKind::FailedMount => "MountVolume",
            EventKind::CreateContainerConfig => "CreateContainer",
            EventKind::BackOff => "StartContainer",
            EventKind::InvalidAnnotation => "Sync",
            EventKind::ReadinessFailed | EventKind::LivenessFailed | EventKind::StartupFailed => {
                "Probe"
            }
            EventKind::Killing => "KillContainer",
        }
    }

    /// Every kind but Killing (Normal) is a Warning.
    pub fn warning(self) -> bool {
        self != EventKind::Killing
    }

    /// Recorded at every look while the condition lasts (the glue lets one through per quiet
    /// period); the others mark one transition each (a kill) and are always recorded.
    pub fn repeats(self) -> bool {
        !matches!(
            self,
            EventKind::LivenessFailed | EventKind::StartupFailed | EventKind::Killing
        )
    }

    /// The pod waits for a referenced object: the glue looks at it again when one changes.
    pub fn waits_for_reference(self) -> bool {
        matches!(
            self,
            EventKind::FailedMount | EventKind::CreateContainerConfig
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub kind: EventKind,
    pub message: String,
}

/// What to do with a pod now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// The status to write, when it differs from the pod's.
    pub status: Option<PodStatus>,
    pub events: Vec<PodEvent>,
    /// Look at the pod again after this long.
    pub requeue: Option<Duration>,
    /// Delete the pod with grace period 0 (after writing `status`).
    pub delete: bool,
}

impl Outcome {
    /// Whether the pod is held by a missing Secret, ConfigMap or PVC.
    pub fn waits_for_references(&self) -> bool {
        self.events.iter().any(|e| e.kind.waits_for_reference())
    }
}

/// Inputs besides the pod.
pub struct PodContext<'a> {
    pub now: jiff::Timestamp,
    pub host_ip: &'a str,
    pub pod_ip: Option<Ipv4Addr>,
    pub settings: PodSettings,
    pub lookup: &'a dyn Fn(&ObjRef) -> RefState,
}

/// The shortest wait before looking at a pod again.
const MIN_REQUEUE: Duration = Duration::from_millis(100);

fn time_diff(later: jiff::Timestamp, earlier: jiff::Timestamp) -> Duration {
    let d = later.as_millisecond() - earlier.as_millisecond();
    Duration::from_millis(u64::try_from(d).unwrap_or(0))
}

fn add(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
    jiff::Timestamp::from_millisecond(t.as_millisecond().saturating_add(ms)).unwrap_or(t)
}

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Evaluates one pod bound to one of our nodes.
pub fn evaluate(pod: &Pod, ctx: &PodContext<'_>) -> Outcome {
    let key = pod_key(pod);
    let Some(spec) = pod.spec.as_ref() else {
        return Outcome::default();
    };
    let mut b = Builder::new(pod, ctx);
    let (lifecycle, invalid) = Lifecycle::parse(
        &key,
        pod.metadata
            .annotations
            .as_ref()
            .unwrap_or(&BTreeMap::new()),
    );
    let usage_invalid = crate::usage::check(&key, pod.metadata.annotations.as_ref());
    let mut events: Vec<PodEvent> = invalid
        .into_iter()
        .chain(usage_invalid)
        .map(|e| PodEvent {
            kind: EventKind::InvalidAnnotation,
            message: e.to_string(),
        })
        .collect();

    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        return phases::deleting(&b, deleted.0, events);
    }
    if phases::terminal(&b.prev) {
        return Outcome {
            events,
            ..Default::default()
        };
    }

    // Pending with every container waiting (a missing object, a delayed start), looked at again
    // after `requeue`.
    let waiting = |reason: &'static str,
                   message: Option<String>,
                   with_ip: bool,
                   events: Vec<PodEvent>,
                   requeue: Duration| Outcome {
        status: b.changed(b.pending(Run::Waiting { reason, message }, with_ip)),
        events,
        requeue: Some(requeue),
        delete: false,
    };
    if let Some(held) = references::held(
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        &references(pod),
        ctx.lookup,
    ) {
        events.extend(held.events);
        return waiting(
            held.reason,
            held.message,
            held.with_ip,
            events,
            ctx.settings.retry_missing,
        );
    }
    // With init containers, delayRunning is the main containers' start after them (below).
    let has_inits = spec.init_containers.as_ref().is_some_and(|v| !v.is_empty());
    if let Some(d) = lifecycle.delay_running.filter(|_| !has_inits) {
        let due = add(phases::start_time(&b), d);
        if ctx.now < due {
            let requeue = time_diff(due, ctx.now).max(MIN_REQUEUE);
            return waiting("ContainerCreating", None, false, events, requeue);
        }
    }
    // The sidecars' next change, while they run beside the containers.
    let mut sidecars_next = None;
    match init::progress(&b, spec, &lifecycle) {
        init::Init::Settled => {}
        init::Init::Done {
            runs,
            at,
            next,
            events: more,
        } => {
            b.init_runs = Some(runs);
            b.init_done_at = Some(at);
            sidecars_next = next;
            events.extend(more);
        }
        init::Init::Pending {
            runs,
            failed,
            next,
            events: more,
        } => {
            b.init_runs = Some(runs);
            events.extend(more);
            return init::pending(&b, failed, next, events);
        }
    }
    let outcome = match lifecycle.delay_running.filter(|_| has_inits) {
        Some(d) => init::starting(&b, d, &mut events),
        None => None,
    };
    let mut outcome = outcome.unwrap_or_else(|| phases::running(&b, spec, &lifecycle, events));
    // Sidecars change on their own (restarts, probes) while the pod runs.
    let ended = outcome.status.as_ref().is_some_and(phases::terminal);
    if let Some(n) = sidecars_next.filter(|_| !ended) {
        let n = n.max(MIN_REQUEUE);
        outcome.requeue = Some(outcome.requeue.map_or(n, |r| r.min(n)));
    }
    outcome
}
