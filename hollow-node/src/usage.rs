//! Resource usage of hollow containers, pods and nodes, as `kubectl top` and the HPA read it.
//! Nothing runs, so usage is what the user says (`mock-kind.io/usage`) or a steady share of
//! each container's requests. Pure: plain data in, numbers out.
//!
//! The annotation is `;`-separated entries, each `[container:]cpu=<q>,memory=<q>` (either
//! resource may be left out): an entry without a container name applies to every container
//! that has no entry of its own, e.g. `cpu=250m,memory=300Mi` or `cpu=1;sidecar:cpu=10m`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;

use crate::annotations::{AnnotationError, PREFIX};

/// `mock-kind.io/usage`.
pub const USAGE: &str = "usage";
/// Longest annotation value read; longer values are refused whole.
pub const MAX_VALUE_LEN: usize = 2048;
/// Most entries in one value.
pub const MAX_ENTRIES: usize = 64;
/// Most CPU one container can use: 100,000 cores, in nanocores, so that sums over every pod
/// of a process stay far from `u64::MAX`.
pub const MAX_CPU_NANOS: u64 = 100_000 * NANOS_PER_CORE;
/// Most memory one container can use: 1 PiB.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;
/// A container's default usage is this share (per cent) of its requests.
pub const DEFAULT_SHARE_PERCENT: u64 = 50;
/// Default usage of a container without a CPU request: 1m.
pub const DEFAULT_CPU_NANOS: u64 = 1_000_000;
/// Default usage of a container without a memory request: 4Mi.
pub const DEFAULT_MEMORY_BYTES: u64 = 4 << 20;
/// What a node uses beyond its pods (system daemons, the kubelet): 100m CPU.
pub const NODE_OVERHEAD_CPU_NANOS: u64 = 100_000_000;
/// And 256Mi of memory.
pub const NODE_OVERHEAD_MEMORY_BYTES: u64 = 256 << 20;

const NANOS_PER_CORE: u64 = 1_000_000_000;
/// Longest quantity string accepted (digits, point and suffix).
const MAX_QUANTITY_LEN: usize = 32;

/// CPU in nanocores and memory in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nanos: u64,
    pub memory_bytes: u64,
}

impl Usage {
    /// The sum, saturating (bounded inputs never reach the bound in practice).
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            cpu_nanos: self.cpu_nanos.saturating_add(other.cpu_nanos),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// The usage one entry sets; a resource left out keeps its default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Partial {
    pub cpu_nanos: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// A parsed `mock-kind.io/usage` value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageSpec {
    /// For every container without an entry of its own.
    pub all: Option<Partial>,
    pub containers: BTreeMap<String, Partial>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("longer than {MAX_VALUE_LEN} bytes")]
    TooLong,
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("entry {0:?}: want [container:]cpu=<quantity>,memory=<quantity>")]
    Entry(String),
    #[error("{resource}={value:?}: {reason}")]
    Quantity {
        resource: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("container {0:?} has two entries")]
    Repeated(String),
}

/// Parses a quantity (`250m`, `1.5`, `300Mi`, `2G`) times `scale` as a whole number, rounded
/// up as Kubernetes rounds quantities; an error when malformed or above `max`.
fn quantity(s: &str, scale: u128, max: u64) -> Result<u64, &'static str> {
    if s.is_empty() || s.len() > MAX_QUANTITY_LEN {
        return Err("not a quantity");
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (num, den): (u128, u128) = match suffix {
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "" => (1, 1),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        _ => return Err("unknown suffix"),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a number");
    }
    let digits = format!("{int}{frac}");
    let mantissa: u128 = digits.parse().map_err(|_| "not a number")?;
    let frac_den = 10u128
        .checked_pow(u32::try_from(frac.len()).map_err(|_| "too precise")?)
        .ok_or("too precise")?;
    let top = mantissa
        .checked_mul(num)
        .and_then(|v| v.checked_mul(scale))
        .ok_or("too large")?;
    let bottom = den.checked_mul(frac_den).ok_or("too precise")?;
    let value = top.div_ceil(bottom);
    u64::try_from(value)
        .ok()
        .filter(|v| *v <= max)
        .ok_or("too large")
}

