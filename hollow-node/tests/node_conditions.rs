//! Node pressure and version on the real node-lifecycle controller: `mock-kind.io/health:
//! MemoryPressure,DiskPressure` keeps the node Ready and reports the pressure conditions with
//! the kubelet's reasons; the controller taints the node `memory-pressure` and `disk-pressure`
//! (NoSchedule) and removes the taints when the annotation goes. The nodes report the
//! apiserver's version as kubeletVersion and kubeProxyVersion.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == "NoSchedule"))
}

fn condition(node: &Node, type_: &str) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn wait_node<F: Fn(&Node) -> bool>(
    api: &Api<Node>,
    name: &str,
    what: &str,
    check: F,
) -> Node {
    let check = &check;
    e2e::wait_for(
        Duration::from_secs(60),
        &format!("node {name}: {what}"),
        || async move {
            let n = api.get(name).await?;
            Ok(check(&n).then_some(n))
        },
    )
    .await
    .expect(what)
}

async fn annotate(api: &Api<Node>, name: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {"mock-kind.io/health": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate node");
}

#[tokio::test(flavor = "multi_thread")]
async fn pressure_taints_and_version() {
    let cp = e2e::ControlPlane::start(e2e::Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    let hollow = common::start(common::config(&cp, "hn-press", 2)).await;
    common::wait_nodes_ready(&client, "hn-press", 2, Duration::from_secs(60)).await;
    let nodes: Api<Node> = Api::all(client.clone());

    let version = client
        .apiserver_version()
        .await
        .expect("version")
        .git_version;
    let node = nodes.get("hn-press-0").await.expect("node");
    let info = node
        .status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .expect("nodeInfo");
    assert_eq!(info.kubelet_version, version);
    assert_eq!(info.kube_proxy_version, version);

    annotate(&nodes, "hn-press-0", Some("MemoryPressure,DiskPressure")).await;
    let node = wait_node(&nodes, "hn-press-0", "pressure taints", |n| {
        has_taint(n, "node.kubernetes.io/memory-pressure")
            && has_taint(n, "node.kubernetes.io/disk-pressure")
    })
    .await;
    let cases = [
        ("MemoryPressure", "True", "KubeletHasInsufficientMemory"),
        ("DiskPressure", "True", "KubeletHasDiskPressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ("Ready", "True", "KubeletReady"),
    ];
    for (type_, status, reason) in cases {
        assert_eq!(
            condition(&node, type_),
            Some((status.to_string(), reason.to_string())),
            "{type_}"
        );
    }
    assert!(!has_taint(&node, "node.kubernetes.io/pid-pressure"));
    assert!(
        !common::not_ready_taint(&node),
        "a node under pressure stays Ready"
    );
    let other = nodes.get("hn-press-1").await.expect("node 1");
    assert!(!has_taint(&other, "node.kubernetes.io/memory-pressure"));

    annotate(&nodes, "hn-press-0", None).await;
    wait_node(&nodes, "hn-press-0", "pressure taints removed", |n| {
        !has_taint(n, "node.kubernetes.io/memory-pressure")
            && !has_taint(n, "node.kubernetes.io/disk-pressure")
            && condition(n, "MemoryPressure").is_some_and(|c| c.0 == "False")
    })
    .await;

    hollow.stop().await;
}
