//! A cluster's Nodes as the `HollowNodePool`s that reproduce them: Nodes grouped by shape
//! (capacity, allocatable, non-identifying labels, scheduling taints, os/arch, instance type,
//! kubelet version), counted, zones kept, per-node identity dropped. No I/O: `mock-kind-mirror`
//! lists the Nodes and prints what this returns.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;

use crate::node_status::reported_version;

use super::names::{is_label_value, is_qualified_name};
use super::spec::{HollowNodePool, PoolSpec, PoolTaint, PoolTemplate};
use super::validate::{MAX_REPLICAS, PoolError, ZONE_LABEL, validate};

/// Largest `--scale`.
pub const MAX_SCALE: f64 = 1000.0;
/// Longest name part taken from a label or instance type, leaving room for suffixes.
const BASE_NAME_LEN: usize = 40;

/// Labels whose value the template's own fields carry, or that name this one node.
const DROPPED_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    ZONE_LABEL,
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/os",
    "beta.kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/arch",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    super::spec::POOL_LABEL,
    crate::node_status::OWNER_LABEL,
    crate::node_status::SPOOFED,
];

/// Parts of a label key that mark a per-node identity (instance, machine or provider IDs).
const IDENTIFYING_KEY_PARTS: &[&str] = &[
    "hostname",
    "instance-id",
    "instanceid",
    "machine-id",
    "machineid",
    "provider-id",
    "providerid",
    "node-name",
    "nodename",
    "node-id",
    "nodeid",
];

/// Taints the node lifecycle controllers put on and take off; not part of a shape.
const LIFECYCLE_TAINTS: &[&str] = &[
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
    "node.kubernetes.io/out-of-service",
    "node.cloudprovider.kubernetes.io/uninitialized",
    "node.cloudprovider.kubernetes.io/shutdown",
    "ToBeDeletedByClusterAutoscaler",
    "DeletionCandidateOfClusterAutoscaler",
];

/// Labels that name a node's group in managed clusters, used (first found) to name its pool.
const GROUP_LABELS: &[&str] = &[
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "alpha.eksctl.io/nodegroup-name",
    "kubernetes.azure.com/agentpool",
    "agentpool",
    "karpenter.sh/nodepool",
    "karpenter.sh/provisioner-name",
    "node.kubernetes.io/pool",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MirrorError {
    #[error("--scale {0}: must be a number above 0 and at most {MAX_SCALE}")]
    Scale(f64),
    #[error("pool {pool}: {nodes} nodes × scale {scale} is more than {MAX_REPLICAS}")]
    TooMany {
        pool: String,
        nodes: usize,
        scale: f64,
    },
    #[error("pool {pool} (from node {node}): {source}")]
    Invalid {
        pool: String,
        node: String,
        #[source]
        source: PoolError,
    },
}

/// A pool and how many source Nodes it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct MirroredPool {
    pub pool: HollowNodePool,
    pub source_nodes: usize,
}

/// What makes two Nodes interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    capacity: BTreeMap<String, String>,
    allocatable: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    taints: Vec<PoolTaint>,
    os: String,
    arch: String,
    instance_type: String,
    kubelet_version: String,
}

fn identifying(key: &str, value: &str, node: &str) -> bool {
    let k = key.to_ascii_lowercase();
    DROPPED_LABELS.contains(&key)
        || key.ends_with("/zone")
        || IDENTIFYING_KEY_PARTS.iter().any(|p| k.contains(p))
        || (!node.is_empty() && value.contains(node))
        || value.parse::<std::net::IpAddr>().is_ok()
        // What no apiserver holds (a hand-edited recording) is dropped, not copied into a pool
        // that would be refused.
        || !is_qualified_name(key)
        || !is_label_value(value)
}

