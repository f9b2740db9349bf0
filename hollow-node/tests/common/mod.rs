//! Helpers shared by the end-to-end tests: run the hollow node in-process against the
//! harness's control plane, read its ops routes, wait on pods and nodes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use kube::api::{Api, ListParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub struct Hollow {
    pub token: CancellationToken,
    pub join: tokio::task::JoinHandle<Result<(), hollow_node::Error>>,
    pub addr: SocketAddr,
}

pub fn config(cp: &e2e::ControlPlane, prefix: &str, nodes: usize) -> hollow_node::Config {
    let mut c = hollow_node::Config::new(prefix, nodes);
    c.kubeconfig = Some(cp.kubeconfig());
    c.listen = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    c.pods.job_complete_after = Duration::from_secs(2);
    // The tests check missing-Secret handling everywhere (the flag's default checks none).
    c.secret_refs = hollow_node::config::SecretRefs::Cluster;
    c
}

/// Serves the kubelet API of `config` on a free loopback port, advertised in the nodes, trusting
/// client certificates of `cp`'s CA (the apiserver's for logs and exec); returns the port.
pub fn serve_kubelet_api(config: &mut hollow_node::Config, cp: &e2e::ControlPlane) -> u16 {
    let port = e2e::free_port();
    config.template.kubelet_port = i32::from(port);
    config.kubelet.listen = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    config.kubelet.client_ca_file = Some(cp.ca_file());
    port
}

/// The real kubectl with `cp`'s admin kubeconfig.
pub async fn kubectl(cp: &e2e::ControlPlane, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", cp.kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run kubectl")
}

pub async fn start(config: hollow_node::Config) -> Hollow {
    telemetry::install_crypto_provider();
    telemetry::init_logging(false);
    let token = CancellationToken::new();
    let addr = config.listen;
    let join = tokio::spawn(hollow_node::run(config, token.clone()));
    let h = Hollow { token, join, addr };
    e2e::wait_for(Duration::from_secs(60), "hollow node /readyz", || async {
        Ok((get(addr, "/readyz").await.0 == 200).then_some(()))
    })
    .await
    .expect("hollow node ready");
    h
}

/// `hollow-node --pool <pool>` in-process on `cp` (the flags' node count and prefix unused).
pub fn start_pool(cp: &e2e::ControlPlane, pool: &str) -> Hollow {
    start_pool_with(config(cp, "flags-prefix-unused", 1), pool)
}

/// `hollow-node --pool <pool>` with the flags of `config`.
pub fn start_pool_with(config: hollow_node::Config, pool: &str) -> Hollow {
    telemetry::install_crypto_provider();
    telemetry::init_logging(false);
    let addr = config.listen;
    let token = CancellationToken::new();
    let join = tokio::spawn(hollow_node::pool::reconcile::run(
        config,
        pool.to_string(),
        token.clone(),
    ));
    Hollow { token, join, addr }
}

impl Hollow {
    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(30)).await;
    }

    /// Cancels it and asserts that it ends without an error within `limit`.
    pub async fn stop_within(self, limit: Duration) {
        self.token.cancel();
        match tokio::time::timeout(limit, self.join).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("hollow node did not stop cleanly: {other:?}"),
        }
    }
}

/// A plain HTTP/1.0 GET on the ops port: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The value of a metric line that starts with `prefix` (labels included).
pub fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Lease-lane requests so far, answered with `code` (`Ok`, `ClientError`…), summed over `verbs`.
pub async fn lease_requests(addr: SocketAddr, verbs: &[&str], code: &str) -> f64 {
    let (_, body) = get(addr, "/metrics").await;
    body.lines()
        .filter(|l| {
            l.starts_with("hollow_node_api_requests_total{")
                && l.contains("lane=\"Lease\"")
                && l.contains(&format!("code=\"{code}\""))
                && verbs.iter().any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The status of the Ready condition (`True`, `False`, `Unknown`), empty when there is none.
pub fn ready_status(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

pub fn not_ready_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key.starts_with("node.kubernetes.io/not-ready"))
        })
}

