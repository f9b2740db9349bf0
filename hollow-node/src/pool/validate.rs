//! Whether a pool can be turned into Nodes: every value bounded and parsed (quantities, label
//! keys and values, taints, durations), with a typed error naming the field. A pool that passes
//! is a [`ValidPool`], the only thing a plan is made from.

use std::collections::{BTreeMap, BTreeSet};

use crate::annotations::parse_duration;
use crate::config::default_capacity;
use crate::faults::FaultSchedule;
use crate::node_pressure::{Pressures, parse_fault_condition};
use crate::node_status::{OWNER_LABEL, SPOOFED, reported_version};
use crate::reserved::milli_units;

use super::names::{is_dns_subdomain, is_label_value, is_qualified_name};
use super::spec::{POOL_LABEL, PoolSpec};

pub const MAX_REPLICAS: i64 = 10_000;
/// Most labels, annotations, capacity or allocatable entries.
pub const MAX_ENTRIES: usize = 64;
pub const MAX_TAINTS: usize = 32;
pub const MAX_ZONES: usize = 64;
/// Longest pool name: it is also the value of the pool label.
pub const MAX_NAME_LEN: usize = 63;
/// Most bytes of all annotation keys and values together (the apiserver allows 256 KiB per
/// object; a pool's share stays well under it).
pub const MAX_ANNOTATION_BYTES: usize = 64 * 1024;
/// Characters of a bad value quoted back in a message.
const QUOTED: usize = 64;

pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Labels the node's own fields set; a template label may not set them too.
const RESERVED_LABELS: &[(&str, &str)] = &[
    (POOL_LABEL, "the pool's name"),
    (OWNER_LABEL, "the hollow-node process"),
    (SPOOFED, "the process's --spoofed flag"),
    ("kubernetes.io/hostname", "the node name"),
    ("kubernetes.io/os", "spec.template.os"),
    ("beta.kubernetes.io/os", "spec.template.os"),
    ("kubernetes.io/arch", "spec.template.arch"),
    ("beta.kubernetes.io/arch", "spec.template.arch"),
    (
        "node.kubernetes.io/instance-type",
        "spec.template.instanceType",
    ),
];

const RESERVED_ANNOTATIONS: &[&str] = &[SPOOFED, "node.alpha.kubernetes.io/ttl"];

const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(
        "metadata.name {0:?} must be a lowercase DNS name of at most {MAX_NAME_LEN} characters"
    )]
    Name(String),
    #[error("spec.replicas {0} is outside 0 to {MAX_REPLICAS}")]
    Replicas(i64),
    #[error("spec.template.{field} has {count} entries, at most {max}")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("spec.template.{field}[{key:?}]: {reason}")]
    Entry {
        field: &'static str,
        key: String,
        reason: String,
    },
    #[error("spec.template.taints[{index}]: {reason}")]
    Taint { index: usize, reason: String },
    #[error("spec.template.{field} {value:?}: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("spec.faults.{field} {value:?}: {reason}")]
    Fault {
        field: &'static str,
        value: String,
        reason: String,
    },
}

fn quote(s: &str) -> String {
    s.chars().take(QUOTED).collect()
}

fn entry(field: &'static str, key: &str, reason: impl Into<String>) -> PoolError {
    PoolError::Entry {
        field,
        key: quote(key),
        reason: reason.into(),
    }
}

fn field(field: &'static str, value: &str, reason: impl Into<String>) -> PoolError {
    PoolError::Field {
        field,
        value: quote(value),
        reason: reason.into(),
    }
}

/// A pool that passed [`validate`], with what validation parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPool<'a> {
    pub name: &'a str,
    pub spec: &'a PoolSpec,
    pub replicas: u32,
    /// The default capacity overlaid with the template's.
    pub capacity: BTreeMap<String, String>,
    /// The capacity overlaid with the template's allocatable.
    pub allocatable: BTreeMap<String, String>,
    pub faults: FaultSchedule,
    pub fault_pressure: Option<Pressures>,
}

fn bounded<T>(field: &'static str, items: &[T], max: usize) -> Result<(), PoolError> {
    if items.len() > max {
        return Err(PoolError::TooMany {
            field,
            count: items.len(),
            max,
        });
    }
    Ok(())
}

