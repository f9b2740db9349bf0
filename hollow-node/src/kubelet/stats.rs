//! One node's resource stats as the kubelet serves them, for metrics-server and whoever reads
//! the kubelet directly: `/metrics/resource` (Prometheus text, the metric names, labels and
//! HELP/TYPE lines of kubernetes pkg/kubelet/metrics/collectors/resource_metrics.go as a 1.29+
//! kubelet writes them) and `/stats/summary` (the `Summary` of
//! k8s.io/kubelet/pkg/apis/stats/v1alpha1). Both are built from one [`Sample`] of the node's
//! running containers taken at one instant, as are `/metrics/cadvisor` (`cadvisor`) and the
//! kubelet's own `/metrics` (`kubelet_metrics`), which share the text helpers here. Pure.

use std::fmt::Write;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::kubelet::cpu::CpuCounter;
use crate::kubelet::life::{PodLife, Qos, State};
use crate::usage::{self, Usage};

/// One running container at the sample's instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSample<'a> {
    pub name: &'a str,
    /// The image as the pod's spec names it.
    pub image: &'a str,
    /// Its restart count: with the pod's UID, what names the instance (its container ID).
    pub restarts: i32,
    pub started: Timestamp,
    pub usage: Usage,
    /// Core-nanoseconds since it started.
    pub cpu_total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSample<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub qos: Qos,
    pub started: Timestamp,
    pub containers: Vec<ContainerSample<'a>>,
}

impl PodSample<'_> {
    pub fn usage(&self) -> Usage {
        self.containers
            .iter()
            .fold(Usage::default(), |sum, c| sum.plus(c.usage))
    }
    pub fn cpu_total(&self) -> u64 {
        self.containers
            .iter()
            .fold(0, |sum, c| sum.saturating_add(c.cpu_total))
    }
}

/// A node and its pods with a running container, at `time`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample<'a> {
    pub time: Timestamp,
    pub node: &'a str,
    pub boot: Timestamp,
    pub usage: Usage,
    pub cpu_total: u64,
    /// Sorted by namespace and name.
    pub pods: Vec<PodSample<'a>>,
    /// Pods whose sandbox would run: some container not terminated.
    pub running_pods: usize,
    /// Dead containers the runtime would keep: each container that terminated or has a
    /// previous instance counts one (the kubelet's GC keeps one dead container per container).
    pub exited_containers: usize,
}

/// Whether `life`'s sandbox would run, and how many dead containers it keeps.
fn sandbox(life: &PodLife) -> (bool, usize) {
    let running = life
        .containers
        .iter()
        .any(|c| !matches!(c.state, State::Terminated(_)));
    let exited = life
        .containers
        .iter()
        .filter(|c| matches!(c.state, State::Terminated(_)) || c.last.is_some())
        .count();
    (running, exited)
}

