//! The harness itself against the real components: the controller-manager makes pods, the
//! scheduler binds them, and two control planes run side by side.

use std::time::Duration;

use e2e::{ControlPlane, Options, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "c", "image": "registry.invalid/pause:1" }] }
            }
        }
    }))
    .expect("deployment")
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_gets_its_pods_from_the_controller_manager() {
    let cp = ControlPlane::start(Options {
        scheduler: false,
        ..Options::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let n = wait_for(WAIT, "3 pods of deployment web", || {
        let pods = pods.clone();
        async move {
            let n = pods_of(&pods, "web").await.len();
            Ok((n == 3).then_some(n))
        }
    })
    .await
    .expect("pods");
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_binds_a_pod_to_a_ready_node() {
    let cp = ControlPlane::start(Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": { "name": "n1", "labels": { "kubernetes.io/hostname": "n1" } },
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    // A kubelet reports allocatable and a Ready condition through the status subresource; the
    // controller-manager then lifts the not-ready taint the apiserver put on the new node.
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let status = json!({ "status": {
        "capacity": { "cpu": "4", "memory": "8Gi", "pods": "110" },
        "allocatable": { "cpu": "4", "memory": "8Gi", "pods": "110" },
        "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now }],
    }});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "p1" },
        "spec": { "containers": [{ "name": "c", "image": "registry.invalid/pause:1" }] }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let bound = wait_for(WAIT, "pod p1 bound", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("p1").await?;
            Ok(p.spec.and_then(|s| s.node_name))
        }
    })
    .await
    .expect("binding");
    assert_eq!(bound, "n1");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_control_planes_run_side_by_side() {
    let opts = Options {
        scheduler: false,
        controller_manager: false,
        ..Options::default()
    };
    let (a, b) = tokio::join!(ControlPlane::start(opts.clone()), ControlPlane::start(opts));
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_ne!(a.server(), b.server());
    assert_ne!(a.dir(), b.dir());
    // An object made in one is absent from the other: they share no etcd.
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({ "metadata": { "name": "only-in-a" } })).expect("ns");
    Api::all(a.client())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create in a");
    let in_b: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(b.client());
    assert!(in_b.get_opt("only-in-a").await.expect("get").is_none());
    let dir_a = a.dir().to_path_buf();
    let pid = a.pid("kube-apiserver").expect("apiserver pid");
    drop(a);
    assert!(!dir_a.exists(), "dir removed on drop");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "apiserver stopped on drop"
    );
    // b keeps working after a is gone.
    in_b.get("default").await.expect("b still serves");
}
