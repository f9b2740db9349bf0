//! `metrics.k8s.io` served by hollow-node through the real apiserver's aggregator, read by the
//! real kubectl and the real controller-manager's HPA: `kubectl top pods` shows each pod's
//! `mock-kind.io/usage` (or half its requests), `kubectl top nodes` the sum plus the fixed
//! overhead, a changed annotation shows at once, a bad one gives an InvalidAnnotation Warning,
//! a caller without the front proxy's certificate gets 401, protobuf (what kubectl and the
//! HPA ask for first) and JSON answers agree,
//! and an HPA scales a Deployment from 2 to 6 replicas when the annotation rises and back to
//! 2 when it falls.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::process::Command;

const PREFIX: &str = "hn-top";
const NS: &str = "top";
const T: Duration = Duration::from_secs(120);
/// The HPA's whole run: a rollout, a few sync periods, the stabilization window.
const HPA_T: Duration = Duration::from_secs(240);

async fn kubectl(cp: &e2e::ControlPlane, args: &[&str]) -> (bool, String, String) {
    let o = Command::new("kubectl")
        .env("KUBECONFIG", cp.kubeconfig())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run kubectl");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `kubectl top` rows without headers: name → (cpu, memory) as kubectl prints them (`top
/// nodes` has a percentage after each).
fn rows(text: &str) -> BTreeMap<String, (String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (cpu, mem) = match f.len() {
                3 => (f[1], f[2]),
                5 => (f[1], f[3]),
                _ => return None,
            };
            Some((f[0].to_string(), (cpu.to_string(), mem.to_string())))
        })
        .collect()
}

/// Waits until `kubectl top <args>` prints `want` (the rows it names; others are ignored).
async fn wait_top(cp: &e2e::ControlPlane, args: &[&str], want: &[(&str, &str, &str)]) {
    let mut full = vec!["top"];
    full.extend_from_slice(args);
    full.push("--no-headers");
    let full = &full;
    let last = std::sync::Mutex::new(String::new());
    let last_ref = &last;
    let got = e2e::wait_for(T, &format!("kubectl {}", full.join(" ")), || async move {
        let (ok, out, err) = kubectl(cp, full).await;
        if let Ok(mut l) = last_ref.lock() {
            *l = format!("{out}{err}");
        }
        let rows = rows(&out);
        let all = want.iter().all(|(n, c, m)| {
            rows.get(*n)
                .is_some_and(|(rc, rm)| (rc.as_str(), rm.as_str()) == (*c, *m))
        });
        Ok((ok && all).then_some(()))
    })
    .await;
    let seen = last.lock().map(|l| l.clone()).unwrap_or_default();
    got.unwrap_or_else(|e| panic!("{e}; kubectl printed:\n{seen}"));
}

fn pod(name: &str, node: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "busybox",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
        },
    }))
    .expect("pod")
}

async fn wait_replicas(deploys: &Api<Deployment>, want: i32, what: &str) {
    e2e::wait_for(HPA_T, what, || async move {
        let d = deploys.get("web").await?;
        let spec = d.spec.as_ref().and_then(|s| s.replicas);
        Ok((spec == Some(want)).then_some(()))
    })
    .await
    .expect(what);
}