/// The shape of `node` and its zone ("" when it has none).
fn shape(node: &Node) -> (Shape, String) {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let all = node.metadata.labels.clone().unwrap_or_default();
    let label = |k: &str| all.get(k).cloned().unwrap_or_default();
    let status = node.status.as_ref();
    let info = status.and_then(|s| s.node_info.as_ref());
    let pick = |from_info: Option<&String>, key: &str, default: &str| {
        from_info
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| all.get(key).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let os = pick(
        info.map(|i| &i.operating_system),
        "kubernetes.io/os",
        "linux",
    );
    let arch = pick(info.map(|i| &i.architecture), "kubernetes.io/arch", "amd64");
    let instance_type = [
        "node.kubernetes.io/instance-type",
        "beta.kubernetes.io/instance-type",
    ]
    .iter()
    .map(|k| label(k))
    .find(|v| !v.is_empty())
    .unwrap_or_else(|| "hollow".into());
    let kubelet_version = info
        .and_then(|i| reported_version(&i.kubelet_version))
        .unwrap_or_default();
    let zone = [ZONE_LABEL, "failure-domain.beta.kubernetes.io/zone"]
        .iter()
        .map(|k| label(k))
        .find(|v| !v.is_empty())
        .unwrap_or_default();
    let labels = all
        .iter()
        .filter(|(k, v)| !identifying(k, v, name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let quantities =
        |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.map(|m| {
                m.iter()
                    .map(|(k, q)| (k.clone(), q.0.clone()))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default()
        };
    let capacity = quantities(status.and_then(|s| s.capacity.as_ref()));
    // Only where it differs: a key left out of a pool's allocatable is its capacity.
    let allocatable = quantities(status.and_then(|s| s.allocatable.as_ref()))
        .into_iter()
        .filter(|(k, v)| capacity.get(k) != Some(v))
        .collect();
    let mut taints: Vec<PoolTaint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| !LIFECYCLE_TAINTS.contains(&t.key.as_str()))
        .map(|t| PoolTaint {
            key: t.key.clone(),
            value: t.value.clone().filter(|v| !v.is_empty()),
            effect: t.effect.clone(),
        })
        .collect();
    taints.sort();
    taints.dedup();
    let shape = Shape {
        capacity,
        allocatable,
        labels,
        taints,
        os,
        arch,
        instance_type,
        kubelet_version,
    };
    (shape, zone)
}

/// `s` as a DNS label part: lowercase, runs of anything else as one `-`, at most `max` long.
fn dns_part(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= max {
            break;
        }
    }
    out.trim_end_matches('-').to_string()
}

fn base_name(shape: &Shape) -> String {
    let from_group = GROUP_LABELS
        .iter()
        .filter_map(|k| shape.labels.get(*k))
        .map(|v| dns_part(v, BASE_NAME_LEN))
        .find(|v| !v.is_empty());
    let from_role = || {
        shape
            .labels
            .keys()
            .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
            .map(|r| dns_part(r, BASE_NAME_LEN))
            .find(|r| !r.is_empty())
    };
    let from_type = || {
        (shape.instance_type != "hollow")
            .then(|| dns_part(&shape.instance_type, BASE_NAME_LEN))
            .filter(|t| !t.is_empty())
    };
    from_group
        .or_else(from_role)
        .or_else(from_type)
        .unwrap_or_else(|| "pool".into())
}

/// `count × scale`, rounded, at least 1 (a shape that exists keeps a node).
fn scaled(count: usize, scale: f64) -> Option<i64> {
    let n = (count as f64 * scale).round().max(1.0);
    (n <= MAX_REPLICAS as f64).then_some(n as i64)
}

/// One pool's worth: its shape, zones (round-robin order) and source node count.
struct Group<'a> {
    shape: &'a Shape,
    zones: Vec<String>,
    zone_suffix: Option<String>,
    count: usize,
    /// A source node, named in errors.
    example: &'a str,
}

/// The pools that reproduce `nodes`, counts multiplied by `scale`, sorted by name. The same
/// Nodes in any order give the same pools.
pub fn mirror(nodes: &[Node], scale: f64) -> Result<Vec<MirroredPool>, MirrorError> {
    if !(scale.is_finite() && scale > 0.0 && scale <= MAX_SCALE) {
        return Err(MirrorError::Scale(scale));
    }
    // shape → zone → (count, smallest node name)
    let mut groups: BTreeMap<Shape, BTreeMap<String, (usize, String)>> = BTreeMap::new();
    for node in nodes {
        let (shape, zone) = shape(node);
        let name = node.metadata.name.clone().unwrap_or_default();
        let entry = groups
            .entry(shape)
            .or_default()
            .entry(zone)
            .or_insert((0, name.clone()));
        entry.0 += 1;
        if name < entry.1 {
            entry.1 = name;
        }
    }
    let mut planned: Vec<(String, Group)> = Vec::new();
    for (shape, zones) in &groups {
        let base = base_name(shape);
        let counts: Vec<usize> = zones.values().map(|(c, _)| *c).collect();
        let even = counts
            .iter()
            .max()
            .zip(counts.iter().min())
            .is_some_and(|(a, b)| a - b <= 1);
        let zoned = !zones.contains_key("");
        if zones.len() == 1 || (even && zoned) {
            // Round-robin reproduces even counts exactly when the fuller zones come first.
            let mut order: Vec<(&String, usize)> =
                zones.iter().map(|(z, (c, _))| (z, *c)).collect();
            order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let example = zones
                .values()
                .map(|(_, n)| n.as_str())
                .min()
                .unwrap_or_default();
            planned.push((
                base,
                Group {
                    shape,
                    zones: order
                        .iter()
                        .filter(|(z, _)| !z.is_empty())
                        .map(|(z, _)| (*z).clone())
                        .collect(),
                    zone_suffix: None,
                    count: counts.iter().sum(),
                    example,
                },
            ));
        } else {
            // Uneven (or partly zoneless): one pool per zone keeps each zone's count.
            for (zone, (count, example)) in zones {
                planned.push((
                    base.clone(),
                    Group {
                        shape,
                        zones: (!zone.is_empty())
                            .then(|| zone.clone())
                            .into_iter()
                            .collect(),
                        zone_suffix: Some(if zone.is_empty() {
                            "nozone".into()
                        } else {
                            dns_part(zone, 16)
                        }),
                        count: *count,
                        example,
                    },
                ));
            }
        }
    }
    let mut used = BTreeSet::new();
    let mut out = Vec::new();
    for (base, g) in planned {
        let stem = match &g.zone_suffix {
            Some(z) if !z.is_empty() => format!("{base}-{z}"),
            _ => base,
        };
        let mut name = stem.clone();
        let mut n = 2u32;
        while used.contains(&name) {
            name = format!("{stem}-{n}");
            n = n.saturating_add(1);
        }
        used.insert(name.clone());
        let replicas = scaled(g.count, scale).ok_or_else(|| MirrorError::TooMany {
            pool: name.clone(),
            nodes: g.count,
            scale,
        })?;
        let s = g.shape;
        let spec = PoolSpec {
            replicas,
            template: PoolTemplate {
                capacity: s.capacity.clone(),
                allocatable: s.allocatable.clone(),
                labels: s.labels.clone(),
                annotations: BTreeMap::new(),
                taints: s.taints.clone(),
                kubelet_version: s.kubelet_version.clone(),
                os: s.os.clone(),
                arch: s.arch.clone(),
                instance_type: s.instance_type.clone(),
                zones: g.zones,
            },
            ..Default::default()
        };
        validate(&name, &spec).map_err(|source| MirrorError::Invalid {
            pool: name.clone(),
            node: g.example.to_string(),
            source,
        })?;
        out.push(MirroredPool {
            pool: HollowNodePool::new(&name, spec),
            source_nodes: g.count,
        });
    }
    out.sort_by(|a, b| a.pool.name().cmp(b.pool.name()));
    Ok(out)
}

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod tests;
