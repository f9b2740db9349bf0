//! Wire types of `k8s.io/kube-scheduler/extender/v1` as kube-scheduler sends them.
//!
//! The Go types have no JSON tags, so the keys are Go's field names (`Pod`, `NodeNames`, …) and
//! Go decodes them case-insensitively; we accept the Go spelling plus the lower/camel-case forms.
//! The objects inside (`v1.Pod`, `v1.Node`) do have tags (`metadata`, `items`). Requests are
//! borrowed from the body where possible: a filter call for 5,000 nodes must stay far below 1 ms.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// A string borrowed from the request body when it has no escapes, owned otherwise (serde's own
/// `Cow<str>` always allocates inside collections and options).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Str<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Str<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// `metadata` of a pod or node: only what the rules read.
#[derive(Debug, Default, Deserialize)]
pub struct Meta<'a> {
    #[serde(default, borrow)]
    pub name: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub namespace: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub uid: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub annotations: Option<BTreeMap<Str<'a>, Str<'a>>>,
}

impl Meta<'_> {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(|v| &**v)
    }
}

/// A `v1.Pod` or `v1.Node`, reduced to its metadata (the rest is skipped while parsing).
#[derive(Debug, Default, Deserialize)]
pub struct Object<'a> {
    #[serde(default, borrow)]
    pub metadata: Meta<'a>,
}

/// `v1.NodeList` as sent in `nodeCacheCapable: false` mode. Items stay raw JSON so the ones that
/// pass are echoed back byte for byte.
#[derive(Debug, Deserialize)]
pub struct NodeList<'a> {
    #[serde(default, borrow)]
    pub items: Vec<&'a RawValue>,
}

/// `ExtenderArgs`: the body of a filter call.
#[derive(Debug, Deserialize)]
pub struct ExtenderArgs<'a> {
    #[serde(default, borrow, rename = "Pod", alias = "pod", alias = "POD")]
    pub pod: Option<Object<'a>>,
    #[serde(default, borrow, rename = "Nodes", alias = "nodes", alias = "NODES")]
    pub nodes: Option<NodeList<'a>>,
    #[serde(
        default,
        borrow,
        rename = "NodeNames",
        alias = "nodeNames",
        alias = "nodenames",
        alias = "NODENAMES"
    )]
    pub node_names: Option<Vec<Str<'a>>>,
}

/// `MetaPod`: a victim identified by UID.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct MetaPod<'a> {
    #[serde(borrow, rename = "UID", alias = "uid", alias = "Uid")]
    pub uid: Str<'a>,
}

/// `MetaVictims`: request (nodeCacheCapable) and response shape.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct MetaVictims<'a> {
    #[serde(default, borrow, rename = "Pods", alias = "pods")]
    pub pods: Vec<MetaPod<'a>>,
    #[serde(
        default,
        rename = "NumPDBViolations",
        alias = "numPDBViolations",
        alias = "numpdbviolations"
    )]
    pub num_pdb_violations: i64,
}

/// `Victims`: full pods, sent when the extender is not nodeCacheCapable.
#[derive(Debug, Deserialize)]
pub struct Victims<'a> {
    #[serde(default, borrow, rename = "Pods", alias = "pods")]
    pub pods: Vec<Object<'a>>,
    #[serde(
        default,
        rename = "NumPDBViolations",
        alias = "numPDBViolations",
        alias = "numpdbviolations"
    )]
    pub num_pdb_violations: i64,
}

/// `ExtenderPreemptionArgs`: the body of a preempt call.
#[derive(Debug, Deserialize)]
pub struct ExtenderPreemptionArgs<'a> {
    #[serde(default, borrow, rename = "Pod", alias = "pod", alias = "POD")]
    pub pod: Option<Object<'a>>,
    #[serde(
        default,
        borrow,
        rename = "NodeNameToVictims",
        alias = "nodeNameToVictims",
        alias = "nodenametovictims"
    )]
    pub node_name_to_victims: Option<BTreeMap<Str<'a>, Option<Victims<'a>>>>,
    #[serde(
        default,
        borrow,
        rename = "NodeNameToMetaVictims",
        alias = "nodeNameToMetaVictims",
        alias = "nodenametometavictims"
    )]
    pub node_name_to_meta_victims: Option<BTreeMap<Str<'a>, Option<MetaVictims<'a>>>>,
}

/// `ExtenderPreemptionResult`.
#[derive(Debug, Serialize)]
pub struct ExtenderPreemptionResult<'a> {
    #[serde(rename = "NodeNameToMetaVictims")]
    pub node_name_to_meta_victims: BTreeMap<Str<'a>, MetaVictims<'a>>,
}

/// A response carrying only `Error` (what kube-scheduler reads first): for filter and preempt.
#[derive(Debug, Serialize)]
pub struct ErrorResult<'a> {
    #[serde(rename = "Error")]
    pub error: &'a str,
}

