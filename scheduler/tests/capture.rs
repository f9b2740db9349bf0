//! Re-captures the request fixtures in tests/data from the real kube-scheduler (e2e harness):
//! `cargo test -p scheduler --test capture -- --ignored`. Two recording extenders are configured,
//! one nodeCacheCapable and one not.
//! Ignored by default: it rewrites files under tests/data.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

type Captured = Arc<Mutex<BTreeMap<String, Bytes>>>;

/// Records the first body per (mode, verb) and answers "every node passes / every victim goes".
async fn record(
    State(captured): State<Captured>,
    Path((mode, verb)): Path<(String, String)>,
    body: Bytes,
) -> axum::Json<Value> {
    let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut c) = captured.lock() {
        c.entry(format!("{verb}-{mode}")).or_insert(body);
    }
    axum::Json(match verb.as_str() {
        "filter" => {
            json!({"Nodes": args["Nodes"], "NodeNames": args["NodeNames"], "FailedNodes": {}, "Error": ""})
        }
        _ => {
            let mut out = serde_json::Map::new();
            if let Some(m) = args["NodeNameToMetaVictims"].as_object() {
                out = m.clone();
            } else if let Some(m) = args["NodeNameToVictims"].as_object() {
                for (node, v) in m {
                    let pods: Vec<Value> = v["Pods"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .map(|p| json!({"UID": p["metadata"]["uid"]}))
                                .collect()
                        })
                        .unwrap_or_default();
                    out.insert(
                        node.clone(),
                        json!({"Pods": pods, "NumPDBViolations": v["NumPDBViolations"]}),
                    );
                }
            }
            json!({"NodeNameToMetaVictims": out})
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "rewrites tests/data from a real kube-scheduler"]
async fn capture_fixtures_from_kube_scheduler() -> Result<()> {
    telemetry::install_crypto_provider();
    let captured: Captured = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = Router::new()
        .route("/{mode}/{verb}", post(record))
        .with_state(captured.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let entry = |mode: &str, cache: bool| {
        json!({"urlPrefix": format!("http://127.0.0.1:{port}/{mode}/"), "filterVerb": "filter",
               "preemptVerb": "preempt", "nodeCacheCapable": cache, "ignorable": false, "weight": 1})
    };
    let cp = e2e::ControlPlane::start(e2e::Options {
        extenders: vec![entry("node-names", true), entry("nodes", false)],
        node_monitor_grace_period: Some(Duration::from_secs(3600)),
        ..Default::default()
    })
    .await?;
    let client = cp.client();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, ann) in [
        ("kind-worker", json!({})),
        ("hollow-node-0", json!({"spoofed": "true"})),
    ] {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": ann, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": "1", "memory": "4Gi", "pods": "110"},
                       "capacity": {"cpu": "1", "memory": "4Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastHeartbeatTime": now, "lastTransitionTime": now}],
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    e2e::wait_for(Duration::from_secs(60), "default serviceaccount", || {
        let sas = sas.clone();
        async move { Ok(sas.get_opt("default").await?.map(|_| ())) }
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "annotations": {"example": "yes"}},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.2",
                                 "resources": {"requests": {"cpu": "100m"}}}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    // kube-scheduler 1.20 never calls an extender's preempt verb (its framework's extender list
    // is empty: kubernetes/kubernetes#102971), so only filter requests can be captured; the
    // preempt fixtures are written from the Go types.
    let want = ["filter-node-names", "filter-nodes"];
    e2e::wait_for(
        Duration::from_secs(60),
        "both filter request kinds captured",
        || {
            let captured = captured.clone();
            async move {
                let c = captured.lock().map(|c| c.len()).unwrap_or(0);
                Ok((c >= want.len()).then_some(()))
            }
        },
    )
    .await?;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let c = match captured.lock() {
        Ok(c) => c.clone(),
        Err(_) => bail!("capture lock poisoned"),
    };
    for name in want {
        let Some(body) = c.get(name) else {
            bail!("{name} not captured")
        };
        std::fs::write(format!("{dir}/captured-{name}.json"), body)?;
    }
    Ok(())
}
