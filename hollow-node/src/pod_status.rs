//! The status a kubelet would report for a pod bound to one of our nodes: a pure function of the
//! pod (spec, status, annotations), the clock, the pod's IP and whether the Secrets, ConfigMaps
//! and PersistentVolumeClaims it references exist.
//!
//! Timestamps already in the status are kept when the state they describe did not change, so a
//! second evaluation of a pod we already wrote yields the same status and no write.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::annotations::Lifecycle;
use crate::node_status::{seconds, stable_id};

/// Kinds of objects a pod can reference and the kubelet waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    Secret,
    ConfigMap,
    Pvc,
}

impl RefKind {
    fn noun(self) -> &'static str {
        match self {
            RefKind::Secret => "secret",
            RefKind::ConfigMap => "configmap",
            RefKind::Pvc => "persistentvolumeclaim",
        }
    }
}

/// One reference from a pod to an object in its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjRef {
    pub kind: RefKind,
    pub name: String,
    /// The volume that mounts it; `None` for env and envFrom references.
    pub volume: Option<String>,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefState {
    Present,
    Missing,
    /// A PVC that exists but is not Bound; carries its phase.
    NotBound(String),
}

/// Every Secret, ConfigMap and PVC the pod's volumes, env and envFrom reference.
pub fn references(pod: &Pod) -> Vec<ObjRef> {
    let mut out = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return out;
    };
    for v in spec.volumes.iter().flatten() {
        let vol = Some(v.name.clone());
        if let Some(s) = &v.secret {
            out.push(ObjRef {
                kind: RefKind::Secret,
                name: s.secret_name.clone().unwrap_or_default(),
                volume: vol.clone(),
                optional: s.optional.unwrap_or(false),
            });
        }
        if let Some(c) = &v.config_map {
            out.push(ObjRef {
                kind: RefKind::ConfigMap,
                name: c.name.clone(),
                volume: vol.clone(),
                optional: c.optional.unwrap_or(false),
            });
        }
        if let Some(c) = &v.persistent_volume_claim {
            out.push(ObjRef {
                kind: RefKind::Pvc,
                name: c.claim_name.clone(),
                volume: vol.clone(),
                optional: false,
            });
        }
        if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(s) = &src.secret {
                    out.push(ObjRef {
                        kind: RefKind::Secret,
                        name: s.name.clone(),
                        volume: vol.clone(),
                        optional: s.optional.unwrap_or(false),
                    });
                }
                if let Some(c) = &src.config_map {
                    out.push(ObjRef {
                        kind: RefKind::ConfigMap,
                        name: c.name.clone(),
                        volume: vol.clone(),
                        optional: c.optional.unwrap_or(false),
                    });
                }
            }
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in containers {
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(s) = &from.secret_key_ref {
                out.push(ObjRef {
                    kind: RefKind::Secret,
                    name: s.name.clone(),
                    volume: None,
                    optional: s.optional.unwrap_or(false),
                });
            }
            if let Some(s) = &from.config_map_key_ref {
                out.push(ObjRef {
                    kind: RefKind::ConfigMap,
                    name: s.name.clone(),
                    volume: None,
                    optional: s.optional.unwrap_or(false),
                });
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(s) = &e.secret_ref {
                out.push(ObjRef {
                    kind: RefKind::Secret,
                    name: s.name.clone(),
                    volume: None,
                    optional: s.optional.unwrap_or(false),
                });
            }
            if let Some(s) = &e.config_map_ref {
                out.push(ObjRef {
                    kind: RefKind::ConfigMap,
                    name: s.name.clone(),
                    volume: None,
                    optional: s.optional.unwrap_or(false),
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub warning: bool,
    pub reason: &'static str,
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

/// Inputs besides the pod.
pub struct PodContext<'a> {
    pub now: jiff::Timestamp,
    pub host_ip: &'a str,
    pub pod_ip: Option<Ipv4Addr>,
    pub settings: PodSettings,
    pub lookup: &'a dyn Fn(&ObjRef) -> RefState,
}

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

/// kubelet-style image name: registry and tag made explicit.
pub fn normalize_image(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let first = name.split('/').next().unwrap_or("");
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if digest.is_none() && !last.contains(':') {
        full.push_str(":latest");
    }
    match digest {
        Some(d) => format!("{full}@{d}"),
        None => full,
    }
}

fn image_id(image: &str) -> String {
    let normalized = normalize_image(image);
    if normalized.contains("@sha256:") {
        return normalized;
    }
    let repo = match normalized.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r.to_string(),
        _ => normalized.clone(),
    };
    format!("{repo}@sha256:{}", stable_id(&normalized))
}

/// The QoS class the kubelet and apiserver compute.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        let lim = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let relevant = |m: &BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >| {
            m.iter()
                .filter(|(k, q)| (k.as_str() == "cpu" || k.as_str() == "memory") && !is_zero(&q.0))
                .map(|(k, q)| (k.clone(), q.0.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let (req, lim) = (relevant(&req), relevant(&lim));
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        if lim.len() < 2
            || ["cpu", "memory"]
                .iter()
                .any(|k| req.get(*k).is_some_and(|r| Some(r) != lim.get(*k)))
        {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn is_zero(q: &str) -> bool {
    let mut digits = q.chars().filter(|c| c.is_ascii_digit()).peekable();
    digits.peek().is_some() && digits.all(|c| c == '0')
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: &Time,
    prev: &PodStatus,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let previous = prev.conditions.iter().flatten().find(|c| c.type_ == type_);
    let transition = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone().or(Some(now.clone())),
        _ => Some(now.clone()),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason,
        message,
        last_transition_time: transition,
        last_probe_time: None,
        ..Default::default()
    }
}

/// What each container is doing in the status being built.
#[derive(Debug, Clone, PartialEq)]
enum Run {
    Waiting {
        reason: &'static str,
        message: Option<String>,
    },
    Running {
        ready: bool,
    },
    CrashLoop {
        restarts: i32,
        backoff: Duration,
    },
    Terminated {
        reason: &'static str,
        exit_code: i32,
    },
}

fn previous_container<'a>(
    prev: &'a PodStatus,
    name: &str,
    init: bool,
) -> Option<&'a ContainerStatus> {
    let list = if init {
        &prev.init_container_statuses
    } else {
        &prev.container_statuses
    };
    list.iter().flatten().find(|c| c.name == name)
}

fn container_status(
    pod_uid: &str,
    c: &Container,
    run: &Run,
    now: &Time,
    prev: Option<&ContainerStatus>,
) -> ContainerStatus {
    let prev_state = prev.and_then(|p| p.state.as_ref());
    let prev_started = prev_state
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.clone());
    let restarts = match run {
        Run::CrashLoop { restarts, .. } => *restarts,
        _ => prev.map(|p| p.restart_count).unwrap_or(0),
    };
    let container_id = format!(
        "containerd://{}",
        stable_id(&format!("{pod_uid}/{}/{restarts}", c.name))
    );
    let (state, ready, started, id, last_state) = match run {
        Run::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some((*reason).into()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            false,
            false,
            None,
            None,
        ),
        Run::Running { ready } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: prev_started.or(Some(now.clone())),
                }),
                ..Default::default()
            },
            *ready,
            true,
            Some(container_id),
            None,
        ),
        Run::CrashLoop { backoff, .. } => {
            let last = prev
                .and_then(|p| p.last_state.clone())
                .filter(|_| prev.map(|p| p.restart_count) == Some(restarts))
                .unwrap_or(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 1,
                        reason: Some("Error".into()),
                        started_at: Some(now.clone()),
                        finished_at: Some(now.clone()),
                        container_id: Some(container_id.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        message: Some(format!(
                            "back-off {}s restarting failed container={} pod={}",
                            backoff.as_secs(),
                            c.name,
                            pod_uid
                        )),
                    }),
                    ..Default::default()
                },
                false,
                false,
                Some(container_id),
                Some(last),
            )
        }
        Run::Terminated { reason, exit_code } => {
            let prev_term = prev_state.and_then(|s| s.terminated.clone());
            let term = match prev_term {
                Some(t) if t.exit_code == *exit_code && t.reason.as_deref() == Some(*reason) => t,
                _ => ContainerStateTerminated {
                    exit_code: *exit_code,
                    reason: Some((*reason).into()),
                    started_at: prev_started.clone().or(Some(now.clone())),
                    finished_at: Some(now.clone()),
                    container_id: Some(container_id.clone()),
                    ..Default::default()
                },
            };
            (
                ContainerState {
                    terminated: Some(term),
                    ..Default::default()
                },
                false,
                false,
                Some(container_id),
                None,
            )
        }
    };
    let image = c.image.clone().unwrap_or_default();
    ContainerStatus {
        name: c.name.clone(),
        image: normalize_image(&image),
        image_id: if id.is_some() {
            image_id(&image)
        } else {
            String::new()
        },
        container_id: id,
        ready,
        started: Some(started),
        restart_count: restarts,
        state: Some(state),
        last_state: last_state.or_else(|| Some(ContainerState::default())),
        ..Default::default()
    }
}

