//! The mirror's grouping: tables and properties.
use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, NodeSystemInfo, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

/// A Node as a real cluster reports it: per-node labels, an IP label, lifecycle taints.
pub(crate) fn node(
    name: &str,
    cpu: &str,
    zone: &str,
    extra: &[(&str, &str)],
    taints: &[(&str, &str)],
) -> Node {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", "m5.xlarge"),
        ("alpha.eksctl.io/instance-id", "i-0abc"),
        ("example.com/node-ip", "10.0.0.7"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if !zone.is_empty() {
        labels.insert(ZONE_LABEL.into(), zone.into());
        labels.insert("topology.ebs.csi.aws.com/zone".into(), zone.into());
    }
    let q = |m: &[(&str, &str)]| {
        m.iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    };
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".into(),
                "0".into(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("aws:///{zone}/i-{name}")),
            taints: Some(
                taints
                    .iter()
                    .map(|(k, e)| Taint {
                        key: k.to_string(),
                        effect: e.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(q(&[("cpu", cpu), ("memory", "16Gi"), ("pods", "110")])),
            allocatable: Some(q(&[("cpu", cpu), ("memory", "15Gi"), ("pods", "110")])),
            node_info: Some(NodeSystemInfo {
                architecture: "arm64".into(),
                operating_system: "linux".into(),
                kubelet_version: "v1.27.3-eks-a5565ad".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn summary(pools: &[MirroredPool]) -> Vec<String> {
    pools
        .iter()
        .map(|m| {
            let s = &m.pool.spec;
            format!(
                "{} x{} zones={} taints={}",
                m.pool.name(),
                s.replicas,
                s.template.zones.join(","),
                s.template
                    .taints
                    .iter()
                    .map(|t| t.key.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect()
}

#[test]
fn groups() {
    let workers = ("eks.amazonaws.com/nodegroup", "workers");
    let infra = [("node-role.kubernetes.io/infra", "")];
    let gpu_taint = [
        ("nvidia.com/gpu", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "NoExecute"),
    ];
    type Case = (&'static str, Vec<Node>, f64, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "one shape over three even zones",
            ["a", "b", "c", "a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(i, z)| node(&format!("ip-{i}"), "4", z, &[workers], &[]))
                .collect(),
            1.0,
            vec!["workers x6 zones=a,b,c taints="],
        ),
        (
            "uneven zones split per zone",
            ["a", "a", "a", "b"]
                .iter()
                .enumerate()
                .map(|(i, z)| node(&format!("ip-{i}"), "4", z, &[workers], &[]))
                .collect(),
            1.0,
            vec![
                "workers-a x3 zones=a taints=",
                "workers-b x1 zones=b taints=",
            ],
        ),
        (
            "three shapes, lifecycle taint dropped",
            vec![
                node("n1", "4", "a", &[], &[]),
                node("n2", "4", "b", &[], &[]),
                node(
                    "n3",
                    "8",
                    "a",
                    &infra,
                    &[("node-role.kubernetes.io/infra", "NoSchedule")],
                ),
                node("n4", "96", "a", &[], &gpu_taint),
            ],
            1.0,
            vec![
                "infra x1 zones=a taints=node-role.kubernetes.io/infra",
                "m5-xlarge x2 zones=a,b taints=",
                "m5-xlarge-2 x1 zones=a taints=nvidia.com/gpu",
            ],
        ),
        (
            "scale down keeps a node per shape",
            (0..10)
                .map(|i| node(&format!("n{i}"), "4", "", &[], &[]))
                .chain([node("big", "64", "", &[], &[])])
                .collect(),
            0.1,
            vec![
                "m5-xlarge x1 zones= taints=",
                "m5-xlarge-2 x1 zones= taints=",
            ],
        ),
        (
            "scale up",
            (0..3)
                .map(|i| node(&format!("n{i}"), "4", "", &[], &[]))
                .collect(),
            10.0,
            vec!["m5-xlarge x30 zones= taints="],
        ),
        ("no nodes", vec![], 1.0, vec![]),
    ];
    for (name, nodes, scale, want) in cases {
        let got = mirror(&nodes, scale).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary(&got), want, "{name}");
    }
}

#[test]
fn keeps_shape_drops_identity() {
    let pools = mirror(
        &[node("ip-10-0-0-7", "4", "a", &[("team", "ml")], &[])],
        1.0,
    )
    .expect("mirror");
    let t = &pools[0].pool.spec.template;
    let keys: Vec<&str> = t.labels.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["team"],
        "hostname, instance-id, IP, zone copies and os labels dropped"
    );
    assert_eq!(t.arch, "arm64");
    assert_eq!(t.instance_type, "m5.xlarge");
    assert_eq!(t.kubelet_version, "v1.27.3-eks-a5565ad");
    assert_eq!(t.capacity.get("cpu").map(String::as_str), Some("4"));
    let alloc: Vec<(&str, &str)> = t
        .allocatable
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        alloc,
        [("memory", "15Gi")],
        "only what differs from capacity"
    );
    assert!(t.annotations.is_empty());
    assert_eq!(pools[0].source_nodes, 1);
}

#[test]
fn refusals() {
    let n = [node("n", "4", "", &[], &[])];
    for scale in [0.0, -1.0, f64::NAN, f64::INFINITY, 1000.5] {
        assert!(
            matches!(mirror(&n, scale), Err(MirrorError::Scale(_))),
            "{scale}"
        );
    }
    let many: Vec<Node> = (0..11)
        .map(|i| node(&format!("n{i}"), "4", "", &[], &[]))
        .collect();
    assert!(matches!(
        mirror(&many, 1000.0),
        Err(MirrorError::TooMany { nodes: 11, .. })
    ));
    let bad = node("weird", "4 cores", "", &[], &[]);
    let err = mirror(&[bad], 1.0).expect_err("bad quantity");
    assert!(err.to_string().contains("from node weird"), "{err}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn nodes() -> impl Strategy<Value = Vec<Node>> {
        proptest::collection::vec(
            (
                prop_oneof![Just("4"), Just("8"), Just("96"), Just("x")],
                prop_oneof![Just(""), Just("a"), Just("b"), Just("c")],
                prop_oneof![Just(""), Just("infra"), Just("gpu"), Just("Weird Group!")],
                proptest::bool::ANY,
            ),
            0..40,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (cpu, zone, group, tainted))| {
                    let labels: Vec<(&str, &str)> = if group.is_empty() {
                        vec![]
                    } else {
                        vec![("agentpool", group)]
                    };
                    let taints: Vec<(&str, &str)> = if tainted {
                        vec![("dedicated", "NoSchedule")]
                    } else {
                        vec![]
                    };
                    node(&format!("node-{i}"), cpu, zone, &labels, &taints)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn counts_kept_and_order_free(nodes in nodes(), seed in any::<u64>()) {
            let Ok(pools) = mirror(&nodes, 1.0) else {
                prop_assert!(nodes.iter().any(|n| n.status.as_ref().and_then(|s| s.capacity.as_ref()).is_some_and(|c| c["cpu"].0 == "x")));
                return Ok(());
            };
            let total: i64 = pools.iter().map(|p| p.pool.spec.replicas).sum();
            prop_assert_eq!(total, nodes.len() as i64);
            let names: BTreeSet<&str> = pools.iter().map(|p| p.pool.name()).collect();
            prop_assert_eq!(names.len(), pools.len(), "names unique");
            let mut shuffled = nodes.clone();
            let len = shuffled.len().max(1);
            shuffled.rotate_left((seed as usize) % len);
            shuffled.reverse();
            prop_assert_eq!(mirror(&shuffled, 1.0).ok(), Some(pools.clone()));
            for p in &pools {
                prop_assert!(validate(p.pool.name(), &p.pool.spec).is_ok());
            }
        }

        #[test]
        fn any_scale_is_bounded(nodes in nodes(), scale in prop_oneof![any::<f64>(), 0.0..20.0]) {
            if let Ok(pools) = mirror(&nodes, scale) {
                for p in pools {
                    prop_assert!((1..=MAX_REPLICAS).contains(&p.pool.spec.replicas));
                }
            }
        }
    }
}
