//! 50 hollow nodes become Ready (the controller-manager lifts the not-ready taint), a
//! Deployment of 500 pods runs on them with unique pod IPs, and scaled-down pods go away.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread")]
async fn fifty_nodes_and_five_hundred_pods() {
    let cp = e2e::ControlPlane::start(e2e::Options {
        client_qps: 300,
        ..Default::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    let hollow = common::start(common::config(&cp, "hn-e2e", 50)).await;
    common::wait_nodes_ready(&client, "hn-e2e", 50, Duration::from_secs(90)).await;

    let (_, metrics) = common::get(hollow.addr, "/metrics").await;
    assert_eq!(
        common::metric(&metrics, "hollow_node_nodes_managed "),
        Some(50.0),
        "{metrics}"
    );
    assert_eq!(
        common::metric(&metrics, "hollow_node_nodes_ready "),
        Some(50.0),
        "{metrics}"
    );

    common::create_namespace(&client, "scale").await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "scale");
    deploys
        .create(&Default::default(), &common::deployment("web", 500))
        .await
        .expect("create deployment");
    let pods =
        common::wait_running(&client, "scale", "app=web", 500, Duration::from_secs(180)).await;
    let ips: HashSet<String> = common::ips(&pods).into_values().collect();
    assert_eq!(ips.len(), 500, "pod IPs are unique");
    assert!(
        ips.iter().all(|ip| ip.starts_with("10.")),
        "pod IPs from the cluster CIDR"
    );
    for p in &pods {
        let st = p.status.as_ref().expect("status");
        assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        assert!(
            node.starts_with("hn-e2e-"),
            "scheduled on a hollow node: {node}"
        );
        let cs = st.container_statuses.as_ref().expect("container statuses");
        assert!(cs[0].ready && cs[0].started == Some(true));
        assert!(
            cs[0]
                .container_id
                .as_deref()
                .is_some_and(|id| id.starts_with("containerd://"))
        );
    }
    let (_, metrics) = common::get(hollow.addr, "/metrics").await;
    assert!(
        common::metric(&metrics, "hollow_node_pods{phase=\"Running\"}").is_some_and(|v| v >= 500.0),
        "{metrics}"
    );
    assert!(
        common::metric(&metrics, "hollow_node_bind_to_running_seconds_count")
            .is_some_and(|v| v >= 500.0),
        "{metrics}"
    );

    // Scale down: the Deployment controller deletes 450 pods; the kubelet-alike terminates
    // and deletes them with grace period 0.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 50}})),
        )
        .await
        .expect("scale down");
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "scale");
    e2e::wait_for(Duration::from_secs(120), "scaled-down pods gone", || {
        let api = pods_api.clone();
        async move {
            let n = api
                .list(&ListParams::default().labels("app=web"))
                .await?
                .items
                .len();
            Ok((n == 50).then_some(()))
        }
    })
    .await
    .expect("pods deleted");
    hollow.stop().await;
}
