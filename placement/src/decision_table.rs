//! The decision table, the specification of the rules, checked in both modes: the extender's
//! verdict for the node, and the scheduler's reading (node affinity, taints) of what affinity
//! mode writes into the pod, against the same node labelled and tainted as a hollow or a real
//! node.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;

use crate::affinity::{self, NodeView};
use crate::rules::*;
fn ns(spoofed: Option<&str>, excluded: Option<&str>) -> NamespacePolicy {
    NamespacePolicy {
        spoofed: is_spoofed_value(spoofed),
        exclusions: Arc::new(Exclusions::parse(excluded.unwrap_or(""))),
    }
}

const REAL: Option<NodeKind> = Some(NodeKind::Real);
const SPOOFED_NODE: Option<NodeKind> = Some(NodeKind::Spoofed);

struct Case {
    name: &'static str,
    pod_name: &'static str,
    pinned: Option<&'static str>,
    /// `None`: the namespace is missing from the cache.
    ns: Option<(Option<&'static str>, Option<&'static str>)>,
    node: &'static str,
    kind: Option<NodeKind>,
    want: Result<Verdict, Undecidable>,
}

use Rejection::*;
use Verdict::*;

fn cases() -> Vec<Case> {
    let c = |name, pod_name, pinned, ns, node, kind, want| Case {
        name,
        pod_name,
        pinned,
        ns,
        node,
        kind,
        want,
    };
    vec![
        // Rule 1: nodeName pins, whatever the namespace or node kind.
        c(
            "pinned, same node",
            "p",
            Some("n1"),
            Some((Some("true"), None)),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "pinned, same spoofed node, plain ns",
            "p",
            Some("h1"),
            Some((None, None)),
            "h1",
            SPOOFED_NODE,
            Ok(Pass),
        ),
        c(
            "pinned, other node",
            "p",
            Some("n1"),
            Some((None, None)),
            "n2",
            REAL,
            Ok(Reject(PinnedElsewhere)),
        ),
        c(
            "pinned, other node, spoofed ns",
            "p",
            Some("n1"),
            Some((Some("true"), None)),
            "h1",
            SPOOFED_NODE,
            Ok(Reject(PinnedElsewhere)),
        ),
        c(
            "pinned, unknown node kind passes by name",
            "p",
            Some("new"),
            Some((None, None)),
            "new",
            None,
            Ok(Pass),
        ),
        c(
            "pinned, namespace missing from cache",
            "p",
            Some("n1"),
            None,
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "pinned, empty value pins to nothing",
            "p",
            Some(""),
            Some((None, None)),
            "n1",
            REAL,
            Ok(Reject(PinnedElsewhere)),
        ),
        c(
            "pinned beats exclusion",
            "db-0",
            Some("h1"),
            Some((Some("true"), Some("db-0"))),
            "h1",
            SPOOFED_NODE,
            Ok(Pass),
        ),
        // Rule 2: spoofed namespace.
        c(
            "spoofed ns, spoofed node",
            "p",
            None,
            Some((Some("true"), None)),
            "h1",
            SPOOFED_NODE,
            Ok(Pass),
        ),
        c(
            "spoofed ns, real node",
            "p",
            None,
            Some((Some("true"), None)),
            "n1",
            REAL,
            Ok(Reject(RealNode)),
        ),
        c(
            "spoofed ns, unknown node",
            "p",
            None,
            Some((Some("true"), None)),
            "x",
            None,
            Ok(Reject(UnknownNode)),
        ),
        c(
            "excluded by equality, real node",
            "db-0",
            None,
            Some((Some("true"), Some("db-0"))),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "excluded by equality, spoofed node",
            "db-0",
            None,
            Some((Some("true"), Some("db-0"))),
            "h1",
            SPOOFED_NODE,
            Ok(Reject(SpoofedNodeExcludedPod)),
        ),
        c(
            "excluded by regex",
            "web-7f9c",
            None,
            Some((Some("true"), Some("^web-[0-9a-f]+$"))),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "regex unanchored matches inside",
            "my-web-1",
            None,
            Some((Some("true"), Some("web"))),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "regex unanchored, spoofed node rejected",
            "my-web-1",
            None,
            Some((Some("true"), Some("web"))),
            "h1",
            SPOOFED_NODE,
            Ok(Reject(SpoofedNodeExcludedPod)),
        ),
        c(
            "regex anchored does not match inside",
            "my-web-1",
            None,
            Some((Some("true"), Some("^web"))),
            "h1",
            SPOOFED_NODE,
            Ok(Pass),
        ),
        c(
            "not excluded, spoofed node",
            "api-1",
            None,
            Some((Some("true"), Some("db-0,web-.*"))),
            "h1",
            SPOOFED_NODE,
            Ok(Pass),
        ),
        c(
            "not excluded, real node",
            "api-1",
            None,
            Some((Some("true"), Some("db-0,web-.*"))),
            "n1",
            REAL,
            Ok(Reject(RealNode)),
        ),
        c(
            "second entry matches",
            "web-1",
            None,
            Some((Some("true"), Some("db-0,web-.*"))),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "spaces around entries trimmed",
            "web-1",
            None,
            Some((Some("true"), Some("  db-0 ,  web-1  "))),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "empty entries ignored (never match everything)",
            "api",
            None,
            Some((Some("true"), Some(",, ,"))),
            "h1",
            SPOOFED_NODE,
            Ok(Pass),
        ),
        c(
            "empty annotation excludes nobody",
            "api",
            None,
            Some((Some("true"), Some(""))),
            "n1",
            REAL,
            Ok(Reject(RealNode)),
        ),
        c(
            "invalid regex matches by equality",
            "a(b",
            None,
            Some((Some("true"), Some("a(b"))),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "invalid regex does not match otherwise",
            "xa(by",
            None,
            Some((Some("true"), Some("a(b"))),
            "n1",
            REAL,
            Ok(Reject(RealNode)),
        ),
        c(
            "invalid regex leaves other entries working",
            "web-2",
            None,
            Some((Some("true"), Some("a(b, web-\\d"))),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "exclusions ignored when ns not spoofed",
            "db-0",
            None,
            Some((None, Some("db-0"))),
            "h1",
            SPOOFED_NODE,
            Ok(Reject(SpoofedNode)),
        ),
        // Rule 3 and values that are not "true".
        c(
            "plain ns, real node",
            "p",
            None,
            Some((None, None)),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "plain ns, spoofed node",
            "p",
            None,
            Some((None, None)),
            "h1",
            SPOOFED_NODE,
            Ok(Reject(SpoofedNode)),
        ),
        c(
            "plain ns, unknown node",
            "p",
            None,
            Some((None, None)),
            "x",
            None,
            Ok(Reject(UnknownNode)),
        ),
        c(
            "\"True\" is not spoofed",
            "p",
            None,
            Some((Some("True"), None)),
            "h1",
            SPOOFED_NODE,
            Ok(Reject(SpoofedNode)),
        ),
        c(
            "\"yes\" is not spoofed",
            "p",
            None,
            Some((Some("yes"), None)),
            "n1",
            REAL,
            Ok(Pass),
        ),
        c(
            "empty value is not spoofed",
            "p",
            None,
            Some((Some(""), None)),
            "h1",
            SPOOFED_NODE,
            Ok(Reject(SpoofedNode)),
        ),
        c(
            "\" true\" is not spoofed",
            "p",
            None,
            Some((Some(" true"), None)),
            "n1",
            REAL,
            Ok(Pass),
        ),
        // The namespace is missing from the cache: undecidable, not guessed.
        c(
            "namespace missing",
            "p",
            None,
            None,
            "n1",
            REAL,
            Err(Undecidable::NamespaceUnknown("team-a".into())),
        ),
    ]
}

