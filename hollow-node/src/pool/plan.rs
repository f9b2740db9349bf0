//! A valid pool as the Nodes it stands for: names `<pool>-<i>`, the pool label, the template's
//! labels, annotations, taints and resources, and zones dealt round-robin. No I/O.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Taint;

use crate::node_status::NodeTemplate;

use super::spec::POOL_LABEL;
use super::validate::{ValidPool, ZONE_LABEL};

/// One node of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    pub name: String,
    pub index: u32,
    pub zone: Option<String>,
    /// Shared by every node of the same zone: a pool of 10,000 nodes holds one template per zone.
    pub template: Arc<NodeTemplate>,
}

/// The name of node `i` of `pool`.
pub fn node_name(pool: &str, i: u32) -> String {
    format!("{pool}-{i}")
}

impl ValidPool<'_> {
    /// The template of the pool's nodes in `zone`. `base` gives what belongs to the process,
    /// not the pool: InternalIP, kubelet port, owner label, `spoofed`; its other fields are
    /// replaced. An empty kubeletVersion keeps `base`'s (the apiserver's).
    pub fn template(&self, base: &NodeTemplate, zone: Option<&str>) -> NodeTemplate {
        let t = &self.spec.template;
        let mut labels = t.labels.clone();
        labels.insert(POOL_LABEL.into(), self.name.into());
        if let Some(z) = zone {
            labels.insert(ZONE_LABEL.into(), z.into());
        }
        NodeTemplate {
            capacity: self.capacity.clone(),
            allocatable: self.allocatable.clone(),
            labels,
            annotations: t.annotations.clone(),
            taints: t
                .taints
                .iter()
                .map(|p| Taint {
                    key: p.key.clone(),
                    value: p.value.clone(),
                    effect: p.effect.clone(),
                    time_added: None,
                })
                .collect(),
            kubelet_version: if t.kubelet_version.is_empty() {
                base.kubelet_version.clone()
            } else {
                t.kubelet_version.clone()
            },
            os: t.os.clone(),
            arch: t.arch.clone(),
            instance_type: t.instance_type.clone(),
            ..base.clone()
        }
    }

    /// Every node of the pool, in index order; node `i` is in `zones[i % zones.len()]`.
    pub fn nodes(&self, base: &NodeTemplate) -> Vec<NodePlan> {
        let zones = &self.spec.template.zones;
        let templates: Vec<Arc<NodeTemplate>> = if zones.is_empty() {
            vec![Arc::new(self.template(base, None))]
        } else {
            zones
                .iter()
                .map(|z| Arc::new(self.template(base, Some(z))))
                .collect()
        };
        (0..self.replicas)
            .map(|i| {
                let slot = i as usize % templates.len();
                NodePlan {
                    name: node_name(self.name, i),
                    index: i,
                    zone: zones.get(slot).cloned(),
                    template: templates[slot].clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::spec::{PoolSpec, PoolTaint, PoolTemplate};
    use super::super::validate::validate;
    use super::*;
    use crate::config::Config;

    fn base() -> NodeTemplate {
        let mut t = Config::new("hollow-node-0", 1).template;
        t.kubelet_version = "v1.20.2".into();
        t
    }

    #[test]
    fn plans() {
        let spec = PoolSpec {
            replicas: 5,
            template: PoolTemplate {
                capacity: BTreeMap::from([("nvidia.com/gpu".into(), "8".into())]),
                labels: BTreeMap::from([("team".into(), "ml".into())]),
                taints: vec![PoolTaint {
                    key: "nvidia.com/gpu".into(),
                    value: Some("present".into()),
                    effect: "NoSchedule".into(),
                }],
                zones: vec!["a".into(), "b".into(), "c".into()],
                arch: "arm64".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let pool = validate("gpu", &spec).expect("valid");
        let nodes = pool.nodes(&base());
        struct Case {
            name: &'static str,
            got: Vec<String>,
            want: Vec<&'static str>,
        }
        let label = |k: &str| {
            nodes
                .iter()
                .map(|n| n.template.labels.get(k).cloned().unwrap_or_default())
                .collect()
        };
        let cases = [
            Case {
                name: "names",
                got: nodes.iter().map(|n| n.name.clone()).collect(),
                want: vec!["gpu-0", "gpu-1", "gpu-2", "gpu-3", "gpu-4"],
            },
            Case {
                name: "zones round-robin",
                got: label(ZONE_LABEL),
                want: vec!["a", "b", "c", "a", "b"],
            },
            Case {
                name: "pool label",
                got: label(POOL_LABEL),
                want: vec!["gpu"; 5],
            },
            Case {
                name: "template label",
                got: label("team"),
                want: vec!["ml"; 5],
            },
            Case {
                name: "gpu capacity",
                got: nodes
                    .iter()
                    .map(|n| n.template.capacity["nvidia.com/gpu"].clone())
                    .collect(),
                want: vec!["8"; 5],
            },
            Case {
                name: "taints",
                got: nodes
                    .iter()
                    .map(|n| format!("{:?}", n.template.taints[0].value))
                    .collect(),
                want: vec!["Some(\"present\")"; 5],
            },
        ];
        for c in cases {
            assert_eq!(c.got, c.want, "{}", c.name);
        }
        let t = &nodes[0].template;
        assert_eq!(t.arch, "arm64");
        assert_eq!(
            t.owner, "hollow-node-0",
            "process fields come from the base"
        );
        assert_eq!(
            t.kubelet_version, "v1.20.2",
            "empty version keeps the base's"
        );
        assert!(
            Arc::ptr_eq(&nodes[0].template, &nodes[3].template),
            "one template per zone"
        );
        let node = crate::node_status::new_node(
            t,
            &nodes[0].name,
            10250,
            "10.0.0.0/24",
            jiff::Timestamp::UNIX_EPOCH,
        );
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("kubernetes.io/arch").map(String::as_str),
            Some("arm64")
        );
        assert_eq!(labels.get(POOL_LABEL).map(String::as_str), Some("gpu"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof!["[a-z0-9./-]{0,20}", "\\PC{0,30}"]
        }

        fn spec() -> impl Strategy<Value = PoolSpec> {
            let map = || proptest::collection::btree_map(text(), text(), 0..4);
            (
                prop_oneof![-5i64..50, any::<i64>()],
                map(),
                map(),
                map(),
                proptest::collection::vec((text(), proptest::option::of(text()), text()), 0..3),
                proptest::collection::vec(text(), 0..4),
                (text(), text(), text()),
            )
                .prop_map(
                    |(
                        replicas,
                        capacity,
                        allocatable,
                        labels,
                        taints,
                        zones,
                        (os, after, cond),
                    )| PoolSpec {
                        replicas,
                        template: PoolTemplate {
                            capacity,
                            allocatable,
                            labels,
                            taints: taints
                                .into_iter()
                                .map(|(key, value, effect)| PoolTaint { key, value, effect })
                                .collect(),
                            zones,
                            os,
                            ..Default::default()
                        },
                        faults: super::super::super::spec::PoolFaults {
                            unhealthy_after: after,
                            condition: cond,
                            ..Default::default()
                        },
                        paused: false,
                    },
                )
        }

        proptest! {
            #[test]
            fn arbitrary_specs_never_panic(name in text(), spec in spec()) {
                if let Ok(pool) = validate(&name, &spec) {
                    let nodes = pool.nodes(&base());
                    prop_assert_eq!(nodes.len() as i64, spec.replicas);
                    for n in &nodes {
                        prop_assert!(crate::pool::names::is_dns_subdomain(&n.name), "{}", n.name);
                    }
                }
            }

            #[test]
            fn names_stable_and_zones_even(
                replicas in 0i64..300,
                zones in proptest::collection::btree_set("[a-z][a-z0-9]{0,8}", 0..6),
            ) {
                let spec = PoolSpec {
                    replicas,
                    template: PoolTemplate { zones: zones.iter().cloned().collect(), ..Default::default() },
                    ..Default::default()
                };
                let pool = validate("p", &spec).expect("valid");
                let nodes = pool.nodes(&base());
                let again = pool.nodes(&base());
                prop_assert_eq!(&nodes, &again);
                for (i, n) in nodes.iter().enumerate() {
                    prop_assert_eq!(&n.name, &format!("p-{i}"));
                }
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                for n in &nodes {
                    *counts.entry(n.zone.clone().unwrap_or_default()).or_default() += 1;
                }
                if !zones.is_empty() && nodes.len() >= zones.len() {
                    let (min, max) = (counts.values().min(), counts.values().max());
                    prop_assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{:?}", counts);
                    prop_assert_eq!(counts.len(), zones.len());
                }
            }
        }
    }
}