/// CPU quantity in nanocores.
pub fn cpu_nanos(s: &str) -> Result<u64, &'static str> {
    quantity(s, u128::from(NANOS_PER_CORE), MAX_CPU_NANOS)
}

/// Memory quantity in bytes.
pub fn memory_bytes(s: &str) -> Result<u64, &'static str> {
    quantity(s, 1, MAX_MEMORY_BYTES)
}

fn entry(text: &str) -> Result<(Option<String>, Partial), UsageError> {
    let bad = || UsageError::Entry(telemetry::char_prefix(text, 64).to_string());
    let (container, pairs) = match text.split_once(':') {
        Some((c, rest)) => {
            let c = c.trim();
            if c.is_empty() || c.len() > 63 {
                return Err(bad());
            }
            (Some(c.to_string()), rest)
        }
        None => (None, text),
    };
    let mut partial = Partial::default();
    for pair in pairs.split(',') {
        let (key, value) = pair.split_once('=').ok_or_else(bad)?;
        let value = value.trim();
        let quantity_error = |resource, reason| UsageError::Quantity {
            resource,
            value: telemetry::char_prefix(value, MAX_QUANTITY_LEN).to_string(),
            reason,
        };
        match key.trim() {
            "cpu" if partial.cpu_nanos.is_none() => {
                partial.cpu_nanos = Some(cpu_nanos(value).map_err(|r| quantity_error("cpu", r))?);
            }
            "memory" if partial.memory_bytes.is_none() => {
                partial.memory_bytes =
                    Some(memory_bytes(value).map_err(|r| quantity_error("memory", r))?);
            }
            _ => return Err(bad()),
        }
    }
    Ok((container, partial))
}

/// Parses a `mock-kind.io/usage` value; any bad entry refuses the whole value.
pub fn parse(value: &str) -> Result<UsageSpec, UsageError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(UsageError::TooLong);
    }
    let mut spec = UsageSpec::default();
    let entries = value.split(';').filter(|e| !e.trim().is_empty());
    for (i, text) in entries.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(UsageError::TooManyEntries);
        }
        match entry(text)? {
            (None, p) if spec.all.is_none() => spec.all = Some(p),
            (None, _) => return Err(UsageError::Repeated("*".into())),
            (Some(c), p) => {
                if spec.containers.insert(c.clone(), p).is_some() {
                    return Err(UsageError::Repeated(c));
                }
            }
        }
    }
    Ok(spec)
}

fn annotation(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    annotations?
        .get(&format!("{PREFIX}{USAGE}"))
        .map(String::as_str)
}

/// The pod's usage spec: none when the annotation is absent or bad (the pod evaluation
/// reports a bad one with [`check`]).
pub fn spec_of(annotations: Option<&BTreeMap<String, String>>) -> Option<UsageSpec> {
    parse(annotation(annotations)?).ok()
}

/// The error a bad `mock-kind.io/usage` annotation of pod `pod` gives, for the
/// `InvalidAnnotation` Warning Event.
pub fn check(pod: &str, annotations: Option<&BTreeMap<String, String>>) -> Option<AnnotationError> {
    let value = annotation(annotations)?;
    let reason = parse(value).err()?;
    Some(AnnotationError::Invalid {
        pod: pod.to_string(),
        annotation: format!("{PREFIX}{USAGE}"),
        value: telemetry::char_prefix(value, 100).to_string(),
        reason: reason.to_string(),
    })
}

fn share(request: Option<u64>, floor: u64) -> u64 {
    match request {
        Some(r) if r > 0 => {
            (r / 100).saturating_mul(DEFAULT_SHARE_PERCENT)
                + (r % 100) * DEFAULT_SHARE_PERCENT / 100
        }
        _ => floor,
    }
}

