//! Lease renewals through the real apiserver: protobuf PUTs on the last resourceVersion, as the
//! kubelet sends them, that keep every Lease fresh and its owner; a write by someone else makes
//! the next PUT conflict, and that Lease is renewed with merge patches from then on, which keep
//! what the other writer put there.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};

const NODES: usize = 3;

fn renew_time(lease: &Lease) -> Option<k8s_openapi::jiff::Timestamp> {
    lease.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

async fn lease_requests(h: &Hollow, verb: &str, code: &str) -> f64 {
    common::lease_requests(h.addr, &[verb], code).await
}

#[tokio::test(flavor = "multi_thread")]
async fn renewals_are_protobuf_puts_and_survive_a_conflict() {
    let cp = e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        ..Default::default()
    })
    .await
    .expect("control plane");
    let mut config = config(&cp, "lease", NODES);
    config.lease.renew_interval = Duration::from_secs(1);
    config.lease.duration = Duration::from_secs(40);
    let hollow = start(config).await;
    let client = cp.client();
    wait_nodes_ready(&client, "lease", NODES, Duration::from_secs(60)).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");

    // Several renewals each, and they are PUTs (the first one of a node may be a patch).
    e2e::wait_for(Duration::from_secs(60), "protobuf renewals", || {
        let hollow = &hollow;
        async move {
            let puts = lease_requests(hollow, "PUT", "Ok").await;
            Ok((puts >= (3 * NODES) as f64).then_some(()))
        }
    })
    .await
    .expect("renewals by PUT");
    for i in 0..NODES {
        let name = format!("lease-{i}");
        let before = leases.get(&name).await.expect("lease");
        let owner = before
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .expect("the PUT keeps the owner reference");
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Node", name.as_str())
        );
        assert_eq!(
            before
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref()),
            Some(name.as_str())
        );
        assert_eq!(
            before.spec.as_ref().and_then(|s| s.lease_duration_seconds),
            Some(40)
        );
        let first = renew_time(&before).expect("renewTime");
        e2e::wait_for(Duration::from_secs(30), "renewTime moving", || {
            let (leases, name) = (leases.clone(), name.clone());
            async move {
                let now = leases.get(&name).await?;
                Ok(renew_time(&now).filter(|t| *t > first).map(|_| ()))
            }
        })
        .await
        .expect("renewed");
    }

    // Someone else writes a Lease: our next PUT holds an old resourceVersion and gets 409.
    let conflicts_before = lease_requests(&hollow, "PUT", "ClientError").await;
    leases
        .patch(
            "lease-0",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .expect("an outside write");
    e2e::wait_for(Duration::from_secs(30), "a conflicting PUT", || {
        let hollow = &hollow;
        async move {
            let n = lease_requests(hollow, "PUT", "ClientError").await;
            Ok((n > conflicts_before).then_some(()))
        }
    })
    .await
    .expect("the outside write is noticed");
    let touched = leases.get("lease-0").await.expect("lease");
    let since = renew_time(&touched).expect("renewTime");
    // Renewals go on, as patches for that Lease, and its label stays.
    let patches = lease_requests(&hollow, "PATCH", "Ok").await;
    e2e::wait_for(
        Duration::from_secs(30),
        "renewals after the conflict",
        || {
            let (leases, hollow) = (leases.clone(), &hollow);
            async move {
                let now = leases.get("lease-0").await?;
                let renewed = renew_time(&now).is_some_and(|t| t > since);
                let more = lease_requests(hollow, "PATCH", "Ok").await >= patches + 3.0;
                Ok((renewed && more).then_some(now))
            }
        },
    )
    .await
    .map(|now| {
        assert_eq!(
            now.metadata
                .labels
                .and_then(|l| l.get("touched").cloned())
                .as_deref(),
            Some("yes"),
            "the other writer's label is kept"
        );
    })
    .expect("renewing again");
    hollow.stop().await;
}

/// The Lease lane's clients as `hollow_node::run` builds them, against the real apiserver: with
/// `--lease-transport http2` (the default) the answer comes over HTTP/2, as a kubelet's does,
/// and 1,000 lease workers share 5 connections; with `http1` over HTTP/1.1.
#[tokio::test(flavor = "multi_thread")]
async fn the_lease_lane_speaks_http2_where_the_apiserver_offers_it() {
    use hollow_node::client::{LeaseTransport, build_lease};
    let cp = apiserver_only().await;
    telemetry::install_crypto_provider();
    let kube_config = hollow_node::client::config(Some(&cp.kubeconfig()))
        .await
        .expect("kubeconfig");
    for (transport, slots, clients, version) in [
        (LeaseTransport::Http2, 1000, 5, http::Version::HTTP_2),
        (LeaseTransport::Http1, 1000, 1, http::Version::HTTP_11),
    ] {
        let metrics = hollow_node::metrics::Metrics::new(&mut Default::default());
        let lane = build_lease(kube_config.clone(), transport, slots, metrics).expect("clients");
        assert_eq!(lane.len(), clients, "{transport:?}");
        for client in &lane {
            let request = http::Request::get(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            )
            .body(kube::client::Body::empty())
            .expect("request");
            let answer = client.send(request).await.expect("answer");
            assert!(
                answer.status().is_success(),
                "{transport:?}: {}",
                answer.status()
            );
            assert_eq!(answer.version(), version, "{transport:?}");
        }
    }
}
