//! `/metrics/resource` read back the way metrics-server (0.6+) reads it
//! (pkg/scraper/client/resource/decode.go): the node's CPU counter and working set, each
//! container's CPU counter, working set and start time by namespace/pod/container, values in
//! seconds turned into core-nanoseconds, timestamps in milliseconds. Stricter than
//! metrics-server where that checks the shape a kubelet gives: every sample's family has a
//! TYPE line first, the labels are exactly the kubelet's, and CPU and memory samples carry a
//! timestamp while start times do not. [`samples`] reads any of the kubelet's Prometheus
//! answers (`/metrics/cadvisor`, `/metrics`) line by line. For the tests and the scale bench;
//! pure.

use std::collections::{BTreeMap, BTreeSet};

/// What metrics-server keeps of one container or of the node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point {
    pub cpu_core_nanos: u64,
    pub memory_bytes: u64,
    pub timestamp_ms: i64,
    /// `container_start_time_seconds` (containers only).
    pub start_seconds: Option<f64>,
}

/// A decoded scrape: the node when complete, the pods whose every container is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    pub node: Option<Point>,
    /// (namespace, pod) → container → point.
    pub pods: BTreeMap<(String, String), BTreeMap<String, Point>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct DecodeError {
    pub line: usize,
    pub reason: String,
}

/// Most bytes decoded: far more than a node with 110 pods of a few containers writes.
pub const MAX_TEXT: usize = 16 << 20;

type Labels = BTreeMap<String, String>;

/// `{k="v",…}` with the text format's escapes.
fn labels(text: &str) -> Result<Labels, String> {
    let mut out = Labels::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("a bad escape in a label value".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        if out.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(out)
}

/// One sample line: name, labels, value, timestamp.
fn series(line: &str) -> Result<(&str, Labels, f64, Option<i64>), String> {
    let (name, labels, rest) = match line.split_once('{') {
        Some((name, after)) => {
            let (l, rest) = after.rsplit_once('}').ok_or("an unclosed {")?;
            (name, labels(l)?, rest)
        }
        None => {
            let (name, rest) = line.split_once(' ').ok_or("no value")?;
            (name, Labels::new(), rest)
        }
    };
    let mut fields = rest.split_whitespace();
    let value: f64 = fields
        .next()
        .ok_or("no value")?
        .parse()
        .map_err(|_| "a value that is no number")?;
    let ts = match fields.next() {
        Some(t) => Some(t.parse().map_err(|_| "a timestamp that is no integer")?),
        None => None,
    };
    if fields.next().is_some() {
        return Err("more than a value and a timestamp".into());
    }
    Ok((name, labels, value, ts))
}

fn want_labels(l: &Labels, names: &[&str]) -> Result<(), String> {
    let got: BTreeSet<&str> = l.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = names.iter().copied().collect();
    if got == want {
        Ok(())
    } else {
        Err(format!("labels {got:?}, want {want:?}"))
    }
}

fn label(l: &Labels, k: &str) -> String {
    l.get(k).cloned().unwrap_or_default()
}

/// One sample line of the text format.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

impl Series {
    /// A label's value; "" when absent.
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }
}

fn is_name(s: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c == '_' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit()) || (colon && c == ':')
    };
    let mut chars = s.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

