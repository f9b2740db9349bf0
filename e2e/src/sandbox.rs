//! `make sandbox`: the whole of mock-kind on a real local control plane, without Docker. The
//! extender is wired into the real kube-scheduler; webhook, extender and hollow nodes run as local
//! processes; a demonstration is applied and summarised.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::deploy_rbac;
use crate::process::Component;
use crate::wait::{free_port, http_ok, wait_for};
use crate::{ControlPlane, Error, Options};

/// The demonstration's names, shared by the code that applies it and the summary that checks it.
pub const SPOOFED_NS: &str = "demo-operator";
pub const PLAIN_NS: &str = "demo-plain";
pub const DEPLOYMENT: &str = "example-operator";
pub const EXCLUDED_POD: &str = "metrics-collector";
pub const EXCLUDED_PATTERN: &str = "^metrics-";
pub const PLAIN_POD: &str = "plain-web";
pub const REAL_PREFIX: &str = "real";
pub const HOLLOW_PREFIX: &str = "hollow";
const WEBHOOK_NS: &str = "mock-kind";
const WEBHOOK_CONFIG: &str = "mock-kind-webhook";

/// Who places pods: the extender wired into kube-scheduler, or the webhook's affinity mode with
/// a stock kube-scheduler (no extender runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    #[default]
    Extender,
    Affinity,
}

impl Placement {
    /// The deploy/ overlay that installs this mode.
    pub fn overlay(self) -> &'static str {
        match self {
            Placement::Extender => "kind",
            Placement::Affinity => "affinity",
        }
    }
}

/// The taint hollow nodes carry in affinity mode (placement::affinity::HOLLOW_TAINT): key,
/// value, effect.
const HOLLOW_TAINT: [&str; 3] = ["mock-kind.io/hollow", "true", "NoSchedule"];

#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Extender or affinity mode.
    pub placement: Placement,
    /// Hollow nodes (spoofed) to register.
    pub nodes: usize,
    /// Replicas of the demonstration's operator-style Deployment.
    pub replicas: i32,
    /// Where mock-kind-scheduler, mock-kind-webhook and hollow-node were built.
    pub service_bin_dir: PathBuf,
    /// How long to wait for the demonstration to settle.
    pub timeout: Duration,
}

/// Everything the sandbox started; dropping it stops the services, then the control plane.
pub struct Sandbox {
    services: Vec<Component>,
    pub control_plane: ControlPlane,
    pub ports: BTreeMap<&'static str, u16>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in &self.services {
                eprintln!("--- {} ---\n{}", s.name, s.tail(30));
            }
        }
        while let Some(mut s) = self.services.pop() {
            s.terminate(Duration::from_secs(5));
        }
    }
}

fn step(msg: &str) {
    eprintln!("sandbox: {msg}");
}

impl Sandbox {
    pub async fn start(opts: &SandboxOptions) -> Result<Self, Error> {
        for bin in ["mock-kind-scheduler", "mock-kind-webhook", "hollow-node"] {
            let path = opts.service_bin_dir.join(bin);
            if !path.is_file() {
                return Err(Error::Binaries(format!(
                    "{} not built: run `cargo build --workspace --bins` (or `make sandbox`)",
                    path.display()
                )));
            }
        }
        let extender_port = free_port();
        let extenders = match opts.placement {
            Placement::Extender => {
                step(
                    "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler (extender wired in)",
                );
                vec![json!({
                    "urlPrefix": format!("http://127.0.0.1:{extender_port}/"),
                    "filterVerb": "filter",
                    "preemptVerb": "preempt",
                    "nodeCacheCapable": true,
                    "ignorable": false,
                    "weight": 1,
                })]
            }
            Placement::Affinity => {
                step(
                    "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler (stock: affinity mode, no extender)",
                );
                Vec::new()
            }
        };
        let cp = ControlPlane::start(Options {
            extenders,
            client_qps: 200,
            // Shows whether deploy/'s RBAC refused any request of the services (summary).
            audit_log: true,
            ..Options::default()
        })
        .await?;
        let mut sandbox = Sandbox {
            services: Vec::new(),
            control_plane: cp,
            ports: BTreeMap::from([("extender", extender_port)]),
        };
        sandbox.start_services(opts).await?;
        Ok(sandbox)
    }

