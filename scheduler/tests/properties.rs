//! Property tests of the extender's request handling: arbitrary bodies and ExtenderArgs-shaped
//! JSON with arbitrary parts go through `answer_filter` / `answer_preempt`, the code behind the
//! routes. Nothing may panic, and every answer must be consistent with its request.

use std::collections::BTreeSet;

use proptest::prelude::*;
use scheduler::Service;
use scheduler::server::{answer_filter, answer_preempt};
use serde_json::{Value, json};

/// Synced caches: two real and two spoofed nodes; a spoofed namespace with exclusions, a
/// spoofed one without, a plain one.
fn service() -> Service {
    let svc = Service::new();
    let c = &svc.cache;
    c.apply_node("real-0", None);
    c.apply_node("real-1", Some("false"));
    c.apply_node("hollow-0", Some("true"));
    c.apply_node("hollow-1", Some("true"));
    c.apply_namespace("team-a", Some("true"), None);
    c.apply_namespace("team-b", Some("true"), Some("db-0,web-.*,a(b"));
    c.apply_namespace("plain", None, None);
    c.set_namespaces_synced();
    c.set_nodes_synced();
    svc
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Mostly `right`, sometimes anything.
fn mostly(right: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![4 => right, 1 => any_json()].boxed()
}

fn node_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("real-0"),
            Just("real-1"),
            Just("hollow-0"),
            Just("hollow-1")
        ]
        .prop_map(str::to_owned),
        "\\PC{0,12}",
    ]
}

