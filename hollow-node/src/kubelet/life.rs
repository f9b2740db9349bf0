//! What the kubelet API needs to remember of a pod: its containers' lives as the pod watch
//! last reported them (state, restarts, the previous instance's end) and the user's scripted
//! log lines. Built from each Pod the watch delivers, so a log request needs no API call; a
//! few hundred bytes a pod, names and times only.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, ContainerStatus, Pod};

use crate::annotations::PREFIX;
use crate::kubelet::cpu::CpuCounter;
use crate::usage::{self, Usage};

/// `mock-kind.io/logLines`: lines every container of the pod writes after each start, one per
/// line of the value.
pub const LOG_LINES: &str = "logLines";
/// Most scripted lines kept a pod; more are dropped.
pub const MAX_LOG_LINES: usize = 100;
/// Longest scripted line in bytes; longer ones are cut at a character boundary.
pub const MAX_LOG_LINE: usize = 1024;

/// How one instance of a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    pub exit_code: i32,
    pub reason: Option<String>,
}

/// What a container is doing now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Waiting { reason: String },
    Running { started: Option<Timestamp> },
    Terminated(Ended),
}

/// One container's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLife {
    pub name: String,
    pub image: String,
    pub restarts: i32,
    pub ready: bool,
    pub state: State,
    /// The previous instance, after a restart.
    pub last: Option<Ended>,
    /// What it uses while it runs (`mock-kind.io/usage` or a share of its requests).
    pub usage: Usage,
    /// Its CPU time so far while it runs with a known start ([`carry_cpu`]); `None` otherwise.
    pub cpu: Option<CpuCounter>,
}

impl ContainerLife {
    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }
}

/// A pod's QoS class, which names its cgroup (`/kubepods[/burstable|/besteffort]/pod<uid>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    #[default]
    Burstable,
    BestEffort,
}

impl Qos {
    /// `status.qosClass` as the apiserver sets it at creation; else what the kubelet computes
    /// from the spec.
    pub fn of(pod: &Pod) -> Qos {
        let class = pod.status.as_ref().and_then(|s| s.qos_class.as_deref());
        match class.unwrap_or_else(|| crate::pod_status::qos_class(pod)) {
            "Guaranteed" => Qos::Guaranteed,
            "BestEffort" => Qos::BestEffort,
            _ => Qos::Burstable,
        }
    }

    /// The QoS cgroup under `/kubepods` with the cgroupfs driver: none for Guaranteed.
    pub fn cgroup(self) -> &'static str {
        match self {
            Qos::Guaranteed => "",
            Qos::Burstable => "/burstable",
            Qos::BestEffort => "/besteffort",
        }
    }
}

/// One pod on one of this process's nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLife {
    pub uid: String,
    pub node: u32,
    /// One byte, in what was padding after `node` (`PodLife` keeps its size).
    pub qos: Qos,
    /// `status.startTime`.
    pub started: Option<Timestamp>,
    pub containers: Vec<ContainerLife>,
    pub script: Arc<[String]>,
    /// For label selectors of the metrics API.
    pub labels: BTreeMap<String, String>,
}

impl PodLife {
    pub fn container(&self, name: &str) -> Option<&ContainerLife> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The nanocores its counted containers use now (those with a CPU counter).
    pub fn cpu_nanocores(&self) -> u64 {
        self.containers
            .iter()
            .filter_map(|c| c.cpu.as_ref())
            .fold(0, |sum, c| sum.saturating_add(c.nanocores()))
    }
}

/// Gives each running container of `life` its CPU counter at `now`, going on from the one it
/// had in `prev` (the same pod as last seen): same instance and usage, the same counter; a new
/// usage, a new segment; a new instance (restart, or another pod of the same name), from zero.
pub fn carry_cpu(life: &mut PodLife, prev: Option<&PodLife>, now: Timestamp) {
    for c in &mut life.containers {
        let State::Running {
            started: Some(started),
        } = c.state
        else {
            continue;
        };
        let before = prev
            .and_then(|p| p.container(&c.name))
            .and_then(|p| p.cpu.as_ref());
        c.cpu = Some(CpuCounter::next(before, started, c.usage.cpu_nanos, now));
    }
}

