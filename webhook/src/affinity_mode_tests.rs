use super::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn ns(annotations: Value) -> (NamespacePolicy, Vec<String>) {
    let map: BTreeMap<String, String> = serde_json::from_value(annotations).expect("map");
    policy_of(Some(&map), &CompiledExclusions::default())
}

/// The pod as the apiserver would store it after our patch, or the refusal.
fn run(raw: &Value, ns: Option<&NamespacePolicy>) -> Result<Value, String> {
    let pod: Pod = serde_json::from_value(raw.clone()).expect("a Pod");
    match place(&fitted_patch::Sent::from_value(raw), &pod, "team-a", ns) {
        Placed::Patch(patch) => {
            let mut doc = raw.clone();
            json_patch::patch(&mut doc, &patch.0).map_err(|e| format!("patch fails: {e}"))?;
            Ok(doc)
        }
        Placed::Refuse(message) => Err(message),
    }
}

fn terms(pod: &Value) -> &Value {
    &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
}

const HOLLOW: &str = r#"{"key":"spoofed","operator":"In","values":["true"]}"#;
const REAL: &str = r#"{"key":"spoofed","operator":"NotIn","values":["true"]}"#;

/// A check of the placed pod, given the hollow and the real requirement.
type Check = fn(&Value, &Value, &Value) -> bool;
/// (name, pod as sent, its namespace's policy if known, a check of the placed pod or a part
/// of the refusal)
type Case<'a> = (
    &'a str,
    Value,
    Option<&'a NamespacePolicy>,
    Result<Check, &'a str>,
);

#[test]
fn place_table() {
    let spoofed = ns(json!({"spoofed": "true", "spoofed_excluded_pods": "^db-, bad("}));
    let plain = ns(json!({"spoofed": "True"}));
    let bare = |name: &str, annotations: Value| json!({"metadata": {"name": name, "annotations": annotations}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let generated = json!({"metadata": {"generateName": "db-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let users = json!({"metadata": {"name": "web-1"}, "spec": {
    "containers": [{"name": "c", "image": "i"}],
    "nodeSelector": {"zone": "a"},
    "tolerations": [{"key": "gpu", "operator": "Exists"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["h7"]}]},
    ]}}}}});
    let hollow: Value = serde_json::from_str(HOLLOW).expect("json");
    let real: Value = serde_json::from_str(REAL).expect("json");
    let cases: Vec<Case<'_>> = vec![
        (
            "spoofed namespace: toleration and hollow nodes",
            bare("web-1", json!({})),
            Some(&spoofed.0),
            Ok(|pod, hollow, _| {
                terms(pod) == &json!([{"matchExpressions": [hollow]}])
                    && pod["spec"]["tolerations"]
                        == json!([{"key": "mock-kind.io/hollow", "operator": "Exists", "effect": "NoSchedule"}])
            }),
        ),
        (
            "plain namespace: real nodes, no toleration",
            bare("web-1", json!(null)),
            Some(&plain.0),
            Ok(|pod, _, real| {
                terms(pod) == &json!([{"matchExpressions": [real]}])
                    && pod["spec"].get("tolerations").is_none()
            }),
        ),
        (
            "excluded by its generateName prefix",
            generated,
            Some(&spoofed.0),
            Ok(|pod, _, real| terms(pod) == &json!([{"matchExpressions": [real]}])),
        ),
        (
            "pinned by nodeName, namespace unknown",
            bare("p", json!({"nodeName": "h1"})),
            None,
            Ok(|pod, _, _| {
                terms(pod)
                    == &json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["h1"]}]}])
                    && pod["spec"]["tolerations"][0]["key"] == "mock-kind.io/hollow"
            }),
        ),
        (
            "user's affinity, selector and tolerations kept",
            users,
            Some(&spoofed.0),
            Ok(|pod, hollow, _| {
                terms(pod)
                    == &json!([
                        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}, hollow]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["h7"]}], "matchExpressions": [hollow]},
                    ])
                    && pod["spec"]["nodeSelector"] == json!({"zone": "a"})
                    && pod["spec"]["tolerations"].as_array().map(Vec::len) == Some(2)
                    && pod["spec"]["tolerations"][0]["key"] == "gpu"
            }),
        ),
        (
            "invalid nodeName refused",
            bare("p", json!({"nodeName": "Node_1"})),
            Some(&plain.0),
            Err("is not a node name"),
        ),
        (
            "namespace unknown refused (retried by the client)",
            bare("p", json!({})),
            None,
            Err("namespace team-a of the pod is not known yet; retry"),
        ),
    ];
    for (name, raw, ns, want) in cases {
        match (run(&raw, ns), want) {
            (Ok(pod), Ok(check)) => {
                assert!(check(&pod, &hollow, &real), "{name}: {pod:#}");
                // Reinvocation (reinvocationPolicy: IfNeeded) adds nothing.
                let again: Pod = serde_json::from_value(pod.clone()).expect("a Pod");
                assert_eq!(
                    place(&fitted_patch::Sent::from_value(&pod), &again, "team-a", ns),
                    Placed::Patch(json_patch::Patch(Vec::new())),
                    "{name}: second pass"
                );
            }
            (Err(message), Err(needle)) => assert!(message.contains(needle), "{name}: {message}"),
            (got, _) => panic!("{name}: got {got:?}"),
        }
    }
    assert_eq!(
        spoofed.1.len(),
        1,
        "the invalid entry is reported: {:?}",
        spoofed.1
    );
    assert!(spoofed.1[0].contains("bad("), "{:?}", spoofed.1);
}

proptest! {
    /// Whatever the annotations and the pod's name hold, `place` answers (never panics) and a
    /// patch it gives applies to the pod as sent.
    #[test]
    fn place_never_panics(
        spoofed in proptest::option::of(prop_oneof![Just("true".to_owned()), "\\PC{0,8}"]),
        excluded in proptest::option::of("[a-z.*,()^$-]{0,40}"),
        pinned in proptest::option::of(prop_oneof!["[a-z0-9.-]{0,20}", "\\PC{0,300}"]),
        name in "\\PC{0,60}",
        known in any::<bool>(),
    ) {
        let mut annotations = BTreeMap::new();
        annotations.extend(spoofed.map(|v| (placement::SPOOFED.to_owned(), v)));
        annotations.extend(excluded.map(|v| (placement::SPOOFED_EXCLUDED_PODS.to_owned(), v)));
        let (policy, _) = policy_of(Some(&annotations), &CompiledExclusions::default());
        let mut raw = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if let Some(p) = &pinned {
            raw["metadata"]["annotations"] = json!({"nodeName": p});
        }
        match run(&raw, known.then_some(&policy)) {
            Ok(pod) => prop_assert!(terms(&pod).as_array().is_some_and(|t| t.len() == 1)),
            Err(message) => {
                prop_assert!(message.len() < 600, "{} bytes", message.len());
                prop_assert!(!message.contains("patch fails"), "{}", message);
            }
        }
    }
}
