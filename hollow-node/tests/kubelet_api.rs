//! The kubelet API of a hollow node, through the real apiserver with the real kubectl:
//! `kubectl logs` (plain, `--tail`, `--limit-bytes`, `--since`, `--since-time`, `--previous`
//! after a crash-loop restart, `-f` ended by the pod's deletion, a scripted line), the messages of `kubectl exec`, `attach` and
//! `port-forward`, and direct HTTPS requests to the kubelet port: anonymous → 401, a
//! ServiceAccount without rights → 403, one with `nodes/proxy` → 200, one granted a node by
//! name → 200 there and 403 on the other, a burst from a new token costs one review, a pod that is not on
//! this process's nodes → 404.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

const PREFIX: &str = "hn-kapi";
const NODE: &str = "hn-kapi-0";
const T: Duration = Duration::from_secs(60);

fn pod(name: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "busybox"}],
        },
    }))
    .expect("pod")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `curl` on the kubelet port: (status, body). `-k`: the serving certificate is self-issued,
/// and the apiserver does not check it either.
async fn curl(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    e2e::process::curl_insecure(&format!("https://127.0.0.1:{port}{path}"), token)
        .await
        .expect("run curl")
}

async fn wait_pod(pods: &Api<Pod>, name: &str, what: &str, check: impl Fn(&Pod) -> bool) {
    let check = &check;
    e2e::wait_for(T, &format!("pod {name}: {what}"), || async move {
        Ok(pods.get_opt(name).await?.filter(|p| check(p)).map(|_| ()))
    })
    .await
    .expect(what);
}