fn ended(t: &ContainerStateTerminated) -> Ended {
    Ended {
        started: t.started_at.as_ref().map(|t| t.0),
        finished: t.finished_at.as_ref().map(|t| t.0),
        exit_code: t.exit_code,
        reason: t.reason.clone(),
    }
}

fn life(c: &Container, usage: Usage, status: Option<&ContainerStatus>) -> ContainerLife {
    let (name, image) = (&c.name, c.image.as_deref().unwrap_or(""));
    let Some(s) = status else {
        return ContainerLife {
            name: name.to_string(),
            image: image.to_string(),
            usage,
            cpu: None,
            restarts: 0,
            ready: false,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
            },
            last: None,
        };
    };
    let state = s.state.as_ref();
    let state = if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        State::Terminated(ended(t))
    } else if let Some(r) = state.and_then(|s| s.running.as_ref()) {
        State::Running {
            started: r.started_at.as_ref().map(|t| t.0),
        }
    } else {
        let reason = state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
            .unwrap_or_else(|| "ContainerCreating".into());
        State::Waiting { reason }
    };
    ContainerLife {
        name: name.to_string(),
        image: image.to_string(),
        usage,
        cpu: None,
        restarts: s.restart_count.max(0),
        ready: s.ready,
        state,
        last: s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .map(ended),
    }
}

/// The scripted lines of `value`: at most [`MAX_LOG_LINES`], each cut to [`MAX_LOG_LINE`]
/// bytes, carriage returns dropped.
pub fn script(value: Option<&str>) -> Arc<[String]> {
    value
        .into_iter()
        .flat_map(str::lines)
        .take(MAX_LOG_LINES)
        .map(|l| telemetry::char_prefix(l.trim_end_matches('\r'), MAX_LOG_LINE).to_string())
        .collect()
}