fn pod() -> BoxedStrategy<Value> {
    let namespace = prop_oneof![
        Just(json!("team-a")),
        Just(json!("team-b")),
        Just(json!("plain")),
        Just(json!("unknown")),
    ];
    let name = prop_oneof![
        Just(json!("db-0")),
        Just(json!("web-1")),
        Just(json!("a(b")),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    let pinned = proptest::option::of(mostly(node_name().prop_map(Value::from)));
    (mostly(namespace), mostly(name), pinned)
        .prop_map(|(namespace, name, pinned)| {
            let mut meta = json!({"namespace": namespace, "name": name});
            if let Some(node) = pinned {
                meta["annotations"] = json!({"nodeName": node});
            }
            json!({"metadata": meta})
        })
        .boxed()
}

fn full_node() -> BoxedStrategy<Value> {
    let spoofed = prop_oneof![Just(json!("true")), Just(json!("True")), any_json()];
    mostly(
        (node_name(), proptest::option::of(spoofed)).prop_map(|(name, spoofed)| {
            let mut node = json!({"metadata": {"name": name}, "status": {"x": 1}});
            if let Some(s) = spoofed {
                node["metadata"]["annotations"] = json!({"spoofed": s});
            }
            node
        }),
    )
}

/// ExtenderArgs as kube-scheduler spells it, in any key case, with parts that may be anything.
fn extender_args() -> impl Strategy<Value = Value> {
    let names = mostly(proptest::collection::vec(node_name(), 0..8).prop_map(|v| json!(v)));
    // A NodeList names each node once (kube-scheduler sends its node snapshot); two items with
    // one name and different labels are not a request it can make.
    let nodes = mostly(
        proptest::collection::vec(full_node(), 0..5).prop_map(|mut items| {
            let mut seen = BTreeSet::new();
            items.retain(|n| match n["metadata"]["name"].as_str() {
                Some(name) => seen.insert(name.to_owned()),
                None => true,
            });
            json!({"items": items})
        }),
    );
    let keys = prop_oneof![
        Just(("Pod", "NodeNames", "Nodes")),
        Just(("pod", "nodeNames", "nodes")),
    ];
    (
        keys,
        proptest::option::weighted(0.9, pod()),
        proptest::option::weighted(0.7, names),
        proptest::option::weighted(0.5, nodes),
    )
        .prop_map(|((pk, nk, fk), pod, names, nodes)| {
            let mut args = serde_json::Map::new();
            for (key, value) in [(pk, pod), (nk, names), (fk, nodes)] {
                if let Some(v) = value {
                    args.insert(key.to_owned(), v);
                }
            }
            Value::Object(args)
        })
}

fn preemption_args() -> impl Strategy<Value = Value> {
    let victims = mostly(
        proptest::collection::vec("\\PC{0,8}", 0..3)
            .prop_map(|uids| json!({"Pods": uids.iter().map(|u| json!({"UID": u})).collect::<Vec<_>>(), "NumPDBViolations": 0})),
    );
    let map = proptest::collection::btree_map(node_name(), victims, 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    (pod(), mostly(map), any::<bool>()).prop_map(|(pod, map, meta)| {
        let key = if meta {
            "NodeNameToMetaVictims"
        } else {
            "NodeNameToVictims"
        };
        json!({"Pod": pod, key: map})
    })
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

proptest! {
    #[test]
    fn any_bytes_get_an_answer(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let svc = service();
        if let Err(f) = answer_filter(&svc.state, &body) {
            prop_assert!(!f.message.is_empty());
        }
        if let Err(f) = answer_preempt(&svc.state, &body) {
            prop_assert!(!f.message.is_empty());
        }
    }

    #[test]
    fn filter_answers_are_consistent_with_the_request(args in extender_args()) {
        let svc = service();
        let body = serde_json::to_vec(&args).expect("a Value serializes");
        let out = match answer_filter(&svc.state, &body) {
            Ok(out) => out,
            Err(f) => {
                prop_assert!(!f.message.is_empty());
                return Ok(());
            }
        };
        let answer: Value = serde_json::from_slice(&out).expect("the answer is JSON");
        prop_assert!(answer.get("Error").is_none() && answer.get("FailedAndUnresolvableNodes").is_none());
        let failed = keys(&answer["FailedNodes"]);
        let (sent, passed): (BTreeSet<String>, Vec<String>) = if answer["NodeNames"].is_array() {
            let sent = args.get("NodeNames").or(args.get("nodeNames")).cloned();
            (
                serde_json::from_value(sent.unwrap_or_default()).expect("names were sent"),
                serde_json::from_value(answer["NodeNames"].clone()).expect("names"),
            )
        } else {
            let items = answer["Nodes"]["items"].as_array().cloned().unwrap_or_default();
            // A NodeList without `items` is an empty one.
            let sent = args.get("Nodes").or(args.get("nodes")).and_then(|n| n.get("items"));
            let sent = sent.and_then(Value::as_array).cloned().unwrap_or_default();
            for item in &items {
                prop_assert!(sent.contains(item), "{item} was not sent");
            }
            let name = |n: &Value| n["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            (sent.iter().map(name).collect(), items.iter().map(name).collect())
        };
        // Every node sent is decided once: passed or failed, never both, never invented.
        for name in &passed {
            prop_assert!(sent.contains(name), "{name} passed but was not sent");
            prop_assert!(!failed.contains(name), "{name} both passed and failed");
        }
        for name in &failed {
            prop_assert!(sent.contains(name), "{name} failed but was not sent");
        }
        let decided: BTreeSet<&String> = passed.iter().chain(&failed).collect();
        prop_assert_eq!(decided.len(), sent.len());
    }

    #[test]
    fn preempt_keeps_only_candidates_it_was_sent(args in preemption_args()) {
        let svc = service();
        let body = serde_json::to_vec(&args).expect("a Value serializes");
        match answer_preempt(&svc.state, &body) {
            Ok(out) => {
                let answer: Value = serde_json::from_slice(&out).expect("the answer is JSON");
                let sent = keys(args.get("NodeNameToMetaVictims").or(args.get("NodeNameToVictims")).unwrap_or(&Value::Null));
                let kept = keys(&answer["NodeNameToMetaVictims"]);
                prop_assert!(kept.is_subset(&sent), "kept {kept:?} of {sent:?}");
            }
            Err(f) => prop_assert!(!f.message.is_empty()),
        }
    }
}
