//! `metrics.k8s.io/v1beta1` as metrics-server serves it: which request a path is, the
//! discovery documents, and the NodeMetrics / PodMetrics objects built from usage. Pure.

use serde_json::{Value, json};

use crate::usage::Usage;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// The window each answer covers, metrics-server's default `--metric-resolution` (0.5+).
pub const WINDOW: &str = "15s";
pub const WINDOW_SECS: i64 = 15;

/// A node's usage at the moment of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSample<'a> {
    pub name: &'a str,
    pub usage: Usage,
}

/// A pod's running containers' usage, by container name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSample<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub containers: Vec<(&'a str, Usage)>,
}

/// What a path asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `/apis/metrics.k8s.io`: the APIGroup.
    Group,
    /// `/apis/metrics.k8s.io/v1beta1`: the APIResourceList.
    Resources,
    Nodes {
        name: Option<String>,
    },
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
    NotFound,
}

/// The request a (cleaned) path names.
pub fn route(path: &str) -> Request {
    let path = crate::kubelet::routes::clean(path);
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let own = |s: &&str| Some(s.to_string());
    match segs.as_slice() {
        ["apis", GROUP] => Request::Group,
        ["apis", GROUP, VERSION] => Request::Resources,
        ["apis", GROUP, VERSION, "nodes"] => Request::Nodes { name: None },
        ["apis", GROUP, VERSION, "nodes", n] => Request::Nodes { name: own(n) },
        ["apis", GROUP, VERSION, "pods"] => Request::Pods {
            namespace: None,
            name: None,
        },
        ["apis", GROUP, VERSION, "namespaces", ns, "pods"] => Request::Pods {
            namespace: own(ns),
            name: None,
        },
        ["apis", GROUP, VERSION, "namespaces", ns, "pods", n] => Request::Pods {
            namespace: own(ns),
            name: own(n),
        },
        _ => Request::NotFound,
    }
}

pub fn group() -> Value {
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    })
}

pub fn resources() -> Value {
    let resource = |name: &str, kind: &str, namespaced: bool| {
        json!({
            "name": name,
            "singularName": "",
            "namespaced": namespaced,
            "kind": kind,
            "verbs": ["get", "list"],
        })
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            resource("nodes", "NodeMetrics", false),
            resource("pods", "PodMetrics", true),
        ],
    })
}

/// CPU as metrics-server writes it: nanocores.
pub fn cpu_quantity(u: Usage) -> String {
    format!("{}n", u.cpu_nanos)
}

/// Memory as metrics-server writes it: bytes, in Ki when whole.
pub fn memory_quantity(u: Usage) -> String {
    if u.memory_bytes.is_multiple_of(1024) {
        format!("{}Ki", u.memory_bytes / 1024)
    } else {
        u.memory_bytes.to_string()
    }
}

/// A quantity map as metrics-server writes it.
pub fn quantities(u: Usage) -> Value {
    json!({"cpu": cpu_quantity(u), "memory": memory_quantity(u)})
}

pub fn node_metrics(n: &NodeSample<'_>, now: &str) -> Value {
    json!({
        "metadata": {"name": n.name, "creationTimestamp": now},
        "timestamp": now,
        "window": WINDOW,
        "usage": quantities(n.usage),
    })
}

pub fn pod_metrics(p: &PodSample<'_>, now: &str) -> Value {
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|(n, u)| json!({"name": n, "usage": quantities(*u)}))
        .collect();
    json!({
        "metadata": {"name": p.name, "namespace": p.namespace, "creationTimestamp": now},
        "timestamp": now,
        "window": WINDOW,
        "containers": containers,
    })
}

pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    })
}

/// Gives a single object its kind and apiVersion.
pub fn object(kind: &str, mut item: Value) -> Value {
    if let Some(m) = item.as_object_mut() {
        m.insert("kind".into(), kind.into());
        m.insert("apiVersion".into(), format!("{GROUP}/{VERSION}").into());
    }
    item
}

/// A `metav1.Status` failure, as the apiserver (and kubectl) expect it.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn routes() {
        let base = "/apis/metrics.k8s.io/v1beta1";
        let cases = [
            ("group", "/apis/metrics.k8s.io".to_string(), Request::Group),
            ("resources", format!("{base}/"), Request::Resources),
            (
                "all nodes",
                format!("{base}/nodes"),
                Request::Nodes { name: None },
            ),
            (
                "one node",
                format!("{base}/nodes/n1"),
                Request::Nodes {
                    name: Some("n1".into()),
                },
            ),
            (
                "all pods",
                format!("{base}/pods"),
                Request::Pods {
                    namespace: None,
                    name: None,
                },
            ),
            (
                "pods of a namespace",
                format!("{base}/namespaces/ns/pods"),
                Request::Pods {
                    namespace: Some("ns".into()),
                    name: None,
                },
            ),
            (
                "one pod",
                format!("{base}/namespaces/ns/pods/p"),
                Request::Pods {
                    namespace: Some("ns".into()),
                    name: Some("p".into()),
                },
            ),
            (
                "other version",
                "/apis/metrics.k8s.io/v1".into(),
                Request::NotFound,
            ),
            ("too deep", format!("{base}/nodes/n/x"), Request::NotFound),
        ];
        for (name, path, want) in cases {
            assert_eq!(route(&path), want, "{name}");
        }
    }

    #[test]
    fn quantities_as_metrics_server_writes_them() {
        let cases = [
            (
                "whole Ki",
                250_000_000,
                300 << 20,
                ("250000000n", "307200Ki"),
            ),
            ("odd bytes", 1, 1000, ("1n", "1000")),
            ("zero", 0, 0, ("0n", "0Ki")),
        ];
        for (name, cpu, mem, (want_cpu, want_mem)) in cases {
            let q = quantities(Usage {
                cpu_nanos: cpu,
                memory_bytes: mem,
            });
            assert_eq!(
                (q["cpu"].as_str(), q["memory"].as_str()),
                (Some(want_cpu), Some(want_mem)),
                "{name}"
            );
        }
    }

    proptest! {
        #[test]
        fn quantities_parse_back(cpu in 0u64..crate::usage::MAX_CPU_NANOS, mem in 0u64..crate::usage::MAX_MEMORY_BYTES) {
            let q = quantities(Usage { cpu_nanos: cpu, memory_bytes: mem });
            let cpu_back = q["cpu"].as_str().map(crate::usage::cpu_nanos);
            let mem_back = q["memory"].as_str().map(crate::usage::memory_bytes);
            prop_assert_eq!(cpu_back, Some(Ok(cpu)));
            prop_assert_eq!(mem_back, Some(Ok(mem)));
        }
    }
}
