//! Ephemeral containers end to end on 1.20 with the `EphemeralContainers` feature gate on (the
//! harness's `Options::feature_gates`): `kubectl debug` of kubectl 1.32 cannot add one there
//! (its fallback to 1.20's legacy `EphemeralContainers` kind is gone from its client-go
//! scheme), so the real kubectl adds one to a Running pod on a hollow node with `kubectl
//! replace --raw` on the `ephemeralcontainers` subresource and the 1.20 kind; the hollow node
//! reports it Running in `ephemeralContainerStatuses`, and `kubectl logs -c <ephemeral>`
//! answers through the hollow node's kubelet API.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

const PREFIX: &str = "hn-eph";
const NODE: &str = "hn-eph-0";
const T: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn wait_pod(pods: &Api<Pod>, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    let check = &check;
    e2e::wait_for(T, &format!("pod {name}: {what}"), || async move {
        Ok(pods.get_opt(name).await?.filter(|p| check(p)))
    })
    .await
    .expect(what)
}

/// Whether the pod reports ephemeral container `name` Running.
fn ephemeral_running(p: &Pod, name: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.ephemeral_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.name == name && c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_debug_adds_a_running_ephemeral_container() {
    let cp = e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        feature_gates: vec![("EphemeralContainers".into(), true)],
        ..e2e::Options::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    let mut config = common::config(&cp, PREFIX, 1);
    common::serve_kubelet_api(&mut config, &cp);
    let hollow = common::start(config).await;
    common::wait_nodes_ready(&client, PREFIX, 1, T).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let target: Pod = serde_json::from_value(json!({
        "metadata": {"name": "target"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "nginx"}],
        },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &target)
        .await
        .expect("create target");
    wait_pod(&pods, "target", "Running", |p| {
        common::phase(p) == "Running"
    })
    .await;

    // kubectl 1.32's debug speaks only the 1.22+ form of the subresource (a Pod).
    let o = common::kubectl(
        &cp,
        &["debug", "target", "--image=busybox", "--container=debugger"],
    )
    .await;
    assert!(
        !o.status.success() && text(&o.stderr).contains("EphemeralContainers"),
        "kubectl debug against 1.20: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    // What a 1.20 user writes instead: the legacy kind, PUT on the subresource.
    let body = json!({
        "apiVersion": "v1",
        "kind": "EphemeralContainers",
        "metadata": {"name": "target", "namespace": "default"},
        "ephemeralContainers": [{
            "name": "debugger",
            "image": "busybox",
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePolicy": "File",
        }],
    });
    let file = std::env::temp_dir().join(format!("ephemeral-{}.json", std::process::id()));
    std::fs::write(&file, body.to_string()).expect("write body");
    let path = file.to_string_lossy().into_owned();
    let o = common::kubectl(
        &cp,
        &[
            "replace",
            "--raw",
            "/api/v1/namespaces/default/pods/target/ephemeralcontainers",
            "-f",
            &path,
        ],
    )
    .await;
    assert!(
        o.status.success(),
        "kubectl replace --raw .../ephemeralcontainers: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let _ = std::fs::remove_file(&file);
    let p = wait_pod(&pods, "target", "debugger Running", |p| {
        ephemeral_running(p, "debugger")
    })
    .await;
    let status = p
        .status
        .as_ref()
        .and_then(|s| s.ephemeral_container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "debugger"))
        .expect("debugger status");
    assert_eq!(status.image, "docker.io/library/busybox:latest");
    assert!(!status.ready, "ephemeral containers are never ready");
    assert_eq!(common::phase(&p), "Running");

    let o = common::kubectl(&cp, &["logs", "target", "-c", "debugger"]).await;
    assert!(
        o.status.success(),
        "kubectl logs -c debugger: {}",
        text(&o.stderr)
    );
    let log = text(&o.stdout);
    assert!(
        log.contains(&format!("started on hollow node {NODE}, instance 0")),
        "kubectl logs -c debugger:\n{log}"
    );

    hollow.stop().await;
}
