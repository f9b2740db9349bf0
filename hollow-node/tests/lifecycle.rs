//! Pod lifecycles on hollow nodes against the real controllers: a Job completes, a pod that
//! mounts a missing Secret waits in ContainerCreating with a FailedMount Event and runs once the
//! Secret exists, a missing env ConfigMap gives CreateContainerConfigError, scripted lifecycles
//! (crash loop, delaySucceeded), what a scripted exit does under each restartPolicy (Always and
//! OnFailure restart with back-off and a BackOff Event, Never ends the pod) and deletion.

mod common;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

fn pod(name: &str, annotations: serde_json::Value, spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "app", "image": "busybox"}]);
    }
    spec["automountServiceAccountToken"] = json!(false);
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"test": name}, "annotations": annotations},
        "spec": spec,
    }))
    .expect("pod")
}

fn waiting_reason(p: &Pod) -> Option<String> {
    container(p)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn container(p: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_lifecycles() {
    let cp = e2e::ControlPlane::start(e2e::Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    let hollow = common::start(common::config(&cp, "hn-life", 3)).await;
    common::wait_nodes_ready(&client, "hn-life", 3, Duration::from_secs(60)).await;
    common::create_namespace(&client, "life").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "life");

    // A Job completes through the real Job controller.
    let jobs: Api<Job> = Api::namespaced(client.clone(), "life");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "batch"},
        "spec": {"completions": 3, "parallelism": 3, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": false,
            "containers": [{"name": "work", "image": "busybox"}]}}}
    }))
    .expect("job");
    jobs.create(&Default::default(), &job)
        .await
        .expect("create job");

    // Missing Secret volume and missing env ConfigMap.
    pods.create(
        &Default::default(),
        &pod(
            "needs-secret",
            json!({}),
            json!({"volumes": [{"name": "creds", "secret": {"secretName": "later"}}]}),
        ),
    )
    .await
    .expect("create needs-secret");
    pods.create(
        &Default::default(),
        &pod(
            "needs-config",
            json!({}),
            json!({"containers": [{"name": "app", "image": "busybox",
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "x"}}}]}]}),
        ),
    )
    .await
    .expect("create needs-config");
    // Scripted lifecycles.
    pods.create(
        &Default::default(),
        &pod("crashy", json!({"mock-kind.io/crashLoop": "1s"}), json!({})),
    )
    .await
    .expect("create crashy");
    pods.create(
        &Default::default(),
        &pod(
            "short",
            json!({"zhizuqiu.github.com/delaySucceeded": "2s"}),
            json!({"restartPolicy": "Never"}),
        ),
    )
    .await
    .expect("create short");
    // restartPolicy decides what a scripted exit does.
    for (name, annotation, policy) in [
        ("always-succeeds", "mock-kind.io/delaySucceeded", "Always"),
        ("onfailure-fails", "mock-kind.io/delayFailed", "OnFailure"),
        (
            "onfailure-succeeds",
            "mock-kind.io/delaySucceeded",
            "OnFailure",
        ),
        ("never-fails", "mock-kind.io/delayFailed", "Never"),
    ] {
        pods.create(
            &Default::default(),
            &pod(
                name,
                json!({annotation: "1s"}),
                json!({"restartPolicy": policy}),
            ),
        )
        .await
        .expect("create policy pod");
    }

    let p = common::wait_pod(&pods, "needs-secret", "ContainerCreating", |p| {
        waiting_reason(p).as_deref() == Some("ContainerCreating")
    })
    .await;
    assert_eq!(common::phase(&p), "Pending");
    assert!(
        p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_none(),
        "no IP before volumes mount"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "life");
    let ev = e2e::wait_for(Duration::from_secs(30), "FailedMount event", || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("FailedMount")
                && e.involved_object.name.as_deref() == Some("needs-secret")
        }))
    })
    .await
    .expect("FailedMount event");
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(
        ev.message
            .as_deref()
            .unwrap_or("")
            .contains("secret \"later\" not found"),
        "{ev:?}"
    );

    let p = common::wait_pod(&pods, "needs-config", "CreateContainerConfigError", |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    assert_eq!(common::phase(&p), "Pending");

    // The objects appear: both pods start.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "life");
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "later"}})).expect("secret"),
        )
        .await
        .expect("create secret");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "life");
    cms.create(
        &Default::default(),
        &serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"x": "1"}}))
            .expect("cm"),
    )
    .await
    .expect("create configmap");
    for name in ["needs-secret", "needs-config"] {
        let p = common::wait_pod(&pods, name, "Running", |p| {
            common::phase(p) == "Running" && common::pod_ready(p)
        })
        .await;
        assert!(
            p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some(),
            "{name} has an IP"
        );
    }

    // Job complete.
    e2e::wait_for(Duration::from_secs(60), "job Complete", || async {
        let j = jobs.get("batch").await?;
        let done = j.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        });
        Ok(done.then_some(()))
    })
    .await
    .expect("job complete");

    common::wait_pod(&pods, "short", "Succeeded", |p| {
        common::phase(p) == "Succeeded"
    })
    .await;
    let p = common::wait_pod(&pods, "crashy", "restarts at least twice", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .is_some_and(|c| c.restart_count >= 2)
    })
    .await;
    assert_eq!(waiting_reason(&p).as_deref(), Some("CrashLoopBackOff"));
    assert!(!common::pod_ready(&p));

    // Always and OnFailure restart the exited container (the second restart after the 10 s
    // back-off); OnFailure after success and Never end the pod.
    for (name, reason, exit_code) in [
        ("always-succeeds", "Completed", 0),
        ("onfailure-fails", "Error", 1),
    ] {
        let p = common::wait_pod(&pods, name, "restarted twice", |p| {
            container(p).is_some_and(|c| c.restart_count >= 2)
        })
        .await;
        assert_eq!(common::phase(&p), "Running", "{name}");
        let last = container(&p)
            .and_then(|c| c.last_state.clone())
            .and_then(|s| s.terminated)
            .expect("lastState.terminated");
        assert_eq!(last.reason.as_deref(), Some(reason), "{name}");
        assert_eq!(last.exit_code, exit_code, "{name}");
        assert!(
            last.finished_at.is_some() && last.started_at.is_some(),
            "{name}"
        );
        e2e::wait_for(Duration::from_secs(30), "BackOff event", || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("BackOff")
                    && e.involved_object.name.as_deref() == Some(name)
            }))
        })
        .await
        .expect("BackOff event");
    }
    common::wait_pod(&pods, "onfailure-succeeds", "Succeeded", |p| {
        common::phase(p) == "Succeeded"
    })
    .await;
    common::wait_pod(&pods, "never-fails", "Failed", |p| {
        common::phase(p) == "Failed"
    })
    .await;

    // Deletion with the default 30 s grace period is capped and finished by us.
    pods.delete("needs-secret", &DeleteParams::default())
        .await
        .expect("delete");
    e2e::wait_for(Duration::from_secs(20), "deleted pod gone", || async {
        Ok(pods.get_opt("needs-secret").await?.is_none().then_some(()))
    })
    .await
    .expect("pod gone");

    hollow.stop().await;
}
