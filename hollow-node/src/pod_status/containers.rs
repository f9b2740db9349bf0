//! One container's status as the kubelet reports it: image names, ids and the state for what
//! the container is doing ([`Run`]), keeping timestamps that did not change.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::node_status::stable_id;

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

/// The runtime's ID of instance `restarts` of container `container` in the pod with UID `uid`
/// (`containerID` without `containerd://`; cAdvisor's cgroup and alias of the container).
pub fn container_id(uid: &str, container: &str, restarts: i32) -> String {
    stable_id(&format!("{uid}/{container}/{restarts}"))
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

/// What each container is doing in the status being built.
#[derive(Debug, Clone, PartialEq)]
pub enum Run {
    Waiting {
        reason: &'static str,
        message: Option<String>,
    },
    /// Running; `started` false while a startup probe has not passed (then never ready).
    Running {
        ready: bool,
        started: bool,
    },
    CrashLoop {
        restarts: i32,
        backoff: Duration,
    },
    Terminated {
        reason: &'static str,
        exit_code: i32,
    },
    /// Exited for good at a known moment (init containers), after `restarts` restarts; `last`
    /// is the run before.
    Exited {
        exit: Exit,
        restarts: i32,
        last: Option<Exit>,
    },
    /// Restarted by the kubelet: running since `running_since`, or (`None`) waiting out
    /// `backoff` after its last exit.
    Restarting {
        restarts: i32,
        running_since: Option<Time>,
        ready: bool,
        started: bool,
        backoff: Duration,
        last: Option<Exit>,
    },
}

/// How a container's run ended, for `lastState.terminated`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub reason: &'static str,
    pub exit_code: i32,
    pub started: Time,
    pub finished: Time,
}

impl Exit {
    /// The terminated state of the container `id` that ended so.
    fn state(&self, id: String) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: self.exit_code,
                reason: Some(self.reason.into()),
                started_at: Some(self.started.clone()),
                finished_at: Some(self.finished.clone()),
                container_id: Some(id),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The pod as the kubelet names it in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodId {
    pub uid: String,
    /// `name_namespace(uid)`, the kubelet's `format.Pod`.
    pub label: String,
}

impl PodId {
    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let label = format!(
            "{}_{}({uid})",
            pod.metadata.name.as_deref().unwrap_or(""),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        PodId { uid, label }
    }
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`): the kubelet's back-off message.
fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

fn crash_loop_back_off(backoff: Duration, container: &str, pod: &PodId) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some("CrashLoopBackOff".into()),
            message: Some(format!(
                "back-off {} restarting failed container={container} pod={}",
                go_duration(backoff),
                pod.label
            )),
        }),
        ..Default::default()
    }
}

/// Runs of a container that have exited, as its status says: restarts, plus the one in
/// back-off or stopped. Comparing it with the runs exited now records each exit's Events once.
pub fn exited_runs(prev: Option<&ContainerStatus>) -> i32 {
    let Some(c) = prev else { return 0 };
    let state = c.state.as_ref();
    let exited = state.is_some_and(|s| {
        s.terminated.is_some()
            || s.waiting
                .as_ref()
                .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
    });
    c.restart_count.saturating_add(i32::from(exited))
}

pub fn previous_container<'a>(
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

pub fn container_status(
    pod: &PodId,
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
        Run::CrashLoop { restarts, .. }
        | Run::Restarting { restarts, .. }
        | Run::Exited { restarts, .. } => *restarts,
        _ => prev.map(|p| p.restart_count).unwrap_or(0),
    };
    let id_of =
        |restarts: i32| format!("containerd://{}", container_id(&pod.uid, &c.name, restarts));
    let container_id = id_of(restarts);
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
        Run::Running { ready, started } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: prev_started.or(Some(now.clone())),
                }),
                ..Default::default()
            },
            *ready && *started,
            *started,
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
                crash_loop_back_off(*backoff, &c.name, pod),
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
                // A restarted container stopped for good keeps its previous run.
                prev.and_then(|p| p.last_state.clone()),
            )
        }
        Run::Exited { exit, last, .. } => (
            exit.state(container_id.clone()),
            false,
            false,
            Some(container_id),
            last.as_ref()
                .map(|l| l.state(id_of(restarts.saturating_sub(1)))),
        ),
        Run::Restarting {
            running_since,
            ready,
            started,
            backoff,
            last,
            ..
        } => {
            // While running, the last run is the previous container; while backing off, the
            // one that just exited.
            let last_id = match running_since {
                Some(_) => id_of(restarts.saturating_sub(1)),
                None => container_id.clone(),
            };
            let last = last.as_ref().map(|e| e.state(last_id));
            match running_since {
                Some(t) => (
                    ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(t.clone()),
                        }),
                        ..Default::default()
                    },
                    *ready && *started,
                    *started,
                    Some(container_id),
                    last,
                ),
                None => (
                    crash_loop_back_off(*backoff, &c.name, pod),
                    false,
                    false,
                    Some(container_id),
                    last,
                ),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
