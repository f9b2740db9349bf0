//! References by key on hollow nodes against the real apiserver: an env `secretKeyRef` to a key
//! the Secret lacks holds the pod in CreateContainerConfigError with the kubelet's message, a
//! ConfigMap volume naming a missing key holds it in ContainerCreating with a FailedMount
//! Event; each pod runs once the key is added to the existing object.

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

fn waiting(p: &Pod) -> Option<(String, Option<String>)> {
    let c = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let w = c.state.as_ref()?.waiting.as_ref()?;
    Some((w.reason.clone()?, w.message.clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_keys_hold_pods_until_added() {
    let (cp, hollow) = common::cluster("hn-keys", 2, "keys").await;
    let client = cp.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "keys");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "keys");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "keys");
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "db"}, "stringData": {"user": "app"}}),
            )
            .expect("secret"),
        )
        .await
        .expect("create secret");
    cms.create(
        &Default::default(),
        &serde_json::from_value(json!({"metadata": {"name": "web"}, "data": {"other.yaml": "x"}}))
            .expect("configmap"),
    )
    .await
    .expect("create configmap");
    for p in [
        json!({"metadata": {"name": "env-key"}, "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "nginx", "env": [
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "web", "key": "mode", "optional": true}}}]}]}}),
        json!({"metadata": {"name": "volume-key"}, "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "nginx"}],
            "volumes": [{"name": "config", "configMap": {"name": "web",
                "items": [{"key": "app.yaml", "path": "app.yaml"}]}}]}}),
    ] {
        let p: Pod = serde_json::from_value(p).expect("pod");
        pods.create(&Default::default(), &p)
            .await
            .expect("create pod");
    }

    let p = common::wait_pod(&pods, "env-key", "CreateContainerConfigError", |p| {
        waiting(p).is_some_and(|(r, _)| r == "CreateContainerConfigError")
    })
    .await;
    assert_eq!(
        waiting(&p).and_then(|(_, m)| m).as_deref(),
        Some("couldn't find key password in Secret keys/db")
    );
    let p = common::wait_pod(&pods, "volume-key", "ContainerCreating", |p| {
        waiting(p).is_some_and(|(r, _)| r == "ContainerCreating")
    })
    .await;
    assert_eq!(common::phase(&p), "Pending");
    let events: Api<Event> = Api::namespaced(client.clone(), "keys");
    let ev = common::wait_event(&events, "volume-key", "FailedMount").await;
    assert_eq!(
        ev.message.as_deref(),
        Some(
            "MountVolume.SetUp failed for volume \"config\" : configmap references non-existent config key: app.yaml"
        )
    );

    // The keys are added to the existing objects: both pods run.
    secrets
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "s3cr3t"}})),
        )
        .await
        .expect("add secret key");
    cms.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"app.yaml": "a: 1"}})),
    )
    .await
    .expect("add configmap key");
    for name in ["env-key", "volume-key"] {
        common::wait_pod(&pods, name, "Running and Ready", |p| {
            common::phase(p) == "Running" && common::pod_ready(p)
        })
        .await;
    }
    hollow.stop().await;
}
