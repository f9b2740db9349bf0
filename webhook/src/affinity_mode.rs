//! Affinity mode (`--placement affinity`): at pod CREATE the placement rules (crate
//! `placement`, the very decision the scheduler extender makes) become a toleration and a
//! required node affinity in the pod, so that a stock kube-scheduler with no extender places it.
//! [`place`] is the decision (pod + namespace → patch or refusal); `server` only reads the
//! namespace and answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use placement::affinity::{self, Unplaceable};
use placement::{CompiledExclusions, Exclusions, NamespacePolicy, PodFacts, Undecidable};

use crate::fitted_patch;

/// How the webhook takes part in placing pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PlacementMode {
    /// Not at all: the scheduler extender places pods (`/place` is not served).
    #[default]
    #[value(name = "none")]
    None,
    /// `/place` writes the placement into every pod it is sent at CREATE.
    #[value(name = "affinity")]
    Affinity,
}

impl PlacementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementMode::None => "none",
            PlacementMode::Affinity => "affinity",
        }
    }
}

/// What `/place` answers for one pod.
#[derive(Debug, PartialEq)]
pub enum Placed {
    /// Allowed with this patch (empty: the pod already carries its placement).
    Patch(json_patch::Patch),
    /// Refused with this message: the pod cannot be placed (an invalid `nodeName`), or not yet
    /// (its namespace is unknown); the client or the pod's controller retries.
    Refuse(String),
}

/// A namespace's placement annotations, compiled. The exclusions are compiled only for a
/// spoofed namespace (they mean nothing elsewhere). The strings are why a part of the
/// `spoofed_excluded_pods` value was passed over, for the answer's warnings.
/// Values come compiled from `compiled`, so a pod's admission does not compile regexes.
pub fn policy_of(
    annotations: Option<&BTreeMap<String, String>>,
    compiled: &CompiledExclusions,
) -> (NamespacePolicy, Vec<String>) {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let spoofed = placement::is_spoofed_value(get(placement::SPOOFED));
    let exclusions = match get(placement::SPOOFED_EXCLUDED_PODS) {
        Some(value) if spoofed => compiled.get(value),
        _ => Arc::new(Exclusions::default()),
    };
    let mut warnings: Vec<String> = exclusions
        .invalid()
        .iter()
        .map(|i| {
            format!(
                "{} entry \"{}\" is not a valid regular expression ({}); it matches by equality only",
                placement::SPOOFED_EXCLUDED_PODS,
                telemetry::char_prefix(&i.entry, 64),
                i.error
            )
        })
        .collect();
    warnings.extend(
        exclusions
            .ignored()
            .map(|why| format!("{} ignored: {why}", placement::SPOOFED_EXCLUDED_PODS)),
    );
    let policy = NamespacePolicy {
        spoofed,
        exclusions,
    };
    (policy, warnings)
}

/// The pod's name as the rules see it at CREATE: a pod created with `generateName` has no name
/// yet (the apiserver generates it after admission), so its prefix stands for it.
pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default()
}

/// The placement of `pod` (in `namespace`, whose policy is `ns` when known) as a patch of
/// the pod as the apiserver sent it (`sent`).
pub fn place(
    sent: &fitted_patch::Sent,
    pod: &Pod,
    namespace: &str,
    ns: Option<&NamespacePolicy>,
) -> Placed {
    let facts = PodFacts {
        namespace,
        name: pod_name(pod),
        pinned_node: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(placement::POD_NODE_NAME))
            .map(String::as_str),
    };
    let decided = match placement::placement(&facts, ns) {
        Ok(decided) => decided,
        Err(Undecidable::NamespaceUnknown(ns)) => {
            return Placed::Refuse(format!(
                "mock-kind placement: namespace {ns} of the pod is not known yet; retry"
            ));
        }
    };
    let patch = match affinity::affinity_patch(&decided) {
        Ok(patch) => patch,
        Err(e @ Unplaceable::InvalidNodeName(_)) => {
            return Placed::Refuse(format!("mock-kind placement: {e}"));
        }
    };
    let Some(spec) = pod.spec.as_ref() else {
        return Placed::Refuse("mock-kind placement: the pod has no spec".to_owned());
    };
    // Only the two fields the placement writes are copied, changed and diffed.
    let mut placed = k8s_openapi::api::core::v1::PodSpec {
        affinity: spec.affinity.clone(),
        tolerations: spec.tolerations.clone(),
        ..Default::default()
    };
    if !affinity::apply(&mut placed, &patch) {
        return Placed::Patch(json_patch::Patch(Vec::new()));
    }
    let mut ops = Vec::new();
    if placed.tolerations != spec.tolerations {
        ops.extend(fitted_patch::subtree(
            &["spec", "tolerations"],
            sent.tolerations(),
            &spec.tolerations,
            &placed.tolerations,
        ));
    }
    if placed.affinity != spec.affinity {
        ops.extend(fitted_patch::subtree(
            &["spec", "affinity"],
            sent.affinity(),
            &spec.affinity,
            &placed.affinity,
        ));
    }
    Placed::Patch(json_patch::Patch(ops))
}

#[cfg(test)]
#[path = "affinity_mode_tests.rs"]
mod tests;