/// The passing nodes of a filter answer, in the shape the request used.
#[derive(Debug)]
pub enum Passed<'a> {
    /// nodeCacheCapable: the names.
    Names(Vec<&'a str>),
    /// Full nodes: the raw items, echoed unchanged.
    Nodes(Vec<&'a RawValue>),
}

/// `ExtenderFilterResult`, serialized without building a map of owned strings: `failed` pairs
/// each rejected node with a value that renders its reason.
///
/// The smallest answer the protocol allows: the passing names (or nodes), and each rejection
/// once, in `FailedNodes`, which every kube-scheduler reads (1.20 reads no other). The
/// `FailedAndUnresolvableNodes` of 1.21+ would only tell the scheduler not to try preemption
/// on those nodes; our `preempt` verb already drops every node the pod may not use, so writing
/// each rejection a second time would double the body (5,000 entries for a pod of a namespace
/// that is not spoofed) for nothing.
pub struct FilterResult<'a, R> {
    pub passed: Passed<'a>,
    pub failed: &'a [(&'a str, R)],
}

struct FailedMap<'a, R>(&'a [(&'a str, R)]);

impl<R: std::fmt::Display> Serialize for FailedMap<'_, R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (node, reason) in self.0 {
            map.serialize_entry(node, &Rendered(reason))?;
        }
        map.end()
    }
}

/// Serializes a `Display` value as a JSON string without an intermediate `String`.
struct Rendered<'a, R>(&'a R);

impl<R: std::fmt::Display> Serialize for Rendered<'_, R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

struct NodeListOut<'a>(&'a [&'a RawValue]);

impl Serialize for NodeListOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("NodeList", 2)?;
        s.serialize_field("metadata", &serde_json::Map::new())?;
        s.serialize_field("items", self.0)?;
        s.end()
    }
}

impl<R: std::fmt::Display> Serialize for FilterResult<'_, R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Go decodes an absent key as nil: no `null`s, no empty map, no empty `Error`.
        let mut s = serializer.serialize_struct("ExtenderFilterResult", 2)?;
        match &self.passed {
            Passed::Names(names) => s.serialize_field("NodeNames", names)?,
            Passed::Nodes(items) => s.serialize_field("Nodes", &NodeListOut(items))?,
        }
        if !self.failed.is_empty() {
            s.serialize_field("FailedNodes", &FailedMap(self.failed))?;
        }
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_args_accept_go_and_lower_case_keys() {
        let cases = [
            (
                "go names, cache capable",
                r#"{"Pod":{"metadata":{"name":"p","namespace":"ns"}},"Nodes":null,"NodeNames":["a","b"]}"#,
                Some(2),
                None,
            ),
            (
                "camel case",
                r#"{"pod":{"metadata":{"name":"p","namespace":"ns"}},"nodeNames":["a"]}"#,
                Some(1),
                None,
            ),
            (
                "lower case",
                r#"{"pod":{"metadata":{"name":"p"}},"nodenames":[]}"#,
                Some(0),
                None,
            ),
            (
                "full nodes",
                r#"{"Pod":{"metadata":{"name":"p"}},"Nodes":{"metadata":{},"items":[{"metadata":{"name":"a"}}]},"NodeNames":null}"#,
                None,
                Some(1),
            ),
        ];
        for (name, body, names, nodes) in cases {
            let args: ExtenderArgs<'_> = serde_json::from_str(body).expect(name);
            assert!(args.pod.is_some(), "{name}");
            assert_eq!(args.node_names.as_ref().map(Vec::len), names, "{name}");
            assert_eq!(args.nodes.as_ref().map(|n| n.items.len()), nodes, "{name}");
        }
    }

    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let body = r#"{"Pod":{"metadata":{"name":"p","namespace":"ns","annotations":{"nodeName":"n\u002d1"}}},"NodeNames":["plain","esc\u0061ped"]}"#;
        let args: ExtenderArgs<'_> = serde_json::from_str(body).expect("parse");
        let names = args.node_names.expect("names");
        assert!(matches!(names[0].0, Cow::Borrowed("plain")));
        assert!(matches!(&names[1].0, Cow::Owned(s) if s == "escaped"));
        let pod = args.pod.expect("pod");
        assert_eq!(pod.metadata.annotation("nodeName"), Some("n-1"));
        assert_eq!(pod.metadata.annotation("other"), None);
    }

    #[test]
    fn filter_result_is_the_smallest_go_shape() {
        let failed = [("n2", "why")];
        let result = FilterResult {
            passed: Passed::Names(vec!["n1"]),
            failed: &failed,
        };
        let got = serde_json::to_value(&result).expect("serialize");
        assert_eq!(
            got,
            serde_json::json!({
                "NodeNames": ["n1"],
                "FailedNodes": {"n2": "why"},
            })
        );
        let none = FilterResult::<&str> {
            passed: Passed::Names(vec!["n1", "n2"]),
            failed: &[],
        };
        assert_eq!(
            serde_json::to_string(&none).expect("serialize"),
            r#"{"NodeNames":["n1","n2"]}"#
        );
    }

    #[test]
    fn full_nodes_are_echoed_raw() {
        let raw: Vec<Box<RawValue>> = vec![
            RawValue::from_string(r#"{"metadata":{"name":"a","labels":{"x":"y"}}}"#.into())
                .expect("raw"),
        ];
        let items: Vec<&RawValue> = raw.iter().map(|b| b.as_ref()).collect();
        let failed: [(&str, &str); 0] = [];
        let result = FilterResult {
            passed: Passed::Nodes(items),
            failed: &failed,
        };
        let got = serde_json::to_value(&result).expect("serialize");
        assert_eq!(got["Nodes"]["items"][0]["metadata"]["labels"]["x"], "y");
        assert!(got.get("NodeNames").is_none(), "{got}");
        assert!(got.get("FailedNodes").is_none(), "{got}");
    }
}