fn bounded_map(
    field: &'static str,
    m: &BTreeMap<String, String>,
    max: usize,
) -> Result<(), PoolError> {
    if m.len() > max {
        return Err(PoolError::TooMany {
            field,
            count: m.len(),
            max,
        });
    }
    Ok(())
}

/// Checks `spec` of the pool `name`; the first problem found, in field order.
pub fn validate<'a>(name: &'a str, spec: &'a PoolSpec) -> Result<ValidPool<'a>, PoolError> {
    if name.len() > MAX_NAME_LEN || !is_dns_subdomain(name) {
        return Err(PoolError::Name(quote(name)));
    }
    let replicas = u32::try_from(spec.replicas)
        .ok()
        .filter(|r| i64::from(*r) <= MAX_REPLICAS)
        .ok_or(PoolError::Replicas(spec.replicas))?;
    let t = &spec.template;
    let (capacity, allocatable) = resources(&t.capacity, &t.allocatable)?;

    bounded_map("labels", &t.labels, MAX_ENTRIES)?;
    for (k, v) in &t.labels {
        if !is_qualified_name(k) {
            return Err(entry("labels", k, "not a label key ([prefix/]name)"));
        }
        if let Some((_, by)) = RESERVED_LABELS.iter().find(|(r, _)| r == k) {
            return Err(entry("labels", k, format!("set from {by}")));
        }
        if k == ZONE_LABEL && !t.zones.is_empty() {
            return Err(entry("labels", k, "set from spec.template.zones"));
        }
        if !is_label_value(v) {
            return Err(entry(
                "labels",
                k,
                format!("value {:?} is not a label value", quote(v)),
            ));
        }
    }

    bounded_map("annotations", &t.annotations, MAX_ENTRIES)?;
    let mut bytes = 0usize;
    for (k, v) in &t.annotations {
        if !is_qualified_name(k) {
            return Err(entry("annotations", k, "not an annotation key"));
        }
        if RESERVED_ANNOTATIONS.contains(&k.as_str()) {
            return Err(entry("annotations", k, "set by the hollow node"));
        }
        bytes = bytes.saturating_add(k.len()).saturating_add(v.len());
    }
    if bytes > MAX_ANNOTATION_BYTES {
        return Err(PoolError::TooMany {
            field: "annotations",
            count: bytes,
            max: MAX_ANNOTATION_BYTES,
        });
    }

    bounded("taints", &t.taints, MAX_TAINTS)?;
    let mut seen = BTreeSet::new();
    for (index, taint) in t.taints.iter().enumerate() {
        let bad = |reason: String| PoolError::Taint { index, reason };
        if !is_qualified_name(&taint.key) {
            return Err(bad(format!(
                "key {:?} is not a qualified name",
                quote(&taint.key)
            )));
        }
        if let Some(v) = &taint.value
            && !is_label_value(v)
        {
            return Err(bad(format!("value {:?} is not a label value", quote(v))));
        }
        if !EFFECTS.contains(&taint.effect.as_str()) {
            return Err(bad(format!(
                "effect {:?} must be NoSchedule, PreferNoSchedule or NoExecute",
                quote(&taint.effect)
            )));
        }
        if !seen.insert((&taint.key, &taint.effect)) {
            return Err(bad(format!(
                "a second taint {:?} with effect {}",
                quote(&taint.key),
                taint.effect
            )));
        }
    }

    if !t.kubelet_version.is_empty() && reported_version(&t.kubelet_version).is_none() {
        return Err(field(
            "kubeletVersion",
            &t.kubelet_version,
            "must be v and at most 63 of [0-9A-Za-z.+-]",
        ));
    }
    for (name, value) in [
        ("os", &t.os),
        ("arch", &t.arch),
        ("instanceType", &t.instance_type),
    ] {
        if value.is_empty() || !is_label_value(value) {
            return Err(field(name, value, "must be a non-empty label value"));
        }
    }
    bounded("zones", &t.zones, MAX_ZONES)?;
    let mut zones = BTreeSet::new();
    for z in &t.zones {
        if z.is_empty() || !is_label_value(z) {
            return Err(field("zones", z, "must be a non-empty label value"));
        }
        if !zones.insert(z) {
            return Err(field("zones", z, "listed twice"));
        }
    }

    let (faults, fault_pressure) = faults(&spec.faults)?;
    Ok(ValidPool {
        name,
        spec,
        replicas,
        capacity,
        allocatable,
        faults,
        fault_pressure,
    })
}

