//! Restart after a graceful stop (the shutdown token, nodes kept): the second process adopts the
//! same Node objects and its settled pods without writing to them at all (same resourceVersion,
//! same IP), hands out no IP twice to pods created after it, and `delete_nodes_on_exit` then
//! removes the nodes. SIGKILL in the middle of a ramp is `kill9.rs`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread")]
async fn graceful_restart_adopts_without_rewriting_then_delete_on_exit_cleans_up() {
    let cp = e2e::ControlPlane::start(e2e::Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    let cfg = common::config(&cp, "hn-restart", 3);
    let first = common::start(cfg.clone()).await;
    common::wait_nodes_ready(&client, "hn-restart", 3, Duration::from_secs(60)).await;
    common::create_namespace(&client, "adopt").await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "adopt");
    deploys
        .create(&Default::default(), &common::deployment("web", 30))
        .await
        .expect("deployment");
    let before =
        common::wait_running(&client, "adopt", "app=web", 30, Duration::from_secs(90)).await;
    let versions: BTreeMap<String, String> = before
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect();
    let ips_before = common::ips(&before);
    first.stop().await;

    let nodes: Api<Node> = Api::all(client.clone());
    let uids_before: HashSet<String> = nodes
        .list(&ListParams::default().labels("mock-kind.io/hollow-node=hn-restart"))
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.uid)
        .collect();
    assert_eq!(uids_before.len(), 3, "nodes kept on a plain stop");

    let mut cfg2 = cfg.clone();
    cfg2.listen = std::net::SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    cfg2.delete_nodes_on_exit = true;
    let second = common::start(cfg2).await;
    // New pods after the restart get fresh, distinct IPs.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 60}})),
        )
        .await
        .expect("scale up");
    let after =
        common::wait_running(&client, "adopt", "app=web", 60, Duration::from_secs(90)).await;
    let ips_after = common::ips(&after);
    for (name, ip) in &ips_before {
        assert_eq!(ips_after.get(name), Some(ip), "pod {name} kept its IP");
    }
    let unique: HashSet<&String> = ips_after.values().collect();
    assert_eq!(unique.len(), 60, "no IP handed out twice: {ips_after:?}");
    // The adopted pods were not rewritten at all: same resourceVersion, so never Pending.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "adopt");
    for (name, rv) in &versions {
        let p = pods.get(name).await.expect("pod");
        assert_eq!(
            p.metadata.resource_version.as_ref(),
            Some(rv),
            "pod {name} untouched by the restart"
        );
    }
    let uids_after: HashSet<String> = nodes
        .list(&ListParams::default().labels("mock-kind.io/hollow-node=hn-restart"))
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.uid)
        .collect();
    assert_eq!(
        uids_after, uids_before,
        "the same Node objects were adopted"
    );

    second.stop().await;
    let left = nodes
        .list(&ListParams::default().labels("mock-kind.io/hollow-node=hn-restart"))
        .await
        .expect("nodes")
        .items
        .len();
    assert_eq!(left, 0, "--delete-nodes-on-exit removed the nodes");
}