/// The sample of node `node` at `time` from its pods' lives (`namespace/name` keys) and its
/// CPU counter. Only containers running with a CPU counter count, as in the metrics API; a
/// pod without one is left out, as the kubelet lists only pods it has stats of.
pub fn sample<'a>(
    node: &'a str,
    boot: Timestamp,
    node_cpu: &CpuCounter,
    pods: &'a [(std::sync::Arc<str>, std::sync::Arc<PodLife>)],
    time: Timestamp,
) -> Sample<'a> {
    let mut out: Vec<PodSample<'a>> = pods
        .iter()
        .filter_map(|(key, life)| {
            let (namespace, name) = key.split_once('/')?;
            let containers: Vec<ContainerSample<'a>> = life
                .containers
                .iter()
                .filter_map(|c| {
                    let cpu = c.cpu.as_ref()?;
                    Some(ContainerSample {
                        name: &c.name,
                        image: &c.image,
                        restarts: c.restarts,
                        started: cpu.started(),
                        usage: c.usage,
                        cpu_total: cpu.at(time),
                    })
                })
                .collect();
            let first = containers.iter().map(|c| c.started).min()?;
            Some(PodSample {
                namespace,
                name,
                uid: &life.uid,
                qos: life.qos,
                started: life.started.unwrap_or(first),
                containers,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
    let (running_pods, exited_containers) = pods.iter().fold((0, 0), |(r, e), (_, life)| {
        let (running, exited) = sandbox(life);
        (r + usize::from(running), e + exited)
    });
    let memory = usage::node(out.iter().map(PodSample::usage)).memory_bytes;
    Sample {
        time,
        node,
        boot,
        usage: Usage {
            cpu_nanos: node_cpu.nanocores(),
            memory_bytes: memory,
        },
        cpu_total: node_cpu.at(time),
        pods: out,
        running_pods,
        exited_containers,
    }
}

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` writes it, which is how the
/// kubelet's Prometheus encoder writes values: the shortest digits, exponent form (`e+09`)
/// from 1e6 up and below 1e-4.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let e = format!("{v:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return v.to_string();
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

pub(crate) fn seconds(core_nanos: u64) -> String {
    go_float(core_nanos as f64 / 1e9)
}

/// A label value escaped as the text format wants it.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The families in the order the kubelet's encoder writes them (by name): name, HELP, TYPE.
const FAMILIES: [(&str, &str, &str); 9] = [
    (
        "container_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    ),
    (
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        "gauge",
    ),
    (
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        "gauge",
    ),
    (
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    ),
    (
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        "gauge",
    ),
    (
        "pod_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    ),
    (
        "pod_memory_working_set_bytes",
        "[STABLE] Current working set of the pod in bytes",
        "gauge",
    ),
    (
        "resource_scrape_error",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    ),
    (
        "scrape_error",
        "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    ),
];

/// `/metrics/resource`: every family's samples, each with the sample's time in milliseconds
/// except the start times and the scrape errors (the kubelet gives those none). Samples are
/// sorted by their label values in label-name order, as client_golang sorts them.
pub fn prometheus(s: &Sample) -> String {
    let ms = s.time.as_millisecond();
    let mut containers: Vec<(&PodSample, &ContainerSample)> = s
        .pods
        .iter()
        .flat_map(|p| p.containers.iter().map(move |c| (p, c)))
        .collect();
    containers.sort_by(|a, b| {
        (a.1.name, a.0.namespace, a.0.name).cmp(&(b.1.name, b.0.namespace, b.0.name))
    });
    let container_labels = |p: &PodSample, c: &ContainerSample| {
        format!(
            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
            escape(c.name),
            escape(p.namespace),
            escape(p.name)
        )
    };
    let pod_labels = |p: &PodSample| {
        format!(
            "{{namespace=\"{}\",pod=\"{}\"}}",
            escape(p.namespace),
            escape(p.name)
        )
    };
    let mut out = String::new();
    for (name, help, kind) in FAMILIES {
        let mut lines = Vec::new();
        match name {
            "container_cpu_usage_seconds_total" => {
                for (p, c) in &containers {
                    lines.push(format!(
                        "{} {} {ms}",
                        container_labels(p, c),
                        seconds(c.cpu_total)
                    ));
                }
            }
            "container_memory_working_set_bytes" => {
                for (p, c) in &containers {
                    let v = go_float(c.usage.memory_bytes as f64);
                    lines.push(format!("{} {v} {ms}", container_labels(p, c)));
                }
            }
            "container_start_time_seconds" => {
                for (p, c) in &containers {
                    let v = go_float(c.started.as_nanosecond() as f64 / 1e9);
                    lines.push(format!("{} {v}", container_labels(p, c)));
                }
            }
            "node_cpu_usage_seconds_total" => {
                lines.push(format!(" {} {ms}", seconds(s.cpu_total)));
            }
            "node_memory_working_set_bytes" => {
                lines.push(format!(" {} {ms}", go_float(s.usage.memory_bytes as f64)));
            }
            "pod_cpu_usage_seconds_total" => {
                for p in &s.pods {
                    lines.push(format!("{} {} {ms}", pod_labels(p), seconds(p.cpu_total())));
                }
            }
            "pod_memory_working_set_bytes" => {
                for p in &s.pods {
                    let v = go_float(p.usage().memory_bytes as f64);
                    lines.push(format!("{} {v} {ms}", pod_labels(p)));
                }
            }
            _ => lines.push(" 0".into()),
        }
        family(&mut out, (name, help, kind), &lines);
    }
    out
}

/// One family as client_golang writes it: HELP, TYPE, then each sample (`lines` hold what
/// follows the name: labels, value, timestamp). None without a sample, as client_golang.
pub(crate) fn family(out: &mut String, (name, help, kind): (&str, &str, &str), lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for l in lines {
        let _ = writeln!(out, "{name}{l}");
    }
}

/// A `metav1.Time` as the kubelet writes it: RFC 3339, whole seconds, UTC.
fn time(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn cpu(at: &str, usage: Usage, total: u64) -> Value {
    json!({"time": at, "usageNanoCores": usage.cpu_nanos, "usageCoreNanoSeconds": total})
}

/// Memory stats: the working set is all a hollow container uses; `available` when a limit
/// (the node's capacity) is known.
fn memory(at: &str, usage: Usage, capacity: Option<u64>) -> Value {
    let mut m = json!({
        "time": at,
        "usageBytes": usage.memory_bytes,
        "workingSetBytes": usage.memory_bytes,
        "rssBytes": usage.memory_bytes,
        "pageFaults": 0,
        "majorPageFaults": 0,
    });
    if let (Some(cap), Some(obj)) = (capacity, m.as_object_mut()) {
        obj.insert(
            "availableBytes".into(),
            cap.saturating_sub(usage.memory_bytes).into(),
        );
    }
    m
}

/// The node's capacity as the summary and cAdvisor's machine metrics report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    pub cpu_nanos: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub ephemeral_storage_bytes: Option<u64>,
}

impl Capacity {
    /// From the node's capacity quantities; one that does not parse is left out.
    pub fn of(capacity: &std::collections::BTreeMap<String, String>) -> Self {
        let bytes = |k: &str| capacity.get(k).and_then(|q| usage::memory_bytes(q).ok());
        Capacity {
            cpu_nanos: capacity.get("cpu").and_then(|q| usage::cpu_nanos(q).ok()),
            memory_bytes: bytes("memory"),
            ephemeral_storage_bytes: bytes("ephemeral-storage"),
        }
    }
}

/// `/stats/summary`. With `only_cpu_and_memory` (metrics-server's request) the node and pods
/// carry CPU and memory only; without it the node also reports its root filesystem from
/// `--ephemeral-storage` (nothing is written on a hollow node: used 0).
pub fn summary(s: &Sample, capacity: Capacity, only_cpu_and_memory: bool) -> Value {
    let at = time(s.time);
    let pods: Vec<Value> = s
        .pods
        .iter()
        .map(|p| {
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "startTime": time(c.started),
                        "cpu": cpu(&at, c.usage, c.cpu_total),
                        "memory": memory(&at, c.usage, None),
                    })
                })
                .collect();
            json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "startTime": time(p.started),
                "containers": containers,
                "cpu": cpu(&at, p.usage(), p.cpu_total()),
                "memory": memory(&at, p.usage(), None),
            })
        })
        .collect();
    let mut node = json!({
        "nodeName": s.node,
        "startTime": time(s.boot),
        "cpu": cpu(&at, s.usage, s.cpu_total),
        "memory": memory(&at, s.usage, capacity.memory_bytes),
    });
    if let (false, Some(cap), Some(obj)) = (
        only_cpu_and_memory,
        capacity.ephemeral_storage_bytes,
        node.as_object_mut(),
    ) {
        obj.insert(
            "fs".into(),
            json!({"time": at, "availableBytes": cap, "capacityBytes": cap, "usedBytes": 0}),
        );
    }
    json!({"node": node, "pods": pods})
}

/// Whether a `/stats/summary` query asks for CPU and memory only: as the kubelet reads it,
/// exactly one `only_cpu_and_memory` whose value is `true`; anything else is the full summary.
pub fn only_cpu_and_memory(query: &str) -> bool {
    let values: Vec<&str> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("only_cpu_and_memory="))
        .collect();
    values == ["true"]
}

#[cfg(test)]
#[path = "stats_tests.rs"]
pub(crate) mod tests;