/// The life of `pod` (on node `node`) as its status tells it: every init, app and ephemeral
/// (`kubectl debug`) container of its spec, with its status when there is one.
pub fn of(pod: &Pod, node: u32) -> PodLife {
    let status = pod.status.as_ref();
    let mut containers = Vec::new();
    let usage_spec = usage::spec_of(pod.metadata.annotations.as_ref());
    if let Some(spec) = &pod.spec {
        let ephemeral: Vec<Container> = spec
            .ephemeral_containers
            .iter()
            .flatten()
            .map(crate::pod_status::as_container)
            .collect();
        let groups = [
            (
                spec.init_containers.as_deref().unwrap_or_default(),
                status.and_then(|s| s.init_container_statuses.as_deref()),
            ),
            (
                spec.containers.as_slice(),
                status.and_then(|s| s.container_statuses.as_deref()),
            ),
            (
                ephemeral.as_slice(),
                status.and_then(|s| s.ephemeral_container_statuses.as_deref()),
            ),
        ];
        for (specs, statuses) in groups {
            for c in specs {
                let st = statuses
                    .unwrap_or_default()
                    .iter()
                    .find(|s| s.name == c.name);
                let used = usage::container(usage_spec.as_ref(), &c.name, usage::requests(c));
                containers.push(life(c, used, st));
            }
        }
    }
    let key = format!("{PREFIX}{LOG_LINES}");
    let value = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&key))
        .map(String::as_str);
    PodLife {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node,
        qos: Qos::of(pod),
        started: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        containers,
        script: script(value),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn script_is_bounded() {
        let long = "é".repeat(MAX_LOG_LINE);
        let many = "x\n".repeat(MAX_LOG_LINES + 5);
        let cases: [(&str, Option<&str>, usize, usize); 5] = [
            ("absent", None, 0, 0),
            ("one line", Some("hello"), 1, 5),
            ("crlf", Some("a\r\nb\r\n"), 2, 1),
            ("long line cut", Some(&long), 1, MAX_LOG_LINE),
            ("too many lines", Some(&many), MAX_LOG_LINES, 1),
        ];
        for (name, value, lines, first_len) in cases {
            let got = script(value);
            assert_eq!(got.len(), lines, "{name}");
            if let Some(first) = got.first() {
                assert_eq!(first.len(), first_len, "{name}");
            }
        }
    }

    fn pod(status: serde_json::Value, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": annotations},
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "envoy"}],
            },
            "status": status,
        }))
        .expect("pod")
    }

    #[test]
    fn lives_come_from_the_pods_status() {
        let t = |s: &str| s.parse::<Timestamp>().expect("ts");
        let crashed = serde_json::json!({
            "initContainerStatuses": [{"name": "init", "image": "busybox", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}}],
            "containerStatuses": [{"name": "app", "image": "nginx", "imageID": "", "ready": false,
                "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                    "startedAt": "2026-01-01T00:00:10Z", "finishedAt": "2026-01-01T00:00:11Z"}}}],
        });
        let cases = [
            (
                "no status yet: every container waits to be created",
                pod(serde_json::json!({}), serde_json::json!({})),
                vec![
                    (
                        "init",
                        0,
                        State::Waiting {
                            reason: "ContainerCreating".into(),
                        },
                        None,
                    ),
                    (
                        "app",
                        0,
                        State::Waiting {
                            reason: "ContainerCreating".into(),
                        },
                        None,
                    ),
                    (
                        "side",
                        0,
                        State::Waiting {
                            reason: "ContainerCreating".into(),
                        },
                        None,
                    ),
                ],
            ),
            (
                "init done, app crash-looping, side not reported",
                pod(crashed, serde_json::json!({})),
                vec![
                    (
                        "init",
                        0,
                        State::Terminated(Ended {
                            started: Some(t("2026-01-01T00:00:00Z")),
                            finished: Some(t("2026-01-01T00:00:01Z")),
                            exit_code: 0,
                            reason: Some("Completed".into()),
                        }),
                        None,
                    ),
                    (
                        "app",
                        2,
                        State::Waiting {
                            reason: "CrashLoopBackOff".into(),
                        },
                        Some(Ended {
                            started: Some(t("2026-01-01T00:00:10Z")),
                            finished: Some(t("2026-01-01T00:00:11Z")),
                            exit_code: 1,
                            reason: Some("Error".into()),
                        }),
                    ),
                    (
                        "side",
                        0,
                        State::Waiting {
                            reason: "ContainerCreating".into(),
                        },
                        None,
                    ),
                ],
            ),
        ];
        for (name, p, want) in cases {
            let life = of(&p, 3);
            assert_eq!((life.uid.as_str(), life.node), ("u1", 3), "{name}");
            let got: Vec<_> = life
                .containers
                .iter()
                .map(|c| (c.name.as_str(), c.restarts, c.state.clone(), c.last.clone()))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        let scripted = of(
            &pod(
                serde_json::json!({}),
                serde_json::json!({"mock-kind.io/logLines": "a\nb"}),
            ),
            0,
        );
        assert_eq!(scripted.script.as_ref(), ["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn ephemeral_containers_have_lives() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {
                "containers": [{"name": "app", "image": "nginx"}],
                "ephemeralContainers": [{"name": "debugger", "image": "busybox"}],
            },
            "status": {"ephemeralContainerStatuses": [{"name": "debugger", "image": "busybox",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}}]},
        }))
        .expect("pod");
        let life = of(&p, 0);
        let debugger = life
            .container("debugger")
            .expect("the ephemeral container's life");
        assert_eq!(
            debugger.state,
            State::Running {
                started: Some("2026-01-01T00:00:05Z".parse().expect("ts"))
            }
        );
        assert_eq!(debugger.image, "busybox");
    }

    #[test]
    fn cpu_counters_carry_over_looks() {
        let t = |s: &str| s.parse::<Timestamp>().expect("ts");
        let running = |started: &str, usage: &str| {
            let status = serde_json::json!({"containerStatuses": [
                {"name": "app", "image": "nginx", "imageID": "", "ready": true, "restartCount": 0,
                 "state": {"running": {"startedAt": started}}}]});
            of(
                &pod(status, serde_json::json!({"mock-kind.io/usage": usage})),
                0,
            )
        };
        let first = {
            let mut l = running("2026-01-01T00:00:00Z", "cpu=1");
            carry_cpu(&mut l, None, t("2026-01-01T00:00:00Z"));
            l
        };
        type Case = (&'static str, PodLife, &'static str, Option<u64>);
        let cases: [Case; 4] = [
            (
                "the same instance and usage: 1 core for 10 s",
                running("2026-01-01T00:00:00Z", "cpu=1"),
                "2026-01-01T00:00:05Z",
                Some(10_000_000_000),
            ),
            (
                "usage halved at 5 s: 5 + 0.5 × 5",
                running("2026-01-01T00:00:00Z", "cpu=500m"),
                "2026-01-01T00:00:05Z",
                Some(7_500_000_000),
            ),
            (
                "restarted at 8 s: 2 s of the new instance",
                running("2026-01-01T00:00:08Z", "cpu=1"),
                "2026-01-01T00:00:08Z",
                Some(2_000_000_000),
            ),
            (
                "not running: no counter",
                of(&pod(serde_json::json!({}), serde_json::json!({})), 0),
                "2026-01-01T00:00:05Z",
                None,
            ),
        ];
        for (name, mut life, seen, want) in cases {
            carry_cpu(&mut life, Some(&first), t(seen));
            let app = life.container("app").and_then(|c| c.cpu);
            let got = app.map(|c| c.at(t("2026-01-01T00:00:10Z")));
            assert_eq!(got, want, "{name}");
            assert_eq!(
                life.cpu_nanocores(),
                app.map_or(0, |c| c.nanocores()),
                "{name}"
            );
        }
    }

    #[test]
    fn qos_classes_name_the_cgroup() {
        let pod = |status: serde_json::Value, resources: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
                "spec": {"containers": [{"name": "app", "image": "nginx", "resources": resources}]},
                "status": status,
            }))
            .expect("pod")
        };
        let equal = serde_json::json!({"requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "1Gi"}});
        let cases = [
            (
                "status says Guaranteed",
                pod(
                    serde_json::json!({"qosClass": "Guaranteed"}),
                    serde_json::json!({}),
                ),
                Qos::Guaranteed,
                "",
            ),
            (
                "no class in the status: requests equal limits",
                pod(serde_json::json!({}), equal),
                Qos::Guaranteed,
                "",
            ),
            (
                "requests only",
                pod(
                    serde_json::json!({}),
                    serde_json::json!({"requests": {"cpu": "1"}}),
                ),
                Qos::Burstable,
                "/burstable",
            ),
            (
                "nothing requested",
                pod(serde_json::json!({}), serde_json::json!({})),
                Qos::BestEffort,
                "/besteffort",
            ),
        ];
        for (name, p, want, cgroup) in cases {
            let life = of(&p, 0);
            assert_eq!((life.qos, life.qos.cgroup()), (want, cgroup), "{name}");
        }
    }

    /// The QoS class sits in what was padding: a pod's life is no larger than without it.
    #[test]
    fn the_qos_class_costs_no_memory() {
        #[allow(dead_code)]
        struct WithoutQos {
            uid: String,
            node: u32,
            started: Option<Timestamp>,
            containers: Vec<ContainerLife>,
            script: Arc<[String]>,
            labels: BTreeMap<String, String>,
        }
        assert_eq!(
            std::mem::size_of::<PodLife>(),
            std::mem::size_of::<WithoutQos>()
        );
    }

    proptest! {
        #[test]
        fn any_script_stays_within_bounds(value in ".{0,4000}") {
            let got = script(Some(&value));
            prop_assert!(got.len() <= MAX_LOG_LINES);
            prop_assert!(got.iter().all(|l| l.len() <= MAX_LOG_LINE && !l.contains('\n')));
        }
    }
}
