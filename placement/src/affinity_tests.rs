use super::*;
use crate::rules::{NodeKind, is_spoofed_value};
use proptest::prelude::*;
use serde_json::json;

fn spec(value: serde_json::Value) -> PodSpec {
    serde_json::from_value(value).expect("a PodSpec")
}

fn node(name: &str, kind: NodeKind, labels: &[(&str, &str)]) -> NodeView<'static> {
    let mut labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut taints = Vec::new();
    if kind == NodeKind::Spoofed {
        labels.insert(NODE_LABEL.to_owned(), "true".to_owned());
        taints.push(hollow_taint());
    }
    NodeView {
        name: name.to_owned().leak(),
        labels,
        taints,
    }
}

/// (node, kind, its labels, schedulable after the patch)
type NodeCase = (
    &'static str,
    NodeKind,
    &'static [(&'static str, &'static str)],
    bool,
);

struct Case {
    name: &'static str,
    spec: serde_json::Value,
    placement: Placement<'static>,
    /// (node, kind, its labels, schedulable after the patch)
    nodes: Vec<NodeCase>,
    tolerations: usize,
}

const HOLLOW: NodeKind = NodeKind::Spoofed;
const REAL: NodeKind = NodeKind::Real;

fn cases() -> Vec<Case> {
    let ds_term = |node: &str| json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]});
    let ds_affinity = |node: &str| json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [ds_term(node)]}}}});
    vec![
        Case {
            name: "bare pod of a spoofed namespace",
            spec: json!({"containers": []}),
            placement: Placement::SpoofedOnly,
            nodes: vec![("h1", HOLLOW, &[], true), ("n1", REAL, &[], false)],
            tolerations: 1,
        },
        Case {
            name: "bare pod of a plain namespace",
            spec: json!({"containers": []}),
            placement: Placement::RealOnly,
            nodes: vec![("h1", HOLLOW, &[], false), ("n1", REAL, &[], true)],
            tolerations: 0,
        },
        Case {
            name: "excluded pod",
            spec: json!({"containers": []}),
            placement: Placement::RealOnlyExcluded("db-0"),
            nodes: vec![("h1", HOLLOW, &[], false), ("n1", REAL, &[], true)],
            tolerations: 0,
        },
        Case {
            name: "pinned to a hollow node",
            spec: json!({"containers": []}),
            placement: Placement::Pinned("h1"),
            nodes: vec![
                ("h1", HOLLOW, &[], true),
                ("h2", HOLLOW, &[], false),
                ("n1", REAL, &[], false),
            ],
            tolerations: 1,
        },
        Case {
            name: "pinned to a real node",
            spec: json!({"containers": []}),
            placement: Placement::Pinned("n1"),
            nodes: vec![("h1", HOLLOW, &[], false), ("n1", REAL, &[], true)],
            tolerations: 1,
        },
        Case {
            name: "user's terms ORed, each ANDed with ours",
            spec: json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchExpressions": [{"key": "disk", "operator": "Exists"}]},
            ]}}}}),
            placement: Placement::SpoofedOnly,
            nodes: vec![
                ("h1", HOLLOW, &[("zone", "a")], true),
                ("h2", HOLLOW, &[("disk", "ssd")], true),
                ("h3", HOLLOW, &[("zone", "b")], false),
                ("n1", REAL, &[("zone", "a")], false),
            ],
            tolerations: 1,
        },
        Case {
            name: "user's node selector kept",
            spec: json!({"nodeSelector": {"zone": "a"}}),
            placement: Placement::RealOnly,
            nodes: vec![
                ("n1", REAL, &[("zone", "a")], true),
                ("n2", REAL, &[("zone", "b")], false),
                ("h1", HOLLOW, &[("zone", "a")], false),
            ],
            tolerations: 0,
        },
        Case {
            name: "user's toleration of every taint: no second one",
            spec: json!({"tolerations": [{"operator": "Exists"}]}),
            placement: Placement::SpoofedOnly,
            nodes: vec![("h1", HOLLOW, &[], true), ("n1", REAL, &[], false)],
            tolerations: 1,
        },
        Case {
            name: "user's own toleration of our taint: no duplicate",
            spec: json!({"tolerations": [{"key": HOLLOW_TAINT, "operator": "Equal", "value": "true", "effect": "NoSchedule"}, {"key": "gpu", "operator": "Exists"}]}),
            placement: Placement::SpoofedOnly,
            nodes: vec![("h1", HOLLOW, &[], true)],
            tolerations: 2,
        },
        Case {
            name: "user's toleration of another value of our key: ours added",
            spec: json!({"tolerations": [{"key": HOLLOW_TAINT, "operator": "Equal", "value": "no"}]}),
            placement: Placement::SpoofedOnly,
            nodes: vec![("h1", HOLLOW, &[], true)],
            tolerations: 2,
        },
        Case {
            name: "a term with no requirement still matches nothing",
            spec: json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {}, {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            ]}}}}),
            placement: Placement::RealOnly,
            nodes: vec![
                ("n1", REAL, &[("zone", "a")], true),
                ("n2", REAL, &[], false),
            ],
            tolerations: 0,
        },
        // The DaemonSet controller (1.20) pins each pod with matchFields metadata.name in
        // every term before the pod is created: ours is ANDed, so the pod stays placeable
        // exactly where the extender lets it.
        Case {
            name: "DaemonSet pod of a spoofed namespace, for a hollow node",
            spec: ds_affinity("h1"),
            placement: Placement::SpoofedOnly,
            nodes: vec![("h1", HOLLOW, &[], true), ("h2", HOLLOW, &[], false)],
            tolerations: 1,
        },
        Case {
            name: "DaemonSet pod of a spoofed namespace, for a real node",
            spec: ds_affinity("n1"),
            placement: Placement::SpoofedOnly,
            nodes: vec![("n1", REAL, &[], false), ("h1", HOLLOW, &[], false)],
            tolerations: 1,
        },
        Case {
            name: "DaemonSet pod of a plain namespace, for a real node",
            spec: ds_affinity("n1"),
            placement: Placement::RealOnly,
            nodes: vec![("n1", REAL, &[], true), ("n2", REAL, &[], false)],
            tolerations: 0,
        },
        Case {
            name: "DaemonSet pod of a plain namespace, for a hollow node",
            spec: ds_affinity("h1"),
            placement: Placement::RealOnly,
            nodes: vec![("h1", HOLLOW, &[], false)],
            tolerations: 0,
        },
        Case {
            name: "DaemonSet pod pinned elsewhere by nodeName",
            spec: ds_affinity("n1"),
            placement: Placement::Pinned("n2"),
            nodes: vec![("n1", REAL, &[], false), ("n2", REAL, &[], false)],
            tolerations: 1,
        },
        Case {
            name: "DaemonSet pod pinned to its own node",
            spec: ds_affinity("h1"),
            placement: Placement::Pinned("h1"),
            nodes: vec![("h1", HOLLOW, &[], true)],
            tolerations: 1,
        },
    ]
}

