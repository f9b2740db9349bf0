use std::sync::Arc;

use super::*;
use crate::kubelet::decode::{self, Point};
use crate::kubelet::life;
use proptest::prelude::*;

pub(crate) fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).expect("ts")
}

pub(crate) const START: i64 = 1_700_000_000;

/// A pod with `containers` running since `START` (none when `running` is false), its usage
/// annotation and its CPU counters as first seen at `START`.
pub(crate) fn pod(
    ns: &str,
    name: &str,
    containers: &[&str],
    usage: &str,
    running: bool,
) -> (Arc<str>, Arc<PodLife>) {
    let specs: Vec<_> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox"}))
        .collect();
    let statuses: Vec<_> = containers
        .iter()
        .map(|c| {
            let state = if running {
                json!({"running": {"startedAt": "2023-11-14T22:13:20Z"}})
            } else {
                json!({"waiting": {"reason": "ContainerCreating"}})
            };
            json!({"name": c, "image": "busybox", "imageID": "", "ready": running,
                "restartCount": 0, "state": state})
        })
        .collect();
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
            "annotations": {"mock-kind.io/usage": usage}},
        "spec": {"containers": specs},
        "status": {"startTime": "2023-11-14T22:13:19Z", "containerStatuses": statuses},
    }))
    .expect("pod");
    let mut l = life::of(&p, 0);
    life::carry_cpu(&mut l, None, t(START));
    (format!("{ns}/{name}").into(), Arc::new(l))
}

/// A pod of one container `app` (image `busybox`) with status `status`, seen at `START`.
pub(crate) fn pod_with(ns: &str, name: &str, status: Value) -> (Arc<str>, Arc<PodLife>) {
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        "status": status,
    }))
    .expect("pod");
    let mut l = life::of(&p, 0);
    life::carry_cpu(&mut l, None, t(START));
    (format!("{ns}/{name}").into(), Arc::new(l))
}

/// The node's counter: 100m from `START - 1000`, then 400m from `START`.
pub(crate) fn node_cpu() -> CpuCounter {
    let idle = CpuCounter::new(t(START - 1000), usage::NODE_OVERHEAD_CPU_NANOS);
    CpuCounter::next(Some(&idle), t(START - 1000), 400_000_000, t(START))
}

#[test]
fn go_floats() {
    let cases: [(&str, f64, &str); 12] = [
        ("zero", 0.0, "0"),
        ("one", 1.0, "1"),
        ("half", 0.5, "0.5"),
        ("below a million: plain", 123_456.0, "123456"),
        ("a million: exponent", 1_234_567.0, "1.234567e+06"),
        ("bytes", 314_572_800.0, "3.145728e+08"),
        ("a start time", 1_700_000_000.25, "1.70000000025e+09"),
        ("small: exponent", 0.000_01, "1e-05"),
        ("1e-4: plain", 0.000_1, "0.0001"),
        ("negative", -2.5e-7, "-2.5e-07"),
        ("not a number", f64::NAN, "NaN"),
        ("infinite", f64::INFINITY, "+Inf"),
    ];
    for (name, v, want) in cases {
        assert_eq!(go_float(v), want, "{name}");
    }
}

#[test]
fn resource_metrics_as_the_kubelet_writes_them() {
    let pods = vec![
        pod(
            "default",
            "web",
            &["app", "side"],
            "cpu=250m,memory=300Mi;side:cpu=50m,memory=10Mi",
            true,
        ),
        pod("default", "pending", &["app"], "cpu=1", false),
    ];
    let s = sample("hn-0", t(START - 1000), &node_cpu(), &pods, t(START + 10));
    let want = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 2.5 1700000010000
container_cpu_usage_seconds_total{container="side",namespace="default",pod="web"} 0.5 1700000010000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="default",pod="web"} 3.145728e+08 1700000010000
container_memory_working_set_bytes{container="side",namespace="default",pod="web"} 1.048576e+07 1700000010000
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="app",namespace="default",pod="web"} 1.7e+09
container_start_time_seconds{container="side",namespace="default",pod="web"} 1.7e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 104 1700000010000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 5.93494016e+08 1700000010000
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="web"} 3 1700000010000
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="web"} 3.2505856e+08 1700000010000
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
# HELP scrape_error [ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
"#;
    assert_eq!(prometheus(&s), want);
    // No pod: only the node and the scrape errors, as a kubelet with no pods writes them.
    let empty = sample("hn-0", t(START - 1000), &node_cpu(), &[], t(START + 10));
    let text = prometheus(&empty);
    assert!(
        !text.contains("container_") && !text.contains("pod_"),
        "{text}"
    );
    assert!(
        text.contains("node_cpu_usage_seconds_total 104 1700000010000\n"),
        "{text}"
    );
}

