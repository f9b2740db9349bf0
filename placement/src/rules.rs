//! The decision: which nodes a pod may use. Plain data in, plain data out; no I/O, no async.
//! Shared by the scheduler extender (`decide` per node) and the webhook's affinity mode
//! ([`crate::affinity`]).
//!
//! For a pod P in namespace NS and a candidate node N:
//! 1. P has the annotation `nodeName`: only the node with that name passes.
//! 2. Else NS has `spoofed: "true"` (exactly): a pod whose name matches an entry of NS's
//!    `spoofed_excluded_pods` may use only real nodes; every other pod only spoofed nodes.
//! 3. Else only real nodes pass.
//!
//! A node is spoofed when its annotation `spoofed` is exactly `"true"`; every other node is real.

use std::fmt;
use std::sync::Arc;

use regex::Regex;

/// Pod annotation that pins a pod to one node by name.
pub const POD_NODE_NAME: &str = "nodeName";
/// Namespace and node annotation; only the exact value `"true"` counts.
pub const SPOOFED: &str = "spoofed";
/// Namespace annotation: comma-separated pod names or unanchored regular expressions.
pub const SPOOFED_EXCLUDED_PODS: &str = "spoofed_excluded_pods";

/// The only value of `spoofed` that means yes (not `"True"`, not `"yes"`).
pub fn is_spoofed_value(value: Option<&str>) -> bool {
    value == Some("true")
}

/// What the extender knows about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Real,
    Spoofed,
}

impl NodeKind {
    /// The kind from the value of the node's `spoofed` annotation.
    pub fn from_annotation(value: Option<&str>) -> Self {
        if is_spoofed_value(value) {
            NodeKind::Spoofed
        } else {
            NodeKind::Real
        }
    }
}

/// One entry of `spoofed_excluded_pods`: it matches a pod name by equality or, when it compiles,
/// as an unanchored regular expression (Go's `regexp.MatchString`).
#[derive(Debug)]
struct ExclusionEntry {
    text: String,
    regex: Option<Regex>,
}

/// An entry of `spoofed_excluded_pods` that is not a valid regular expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidEntry {
    pub entry: String,
    pub error: String,
}

/// The compiled value of a `spoofed_excluded_pods` annotation.
#[derive(Debug, Default)]
pub struct Exclusions {
    entries: Vec<ExclusionEntry>,
    invalid: Vec<InvalidEntry>,
    ignored: Option<String>,
}

// The value comes from anyone who may annotate a namespace and its regexes live as long as the
// namespace, so what one value may cost is capped: at most 32 entries in 4 KiB (a list of pod
// names or a few patterns needs far less), each regex at most 256 KiB compiled plus 256 KiB of
// lazy-DFA cache per thread. A value past the first two bounds is ignored whole; a regex past
// the size bounds is an invalid entry (it still matches by equality).
/// Longest `spoofed_excluded_pods` value honoured, in bytes.
pub const MAX_EXCLUDED_PODS_LEN: usize = 4096;
/// Most entries of a `spoofed_excluded_pods` value honoured.
pub const MAX_EXCLUDED_PODS_ENTRIES: usize = 32;
const REGEX_SIZE_LIMIT: usize = 256 << 10;
const REGEX_DFA_SIZE_LIMIT: usize = 256 << 10;