#[test]
fn apply_table() {
    for case in cases() {
        let before = spec(case.spec.clone());
        let patch = affinity_patch(&case.placement).expect("placeable");
        let mut after = before.clone();
        apply(&mut after, &patch);
        for (name, kind, labels, want) in &case.nodes {
            let node = node(name, *kind, labels);
            assert_eq!(
                schedulable(&after, &node),
                *want,
                "{}: node {name}",
                case.name
            );
            // The extender's verdict for the same node, with the user's own constraints.
            let mut untainted = node.clone();
            untainted.taints.clear();
            let user_allows = schedulable(&before, &untainted);
            let extender = crate::rules::decide(&case.placement, name, Some(*kind))
                == crate::rules::Verdict::Pass;
            assert_eq!(
                *want,
                user_allows && extender,
                "{}: node {name} vs extender",
                case.name
            );
        }
        assert_eq!(
            after.tolerations.as_ref().map_or(0, Vec::len),
            case.tolerations,
            "{}",
            case.name
        );
        // What the user wrote is still there.
        let user_terms = required_terms(&before).unwrap_or_default();
        let terms = required_terms(&after).unwrap_or_default();
        assert_eq!(terms.len(), user_terms.len().max(1), "{}", case.name);
        for (user, ours) in user_terms.iter().zip(terms) {
            for r in user
                .match_expressions
                .iter()
                .flatten()
                .chain(user.match_fields.iter().flatten())
            {
                let kept = ours
                    .match_expressions
                    .iter()
                    .flatten()
                    .chain(ours.match_fields.iter().flatten())
                    .any(|o| o == r);
                assert!(kept, "{}: {r:?} dropped", case.name);
            }
        }
        assert_eq!(before.node_selector, after.node_selector, "{}", case.name);
        // Reinvocation: nothing more to do.
        let mut again = after.clone();
        assert!(
            !apply(&mut again, &patch),
            "{}: second apply changed the pod",
            case.name
        );
        assert_eq!(again, after, "{}", case.name);
    }
}

