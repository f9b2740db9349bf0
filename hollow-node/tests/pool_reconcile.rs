//! `hollow-node --pool` on the real 1.20 apiserver, driven with the real kubectl: a pool of 3
//! becomes 3 Ready Nodes with its labels, zones, taint and GPU capacity, a Lease each and a
//! status saying so; `kubectl scale` to 1 deletes the other Nodes and their Leases; a template
//! edit reaches the kept Node in place (same UID); an invalid edit gets Valid=False with the
//! field named and touches no Node; `paused` lets the node-lifecycle controller mark the Node
//! Unknown and unpausing brings the same Node back Ready; a running pool holds a finalizer, so
//! a pool deleted while no process runs it stays, with its Node, until a process runs it again
//! and deletes its Nodes and Leases first. The process's /healthz, /readyz and /metrics answer
//! while no node set runs (paused), and /healthz fails when the set cannot start (its kubelet
//! port is taken).

mod common;

use std::time::Duration;

use hollow_node::pool::finalizer::FINALIZER;
use hollow_node::pool::{HollowNodePool, POOL_LABEL};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

const POOL: &str = r#"
apiVersion: mock-kind.io/v1alpha1
kind: HollowNodePool
metadata:
  name: gpu
spec:
  replicas: 3
  template:
    capacity:
      nvidia.com/gpu: 8
    labels:
      team: ml
    taints:
      - key: nvidia.com/gpu
        effect: NoSchedule
    zones: [zone-a, zone-b]
"#;

async fn nodes(client: &kube::Client) -> Vec<Node> {
    let api: Api<Node> = Api::all(client.clone());
    api.list(&ListParams::default().labels(&format!("{POOL_LABEL}=gpu")))
        .await
        .expect("list nodes")
        .items
}

fn label<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    n.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(k))
        .map(String::as_str)
}

async fn kubectl_ok(cp: &e2e::ControlPlane, args: &[&str]) {
    let o = common::kubectl(cp, args).await;
    assert!(
        o.status.success(),
        "kubectl {args:?}: {}",
        common::output_text(&o)
    );
}