/// Every sample of a Prometheus text answer, read strictly: each line is a comment (`# HELP
/// name …`, `# TYPE name counter|gauge|…`) or a sample (a metric name, optional `{label="…"}`
/// with the format's escapes, a float, an optional integer timestamp); a sample's family has
/// its TYPE line first; names are well formed.
pub fn samples(text: &str) -> Result<Vec<Series>, DecodeError> {
    if text.len() > MAX_TEXT {
        return Err(DecodeError {
            line: 0,
            reason: format!("longer than {MAX_TEXT} bytes"),
        });
    }
    let mut typed: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason: String| DecodeError {
            line: i + 1,
            reason,
        };
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
            if !is_name(name, true) || !kinds.contains(&kind) {
                return Err(err(format!("a bad TYPE line: {rest}")));
            }
            typed.insert(name);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !is_name(name, true) {
                return Err(err(format!("a bad HELP line: {rest}")));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, value, timestamp_ms) = series(line).map_err(err)?;
        if !is_name(name, true) {
            return Err(err(format!("a bad metric name {name:?}")));
        }
        if let Some(bad) = labels.keys().find(|k| !is_name(k, false)) {
            return Err(err(format!("a bad label name {bad:?}")));
        }
        if !typed.contains(name) {
            return Err(err(format!("{name} before its TYPE line")));
        }
        out.push(Series {
            name: name.to_string(),
            labels,
            value,
            timestamp_ms,
        });
    }
    Ok(out)
}

/// Decodes a `/metrics/resource` answer.
pub fn decode(text: &str) -> Result<Decoded, DecodeError> {
    if text.len() > MAX_TEXT {
        return Err(DecodeError {
            line: 0,
            reason: format!("longer than {MAX_TEXT} bytes"),
        });
    }
    let mut typed: BTreeSet<&str> = BTreeSet::new();
    let mut node = Point::default();
    let mut containers: BTreeMap<(String, String, String), Point> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason: String| DecodeError {
            line: i + 1,
            reason,
        };
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            typed.insert(name);
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, l, value, ts) = series(line).map_err(err)?;
        if !typed.contains(name) {
            return Err(err(format!("{name} before its TYPE line")));
        }
        let timed = |ts: Option<i64>| ts.ok_or_else(|| err(format!("{name} without a timestamp")));
        match name {
            "node_cpu_usage_seconds_total" | "node_memory_working_set_bytes" => {
                want_labels(&l, &[]).map_err(err)?;
                node.timestamp_ms = timed(ts)?;
                if name.starts_with("node_cpu") {
                    node.cpu_core_nanos = (value * 1e9) as u64;
                } else {
                    node.memory_bytes = value as u64;
                }
            }
            "container_cpu_usage_seconds_total"
            | "container_memory_working_set_bytes"
            | "container_start_time_seconds" => {
                want_labels(&l, &["container", "namespace", "pod"]).map_err(err)?;
                let key = (
                    label(&l, "namespace"),
                    label(&l, "pod"),
                    label(&l, "container"),
                );
                let point = containers.entry(key).or_default();
                match name {
                    "container_cpu_usage_seconds_total" => {
                        point.cpu_core_nanos = (value * 1e9) as u64;
                        point.timestamp_ms = timed(ts)?;
                    }
                    "container_memory_working_set_bytes" => {
                        point.memory_bytes = value as u64;
                        point.timestamp_ms = timed(ts)?;
                    }
                    _ if ts.is_some() => {
                        return Err(err("a start time with a timestamp".into()));
                    }
                    _ => point.start_seconds = Some(value),
                }
            }
            "pod_cpu_usage_seconds_total" | "pod_memory_working_set_bytes" => {
                want_labels(&l, &["namespace", "pod"]).map_err(err)?;
                timed(ts)?;
            }
            _ => {}
        }
    }
    let mut out = Decoded {
        node: (node.timestamp_ms != 0 && node.cpu_core_nanos != 0 && node.memory_bytes != 0)
            .then_some(node),
        pods: BTreeMap::new(),
    };
    let mut dropped = BTreeSet::new();
    for ((ns, pod, container), p) in containers {
        // metrics-server drops a pod whose any container has no CPU time or memory yet.
        if p.cpu_core_nanos == 0 || p.memory_bytes == 0 {
            dropped.insert((ns, pod));
            continue;
        }
        out.pods.entry((ns, pod)).or_default().insert(container, p);
    }
    out.pods.retain(|k, _| !dropped.contains(k));
    Ok(out)
}
