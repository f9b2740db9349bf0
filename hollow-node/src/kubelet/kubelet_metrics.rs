//! `/metrics`: a small faithful subset of the kubelet's own metrics (kubernetes
//! pkg/kubelet/metrics/metrics.go, registered in component-base's legacy registry, which
//! prefixes each HELP with the stability level), from the same [`Sample`] as
//! `/metrics/resource`:
//!
//! - `kubelet_node_name{node="<name>"} 1`;
//! - `kubelet_running_pods`: pods with a running sandbox (some container not terminated);
//! - `kubelet_running_containers{container_state="running"|"exited"}`: the running containers,
//!   and the dead ones the runtime keeps (one per container that terminated or restarted). As a
//!   kubelet that has not seen a state yet, a state with no container is not written (a real
//!   kubelet keeps writing a state it once saw at its last count);
//! - `process_start_time_seconds`: the hollow-node process's start, as client_golang's
//!   process collector writes it (no stability prefix).
//!
//! Pure.

use crate::kubelet::stats::{Sample, escape, family, go_float};

/// `/metrics` of the sample's node. Families in name order, samples by label value.
pub fn text(s: &Sample) -> String {
    let running: usize = s.pods.iter().map(|p| p.containers.len()).sum();
    let mut out = String::new();
    family(
        &mut out,
        (
            "kubelet_node_name",
            "[ALPHA] The node's name. The count is always 1.",
            "gauge",
        ),
        &[format!("{{node=\"{}\"}} 1", escape(s.node))],
    );
    let states: Vec<String> = [("exited", s.exited_containers), ("running", running)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| format!("{{container_state=\"{state}\"}} {n}"))
        .collect();
    family(
        &mut out,
        (
            "kubelet_running_containers",
            "[ALPHA] Number of containers currently running",
            "gauge",
        ),
        &states,
    );
    family(
        &mut out,
        (
            "kubelet_running_pods",
            "[ALPHA] Number of pods that have a running pod sandbox",
            "gauge",
        ),
        &[format!(" {}", s.running_pods)],
    );
    let start = s.boot.as_nanosecond() as f64 / 1e9;
    family(
        &mut out,
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
        ),
        &[format!(" {}", go_float(start))],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::stats::sample;
    use crate::kubelet::stats::tests::{START, node_cpu, pod, pod_with, t};

    #[test]
    fn kubelet_metrics_as_the_kubelet_writes_them() {
        let crashed = serde_json::json!({"containerStatuses": [{"name": "app", "image": "busybox",
            "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                "startedAt": "2023-11-14T22:13:20Z", "finishedAt": "2023-11-14T22:13:21Z"}}}]});
        let done = serde_json::json!({"phase": "Succeeded", "containerStatuses": [{"name": "app",
            "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": "2023-11-14T22:13:20Z", "finishedAt": "2023-11-14T22:13:21Z"}}}]});
        type Lives = Vec<(
            std::sync::Arc<str>,
            std::sync::Arc<crate::kubelet::life::PodLife>,
        )>;
        type Case = (&'static str, Lives, &'static str);
        let cases: [Case; 3] = [
            (
                "no pod: no container state, no sandbox",
                vec![],
                "# HELP kubelet_node_name [ALPHA] The node's name. The count is always 1.
# TYPE kubelet_node_name gauge
kubelet_node_name{node=\"hn-0\"} 1
# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox
# TYPE kubelet_running_pods gauge
kubelet_running_pods 0
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.699999e+09
",
            ),
            (
                "two running, one pending, one crash-looping, one completed",
                vec![
                    pod("ns", "web", &["app", "side"], "cpu=1", true),
                    pod("ns", "pending", &["app"], "cpu=1", false),
                    pod_with("ns", "crashing", crashed),
                    pod_with("ns", "done", done.clone()),
                ],
                "# HELP kubelet_node_name [ALPHA] The node's name. The count is always 1.
# TYPE kubelet_node_name gauge
kubelet_node_name{node=\"hn-0\"} 1
# HELP kubelet_running_containers [ALPHA] Number of containers currently running
# TYPE kubelet_running_containers gauge
kubelet_running_containers{container_state=\"exited\"} 2
kubelet_running_containers{container_state=\"running\"} 2
# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox
# TYPE kubelet_running_pods gauge
kubelet_running_pods 3
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.699999e+09
",
            ),
            (
                "only a completed pod: its dead container, no sandbox",
                vec![pod_with("ns", "done", done)],
                "# HELP kubelet_node_name [ALPHA] The node's name. The count is always 1.
# TYPE kubelet_node_name gauge
kubelet_node_name{node=\"hn-0\"} 1
# HELP kubelet_running_containers [ALPHA] Number of containers currently running
# TYPE kubelet_running_containers gauge
kubelet_running_containers{container_state=\"exited\"} 1
# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox
# TYPE kubelet_running_pods gauge
kubelet_running_pods 0
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.699999e+09
",
            ),
        ];
        for (name, pods, want) in cases {
            let s = sample("hn-0", t(START - 1000), &node_cpu(), &pods, t(START + 10));
            assert_eq!(text(&s), want, "{name}");
        }
    }

    #[test]
    fn a_node_name_is_escaped() {
        let s = sample("a\"b\\c\nd", t(START), &node_cpu(), &[], t(START));
        assert!(
            text(&s).contains("kubelet_node_name{node=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{}",
            text(&s)
        );
    }
}
