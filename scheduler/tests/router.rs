//! The extender's routes driven with `oneshot`, with request bodies shaped like kube-scheduler 1.20
//! sends them (tests/data).

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use scheduler::Service;
use serde_json::{Value, json};
use tower::ServiceExt;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A synced service: real nodes kind-worker(2), spoofed hollow-node-0/1; namespaces team-a
/// (spoofed), team-b (spoofed, excludes web-.*), plain (not spoofed), odd ("True").
fn service() -> Service {
    let svc = Service::new();
    let c = &svc.cache;
    c.apply_node("kind-worker", None);
    c.apply_node("kind-worker2", Some("false"));
    c.apply_node("hollow-node-0", Some("true"));
    c.apply_node("hollow-node-1", Some("true"));
    c.apply_namespace("team-a", Some("true"), None);
    c.apply_namespace("team-b", Some("true"), Some(" db-0 , web-.* "));
    c.apply_namespace("plain", None, None);
    c.apply_namespace("odd", Some("True"), None);
    c.set_namespaces_synced();
    c.set_nodes_synced();
    svc
}

async fn call(app: &Router, method: &str, path: &str, body: String) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn post_json(app: &Router, path: &str, body: &Value) -> (StatusCode, Value) {
    let (status, text) = call(app, "POST", path, body.to_string()).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn with_pod(mut args: Value, namespace: &str, name: &str, annotations: Option<Value>) -> Value {
    args["Pod"]["metadata"]["namespace"] = json!(namespace);
    args["Pod"]["metadata"]["name"] = json!(name);
    if let Some(a) = annotations {
        args["Pod"]["metadata"]["annotations"] = a;
    }
    args
}

fn names(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        Value::Object(o) => o.keys().cloned().collect(),
        _ => Vec::new(),
    };
    out.sort();
    out
}

#[tokio::test]
async fn filter_by_node_names_follows_the_rules() {
    let app = service().app();
    let base = fixture("filter-node-names.json");
    let real = ["kind-worker", "kind-worker2"];
    let spoofed = ["hollow-node-0", "hollow-node-1"];
    type Case<'a> = (&'a str, &'a str, &'a str, Option<Value>, &'a [&'a str]);
    let cases: [Case<'_>; 7] = [
        ("spoofed namespace", "team-a", "web-1", None, &spoofed),
        ("excluded by regex", "team-b", "web-1", None, &real),
        ("excluded by equality", "team-b", "db-0", None, &real),
        ("not excluded", "team-b", "api-1", None, &spoofed),
        ("plain namespace", "plain", "web-1", None, &real),
        ("\"True\" is not spoofed", "odd", "web-1", None, &real),
        (
            "pinned",
            "team-a",
            "web-1",
            Some(json!({"nodeName": "kind-worker2"})),
            &["kind-worker2"],
        ),
    ];
    for (name, ns, pod, annotations, want) in cases {
        let args = with_pod(base.clone(), ns, pod, annotations);
        let (status, got) = post_json(&app, "/filter", &args).await;
        assert_eq!(status, StatusCode::OK, "{name}: {got}");
        // The smallest Go shape: no Error, no Nodes, no second failure map.
        let keys: Vec<&String> = got.as_object().expect("an object").keys().collect();
        assert!(
            keys.iter()
                .all(|k| *k == "NodeNames" || *k == "FailedNodes"),
            "{name}: {got}"
        );
        assert_eq!(names(&got["NodeNames"]), want, "{name}");
        let mut rejected: Vec<String> =
            real.iter().chain(&spoofed).map(|s| s.to_string()).collect();
        rejected.retain(|n| !want.contains(&n.as_str()));
        rejected.sort();
        assert_eq!(names(&got["FailedNodes"]), rejected, "{name}");
    }
}

#[tokio::test]
async fn rejection_reasons_name_the_namespace_and_are_one_per_kind_of_node() {
    let app = service().app();
    let args = fixture("filter-node-names.json");
    let (_, got) = post_json(&app, "/filter", &args).await;
    assert_eq!(
        got["FailedNodes"]["kind-worker"],
        "node(s) are real but namespace team-a is spoofed"
    );
    let args = with_pod(fixture("filter-node-names.json"), "team-b", "web-1", None);
    let (_, got) = post_json(&app, "/filter", &args).await;
    let reasons: BTreeSet<&str> = got["FailedNodes"]
        .as_object()
        .expect("FailedNodes")
        .values()
        .filter_map(Value::as_str)
        .collect();
    // The scheduler counts identical reasons: one text for every spoofed node.
    assert_eq!(
        reasons,
        BTreeSet::from([
            "node(s) are spoofed but pod web-1 is excluded by spoofed_excluded_pods entry \"web-.*\" of namespace team-b"
        ])
    );
}

