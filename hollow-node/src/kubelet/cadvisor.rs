//! `/metrics/cadvisor`: a node's container metrics as the kubelet's embedded cAdvisor writes
//! them (google/cadvisor metrics/prometheus.go and prometheus_machine.go, with the labels of
//! the kubelet's `containerPrometheusLabelsFunc` in kubernetes pkg/kubelet/server/server.go:
//! `container`, `id`, `image`, `name`, `namespace`, `pod`), from the same [`Sample`] as
//! `/metrics/resource`. Three kinds of series, as cAdvisor walks the cgroups:
//!
//! - the node's root cgroup: `id="/"`, every other label empty; the node's usage;
//! - each pod's cgroup: `id="/kubepods[/burstable|/besteffort]/pod<uid>"` (the cgroupfs
//!   driver's path for the pod's QoS class), `namespace` and `pod` set, `container`, `image`
//!   and `name` empty; the sum of its containers;
//! - each running container: `id` = the pod's cgroup + `/<container ID>` (the ID of its
//!   `containerStatuses[].containerID`), `name` = the container ID (containerd's alias),
//!   `image` = the status's image.
//!
//! The pause container (`container="POD"`) and the cgroups between the root and the pods
//! (`/kubepods`, `/kubepods/burstable`, system slices) are not written. Pure.

use jiff::Timestamp;

use crate::kubelet::stats::{Capacity, Sample, escape, family, go_float, seconds};
use crate::node_status::machine_ids;
use crate::pod_status::{container_id, normalize_image};

/// One cgroup as cAdvisor reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cgroup {
    /// The label values in label-name order: container, id, image, name, namespace, pod.
    container: String,
    id: String,
    image: String,
    name: String,
    namespace: String,
    pod: String,
    /// Whole seconds, as cAdvisor writes `container_start_time_seconds` (`Unix()`).
    start: i64,
    cpu_total: u64,
    memory_bytes: u64,
}

impl Cgroup {
    fn key(&self) -> [&str; 6] {
        [
            &self.container,
            &self.id,
            &self.image,
            &self.name,
            &self.namespace,
            &self.pod,
        ]
    }

    /// `{container="…",<extra>id="…",…}`: `extra` is `cpu="total",` for the CPU counter,
    /// which sorts between `container` and `id`.
    fn labels(&self, extra: &str) -> String {
        format!(
            "{{container=\"{}\",{extra}id=\"{}\",image=\"{}\",name=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
            escape(&self.container),
            escape(&self.id),
            escape(&self.image),
            escape(&self.name),
            escape(&self.namespace),
            escape(&self.pod),
        )
    }
}

/// The cgroup of a pod with UID `uid` and QoS cgroup `qos` (cgroupfs driver).
pub fn pod_cgroup(qos: &str, uid: &str) -> String {
    format!("/kubepods{qos}/pod{uid}")
}

fn cgroups(s: &Sample) -> Vec<Cgroup> {
    let mut out = vec![Cgroup {
        container: String::new(),
        id: "/".into(),
        image: String::new(),
        name: String::new(),
        namespace: String::new(),
        pod: String::new(),
        start: s.boot.as_second(),
        cpu_total: s.cpu_total,
        memory_bytes: s.usage.memory_bytes,
    }];
    for p in &s.pods {
        let pod_id = pod_cgroup(p.qos.cgroup(), p.uid);
        for c in &p.containers {
            let cid = container_id(p.uid, c.name, c.restarts);
            out.push(Cgroup {
                container: c.name.to_string(),
                id: format!("{pod_id}/{cid}"),
                image: normalize_image(c.image),
                name: cid,
                namespace: p.namespace.to_string(),
                pod: p.name.to_string(),
                start: c.started.as_second(),
                cpu_total: c.cpu_total,
                memory_bytes: c.usage.memory_bytes,
            });
        }
        out.push(Cgroup {
            container: String::new(),
            id: pod_id,
            image: String::new(),
            name: String::new(),
            namespace: p.namespace.to_string(),
            pod: p.name.to_string(),
            start: p.started.as_second(),
            cpu_total: p.cpu_total(),
            memory_bytes: p.usage().memory_bytes,
        });
    }
    // client_golang's order: by label values in label-name order.
    out.sort_by(|a, b| a.key().cmp(&b.key()));
    out
}