    async fn start_services(&mut self, opts: &SandboxOptions) -> Result<(), Error> {
        let client = self.control_plane.client();
        let dir = self.control_plane.dir().to_path_buf();
        let bin = |name: &str| opts.service_bin_dir.join(name);
        let listen = |port: u16| format!("127.0.0.1:{port}");
        // Each service under its own ServiceAccount with deploy/'s RBAC, as an installation
        // runs it: the demonstration then also shows that those rights are enough.
        step(&format!(
            "applying the RBAC of deploy/overlays/{} (each service runs as its ServiceAccount)",
            opts.placement.overlay()
        ));
        let rbac = deploy_rbac::render(opts.placement.overlay())?;
        deploy_rbac::apply(
            &self.control_plane,
            &deploy_rbac::of_kinds(&rbac, &deploy_rbac::RBAC_KINDS),
        )?;
        let kubeconfigs = deploy_rbac::kubeconfigs(&self.control_plane).await?;
        let as_account = |path: &Path| path.display().to_string();

        let extender_port = self.ports["extender"];
        if opts.placement == Placement::Extender {
            step("starting the scheduler extender");
            self.spawn(
                "mock-kind-scheduler",
                &bin("mock-kind-scheduler"),
                &[
                    "--listen".into(),
                    listen(extender_port),
                    "--kubeconfig".into(),
                    as_account(&kubeconfigs.scheduler),
                    // No Service Endpoints to leave here: stop at once on Ctrl-C.
                    "--drain-delay-seconds".into(),
                    "0".into(),
                ],
                &dir,
            )?;
        }

        step("starting the admission webhook (it bootstraps its own certificate)");
        ensure_namespace(&client, WEBHOOK_NS, BTreeMap::new()).await?;
        let webhook_port = free_port();
        self.ports.insert("webhook", webhook_port);
        create_webhook_config(&client, webhook_port, opts.placement).await?;
        let placement = match opts.placement {
            Placement::Extender => "none",
            Placement::Affinity => "affinity",
        };
        self.spawn(
            "mock-kind-webhook",
            &bin("mock-kind-webhook"),
            &[
                "--placement".into(),
                placement.into(),
                "--listen".into(),
                listen(webhook_port),
                "--kubeconfig".into(),
                as_account(&kubeconfigs.webhook),
                "--namespace".into(),
                WEBHOOK_NS.into(),
                "--extra-san".into(),
                "127.0.0.1".into(),
                "--webhook-config".into(),
                WEBHOOK_CONFIG.into(),
                "--drain-delay-seconds".into(),
                "0".into(),
            ],
            &dir,
        )?;

        // The hollow nodes are a HollowNodePool, as `make deploy`'s kind overlay declares them;
        // the real-looking node stays on the flags, which still work without the CRD.
        step(&format!(
            "declaring HollowNodePool {HOLLOW_PREFIX} with {} nodes; starting hollow-node --pool {HOLLOW_PREFIX} and 1 real-looking node",
            opts.nodes
        ));
        crate::pools::install_crd(&self.control_plane)?;
        let taints = match opts.placement {
            Placement::Extender => json!([]),
            Placement::Affinity => json!([{
                "key": HOLLOW_TAINT[0],
                "value": HOLLOW_TAINT[1],
                "effect": HOLLOW_TAINT[2],
            }]),
        };
        crate::pools::apply(
            &self.control_plane,
            &json!({
                "apiVersion": "mock-kind.io/v1alpha1",
                "kind": "HollowNodePool",
                "metadata": {"name": HOLLOW_PREFIX},
                "spec": {"replicas": opts.nodes, "template": {"taints": taints}},
            }),
        )?;
        let hollow_port = free_port();
        self.ports.insert("hollow-node", hollow_port);
        // `kubectl top` and HPAs: this process serves metrics.k8s.io on loopback, where the
        // aggregator reaches it through an ExternalName Service on `localhost`. It knows only
        // its own nodes: the real-looking node's process has no metrics.
        let metrics_port = free_port();
        self.ports.insert("metrics-api", metrics_port);
        let front_proxy_ca = self.control_plane.front_proxy_ca_file();
        self.spawn(
            "hollow-node",
            &bin("hollow-node"),
            &[
                "--pool".into(),
                HOLLOW_PREFIX.into(),
                "--replica-name".into(),
                "hollow-node-0".into(),
                // Its membership Lease, where deploy/'s RBAC lets the hollow node keep it.
                "--pool-namespace".into(),
                "mock-kind".into(),
                "--internal-ip".into(),
                "127.0.0.2".into(),
                "--listen".into(),
                listen(hollow_port),
                "--kubeconfig".into(),
                as_account(&kubeconfigs.hollow_node),
                "--kube-api-qps".into(),
                "200".into(),
                "--kube-api-burst".into(),
                "400".into(),
                "--metrics-api-port".into(),
                metrics_port.to_string(),
                "--metrics-api-bind-address".into(),
                "127.0.0.1".into(),
                "--requestheader-client-ca-file".into(),
                front_proxy_ca.display().to_string(),
            ],
            &dir,
        )?;
        let real_port = free_port();
        self.ports.insert("hollow-node-real", real_port);
        self.spawn(
            "hollow-node-real",
            &bin("hollow-node"),
            &[
                "--nodes".into(),
                "1".into(),
                "--node-prefix".into(),
                REAL_PREFIX.into(),
                "--spoofed=false".into(),
                // The last /24 of hollow-node's default 10.128.0.0/9: clear of the hollow
                // process's blocks 0..nodes.
                "--replica-index".into(),
                "32767".into(),
                "--internal-ip".into(),
                "127.0.0.3".into(),
                "--listen".into(),
                listen(real_port),
                "--kubeconfig".into(),
                as_account(&kubeconfigs.hollow_node),
            ],
            &dir,
        )?;

        let mut services = vec![
            ("mock-kind-webhook", webhook_port),
            ("hollow-node", hollow_port),
            ("hollow-node-real", real_port),
        ];
        if opts.placement == Placement::Extender {
            services.push(("mock-kind-scheduler", extender_port));
        }
        for (name, port) in services {
            self.wait_healthy(name, port).await?;
        }
        step("registering hollow-node's metrics.k8s.io (kubectl top, HPA)");
        crate::metrics_api::register(&client, metrics_port).await?;
        crate::metrics_api::wait_available(&client, Duration::from_secs(60)).await?;
        let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        wait_for(Duration::from_secs(60), "the webhook's caBundle", || {
            let configs = configs.clone();
            async move {
                let c = configs.get(WEBHOOK_CONFIG).await?;
                let filled = c.webhooks.unwrap_or_default().iter().all(|w| {
                    w.client_config
                        .ca_bundle
                        .as_ref()
                        .is_some_and(|b| !b.0.is_empty())
                });
                Ok(filled.then_some(()))
            }
        })
        .await?;
        Ok(())
    }

