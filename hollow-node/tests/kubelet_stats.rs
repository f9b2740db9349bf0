//! Each node's own kubelet port (`--kubelet-port-per-node`) through the real apiserver with
//! the real kubectl: `kubectl get --raw /api/v1/nodes/<node>/proxy/metrics/resource` and
//! `…/proxy/stats/summary` give, for two nodes, each only its own pods with the usage their
//! annotations say (the CPU rate read from two scrapes as metrics-server reads it), the node
//! the sum plus the overhead; the Nodes advertise the ports that answer; a node's port knows
//! none of another node's pods; a caller without `nodes/metrics` or `nodes/stats` gets 403.
//! `…/proxy/metrics/cadvisor` gives the same usage as cAdvisor's series of each container, its
//! pod's cgroup and the node's root, labelled with the pod's status (container ID, image) and
//! the machine's capacity; `…/proxy/metrics` names the node and counts its pods and containers.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use hollow_node::kubelet::decode::{self, Decoded, Series};
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

/// Every sample of a node's Prometheus answer at `path` (`metrics/cadvisor`, `metrics`).
async fn samples(cp: &e2e::ControlPlane, node: &str, path: &str) -> Vec<Series> {
    let text = raw(cp, &format!("/api/v1/nodes/{node}/proxy/{path}")).await;
    decode::samples(&text).unwrap_or_else(|e| panic!("{node} {path}: {e}\n{text}"))
}