/// What a family writes for one cgroup: its value, and whether it carries the sample's time.
type CgroupValue = fn(&Cgroup, Timestamp) -> Option<(String, bool)>;

/// Where a family's samples come from.
#[derive(Clone, Copy)]
enum Samples {
    /// One per cgroup (or none when the value is `None`).
    Cgroups(CgroupValue),
    /// One, from the node's capacity, with the machine's IDs as labels.
    Machine(fn(Capacity) -> Option<String>),
    /// One `0` without labels: no scrape error.
    NoError,
}

/// Every family in name order (client_golang's): name, HELP, TYPE, samples.
const FAMILIES: [(&str, &str, &str, Samples); 12] = [
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        "counter",
        // cAdvisor writes no CPU sample while the counter is 0.
        Samples::Cgroups(|c, _| (c.cpu_total > 0).then(|| (seconds(c.cpu_total), true))),
    ),
    (
        "container_last_seen",
        "Last time a container was seen by the exporter",
        "gauge",
        Samples::Cgroups(|_, at| Some((go_float(at.as_second() as f64), true))),
    ),
    (
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        "gauge",
        Samples::Cgroups(|_, _| Some(("0".into(), true))),
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        "gauge",
        Samples::Cgroups(|c, _| Some((go_float(c.memory_bytes as f64), true))),
    ),
    (
        "container_memory_swap",
        "Container swap usage in bytes.",
        "gauge",
        Samples::Cgroups(|_, _| Some(("0".into(), true))),
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        "gauge",
        Samples::Cgroups(|c, _| Some((go_float(c.memory_bytes as f64), true))),
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        "gauge",
        Samples::Cgroups(|c, _| Some((go_float(c.memory_bytes as f64), true))),
    ),
    (
        "container_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
        Samples::NoError,
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        "gauge",
        Samples::Cgroups(|c, _| Some((go_float(c.start as f64), false))),
    ),
    (
        "machine_cpu_cores",
        "Number of logical CPU cores.",
        "gauge",
        Samples::Machine(|cap| cap.cpu_nanos.map(|n| go_float(n as f64 / 1e9))),
    ),
    (
        "machine_memory_bytes",
        "Amount of memory installed on the machine.",
        "gauge",
        Samples::Machine(|cap| cap.memory_bytes.map(|b| go_float(b as f64))),
    ),
    (
        "machine_scrape_error",
        "1 if there was an error while getting machine metrics, 0 otherwise.",
        "gauge",
        Samples::NoError,
    ),
];

/// `/metrics/cadvisor` of the sample's node with capacity `capacity`. Every cgroup series
/// carries the sample's time in milliseconds except the start times; the machine series carry
/// none (the kubelet zeroes the cached machine info's timestamp), nor do the scrape errors.
pub fn text(s: &Sample, capacity: Capacity) -> String {
    let ms = s.time.as_millisecond();
    let groups = cgroups(s);
    let ids = machine_ids(s.node);
    let machine = format!(
        "{{boot_id=\"{}\",machine_id=\"{}\",system_uuid=\"{}\"}}",
        escape(&ids.boot_id),
        escape(&ids.machine_id),
        escape(&ids.system_uuid)
    );
    let mut out = String::new();
    for (name, help, kind, samples) in FAMILIES {
        let lines: Vec<String> = match samples {
            Samples::Cgroups(value) => {
                let extra = if kind == "counter" {
                    "cpu=\"total\","
                } else {
                    ""
                };
                groups
                    .iter()
                    .filter_map(|c| {
                        let (v, timed) = value(c, s.time)?;
                        let labels = c.labels(extra);
                        Some(if timed {
                            format!("{labels} {v} {ms}")
                        } else {
                            format!("{labels} {v}")
                        })
                    })
                    .collect()
            }
            Samples::Machine(value) => value(capacity)
                .map(|v| format!("{machine} {v}"))
                .into_iter()
                .collect(),
            Samples::NoError => vec![" 0".into()],
        };
        family(&mut out, (name, help, kind), &lines);
    }
    out
}

#[cfg(test)]
#[path = "cadvisor_tests.rs"]
mod tests;