pub async fn wait_nodes_ready(client: &kube::Client, prefix: &str, n: usize, timeout: Duration) {
    let api: Api<Node> = Api::all(client.clone());
    let selector = format!("mock-kind.io/hollow-node={prefix}");
    e2e::wait_for(timeout, &format!("{n} nodes Ready and untainted"), || {
        let api = api.clone();
        let selector = selector.clone();
        async move {
            let nodes = api.list(&ListParams::default().labels(&selector)).await?;
            let good = nodes
                .items
                .iter()
                .filter(|n| ready(n) && !not_ready_taint(n))
                .count();
            Ok((good == n).then_some(()))
        }
    })
    .await
    .expect("nodes ready");
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The pod's condition of `type_`, if it has one.
pub fn pod_condition<'a>(p: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn pod_ready(p: &Pod) -> bool {
    pod_condition(p, "Ready").is_some_and(|c| c.status == "True")
}

/// A control plane with a hollow node of `nodes` Ready nodes named `<prefix>-<i>` and the
/// namespace `ns`.
pub async fn cluster(prefix: &str, nodes: usize, ns: &str) -> (e2e::ControlPlane, Hollow) {
    let cp = e2e::ControlPlane::start(e2e::Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    let hollow = start(config(&cp, prefix, nodes)).await;
    wait_nodes_ready(&client, prefix, nodes, Duration::from_secs(60)).await;
    create_namespace(&client, ns).await;
    (cp, hollow)
}

/// Waits up to 60 s until pod `name` passes `check`; returns it.
pub async fn wait_pod<F>(api: &Api<Pod>, name: &str, what: &str, check: F) -> Pod
where
    F: Fn(&Pod) -> bool,
{
    let check = &check;
    e2e::wait_for(
        Duration::from_secs(60),
        &format!("pod {name}: {what}"),
        || async move {
            let p = api.get_opt(name).await?;
            Ok(p.filter(|p| check(p)))
        },
    )
    .await
    .expect(what)
}

/// Waits up to 60 s for an Event with `reason` about pod `pod`; returns it.
pub async fn wait_event(
    events: &Api<k8s_openapi::api::core::v1::Event>,
    pod: &str,
    reason: &str,
) -> k8s_openapi::api::core::v1::Event {
    e2e::wait_for(
        Duration::from_secs(60),
        &format!("{reason} event for {pod}"),
        || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.name.as_deref() == Some(pod)
            }))
        },
    )
    .await
    .expect(reason)
}

/// Waits until `n` pods matching `selector` in `ns` are Running and Ready; returns them.
pub async fn wait_running(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    e2e::wait_for(timeout, &format!("{n} pods {selector} Running"), || {
        let api = api.clone();
        let selector = selector.to_string();
        async move {
            let pods = api.list(&ListParams::default().labels(&selector)).await?;
            let running: Vec<Pod> = pods
                .items
                .into_iter()
                .filter(|p| {
                    phase(p) == "Running" && pod_ready(p) && p.metadata.deletion_timestamp.is_none()
                })
                .collect();
            Ok((running.len() == n).then_some(running))
        }
    })
    .await
    .expect("pods running")
}

pub fn ips(pods: &[Pod]) -> BTreeMap<String, String> {
    pods.iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

pub async fn create_namespace(client: &kube::Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("ns");
    api.create(&Default::default(), &ns)
        .await
        .expect("create namespace");
}

/// A Deployment of `replicas` pods that need no ServiceAccount token.
pub fn deployment(name: &str, replicas: i32) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "app", "image": "nginx:1.19",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]
                }
            }
        }
    }))
    .expect("deployment")
}

/// The hollow-node binary as a child process (its own process group, output in a log file), so a
/// test can read its RSS, kill it with SIGKILL and look for panics in what it printed.
pub struct HollowProcess {
    pub comp: e2e::process::Component,
    pub addr: SocketAddr,
}