/// A container's requests (CPU in nanocores, memory in bytes); malformed ones count as absent.
pub fn requests(c: &Container) -> (Option<u64>, Option<u64>) {
    let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let get = |name: &str| req.and_then(|r| r.get(name)).map(|q| q.0.as_str());
    (
        get("cpu").and_then(|q| cpu_nanos(q).ok()),
        get("memory").and_then(|q| memory_bytes(q).ok()),
    )
}

/// What container `name` with requests `(cpu, memory)` uses: its entry, else the pod-wide
/// entry, else [`DEFAULT_SHARE_PERCENT`] of its requests (floors when it requests nothing).
pub fn container(
    spec: Option<&UsageSpec>,
    name: &str,
    requests: (Option<u64>, Option<u64>),
) -> Usage {
    let set = spec.and_then(|s| s.containers.get(name).or(s.all.as_ref()));
    let set = set.copied().unwrap_or_default();
    Usage {
        cpu_nanos: set
            .cpu_nanos
            .unwrap_or_else(|| share(requests.0, DEFAULT_CPU_NANOS)),
        memory_bytes: set
            .memory_bytes
            .unwrap_or_else(|| share(requests.1, DEFAULT_MEMORY_BYTES)),
    }
}

/// A node's usage: its pods' plus the fixed overhead.
pub fn node(pods: impl IntoIterator<Item = Usage>) -> Usage {
    pods.into_iter().fold(
        Usage {
            cpu_nanos: NODE_OVERHEAD_CPU_NANOS,
            memory_bytes: NODE_OVERHEAD_MEMORY_BYTES,
        },
        Usage::plus,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantities() {
        let cases: [(&str, &str, Result<u64, &str>); 14] = [
            ("millicores", "250m", Ok(250_000_000)),
            ("cores", "2", Ok(2_000_000_000)),
            ("decimal cores", "1.5", Ok(1_500_000_000)),
            ("nanocores", "7n", Ok(7)),
            ("rounds up", "0.1n", Ok(1)),
            ("leading point", ".5", Ok(500_000_000)),
            ("kilo cores", "1k", Ok(1_000_000_000_000)),
            ("too many cores", "100001", Err("too large")),
            ("empty", "", Err("not a quantity")),
            ("point only", ".", Err("not a number")),
            ("unknown suffix", "1x", Err("unknown suffix")),
            ("negative", "-1", Err("unknown suffix")),
            ("two points", "1.2.3", Err("not a number")),
            (
                "too long",
                "1111111111111111111111111111111111m",
                Err("not a quantity"),
            ),
        ];
        for (name, q, want) in cases {
            assert_eq!(cpu_nanos(q), want, "{name}");
        }
        let mem: [(&str, &str, Result<u64, &str>); 5] = [
            ("Mi", "300Mi", Ok(300 << 20)),
            ("G", "1G", Ok(1_000_000_000)),
            ("bytes", "1234", Ok(1234)),
            ("milli bytes round up", "1500m", Ok(2)),
            ("beyond a PiB", "2Pi", Err("too large")),
        ];
        for (name, q, want) in mem {
            assert_eq!(memory_bytes(q), want, "{name}");
        }
    }

    #[test]
    fn specs() {
        let p = |cpu: Option<u64>, mem: Option<u64>| Partial {
            cpu_nanos: cpu,
            memory_bytes: mem,
        };
        let cases: [(&str, &str, Result<UsageSpec, UsageError>); 7] = [
            (
                "pod-wide",
                "cpu=250m,memory=300Mi",
                Ok(UsageSpec {
                    all: Some(p(Some(250_000_000), Some(300 << 20))),
                    containers: BTreeMap::new(),
                }),
            ),
            (
                "per container and default, spaces",
                " cpu=1 ; side : cpu = 10m ",
                Ok(UsageSpec {
                    all: Some(p(Some(1_000_000_000), None)),
                    containers: BTreeMap::from([("side".into(), p(Some(10_000_000), None))]),
                }),
            ),
            ("empty", "", Ok(UsageSpec::default())),
            (
                "unknown resource",
                "gpu=1",
                Err(UsageError::Entry("gpu=1".into())),
            ),
            (
                "repeated resource",
                "cpu=1,cpu=2",
                Err(UsageError::Entry("cpu=1,cpu=2".into())),
            ),
            (
                "repeated container",
                "a:cpu=1;a:cpu=2",
                Err(UsageError::Repeated("a".into())),
            ),
            (
                "bad quantity",
                "memory=lots",
                Err(UsageError::Quantity {
                    resource: "memory",
                    value: "lots".into(),
                    reason: "unknown suffix",
                }),
            ),
        ];
        for (name, value, want) in cases {
            assert_eq!(parse(value), want, "{name}");
        }
        assert_eq!(
            parse(&"x".repeat(MAX_VALUE_LEN + 1)),
            Err(UsageError::TooLong)
        );
        assert_eq!(
            parse(
                &(0..=MAX_ENTRIES)
                    .map(|i| format!("c{i}:cpu=1;"))
                    .collect::<String>()
            ),
            Err(UsageError::TooManyEntries)
        );
    }

    #[test]
    fn container_usage() {
        let spec = parse("cpu=300m;side:memory=1Gi").ok();
        let req = (Some(200_000_000), Some(100 << 20));
        let cases = [
            (
                "no annotation: half the requests",
                None,
                "app",
                req,
                (100_000_000, 50 << 20),
            ),
            (
                "no requests: floors",
                None,
                "app",
                (None, None),
                (DEFAULT_CPU_NANOS, DEFAULT_MEMORY_BYTES),
            ),
            (
                "pod-wide cpu, memory default",
                spec.as_ref(),
                "app",
                req,
                (300_000_000, 50 << 20),
            ),
            (
                "own entry wins, cpu default",
                spec.as_ref(),
                "side",
                req,
                (100_000_000, 1 << 30),
            ),
        ];
        for (name, spec, c, req, (cpu, mem)) in cases {
            assert_eq!(
                container(spec, c, req),
                Usage {
                    cpu_nanos: cpu,
                    memory_bytes: mem
                },
                "{name}"
            );
        }
        let one = Usage {
            cpu_nanos: 1,
            memory_bytes: 2,
        };
        assert_eq!(
            node([one, one]),
            Usage {
                cpu_nanos: NODE_OVERHEAD_CPU_NANOS + 2,
                memory_bytes: NODE_OVERHEAD_MEMORY_BYTES + 4
            }
        );
    }

    #[test]
    fn bad_annotation_is_reported() {
        let ann = |v: &str| BTreeMap::from([(format!("{PREFIX}{USAGE}"), v.to_string())]);
        assert!(check("ns/p", Some(&ann("cpu=1"))).is_none());
        assert!(check("ns/p", None).is_none());
        let err = check("ns/p", Some(&ann("cpu=much"))).map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("mock-kind.io/usage") && e.contains("cpu")));
        assert_eq!(spec_of(Some(&ann("cpu=much"))), None);
    }

    proptest! {
        #[test]
        fn any_value_parses_or_errs_within_bounds(value in ".{0,300}") {
            if let Ok(spec) = parse(&value) {
                let parts = spec.all.iter().chain(spec.containers.values());
                for p in parts {
                    prop_assert!(p.cpu_nanos.unwrap_or(0) <= MAX_CPU_NANOS);
                    prop_assert!(p.memory_bytes.unwrap_or(0) <= MAX_MEMORY_BYTES);
                }
            }
        }

        #[test]
        fn millicores_round_trip(m in 0u64..100_000_000) {
            prop_assert_eq!(cpu_nanos(&format!("{m}m")), Ok(m * 1_000_000));
        }

        #[test]
        fn default_share_is_half_and_at_most_the_request(r in 1u64..MAX_CPU_NANOS) {
            let u = container(None, "c", (Some(r), None));
            prop_assert!(u.cpu_nanos <= r);
            prop_assert!(u.cpu_nanos.abs_diff(r / 2) <= 1);
        }
    }
}
