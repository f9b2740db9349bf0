//! End to end, profile `openshift-restricted-v2`: the real kube-apiserver and
//! kube-controller-manager with the in-process webhook; two real operators' Deployments, stored
//! unchanged from their public manifests in tests/data/operators, are admitted and mutated or
//! refused as webhook/README.md's table says.

mod common;

use std::collections::BTreeMap;

use common::cluster::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};
use webhook::Strategy;

const NS: &str = "operators";

/// The Deployment documents of a stored manifest, as `kubectl apply -n NS` would create them.
fn deployment(file: &str) -> Deployment {
    let path = format!("{}/tests/data/operators/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .find(|v| v["kind"] == "Deployment")
        .expect("a Deployment in the manifest");
    let mut d: Deployment = serde_json::from_value(doc).expect("Deployment");
    d.metadata.namespace = Some(NS.into());
    d
}

async fn service_account(client: &Client, ns: &str, name: &str) {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("sa");
    api.create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount");
}

/// The first pod of a Deployment's ReplicaSet, once created.
async fn pod_of(client: &Client, app_label: (&str, &str)) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let selector = format!("{}={}", app_label.0, app_label.1);
    e2e::wait_for(T, &format!("a pod with {selector}"), || {
        let (pods, selector) = (pods.clone(), selector.clone());
        async move {
            Ok(pods
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .next())
        }
    })
    .await
    .expect("pod created")
}

/// The ReplicaFailure message the ReplicaSet controller records for a refused pod.
async fn replica_failure(client: &Client, app_label: (&str, &str)) -> String {
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let selector = format!("{}={}", app_label.0, app_label.1);
    e2e::wait_for(T, &format!("ReplicaFailure of {selector}"), || {
        let (rs, selector) = (rs.clone(), selector.clone());
        async move {
            let list = rs.list(&ListParams::default().labels(&selector)).await?;
            Ok(list.items.into_iter().find_map(|r| {
                r.status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "ReplicaFailure")?
                    .message
            }))
        }
    })
    .await
    .expect("ReplicaSet reports the refusal")
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_under_restricted_v2() {
    let cp = control_plane(true).await;
    let client = cp.client();
    let mut cfg = config(&cp, Strategy::Namespace, webhook::tls::system_clock());
    cfg.profile = webhook::Profile::OpenshiftRestrictedV2;
    let mut wh = serve(&client, cfg).await;

    create_namespace(&client, NS).await;
    let ann = wait_annotated(&client, NS).await;
    wait_default_sa(&client, NS).await;
    let start: i64 = ann[UID_RANGE]
        .split_once('/')
        .expect("range")
        .0
        .parse()
        .expect("start");
    let mcs = ann[MCS].clone();
    for sa in ["controller-manager", "prometheus-operator"] {
        service_account(&client, NS, sa).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);

    // 1Password's operator (kubebuilder layout: runAsNonRoot, no UID, drops ALL): admitted,
    // with the namespace's first UID, its fsGroup, its MCS level and RuntimeDefault seccomp.
    deployments
        .create(
            &PostParams::default(),
            &deployment("onepassword-operator-manager.yaml"),
        )
        .await
        .expect("create the 1Password operator");
    let pod = pod_of(&client, ("control-plane", "controller-manager")).await;
    let v = serde_json::to_value(&pod).expect("json");
    let want: &[(&str, Value)] = &[
        (
            "/metadata/annotations/openshift.io~1scc",
            json!("restricted-v2"),
        ),
        ("/spec/securityContext/runAsNonRoot", json!(true)),
        ("/spec/securityContext/fsGroup", json!(start)),
        ("/spec/securityContext/seLinuxOptions/level", json!(mcs)),
        (
            "/spec/securityContext/seccompProfile/type",
            json!("RuntimeDefault"),
        ),
        ("/spec/containers/0/securityContext/runAsUser", json!(start)),
        (
            "/spec/containers/0/securityContext/allowPrivilegeEscalation",
            json!(false),
        ),
        (
            "/spec/containers/0/securityContext/capabilities/drop",
            json!(["ALL"]),
        ),
    ];
    for (ptr, value) in want {
        assert_eq!(
            v.pointer(ptr),
            Some(value),
            "1Password operator pod {ptr}: {v}"
        );
    }

    // prometheus-operator v0.38.1 (runAsUser 65534): refused, in OpenShift's words.
    deployments
        .create(
            &PostParams::default(),
            &deployment("prometheus-operator-deployment.yaml"),
        )
        .await
        .expect("create prometheus-operator");
    let failure = replica_failure(&client, ("app.kubernetes.io/name", "prometheus-operator")).await;
    let refusal = format!(
        "unable to validate against any security context constraint: provider restricted-v2: .containers[0].runAsUser: Invalid value: 65534: must be in the ranges: [{start}, {}]",
        start + 9_999
    );
    assert!(failure.contains(&refusal), "{failure}");
    println!("prometheus-operator's ReplicaSet: {failure}");

    // A server-side dry run of a bare pod shows the UID the real create gives.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "bare"},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "x"}]}}))
    .expect("pod");
    let dry = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &bare,
        )
        .await
        .expect("dry run");
    let user = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.containers[0].security_context.as_ref())
            .and_then(|c| c.run_as_user)
    };
    assert_eq!(user(&dry), Some(start));
    let real = pods
        .create(&PostParams::default(), &bare)
        .await
        .expect("create");
    assert_eq!(user(&real), user(&dry));

    // A namespace labelled mock-kind.io/scc=privileged is exempt: prometheus-operator runs as is.
    let api: Api<Namespace> = Api::all(client.clone());
    let privileged: Namespace = serde_json::from_value(json!({"metadata": {"name": "privileged",
        "labels": {"mock-kind.io/scc": "privileged"}}}))
    .expect("ns");
    api.create(&PostParams::default(), &privileged)
        .await
        .expect("create namespace");
    wait_annotated(&client, "privileged").await;
    wait_default_sa(&client, "privileged").await;
    let host: Pod = serde_json::from_value(json!({"metadata": {"name": "host"},
        "spec": {"automountServiceAccountToken": false, "hostNetwork": true,
            "securityContext": {"runAsUser": 0},
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]}}))
    .expect("pod");
    let admitted = Api::<Pod>::namespaced(client.clone(), "privileged")
        .create(&PostParams::default(), &host)
        .await
        .expect("privileged namespace admits a host pod");
    let annotations: BTreeMap<String, String> = admitted.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("openshift.io/scc"),
        "{annotations:?}"
    );
    // The same pod in the restricted namespace: refused.
    let refused = pods
        .create(&PostParams::default(), &host)
        .await
        .expect_err("refused");
    let text = refused.to_string();
    println!("host pod: {text}");
    assert!(
        text.contains("Privileged containers are not allowed")
            && text.contains("Host network is not allowed to be used"),
        "{text}"
    );

    wh.stop().await.expect("webhook stops cleanly");
}