#[test]
fn summaries() {
    let pods = vec![pod("ns", "web", &["app"], "cpu=250m,memory=300Mi", true)];
    let s = sample("hn-0", t(START - 1000), &node_cpu(), &pods, t(START + 10));
    let cap = Capacity::of(&std::collections::BTreeMap::from([
        ("memory".to_string(), "16Gi".to_string()),
        ("ephemeral-storage".to_string(), "100Gi".to_string()),
    ]));
    let at = "2023-11-14T22:13:30Z";
    let cases = [
        ("cpu and memory only", true, None),
        ("full", false, Some(100u64 << 30)),
    ];
    for (name, only, fs) in cases {
        let v = summary(&s, cap, only);
        let node = &v["node"];
        let got = (
            node["nodeName"].as_str(),
            node["cpu"]["usageNanoCores"].as_u64(),
            node["cpu"]["usageCoreNanoSeconds"].as_u64(),
            node["cpu"]["time"].as_str(),
            node["memory"]["workingSetBytes"].as_u64(),
            node["memory"]["availableBytes"].as_u64(),
            node["fs"]["capacityBytes"].as_u64(),
        );
        let mem = (256 + 300) << 20;
        assert_eq!(
            got,
            (
                Some("hn-0"),
                Some(400_000_000),
                Some(104_000_000_000),
                Some(at),
                Some(mem),
                Some((16 << 30) - mem),
                fs
            ),
            "{name}"
        );
        let p = &v["pods"][0];
        let got = (
            p["podRef"]["namespace"].as_str(),
            p["podRef"]["name"].as_str(),
            p["podRef"]["uid"].as_str(),
            p["startTime"].as_str(),
            p["containers"][0]["name"].as_str(),
            p["containers"][0]["startTime"].as_str(),
            p["containers"][0]["cpu"]["usageCoreNanoSeconds"].as_u64(),
            p["cpu"]["usageNanoCores"].as_u64(),
            p["memory"]["workingSetBytes"].as_u64(),
        );
        assert_eq!(
            got,
            (
                Some("ns"),
                Some("web"),
                Some("uid-web"),
                Some("2023-11-14T22:13:19Z"),
                Some("app"),
                Some("2023-11-14T22:13:20Z"),
                Some(2_500_000_000),
                Some(250_000_000),
                Some(300 << 20),
            ),
            "{name}"
        );
    }
}

#[test]
fn only_cpu_and_memory_as_the_kubelet_reads_it() {
    let cases = [
        ("absent", "", false),
        ("true", "only_cpu_and_memory=true", true),
        ("among others", "a=b&only_cpu_and_memory=true", true),
        ("false", "only_cpu_and_memory=false", false),
        ("not a bool", "only_cpu_and_memory=yes", false),
        (
            "twice",
            "only_cpu_and_memory=true&only_cpu_and_memory=true",
            false,
        ),
    ];
    for (name, q, want) in cases {
        assert_eq!(only_cpu_and_memory(q), want, "{name}");
    }
}

#[test]
fn the_decoder_refuses_what_a_kubelet_never_writes() {
    let typed = "# TYPE container_cpu_usage_seconds_total counter\n";
    let cases = [
        (
            "no TYPE line",
            "node_cpu_usage_seconds_total 1 1\n".to_string(),
            "before its TYPE",
        ),
        (
            "a label missing",
            format!("{typed}container_cpu_usage_seconds_total{{container=\"a\",pod=\"p\"}} 1 1\n"),
            "labels",
        ),
        (
            "no timestamp",
            format!(
                "{typed}container_cpu_usage_seconds_total{{container=\"a\",namespace=\"n\",pod=\"p\"}} 1\n"
            ),
            "without a timestamp",
        ),
        (
            "not a number",
            format!(
                "{typed}container_cpu_usage_seconds_total{{container=\"a\",namespace=\"n\",pod=\"p\"}} x 1\n"
            ),
            "no number",
        ),
        (
            "unterminated label",
            format!("{typed}container_cpu_usage_seconds_total{{container=\"a}} 1 1\n"),
            "unterminated",
        ),
    ];
    for (name, text, want) in cases {
        let got = decode::decode(&text).map(|_| ()).map_err(|e| e.to_string());
        assert!(
            got.as_ref().is_err_and(|e| e.contains(want)),
            "{name}: {got:?}"
        );
    }
}