/// The crash-loop state at `elapsed` since the container first started: the container crashes
/// right away and the kubelet restarts it after a back-off of `first`, doubling up to 5 min.
/// Returns (restarts so far, current back-off, time until the next restart).
pub fn crash_loop_at(first: Duration, elapsed: Duration) -> (i32, Duration, Duration) {
    let cap = Duration::from_secs(300);
    let mut restarts = 0i32;
    let mut t = Duration::ZERO;
    let mut backoff = first;
    loop {
        if t + backoff > elapsed {
            return (restarts, backoff, t + backoff - elapsed);
        }
        t += backoff;
        restarts = restarts.saturating_add(1);
        backoff = (backoff * 2).min(cap);
        if restarts > 100_000 {
            return (restarts, backoff, backoff);
        }
    }
}

fn is_job_pod(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job" && o.api_version.starts_with("batch/"))
}

/// Event reason for an annotation that was malformed or out of range (and handled as absent).
pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";

/// Evaluates one pod bound to one of our nodes.
pub fn evaluate(pod: &Pod, ctx: &PodContext<'_>) -> Outcome {
    let key = pod_key(pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let now_ts = seconds(ctx.now);
    let now = Time(now_ts);
    let prev = pod.status.clone().unwrap_or_default();
    let phase = prev.phase.as_deref().unwrap_or("Pending");
    let Some(spec) = pod.spec.as_ref() else {
        return Outcome::default();
    };
    let mut events = Vec::new();
    let (lifecycle, invalid) = Lifecycle::parse(
        &key,
        pod.metadata
            .annotations
            .as_ref()
            .unwrap_or(&BTreeMap::new()),
    );
    events.extend(invalid.into_iter().map(|e| PodEvent {
        warning: true,
        reason: INVALID_ANNOTATION,
        message: e.to_string(),
    }));

    let terminal = phase == "Succeeded" || phase == "Failed";
    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        // Kubelet deletion: stop the containers (within the grace period, capped), report
        // them terminated, then delete with grace period 0.
        let grace = Duration::from_secs(
            u64::try_from(pod.metadata.deletion_grace_period_seconds.unwrap_or(0)).unwrap_or(0),
        );
        let requested = jiff::Timestamp::from_millisecond(
            deleted.0.as_millisecond() - i64::try_from(grace.as_millis()).unwrap_or(0),
        )
        .unwrap_or(deleted.0);
        let due = add(requested, grace.min(ctx.settings.grace_cap));
        let started = phase == "Running" || terminal;
        let status = if started && !terminal {
            let run = Run::Terminated {
                reason: "Completed",
                exit_code: 0,
            };
            Some(build_status(
                pod,
                ctx,
                &prev,
                &now,
                &uid,
                BuildArgs {
                    phase: phase.to_string(),
                    run: &run,
                    initialized: true,
                    with_ip: true,
                    ready_reason: Some("ContainersNotReady".into()),
                },
            ))
        } else {
            None
        };
        let status = status.filter(|s| status_differs(&prev, s));
        let wait = time_diff(due, ctx.now);
        return if wait.is_zero() || !started || terminal {
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
        };
    }
    if terminal {
        return Outcome {
            events,
            ..Default::default()
        };
    }

    let start_time = prev.start_time.clone().map(|t| t.0).unwrap_or(now_ts);
    let refs = references(pod);
    let mut missing_volumes = Vec::new();
    let mut missing_env = Vec::new();
    for r in &refs {
        let state = (ctx.lookup)(r);
        let problem = match (&state, r.optional) {
            (RefState::Present, _) => None,
            (RefState::Missing, true) => None,
            (RefState::Missing, false) => {
                Some(format!("{} \"{}\" not found", r.kind.noun(), r.name))
            }
            (RefState::NotBound(p), _) => Some(format!(
                "persistentvolumeclaim \"{}\" is not bound (phase {p})",
                r.name
            )),
        };
        if let Some(p) = problem {
            match &r.volume {
                Some(v) => missing_volumes.push((v.clone(), p)),
                None => missing_env.push(p),
            }
        }
    }
    let pending_status = |run: Run, with_ip: bool| {
        build_status(
            pod,
            ctx,
            &prev,
            &now,
            &uid,
            BuildArgs {
                phase: "Pending".into(),
                run: &run,
                initialized: false,
                with_ip,
                ready_reason: Some("ContainersNotReady".into()),
            },
        )
    };
    let changed = |s: PodStatus| Some(s).filter(|s| status_differs(&prev, s));
    // Pending with every container waiting (a missing object, a delayed start), looked at again
    // after `requeue`.
    let waiting = |reason: &'static str,
                   message: Option<String>,
                   with_ip: bool,
                   events: Vec<PodEvent>,
                   requeue: Duration| Outcome {
        status: changed(pending_status(Run::Waiting { reason, message }, with_ip)),
        events,
        requeue: Some(requeue),
        delete: false,
    };

    if !missing_volumes.is_empty() {
        for (volume, problem) in &missing_volumes {
            events.push(PodEvent {
                warning: true,
                reason: "FailedMount",
                message: format!("MountVolume.SetUp failed for volume \"{volume}\" : {problem}"),
            });
        }
        return waiting(
            "ContainerCreating",
            None,
            false,
            events,
            ctx.settings.retry_missing,
        );
    }
    if !missing_env.is_empty() {
        let message = missing_env.join("; ");
        events.push(PodEvent {
            warning: true,
            reason: "Failed",
            message: format!("Error: {message}"),
        });
        return waiting(
            "CreateContainerConfigError",
            Some(message),
            true,
            events,
            ctx.settings.retry_missing,
        );
    }

    // Delayed start.
    if let Some(d) = lifecycle.delay_running {
        let due = add(start_time, d);
        if ctx.now < due {
            let requeue = time_diff(due, ctx.now).max(Duration::from_millis(100));
            return waiting("ContainerCreating", None, false, events, requeue);
        }
    }

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
            let status = build_status(
                pod,
                ctx,
                &prev,
                &now,
                &uid,
                BuildArgs {
                    phase: if success { "Succeeded" } else { "Failed" }.into(),
                    run: &run,
                    initialized: true,
                    with_ip: true,
                    ready_reason: Some("PodCompleted".into()),
                },
            );
            return Outcome {
                status: changed(status),
                events,
                requeue: None,
                delete: false,
            };
        }
        requeue = Some(time_diff(due, ctx.now).max(Duration::from_millis(100)));
    }
    let run = match lifecycle.crash_loop {
        Some(first) => {
            // Anchored at startTime so it survives restarts of this process.
            let (restarts, backoff, next) = crash_loop_at(first, time_diff(ctx.now, start_time));
            requeue = Some(
                requeue
                    .map_or(next, |r: Duration| r.min(next))
                    .max(Duration::from_millis(100)),
            );
            Run::CrashLoop { restarts, backoff }
        }
        None => Run::Running {
            ready: !lifecycle.never_ready,
        },
    };
    let status = build_status(
        pod,
        ctx,
        &prev,
        &now,
        &uid,
        BuildArgs {
            phase: "Running".into(),
            run: &run,
            initialized: true,
            with_ip: true,
            ready_reason: None,
        },
    );
    Outcome {
        status: changed(status),
        events,
        requeue,
        delete: false,
    }
}