impl Exclusions {
    /// Parses the annotation value: entries are comma-separated, trimmed, empty ones ignored.
    /// An entry that is not a valid regex still matches by equality and is listed in `invalid()`.
    /// A value longer than [`MAX_EXCLUDED_PODS_LEN`] or with more than
    /// [`MAX_EXCLUDED_PODS_ENTRIES`] entries excludes nobody, as if absent; `ignored()` says why.
    pub fn parse(value: &str) -> Self {
        let mut out = Exclusions::default();
        let entries = value.split(',').map(str::trim).filter(|e| !e.is_empty());
        if value.len() > MAX_EXCLUDED_PODS_LEN {
            out.ignored = Some(format!(
                "the value is {} bytes long, more than {MAX_EXCLUDED_PODS_LEN}",
                value.len()
            ));
            return out;
        }
        let count = entries.clone().count();
        if count > MAX_EXCLUDED_PODS_ENTRIES {
            out.ignored = Some(format!(
                "the value has {count} entries, more than {MAX_EXCLUDED_PODS_ENTRIES}"
            ));
            return out;
        }
        for text in entries {
            let regex = match regex::RegexBuilder::new(text)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
                .build()
            {
                Ok(regex) => Some(regex),
                Err(e) => {
                    out.invalid.push(InvalidEntry {
                        entry: text.to_owned(),
                        error: e
                            .to_string()
                            .lines()
                            .last()
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    });
                    None
                }
            };
            out.entries.push(ExclusionEntry {
                text: text.to_owned(),
                regex,
            });
        }
        out
    }

    /// The first entry that matches `pod_name`, if any.
    pub fn matching(&self, pod_name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.text == pod_name || e.regex.as_ref().is_some_and(|r| r.is_match(pod_name)))
            .map(|e| e.text.as_str())
    }

    /// Entries that did not compile (they match by equality only).
    pub fn invalid(&self) -> &[InvalidEntry] {
        &self.invalid
    }

    /// Why the whole value was ignored (out of bounds), if it was.
    pub fn ignored(&self) -> Option<&str> {
        self.ignored.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A namespace's annotations, compiled.
#[derive(Debug, Default)]
pub struct NamespacePolicy {
    pub spoofed: bool,
    pub exclusions: Arc<Exclusions>,
}

/// The facts about the pod being scheduled that the rules read.
#[derive(Clone, Copy, Debug)]
pub struct PodFacts<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The value of the pod's `nodeName` annotation.
    pub pinned_node: Option<&'a str>,
}

/// Which nodes the pod may use; computed once per request, then applied to every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement<'a> {
    /// Rule 1: only this node.
    Pinned(&'a str),
    /// Rule 2: a spoofed namespace, pod not excluded.
    SpoofedOnly,
    /// Rule 2: a spoofed namespace, pod excluded by this entry of `spoofed_excluded_pods`.
    RealOnlyExcluded(&'a str),
    /// Rule 3: the namespace is not spoofed.
    RealOnly,
}

/// Why no node can be decided for the pod yet (the caller answers with a retryable error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Undecidable {
    #[error("namespace {0} of the pod is not in the extender's namespace cache yet; retry later")]
    NamespaceUnknown(String),
}

/// Rule selection for a pod. The namespace is only needed when the pod is not pinned.
pub fn placement<'a>(
    pod: &PodFacts<'a>,
    namespace: Option<&'a NamespacePolicy>,
) -> Result<Placement<'a>, Undecidable> {
    if let Some(node) = pod.pinned_node {
        return Ok(Placement::Pinned(node));
    }
    let Some(ns) = namespace else {
        return Err(Undecidable::NamespaceUnknown(pod.namespace.to_owned()));
    };
    if !ns.spoofed {
        return Ok(Placement::RealOnly);
    }
    Ok(match ns.exclusions.matching(pod.name) {
        Some(entry) => Placement::RealOnlyExcluded(entry),
        None => Placement::SpoofedOnly,
    })
}

/// Why a node is rejected. The variants are also the metric outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Rule 1: the pod is pinned to another node.
    PinnedElsewhere,
    /// Rule 2: spoofed namespace, real node.
    RealNode,
    /// Rule 2: spoofed namespace, excluded pod, spoofed node.
    SpoofedNodeExcludedPod,
    /// Rule 3: plain namespace, spoofed node.
    SpoofedNode,
    /// The node is not in the extender's cache, so its kind is unknown.
    UnknownNode,
}

/// The verdict for one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Reject(Rejection),
}