/// A node of `kind` as hollow-node registers it in affinity mode (label and taint), or a real
/// node (neither).
fn node_view(name: &str, kind: NodeKind) -> NodeView<'_> {
    match kind {
        NodeKind::Spoofed => NodeView {
            name,
            labels: BTreeMap::from([(affinity::NODE_LABEL.to_owned(), "true".to_owned())]),
            taints: vec![affinity::hollow_taint()],
        },
        NodeKind::Real => NodeView {
            name,
            ..Default::default()
        },
    }
}

#[test]
fn decision_table_in_both_modes() {
    for case in cases() {
        let policy = case.ns.map(|(s, e)| ns(s, e));
        let pod = PodFacts {
            namespace: "team-a",
            name: case.pod_name,
            pinned_node: case.pinned,
        };
        let placed = placement(&pod, policy.as_ref());
        let got = placed
            .as_ref()
            .map(|p| decide(p, case.node, case.kind))
            .map_err(Clone::clone);
        assert_eq!(got, case.want, "extender, case {:?}", case.name);
        // An undecidable pod is the webhook's concern (its own tests): it has no placement.
        let Ok(placed) = placed else { continue };
        // The scheduler always knows a node's labels: a node the extender has not cached yet
        // is checked as each kind, against the extender's verdict once it knows the node.
        let kinds = match case.kind {
            Some(kind) => vec![kind],
            None => vec![NodeKind::Real, NodeKind::Spoofed],
        };
        for kind in kinds {
            let extender = decide(&placed, case.node, Some(kind)) == Verdict::Pass;
            let scheduler = match affinity::affinity_patch(&placed) {
                Ok(patch) => {
                    let mut spec = PodSpec::default();
                    assert!(affinity::apply(&mut spec, &patch), "case {:?}", case.name);
                    affinity::schedulable(&spec, &node_view(case.node, kind))
                }
                // Refused by the webhook: the pod is placed nowhere, as the extender rejects
                // every node for it.
                Err(_) => false,
            };
            assert_eq!(
                scheduler, extender,
                "affinity mode vs extender, case {:?}, {kind:?} node",
                case.name
            );
        }
    }
}
