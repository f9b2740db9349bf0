//! Init containers on hollow nodes, read as a user reads them (real kubectl's STATUS column):
//! two init containers in order (`Init:0/2`, `Init:1/2`), one that fails twice then succeeds
//! (`Init:CrashLoopBackOff`, then Running with the init container's restartCount 2), and one
//! that fails under restartPolicy Never (`Init:Error`, pod Failed), and `PodInitializing` while
//! the main containers start after the init containers (`delayRunning`). A native sidecar
//! (init container with `restartPolicy: Always`) on 1.20: kubectl's schema check refuses the
//! field, and with `--validate=false` the apiserver drops it, so the pod runs its "sidecar" as
//! an ordinary init container.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod};
use kube::api::Api;
use serde_json::json;

/// The STATUS column of `kubectl get pod`.
fn kubectl_status(kubeconfig: &Path, ns: &str, name: &str) -> Option<String> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "pod", name, "-n", ns, "--no-headers"])
        .output()
        .expect("run kubectl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().nth(2).map(str::to_string)
}

fn pod(name: &str, annotations: serde_json::Value, policy: &str, inits: &[&str]) -> Pod {
    let inits: Vec<serde_json::Value> = inits
        .iter()
        .map(|n| json!({"name": n, "image": "busybox"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"automountServiceAccountToken": false, "restartPolicy": policy,
            "initContainers": inits, "containers": [{"name": "app", "image": "nginx"}]}
    }))
    .expect("pod")
}

/// A pod with a native sidecar as a user writes it for a 1.29+ cluster.
const SIDECAR_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: with-sidecar
  namespace: init
  annotations: {mock-kind.io/initRun.proxy: 2s}
spec:
  automountServiceAccountToken: false
  initContainers:
  - {name: proxy, image: envoyproxy/envoy:v1.29.0, restartPolicy: Always}
  containers: [{name: app, image: nginx}]
"#;

/// `kubectl create -f -` of `manifest` with `extra` flags: (success, stderr).
fn kubectl_create(kubeconfig: &Path, manifest: &str, extra: &[&str]) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["create", "-f", "-"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The status of the pod's first init container.
fn first_init(p: &Pod) -> &ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|c| c.first())
        .expect("init status")
}

/// (reason, exit code) of a terminated state.
fn ended(state: Option<&ContainerState>) -> Option<(Option<&str>, i32)> {
    let t = state?.terminated.as_ref()?;
    Some((t.reason.as_deref(), t.exit_code))
}

/// Polls kubectl's STATUS of `name` until it shows `last`; returns every STATUS seen.
async fn statuses_until(kubeconfig: &Path, name: &str, last: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let seen_ref = &mut seen;
    e2e::wait_for(
        Duration::from_secs(90),
        &format!("kubectl shows {name} {last}"),
        || {
            let s = kubectl_status(kubeconfig, "init", name);
            if let Some(s) = &s {
                seen_ref.insert(s.clone());
            }
            async move { Ok((s.as_deref() == Some(last)).then_some(())) }
        },
    )
    .await
    .expect(last);
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn init_containers_as_kubectl_shows_them() {
    let (cp, hollow) = common::cluster("hn-init", 2, "init").await;
    let client = cp.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "init");
    let kubeconfig = cp.kubeconfig();
    for p in [
        pod(
            "ordered",
            json!({"mock-kind.io/initRun.migrate": "4s", "mock-kind.io/initRun.setup": "4s"}),
            "Always",
            &["migrate", "setup"],
        ),
        pod(
            "flaky-init",
            json!({"mock-kind.io/initRun.migrate": "1s", "mock-kind.io/initFailures.migrate": "2"}),
            "Always",
            &["migrate"],
        ),
        pod(
            "broken-init",
            json!({"mock-kind.io/initRun.migrate": "1s", "mock-kind.io/initFailures.migrate": "1"}),
            "Never",
            &["migrate"],
        ),
    ] {
        pods.create(&Default::default(), &p)
            .await
            .expect("create pod");
    }

    let seen = statuses_until(&kubeconfig, "ordered", "Running").await;
    for want in ["Init:0/2", "Init:1/2"] {
        assert!(
            seen.contains(want),
            "ordered: kubectl showed {seen:?}, not {want}"
        );
    }

    // Fails at 1 s (restarted at once), at 2 s (10 s back-off), completes at 13 s.
    let seen = statuses_until(&kubeconfig, "flaky-init", "Running").await;
    assert!(
        seen.contains("Init:CrashLoopBackOff"),
        "flaky-init: kubectl showed {seen:?}"
    );
    let p = pods.get("flaky-init").await.expect("get flaky-init");
    let init = first_init(&p);
    assert_eq!(init.restart_count, 2);
    assert_eq!(ended(init.state.as_ref()), Some((Some("Completed"), 0)));
    assert_eq!(ended(init.last_state.as_ref()), Some((Some("Error"), 1)));
    assert!(common::pod_ready(&p));

    // Init completed at 1 s, the app starts at 9 s: PodInitializing in between (created now:
    // the checks above outlast it).
    let initializing = pod(
        "initializing",
        json!({"mock-kind.io/initRun.migrate": "1s", "mock-kind.io/delayRunning": "8s"}),
        "Always",
        &["migrate"],
    );
    pods.create(&Default::default(), &initializing)
        .await
        .expect("create initializing");
    let seen = statuses_until(&kubeconfig, "initializing", "Running").await;
    assert!(
        seen.contains("PodInitializing"),
        "initializing: kubectl showed {seen:?}"
    );

    statuses_until(&kubeconfig, "broken-init", "Init:Error").await;
    let p = pods.get("broken-init").await.expect("get broken-init");
    assert_eq!(common::phase(&p), "Failed");

    // A native sidecar on 1.20: kubectl validates against the 1.20 schema and refuses the
    // field; past that check, the apiserver drops it.
    let (ok, stderr) = kubectl_create(&kubeconfig, SIDECAR_POD, &[]);
    assert!(
        !ok && stderr.contains("restartPolicy"),
        "kubectl create of a sidecar pod on 1.20: ok={ok} {stderr}"
    );
    let (ok, stderr) = kubectl_create(&kubeconfig, SIDECAR_POD, &["--validate=false"]);
    assert!(ok, "kubectl create --validate=false: {stderr}");
    let seen = statuses_until(&kubeconfig, "with-sidecar", "Running").await;
    assert!(
        seen.contains("Init:0/1"),
        "with-sidecar: kubectl showed {seen:?}"
    );
    let p = pods.get("with-sidecar").await.expect("get with-sidecar");
    let spec_init = p
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|c| c.first())
        .expect("init container");
    assert_eq!(
        spec_init.restart_policy, None,
        "the 1.20 apiserver keeps no container restartPolicy"
    );
    let proxy = first_init(&p);
    assert_eq!(
        ended(proxy.state.as_ref()),
        Some((Some("Completed"), 0)),
        "on 1.20 the sidecar ran to completion as an init container: {proxy:?}"
    );

    hollow.stop().await;
}