/// Applies the pod's placement to one node. `kind` is `None` when the node is unknown.
pub fn decide(placement: &Placement<'_>, node_name: &str, kind: Option<NodeKind>) -> Verdict {
    let wanted = match placement {
        Placement::Pinned(pinned) => {
            return if *pinned == node_name {
                Verdict::Pass
            } else {
                Verdict::Reject(Rejection::PinnedElsewhere)
            };
        }
        Placement::SpoofedOnly => NodeKind::Spoofed,
        Placement::RealOnlyExcluded(_) | Placement::RealOnly => NodeKind::Real,
    };
    match kind {
        None => Verdict::Reject(Rejection::UnknownNode),
        Some(kind) if kind == wanted => Verdict::Pass,
        Some(_) => Verdict::Reject(match placement {
            Placement::SpoofedOnly => Rejection::RealNode,
            Placement::RealOnlyExcluded(_) => Rejection::SpoofedNodeExcludedPod,
            _ => Rejection::SpoofedNode,
        }),
    }
}

/// The message a person reads in `kubectl describe pod`, rendered without allocating
/// (it is written straight into the response). It never names the rejected node: the
/// scheduler counts identical reasons (`0/5003 nodes are available: 5000 node(s) are spoofed
/// but …, 3 Insufficient cpu`), so one text for all the nodes of one kind keeps the event
/// short and the answer small at thousands of nodes.
#[derive(Clone, Copy, Debug)]
pub struct Reason<'a> {
    pub pod: &'a PodFacts<'a>,
    pub placement: &'a Placement<'a>,
    pub rejection: Rejection,
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ns, pod) = (self.pod.namespace, self.pod.name);
        match (self.rejection, self.placement) {
            (Rejection::PinnedElsewhere, Placement::Pinned(pinned)) => write!(
                f,
                "node(s) are not node {}, to which pod {ns}/{pod} is pinned by its nodeName annotation",
                Cut(pinned)
            ),
            (Rejection::RealNode, _) => {
                write!(f, "node(s) are real but namespace {ns} is spoofed")
            }
            (Rejection::SpoofedNodeExcludedPod, Placement::RealOnlyExcluded(entry)) => write!(
                f,
                "node(s) are spoofed but pod {pod} is excluded by spoofed_excluded_pods entry \"{}\" of namespace {ns}",
                Cut(entry)
            ),
            (Rejection::SpoofedNode, _) => {
                write!(f, "node(s) are spoofed but namespace {ns} is not")
            }
            (Rejection::UnknownNode, _) => write!(
                f,
                "node(s) are not in the extender's node cache yet, so it is not known whether they are spoofed"
            ),
            // Unreachable combinations still render something a person understands.
            (rejection, _) => write!(f, "node(s) rejected for pod {ns}/{pod}: {rejection:?}"),
        }
    }
}

/// An annotation value in a reason, cut to the longest node name (253 bytes): the reason is
/// repeated for every rejected node, so a 256 KiB `nodeName` annotation on a pod must not make
/// a 5,000-node answer a gigabyte.
struct Cut<'a>(&'a str);

