use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::kubelet::decode::{self, Series};
use crate::kubelet::life::PodLife;
use crate::kubelet::stats::tests::{START, node_cpu, pod, pod_with, t};
use crate::kubelet::stats::{self, sample};
use proptest::prelude::*;
use serde_json::json;

fn capacity(cpu: &str, memory: &str) -> Capacity {
    Capacity::of(&BTreeMap::from([
        ("cpu".to_string(), cpu.to_string()),
        ("memory".to_string(), memory.to_string()),
    ]))
}

/// A Guaranteed pod `g` with one container `app` running since `START` in its second instance
/// (no usage annotation and no requests: the default 1m / 4Mi).
fn guaranteed() -> (
    std::sync::Arc<str>,
    std::sync::Arc<crate::kubelet::life::PodLife>,
) {
    pod_with(
        "default",
        "g",
        json!({"qosClass": "Guaranteed", "startTime": "2023-11-14T22:13:19Z",
            "containerStatuses": [{"name": "app", "image": "busybox", "imageID": "",
                "ready": true, "restartCount": 1,
                "state": {"running": {"startedAt": "2023-11-14T22:13:20Z"}}}]}),
    )
}

#[test]
fn families_are_in_client_golangs_order() {
    assert!(FAMILIES.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn cadvisor_metrics_as_the_kubelet_writes_them() {
    let pods = vec![
        pod(
            "default",
            "web",
            &["app", "side"],
            "cpu=250m,memory=300Mi;side:cpu=50m,memory=10Mi",
            true,
        ),
        pod("default", "pending", &["app"], "cpu=1", false),
        guaranteed(),
    ];
    let s = sample("hn-0", t(START - 1000), &node_cpu(), &pods, t(START + 10));
    let ids = machine_ids("hn-0");
    let want = r#"# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="",cpu="total",id="/",image="",name="",namespace="",pod=""} 104 1700000010000
container_cpu_usage_seconds_total{container="",cpu="total",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 3 1700000010000
container_cpu_usage_seconds_total{container="",cpu="total",id="/kubepods/poduid-g",image="",name="",namespace="default",pod="g"} 0.01 1700000010000
container_cpu_usage_seconds_total{container="app",cpu="total",id="/kubepods/besteffort/poduid-web/WEB_APP",image="docker.io/library/busybox:latest",name="WEB_APP",namespace="default",pod="web"} 2.5 1700000010000
container_cpu_usage_seconds_total{container="app",cpu="total",id="/kubepods/poduid-g/G_APP",image="docker.io/library/busybox:latest",name="G_APP",namespace="default",pod="g"} 0.01 1700000010000
container_cpu_usage_seconds_total{container="side",cpu="total",id="/kubepods/besteffort/poduid-web/WEB_SIDE",image="docker.io/library/busybox:latest",name="WEB_SIDE",namespace="default",pod="web"} 0.5 1700000010000
# HELP container_last_seen Last time a container was seen by the exporter
# TYPE container_last_seen gauge
container_last_seen{container="",id="/",image="",name="",namespace="",pod=""} 1.70000001e+09 1700000010000
container_last_seen{container="",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 1.70000001e+09 1700000010000
container_last_seen{container="",id="/kubepods/poduid-g",image="",name="",namespace="default",pod="g"} 1.70000001e+09 1700000010000
container_last_seen{container="app",id="/kubepods/besteffort/poduid-web/WEB_APP",image="docker.io/library/busybox:latest",name="WEB_APP",namespace="default",pod="web"} 1.70000001e+09 1700000010000
container_last_seen{container="app",id="/kubepods/poduid-g/G_APP",image="docker.io/library/busybox:latest",name="G_APP",namespace="default",pod="g"} 1.70000001e+09 1700000010000
container_last_seen{container="side",id="/kubepods/besteffort/poduid-web/WEB_SIDE",image="docker.io/library/busybox:latest",name="WEB_SIDE",namespace="default",pod="web"} 1.70000001e+09 1700000010000
# HELP container_memory_cache Number of bytes of page cache memory.
# TYPE container_memory_cache gauge
container_memory_cache{container="",id="/",image="",name="",namespace="",pod=""} 0 1700000010000
container_memory_cache{container="",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 0 1700000010000
container_memory_cache{container="",id="/kubepods/poduid-g",image="",name="",namespace="default",pod="g"} 0 1700000010000
container_memory_cache{container="app",id="/kubepods/besteffort/poduid-web/WEB_APP",image="docker.io/library/busybox:latest",name="WEB_APP",namespace="default",pod="web"} 0 1700000010000
container_memory_cache{container="app",id="/kubepods/poduid-g/G_APP",image="docker.io/library/busybox:latest",name="G_APP",namespace="default",pod="g"} 0 1700000010000
container_memory_cache{container="side",id="/kubepods/besteffort/poduid-web/WEB_SIDE",image="docker.io/library/busybox:latest",name="WEB_SIDE",namespace="default",pod="web"} 0 1700000010000
# HELP container_memory_rss Size of RSS in bytes.
# TYPE container_memory_rss gauge
container_memory_rss{container="",id="/",image="",name="",namespace="",pod=""} 5.9768832e+08 1700000010000
container_memory_rss{container="",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 3.2505856e+08 1700000010000
container_memory_rss{container="",id="/kubepods/poduid-g",image="",name="",namespace="default",pod="g"} 4.194304e+06 1700000010000
container_memory_rss{container="app",id="/kubepods/besteffort/poduid-web/WEB_APP",image="docker.io/library/busybox:latest",name="WEB_APP",namespace="default",pod="web"} 3.145728e+08 1700000010000
container_memory_rss{container="app",id="/kubepods/poduid-g/G_APP",image="docker.io/library/busybox:latest",name="G_APP",namespace="default",pod="g"} 4.194304e+06 1700000010000
container_memory_rss{container="side",id="/kubepods/besteffort/poduid-web/WEB_SIDE",image="docker.io/library/busybox:latest",name="WEB_SIDE",namespace="default",pod="web"} 1.048576e+07 1700000010000
# HELP container_memory_swap Container swap usage in bytes.
# TYPE container_memory_swap gauge
container_memory_swap{container="",id="/",image="",name="",namespace="",pod=""} 0 1700000010000
container_memory_swap{container="",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 0 1700000010000
container_memory_swap{container="",id="/kubepods/poduid-g",image="",name="",namespace="default",pod="g"} 0 1700000010000
container_memory_swap{container="app",id="/kubepods/besteffort/poduid-web/WEB_APP",image="docker.io/library/busybox:latest",name="WEB_APP",namespace="default",pod="web"} 0 1700000010000
container_memory_swap{container="app",id="/kubepods/poduid-g/G_APP",image="docker.io/library/busybox:latest",name="G_APP",namespace="default",pod="g"} 0 1700000010000
container_memory_swap{container="side",id="/kubepods/besteffort/poduid-web/WEB_SIDE",image="docker.io/library/busybox:latest",name="WEB_SIDE",namespace="default",pod="web"} 0 1700000010000
# HELP container_memory_usage_bytes Current memory usage in bytes, including all memory regardless of when it was accessed
# TYPE container_memory_usage_bytes gauge
container_memory_usage_bytes{container="",id="/",image="",name="",namespace="",pod=""} 5.9768832e+08 1700000010000
container_memory_usage_bytes{container="",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 3.2505856e+08 1700000010000
container_memory_usage_bytes{container="",id="/kubepods/poduid-g",image="",name="",namespace="default",pod="g"} 4.194304e+06 1700000010000
container_memory_usage_bytes{container="app",id="/kubepods/besteffort/poduid-web/WEB_APP",image="docker.io/library/busybox:latest",name="WEB_APP",namespace="default",pod="web"} 3.145728e+08 1700000010000
container_memory_usage_bytes{container="app",id="/kubepods/poduid-g/G_APP",image="docker.io/library/busybox:latest",name="G_APP",namespace="default",pod="g"} 4.194304e+06 1700000010000
container_memory_usage_bytes{container="side",id="/kubepods/besteffort/poduid-web/WEB_SIDE",image="docker.io/library/busybox:latest",name="WEB_SIDE",namespace="default",pod="web"} 1.048576e+07 1700000010000
# HELP container_memory_working_set_bytes Current working set in bytes.
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="",id="/",image="",name="",namespace="",pod=""} 5.9768832e+08 1700000010000
container_memory_working_set_bytes{container="",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 3.2505856e+08 1700000010000
container_memory_working_set_bytes{container="",id="/kubepods/poduid-g",image="",name="",namespace="default",pod="g"} 4.194304e+06 1700000010000
container_memory_working_set_bytes{container="app",id="/kubepods/besteffort/poduid-web/WEB_APP",image="docker.io/library/busybox:latest",name="WEB_APP",namespace="default",pod="web"} 3.145728e+08 1700000010000
container_memory_working_set_bytes{container="app",id="/kubepods/poduid-g/G_APP",image="docker.io/library/busybox:latest",name="G_APP",namespace="default",pod="g"} 4.194304e+06 1700000010000
container_memory_working_set_bytes{container="side",id="/kubepods/besteffort/poduid-web/WEB_SIDE",image="docker.io/library/busybox:latest",name="WEB_SIDE",namespace="default",pod="web"} 1.048576e+07 1700000010000
# HELP container_scrape_error 1 if there was an error while getting container metrics, 0 otherwise
# TYPE container_scrape_error gauge
container_scrape_error 0
# HELP container_start_time_seconds Start time of the container since unix epoch in seconds.
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="",id="/",image="",name="",namespace="",pod=""} 1.699999e+09
container_start_time_seconds{container="",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 1.699999999e+09
container_start_time_seconds{container="",id="/kubepods/poduid-g",image="",name="",namespace="default",pod="g"} 1.699999999e+09
container_start_time_seconds{container="app",id="/kubepods/besteffort/poduid-web/WEB_APP",image="docker.io/library/busybox:latest",name="WEB_APP",namespace="default",pod="web"} 1.7e+09
container_start_time_seconds{container="app",id="/kubepods/poduid-g/G_APP",image="docker.io/library/busybox:latest",name="G_APP",namespace="default",pod="g"} 1.7e+09
container_start_time_seconds{container="side",id="/kubepods/besteffort/poduid-web/WEB_SIDE",image="docker.io/library/busybox:latest",name="WEB_SIDE",namespace="default",pod="web"} 1.7e+09
# HELP machine_cpu_cores Number of logical CPU cores.
# TYPE machine_cpu_cores gauge
machine_cpu_cores{boot_id="BOOT",machine_id="MACHINE",system_uuid="SYSTEM"} 4
# HELP machine_memory_bytes Amount of memory installed on the machine.
# TYPE machine_memory_bytes gauge
machine_memory_bytes{boot_id="BOOT",machine_id="MACHINE",system_uuid="SYSTEM"} 1.7179869184e+10
# HELP machine_scrape_error 1 if there was an error while getting machine metrics, 0 otherwise.
# TYPE machine_scrape_error gauge
machine_scrape_error 0
"#
    .replace("WEB_APP", &container_id("uid-web", "app", 0))
    .replace("WEB_SIDE", &container_id("uid-web", "side", 0))
    .replace("G_APP", &container_id("uid-g", "app", 1))
    .replace("BOOT", &ids.boot_id)
    .replace("MACHINE", &ids.machine_id)
    .replace("SYSTEM", &ids.system_uuid);
    assert_eq!(text(&s, capacity("4", "16Gi")), want);
}

#[test]
fn edges() {
    let empty = sample("hn-0", t(START - 1000), &node_cpu(), &[], t(START));
    let at_start = vec![pod("ns", "p", &["app"], "cpu=1", true)];
    let fresh = sample("hn-0", t(START - 1000), &node_cpu(), &at_start, t(START));
    let names = |text: &str| -> Vec<(String, String, String)> {
        decode::samples(text)
            .expect("parses")
            .into_iter()
            .map(|s| (s.name.clone(), s.label("id").into(), s.label("pod").into()))
            .collect()
    };
    type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 3] = [
        (
            "no pod: the root cgroup and the machine only",
            text(&empty, capacity("4", "16Gi")),
            &[
                ("container_cpu_usage_seconds_total", "/"),
                ("machine_cpu_cores", ""),
            ],
            &["kubepods"],
        ),
        (
            "a capacity that does not parse: no machine sample",
            text(&empty, capacity("four", "lots")),
            &[("machine_scrape_error", "")],
            &["machine_cpu_cores", "machine_memory_bytes"],
        ),
        (
            "a container with no CPU time yet: no CPU sample, but its memory",
            text(&fresh, capacity("4", "16Gi")),
            &[(
                "container_memory_working_set_bytes",
                "/kubepods/besteffort/poduid-p/",
            )],
            &["container_cpu_usage_seconds_total{container=\"app\""],
        ),
    ];
    for (name, got, present, absent) in cases {
        let all = names(&got);
        for (family, id) in present {
            assert!(
                all.iter().any(|(f, i, _)| f == family && i.starts_with(id)),
                "{name}: {family} {id}\n{got}"
            );
        }
        for a in absent {
            assert!(!got.contains(a), "{name}: {a}\n{got}");
        }
    }
}

/// Namespace, name, container names, image, millicores, MiB, running.
type AnyPod = (String, String, Vec<String>, String, u64, u64, bool);
type Lives = Vec<(Arc<str>, Arc<PodLife>)>;

/// A pod of random names (anything a JSON string holds, newlines too), usage and state.
fn any_pod() -> impl Strategy<Value = AnyPod> {
    (
        "(?s).{0,12}",
        "(?s).{0,12}",
        proptest::collection::vec("(?s).{1,8}", 1..4),
        "(?s).{0,16}",
        1u64..4_000,
        1u64..4_096,
        any::<bool>(),
    )
}

fn lives(pods: &[AnyPod]) -> Lives {
    pods.iter()
        .enumerate()
        .map(|(i, (ns, name, containers, image, milli, mi, running))| {
            // Distinct container names, as a pod's are.
            let names: Vec<String> = containers
                .iter()
                .enumerate()
                .map(|(j, c)| format!("{c}{j}"))
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let (key, life) = pod(
                &format!("{ns}{i}"),
                name,
                &names,
                &format!("cpu={milli}m,memory={mi}Mi"),
                *running,
            );
            let mut life = (*life).clone();
            for c in &mut life.containers {
                c.image = image.clone();
            }
            (key, Arc::new(life))
        })
        .collect()
}

/// The CPU counters of a scrape by their labels.
fn counters(text: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
    decode::samples(text)
        .expect("parses")
        .into_iter()
        .filter(|s| s.name == "container_cpu_usage_seconds_total")
        .map(|s| (s.labels, s.value))
        .collect()
}

proptest! {
    /// Whatever the names and images, every line is a HELP, a TYPE or a sample that reads
    /// back (name, escaped labels, a float, an optional timestamp), and the labels read back
    /// are the names given.
    #[test]
    fn every_line_is_prometheus_text(
        pods in proptest::collection::vec(any_pod(), 0..5),
        elapsed in 0i64..100_000,
    ) {
        let lives = lives(&pods);
        let s = sample("hn-0", t(START - 1000), &node_cpu(), &lives, t(START + elapsed));
        let got = text(&s, capacity("4", "16Gi"));
        for line in got.lines() {
            let ok = line.starts_with("# HELP ") || line.starts_with("# TYPE ")
                || decode::samples(&format!("# TYPE {n} gauge\n{line}\n",
                    n = line.split(['{', ' ']).next().unwrap_or_default())).is_ok();
            prop_assert!(ok, "{line}");
        }
        let all: Vec<Series> = decode::samples(&got).expect("parses");
        for p in &s.pods {
            for c in &p.containers {
                let ws = all.iter().find(|x| x.name == "container_memory_working_set_bytes"
                    && x.label("namespace") == p.namespace && x.label("pod") == p.name
                    && x.label("container") == c.name);
                prop_assert!(ws.is_some(), "{}/{}/{}", p.namespace, p.name, c.name);
                let ws = ws.cloned().expect("found");
                prop_assert_eq!(ws.value, c.usage.memory_bytes as f64);
                prop_assert_eq!(ws.label("image"), crate::pod_status::normalize_image(c.image));
            }
        }
    }

    /// cAdvisor's numbers are the resource metrics' (same sample), and a later scrape's
    /// counters never go below an earlier one's.
    #[test]
    fn counters_never_decrease_and_agree_with_the_resource_metrics(
        pods in proptest::collection::vec(any_pod(), 0..5),
        first in 0i64..100_000,
        later in 0i64..100_000,
    ) {
        let lives = lives(&pods);
        let at = |e: i64| sample("hn-0", t(START - 1000), &node_cpu(), &lives, t(START + e));
        let (a, b) = (at(first), at(first + later));
        let (ca, cb) = (counters(&text(&a, Capacity::default())), counters(&text(&b, Capacity::default())));
        for (labels, v) in &ca {
            let w = cb.get(labels);
            prop_assert!(w.is_some_and(|w| w >= v), "{labels:?}: {v} then {w:?}");
        }
        let resource = decode::decode(&stats::prometheus(&b)).expect("decodes");
        let root = cb.iter().find(|(l, _)| l.get("id").map(String::as_str) == Some("/"));
        let node = resource.node.clone().unwrap_or_default();
        prop_assert_eq!(root.map(|(_, v)| (v * 1e9) as u64), Some(node.cpu_core_nanos));
        for ((ns, pod), containers) in &resource.pods {
            for (c, point) in containers {
                let got = cb.iter().find(|(l, _)| {
                    l.get("namespace") == Some(ns) && l.get("pod") == Some(pod)
                        && l.get("container") == Some(c)
                });
                prop_assert_eq!(got.map(|(_, v)| (v * 1e9) as u64), Some(point.cpu_core_nanos));
            }
        }
    }
}