type Resources = (BTreeMap<String, String>, BTreeMap<String, String>);

fn resources(
    capacity: &BTreeMap<String, String>,
    allocatable: &BTreeMap<String, String>,
) -> Result<Resources, PoolError> {
    bounded_map("capacity", capacity, MAX_ENTRIES)?;
    bounded_map("allocatable", allocatable, MAX_ENTRIES)?;
    let mut cap = default_capacity();
    for (fieldname, m) in [("capacity", capacity), ("allocatable", allocatable)] {
        for (k, v) in m {
            if !is_qualified_name(k) {
                return Err(entry(fieldname, k, "not a resource name ([prefix/]name)"));
            }
            milli_units(v).map_err(|e| entry(fieldname, k, e.to_string()))?;
        }
    }
    cap.extend(capacity.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut alloc = cap.clone();
    for (k, v) in allocatable {
        let Some(c) = cap.get(k) else {
            return Err(entry("allocatable", k, "not in capacity"));
        };
        // Both parsed above (or defaults, which parse).
        let (a, c) = (milli_units(v), milli_units(c));
        if let (Ok(a), Ok(c)) = (a, c)
            && a > c
        {
            return Err(entry(
                "allocatable",
                k,
                format!("{} exceeds the capacity {}", quote(v), quote(&cap[k])),
            ));
        }
        alloc.insert(k.clone(), v.clone());
    }
    Ok((cap, alloc))
}

fn faults(f: &super::spec::PoolFaults) -> Result<(FaultSchedule, Option<Pressures>), PoolError> {
    let duration = |name: &'static str, v: &str| {
        parse_duration(v).map_err(|reason| PoolError::Fault {
            field: name,
            value: quote(v),
            reason,
        })
    };
    let schedule = FaultSchedule {
        unhealthy_after: duration("unhealthyAfter", &f.unhealthy_after)?,
        unhealthy_duration: duration("unhealthyDuration", &f.unhealthy_duration)?,
        healthy_duration: duration("healthyDuration", &f.healthy_duration)?,
        flapping: f.flapping,
    };
    let pressure = parse_fault_condition(&f.condition).map_err(|e| PoolError::Fault {
        field: "condition",
        value: quote(&f.condition),
        reason: e.to_string(),
    })?;
    Ok((schedule, pressure))
}

#[cfg(test)]
mod tests {
    use super::super::spec::{PoolFaults, PoolTaint, PoolTemplate};
    use super::*;

    fn spec(edit: impl FnOnce(&mut PoolSpec)) -> PoolSpec {
        let mut s = PoolSpec {
            replicas: 3,
            ..Default::default()
        };
        edit(&mut s);
        s
    }

    fn taint(key: &str, effect: &str) -> PoolTaint {
        PoolTaint {
            key: key.into(),
            value: None,
            effect: effect.into(),
        }
    }

