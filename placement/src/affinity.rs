//! Affinity mode: the same [`Placement`] written into the pod itself (a toleration and a
//! required node affinity), so that a stock kube-scheduler with no extender enforces it.
//!
//! Hollow nodes carry the taint [`HOLLOW_TAINT`] (`NoSchedule`), so pods that were never
//! mutated stay off them, and the label `spoofed: "true"` (the same key and value as the
//! annotation the extender reads: affinity cannot read annotations). [`affinity_patch`] turns a
//! placement into what a pod needs; [`apply`] adds it to a pod spec, keeping the user's own
//! affinity, node selector and tolerations; [`schedulable`] is the scheduler's reading of the
//! result (node selector, required node affinity, NoSchedule/NoExecute taints), for tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    Taint, Toleration,
};

use crate::rules::{Placement, SPOOFED};

/// The taint key of hollow nodes in affinity mode (`mock-kind.io/hollow=true:NoSchedule`).
pub const HOLLOW_TAINT: &str = "mock-kind.io/hollow";
pub const HOLLOW_TAINT_VALUE: &str = "true";
pub const HOLLOW_TAINT_EFFECT: &str = "NoSchedule";
/// The node label node affinity selects on: spoofed when exactly `"true"`, as the annotation.
pub const NODE_LABEL: &str = SPOOFED;
/// The only node field a `matchFields` requirement may name.
const NAME_FIELD: &str = "metadata.name";
/// Longest node name (a DNS-1123 subdomain).
const MAX_NODE_NAME: usize = 253;

/// The one requirement a placement adds to every required node selector term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement<'a> {
    /// `matchFields: metadata.name In [name]`.
    Node(&'a str),
    /// `matchExpressions: spoofed In ["true"]`.
    HollowNodes,
    /// `matchExpressions: spoofed NotIn ["true"]`: also every node without the label, as the
    /// extender counts every node without `spoofed: "true"` as real.
    RealNodes,
}

impl Requirement<'_> {
    /// Whether it goes into `matchFields` (else `matchExpressions`).
    pub fn is_field(&self) -> bool {
        matches!(self, Requirement::Node(_))
    }

    pub fn to_node_selector_requirement(&self) -> NodeSelectorRequirement {
        let (key, operator, value) = match self {
            Requirement::Node(name) => (NAME_FIELD, "In", *name),
            Requirement::HollowNodes => (NODE_LABEL, "In", "true"),
            Requirement::RealNodes => (NODE_LABEL, "NotIn", "true"),
        };
        NodeSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: Some(vec![value.to_owned()]),
        }
    }
}

/// What affinity mode writes into a pod: the toleration of [`HOLLOW_TAINT`] when the pod may
/// use a hollow node, and the requirement added to every required node selector term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityPatch<'a> {
    pub tolerate: bool,
    pub requirement: Requirement<'a>,
}

/// Why a pod cannot be given an affinity (the webhook refuses it; the extender would leave it
/// Pending forever, rejecting every node).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error(
        "the pod's nodeName annotation \"{0}\" is not a node name (a lowercase DNS-1123 subdomain of at most 253 characters), so no node can ever match it"
    )]
    InvalidNodeName(String),
}

/// The pod changes of affinity mode for a placement. A pinned pod tolerates the taint: the
/// extender lets it onto its node whatever the node's kind.
pub fn affinity_patch<'a>(placement: &Placement<'a>) -> Result<AffinityPatch<'a>, Unplaceable> {
    Ok(match placement {
        Placement::Pinned(name) => {
            if !is_node_name(name) {
                let shown = telemetry::char_prefix(name, MAX_NODE_NAME);
                return Err(Unplaceable::InvalidNodeName(shown.to_owned()));
            }
            AffinityPatch {
                tolerate: true,
                requirement: Requirement::Node(name),
            }
        }
        Placement::SpoofedOnly => AffinityPatch {
            tolerate: true,
            requirement: Requirement::HollowNodes,
        },
        Placement::RealOnlyExcluded(_) | Placement::RealOnly => AffinityPatch {
            tolerate: false,
            requirement: Requirement::RealNodes,
        },
    })
}

/// A lowercase RFC 1123 subdomain, as the apiserver validates `metadata.name` values of
/// `matchFields` (and node names).
pub fn is_node_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    name.len() <= MAX_NODE_NAME && name.split('.').all(label_ok)
}