#[tokio::test]
async fn filter_with_full_nodes_echoes_the_passing_nodes() {
    // In this mode the node's own annotation decides: drop the cache's knowledge of nodes.
    let svc = Service::new();
    svc.cache.apply_namespace("team-a", Some("true"), None);
    svc.cache.set_namespaces_synced();
    svc.cache.set_nodes_synced();
    let app = svc.app();
    let args = fixture("filter-nodes.json");
    let (status, got) = post_json(&app, "/filter", &args).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["NodeNames"], Value::Null);
    let items = got["Nodes"]["items"].as_array().expect("Nodes.items");
    let passed: Vec<&str> = items
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert_eq!(passed, ["hollow-node-0", "hollow-node-1"]);
    // Echoed unchanged, status and all.
    let sent = &args["Nodes"]["items"][2];
    assert_eq!(&items[0], sent);
    assert_eq!(names(&got["FailedNodes"]), ["kind-worker", "kind-worker2"]);
}

#[tokio::test]
async fn requests_we_cannot_decide_get_an_error() {
    let synced = service().app();
    let unsynced = Service::new().app();
    let base = fixture("filter-node-names.json");
    let mut no_pod = base.clone();
    no_pod.as_object_mut().expect("object").remove("Pod");
    let mut no_nodes = base.clone();
    no_nodes["NodeNames"] = Value::Null;
    let cases: [(&str, &Router, String, StatusCode, &str); 5] = [
        (
            "caches not synced",
            &unsynced,
            base.to_string(),
            StatusCode::OK,
            "has not synced yet",
        ),
        (
            "namespace unknown",
            &synced,
            with_pod(base.clone(), "nowhere", "p", None).to_string(),
            StatusCode::OK,
            "namespace nowhere of the pod is not in the extender's namespace cache yet",
        ),
        (
            "no pod",
            &synced,
            no_pod.to_string(),
            StatusCode::BAD_REQUEST,
            "has no Pod",
        ),
        (
            "no nodes",
            &synced,
            no_nodes.to_string(),
            StatusCode::BAD_REQUEST,
            "neither NodeNames nor Nodes",
        ),
        (
            "not json",
            &synced,
            "{nope".into(),
            StatusCode::BAD_REQUEST,
            "not ExtenderArgs JSON",
        ),
    ];
    for (name, app, body, want_status, needle) in cases {
        let (status, text) = call(app, "POST", "/filter", body).await;
        assert_eq!(status, want_status, "{name}: {text}");
        let got: Value = serde_json::from_str(&text).expect(name);
        let error = got["Error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{name}: {error}");
    }
}

