//! The example KubeSchedulerConfigurations in config/ register the extender the way the README
//! and the deploy files expect.

use serde_json::{Value, json};

#[test]
fn example_configurations_register_the_extender() {
    let cases = [
        (
            "scheduler-config.v1beta1.yaml",
            "kubescheduler.config.k8s.io/v1beta1",
        ),
        ("scheduler-config.v1.yaml", "kubescheduler.config.k8s.io/v1"),
    ];
    for (file, api_version) in cases {
        let path = format!("{}/config/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(doc["apiVersion"], api_version, "{file}");
        assert_eq!(doc["kind"], "KubeSchedulerConfiguration", "{file}");
        let extenders = doc["extenders"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: extenders"));
        assert_eq!(extenders.len(), 1, "{file}");
        let e = &extenders[0];
        for (key, want) in [
            ("urlPrefix", json!("http://127.0.0.1:8888/")),
            ("filterVerb", json!("filter")),
            ("preemptVerb", json!("preempt")),
            ("nodeCacheCapable", json!(true)),
            ("ignorable", json!(false)),
            ("weight", json!(1)),
        ] {
            assert_eq!(e[key], want, "{file}: extenders[0].{key}");
        }
        assert!(
            e.get("managedResources").is_none(),
            "{file}: every pod is filtered"
        );
        assert!(
            e.get("prioritizeVerb").is_none(),
            "{file}: no prioritize verb is served"
        );
    }
}