/// The one sample of family `name` whose labels include `labels`.
fn one<'a>(all: &'a [Series], name: &str, labels: &[(&str, &str)]) -> &'a Series {
    let found: Vec<&Series> = all
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
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

    // /metrics/cadvisor: the same usage as cAdvisor's series of each container, of its pod's
    // cgroup and of the node's root cgroup, labelled from the pod's status.
    type Cadvisor = (&'static str, Vec<(&'static str, f64, u64)>, f64, u64);
    let cases: [(&str, Cadvisor); 2] = [
        (
            n0.as_str(),
            ("zero", vec![("app", 0.25, 300 * MI)], 0.35, 556 * MI),
        ),
        (
            n1.as_str(),
            (
                "one",
                vec![("app", 0.1, 64 * MI), ("side", 0.02, 16 * MI)],
                0.22,
                (256 + 80) * MI,
            ),
        ),
    ];
    for (node, (pod_name, containers, node_cores, node_mem)) in cases {
        let p = pods.get(pod_name).await.expect("pod");
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let statuses = p
            .status
            .clone()
            .and_then(|s| s.container_statuses)
            .unwrap_or_default();
        let first = samples(&cp, node, "metrics/cadvisor").await;
        let cpu = |all: &[Series], labels: &[(&str, &str)]| {
            let s = one(all, "container_cpu_usage_seconds_total", labels);
            assert_eq!(s.label("cpu"), "total", "{node} {labels:?}");
            (
                (s.value * 1e9) as u64,
                s.timestamp_ms.expect("a CPU sample's timestamp"),
            )
        };
        let root: &[(&str, &str)] = &[("id", "/")];
        let t0 = cpu(&first, root).1;
        let second = e2e::wait_for(T, "a later /metrics/cadvisor", || async {
            let s = samples(&cp, node, "metrics/cadvisor").await;
            Ok((cpu(&s, root).1 > t0).then_some(s))
        })
        .await
        .expect("a later scrape");
        let pod_cgroup = format!("/kubepods/besteffort/pod{uid}");
        let mut pod_mem = 0;
        for &(c, cores, mem) in &containers {
            let status = statuses.iter().find(|s| s.name == c).expect("status");
            let cid = status
                .container_id
                .as_deref()
                .and_then(|id| id.strip_prefix("containerd://"))
                .expect("a containerd ID");
            let id = format!("{pod_cgroup}/{cid}");
            let labels = [
                ("namespace", "default"),
                ("pod", pod_name),
                ("container", c),
                ("id", id.as_str()),
                ("name", cid),
                ("image", status.image.as_str()),
            ];
            let got = rate(cpu(&first, &labels), cpu(&second, &labels));
            assert!(close(got, cores), "{node} {c}: {got} cores, want {cores}");
            for family in [
                "container_memory_working_set_bytes",
                "container_memory_usage_bytes",
                "container_memory_rss",
            ] {
                let v = one(&second, family, &labels).value;
                assert_eq!(v as u64, mem, "{node} {c} {family}");
            }
            let started = status
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.as_ref())
                .map(|t| t.0.as_second());
            let start = one(&second, "container_start_time_seconds", &labels);
            assert_eq!(Some(start.value as i64), started, "{node} {c} start");
            pod_mem += mem;
        }
        let pod_labels = [
            ("namespace", "default"),
            ("pod", pod_name),
            ("container", ""),
            ("id", pod_cgroup.as_str()),
            ("image", ""),
        ];
        let pod_cores: f64 = containers.iter().map(|c| c.1).sum();
        let got = rate(cpu(&first, &pod_labels), cpu(&second, &pod_labels));
        assert!(
            close(got, pod_cores),
            "{node} pod {pod_name}: {got} cores, want {pod_cores}"
        );
        let ws = one(&second, "container_memory_working_set_bytes", &pod_labels);
        assert_eq!(
            ws.value as u64, pod_mem,
            "{node} pod {pod_name} working set"
        );
        let got = rate(cpu(&first, root), cpu(&second, root));
        assert!(close(got, node_cores), "{node} root: {got} cores");
        let ws = one(&second, "container_memory_working_set_bytes", root);
        assert_eq!(ws.value as u64, node_mem, "{node} root working set");
        let others: Vec<&str> = second
            .iter()
            .map(|s| s.label("pod"))
            .filter(|p| !p.is_empty() && *p != pod_name)
            .collect();
        assert!(others.is_empty(), "{node}: other pods {others:?}");
        // The machine is the Node's capacity (4 CPUs, 16Gi), labelled with its nodeInfo IDs.
        let n = nodes.get(node).await.expect("node");
        let info = n.status.and_then(|s| s.node_info).expect("nodeInfo");
        let ids = [
            ("machine_id", info.machine_id.as_str()),
            ("system_uuid", info.system_uuid.as_str()),
            ("boot_id", info.boot_id.as_str()),
        ];
        assert_eq!(one(&second, "machine_cpu_cores", &ids).value, 4.0);
        assert_eq!(
            one(&second, "machine_memory_bytes", &ids).value as u64,
            16 << 30
        );

        // /metrics: the kubelet's own, for the same node.
        let own = samples(&cp, node, "metrics").await;
        assert_eq!(one(&own, "kubelet_node_name", &[("node", node)]).value, 1.0);
        assert_eq!(one(&own, "kubelet_running_pods", &[]).value, 1.0, "{node}");
        let running = one(
            &own,
            "kubelet_running_containers",
            &[("container_state", "running")],
        );
        assert_eq!(running.value as usize, containers.len(), "{node}");
    }

    // Directly on the kubelet ports: authorization and which pods each port knows.
    let proxy = common::account_with(&client, "proxy-only", &["nodes/proxy"]).await;
    let stats =
        common::account_with(&client, "stats-reader", &["nodes/metrics", "nodes/stats"]).await;
    let url = |port: u16, path: &str| format!("https://127.0.0.1:{port}{path}");
    for path in ["/metrics/resource", "/metrics/cadvisor", "/stats/summary"] {
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
    let (code, body) = e2e::process::curl_insecure(&url(base, "/metrics"), Some(&proxy))
        .await
        .expect("curl");
    assert_eq!(code, 403, "/metrics with nodes/proxy only: {body}");
    assert!(body.contains("subresource=metrics"), "{body}");
    let (code, body) = e2e::process::curl_insecure(&url(base + 1, "/metrics"), Some(&stats))
        .await
        .expect("curl");
    assert_eq!(code, 200, "/metrics with nodes/metrics: {body}");
    assert!(
        body.contains(&format!("kubelet_node_name{{node=\"{n1}\"}} 1")),
        "{body}"
    );
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