#[test]
fn invalid_pinned_names_are_unplaceable() {
    let long = "a".repeat(254);
    let cases = [
        "",
        "Node-1",
        "node_1",
        "-a",
        "a-",
        "a..b",
        ".a",
        long.as_str(),
        "nöde",
    ];
    for name in cases {
        let got = affinity_patch(&Placement::Pinned(name));
        assert!(
            matches!(got, Err(Unplaceable::InvalidNodeName(_))),
            "{name:?}: {got:?}"
        );
    }
    let ok = ["a", "kind-worker", "hollow-0.zone-a", &"a".repeat(253)];
    for name in ok {
        assert!(affinity_patch(&Placement::Pinned(name)).is_ok(), "{name:?}");
    }
}

#[test]
fn tolerations_table() {
    let taint = hollow_taint();
    let tol =
        |v: serde_json::Value| -> Toleration { serde_json::from_value(v).expect("toleration") };
    let cases = [
        ("ours", hollow_toleration(), true),
        ("every taint", tol(json!({"operator": "Exists"})), true),
        (
            "key, any effect",
            tol(json!({"key": HOLLOW_TAINT, "operator": "Exists"})),
            true,
        ),
        (
            "equal value",
            tol(json!({"key": HOLLOW_TAINT, "value": "true"})),
            true,
        ),
        (
            "other value",
            tol(json!({"key": HOLLOW_TAINT, "value": "false"})),
            false,
        ),
        (
            "other key",
            tol(json!({"key": "gpu", "operator": "Exists"})),
            false,
        ),
        (
            "other effect",
            tol(json!({"key": HOLLOW_TAINT, "operator": "Exists", "effect": "NoExecute"})),
            false,
        ),
        (
            "empty key without Exists",
            tol(json!({"value": "true"})),
            false,
        ),
    ];
    for (name, toleration, want) in cases {
        assert_eq!(tolerates(&toleration, &taint), want, "{name}");
    }
}