/// A merge patch of the pool's spec with the real kubectl.
async fn patch_spec(cp: &e2e::ControlPlane, spec: &str) {
    let patch = format!(r#"{{"spec":{spec}}}"#);
    kubectl_ok(
        cp,
        &["patch", "hollownodepool/gpu", "--type=merge", "-p", &patch],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_scales_edits_and_refuses() {
    let cp = e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        // The node-lifecycle controller, to see a paused pool's Nodes go NotReady.
        node_monitor_grace_period: Some(Duration::from_secs(15)),
        ..Default::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    common::install_crd(&cp).await;
    common::apply_yaml(&cp, "gpu-pool.yaml", POOL).await;

    let hollow = common::start_pool(&cp, "gpu");
    let long = Duration::from_secs(120);

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let up = e2e::wait_for(long, "3 Ready nodes of pool gpu and their leases", || {
        let (client, leases) = (client.clone(), leases.clone());
        async move {
            let ns = nodes(&client).await;
            let mut held = 0;
            for i in 0..3 {
                held += usize::from(leases.get_opt(&format!("gpu-{i}")).await?.is_some());
            }
            Ok((ns.len() == 3 && held == 3 && ns.iter().all(common::ready)).then_some(ns))
        }
    })
    .await
    .expect("pool up");
    let mut zones: Vec<(String, String)> = up
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            (
                name,
                label(n, "topology.kubernetes.io/zone")
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    zones.sort();
    assert_eq!(
        zones,
        [
            ("gpu-0".to_string(), "zone-a".to_string()),
            ("gpu-1".to_string(), "zone-b".to_string()),
            ("gpu-2".to_string(), "zone-a".to_string())
        ]
    );
    for n in &up {
        assert_eq!(label(n, "team"), Some("ml"));
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(
            taints
                .iter()
                .any(|t| t.key == "nvidia.com/gpu" && t.effect == "NoSchedule"),
            "{taints:?}"
        );
        let cap = n
            .status
            .as_ref()
            .and_then(|s| s.capacity.clone())
            .unwrap_or_default();
        assert_eq!(cap.get("nvidia.com/gpu").map(|q| q.0.as_str()), Some("8"));
    }
    let pools: Api<HollowNodePool> = Api::all(client.clone());
    e2e::wait_for(long, "status 3/3 Ready", || {
        let pools = pools.clone();
        async move {
            let p = pools.get("gpu").await?;
            let ok = p.status.as_ref().is_some_and(|s| {
                s.registered_nodes == 3
                    && s.ready_nodes == 3
                    && s.observed_generation == p.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Valid" && c.status == "True")
            });
            Ok(ok.then_some(()))
        }
    })
    .await
    .expect("status");
    let uid = |ns: &[Node]| {
        ns.iter()
            .find(|n| n.metadata.name.as_deref() == Some("gpu-0"))
            .and_then(|n| n.metadata.uid.clone())
    };
    let first_uid = uid(&up);
    assert!(first_uid.is_some());

    kubectl_ok(&cp, &["scale", "hollownodepool/gpu", "--replicas=1"]).await;
    e2e::wait_for(
        long,
        "scaled down to gpu-0 without the others' leases",
        || {
            let (client, leases) = (client.clone(), leases.clone());
            async move {
                let ns = nodes(&client).await;
                let gone = leases.get_opt("gpu-1").await?.is_none()
                    && leases.get_opt("gpu-2").await?.is_none();
                Ok((ns.len() == 1 && gone).then_some(()))
            }
        },
    )
    .await
    .expect("scale down");

    patch_spec(
        &cp,
        r#"{"template":{"labels":{"team":null,"tier":"gold"}}}"#,
    )
    .await;
    let edited = e2e::wait_for(long, "gpu-0 relabelled in place", || {
        let client = client.clone();
        async move {
            let ns = nodes(&client).await;
            let ok = ns.len() == 1
                && label(&ns[0], "tier") == Some("gold")
                && label(&ns[0], "team").is_none();
            Ok(ok.then_some(ns))
        }
    })
    .await
    .expect("template edit");
    assert_eq!(
        uid(&edited),
        first_uid,
        "the same Node, not registered again"
    );

    patch_spec(
        &cp,
        r#"{"replicas":3,"template":{"capacity":{"cpu":"four"}}}"#,
    )
    .await;
    let message = e2e::wait_for(long, "Valid=False", || {
        let pools = pools.clone();
        async move {
            let p = pools.get("gpu").await?;
            let c = p.status.and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| c.type_ == "Valid" && c.status == "False")
            });
            Ok(c.map(|c| c.message))
        }
    })
    .await
    .expect("invalid condition");
    assert!(
        message.contains("spec.template.capacity[\"cpu\"]"),
        "{message}"
    );
    let after = nodes(&client).await;
    assert_eq!(after.len(), 1, "an invalid pool creates no node");
    assert_eq!(uid(&after), first_uid);
    assert!(
        common::ready(&after[0]),
        "the last valid spec keeps running"
    );

    // Paused: the set stops, nothing is deleted, the lifecycle controller sees a dead node.
    patch_spec(
        &cp,
        r#"{"replicas":1,"paused":true,"template":{"capacity":{"cpu":"4"}}}"#,
    )
    .await;
    let status = |ns: Vec<Node>| ns.first().map(common::ready_status);
    e2e::wait_for(long, "paused gpu-0 Unknown", || {
        let client = client.clone();
        async move {
            let ns = nodes(&client).await;
            Ok((ns.len() == 1 && status(ns).as_deref() == Some("Unknown")).then_some(()))
        }
    })
    .await
    .expect("paused node goes NotReady");
    // No node set runs, and the process still answers its probes and keeps its counters.
    for (path, want) in [
        ("/healthz", "ok"),
        ("/readyz", "ok"),
        ("/metrics", "hollow_node_api_requests_total"),
    ] {
        let (code, body) = common::get(hollow.addr, path).await;
        assert!(
            code == 200 && body.contains(want),
            "{path} while paused: {code} {body:.300}"
        );
    }
    patch_spec(&cp, r#"{"paused":false}"#).await;
    let resumed = e2e::wait_for(long, "resumed gpu-0 Ready", || {
        let client = client.clone();
        async move {
            let ns = nodes(&client).await;
            Ok((ns.len() == 1 && ns.iter().all(common::ready)).then_some(ns))
        }
    })
    .await
    .expect("resumed");
    assert_eq!(uid(&resumed), first_uid);
    let held = pools.get("gpu").await.expect("pool").metadata.finalizers;
    assert_eq!(
        held,
        Some(vec![FINALIZER.to_string()]),
        "a running pool holds the finalizer"
    );

    // Deleted while no process runs it: the finalizer keeps the pool, and its Node, until a
    // process runs the pool again and deletes the Nodes and Leases first.
    hollow.stop_within(Duration::from_secs(60)).await;
    kubectl_ok(&cp, &["delete", "hollownodepool/gpu", "--wait=false"]).await;
    let deleting = pools.get("gpu").await.expect("held by the finalizer");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        nodes(&client).await.len(),
        1,
        "nothing deletes the Node yet"
    );
    assert!(leases.get_opt("gpu-0").await.expect("lease").is_some());

    let hollow = common::start_pool(&cp, "gpu");
    e2e::wait_for(long, "pool deleted: nodes, lease and pool gone", || {
        let (client, leases, pools) = (client.clone(), leases.clone(), pools.clone());
        async move {
            let gone = nodes(&client).await.is_empty()
                && leases.get_opt("gpu-0").await?.is_none()
                && pools.get_opt("gpu").await?.is_none();
            Ok(gone.then_some(()))
        }
    })
    .await
    .expect("deleted");

    hollow.stop_within(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_set_that_cannot_start_fails_healthz() {
    let cp = common::apiserver_only().await;
    common::install_crd(&cp).await;
    let pool = POOL.replace("replicas: 3", "replicas: 1");
    common::apply_yaml(&cp, "gpu-pool.yaml", &pool).await;
    // The kubelet port the set binds is held by someone else.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut config = common::config(&cp, "flags-prefix-unused", 1);
    common::serve_kubelet_api(&mut config, &cp);
    let taken_addr = taken.local_addr().expect("addr");
    config.kubelet.listen = Some(taken_addr);
    config.template.kubelet_port = i32::from(taken_addr.port());
    let hollow = common::start_pool_with(config, "gpu");
    let (code, body) = e2e::wait_for(Duration::from_secs(60), "/healthz 503", || async {
        let (code, body) = common::get(hollow.addr, "/healthz").await;
        Ok((code == 503).then_some((code, body)))
    })
    .await
    .expect("healthz fails");
    assert!(
        body.contains("the pool's node set"),
        "/healthz names the set: {code} {body}"
    );
    hollow.stop().await;
}