/// The toleration a pod that may use hollow nodes gets.
pub fn hollow_toleration() -> Toleration {
    Toleration {
        key: Some(HOLLOW_TAINT.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some(HOLLOW_TAINT_EFFECT.to_owned()),
        ..Default::default()
    }
}

/// The taint hollow nodes carry in affinity mode.
pub fn hollow_taint() -> Taint {
    Taint {
        key: HOLLOW_TAINT.to_owned(),
        value: Some(HOLLOW_TAINT_VALUE.to_owned()),
        effect: HOLLOW_TAINT_EFFECT.to_owned(),
        time_added: None,
    }
}

/// Adds `patch` to `spec`; returns whether anything changed. The user's node selector is
/// untouched (it is ANDed with the affinity anyway); every required node selector term gets
/// the requirement added (terms are ORed, a term's requirements ANDed), so each way the user
/// allowed stays allowed within our nodes; a pod without required terms gets one holding only
/// ours. A term with no requirement at all matches no node and is left so. The toleration is
/// added only when no toleration of the pod already tolerates the taint. Applying twice changes
/// nothing the second time (webhook reinvocation).
pub fn apply(spec: &mut PodSpec, patch: &AffinityPatch<'_>) -> bool {
    let mut changed = false;
    if patch.tolerate {
        let taint = hollow_taint();
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            tolerations.push(hollow_toleration());
            changed = true;
        }
    }
    let ours = patch.requirement.to_node_selector_requirement();
    let node_affinity = spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let created = node_affinity
        .required_during_scheduling_ignored_during_execution
        .is_none();
    let required = node_affinity
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm::default()],
        });
    for term in &mut required.node_selector_terms {
        if is_empty_term(term) && !created {
            continue;
        }
        let list = if patch.requirement.is_field() {
            term.match_fields.get_or_insert_with(Vec::new)
        } else {
            term.match_expressions.get_or_insert_with(Vec::new)
        };
        if !list.contains(&ours) {
            list.push(ours.clone());
            changed = true;
        }
    }
    changed
}

fn is_empty_term(term: &NodeSelectorTerm) -> bool {
    term.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && term.match_fields.as_ref().is_none_or(Vec::is_empty)
}

/// Whether `toleration` tolerates `taint` (kubelet/scheduler semantics: an empty key with
/// `Exists` tolerates every key; an empty effect every effect; `Equal` is the default operator).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or_default();
    let exists = toleration.operator.as_deref() == Some("Exists");
    if !effect_ok || (key.is_empty() && !exists) || (!key.is_empty() && key != taint.key) {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// A node as the scheduler's node-affinity and taint filters see it.
#[derive(Clone, Debug, Default)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

/// Whether kube-scheduler's NodeAffinity (node selector and required node affinity) and
/// TaintToleration filters let a pod with `spec` onto `node`.
pub fn schedulable(spec: &PodSpec, node: &NodeView<'_>) -> bool {
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let affinity_ok =
        required_terms(spec).is_none_or(|terms| terms.iter().any(|term| term_matches(term, node)));
    let taints_ok = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| {
            spec.tolerations
                .iter()
                .flatten()
                .any(|tol| tolerates(tol, t))
        });
    selector_ok && affinity_ok && taints_ok
}

/// The pod's required node selector terms, if it has a required node affinity.
pub fn required_terms(spec: &PodSpec) -> Option<&[NodeSelectorTerm]> {
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .map(|r| r.node_selector_terms.as_slice())
}

fn term_matches(term: &NodeSelectorTerm, node: &NodeView<'_>) -> bool {
    if is_empty_term(term) {
        return false;
    }
    let expressions = term
        .match_expressions
        .iter()
        .flatten()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)));
    let fields = term.match_fields.iter().flatten().all(|r| {
        r.key == NAME_FIELD
            && matches!(r.operator.as_str(), "In" | "NotIn")
            && requirement_matches(r, Some(node.name))
    });
    expressions && fields
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let listed = value.is_some_and(|v| values.iter().any(|w| w == v));
    let number = |v: Option<&str>| v.and_then(|v| v.parse::<i64>().ok());
    let bound = number(values.first().map(String::as_str));
    match r.operator.as_str() {
        "In" => listed,
        "NotIn" => !listed,
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((number(value), bound), (Some(v), Some(b)) if v > b),
        "Lt" => matches!((number(value), bound), (Some(v), Some(b)) if v < b),
        _ => false,
    }
}

#[cfg(test)]
#[path = "affinity_tests.rs"]
mod tests;
