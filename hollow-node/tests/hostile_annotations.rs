//! Hostile annotations stop nothing: 40 pods whose lifecycle annotations are absurd (a
//! `delayRunning` of 20,000 hours used to panic the queue dispatcher and turn every node of the
//! process NotReady; overflowing numbers, negative and zero durations, bad booleans) each get a
//! Warning Event and run as if the annotation were absent, and 100 normal pods created after them
//! all run, on a process with only 4 pod slots, whose `/healthz` stays ok.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;

const HOSTILE: [(&str, &str); 8] = [
    ("mock-kind.io/delayRunning", "20000h"),
    ("mock-kind.io/delayRunning", "99999999999999999999h"),
    ("zhizuqiu.github.com/delayRunning", "1e308s"),
    ("mock-kind.io/delaySucceeded", "-1s"),
    ("mock-kind.io/delayFailed", "184467440737095516160"),
    ("mock-kind.io/crashLoop", "0s"),
    ("mock-kind.io/crashLoop", "721h"),
    ("mock-kind.io/neverReady", "yes"),
];

fn hostile_pod(i: usize) -> Pod {
    let (key, value) = HOSTILE[i % HOSTILE.len()];
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("hostile-{i}"),
            "labels": {"app": "hostile"},
            "annotations": {key: value},
        },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "busybox"}],
        },
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_annotations_stop_nothing() {
    let cp = e2e::ControlPlane::start(e2e::Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    let mut cfg = common::config(&cp, "hn-hostile", 3);
    // 2 node slots and 2 pod slots: a slot lost to any hostile pod would show at once.
    cfg.workers = 4;
    let hollow = common::start(cfg).await;
    common::wait_nodes_ready(&client, "hn-hostile", 3, Duration::from_secs(60)).await;
    common::create_namespace(&client, "hostile").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "hostile");
    for i in 0..40 {
        pods.create(&Default::default(), &hostile_pod(i))
            .await
            .expect("create hostile pod");
    }
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "hostile");
    deploys
        .create(&Default::default(), &common::deployment("normal", 100))
        .await
        .expect("deployment");

    common::wait_running(
        &client,
        "hostile",
        "app=normal",
        100,
        Duration::from_secs(180),
    )
    .await;
    // The annotation is ignored, so each hostile pod runs as a plain pod would.
    common::wait_running(
        &client,
        "hostile",
        "app=hostile",
        40,
        Duration::from_secs(60),
    )
    .await;

    let events: Api<Event> = Api::namespaced(client.clone(), "hostile");
    let warned = e2e::wait_for(
        Duration::from_secs(60),
        "an InvalidAnnotation Warning for every hostile pod",
        || async {
            let list = events.list(&ListParams::default()).await?;
            let named: BTreeSet<String> = list
                .items
                .into_iter()
                .filter(|e| {
                    e.reason.as_deref() == Some("InvalidAnnotation")
                        && e.type_.as_deref() == Some("Warning")
                })
                .filter_map(|e| e.involved_object.name)
                .collect();
            Ok((named.len() == 40).then_some(named))
        },
    )
    .await
    .expect("warnings");
    assert!(
        warned.iter().all(|n| n.starts_with("hostile-")),
        "{warned:?}"
    );

    let (status, body) = common::get(hollow.addr, "/healthz").await;
    assert_eq!(status, 200, "/healthz: {body}");
    let (_, metrics) = common::get(hollow.addr, "/metrics").await;
    assert_eq!(
        common::metric(&metrics, "hollow_node_handler_panics_total"),
        Some(0.0),
        "no handler panicked"
    );
    assert!(
        common::metric(&metrics, "hollow_node_invalid_annotations_total").unwrap_or(0.0) >= 40.0,
        "every hostile pod counted"
    );
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default().labels("mock-kind.io/hollow-node=hn-hostile"))
        .await
        .expect("nodes");
    assert!(
        list.items.iter().all(common::ready),
        "every node still Ready"
    );
    hollow.stop().await;
}