    #[test]
    fn refusals() {
        let map = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        let long = "a".repeat(64);
        let cases: Vec<(&str, &str, PoolSpec, Option<&str>)> = vec![
            ("default spec", "plain", spec(|_| {}), None),
            ("zero replicas", "plain", spec(|s| s.replicas = 0), None),
            (
                "gpu",
                "gpu",
                spec(|s| {
                    s.template.capacity = map("nvidia.com/gpu", "8");
                    s.template.allocatable = map("cpu", "3500m");
                    s.template.taints = vec![taint("nvidia.com/gpu", "NoSchedule")];
                    s.template.zones = vec!["a".into(), "b".into()];
                }),
                None,
            ),
            (
                "upper-case name",
                "GPU",
                spec(|_| {}),
                Some("metadata.name"),
            ),
            ("long name", &long, spec(|_| {}), Some("metadata.name")),
            (
                "negative replicas",
                "p",
                spec(|s| s.replicas = -1),
                Some("spec.replicas -1"),
            ),
            (
                "too many replicas",
                "p",
                spec(|s| s.replicas = 10_001),
                Some("spec.replicas 10001"),
            ),
            (
                "bad quantity",
                "p",
                spec(|s| s.template.capacity = map("cpu", "four")),
                Some("spec.template.capacity[\"cpu\"]"),
            ),
            (
                "bad resource name",
                "p",
                spec(|s| s.template.capacity = map("nvidia.com/", "1")),
                Some("not a resource name"),
            ),
            (
                "allocatable above capacity",
                "p",
                spec(|s| s.template.allocatable = map("cpu", "5")),
                Some("exceeds the capacity 4"),
            ),
            (
                "allocatable not in capacity",
                "p",
                spec(|s| s.template.allocatable = map("example.com/fpga", "1")),
                Some("not in capacity"),
            ),
            (
                "bad label key",
                "p",
                spec(|s| s.template.labels = map("a b", "x")),
                Some("not a label key"),
            ),
            (
                "bad label value",
                "p",
                spec(|s| s.template.labels = map("team", "a/b")),
                Some("is not a label value"),
            ),
            (
                "reserved label",
                "p",
                spec(|s| s.template.labels = map(POOL_LABEL, "other")),
                Some("the pool's name"),
            ),
            (
                "zone label with zones",
                "p",
                spec(|s| {
                    s.template.labels = map(ZONE_LABEL, "a");
                    s.template.zones = vec!["b".into()];
                }),
                Some("spec.template.zones"),
            ),
            (
                "reserved annotation",
                "p",
                spec(|s| s.template.annotations = map("spoofed", "false")),
                Some("set by the hollow node"),
            ),
            (
                "taint effect",
                "p",
                spec(|s| s.template.taints = vec![taint("k", "Sometimes")]),
                Some("taints[0]: effect"),
            ),
            (
                "duplicate taint",
                "p",
                spec(|s| s.template.taints = vec![taint("k", "NoSchedule"); 2]),
                Some("taints[1]: a second taint"),
            ),
            (
                "kubelet version",
                "p",
                spec(|s| s.template.kubelet_version = "1.20".into()),
                Some("kubeletVersion"),
            ),
            (
                "empty arch",
                "p",
                spec(|s| s.template.arch = String::new()),
                Some("spec.template.arch"),
            ),
            (
                "duplicate zone",
                "p",
                spec(|s| s.template.zones = vec!["a".into(), "a".into()]),
                Some("listed twice"),
            ),
            (
                "too many zones",
                "p",
                spec(|s| s.template.zones = (0..65).map(|i| format!("z{i}")).collect()),
                Some("zones has 65 entries"),
            ),
            (
                "fault duration",
                "p",
                spec(|s| s.faults.unhealthy_after = "soon".into()),
                Some("spec.faults.unhealthyAfter"),
            ),
            (
                "fault condition",
                "p",
                spec(|s| s.faults.condition = "Sad".into()),
                Some("spec.faults.condition"),
            ),
        ];
        for (case, name, spec, want) in cases {
            match (validate(name, &spec), want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{case}: {e}"),
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn parses_what_it_checks() {
        let s = PoolSpec {
            replicas: 2,
            template: PoolTemplate {
                capacity: BTreeMap::from([("nvidia.com/gpu".into(), "8".into())]),
                allocatable: BTreeMap::from([("memory".into(), "15Gi".into())]),
                ..Default::default()
            },
            faults: PoolFaults {
                unhealthy_after: "30s".into(),
                condition: "MemoryPressure".into(),
                ..Default::default()
            },
            paused: false,
        };
        let v = validate("gpu", &s).expect("valid");
        assert_eq!(v.replicas, 2);
        assert_eq!(v.capacity.get("cpu").map(String::as_str), Some("4"));
        assert_eq!(
            v.capacity.get("nvidia.com/gpu").map(String::as_str),
            Some("8")
        );
        assert_eq!(
            v.allocatable.get("memory").map(String::as_str),
            Some("15Gi")
        );
        assert_eq!(
            v.allocatable.get("nvidia.com/gpu").map(String::as_str),
            Some("8")
        );
        assert_eq!(v.faults.unhealthy_after, std::time::Duration::from_secs(30));
        assert!(v.fault_pressure.is_some_and(|p| p.memory));
    }
}
