//! The `HollowNodePool` resource (mock-kind.io/v1alpha1, cluster-scoped) as Rust types: what
//! the CRD in deploy/base/crd-hollownodepools.yaml stores. Hand-written (kube's `derive` feature
//! is not among our dependencies), so `kube::Resource` is implemented here.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::{Deserialize, Deserializer, Serialize};

pub const GROUP: &str = "mock-kind.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "HollowNodePool";
pub const PLURAL: &str = "hollownodepools";
/// Every node of a pool carries its pool's name in this label.
pub const POOL_LABEL: &str = "mock-kind.io/pool";

fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

fn kind() -> String {
    KIND.into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HollowNodePool {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PoolSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PoolStatus>,
}

impl HollowNodePool {
    pub fn new(name: &str, spec: PoolSpec) -> Self {
        HollowNodePool {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec,
            status: None,
        }
    }

    /// The object's name, empty when it has none (validation refuses that).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

impl kube::Resource for HollowNodePool {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Integers are kept wide here so an out-of-range value reaches validation (and a clear
/// condition) instead of failing the whole object's decoding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    #[serde(default)]
    pub replicas: i64,
    #[serde(default)]
    pub template: PoolTemplate,
    #[serde(default)]
    pub faults: PoolFaults,
    /// Heartbeats stop: the nodes go NotReady as a powered-off machine would.
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolTemplate {
    /// Overrides the default capacity key by key (cpu 4, memory 16Gi, pods 110,
    /// ephemeral-storage 100Gi); extended resources such as `nvidia.com/gpu` are added.
    #[serde(default, deserialize_with = "quantities")]
    pub capacity: BTreeMap<String, String>,
    /// Per key; a key left out is the capacity's.
    #[serde(default, deserialize_with = "quantities")]
    pub allocatable: BTreeMap<String, String>,
    /// A null value (which the schema must allow, see the CRD) reads as empty.
    #[serde(default, deserialize_with = "strings")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "strings")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<PoolTaint>,
    /// Empty: the apiserver's version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kubelet_version: String,
    #[serde(default = "linux")]
    pub os: String,
    #[serde(default = "amd64")]
    pub arch: String,
    /// The `node.kubernetes.io/instance-type` label.
    #[serde(default = "hollow")]
    pub instance_type: String,
    /// Node `i` gets `topology.kubernetes.io/zone = zones[i % len]`; empty: no zone label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

fn linux() -> String {
    "linux".into()
}
fn amd64() -> String {
    "amd64".into()
}
fn hollow() -> String {
    "hollow".into()
}

impl Default for PoolTemplate {
    fn default() -> Self {
        PoolTemplate {
            capacity: BTreeMap::new(),
            allocatable: BTreeMap::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            taints: Vec::new(),
            kubelet_version: String::new(),
            os: linux(),
            arch: amd64(),
            instance_type: hollow(),
            zones: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolTaint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: String,
}

/// The fault flags of a hollow-node process, per pool: durations as the flags spell them
/// (`30s`, `5m`, `1h30m`; `0s` is off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolFaults {
    #[serde(default = "zero")]
    pub unhealthy_after: String,
    #[serde(default = "zero")]
    pub unhealthy_duration: String,
    #[serde(default = "zero")]
    pub healthy_duration: String,
    #[serde(default)]
    pub flapping: bool,
    /// `Ready` (NotReady in a fault) or a list of MemoryPressure, DiskPressure, PIDPressure.
    #[serde(default = "ready")]
    pub condition: String,
}

fn zero() -> String {
    "0s".into()
}
fn ready() -> String {
    "Ready".into()
}

impl Default for PoolFaults {
    fn default() -> Self {
        PoolFaults {
            unhealthy_after: zero(),
            unhealthy_duration: zero(),
            healthy_duration: zero(),
            flapping: false,
            condition: ready(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub desired_nodes: i64,
    #[serde(default)]
    pub registered_nodes: i64,
    #[serde(default)]
    pub ready_nodes: i64,
    /// `Valid` and `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, Option<String>>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// A quantity the API may hold as a string or, under `x-kubernetes-int-or-string`, a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Uint(u64),
    Float(f64),
}

fn quantities<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Text(s) => s,
                Scalar::Int(i) => i.to_string(),
                Scalar::Uint(u) => u.to_string(),
                Scalar::Float(f) => f.to_string(),
            };
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_numbers_and_defaults() {
        // (case, JSON, first capacity entry)
        type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                "integer quantity",
                r#"{"spec":{"template":{"capacity":{"cpu":8}}}}"#,
                Some(("cpu", "8")),
            ),
            (
                "string quantity",
                r#"{"spec":{"template":{"capacity":{"memory":"32Gi"}}}}"#,
                Some(("memory", "32Gi")),
            ),
            (
                "fraction",
                r#"{"spec":{"template":{"capacity":{"cpu":0.5}}}}"#,
                Some(("cpu", "0.5")),
            ),
            ("empty object", r#"{}"#, None),
            (
                "null label reads as empty",
                r#"{"spec":{"template":{"labels":{"node-role.kubernetes.io/infra":null}}}}"#,
                None,
            ),
        ];
        for (name, json, want) in cases {
            let pool: HollowNodePool = serde_json::from_str(json).expect(name);
            assert_eq!(pool.api_version, "mock-kind.io/v1alpha1", "{name}");
            assert_eq!(pool.kind, KIND, "{name}");
            assert_eq!(pool.spec.template.os, "linux", "{name}");
            assert_eq!(pool.spec.faults.condition, "Ready", "{name}");
            let got = pool.spec.template.capacity.iter().next();
            assert_eq!(got.map(|(k, v)| (k.as_str(), v.as_str())), *want, "{name}");
        }
        let null: HollowNodePool =
            serde_json::from_str(r#"{"spec":{"template":{"labels":{"a":null}}}}"#).expect("null");
        assert_eq!(
            null.spec.template.labels.get("a").map(String::as_str),
            Some("")
        );
        let bad = serde_json::from_str::<HollowNodePool>(
            r#"{"spec":{"template":{"capacity":{"cpu":{"x":1}}}}}"#,
        );
        assert!(bad.is_err(), "an object is no quantity");
    }

    #[test]
    fn resource_urls() {
        use kube::Resource;
        assert_eq!(
            HollowNodePool::url_path(&(), None),
            "/apis/mock-kind.io/v1alpha1/hollownodepools"
        );
    }
}