    fn spawn(&mut self, name: &str, bin: &Path, args: &[String], dir: &Path) -> Result<(), Error> {
        let log = dir.join(format!("{name}.log"));
        self.services.push(Component::spawn(name, bin, args, &log)?);
        Ok(())
    }

    async fn wait_healthy(&mut self, name: &str, port: u16) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok();
            // The webhook serves TLS only: a TCP connect tells it is up; the others answer HTTP.
            if (name == "mock-kind-webhook" && tcp) || http_ok(port, "/healthz").await {
                return Ok(());
            }
            let svc = self.services.iter_mut().find(|s| s.name == name);
            if let Some(svc) = svc {
                if let Some(status) = svc.exited() {
                    return Err(Error::Start {
                        component: name.into(),
                        reason: format!("exited with {status}"),
                        log: svc.log.clone(),
                        tail: svc.tail(30),
                    });
                }
                if Instant::now() > deadline {
                    return Err(Error::Start {
                        component: name.into(),
                        reason: "no /healthz within 60s".into(),
                        log: svc.log.clone(),
                        tail: svc.tail(30),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Applies the demonstration and waits until it has settled (or the timeout passes).
    pub async fn demonstrate(&self, opts: &SandboxOptions) -> Result<Summary, Error> {
        let client = self.control_plane.client();
        step("waiting for the nodes to be Ready and untainted");
        let nodes: Api<Node> = Api::all(client.clone());
        let want = opts.nodes + 1;
        wait_for(opts.timeout, &format!("{want} Ready nodes"), || {
            let nodes = nodes.clone();
            async move {
                let list = nodes.list(&ListParams::default()).await?;
                let ready = list.items.iter().filter(|n| schedulable(n)).count();
                Ok((ready >= want).then_some(()))
            }
        })
        .await?;

        step(&format!(
            "applying the demonstration: namespace {SPOOFED_NS} (spoofed) with a {}-replica operator, an excluded pod, and namespace {PLAIN_NS}",
            opts.replicas
        ));
        ensure_namespace(
            &client,
            SPOOFED_NS,
            BTreeMap::from([
                ("spoofed".to_string(), "true".to_string()),
                (
                    "spoofed_excluded_pods".to_string(),
                    EXCLUDED_PATTERN.to_string(),
                ),
            ]),
        )
        .await?;
        ensure_namespace(&client, PLAIN_NS, BTreeMap::new()).await?;
        create_if_absent(
            &Api::<Deployment>::namespaced(client.clone(), SPOOFED_NS),
            demo_deployment(opts.replicas),
        )
        .await?;
        create_if_absent(
            &Api::<Pod>::namespaced(client.clone(), SPOOFED_NS),
            demo_pod(EXCLUDED_POD),
        )
        .await?;
        create_if_absent(
            &Api::<Pod>::namespaced(client.clone(), PLAIN_NS),
            demo_pod(PLAIN_POD),
        )
        .await?;

        step("waiting for the pods to run");
        let started = Instant::now();
        let last_running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
        let settled = wait_for(opts.timeout, "the demonstration to settle", || {
            let client = client.clone();
            let replicas = opts.replicas;
            let last_running = last_running.clone();
            async move {
                let s = Summary::collect(&client, replicas).await?;
                let running = s.operator_pods_running;
                if last_running.swap(running, std::sync::atomic::Ordering::Relaxed) != running {
                    step(&format!("{running}/{replicas} operator pods Running"));
                }
                Ok(s.problems().is_empty().then_some(s))
            }
        })
        .await;
        let mut summary = match settled {
            Ok(s) => s,
            // Show what was reached; the caller reports the problems.
            Err(Error::Timeout { .. }) => Summary::collect(&client, opts.replicas).await?,
            Err(e) => return Err(e),
        };
        summary.settle_seconds = started.elapsed().as_secs_f64();
        let (ours, refused) = deploy_rbac::services_records(self.control_plane.audit_records()?);
        summary.rbac = Some(Rbac {
            overlay: opts.placement.overlay(),
            requests: ours.len(),
            refused_requests: refused.len(),
            refused: refused
                .iter()
                .map(|r| {
                    let sub = if r.subresource.is_empty() {
                        String::new()
                    } else {
                        format!("/{}", r.subresource)
                    };
                    format!("{} {}{sub} by {}", r.verb, r.resource, r.user)
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        });
        Ok(summary)
    }
}

fn schedulable(n: &Node) -> bool {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == "node.kubernetes.io/not-ready"));
    ready && !tainted
}

fn is_spoofed(n: &Node) -> bool {
    n.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("spoofed"))
        .is_some_and(|v| v == "true")
}

async fn ensure_namespace(
    client: &kube::Client,
    name: &str,
    annotations: BTreeMap<String, String>,
) -> Result<(), Error> {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations }
    }))
    .map_err(|e| Error::Binaries(format!("namespace {name}: {e}")))?;
    create_if_absent(&Api::all(client.clone()), ns).await
}

