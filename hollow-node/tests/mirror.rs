//! `mock-kind-mirror` against the harness's own cluster: twelve Nodes of three shapes created
//! with `kubectl create -f` (per-node host names, provider IDs, addresses, an instance-id label,
//! a lifecycle taint) become three pools with the right counts, zones, taints and capacity and
//! nothing that names a node; a `kubectl get nodes -o yaml` recording mirrors the same; the
//! `--output-dir` files apply with `kubectl apply -k` against the real CRD, scaled ×10.

mod common;

use std::process::Output;

use hollow_node::pool::HollowNodePool;
use kube::api::Api;
use serde_json::{Value, json};

/// (name, zone, instance type, cpu, extra labels, taints, extended resources)
type NodeSpec = (
    String,
    &'static str,
    &'static str,
    &'static str,
    Value,
    Value,
    Value,
);

fn node((name, zone, itype, cpu, labels, taints, extended): NodeSpec, i: usize) -> Value {
    let mut l = json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": itype,
        "topology.kubernetes.io/zone": zone,
        "alpha.eksctl.io/instance-id": format!("i-{i:08x}"),
    });
    if let (Some(l), Some(extra)) = (l.as_object_mut(), labels.as_object()) {
        l.extend(extra.clone());
    }
    let mut capacity = json!({"cpu": cpu, "memory": "16Gi", "pods": "110"});
    if let (Some(c), Some(extra)) = (capacity.as_object_mut(), extended.as_object()) {
        c.extend(extra.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": l},
        "spec": {"providerID": format!("aws:///{zone}/i-{i:08x}"), "taints": taints},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": format!("10.0.0.{i}")}],
            "nodeInfo": {
                "machineID": format!("m{i}"), "systemUUID": format!("u{i}"), "bootID": format!("b{i}"),
                "kernelVersion": "5.10", "osImage": "Amazon Linux 2", "containerRuntimeVersion": "containerd://1.6",
                "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux", "architecture": "amd64"
            }
        }
    })
}

fn nodes() -> Value {
    let zones = ["zone-a", "zone-b", "zone-c"];
    let mut specs: Vec<NodeSpec> = Vec::new();
    for i in 0..6 {
        specs.push((
            format!("ip-10-0-1-{i}.ec2.internal"),
            zones[i % 3],
            "m5.xlarge",
            "4",
            json!({"eks.amazonaws.com/nodegroup": "workers"}),
            json!([]),
            json!({}),
        ));
    }
    for i in 0..3 {
        specs.push((
            format!("ip-10-0-2-{i}.ec2.internal"),
            "zone-a",
            "m5.2xlarge",
            "8",
            json!({"node-role.kubernetes.io/infra": ""}),
            json!([
                {"key": "node-role.kubernetes.io/infra", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}
            ]),
            json!({}),
        ));
    }
    for (i, zone) in zones.iter().enumerate() {
        specs.push((
            format!("ip-10-0-3-{i}.ec2.internal"),
            zone,
            "p4d.24xlarge",
            "96",
            json!({}),
            json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]),
            json!({"nvidia.com/gpu": "8"}),
        ));
    }
    let items: Vec<Value> = specs
        .into_iter()
        .enumerate()
        .map(|(i, s)| node(s, i))
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

async fn mirror(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-kind-mirror"))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run mock-kind-mirror")
}

fn pools(stdout: &[u8]) -> Vec<HollowNodePool> {
    let text = String::from_utf8_lossy(stdout);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a HollowNodePool"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_the_harness_cluster() {
    let cp = common::apiserver_only().await;
    let dir = cp.dir().join("mirror");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("nodes.json");
    std::fs::write(&file, nodes().to_string()).expect("write nodes");
    let path = file.display().to_string();
    let o = common::kubectl(&cp, &["create", "-f", &path]).await;
    assert!(
        o.status.success(),
        "create nodes: {}",
        common::output_text(&o)
    );

    let kubeconfig = cp.kubeconfig().display().to_string();
    let o = mirror(&["--kubeconfig", &kubeconfig]).await;
    assert!(o.status.success(), "mirror: {}", common::output_text(&o));
    let live = pools(&o.stdout);
    let summary: Vec<String> = live
        .iter()
        .map(|p| {
            let t = &p.spec.template;
            format!(
                "{} x{} zones={} cpu={} gpu={} taints={}",
                p.name(),
                p.spec.replicas,
                t.zones.join(","),
                t.capacity.get("cpu").map(String::as_str).unwrap_or("-"),
                t.capacity
                    .get("nvidia.com/gpu")
                    .map(String::as_str)
                    .unwrap_or("-"),
                t.taints
                    .iter()
                    .map(|t| t.key.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "infra x3 zones=zone-a cpu=8 gpu=- taints=node-role.kubernetes.io/infra",
            "p4d-24xlarge x3 zones=zone-a,zone-b,zone-c cpu=96 gpu=8 taints=nvidia.com/gpu",
            "workers x6 zones=zone-a,zone-b,zone-c cpu=4 gpu=- taints=",
        ],
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let yaml = String::from_utf8_lossy(&o.stdout);
    for identity in ["ip-10-0", "i-0000", "aws://", "10.0.0.", "hostname"] {
        assert!(!yaml.contains(identity), "{identity} copied:\n{yaml}");
    }

    // A recording of the same cluster mirrors the same.
    let o = common::kubectl(&cp, &["get", "nodes", "-o", "yaml"]).await;
    assert!(o.status.success(), "get nodes: {}", common::output_text(&o));
    let recording = dir.join("recorded.yaml");
    std::fs::write(&recording, &o.stdout).expect("write recording");
    let o = mirror(&["--from-file", &recording.display().to_string()]).await;
    assert!(
        o.status.success(),
        "mirror --from-file: {}",
        common::output_text(&o)
    );
    assert_eq!(pools(&o.stdout), live, "recording and cluster mirror alike");

    // Kustomize output, ten times the nodes, applied against the CRD.
    common::install_crd(&cp).await;
    let out = dir.join("pools");
    let out_s = out.display().to_string();
    let o = mirror(&[
        "--kubeconfig",
        &kubeconfig,
        "--scale",
        "10",
        "--output-dir",
        &out_s,
    ])
    .await;
    assert!(
        o.status.success(),
        "mirror --output-dir: {}",
        common::output_text(&o)
    );
    let o = common::kubectl(&cp, &["apply", "-k", &out_s]).await;
    assert!(o.status.success(), "apply -k: {}", common::output_text(&o));
    let api: Api<HollowNodePool> = Api::all(cp.client());
    let stored = api.list(&Default::default()).await.expect("list pools");
    let counts: Vec<(String, i64)> = stored
        .items
        .iter()
        .map(|p| (p.name().to_string(), p.spec.replicas))
        .collect();
    assert_eq!(
        counts,
        [
            ("infra".to_string(), 30),
            ("p4d-24xlarge".to_string(), 30),
            ("workers".to_string(), 60)
        ]
    );
    let o = mirror(&["--kubeconfig", &kubeconfig, "--scale", "0"]).await;
    assert!(!o.status.success(), "scale 0 accepted");
    assert!(
        common::output_text(&o).contains("--scale 0"),
        "{}",
        common::output_text(&o)
    );
}
