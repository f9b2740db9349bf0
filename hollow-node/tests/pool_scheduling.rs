//! The real kube-scheduler honours what a pool declares: the shipped example pool
//! `deploy/pools/gpu.yaml` (4 nodes, 8 `nvidia.com/gpu` each, tainted
//! `nvidia.com/gpu=present:NoSchedule`), applied with the real kubectl and run by
//! `hollow-node --pool gpu`. A pod tolerating the taint and asking for 2 GPUs lands on a pool
//! node and runs; one without the toleration stays Pending on the taint; one asking for 9 GPUs
//! stays Pending on the capacity.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

const NS: &str = "ml";

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: trains, namespace: ml}
spec:
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  containers:
    - name: train
      image: trainer:1
      resources: {limits: {nvidia.com/gpu: 2}}
---
apiVersion: v1
kind: Pod
metadata: {name: no-toleration, namespace: ml}
spec:
  containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: nine-gpus, namespace: ml}
spec:
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  containers:
    - name: train
      image: trainer:1
      resources: {limits: {nvidia.com/gpu: 9}}
"#;

/// The scheduler's verdict on a pending pod: the PodScheduled=False condition's message.
fn unschedulable(p: &Pod) -> Option<String> {
    let c = common::pod_condition(p, "PodScheduled").filter(|c| c.status == "False")?;
    (c.reason.as_deref() == Some("Unschedulable")).then(|| c.message.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_honours_a_pools_taints_and_capacity() {
    let cp = e2e::ControlPlane::start(e2e::Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    common::install_crd(&cp).await;
    let o = common::kubectl(
        &cp,
        &["apply", "-f", &common::repo("deploy/pools/gpu.yaml")],
    )
    .await;
    assert!(
        o.status.success(),
        "apply pool: {}",
        common::output_text(&o)
    );

    let hollow = common::start_pool(&cp, "gpu");
    common::wait_nodes_ready(&client, "gpu", 4, Duration::from_secs(120)).await;
    common::create_namespace(&client, NS).await;
    common::apply_yaml(&cp, "pods.yaml", PODS).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let trains = common::wait_pod(&pods, "trains", "Running and Ready", |p| {
        common::phase(p) == "Running" && common::pod_ready(p)
    })
    .await;
    let node = trains.spec.and_then(|s| s.node_name).unwrap_or_default();
    assert!(node.starts_with("gpu-"), "bound to a pool node: {node}");

    let refused = common::wait_pod(&pods, "no-toleration", "unschedulable", |p| {
        unschedulable(p).is_some()
    })
    .await;
    let why = unschedulable(&refused).unwrap_or_default();
    assert!(why.contains("taint"), "refused for the taint: {why}");
    assert_eq!(common::phase(&refused), "Pending");

    let too_big = common::wait_pod(&pods, "nine-gpus", "unschedulable", |p| {
        unschedulable(p).is_some()
    })
    .await;
    let why = unschedulable(&too_big).unwrap_or_default();
    assert!(
        why.contains("Insufficient nvidia.com/gpu"),
        "refused for the capacity: {why}"
    );

    hollow.stop_within(Duration::from_secs(60)).await;
}