impl fmt::Display for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 253;
        if self.0.len() <= MAX {
            return f.write_str(self.0);
        }
        write!(f, "{}…", telemetry::char_prefix(self.0, MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Rejection::*;

    #[test]
    fn node_kind_from_annotation() {
        let cases = [
            (Some("true"), NodeKind::Spoofed),
            (Some("True"), NodeKind::Real),
            (Some("yes"), NodeKind::Real),
            (Some(""), NodeKind::Real),
            (Some("1"), NodeKind::Real),
            (None, NodeKind::Real),
        ];
        for (value, want) in cases {
            assert_eq!(NodeKind::from_annotation(value), want, "value {value:?}");
        }
    }

    #[test]
    fn invalid_entries_are_reported() {
        let cases: [(&str, &[&str]); 4] = [
            ("db-0,web-.*", &[]),
            ("a(b", &["a(b"]),
            (" ok , [z-a] ,x(", &["[z-a]", "x("]),
            ("", &[]),
        ];
        for (value, want) in cases {
            let ex = Exclusions::parse(value);
            let got: Vec<&str> = ex.invalid().iter().map(|i| i.entry.as_str()).collect();
            assert_eq!(got, want, "value {value:?}");
            assert!(
                ex.invalid().iter().all(|i| !i.error.is_empty()),
                "value {value:?}"
            );
        }
    }

    #[test]
    fn reasons_read_like_sentences() {
        let pod = PodFacts {
            namespace: "team-a",
            name: "web-1",
            pinned_node: None,
        };
        let pinned_pod = PodFacts {
            pinned_node: Some("kind-worker2"),
            ..pod
        };
        let cases = [
            (
                &pod,
                Placement::SpoofedOnly,
                RealNode,
                "node(s) are real but namespace team-a is spoofed",
            ),
            (
                &pod,
                Placement::RealOnly,
                SpoofedNode,
                "node(s) are spoofed but namespace team-a is not",
            ),
            (
                &pod,
                Placement::RealOnlyExcluded("web-.*"),
                SpoofedNodeExcludedPod,
                "node(s) are spoofed but pod web-1 is excluded by spoofed_excluded_pods entry \"web-.*\" of namespace team-a",
            ),
            (
                &pinned_pod,
                Placement::Pinned("kind-worker2"),
                PinnedElsewhere,
                "node(s) are not node kind-worker2, to which pod team-a/web-1 is pinned by its nodeName annotation",
            ),
            (
                &pod,
                Placement::RealOnly,
                UnknownNode,
                "node(s) are not in the extender's node cache yet, so it is not known whether they are spoofed",
            ),
        ];
        for (pod, placement, rejection, want) in cases {
            let got = Reason {
                pod,
                placement: &placement,
                rejection,
            }
            .to_string();
            assert_eq!(got, want, "{rejection:?}");
        }
    }

    #[test]
    fn hostile_values_are_bounded() {
        let many = vec!["p"; MAX_EXCLUDED_PODS_ENTRIES + 1].join(",");
        let enough = vec!["p"; MAX_EXCLUDED_PODS_ENTRIES].join(",");
        let long = format!("p,{}", " ".repeat(MAX_EXCLUDED_PODS_LEN));
        // Compiles to far more than the size limit.
        let huge = r"\w{1000}{1000}";
        /// (name, value, why ignored, invalid entries, the entry matching pod "p")
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            &'a [&'a str],
            Option<&'a str>,
        );
        let cases: [Case<'_>; 5] = [
            ("too many entries", &many, Some("33 entries"), &[], None),
            ("just enough entries", &enough, None, &[], Some("p")),
            ("too long", &long, Some("bytes long"), &[], None),
            ("regex over the size limit", huge, None, &[huge], None),
            (
                "big regex beside a name",
                &format!("{huge},p"),
                None,
                &[huge],
                Some("p"),
            ),
        ];
        for (name, value, ignored, invalid, matches_p) in cases {
            let ex = Exclusions::parse(value);
            match (ex.ignored(), ignored) {
                (Some(got), Some(want)) => assert!(got.contains(want), "{name}: {got}"),
                (got, want) => assert_eq!(got, want, "{name}"),
            }
            let got: Vec<&str> = ex.invalid().iter().map(|i| i.entry.as_str()).collect();
            assert_eq!(got, invalid, "{name}");
            assert_eq!(ex.matching("p"), matches_p, "{name}");
            // An over-limit regex still matches a pod of exactly its name.
            if !invalid.is_empty() {
                assert_eq!(ex.matching(huge), Some(huge), "{name}");
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Values made of regex syntax, names and separators, so that entries compile, fail to
        /// compile and blow the size limit in every mix.
        fn excluded_value() -> impl Strategy<Value = String> {
            prop_oneof![
                "\\PC{0,200}",
                proptest::collection::vec(
                    prop_oneof![
                        "[a-z0-9-]{1,12}",
                        "[a-z.*+?()\\[\\]{}|^$\\\\0-9,-]{1,16}",
                        Just(r"\w{100}{100}".to_owned()),
                    ],
                    0..40,
                )
                .prop_map(|v| v.join(",")),
            ]
        }

        proptest! {
            // Compiling regexes is slow in a debug build: fewer cases, each with many entries.
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn exclusions_never_panic_and_stay_bounded(value in excluded_value(), pod in "\\PC{0,30}") {
                let ex = Exclusions::parse(&value);
                prop_assert!(ex.entries.len() <= MAX_EXCLUDED_PODS_ENTRIES);
                prop_assert!(ex.invalid().len() <= ex.entries.len());
                if ex.ignored().is_some() {
                    prop_assert!(ex.is_empty());
                    prop_assert_eq!(ex.matching(&pod), None);
                }
                if let Some(entry) = ex.matching(&pod) {
                    prop_assert!(value.contains(entry));
                }
                // Every entry, valid or not, matches the pod named exactly like it.
                for e in &ex.entries {
                    prop_assert!(ex.matching(&e.text).is_some(), "{:?}", e.text);
                }
            }

            #[test]
            fn decisions_follow_the_three_rules(
                pod_name in "\\PC{0,20}",
                pinned in proptest::option::of("[a-z]{0,3}"),
                ns in proptest::option::of((any::<bool>(), "[a-z.*,-]{0,12}")),
                node in "[a-z]{0,3}",
                kind in proptest::option::of(prop_oneof![Just(NodeKind::Real), Just(NodeKind::Spoofed)]),
            ) {
                let policy = ns.as_ref().map(|(spoofed, value)| NamespacePolicy {
                    spoofed: *spoofed,
                    exclusions: Arc::new(Exclusions::parse(value)),
                });
                let pod = PodFacts { namespace: "team-a", name: &pod_name, pinned_node: pinned.as_deref() };
                let placement = match placement(&pod, policy.as_ref()) {
                    Ok(p) => p,
                    Err(Undecidable::NamespaceUnknown(ns)) => {
                        prop_assert!(pinned.is_none() && policy.is_none());
                        prop_assert_eq!(ns, "team-a");
                        return Ok(());
                    }
                };
                let verdict = decide(&placement, &node, kind);
                match (&placement, pinned.as_deref()) {
                    (Placement::Pinned(p), Some(want)) => {
                        prop_assert_eq!(*p, want);
                        prop_assert_eq!(verdict == Verdict::Pass, node == want);
                    }
                    (Placement::Pinned(_), None) => prop_assert!(false, "pinned without annotation"),
                    (_, Some(_)) => prop_assert!(false, "annotation ignored"),
                    (_, None) => {
                        let wanted = match placement {
                            Placement::SpoofedOnly => NodeKind::Spoofed,
                            _ => NodeKind::Real,
                        };
                        prop_assert_eq!(verdict == Verdict::Pass, kind == Some(wanted));
                        if kind.is_none() {
                            prop_assert_eq!(verdict, Verdict::Reject(Rejection::UnknownNode));
                        }
                    }
                }
                if let Verdict::Reject(rejection) = verdict {
                    let reason = Reason { pod: &pod, placement: &placement, rejection }.to_string();
                    prop_assert!(reason.starts_with("node(s) "), "{reason}");
                }
            }

            #[test]
            fn reasons_stay_short_whatever_the_annotation(pinned in "\\PC{0,600}", entry in "[a-zé]{0,600}") {
                let pod = PodFacts { namespace: "team-a", name: "p", pinned_node: Some(&pinned) };
                let cases = [
                    (Placement::Pinned(&pinned), Rejection::PinnedElsewhere),
                    (Placement::RealOnlyExcluded(&entry), Rejection::SpoofedNodeExcludedPod),
                ];
                for (placement, rejection) in cases {
                    let reason = Reason { pod: &pod, placement: &placement, rejection }.to_string();
                    prop_assert!(reason.len() <= 253 + 200, "{} bytes", reason.len());
                }
            }
        }
    }
}
