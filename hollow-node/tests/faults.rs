//! Node faults: the `mock-kind.io/health: NotReady` annotation and the unhealthy-after schedule
//! stop the Lease and report Ready=False; the real node-lifecycle controller taints the node;
//! when the fault ends the node is Ready again and the taint goes.

mod common;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == effect))
}

async fn wait_node<F: Fn(&Node) -> bool>(api: &Api<Node>, name: &str, what: &str, check: F) {
    let check = &check;
    e2e::wait_for(
        Duration::from_secs(90),
        &format!("node {name}: {what}"),
        || async move {
            let n = api.get(name).await?;
            Ok(check(&n).then_some(()))
        },
    )
    .await
    .expect(what)
}

async fn renew_time(client: &kube::Client, name: &str) -> Option<i64> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    leases
        .get(name)
        .await
        .ok()?
        .spec?
        .renew_time
        .map(|t| t.0.as_millisecond())
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_make_nodes_not_ready_and_tainted() {
    let cp = e2e::ControlPlane::start(e2e::Options {
        node_monitor_grace_period: Some(Duration::from_secs(20)),
        ..Default::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    let mut cfg = common::config(&cp, "hn-fault", 2);
    cfg.lease.renew_interval = Duration::from_secs(2);
    cfg.lease.duration = Duration::from_secs(8);
    let hollow = common::start(cfg).await;
    common::wait_nodes_ready(&client, "hn-fault", 2, Duration::from_secs(60)).await;

    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            "hn-fault-0",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mock-kind.io/health": "NotReady"}}}),
            ),
        )
        .await
        .expect("annotate");
    wait_node(
        &nodes,
        "hn-fault-0",
        "Ready=False and tainted NoExecute by the controller",
        |n| {
            common::ready_status(n) == "False"
                && has_taint(n, "node.kubernetes.io/not-ready", "NoExecute")
        },
    )
    .await;
    // The lease is no longer renewed (renewals every 2 s otherwise).
    let before = renew_time(&client, "hn-fault-0").await;
    let healthy_before = renew_time(&client, "hn-fault-1").await;
    e2e::wait_for(
        Duration::from_secs(20),
        "healthy node's lease renewed",
        || async { Ok((renew_time(&client, "hn-fault-1").await > healthy_before).then_some(())) },
    )
    .await
    .expect("healthy lease renewed");
    e2e::wait_for(
        Duration::from_secs(20),
        "another renewal of the healthy lease",
        || async {
            Ok(
                (renew_time(&client, "hn-fault-1").await > healthy_before.map(|t| t + 2500))
                    .then_some(()),
            )
        },
    )
    .await
    .expect("healthy lease renewed twice");
    assert_eq!(
        renew_time(&client, "hn-fault-0").await,
        before,
        "faulty node's lease stays still"
    );
    let other = nodes.get("hn-fault-1").await.expect("node 1");
    assert_eq!(
        common::ready_status(&other),
        "True",
        "only the annotated node is affected"
    );

    // Heal.
    nodes
        .patch(
            "hn-fault-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"mock-kind.io/health": null}}})),
        )
        .await
        .expect("remove annotation");
    wait_node(&nodes, "hn-fault-0", "Ready again, taint removed", |n| {
        common::ready_status(n) == "True" && !common::not_ready_taint(n)
    })
    .await;

    // A second process whose single node fails 5 s after start, for 25 s: the fault comes and
    // goes by itself.
    let mut sched = common::config(&cp, "hn-sched", 1);
    sched.faults.unhealthy_after = Duration::from_secs(5);
    sched.faults.unhealthy_duration = Duration::from_secs(25);
    let scheduled = common::start(sched).await;
    wait_node(
        &nodes,
        "hn-sched-0",
        "scheduled fault: NotReady and tainted",
        |n| {
            common::ready_status(n) == "False"
                && has_taint(n, "node.kubernetes.io/not-ready", "NoExecute")
        },
    )
    .await;
    wait_node(&nodes, "hn-sched-0", "scheduled fault over", |n| {
        common::ready_status(n) == "True" && !common::not_ready_taint(n)
    })
    .await;

    scheduled.stop().await;
    hollow.stop().await;
}
