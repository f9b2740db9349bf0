//! Ephemeral containers (`kubectl debug`, the `ephemeralcontainers` subresource): the kubelet
//! starts each one in a running pod and reports it in `ephemeralContainerStatuses`: Running,
//! never ready (ephemeral containers have no probes), `started` unset (1.20's prober sets it only
//! for regular and init containers), never restarted.
//!
//! On 1.20 the apiserver accepts them only with the EphemeralContainers feature gate (alpha,
//! off by default); without it `spec.ephemeralContainers` stays empty and nothing here runs.

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, EphemeralContainer, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::containers::{PodId, Run, container_status};

/// Ephemeral container `e` as a container: what its status and its logs need (name, image).
pub fn as_container(e: &EphemeralContainer) -> Container {
    Container {
        name: e.name.clone(),
        image: e.image.clone(),
        ..Default::default()
    }
}

/// The ephemeral containers' statuses for a pod in `phase`: Running while the pod runs
/// (startedAt kept from `prev`); in any other phase the statuses already written are kept
/// (the kubelet starts ephemeral containers only in a running pod). `None` when the pod has
/// none and reported none.
pub fn statuses(
    id: &PodId,
    spec: &PodSpec,
    phase: &str,
    now: &Time,
    prev: &PodStatus,
) -> Option<Vec<ContainerStatus>> {
    let ephemeral = spec.ephemeral_containers.as_deref().unwrap_or_default();
    if phase != "Running" || ephemeral.is_empty() {
        return prev.ephemeral_container_statuses.clone();
    }
    let previous = |name: &str| {
        prev.ephemeral_container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == name)
    };
    let run = Run::Running {
        ready: false,
        started: true,
    };
    Some(
        ephemeral
            .iter()
            .map(|e| {
                let c = as_container(e);
                let mut s = container_status(id, &c, &run, now, previous(&e.name));
                s.started = None;
                s
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, EphemeralContainer, Pod};

    fn time(s: &str) -> Time {
        Time(s.parse().expect("time"))
    }

    fn spec(names: &[&str]) -> PodSpec {
        PodSpec {
            ephemeral_containers: Some(
                names
                    .iter()
                    .map(|n| EphemeralContainer {
                        name: (*n).into(),
                        image: Some("busybox".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn running_since(s: &ContainerStatus) -> Option<String> {
        let started = s.state.as_ref()?.running.as_ref()?.started_at.as_ref()?;
        Some(started.0.to_string())
    }

    #[test]
    fn ephemeral_statuses() {
        let id = PodId::of(&Pod::default());
        let now = time("2026-01-01T00:01:00Z");
        let earlier = PodStatus {
            ephemeral_container_statuses: Some(vec![ContainerStatus {
                name: "debugger".into(),
                state: Some(ContainerState {
                    running: Some(k8s_openapi::api::core::v1::ContainerStateRunning {
                        started_at: Some(time("2026-01-01T00:00:30Z")),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        // (name, spec, phase, prev, want: (name, running since) per status, or None)
        type Want = Option<Vec<(&'static str, &'static str)>>;
        let cases: Vec<(&str, PodSpec, &str, PodStatus, Want)> = vec![
            (
                "none",
                PodSpec::default(),
                "Running",
                PodStatus::default(),
                None,
            ),
            (
                "added to a running pod: Running from now",
                spec(&["debugger"]),
                "Running",
                PodStatus::default(),
                Some(vec![("debugger", "2026-01-01T00:01:00Z")]),
            ),
            (
                "startedAt kept",
                spec(&["debugger"]),
                "Running",
                earlier.clone(),
                Some(vec![("debugger", "2026-01-01T00:00:30Z")]),
            ),
            (
                "a second one starts, the first keeps its time",
                spec(&["debugger", "shell"]),
                "Running",
                earlier.clone(),
                Some(vec![
                    ("debugger", "2026-01-01T00:00:30Z"),
                    ("shell", "2026-01-01T00:01:00Z"),
                ]),
            ),
            (
                "a pending pod starts none",
                spec(&["debugger"]),
                "Pending",
                PodStatus::default(),
                None,
            ),
            (
                "a pod that ended keeps what was written",
                spec(&["debugger"]),
                "Succeeded",
                earlier.clone(),
                Some(vec![("debugger", "2026-01-01T00:00:30Z")]),
            ),
        ];
        for (name, spec, phase, prev, want) in cases {
            let got = statuses(&id, &spec, phase, &now, &prev);
            let got_pairs = got.as_ref().map(|v| {
                v.iter()
                    .map(|s| (s.name.clone(), running_since(s).unwrap_or_default()))
                    .collect::<Vec<_>>()
            });
            let want_pairs = want.map(|v| {
                v.iter()
                    .map(|(n, t)| ((*n).to_string(), (*t).to_string()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got_pairs, want_pairs, "{name}");
            for s in got.iter().flatten() {
                assert!(!s.ready, "{name}: ephemeral containers are never ready");
                assert_eq!(s.restart_count, 0, "{name}");
            }
            if phase == "Running" {
                for s in got.iter().flatten() {
                    assert_eq!(s.started, None, "{name}: started unset");
                    assert!(s.container_id.is_some(), "{name}: has a container id");
                    assert_eq!(s.image, "docker.io/library/busybox:latest", "{name}");
                }
            }
        }
    }
}