async fn set_template_usage(deploys: &Api<Deployment>, value: &str) {
    let patch =
        json!({"spec": {"template": {"metadata": {"annotations": {"mock-kind.io/usage": value}}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch deployment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_and_hpa_read_the_usage_annotation() {
    let cp = e2e::ControlPlane::start(e2e::Options {
        extra_controller_manager_args: vec![
            "--horizontal-pod-autoscaler-sync-period=2s".into(),
            "--horizontal-pod-autoscaler-downscale-stabilization=5s".into(),
            "--horizontal-pod-autoscaler-cpu-initialization-period=10s".into(),
        ],
        ..e2e::Options::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    let port = e2e::free_port();
    let mut config = common::config(&cp, PREFIX, 2);
    config.metrics_api = hollow_node::metrics_api::MetricsApi {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        client_ca_file: Some(cp.front_proxy_ca_file()),
        allowed_names: vec!["front-proxy-client".into()],
    };
    let hollow = common::start(config).await;
    common::wait_nodes_ready(&client, PREFIX, 2, T).await;
    e2e::metrics_api::register(&client, port)
        .await
        .expect("register the APIService");
    e2e::metrics_api::wait_available(&client, T)
        .await
        .expect("metrics API available");

    // Only the aggregator (a front-proxy client certificate) is let in.
    let (code, _) = e2e::process::curl_insecure(
        &format!("https://127.0.0.1:{port}/apis/metrics.k8s.io/v1beta1/nodes"),
        None,
    )
    .await
    .expect("run curl");
    assert_eq!(code, 401, "no client certificate");

    common::create_namespace(&client, NS).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let node0 = format!("{PREFIX}-0");
    for p in [
        pod(
            "annotated",
            &node0,
            json!({"mock-kind.io/usage": "cpu=250m,memory=300Mi"}),
        ),
        pod("plain", &node0, json!({})),
        pod(
            "bad",
            &format!("{PREFIX}-1"),
            json!({"mock-kind.io/usage": "cpu=lots"}),
        ),
    ] {
        pods.create(&PostParams::default(), &p)
            .await
            .expect("create pod");
    }
    for app in ["annotated", "plain", "bad"] {
        common::wait_running(&client, NS, &format!("app={app}"), 1, T).await;
    }

    // The annotation's values; without one, half of the requests (100m, 64Mi); a bad value
    // counts as absent.
    let top_pods = ["pods", "-n", NS];
    wait_top(
        &cp,
        &top_pods,
        &[
            ("annotated", "250m", "300Mi"),
            ("plain", "50m", "32Mi"),
            ("bad", "50m", "32Mi"),
        ],
    )
    .await;
    // Node = its pods + 100m / 256Mi overhead.
    let n1 = format!("{PREFIX}-1");
    wait_top(
        &cp,
        &["nodes"],
        &[(&node0, "400m", "588Mi"), (&n1, "150m", "288Mi")],
    )
    .await;
    // A label selector narrows the list, as `kubectl top pods -l` sends it.
    let (ok, out, err) = kubectl(
        &cp,
        &["top", "pods", "-n", NS, "-l", "app=plain", "--no-headers"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(rows(&out).keys().collect::<Vec<_>>(), ["plain"], "{out}");

    // kubectl asks for protobuf (`--use-protocol-buffers`, on by default) and the rows above
    // were decoded from it; the apiserver's aggregator hands it on as metrics-server's would
    // be. Asked for JSON, the same rows.
    let req = http::Request::get(format!("/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods"))
        .header("Accept", "application/vnd.kubernetes.protobuf, */*")
        .body(kube::client::Body::empty())
        .expect("request");
    let resp = client.send(req).await.expect("protobuf list");
    let content_type = resp.headers().get("content-type").cloned();
    let body = resp.into_body().collect_bytes().await.expect("body");
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/vnd.kubernetes.protobuf")
    );
    assert!(body.starts_with(b"k8s\0"), "the protobuf envelope");
    let (ok, json_rows, err) = kubectl(
        &cp,
        &[
            "top",
            "pods",
            "-n",
            NS,
            "--use-protocol-buffers=false",
            "--no-headers",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, proto_rows, err) = kubectl(&cp, &["top", "pods", "-n", NS, "--no-headers"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        rows(&json_rows),
        rows(&proto_rows),
        "JSON and protobuf agree"
    );

    // Changed at run time: read from the pod as the watch delivers it.
    let (ok, _, err) = kubectl(
        &cp,
        &[
            "annotate",
            "--overwrite",
            "-n",
            NS,
            "pod/annotated",
            "mock-kind.io/usage=cpu=1500m,memory=1Gi",
        ],
    )
    .await;
    assert!(ok, "{err}");
    wait_top(&cp, &top_pods, &[("annotated", "1500m", "1024Mi")]).await;

    // The bad value is reported as the other lifecycle annotations are.
    e2e::wait_for(T, "InvalidAnnotation event for pod bad", || async {
        let (_, out, _) = kubectl(
            &cp,
            &[
                "get",
                "events",
                "-n",
                NS,
                "--field-selector",
                "reason=InvalidAnnotation,involvedObject.name=bad",
                "-o",
                "name",
            ],
        )
        .await;
        Ok((!out.trim().is_empty()).then_some(()))
    })
    .await
    .expect("InvalidAnnotation event");

    // The real HPA: 2 → 6 when usage rises above the target, back to 2 when it falls.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let mut d = common::deployment("web", 2);
    if let Some(c) = d
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|s| s.containers.first_mut())
    {
        c.resources =
            serde_json::from_value(json!({"requests": {"cpu": "100m", "memory": "64Mi"}})).ok();
    }
    deploys
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    set_template_usage(&deploys, "cpu=20m").await;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 6,
            "targetCPUUtilizationPercentage": 50,
        },
    }))
    .expect("hpa");
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &hpa)
        .await
        .expect("create hpa");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), NS);
    e2e::wait_for(HPA_T, "HPA reads a utilization of 20%", || async {
        let h = hpas.get("web").await?;
        let util = h.status.and_then(|s| s.current_cpu_utilization_percentage);
        Ok((util == Some(20)).then_some(()))
    })
    .await
    .expect("HPA reads the metrics API");
    wait_replicas(&deploys, 2, "2 replicas at 20%").await;

    set_template_usage(&deploys, "cpu=300m").await;
    wait_replicas(&deploys, 6, "HPA scales up to 6 at 300%").await;
    common::wait_running(&client, NS, "app=web", 6, HPA_T).await;

    set_template_usage(&deploys, "cpu=10m").await;
    wait_replicas(&deploys, 2, "HPA scales back to 2 at 10%").await;

    hollow.stop().await;
}