async fn create_if_absent<K>(api: &Api<K>, obj: K) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + fmt::Debug,
{
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn create_webhook_config(
    client: &kube::Client,
    port: u16,
    placement: Placement,
) -> Result<(), Error> {
    // The deploy/ configuration points at the in-cluster Service; locally the apiserver calls
    // the webhook process on loopback. caBundle is left empty for the webhook's bootstrap to fill.
    let rules = json!([{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                         "resources": ["pods"], "scope": "Namespaced" }]);
    let namespace_selector = json!({ "matchExpressions": [
        { "key": "kubernetes.io/metadata.name", "operator": "NotIn",
          "values": ["kube-system", "kube-node-lease", WEBHOOK_NS] },
        { "key": "mock-kind.io/webhook", "operator": "NotIn", "values": ["disabled"] }
    ]});
    let mut webhooks = vec![json!({
        "name": "uids.mock-kind.io",
        "admissionReviewVersions": ["v1"],
        "clientConfig": { "url": format!("https://127.0.0.1:{port}/mutate") },
        "rules": rules,
        "namespaceSelector": namespace_selector,
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": 5,
        "reinvocationPolicy": "IfNeeded",
        "failurePolicy": "Ignore",
    })];
    // As deploy/overlays/affinity/placement-webhook.yaml: a pod that was not placed must not
    // be created (failurePolicy Fail), the pod's controller retries.
    if placement == Placement::Affinity {
        webhooks.push(json!({
            "name": "placement.mock-kind.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": { "url": format!("https://127.0.0.1:{port}/place") },
            "rules": rules,
            "namespaceSelector": namespace_selector,
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
            "failurePolicy": "Fail",
        }));
    }
    let cfg: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": { "name": WEBHOOK_CONFIG },
        "webhooks": webhooks,
    }))
    .map_err(|e| Error::Binaries(format!("webhook configuration: {e}")))?;
    create_if_absent(&Api::all(client.clone()), cfg).await
}