fn restarted(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .is_some_and(|c| {
            c.restart_count >= 1
                && c.last_state
                    .as_ref()
                    .is_some_and(|l| l.terminated.is_some())
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_exec_and_kubelet_auth() {
    let cp = e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        ..e2e::Options::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    let mut config = common::config(&cp, PREFIX, 2);
    let port = common::serve_kubelet_api(&mut config, &cp);
    let hollow = common::start(config).await;
    common::wait_nodes_ready(&client, PREFIX, 2, T).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let script = "hello from the script\nsecond scripted line";
    pods.create(
        &PostParams::default(),
        &pod("talker", json!({"mock-kind.io/logLines": script})),
    )
    .await
    .expect("create talker");
    pods.create(
        &PostParams::default(),
        &pod("crasher", json!({"mock-kind.io/crashLoop": "1s"})),
    )
    .await
    .expect("create crasher");
    wait_pod(&pods, "talker", "Running and ready", |p| {
        common::phase(p) == "Running" && common::pod_ready(p)
    })
    .await;

    // Plain: the container's life and the scripted lines.
    let o = common::kubectl(&cp, &["logs", "talker"]).await;
    assert!(o.status.success(), "kubectl logs: {}", err(&o));
    let log = out(&o);
    for want in [
        format!("started on hollow node {NODE}, instance 0"),
        "hello from the script".into(),
        "second scripted line".into(),
        "[hollow-node] container app is ready".into(),
    ] {
        assert!(log.contains(&want), "{want:?} not in:\n{log}");
    }
    // --tail and --timestamps.
    let o = common::kubectl(&cp, &["logs", "talker", "--tail=1", "--timestamps"]).await;
    let tail = out(&o);
    assert_eq!(tail.lines().count(), 1, "--tail=1: {tail}{}", err(&o));
    assert!(
        tail.ends_with(" [hollow-node] container app is ready\n") && tail.starts_with("20"),
        "--tail=1 --timestamps: {tail:?}"
    );
    // --limit-bytes cuts mid-line; --since-time after every line leaves nothing, --since=1h all.
    let o = common::kubectl(&cp, &["logs", "talker", "--limit-bytes=12"]).await;
    assert_eq!(out(&o), "[hollow-node", "--limit-bytes=12: {}", err(&o));
    let o = common::kubectl(
        &cp,
        &["logs", "talker", "--since-time=2099-01-01T00:00:00Z"],
    )
    .await;
    assert!(
        o.status.success() && out(&o).is_empty(),
        "--since-time: {}{}",
        out(&o),
        err(&o)
    );
    let o = common::kubectl(&cp, &["logs", "talker", "--since=1h"]).await;
    assert_eq!(out(&o), log, "--since=1h: {}", err(&o));
    // --previous without a restart: the kubelet's error, shown by kubectl.
    let o = common::kubectl(&cp, &["logs", "talker", "--previous"]).await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains("previous terminated container \"app\" in pod")
            && err(&o).contains("not found"),
        "--previous: {}",
        err(&o)
    );
    // Bad options reach the kubelet only when the apiserver lets them through; a container
    // that does not exist is refused by the apiserver itself.
    let o = common::kubectl(&cp, &["logs", "talker", "-c", "nope"]).await;
    assert!(
        !o.status.success() && err(&o).contains("nope"),
        "{}",
        err(&o)
    );

    // --previous after a crash-loop restart.
    wait_pod(&pods, "crasher", "restarted after a crash", restarted).await;
    let o = common::kubectl(&cp, &["logs", "crasher", "--previous"]).await;
    let prev = out(&o);
    assert!(o.status.success(), "--previous: {}", err(&o));
    assert!(
        prev.contains("container app terminated with exit code"),
        "--previous: {prev}"
    );
    // The previous instance is one before the current: its number is below the restart count.
    let instance: i32 = prev
        .split("instance ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instance number in {prev}"));
    let restarts = pods
        .get("crasher")
        .await
        .expect("get crasher")
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.first().map(|c| c.restart_count))
        .unwrap_or_default();
    assert!(
        instance < restarts,
        "--previous gave instance {instance} of {restarts} restarts"
    );

    // exec, attach, port-forward: a plain message naming the hollow node.
    for args in [
        vec!["exec", "talker", "--", "ls"],
        vec!["attach", "talker"],
        vec!["port-forward", "pod/talker", "18080:80"],
    ] {
        let o = common::kubectl(&cp, &args).await;
        let e = err(&o);
        eprintln!("kubectl {}: {e}", args.join(" "));
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            e.contains(&format!("hollow node {NODE}")) && e.contains("no container runs"),
            "{args:?}: {e}"
        );
    }

    // -f streams until the pod is deleted.
    let mut follow = Command::new("kubectl")
        .env("KUBECONFIG", cp.kubeconfig())
        .args(["logs", "-f", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    // It has written what the container wrote so far and keeps the stream open.
    let stdout = follow.stdout.take().expect("stdout");
    let mut reader = tokio::io::BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(T, async {
        while let Some(line) = reader.next_line().await.expect("read -f") {
            let ready = line.contains("container app is ready");
            seen.push(line);
            if ready {
                break;
            }
        }
    })
    .await
    .expect("kubectl logs -f wrote the log so far");
    assert!(
        seen.iter().any(|l| l == "hello from the script"),
        "-f: {seen:?}"
    );
    assert!(
        follow.try_wait().expect("try_wait").is_none(),
        "kubectl logs -f ended before the pod was deleted"
    );
    pods.delete("talker", &DeleteParams::default())
        .await
        .expect("delete talker");
    let status = tokio::time::timeout(T, follow.wait())
        .await
        .expect("kubectl logs -f ends once the pod is gone")
        .expect("kubectl status");
    assert!(status.success(), "kubectl logs -f: {status}");

    // Direct requests to the kubelet port. `one-node` may proxy to NODE only, by name.
    let everywhere = json!([{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]);
    let by_name = json!([{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"],
        "resourceNames": [NODE]}]);
    for (sa, rules) in [
        ("nobody", None),
        ("reader", Some(everywhere.clone())),
        ("one-node", Some(by_name)),
        ("burst", Some(everywhere)),
    ] {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": sa}})).expect("sa"),
            )
            .await
            .expect("create sa");
        if let Some(rules) = rules {
            let roles: Api<ClusterRole> = Api::all(client.clone());
            let role = json!({"metadata": {"name": sa}, "rules": rules});
            roles
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(role).expect("role"),
                )
                .await
                .expect("create role");
            let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
            let binding = json!({"metadata": {"name": sa},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
                "subjects": [{"kind": "ServiceAccount", "namespace": "default", "name": sa}]});
            bindings
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(binding).expect("binding"),
                )
                .await
                .expect("create binding");
        }
    }
    let nobody = e2e::accounts::token(&client, "default", "nobody")
        .await
        .expect("token");
    let reader = e2e::accounts::token(&client, "default", "reader")
        .await
        .expect("token");
    let one_node = e2e::accounts::token(&client, "default", "one-node")
        .await
        .expect("token");
    let logs = "/containerLogs/default/crasher/app";
    let (code, body) = curl(port, logs, None).await;
    assert_eq!((code, body.as_str()), (401, "Unauthorized"), "anonymous");
    let (code, body) = curl(port, logs, Some("not-a-token")).await;
    assert_eq!(code, 401, "bad token: {body}");
    let (code, body) = curl(port, logs, Some(&nobody)).await;
    assert_eq!(code, 403, "no rights: {body}");
    assert!(
        body.contains("user=system:serviceaccount:default:nobody")
            && body.contains("subresource=proxy"),
        "{body}"
    );
    let (code, body) = curl(port, logs, Some(&reader)).await;
    assert_eq!(code, 200, "nodes/proxy: {body}");
    assert!(body.contains("started on hollow node"), "{body}");
    let (code, body) = curl(port, &format!("{logs}?tailLines=-3"), Some(&reader)).await;
    assert_eq!(code, 400, "bad tailLines: {body}");
    assert!(body.contains("tailLines"), "{body}");
    // A pod that is not on this process's nodes, as the kubelet answers it.
    let (code, body) = curl(port, "/containerLogs/default/elsewhere/app", Some(&reader)).await;
    assert_eq!(code, 404, "other pod: {body}");
    // /stats is nodes/stats: the reader may not.
    let (code, _) = curl(port, "/stats/summary", Some(&reader)).await;
    assert_eq!(code, 403, "nodes/stats is not nodes/proxy");

    // A grant by node name: denied on every node, so the node itself is asked, as its own
    // kubelet would ask. The pod on the other node stays forbidden.
    let mut far = pod("far", json!({}));
    if let Some(spec) = far.spec.as_mut() {
        spec.node_name = Some(format!("{PREFIX}-1"));
    }
    pods.create(&PostParams::default(), &far)
        .await
        .expect("create far");
    wait_pod(&pods, "far", "Running", |p| common::phase(p) == "Running").await;
    let (code, body) = curl(port, logs, Some(&one_node)).await;
    assert_eq!(code, 200, "nodes/proxy on {NODE} by name: {body}");
    let (code, body) = curl(port, "/containerLogs/default/far/app", Some(&one_node)).await;
    assert_eq!(code, 403, "not granted on {PREFIX}-1: {body}");

    // Many requests at once from a new caller cost one TokenReview and one review for every
    // node, shared by all (the kubelet would ask once per node; this process is many).
    let burst_token = e2e::accounts::token(&client, "default", "burst")
        .await
        .expect("token");
    let reviews = || async {
        let (_, text) = common::get(hollow.addr, "/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix("hollow_node_kubelet_auth_reviews_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("hollow_node_kubelet_auth_reviews_total")
    };
    let before = reviews().await;
    let burst = (0..20).map(|_| curl(port, logs, Some(&burst_token)));
    for (code, body) in futures::future::join_all(burst).await {
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(
        reviews().await - before,
        2.0,
        "one TokenReview and one SubjectAccessReview for 20 requests"
    );

    hollow.stop().await;
}