fn requirement() -> impl Strategy<Value = NodeSelectorRequirement> {
    (
        prop_oneof![Just("zone"), Just("disk"), Just(NODE_LABEL)],
        prop_oneof![
            Just("In"),
            Just("NotIn"),
            Just("Exists"),
            Just("DoesNotExist")
        ],
        proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("true")], 1..3),
    )
        .prop_map(|(key, op, values)| NodeSelectorRequirement {
            key: key.to_owned(),
            operator: op.to_owned(),
            values: (!matches!(op, "Exists" | "DoesNotExist"))
                .then(|| values.into_iter().map(str::to_owned).collect()),
        })
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    let term = (
        proptest::collection::vec(requirement(), 0..3),
        proptest::option::of(prop_oneof![Just("h1"), Just("n1")]),
    )
        .prop_map(|(expressions, field)| NodeSelectorTerm {
            match_expressions: Some(expressions),
            match_fields: field.map(|n| {
                vec![NodeSelectorRequirement {
                    key: NAME_FIELD.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![n.to_owned()]),
                }]
            }),
        });
    (
        proptest::option::of(proptest::collection::vec(term, 0..3)),
        proptest::option::of(prop_oneof![Just("a"), Just("b")]),
    )
        .prop_map(|(terms, zone)| PodSpec {
            affinity: terms.map(|terms| Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            node_selector: zone.map(|z| BTreeMap::from([("zone".to_owned(), z.to_owned())])),
            ..Default::default()
        })
}

fn placement_strategy() -> impl Strategy<Value = Placement<'static>> {
    prop_oneof![
        Just(Placement::SpoofedOnly),
        Just(Placement::RealOnly),
        Just(Placement::RealOnlyExcluded("x")),
        Just(Placement::Pinned("h1")),
        Just(Placement::Pinned("n1")),
    ]
}

proptest! {
    /// Combining never widens nor narrows the user's choice beyond ours: after the patch a
    /// node is allowed exactly when the user's constraints and the placement both allow it.
    #[test]
    fn apply_is_the_and_of_user_and_placement(
        before in pod_spec(),
        placement in placement_strategy(),
        name in prop_oneof![Just("h1"), Just("n1")],
        kind in prop_oneof![Just(HOLLOW), Just(REAL)],
        zone in proptest::option::of(prop_oneof![Just("a"), Just("b")]),
        disk in proptest::option::of(Just("ssd")),
    ) {
        let patch = affinity_patch(&placement).expect("valid names");
        let mut after = before.clone();
        apply(&mut after, &patch);
        let mut labels: Vec<(&str, &str)> = Vec::new();
        labels.extend(zone.map(|z| ("zone", z)));
        labels.extend(disk.map(|d| ("disk", d)));
        let node = node(name, kind, &labels);
        let mut untainted = node.clone();
        untainted.taints.clear();
        let extender = crate::rules::decide(&placement, name, Some(kind)) == crate::rules::Verdict::Pass;
        prop_assert_eq!(schedulable(&after, &node), schedulable(&before, &untainted) && extender);
        let mut again = after.clone();
        prop_assert!(!apply(&mut again, &patch));
    }

    #[test]
    fn node_names_are_dns_subdomains(name in "\\PC{0,300}") {
        let valid = is_node_name(&name);
        if valid {
            prop_assert!(!name.is_empty() && name.len() <= MAX_NODE_NAME);
            prop_assert!(name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.'));
        }
        prop_assert_eq!(affinity_patch(&Placement::Pinned(&name)).is_ok(), valid);
    }

    #[test]
    fn generated_node_names_are_valid(name in "[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,3}") {
        prop_assert!(is_node_name(&name));
    }

    /// The label means what the annotation means: spoofed only when exactly "true".
    #[test]
    fn label_reads_like_the_annotation(value in proptest::option::of(prop_oneof![Just("true".to_owned()), "\\PC{0,6}"])) {
        let mut node = NodeView { name: "x", ..Default::default() };
        if let Some(v) = &value {
            node.labels.insert(NODE_LABEL.to_owned(), v.clone());
        }
        let mut hollow = PodSpec::default();
        apply(&mut hollow, &affinity_patch(&Placement::SpoofedOnly).expect("placeable"));
        let mut real = PodSpec::default();
        apply(&mut real, &affinity_patch(&Placement::RealOnly).expect("placeable"));
        let spoofed = is_spoofed_value(value.as_deref());
        prop_assert_eq!(schedulable(&hollow, &node), spoofed);
        prop_assert_eq!(schedulable(&real, &node), !spoofed);
    }
}