fn pod_spec() -> serde_json::Value {
    json!({
        "automountServiceAccountToken": false,
        "securityContext": { "runAsNonRoot": true },
        "containers": [{
            "name": "manager",
            "image": "quay.io/example/operator:v1.0.0",
            "resources": { "requests": { "cpu": "10m", "memory": "32Mi" } },
        }],
    })
}

fn demo_deployment(replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": DEPLOYMENT },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": DEPLOYMENT } },
            "template": { "metadata": { "labels": { "app": DEPLOYMENT } }, "spec": pod_spec() },
        }
    }))
    .unwrap_or_default()
}

fn demo_pod(name: &str) -> Pod {
    serde_json::from_value(json!({ "metadata": { "name": name }, "spec": pod_spec() }))
        .unwrap_or_default()
}

/// What the demonstration reached, in facts a person (and the sandbox test) can check.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub hollow_nodes_ready: usize,
    pub hollow_nodes: usize,
    /// `status.readyNodes` of the HollowNodePool the hollow nodes come from.
    pub pool_ready_nodes: Option<i64>,
    pub real_nodes_ready: usize,
    pub replicas: i32,
    pub operator_pods_running: usize,
    pub operator_pods_on_hollow: usize,
    pub operator_pods_on_real: usize,
    pub operator_nodes_used: usize,
    pub operator_uids: BTreeSet<i64>,
    pub uid_range: Option<String>,
    pub excluded_pod_node: Option<String>,
    pub excluded_pod_node_spoofed: Option<bool>,
    pub excluded_pod_phase: Option<String>,
    pub plain_pod_node: Option<String>,
    pub plain_pod_node_spoofed: Option<bool>,
    pub plain_pod_phase: Option<String>,
    pub extender_rejections: Vec<String>,
    /// `kubectl logs` of one operator pod on a hollow node: (pod, its first line or the error).
    pub hollow_pod_log: Option<(String, String)>,
    /// What `kubectl top nodes` reads: how many NodeMetrics metrics.k8s.io lists, or its error.
    pub node_metrics: Option<Result<usize, String>>,
    /// The services' requests under deploy/'s RBAC, from the audit log: how many, and what
    /// was refused (`verb resource by account`, each once). None until read, after settling.
    pub rbac: Option<Rbac>,
    pub settle_seconds: f64,
}

/// What the audit log says of the services' requests.
#[derive(Clone, Debug, Default)]
pub struct Rbac {
    pub overlay: &'static str,
    pub requests: usize,
    pub refused_requests: usize,
    pub refused: Vec<String>,
}