/// Starts `target/…/hollow-node` with `nodes` nodes named `<prefix>-<i>` against `kubeconfig`,
/// logging to `log`, and waits for its /readyz.
pub async fn spawn_binary(
    kubeconfig: &std::path::Path,
    log: &std::path::Path,
    prefix: &str,
    nodes: usize,
) -> HollowProcess {
    let addr = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    let args = [
        format!("--nodes={nodes}"),
        format!("--node-prefix={prefix}"),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--listen={addr}"),
        "--job-complete-after=2s".to_string(),
        // The kubelet API binds 127.0.0.1:<kubelet-port>: a port of its own per process.
        format!("--kubelet-port={}", e2e::free_port()),
    ];
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_hollow-node"));
    let mut comp =
        e2e::process::Component::spawn("hollow-node", bin, &args, log).expect("spawn hollow-node");
    let ready = e2e::wait_for(Duration::from_secs(90), "hollow-node /readyz", || {
        let exited = comp.exited();
        async move {
            if let Some(status) = exited {
                return Err(e2e::Error::Timeout {
                    what: format!("hollow-node exited with {status} before it was ready"),
                    secs: 0.0,
                });
            }
            Ok((get(addr, "/readyz").await.0 == 200).then_some(()))
        }
    })
    .await;
    if let Err(e) = ready {
        panic!("{e}\n--- {} ---\n{}", log.display(), comp.tail(40));
    }
    HollowProcess { comp, addr }
}

impl HollowProcess {
    pub fn pid(&self) -> u32 {
        self.comp.pid()
    }

    /// Lines of its output that report a panic: the runtime's `panicked at` and the work
    /// queue's `a work handler panicked`.
    pub fn panics(&self) -> Vec<String> {
        std::fs::read_to_string(&self.comp.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_string)
            .collect()
    }

    /// Fails the test if the process exited or ever panicked.
    pub fn assert_alive_and_sound(&mut self, when: &str) {
        if let Some(status) = self.comp.exited() {
            panic!(
                "{when}: hollow-node exited with {status}\n{}",
                self.comp.tail(40)
            );
        }
        let panics = self.panics();
        assert!(
            panics.is_empty(),
            "{when}: hollow-node panicked: {panics:#?}"
        );
    }
}

/// Creates ServiceAccount `default/<name>`, bound cluster-wide to `get` on `resources` (e.g.
/// `nodes/proxy`) when there are any; returns its token.
pub async fn account_with(client: &kube::Client, name: &str, resources: &[&str]) -> String {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let pp = kube::api::PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let sa = serde_json::json!({"metadata": {"name": name}});
    accounts
        .create(&pp, &serde_json::from_value(sa).expect("sa"))
        .await
        .expect("create sa");
    if !resources.is_empty() {
        let role = serde_json::json!({"metadata": {"name": name}, "rules": [
            {"apiGroups": [""], "resources": resources, "verbs": ["get"]}]});
        let roles: Api<ClusterRole> = Api::all(client.clone());
        roles
            .create(&pp, &serde_json::from_value(role).expect("role"))
            .await
            .expect("create role");
        let binding = serde_json::json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "namespace": "default", "name": name}]});
        let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
        bindings
            .create(&pp, &serde_json::from_value(binding).expect("binding"))
            .await
            .expect("create binding");
    }
    e2e::accounts::token(client, "default", name)
        .await
        .expect("token")
}

/// A path inside the repository.
pub fn repo(rel: &str) -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .display()
        .to_string()
}

/// A command's stdout and stderr, for failure messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kubectl apply -f` of `yaml` (kept as `<name>` in the control plane's directory, for the
/// record), failing the test with kubectl's output when it is refused.
pub async fn apply_yaml(cp: &e2e::ControlPlane, name: &str, yaml: &str) {
    let file = cp.dir().join(name);
    std::fs::write(&file, yaml).expect("write manifest");
    let o = kubectl(cp, &["apply", "-f", &file.display().to_string()]).await;
    assert!(o.status.success(), "apply {name}: {}", output_text(&o));
}

/// Applies the CRD and waits until the apiserver serves it.
pub async fn install_crd(cp: &e2e::ControlPlane) {
    tokio::task::block_in_place(|| e2e::pools::install_crd(cp)).expect("install the CRD");
}

/// The apiserver alone (no scheduler, no controller-manager): enough where no controller acts.
pub async fn apiserver_only() -> e2e::ControlPlane {
    e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        controller_manager: false,
        ..Default::default()
    })
    .await
    .expect("control plane")
}