#[test]
fn samples_reads_strictly() {
    let typed = "# HELP a_b A help.\n# TYPE a_b gauge\n";
    let ok = decode::samples(&format!(
        "{typed}a_b{{x=\"q\\\"\\\\\\n\",y=\"\"}} 1.5e+09 17\na_b -2\n"
    ))
    .expect("parses");
    let got: Vec<_> = ok
        .iter()
        .map(|s| (s.name.as_str(), s.label("x"), s.value, s.timestamp_ms))
        .collect();
    assert_eq!(
        got,
        [("a_b", "q\"\\\n", 1.5e9, Some(17)), ("a_b", "", -2.0, None)]
    );
    let cases = [
        ("before its TYPE", "a_b 1\n".to_string(), "before its TYPE"),
        (
            "a bad kind",
            "# TYPE a_b gauges\na_b 1\n".to_string(),
            "bad TYPE",
        ),
        ("a bad name", format!("{typed}a-b 1\n"), "bad metric name"),
        (
            "a bad label name",
            format!("{typed}a_b{{1x=\"v\"}} 1\n"),
            "bad label name",
        ),
        (
            "a bad escape",
            format!("{typed}a_b{{x=\"\\t\"}} 1\n"),
            "bad escape",
        ),
        ("no value", format!("{typed}a_b\n"), "no value"),
        (
            "a timestamp that is a float",
            format!("{typed}a_b 1 1.5\n"),
            "no integer",
        ),
    ];
    for (name, text, want) in cases {
        let got = decode::samples(&text)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            got.as_ref().is_err_and(|e| e.contains(want)),
            "{name}: {got:?}"
        );
    }
}

proptest! {
    #[test]
    fn samples_never_panics(text in "[a-z_{}=\",. 0-9#\\\\\n]{0,300}") {
        let _ = decode::samples(&text);
    }

    #[test]
    fn go_float_parses_back(v in proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL) {
        prop_assert_eq!(go_float(v).parse::<f64>().ok(), Some(v));
    }

    #[test]
    fn the_decoder_never_panics(text in "[a-z_{}=\",. 0-9#\n]{0,300}") {
        let _ = decode::decode(&text);
    }

    /// What metrics-server decodes is what the sample says: every running container's CPU
    /// time (to float precision), working set and start, the node's, and the timestamps.
    #[test]
    fn metrics_server_reads_the_sample(
        pods in proptest::collection::vec(
            (1usize..4, 1u64..4_000, 1u64..4_096, any::<bool>()), 0..6),
        elapsed in 1i64..100_000,
    ) {
        let lives: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, (n, milli, mi, running))| {
                let names: Vec<String> = (0..*n).map(|c| format!("c{c}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                pod("ns", &format!("p{i}"), &names, &format!("cpu={milli}m,memory={mi}Mi"), *running)
            })
            .collect();
        let at = t(START + elapsed);
        let s = sample("hn-0", t(START - 1000), &node_cpu(), &lives, at);
        let d = decode::decode(&prometheus(&s)).expect("decodes");
        let close = |got: u64, want: u64| got.abs_diff(want) <= want / 1_000_000_000_000 + 1;
        let node = d.node.clone().expect("node complete");
        prop_assert!(close(node.cpu_core_nanos, s.cpu_total));
        prop_assert_eq!(node.memory_bytes, s.usage.memory_bytes);
        prop_assert_eq!(node.timestamp_ms, at.as_millisecond());
        prop_assert_eq!(d.pods.len(), s.pods.len());
        for p in &s.pods {
            let got = d.pods.get(&(p.namespace.to_string(), p.name.to_string()));
            prop_assert!(got.is_some());
            let got = got.cloned().unwrap_or_default();
            prop_assert_eq!(got.len(), p.containers.len());
            for c in &p.containers {
                let g: Point = got.get(c.name).cloned().unwrap_or_default();
                prop_assert!(close(g.cpu_core_nanos, c.cpu_total), "{} vs {}", g.cpu_core_nanos, c.cpu_total);
                prop_assert_eq!(g.memory_bytes, c.usage.memory_bytes);
                prop_assert_eq!(g.timestamp_ms, at.as_millisecond());
                prop_assert_eq!(g.start_seconds, Some(START as f64));
            }
        }
    }
}
