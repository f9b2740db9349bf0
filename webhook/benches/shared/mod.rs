//! What the webhook benches share: the server on its own thread, the pods they create and the
//! ways they create them (a bare client, or a Deployment through the real ReplicaSet controller).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use webhook::{CertSource, Config, Profile, Strategy};

pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn opts() -> certs::CertOptions {
    let mut o = certs::CertOptions::new("mock-kind-webhook", "mock-kind");
    o.extra_sans = vec!["127.0.0.1".to_owned()];
    o
}

/// Runs the webhook on its own thread and runtime (`workers` = 0: current-thread runtime).
pub fn serve_on_thread(
    config: Config,
    workers: usize,
) -> (CancellationToken, std::thread::JoinHandle<()>) {
    let token = CancellationToken::new();
    let t = token.clone();
    let handle = std::thread::spawn(move || {
        let rt = if workers == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
        }
        .expect("server runtime");
        if let Err(e) = rt.block_on(webhook::run(config, t)) {
            eprintln!("webhook: {e}");
        }
    });
    (token, handle)
}

/// A pod that asks for runAsNonRoot (the webhook patches it), or one that doesn't (the webhook
/// is called and answers without a patch).
pub fn pod(name: &str, non_root: bool) -> Pod {
    let security = if non_root {
        json!({"runAsNonRoot": true})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "webhook"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": security,
            "containers": [{"name": "app", "image": "registry.example/app:1"}],
        }
    }))
    .expect("pod")
}

/// Creates pods `from..from + n`, `concurrency` at a time; with `rate` > 0 also no faster than
/// `rate` per second (as a QPS-limited controller would).
pub async fn create_pods(
    client: &kube::Client,
    ns: &str,
    non_root: bool,
    from: usize,
    n: usize,
    concurrency: usize,
    rate: u64,
) -> Duration {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let started = tokio::time::Instant::now();
    let results: Vec<_> = futures::stream::iter(from..from + n)
        .map(|i| {
            let api = api.clone();
            async move {
                if rate > 0 {
                    let due = started + Duration::from_secs_f64((i - from) as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
                api.create(&PostParams::default(), &pod(&format!("p{i}"), non_root))
                    .await
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    for r in results {
        r.unwrap_or_else(|e| panic!("create pod in {ns}: {e}"));
    }
    elapsed
}

/// Creates a Deployment of `n` runAsNonRoot pods in `ns` and returns how long the real
/// ReplicaSet controller took until a watch saw the last of them.
pub async fn deployment_pods(client: &kube::Client, ns: &str, name: &str, n: usize) -> Duration {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("deployment={name}");
    let watch = kube::runtime::watcher(
        api,
        kube::runtime::watcher::Config::default().labels(&selector),
    );
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": n,
            "selector": {"matchLabels": {"deployment": name}},
            "template": {
                "metadata": {"labels": {"deployment": name, "bench": "webhook"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true},
                    "containers": [{"name": "app", "image": "registry.example/app:1"}],
                }
            }
        }
    }))
    .expect("deployment");
    let mut watch = std::pin::pin!(watch);
    // The watch is open (its initial empty list seen) before the clock starts.
    while let Some(ev) = watch.next().await {
        if matches!(ev, Ok(kube::runtime::watcher::Event::InitDone)) {
            break;
        }
    }
    let started = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap_or_else(|e| panic!("create deployment {ns}/{name}: {e}"));
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n {
        match watch.next().await {
            Some(Ok(kube::runtime::watcher::Event::Apply(p))) => {
                seen.insert(p.metadata.name.unwrap_or_default());
            }
            Some(_) => {}
            None => panic!("pod watch in {ns} ended"),
        }
    }
    started.elapsed()
}

/// The webhook as deployed on a cluster: namespace strategy, self-bootstrapped certificate in
/// `mock-kind/mock-kind-webhook-tls`, reading the apiserver through `kubeconfig`.
pub fn cluster_config(kubeconfig: &Path, profile: Profile, addr: SocketAddr) -> Config {
    Config {
        listen: addr,
        strategy: Strategy::Namespace,
        profile,
        placement: webhook::PlacementMode::None,
        namespace: "mock-kind".into(),
        exclude_namespaces: vec!["kube-system".into(), "mock-kind".into()],
        pod_uid_min: 1_000_000_000,
        pod_uid_max: 1_999_999_999,
        certs: CertSource::Bootstrap(webhook::Bootstrap {
            namespace: "mock-kind".into(),
            secret: "mock-kind-webhook-tls".into(),
            webhook_config: Some("mock-kind-webhook".into()),
            cert: opts(),
            renew_margin: Duration::from_secs(30 * 24 * 3600),
        }),
        cert_check_interval: Duration::from_secs(1),
        kubeconfig: Some(kubeconfig.to_path_buf()),
        server: bench_limits(),
        apiserver_deadline: Duration::from_secs(4),
        uid_block_repair: Duration::ZERO,
        clock: webhook::tls::system_clock(),
    }
}

/// Creates each namespace with its labels and its `default` ServiceAccount (which the
/// controller-manager, when it runs, may have made first).
pub async fn create_namespaces(client: &kube::Client, namespaces: &[(&str, Value)]) {
    let nss: Api<Namespace> = Api::all(client.clone());
    for (name, labels) in namespaces {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("ns");
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        let default: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa");
        match sa.create(&PostParams::default(), &default).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("default service account in {name}: {e}"),
        }
    }
}

/// The deployed MutatingWebhookConfiguration (config/), pointed at `url`.
pub fn deployed_configuration(url: &str) -> Value {
    let path = format!(
        "{}/config/mutatingwebhookconfiguration.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut mwc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("read config")).expect("yaml");
    mwc["webhooks"][0]["clientConfig"] = json!({"url": url});
    mwc
}

/// Waits until a dry-run create of the bench's pod in `ns` comes back `patched`: the
/// apiserver reaches the webhook (caBundle set) and its caches are synced.
pub async fn wait_in_path(client: &kube::Client, ns: &str, patched: fn(&Pod) -> bool) {
    let probe: Api<Pod> = Api::namespaced(client.clone(), ns);
    e2e::wait_for(
        Duration::from_secs(60),
        &format!("{ns}: webhook in the path"),
        || {
            let probe = probe.clone();
            async move {
                let dry = PostParams {
                    dry_run: true,
                    ..Default::default()
                };
                let p = probe.create(&dry, &pod("probe", true)).await?;
                Ok(patched(&p).then_some(()))
            }
        },
    )
    .await
    .expect("webhook in the path");
}

/// The certificate bundle the webhook bootstrapped.
pub async fn serving_bundle(client: &kube::Client) -> certs::Bundle {
    let secret: Secret = Api::namespaced(client.clone(), "mock-kind")
        .get("mock-kind-webhook-tls")
        .await
        .expect("webhook secret");
    certs::cluster::from_secret(&secret).expect("bundle")
}

/// The webhook's server limits, with no drain delay: nothing routes to a bench's server by
/// Endpoints, so its stop need not wait for them.
pub fn bench_limits() -> serving::Limits {
    serving::Limits {
        drain_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(2),
        ..webhook::cli::default_limits()
    }
}
