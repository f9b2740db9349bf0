//! Probes on hollow nodes against the real controllers: a rolling update with
//! `maxUnavailable: 0` waits for each new pod's readiness probe before it goes on; a scripted
//! readiness failure makes the Endpoints drop the pod and take it back; a scripted liveness
//! failure makes the kubelet kill and restart the container with the `Killing` Event.

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Event, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

fn ready_since(p: &Pod) -> Option<jiff::Timestamp> {
    let c = common::pod_condition(p, "Ready").filter(|c| c.status == "True")?;
    Some(c.last_transition_time.as_ref()?.0)
}

fn started_at(p: &Pod) -> Option<jiff::Timestamp> {
    let c = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    Some(c.state.as_ref()?.running.as_ref()?.started_at.as_ref()?.0)
}

/// Whether the Endpoints of `svc` list `ip` among the ready addresses (`Some(true)`), the
/// not-ready ones (`Some(false)`), or not at all.
async fn endpoint_state(api: &Api<Endpoints>, svc: &str, ip: &str) -> Option<bool> {
    let ep = api.get_opt(svc).await.ok()??;
    let has = |list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
        list.iter().flatten().any(|a| a.ip == ip)
    };
    let subsets = ep.subsets.unwrap_or_default();
    if subsets.iter().any(|s| has(&s.addresses)) {
        Some(true)
    } else if subsets.iter().any(|s| has(&s.not_ready_addresses)) {
        Some(false)
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_drive_rollouts_endpoints_and_restarts() {
    let (cp, hollow) = common::cluster("hn-probe", 3, "probes").await;
    let client = cp.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "probes");
    let events: Api<Event> = Api::namespaced(client.clone(), "probes");

    // A readiness failure from 4 s to 10 s after the start: the Endpoints drop the pod, then
    // take it back.
    let services: Api<Service> = Api::namespaced(client.clone(), "probes");
    services
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "flaky"},
                "spec": {"selector": {"app": "flaky"}, "ports": [{"port": 80, "targetPort": 8080}]}
            }))
            .expect("service"),
        )
        .await
        .expect("create service");
    let flaky: Pod = serde_json::from_value(json!({
        "metadata": {"name": "flaky", "labels": {"app": "flaky"}, "annotations": {
            "mock-kind.io/readinessFailAfter": "4s", "mock-kind.io/readinessFailFor": "6s"}},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "app", "image": "nginx",
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 1}}]}
    }))
    .expect("pod");
    pods.create(&Default::default(), &flaky)
        .await
        .expect("create flaky");
    // A liveness failure 2 s after every start.
    let sick: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sick", "annotations": {"mock-kind.io/livenessFailAfter": "2s"}},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "app", "image": "nginx",
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}}]}
    }))
    .expect("pod");
    pods.create(&Default::default(), &sick)
        .await
        .expect("create sick");

    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "probes");
    let ip = e2e::wait_for(Duration::from_secs(60), "flaky has an IP", || async {
        Ok(pods.get_opt("flaky").await?.and_then(|p| p.status?.pod_ip))
    })
    .await
    .expect("flaky IP");
    for (want, what) in [
        (true, "flaky ready in the Endpoints"),
        (false, "flaky dropped to notReadyAddresses"),
        (true, "flaky back in the Endpoints"),
    ] {
        e2e::wait_for(Duration::from_secs(60), what, || async {
            Ok((endpoint_state(&endpoints, "flaky", &ip).await == Some(want)).then_some(()))
        })
        .await
        .expect(what);
    }
    let unhealthy = common::wait_event(&events, "flaky", "Unhealthy").await;
    assert_eq!(unhealthy.type_.as_deref(), Some("Warning"));
    assert_eq!(
        unhealthy.message.as_deref(),
        Some(
            format!("Readiness probe failed: dial tcp {ip}:8080: connect: connection refused")
                .as_str()
        )
    );

    // The liveness failure: killed, restarted, with the kubelet's events and lastState.
    let p = e2e::wait_for(Duration::from_secs(60), "sick restarted", || async {
        Ok(pods.get_opt("sick").await?.filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .is_some_and(|c| c.restart_count >= 1)
        }))
    })
    .await
    .expect("sick restarted");
    assert_eq!(common::phase(&p), "Running");
    let c = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .expect("container status");
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(
        (last.reason.as_deref(), last.exit_code),
        (Some("Error"), 137)
    );
    let killing = common::wait_event(&events, "sick", "Killing").await;
    assert_eq!(killing.type_.as_deref(), Some("Normal"));
    assert_eq!(
        killing.message.as_deref(),
        Some("Container app failed liveness probe, will be restarted")
    );
    let unhealthy = common::wait_event(&events, "sick", "Unhealthy").await;
    assert_eq!(
        unhealthy.message.as_deref(),
        Some("Liveness probe failed: HTTP probe failed with statuscode: 503")
    );

    // A rollout with maxUnavailable 0 and maxSurge 1 waits for each new pod's readiness probe
    // (3 s): the next new pod is created only after the previous one turned Ready, never
    // before its probe's delay, and the Ready pods never drop under the replica count.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "probes");
    let mut d = common::deployment("web", 3);
    let spec = d.spec.as_mut().expect("spec");
    spec.strategy = Some(
        serde_json::from_value(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}))
        .expect("strategy"),
    );
    let template = spec.template.spec.as_mut().expect("template spec");
    template.containers[0].readiness_probe = Some(
        serde_json::from_value(json!({"httpGet": {"path": "/", "port": 80},
            "initialDelaySeconds": 3, "periodSeconds": 1}))
        .expect("probe"),
    );
    deployments
        .create(&Default::default(), &d)
        .await
        .expect("create deployment");
    let old = common::wait_running(&client, "probes", "app=web", 3, Duration::from_secs(90)).await;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}),
            ),
        )
        .await
        .expect("roll out");
    let old_names: Vec<String> = old.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let new = e2e::wait_for(Duration::from_secs(120), "rollout done", || {
        let pods = pods.clone();
        let old_names = old_names.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await?;
            let ready = list.items.iter().filter(|p| common::pod_ready(p)).count();
            assert!(
                ready >= 3,
                "maxUnavailable 0: only {ready} pods Ready during the rollout"
            );
            let new: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| !old_names.contains(p.metadata.name.as_ref().expect("name")))
                .collect();
            let done = new.len() == 3 && new.iter().all(common::pod_ready);
            let old_gone = !pods_left(&pods, &old_names).await?;
            Ok((done && old_gone).then_some(new))
        }
    })
    .await
    .expect("rollout done");
    let mut new = new;
    new.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    for p in &new {
        let (Some(started), Some(ready)) = (started_at(p), ready_since(p)) else {
            panic!("new pod without startedAt or Ready: {:?}", p.status);
        };
        let name = p.metadata.name.as_deref().unwrap_or("");
        assert!(
            ready.as_second() - started.as_second() >= 3,
            "{name} Ready at {ready}, started at {started}: before the readiness delay"
        );
    }
    for pair in new.windows(2) {
        let created = pair[1]
            .metadata
            .creation_timestamp
            .as_ref()
            .expect("created")
            .0;
        let previous_ready = ready_since(&pair[0]).expect("ready");
        assert!(
            created >= previous_ready,
            "new pod created at {created}, before the previous new one was Ready at {previous_ready}"
        );
    }
    hollow.stop().await;
}

async fn pods_left(pods: &Api<Pod>, names: &[String]) -> Result<bool, e2e::Error> {
    for n in names {
        if pods.get_opt(n).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}