struct BuildArgs<'a> {
    phase: String,
    run: &'a Run,
    initialized: bool,
    with_ip: bool,
    /// Reason on Ready/ContainersReady when they are False.
    ready_reason: Option<String>,
}

fn build_status(
    pod: &Pod,
    ctx: &PodContext<'_>,
    prev: &PodStatus,
    now: &Time,
    uid: &str,
    a: BuildArgs<'_>,
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut containers: Vec<&Container> = spec.containers.iter().collect();
    containers.sort_by(|x, y| x.name.cmp(&y.name));
    let container_statuses: Vec<ContainerStatus> = containers
        .iter()
        .map(|c| container_status(uid, c, a.run, now, previous_container(prev, &c.name, false)))
        .collect();
    let init_statuses: Option<Vec<ContainerStatus>> = spec
        .init_containers
        .as_ref()
        .filter(|v| !v.is_empty())
        .map(|inits| {
            inits
                .iter()
                .map(|c| {
                    let run = if a.initialized {
                        Run::Terminated {
                            reason: "Completed",
                            exit_code: 0,
                        }
                    } else {
                        Run::Waiting {
                            reason: "PodInitializing",
                            message: None,
                        }
                    };
                    let mut s = container_status(
                        uid,
                        c,
                        &run,
                        now,
                        previous_container(prev, &c.name, true),
                    );
                    if a.initialized {
                        s.ready = true;
                    }
                    s
                })
                .collect()
        });
    let containers_ready =
        !container_statuses.is_empty() && container_statuses.iter().all(|c| c.ready);
    let not_ready: Vec<&str> = container_statuses
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    // Readiness gates: Ready only when every gate's condition (set by someone else) is True.
    let gates: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .map(|g| g.condition_type.clone())
        .collect();
    let failed_gates: Vec<&String> = gates
        .iter()
        .filter(|g| {
            !prev
                .conditions
                .iter()
                .flatten()
                .any(|c| &c.type_ == *g && c.status == "True")
        })
        .collect();
    let ready = containers_ready && failed_gates.is_empty();
    let cr_message = (!containers_ready)
        .then(|| format!("containers with unready status: [{}]", not_ready.join(" ")));
    let (ready_reason, ready_message) = if !containers_ready {
        (
            a.ready_reason.clone().or(Some("ContainersNotReady".into())),
            cr_message.clone(),
        )
    } else if !failed_gates.is_empty() {
        (
            Some("ReadinessGatesNotReady".into()),
            Some(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                failed_gates[0]
            )),
        )
    } else {
        (None, None)
    };
    let cr_reason = (!containers_ready).then(|| {
        a.ready_reason
            .clone()
            .unwrap_or("ContainersNotReady".into())
    });
    let mut conditions = vec![
        condition(
            "Initialized",
            a.initialized,
            (!a.initialized).then(|| "ContainersNotInitialized".into()),
            None,
            now,
            prev,
        ),
        condition("Ready", ready, ready_reason, ready_message, now, prev),
        condition(
            "ContainersReady",
            containers_ready,
            cr_reason,
            cr_message,
            now,
            prev,
        ),
    ];
    // PodScheduled is the scheduler's; other types (readiness gates, DisruptionTarget) belong
    // to whoever set them.
    let ours = ["Initialized", "Ready", "ContainersReady"];
    for c in prev.conditions.iter().flatten() {
        if !ours.contains(&c.type_.as_str()) {
            conditions.push(c.clone());
        }
    }
    if !conditions.iter().any(|c| c.type_ == "PodScheduled") {
        conditions.push(condition("PodScheduled", true, None, None, now, prev));
    }
    let ip = if a.with_ip {
        ctx.pod_ip.map(|ip| ip.to_string())
    } else {
        None
    };
    PodStatus {
        phase: Some(a.phase),
        conditions: Some(conditions),
        host_ip: Some(ctx.host_ip.to_string()),
        pod_ip: ip.clone().or_else(|| prev.pod_ip.clone()),
        pod_ips: ip
            .map(|ip| vec![PodIP { ip }])
            .or_else(|| prev.pod_ips.clone()),
        start_time: Some(prev.start_time.clone().unwrap_or(now.clone())),
        qos_class: Some(qos_class(pod).into()),
        container_statuses: Some(container_statuses),
        init_container_statuses: init_statuses,
        ..Default::default()
    }
}

