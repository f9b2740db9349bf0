//! Shutdown order: with `delete_nodes_on_exit`, stopping removes every Node and Lease of the
//! prefix and nothing brings one back. The stop comes while the process is busy re-creating a
//! Node and a Lease deleted under it and renewing Leases every second, which is when an old
//! order (delete first, stop the queue after) let its own work re-register them.

mod common;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

const PREFIX: &str = "hn-bye";
const NODES: usize = 50;

fn ours(name: Option<&str>) -> bool {
    name.is_some_and(|n| n.starts_with(&format!("{PREFIX}-")))
}

/// Names of our Leases and the list's resourceVersion.
async fn our_leases(api: &Api<Lease>) -> (Vec<String>, String) {
    let list = api.list(&ListParams::default()).await.expect("leases");
    let names = list
        .items
        .iter()
        .filter_map(|l| l.metadata.name.clone())
        .filter(|n| ours(Some(n)))
        .collect();
    (names, list.metadata.resource_version.unwrap_or_default())
}

/// Watches `api` from `rv` for `window`: the names of ours that were added or modified.
async fn reappeared<K>(api: &Api<K>, rv: &str, window: Duration) -> Vec<String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let wp = WatchParams::default().timeout(window.as_secs() as u32 + 30);
    let stream = api.watch(&wp, rv).await.expect("watch");
    let mut stream = std::pin::pin!(stream);
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, stream.next()).await {
        match ev.expect("watch event") {
            WatchEvent::Added(o) | WatchEvent::Modified(o) if ours(o.meta().name.as_deref()) => {
                seen.push(o.meta().name.clone().unwrap_or_default());
            }
            WatchEvent::Error(e) => panic!("watch failed: {e:?}"),
            _ => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_deletes_nodes_and_leases_and_none_reappears() {
    let cp = e2e::ControlPlane::start(e2e::Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    let mut cfg = common::config(&cp, PREFIX, NODES);
    cfg.delete_nodes_on_exit = true;
    // Renewals and status writes every second: the queue is always busy.
    cfg.lease.duration = Duration::from_secs(5);
    cfg.lease.renew_interval = Duration::from_secs(1);
    cfg.node_status_refresh = Duration::from_secs(1);
    let lease_duration = cfg.lease.duration;
    let hollow = common::start(cfg).await;
    common::wait_nodes_ready(&client, PREFIX, NODES, Duration::from_secs(60)).await;

    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    assert_eq!(our_leases(&leases).await.0.len(), NODES, "a Lease per node");
    // Pull a Node and a Lease from under it: its own work now wants to re-create them.
    let gone = format!("{PREFIX}-0");
    nodes
        .delete(&gone, &Default::default())
        .await
        .expect("delete node");
    leases
        .delete(&format!("{PREFIX}-1"), &Default::default())
        .await
        .expect("delete lease");
    // Stop as soon as the process has noticed (its annotation watch queues the Node's
    // re-registration a second after the deletion).
    let mut w = std::pin::pin!(
        nodes
            .watch(
                &WatchParams::default().fields(&format!("metadata.name={gone}")),
                "0"
            )
            .await
            .expect("watch node")
    );
    let back = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = w.next().await {
            if let Ok(WatchEvent::Added(_)) = ev {
                return;
            }
        }
    })
    .await;
    assert!(
        back.is_ok(),
        "the hollow node re-registered the node it lost"
    );
    hollow.stop().await;

    let selector = format!("mock-kind.io/hollow-node={PREFIX}");
    let left = nodes
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("nodes");
    let left_nodes: Vec<_> = left
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert!(
        left_nodes.is_empty(),
        "nodes left after stop: {left_nodes:?}"
    );
    let node_rv = left.metadata.resource_version.unwrap_or_default();
    let (left_leases, lease_rv) = our_leases(&leases).await;
    assert!(
        left_leases.is_empty(),
        "leases left after stop: {left_leases:?}"
    );

    // Three lease periods, watched from the empty lists: nothing of ours comes back.
    let window = lease_duration * 3;
    let (n, l) = tokio::join!(
        reappeared(&nodes, &node_rv, window),
        reappeared(&leases, &lease_rv, window)
    );
    assert!(n.is_empty(), "nodes re-created after stop: {n:?}");
    assert!(l.is_empty(), "leases re-created after stop: {l:?}");
}
