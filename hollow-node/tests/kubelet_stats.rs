//! Each node's own kubelet port (`--kubelet-port-per-node`) through the real apiserver with
//! the real kubectl: `kubectl get --raw /api/v1/nodes/<node>/proxy/metrics/resource` and
//! `…/proxy/stats/summary` give, for two nodes, each only its own pods with the usage their
//! annotations say (the CPU rate read from two scrapes as metrics-server reads it), the node
//! the sum plus the overhead; the Nodes advertise the ports that answer; a node's port knows
//! none of another node's pods; a caller without `nodes/metrics` or `nodes/stats` gets 403.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use hollow_node::kubelet::decode::{self, Decoded};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::process::Command;

const PREFIX: &str = "hn-kst";
const T: Duration = Duration::from_secs(90);
const MI: u64 = 1 << 20;

fn pod(name: &str, node: &str, containers: &[&str], usage: &str) -> Pod {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"mock-kind.io/usage": usage}},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": containers,
        },
    }))
    .expect("pod")
}

async fn raw(cp: &e2e::ControlPlane, path: &str) -> String {
    let o = Command::new("kubectl")
        .env("KUBECONFIG", cp.kubeconfig())
        .args(["get", "--raw", path])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run kubectl");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "kubectl get --raw {path}: {err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn scrape(cp: &e2e::ControlPlane, node: &str) -> Decoded {
    let text = raw(cp, &format!("/api/v1/nodes/{node}/proxy/metrics/resource")).await;
    decode::decode(&text).unwrap_or_else(|e| panic!("{node}: {e}\n{text}"))
}

/// A base port whose next port is free too (two nodes, two listeners).
fn two_free_ports() -> u16 {
    for _ in 0..64 {
        let p = e2e::free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

/// Cores from two counters (core-nanoseconds) and their timestamps (ms), as metrics-server
/// computes a rate.
fn rate(first: (u64, i64), second: (u64, i64)) -> f64 {
    let cpu = second.0.saturating_sub(first.0) as f64 / 1e9;
    let secs = (second.1 - first.1) as f64 / 1e3;
    cpu / secs
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= want * 1e-3
}

#[tokio::test(flavor = "multi_thread")]
async fn per_node_resource_metrics_and_stats_summary() {
    let cp = e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        ..e2e::Options::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    let base = two_free_ports();
    let mut config = common::config(&cp, PREFIX, 2);
    config.template.kubelet_port = i32::from(base);
    config.template.kubelet_port_per_node = true;
    config.kubelet.listen = Some(SocketAddr::from(([127, 0, 0, 1], base)));
    config.kubelet.client_ca_file = Some(cp.ca_file());
    let hollow = common::start(config).await;
    common::wait_nodes_ready(&client, PREFIX, 2, T).await;

    // Each Node advertises its own port.
    let nodes: Api<Node> = Api::all(client.clone());
    for (i, want) in [(0, base), (1, base + 1)] {
        let n = nodes.get(&format!("{PREFIX}-{i}")).await.expect("node");
        let port = n
            .status
            .and_then(|s| s.daemon_endpoints)
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port);
        assert_eq!(port, Some(i32::from(want)), "node {i}'s kubelet endpoint");
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let n0 = format!("{PREFIX}-0");
    let n1 = format!("{PREFIX}-1");
    for p in [
        pod("zero", &n0, &["app"], "cpu=250m,memory=300Mi"),
        pod(
            "one",
            &n1,
            &["app", "side"],
            "cpu=100m,memory=64Mi;side:cpu=20m,memory=16Mi",
        ),
    ] {
        pods.create(&PostParams::default(), &p)
            .await
            .expect("create pod");
    }
    for name in ["zero", "one"] {
        common::wait_pod(&pods, name, "Running", |p| common::phase(p) == "Running").await;
    }

    // metrics-server drops a container with no CPU time yet: wait until both nodes show theirs.
    let both = || async {
        let a = scrape(&cp, &n0).await;
        let b = scrape(&cp, &n1).await;
        let full = a.pods.len() == 1 && b.pods.len() == 1 && a.node.is_some() && b.node.is_some();
        Ok(full.then_some((a, b)))
    };
    let (a1, b1) = e2e::wait_for(T, "both nodes' pods in /metrics/resource", both)
        .await
        .expect("scrapes");
    // Later scrapes: the counters grew by exactly usage × time.
    let (a2, b2) = e2e::wait_for(T, "a later scrape", || async {
        let a = scrape(&cp, &n0).await;
        let b = scrape(&cp, &n1).await;
        let later = |x: &Decoded, y: &Decoded| {
            x.node.as_ref().map(|n| n.timestamp_ms) > y.node.as_ref().map(|n| n.timestamp_ms)
        };
        Ok((later(&a, &a1) && later(&b, &b1)).then_some((a, b)))
    })
    .await
    .expect("later scrapes");

    type Want = (&'static str, Vec<(&'static str, f64, u64)>, f64, u64);
    let cases: [(&str, &Decoded, &Decoded, Want); 2] = [
        (
            n0.as_str(),
            &a1,
            &a2,
            ("zero", vec![("app", 0.25, 300 * MI)], 0.35, 556 * MI),
        ),
        (
            n1.as_str(),
            &b1,
            &b2,
            (
                "one",
                vec![("app", 0.1, 64 * MI), ("side", 0.02, 16 * MI)],
                0.22,
                (256 + 80) * MI,
            ),
        ),
    ];
    for (node, first, second, (pod_name, containers, node_cores, node_mem)) in cases {
        let key = ("default".to_string(), pod_name.to_string());
        let names: Vec<&String> = second.pods.keys().map(|(_, p)| p).collect();
        assert_eq!(names, [pod_name], "{node} lists only its own pod");
        for (c, cores, mem) in containers {
            let p1 = &first.pods[&key][c];
            let p2 = &second.pods[&key][c];
            let got = rate(
                (p1.cpu_core_nanos, p1.timestamp_ms),
                (p2.cpu_core_nanos, p2.timestamp_ms),
            );
            assert!(
                close(got, cores),
                "{node} {pod_name}/{c}: {got} cores, want {cores}"
            );
            assert_eq!(p2.memory_bytes, mem, "{node} {pod_name}/{c} working set");
            assert!(
                p2.start_seconds.is_some_and(|s| s > 1e9),
                "{node} {c} start"
            );
        }
        let (f, s) = (
            first.node.clone().expect("node"),
            second.node.clone().expect("node"),
        );
        let got = rate(
            (f.cpu_core_nanos, f.timestamp_ms),
            (s.cpu_core_nanos, s.timestamp_ms),
        );
        assert!(
            close(got, node_cores),
            "{node}: {got} cores, want {node_cores}"
        );
        assert_eq!(s.memory_bytes, node_mem, "{node} working set");
    }

    // /stats/summary: the same numbers as JSON, CPU and memory only when asked.
    for (node, only) in [(&n0, true), (&n1, false)] {
        let q = if only {
            "?only_cpu_and_memory=true"
        } else {
            ""
        };
        let text = raw(&cp, &format!("/api/v1/nodes/{node}/proxy/stats/summary{q}")).await;
        let v: Value = serde_json::from_str(&text).expect("summary JSON");
        assert_eq!(v["node"]["nodeName"].as_str(), Some(node.as_str()));
        let (pod_name, cores, mem) = if only {
            ("zero", 350_000_000, 556 * MI)
        } else {
            ("one", 220_000_000, (256 + 80) * MI)
        };
        assert_eq!(
            v["node"]["cpu"]["usageNanoCores"].as_u64(),
            Some(cores),
            "{node}"
        );
        assert_eq!(
            v["node"]["memory"]["workingSetBytes"].as_u64(),
            Some(mem),
            "{node}"
        );
        assert!(
            v["node"]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
            "{node}"
        );
        assert_eq!(
            v["node"]["fs"].is_null(),
            only,
            "{node}: fs only in the full summary"
        );
        let pods = v["pods"].as_array().cloned().unwrap_or_default();
        let names: Vec<&str> = pods
            .iter()
            .filter_map(|p| p["podRef"]["name"].as_str())
            .collect();
        assert_eq!(names, [pod_name], "{node}: its own pods only");
    }

    // Directly on the kubelet ports: authorization and which pods each port knows.
    let proxy = common::account_with(&client, "proxy-only", &["nodes/proxy"]).await;
    let stats =
        common::account_with(&client, "stats-reader", &["nodes/metrics", "nodes/stats"]).await;
    let url = |port: u16, path: &str| format!("https://127.0.0.1:{port}{path}");
    for path in ["/metrics/resource", "/stats/summary"] {
        let (code, body) = e2e::process::curl_insecure(&url(base, path), Some(&proxy))
            .await
            .expect("curl");
        let sub = if path.starts_with("/metrics") {
            "metrics"
        } else {
            "stats"
        };
        assert_eq!(code, 403, "{path} with nodes/proxy only: {body}");
        assert!(body.contains(&format!("subresource={sub}")), "{body}");
        let (code, body) = e2e::process::curl_insecure(&url(base + 1, path), Some(&stats))
            .await
            .expect("curl");
        assert_eq!(code, 200, "{path} with nodes/{sub}: {body}");
        assert!(
            body.contains("one") && !body.contains("zero"),
            "{path} on node 1: {body}"
        );
    }
    // Node 1's port does not know node 0's pod, as a kubelet would not; node 0's does.
    let logs = "/containerLogs/default/zero/app";
    let (code, body) = e2e::process::curl_insecure(&url(base + 1, logs), Some(&proxy))
        .await
        .expect("curl");
    assert_eq!(code, 404, "another node's pod: {body}");
    let (code, body) = e2e::process::curl_insecure(&url(base, logs), Some(&proxy))
        .await
        .expect("curl");
    assert_eq!(code, 200, "its own pod: {body}");

    hollow.stop().await;
}