/// Whether writing `desired` would change the pod's status: compares the fields we set.
pub fn status_differs(current: &PodStatus, desired: &PodStatus) -> bool {
    let (Ok(serde_json::Value::Object(cur)), Ok(serde_json::Value::Object(want))) =
        (serde_json::to_value(current), serde_json::to_value(desired))
    else {
        return true;
    };
    want.iter().any(|(k, v)| cur.get(k) != Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("ts")
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("pod yaml")
    }

    const BASE: &str = r#"
metadata: {name: p, namespace: ns, uid: u1, creationTimestamp: "1970-01-01T00:01:40Z"}
spec:
  nodeName: hn-0
  containers: [{name: app, image: nginx}]
"#;

    fn with(extra_meta: &str, extra_spec: &str) -> Pod {
        let mut p = pod(BASE);
        if !extra_meta.is_empty() {
            let m: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
                serde_yaml::from_str(extra_meta).expect("meta");
            p.metadata.annotations = m.annotations.or(p.metadata.annotations);
            p.metadata.owner_references = m.owner_references.or(p.metadata.owner_references);
            p.metadata.deletion_timestamp = m.deletion_timestamp.or(p.metadata.deletion_timestamp);
            p.metadata.deletion_grace_period_seconds = m
                .deletion_grace_period_seconds
                .or(p.metadata.deletion_grace_period_seconds);
        }
        if !extra_spec.is_empty() {
            let s: k8s_openapi::api::core::v1::PodSpec =
                serde_yaml::from_str(extra_spec).expect("spec");
            p.spec = Some(s);
        }
        p
    }

    fn run(p: &Pod, now: i64, present: &HashSet<String>) -> Outcome {
        let lookup = |r: &ObjRef| {
            let key = format!("{:?}/{}", r.kind, r.name);
            if present.contains(&key) {
                RefState::Present
            } else if present.contains(&format!("unbound:{key}")) {
                RefState::NotBound("Pending".into())
            } else {
                RefState::Missing
            }
        };
        evaluate(
            p,
            &PodContext {
                now: ts(now),
                host_ip: "127.0.0.1",
                pod_ip: Some(Ipv4Addr::new(10, 128, 0, 2)),
                settings: PodSettings::default(),
                lookup: &lookup,
            },
        )
    }

    /// Applies the outcome's status like the API would (merge of the top-level fields).
    fn apply(p: &Pod, o: &Outcome) -> Pod {
        let mut p = p.clone();
        if let Some(s) = &o.status {
            p.status = Some(s.clone());
        }
        p
    }

    fn summary(o: &Outcome, p: &Pod) -> String {
        let st = o.status.clone().or(p.status.clone()).unwrap_or_default();
        let c = st.container_statuses.iter().flatten().next();
        let state = c
            .and_then(|c| c.state.as_ref())
            .map(|s| {
                if let Some(w) = &s.waiting {
                    format!("waiting:{}", w.reason.clone().unwrap_or_default())
                } else if s.running.is_some() {
                    "running".to_string()
                } else if let Some(t) = &s.terminated {
                    format!("terminated:{}", t.reason.clone().unwrap_or_default())
                } else {
                    "none".into()
                }
            })
            .unwrap_or_default();
        let ready = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
            .unwrap_or_default();
        format!(
            "{} {} ready={} ip={} restarts={} events={:?} requeue={:?} delete={}",
            st.phase.unwrap_or_default(),
            state,
            ready,
            st.pod_ip.unwrap_or_default(),
            c.map(|c| c.restart_count).unwrap_or(0),
            o.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
            o.requeue.map(|d| d.as_secs()),
            o.delete
        )
    }

    #[test]
    fn transitions() {
        let present: HashSet<String> = ["Secret/s", "ConfigMap/c", "Pvc/claim"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        struct Case {
            name: &'static str,
            pod: Pod,
            /// (seconds since epoch, expected summary) evaluated in order, each applied.
            steps: Vec<(i64, &'static str)>,
        }
        let cases = vec![
            Case {
                name: "plain pod runs at once",
                pod: with("", ""),
                steps: vec![
                    (
                        100,
                        "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                    ),
                    (
                        200,
                        "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                    ),
                ],
            },
            Case {
                name: "delayRunning",
                pod: with("annotations: {zhizuqiu.github.com/delayRunning: 10s}", ""),
                steps: vec![
                    (
                        100,
                        "Pending waiting:ContainerCreating ready=False ip= restarts=0 events=[] requeue=Some(10) delete=false",
                    ),
                    (
                        105,
                        "Pending waiting:ContainerCreating ready=False ip= restarts=0 events=[] requeue=Some(5) delete=false",
                    ),
                    (
                        110,
                        "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                    ),
                ],
            },
            Case {
                name: "delaySucceeded",
                pod: with("annotations: {mock-kind.io/delaySucceeded: 3s}", ""),
                steps: vec![
                    (
                        100,
                        "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=Some(3) delete=false",
                    ),
                    (
                        103,
                        "Succeeded terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                    ),
                    (
                        500,
                        "Succeeded terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                    ),
                ],
            },
            Case {
                name: "delayFailed",
                pod: with("annotations: {mock-kind.io/delayFailed: 2s}", ""),
                steps: vec![
                    (
                        100,
                        "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=Some(2) delete=false",
                    ),
                    (
                        102,
                        "Failed terminated:Error ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                    ),
                ],
            },
            Case {
                name: "job pod completes after the default",
                pod: with(
                    "ownerReferences: [{apiVersion: batch/v1, kind: Job, name: j, uid: j1}]",
                    "{restartPolicy: Never, containers: [{name: app, image: busybox}]}",
                ),
                steps: vec![
                    (
                        100,
                        "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=Some(5) delete=false",
                    ),
                    (
                        105,
                        "Succeeded terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                    ),
                ],
            },
            Case {
                name: "crash loop with doubling back-off",
                pod: with("annotations: {mock-kind.io/crashLoop: 10s}", ""),
                steps: vec![
                    (
                        100,
                        "Running waiting:CrashLoopBackOff ready=False ip=10.128.0.2 restarts=0 events=[] requeue=Some(10) delete=false",
                    ),
                    (
                        110,
                        "Running waiting:CrashLoopBackOff ready=False ip=10.128.0.2 restarts=1 events=[] requeue=Some(20) delete=false",
                    ),
                    (
                        135,
                        "Running waiting:CrashLoopBackOff ready=False ip=10.128.0.2 restarts=2 events=[] requeue=Some(35) delete=false",
                    ),
                ],
            },
            Case {
                name: "never ready",
                pod: with("annotations: {mock-kind.io/neverReady: \"true\"}", ""),
                steps: vec![(
                    100,
                    "Running running ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                )],
            },
            Case {
                name: "bad annotation: event, pod still runs",
                pod: with("annotations: {mock-kind.io/delayRunning: soon}", ""),
                steps: vec![(
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[\"InvalidAnnotation\"] requeue=None delete=false",
                )],
            },
            Case {
                name: "missing secret volume",
                pod: with(
                    "",
                    "{containers: [{name: app, image: nginx}], volumes: [{name: v, secret: {secretName: nope}}]}",
                ),
                steps: vec![(
                    100,
                    "Pending waiting:ContainerCreating ready=False ip= restarts=0 events=[\"FailedMount\"] requeue=Some(20) delete=false",
                )],
            },
            Case {
                name: "optional missing secret is fine",
                pod: with(
                    "",
                    "{containers: [{name: app, image: nginx}], volumes: [{name: v, secret: {secretName: nope, optional: true}}]}",
                ),
                steps: vec![(
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                )],
            },
            Case {
                name: "present secret, configmap and bound pvc",
                pod: with(
                    "",
                    "{containers: [{name: app, image: nginx, envFrom: [{configMapRef: {name: c}}]}], volumes: [{name: v, secret: {secretName: s}}, {name: d, persistentVolumeClaim: {claimName: claim}}]}",
                ),
                steps: vec![(
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                )],
            },
            Case {
                name: "missing configmap env",
                pod: with(
                    "",
                    "{containers: [{name: app, image: nginx, env: [{name: X, valueFrom: {configMapKeyRef: {name: gone, key: k}}}]}]}",
                ),
                steps: vec![(
                    100,
                    "Pending waiting:CreateContainerConfigError ready=False ip=10.128.0.2 restarts=0 events=[\"Failed\"] requeue=Some(20) delete=false",
                )],
            },
            Case {
                name: "missing projected configmap",
                pod: with(
                    "",
                    "{containers: [{name: app, image: nginx}], volumes: [{name: v, projected: {sources: [{configMap: {name: gone}}]}}]}",
                ),
                steps: vec![(
                    100,
                    "Pending waiting:ContainerCreating ready=False ip= restarts=0 events=[\"FailedMount\"] requeue=Some(20) delete=false",
                )],
            },
            Case {
                name: "deleted running pod: terminate, then delete after the capped grace",
                pod: with(
                    "{deletionTimestamp: \"1970-01-01T00:02:10Z\", deletionGracePeriodSeconds: 30}",
                    "",
                ),
                steps: vec![
                    (
                        100,
                        "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                    ),
                    // deletion requested at 100 (130 - 30), grace capped to 1 s
                    (
                        100,
                        "Running terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=Some(1) delete=false",
                    ),
                    (
                        101,
                        "Running terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=true",
                    ),
                ],
            },
        ];
        for case in cases {
            let mut p = case.pod.clone();
            let deletion = p.metadata.deletion_timestamp.take();
            for (i, (now, want)) in case.steps.iter().enumerate() {
                // The deletion case first runs the pod, then marks it deleted.
                if i == 1 && deletion.is_some() {
                    p.metadata.deletion_timestamp = deletion.clone();
                }
                let o = run(&p, *now, &present);
                assert_eq!(summary(&o, &p), *want, "{} step {i}", case.name);
                p = apply(&p, &o);
            }
        }
    }

    #[test]
    fn unbound_pvc_waits() {
        let present: HashSet<String> = ["unbound:Pvc/claim".to_string()].into_iter().collect();
        let p = with(
            "",
            "{containers: [{name: app, image: nginx}], volumes: [{name: d, persistentVolumeClaim: {claimName: claim}}]}",
        );
        let o = run(&p, 100, &present);
        assert_eq!(o.events.len(), 1);
        assert!(o.events[0].message.contains("not bound"), "{:?}", o.events);
    }

    #[test]
    fn missing_secret_then_present_runs() {
        let p = with(
            "",
            "{containers: [{name: app, image: nginx}], volumes: [{name: v, secret: {secretName: later}}]}",
        );
        let o = run(&p, 100, &HashSet::new());
        assert_eq!(
            o.events[0].message,
            "MountVolume.SetUp failed for volume \"v\" : secret \"later\" not found"
        );
        let p = apply(&p, &o);
        let o = run(&p, 130, &["Secret/later".to_string()].into_iter().collect());
        let st = o.status.expect("status written");
        assert_eq!(st.phase.as_deref(), Some("Running"));
        // startTime stays at the first look, the container starts now.
        assert_eq!(st.start_time.map(|t| t.0.as_second()), Some(100));
        let started = st
            .container_statuses
            .as_ref()
            .and_then(|c| c[0].state.as_ref()?.running.as_ref()?.started_at.clone());
        assert_eq!(started.map(|t| t.0.as_second()), Some(130));
    }

    #[test]
    fn running_status_is_kubelet_shaped() {
        let p = with(
            "",
            r#"
containers: [{name: b, image: "quay.io/x/y:1", resources: {requests: {cpu: "1", memory: 1Gi}, limits: {cpu: "1", memory: 1Gi}}}, {name: a, image: "ghcr.io/o/r@sha256:abc", resources: {limits: {cpu: "1", memory: 1Gi}}}]
initContainers: [{name: init, image: busybox, resources: {limits: {cpu: "1", memory: 1Gi}}}]
readinessGates: [{conditionType: example.com/gate}]
"#,
        );
        let o = run(&p, 100, &HashSet::new());
        let st = o.status.expect("status");
        assert_eq!(st.qos_class.as_deref(), Some("Guaranteed"));
        let names: Vec<&str> = st
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"], "sorted by name as the kubelet does");
        let cs = st.container_statuses.clone().unwrap_or_default();
        assert_eq!(cs[0].image, "ghcr.io/o/r@sha256:abc");
        assert_eq!(cs[0].image_id, "ghcr.io/o/r@sha256:abc");
        assert_eq!(cs[1].image, "quay.io/x/y:1");
        assert!(
            cs[1].image_id.starts_with("quay.io/x/y@sha256:"),
            "{}",
            cs[1].image_id
        );
        assert!(
            cs[1]
                .container_id
                .as_deref()
                .is_some_and(|id| id.starts_with("containerd://") && id.len() == 13 + 64)
        );
        assert_eq!(cs[1].started, Some(true));
        let init = st.init_container_statuses.clone().unwrap_or_default();
        assert_eq!(init[0].image, "docker.io/library/busybox:latest");
        assert_eq!(
            init[0]
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.reason.clone())
                .as_deref(),
            Some("Completed")
        );
        let cond = |t: &str| {
            st.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .map(|c| c.status.clone())
        };
        assert_eq!(cond("ContainersReady").as_deref(), Some("True"));
        assert_eq!(
            cond("Ready").as_deref(),
            Some("False"),
            "readiness gate not set"
        );
        assert_eq!(cond("Initialized").as_deref(), Some("True"));
        assert_eq!(cond("PodScheduled").as_deref(), Some("True"));
        assert_eq!(
            st.pod_ips.as_ref().map(|v| v[0].ip.clone()).as_deref(),
            Some("10.128.0.2")
        );
        assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));

        // Someone sets the gate: the pod becomes Ready, the gate condition is kept.
        let mut p = apply(
            &p,
            &Outcome {
                status: Some(st),
                ..Default::default()
            },
        );
        if let Some(s) = p.status.as_mut() {
            s.conditions
                .get_or_insert_with(Vec::new)
                .push(PodCondition {
                    type_: "example.com/gate".into(),
                    status: "True".into(),
                    ..Default::default()
                });
        }
        let st = run(&p, 101, &HashSet::new()).status.expect("status");
        let cond = |t: &str| {
            st.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .map(|c| c.status.clone())
        };
        assert_eq!(cond("Ready").as_deref(), Some("True"));
        assert_eq!(cond("example.com/gate").as_deref(), Some("True"));
    }

    #[test]
    fn qos_classes() {
        let cases = [
            ("best effort", "{containers: [{name: a}]}", "BestEffort"),
            (
                "burstable",
                "{containers: [{name: a, resources: {requests: {cpu: 100m}}}]}",
                "Burstable",
            ),
            (
                "guaranteed",
                "{containers: [{name: a, resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}}]}",
                "Guaranteed",
            ),
            (
                "limits differ from requests",
                "{containers: [{name: a, resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 2, memory: 1Gi}}}]}",
                "Burstable",
            ),
        ];
        for (name, spec, want) in cases {
            let p = with("", spec);
            assert_eq!(qos_class(&p), want, "{name}");
        }
    }

    #[test]
    fn images() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.19", "docker.io/library/nginx:1.19"),
            ("org/app", "docker.io/org/app:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("k8s.gcr.io/pause:3.2", "k8s.gcr.io/pause:3.2"),
            ("r.io/a@sha256:ff", "r.io/a@sha256:ff"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_image(input), want, "{input}");
        }
    }

    #[test]
    fn crash_loop_timing() {
        let s = Duration::from_secs;
        let cases = [
            (0, (0, 10, 10)),
            (9, (0, 10, 1)),
            (10, (1, 20, 20)),
            (30, (2, 40, 40)),
            (70, (3, 80, 80)),
            (10 + 20 + 40 + 80 + 160 + 300, (6, 300, 300)),
        ];
        for (elapsed, (restarts, backoff, next)) in cases {
            assert_eq!(
                crash_loop_at(s(10), s(elapsed)),
                (restarts, s(backoff), s(next)),
                "elapsed {elapsed}"
            );
        }
    }
}