impl Summary {
    pub async fn collect(client: &kube::Client, replicas: i32) -> Result<Self, Error> {
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let spoofed: BTreeMap<String, bool> = nodes
            .iter()
            .map(|n| (n.metadata.name.clone().unwrap_or_default(), is_spoofed(n)))
            .collect();
        let pools = Api::<kube::api::DynamicObject>::all_with(
            client.clone(),
            &kube::api::ApiResource {
                group: "mock-kind.io".into(),
                version: "v1alpha1".into(),
                api_version: "mock-kind.io/v1alpha1".into(),
                kind: "HollowNodePool".into(),
                plural: "hollownodepools".into(),
            },
        );
        let pool_ready_nodes = pools.get_opt(HOLLOW_PREFIX).await?.and_then(|p| {
            p.data
                .pointer("/status/readyNodes")
                .and_then(|v| v.as_i64())
        });
        let mut s = Summary {
            replicas,
            pool_ready_nodes,
            ..Summary::default()
        };
        for n in &nodes {
            match (is_spoofed(n), schedulable(n)) {
                (true, ready) => {
                    s.hollow_nodes += 1;
                    s.hollow_nodes_ready += usize::from(ready);
                }
                (false, true) => s.real_nodes_ready += 1,
                (false, false) => {}
            }
        }
        let pods = Api::<Pod>::namespaced(client.clone(), SPOOFED_NS)
            .list(&ListParams::default())
            .await?
            .items;
        let mut used = BTreeSet::new();
        let on_hollow = pods.iter().find(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .and_then(|n| spoofed.get(n))
                    == Some(&true)
        });
        if let Some(name) = on_hollow.and_then(|p| p.metadata.name.clone()) {
            // What `kubectl logs` reads: the apiserver asks the hollow node's kubelet API.
            let api = Api::<Pod>::namespaced(client.clone(), SPOOFED_NS);
            let first = match api.logs(&name, &Default::default()).await {
                Ok(text) => text.lines().next().unwrap_or_default().to_string(),
                Err(e) => format!("error: {e}"),
            };
            s.hollow_pod_log = Some((name, first));
        }
        s.node_metrics = Some(crate::metrics_api::node_metrics(client).await);
        for p in &pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            let on_spoofed = node.as_ref().and_then(|n| spoofed.get(n).copied());
            if name == EXCLUDED_POD {
                s.excluded_pod_node = node;
                s.excluded_pod_node_spoofed = on_spoofed;
                s.excluded_pod_phase = phase;
                continue;
            }
            if phase.as_deref() == Some("Running") {
                s.operator_pods_running += 1;
            }
            match on_spoofed {
                Some(true) => s.operator_pods_on_hollow += 1,
                Some(false) => s.operator_pods_on_real += 1,
                None => {}
            }
            if let Some(n) = node {
                used.insert(n);
            }
            if let Some(uid) = p
                .spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|c| c.run_as_user)
            {
                s.operator_uids.insert(uid);
            }
        }
        s.operator_nodes_used = used.len();
        s.uid_range = Api::<Namespace>::all(client.clone())
            .get(SPOOFED_NS)
            .await?
            .metadata
            .annotations
            .and_then(|a| a.get("openshift.io/sa.scc.uid-range").cloned());
        if let Some(p) = Api::<Pod>::namespaced(client.clone(), PLAIN_NS)
            .get_opt(PLAIN_POD)
            .await?
        {
            s.plain_pod_node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            s.plain_pod_node_spoofed = s
                .plain_pod_node
                .as_ref()
                .and_then(|n| spoofed.get(n).copied());
            s.plain_pod_phase = p.status.and_then(|s| s.phase);
        }
        let events = Api::<Event>::namespaced(client.clone(), SPOOFED_NS)
            .list(&ListParams::default().fields("reason=FailedScheduling"))
            .await?
            .items;
        s.extender_rejections = events
            .into_iter()
            .filter_map(|e| e.message)
            .take(3)
            .collect();
        Ok(s)
    }

    /// What is not (yet) as the demonstration promises; empty when all holds.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut need = |ok: bool, what: String| {
            if !ok {
                out.push(what);
            }
        };
        need(
            self.hollow_nodes > 0 && self.hollow_nodes_ready == self.hollow_nodes,
            format!(
                "{}/{} hollow nodes Ready",
                self.hollow_nodes_ready, self.hollow_nodes
            ),
        );
        need(
            self.pool_ready_nodes == Some(self.hollow_nodes as i64),
            format!(
                "HollowNodePool {HOLLOW_PREFIX} reports {:?} ready nodes, not {}",
                self.pool_ready_nodes, self.hollow_nodes
            ),
        );
        need(self.real_nodes_ready >= 1, "no real node Ready".into());
        need(
            self.operator_pods_running == usize::try_from(self.replicas).unwrap_or(0),
            format!(
                "{}/{} operator pods Running",
                self.operator_pods_running, self.replicas
            ),
        );
        need(
            self.operator_pods_on_real == 0,
            format!(
                "{} operator pods on a real node",
                self.operator_pods_on_real
            ),
        );
        need(
            self.operator_uids.len() == 1,
            format!("operator pods have UIDs {:?}, not one", self.operator_uids),
        );
        let range_start = self
            .uid_range
            .as_deref()
            .and_then(|r| r.split('/').next())
            .and_then(|s| s.parse::<i64>().ok());
        need(
            range_start.is_some() && self.operator_uids.iter().next().copied() == range_start,
            format!(
                "UIDs {:?} are not the namespace range {:?}",
                self.operator_uids, self.uid_range
            ),
        );
        need(
            self.excluded_pod_node_spoofed == Some(false)
                && self.excluded_pod_phase.as_deref() == Some("Running"),
            format!(
                "excluded pod on {:?} ({:?})",
                self.excluded_pod_node, self.excluded_pod_phase
            ),
        );
        need(
            self.plain_pod_node_spoofed == Some(false)
                && self.plain_pod_phase.as_deref() == Some("Running"),
            format!(
                "plain pod on {:?} ({:?})",
                self.plain_pod_node, self.plain_pod_phase
            ),
        );
        let log = self.hollow_pod_log.as_ref();
        need(
            log.is_some_and(|(_, first)| first.contains("started on hollow node")),
            format!("kubectl logs of a pod on a hollow node: {log:?}"),
        );
        need(
            matches!(self.node_metrics, Some(Ok(n)) if n == self.hollow_nodes),
            format!(
                "kubectl top nodes lists {:?} of {} hollow nodes",
                self.node_metrics, self.hollow_nodes
            ),
        );
        if let Some(rbac) = &self.rbac {
            need(
                rbac.refused.is_empty(),
                format!(
                    "deploy/overlays/{} RBAC refused {}",
                    rbac.overlay,
                    rbac.refused.join(", ")
                ),
            );
        }
        out
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        writeln!(f, "mock-kind sandbox summary")?;
        writeln!(
            f,
            "  nodes      {}/{} hollow nodes Ready (annotated spoofed=\"true\"; HollowNodePool {HOLLOW_PREFIX}: {} ready), {} real node Ready",
            self.hollow_nodes_ready,
            self.hollow_nodes,
            self.pool_ready_nodes
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            self.real_nodes_ready
        )?;
        writeln!(
            f,
            "  pods       {}/{} pods of deployment {SPOOFED_NS}/{DEPLOYMENT} Running: {} on hollow nodes (spread over {}), {} on real nodes",
            self.operator_pods_running,
            self.replicas,
            self.operator_pods_on_hollow,
            self.operator_nodes_used,
            self.operator_pods_on_real
        )?;
        writeln!(
            f,
            "  UIDs       namespace {SPOOFED_NS} got openshift.io/sa.scc.uid-range={}; its runAsNonRoot pods run as {:?}",
            or_none(&self.uid_range),
            self.operator_uids
        )?;
        writeln!(
            f,
            "  excluded   pod {SPOOFED_NS}/{EXCLUDED_POD} matches spoofed_excluded_pods \"{EXCLUDED_PATTERN}\": on node {} ({}), {}",
            or_none(&self.excluded_pod_node),
            match self.excluded_pod_node_spoofed {
                Some(false) => "a real node",
                Some(true) => "a HOLLOW node",
                None => "unbound",
            },
            or_none(&self.excluded_pod_phase)
        )?;
        writeln!(
            f,
            "  plain      pod {PLAIN_NS}/{PLAIN_POD} (namespace not spoofed): on node {} ({}), {}",
            or_none(&self.plain_pod_node),
            match self.plain_pod_node_spoofed {
                Some(false) => "a real node",
                Some(true) => "a HOLLOW node",
                None => "unbound",
            },
            or_none(&self.plain_pod_phase)
        )?;
        if let Some((pod, first)) = &self.hollow_pod_log {
            writeln!(
                f,
                "  logs       kubectl -n {SPOOFED_NS} logs {pod}: {first}"
            )?;
        }
        if let Some(m) = &self.node_metrics {
            let m = match m {
                Ok(n) => format!("metrics.k8s.io lists {n} nodes (kubectl top nodes)"),
                Err(e) => format!("metrics.k8s.io: {e}"),
            };
            writeln!(f, "  top        {m}")?;
        }
        if let Some(r) = self.extender_rejections.first() {
            writeln!(f, "  why        e.g. the scheduler's event: {r}")?;
        }
        if let Some(rbac) = &self.rbac {
            writeln!(
                f,
                "  rbac       deploy/overlays/{} RBAC: {} requests of mock-kind's ServiceAccounts, {} refused",
                rbac.overlay, rbac.requests, rbac.refused_requests
            )?;
        }
        writeln!(f, "  settled in {:.1}s", self.settle_seconds)?;
        let problems = self.problems();
        if problems.is_empty() {
            write!(f, "  all as expected")
        } else {
            write!(f, "  NOT as expected: {}", problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Summary {
        Summary {
            hollow_nodes_ready: 3,
            hollow_nodes: 3,
            pool_ready_nodes: Some(3),
            real_nodes_ready: 1,
            replicas: 2,
            operator_pods_running: 2,
            operator_pods_on_hollow: 2,
            operator_pods_on_real: 0,
            operator_nodes_used: 2,
            operator_uids: BTreeSet::from([1_000_020_000]),
            uid_range: Some("1000020000/10000".into()),
            excluded_pod_node: Some("real-0".into()),
            excluded_pod_node_spoofed: Some(false),
            excluded_pod_phase: Some("Running".into()),
            plain_pod_node: Some("real-0".into()),
            plain_pod_node_spoofed: Some(false),
            plain_pod_phase: Some("Running".into()),
            extender_rejections: vec![],
            hollow_pod_log: Some((
                "op-1".into(),
                "[hollow-node] container app (image nginx) started on hollow node hn-0, instance 0"
                    .into(),
            )),
            node_metrics: Some(Ok(3)),
            rbac: Some(Rbac {
                overlay: "kind",
                requests: 40,
                refused_requests: 0,
                refused: Vec::new(),
            }),
            settle_seconds: 1.0,
        }
    }

    #[test]
    fn problems_name_each_broken_promise() {
        type Case = (&'static str, fn(&mut Summary), &'static str);
        let cases: [Case; 12] = [
            (
                "node not ready",
                |s| s.hollow_nodes_ready = 2,
                "2/3 hollow nodes",
            ),
            (
                "pool status behind",
                |s| s.pool_ready_nodes = Some(1),
                "reports Some(1) ready nodes, not 3",
            ),
            (
                "pod on real",
                |s| s.operator_pods_on_real = 1,
                "on a real node",
            ),
            (
                "two uids",
                |s| {
                    s.operator_uids.insert(1_999_999_999);
                },
                "not one",
            ),
            (
                "uid outside range",
                |s| s.uid_range = Some("2000/10000".into()),
                "not the namespace range",
            ),
            (
                "excluded on hollow",
                |s| s.excluded_pod_node_spoofed = Some(true),
                "excluded pod",
            ),
            (
                "plain pending",
                |s| s.plain_pod_phase = Some("Pending".into()),
                "plain pod",
            ),
            (
                "logs refused",
                |s| s.hollow_pod_log = Some(("op-1".into(), "error: connection refused".into())),
                "kubectl logs",
            ),
            (
                "no pod to read logs of",
                |s| s.hollow_pod_log = None,
                "kubectl logs",
            ),
            (
                "metrics API unavailable",
                |s| s.node_metrics = Some(Err("503".into())),
                "kubectl top nodes",
            ),
            (
                "metrics of too few nodes",
                |s| s.node_metrics = Some(Ok(2)),
                "kubectl top nodes",
            ),
            (
                "a request refused by deploy's RBAC",
                |s| {
                    if let Some(r) = s.rbac.as_mut() {
                        r.refused
                            .push("list nodes by system:serviceaccount:mock-kind:x".into());
                    }
                },
                "RBAC refused list nodes",
            ),
        ];
        assert!(good().problems().is_empty(), "{:?}", good().problems());
        for (name, breakit, needle) in cases {
            let mut s = good();
            breakit(&mut s);
            let p = s.problems();
            assert_eq!(p.len(), 1, "{name}: {p:?}");
            assert!(p[0].contains(needle), "{name}: {p:?}");
        }
        assert!(good().to_string().contains("all as expected"));
    }
}