#[tokio::test]
async fn readyz_follows_the_caches() {
    let svc = Service::new();
    let app = svc.app();
    let (status, _) = call(&app, "GET", "/readyz", String::new()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    svc.cache.set_nodes_synced();
    let (status, _) = call(&app, "GET", "/readyz", String::new()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    svc.cache.set_namespaces_synced();
    let (status, _) = call(&app, "GET", "/readyz", String::new()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, "GET", "/healthz", String::new()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn preempt_keeps_only_nodes_the_filter_accepts() {
    let app = service().app();
    let cases = [
        (
            "meta victims, spoofed ns",
            fixture("preempt-meta-victims.json"),
            "team-a",
            vec!["hollow-node-0", "hollow-node-1"],
        ),
        (
            "meta victims, plain ns",
            with_pod(fixture("preempt-meta-victims.json"), "plain", "web-1", None),
            "plain",
            vec!["kind-worker", "kind-worker2"],
        ),
        (
            "full victims, spoofed ns",
            fixture("preempt-victims.json"),
            "team-a",
            vec!["hollow-node-0", "hollow-node-1"],
        ),
        (
            "full victims, excluded pod",
            with_pod(fixture("preempt-victims.json"), "team-b", "web-9", None),
            "team-b",
            vec!["kind-worker", "kind-worker2"],
        ),
    ];
    for (name, args, _ns, want) in cases {
        let (status, got) = post_json(&app, "/preempt", &args).await;
        assert_eq!(status, StatusCode::OK, "{name}: {got}");
        let map = &got["NodeNameToMetaVictims"];
        assert_eq!(names(map), want, "{name}: {got}");
        for node in want {
            assert_eq!(
                map[node]["Pods"],
                json!([{"UID": format!("victim-on-{node}")}]),
                "{name}: {node}"
            );
            assert!(map[node]["NumPDBViolations"].is_i64(), "{name}: {node}");
        }
    }
    // Meta victims keep their PDB violation count.
    let args = with_pod(fixture("preempt-meta-victims.json"), "plain", "web-1", None);
    let (_, got) = post_json(&app, "/preempt", &args).await;
    assert_eq!(
        got["NodeNameToMetaVictims"]["kind-worker"]["NumPDBViolations"],
        1
    );
}

#[tokio::test]
async fn preempt_errors_are_non_200() {
    let (status, _) = call(
        &Service::new().app(),
        "POST",
        "/preempt",
        fixture("preempt-meta-victims.json").to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "unsynced");
    let mut args = fixture("preempt-victims.json");
    args["NodeNameToVictims"]["hollow-node-0"]["Pods"][0]["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("uid");
    let (status, text) = call(&service().app(), "POST", "/preempt", args.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("team-z/low-hollow-node-0"), "{text}");
}

#[tokio::test]
async fn metrics_count_requests_and_decisions() {
    let svc = service();
    let app = svc.app();
    post_json(&app, "/filter", &fixture("filter-node-names.json")).await;
    post_json(&app, "/preempt", &fixture("preempt-meta-victims.json")).await;
    call(&app, "POST", "/filter", "{nope".into()).await;
    let (_, text) = call(&app, "GET", "/metrics", String::new()).await;
    for needle in [
        "mock_kind_scheduler_requests_total{verb=\"filter\",result=\"ok\"} 1",
        "mock_kind_scheduler_requests_total{verb=\"filter\",result=\"bad_request\"} 1",
        "mock_kind_scheduler_requests_total{verb=\"preempt\",result=\"ok\"} 1",
        "mock_kind_scheduler_decisions_total{verb=\"filter\",outcome=\"pass\"} 2",
        "mock_kind_scheduler_decisions_total{verb=\"filter\",outcome=\"real_node\"} 2",
        "mock_kind_scheduler_request_duration_seconds_count{verb=\"filter\"} 2",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

/// Bodies captured from kube-scheduler 1.20 itself (tests/capture.rs): pod default/web-1,
/// nodes kind-worker (real) and hollow-node-0 (spoofed), in both nodeCacheCapable modes.
#[tokio::test]
async fn captured_kube_scheduler_requests_are_understood() {
    let cases = [
        (
            "node names, plain",
            "captured-filter-node-names.json",
            None,
            "kind-worker",
            "hollow-node-0",
        ),
        (
            "node names, spoofed",
            "captured-filter-node-names.json",
            Some("true"),
            "hollow-node-0",
            "kind-worker",
        ),
        (
            "full nodes, plain",
            "captured-filter-nodes.json",
            None,
            "kind-worker",
            "hollow-node-0",
        ),
        (
            "full nodes, spoofed",
            "captured-filter-nodes.json",
            Some("true"),
            "hollow-node-0",
            "kind-worker",
        ),
    ];
    for (name, file, spoofed, pass, reject) in cases {
        let svc = Service::new();
        svc.cache.apply_node("kind-worker", None);
        svc.cache.apply_node("hollow-node-0", Some("true"));
        svc.cache.apply_namespace("default", spoofed, None);
        svc.cache.set_namespaces_synced();
        svc.cache.set_nodes_synced();
        let (status, got) = post_json(&svc.app(), "/filter", &fixture(file)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {got}");
        let passed: Vec<String> = if got["NodeNames"].is_array() {
            names(&got["NodeNames"])
        } else {
            got["Nodes"]["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(passed, [pass], "{name}: {got}");
        assert_eq!(names(&got["FailedNodes"]), [reject], "{name}");
        assert!(got.get("FailedAndUnresolvableNodes").is_none(), "{name}");
    }
}
