//! Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1 and
//! stops them all again on drop, printing the tail of each log when a test panicked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use tempfile::TempDir;

use crate::config::{self, Layout, Settings};
use crate::pki::Pki;
use crate::process::Component;
use crate::wait::{free_port, http_ok, wait_for};
use crate::{Error, bins};

/// What a test may change about the control plane. `Default` gives a complete cluster.
#[derive(Clone, Debug)]
pub struct Options {
    pub scheduler: bool,
    pub controller_manager: bool,
    /// Entries of the KubeSchedulerConfiguration's `extenders` list (v1beta1 field names).
    pub extenders: Vec<Value>,
    pub node_monitor_grace_period: Option<Duration>,
    pub pod_eviction_timeout: Option<Duration>,
    /// Client QPS of the controller-manager and the scheduler (burst is twice this). The
    /// defaults of 20 and 50 would cap pod creation and binding, so benchmarks would measure
    /// the control plane instead of mock-kind.
    pub client_qps: u32,
    /// Run the apiserver with an audit log of every service account's requests (Metadata
    /// level); read it with [`ControlPlane::audit_records`].
    pub audit_log: bool,
    pub extra_apiserver_args: Vec<String>,
    pub extra_controller_manager_args: Vec<String>,
    pub extra_scheduler_args: Vec<String>,
    /// Feature gates `(name, on)` for the apiserver, controller-manager and scheduler alike
    /// (`--feature-gates`). `EphemeralContainers` (alpha, off in 1.20) needs only the
    /// apiserver here (its `ephemeralcontainers` subresource; the kubelet's part is the hollow
    /// node's), but a cluster-wide list is how kind sets gates.
    pub feature_gates: Vec<(String, bool)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scheduler: true,
            controller_manager: true,
            extenders: Vec::new(),
            node_monitor_grace_period: None,
            pod_eviction_timeout: None,
            client_qps: 100,
            audit_log: false,
            extra_apiserver_args: Vec::new(),
            extra_controller_manager_args: Vec::new(),
            extra_scheduler_args: Vec::new(),
            feature_gates: Vec::new(),
        }
    }
}

const START_ATTEMPTS: usize = 4;
const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub struct ControlPlane {
    // Dropped in reverse start order by Drop below; the dirs go after the processes.
    components: Vec<Component>,
    client: kube::Client,
    server: String,
    layout: Layout,
    ca_pem: String,
    bin_dir: PathBuf,
    dir: Option<TempDir>,
    etcd_dir: Option<TempDir>,
    audit_log: bool,
}

impl ControlPlane {
    pub async fn start(opts: Options) -> Result<Self, Error> {
        telemetry::install_crypto_provider();
        let bin_dir = bins::bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("mock-kind-cp-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let etcd_dir = etcd_tempdir(dir.path())?;
        let layout = Layout {
            dir: dir.path().to_path_buf(),
            etcd_data: etcd_dir.path().join("data"),
        };
        let pki = Pki::generate()?;
        for (path, pem) in [
            (layout.ca_cert(), &pki.ca_cert),
            (layout.serving_cert(), &pki.serving_cert),
            (layout.serving_key(), &pki.serving_key),
            (layout.kubelet_client_cert(), &pki.kubelet_client_cert),
            (layout.kubelet_client_key(), &pki.kubelet_client_key),
            (layout.front_proxy_ca(), &pki.front_proxy_ca_cert),
            (
                layout.front_proxy_client_cert(),
                &pki.front_proxy_client_cert,
            ),
            (layout.front_proxy_client_key(), &pki.front_proxy_client_key),
            (layout.sa_key(), &pki.service_account_key),
            (layout.sa_pub(), &pki.service_account_pub),
        ] {
            std::fs::write(&path, pem).map_err(|e| Error::io(&path, e))?;
        }
        if opts.audit_log {
            let path = layout.audit_policy();
            let text = crate::audit::policy().to_string();
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        }

        let mut settings = Settings {
            etcd_client_port: 0,
            etcd_peer_port: 0,
            apiserver_port: 0,
            controller_manager_port: 0,
            scheduler_secure_port: 0,
            scheduler_health_port: 0,
            client_qps: opts.client_qps,
            node_monitor_grace_period: opts.node_monitor_grace_period,
            pod_eviction_timeout: opts.pod_eviction_timeout,
        };
        let mut components = Vec::new();
        let bin = |name: &str| bin_dir.join(name);

        let gates = config::feature_gates_arg(&opts.feature_gates);

        // etcd
        let etcd = start_with_retries("etcd", &layout, |_| {
            settings.etcd_client_port = free_port();
            settings.etcd_peer_port = free_port();
            let _ = std::fs::remove_dir_all(&layout.etcd_data);
            let args = config::etcd_args(&layout, &settings);
            let port = settings.etcd_client_port;
            (bin("etcd"), args, Probe::Http(port, "/health"))
        })
        .await?;
        components.push(etcd);

        // kube-apiserver
        let kc_path = layout.kubeconfig();
        let apiserver = start_with_retries("kube-apiserver", &layout, |_| {
            settings.apiserver_port = free_port();
            let server = format!("https://127.0.0.1:{}", settings.apiserver_port);
            let text = config::kubeconfig(&server, &pki.ca_cert, &pki.admin_cert, &pki.admin_key);
            if let Err(e) = std::fs::write(&kc_path, text) {
                tracing::warn!(path = %kc_path.display(), error = %e, "cannot write kubeconfig");
            }
            let mut args = config::apiserver_args(&layout, &settings);
            if opts.audit_log {
                args.extend(config::audit_args(&layout));
            }
            args.extend(gates.clone());
            args.extend(opts.extra_apiserver_args.iter().cloned());
            (
                bin("kube-apiserver"),
                args,
                Probe::ApiServer(kc_path.clone()),
            )
        })
        .await?;
        components.push(apiserver);
        let server = format!("https://127.0.0.1:{}", settings.apiserver_port);
        let client = client_from(&kc_path).await?;
        // `/readyz` is ok before the bootstrap controller has created `default`; tests (and
        // kubectl users) take it for granted, so wait for it as a kubeadm cluster would have it.
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let default_ns = wait_for(READY_TIMEOUT, "the default namespace", || {
            let namespaces = namespaces.clone();
            async move {
                Ok(namespaces
                    .get_opt("default")
                    .await
                    .ok()
                    .flatten()
                    .map(|_| ()))
            }
        })
        .await;
        if let Err(e) = default_ns {
            return Err(start_error(components.last_mut(), &e.to_string()));
        }

        if opts.controller_manager {
            let cm = start_with_retries("kube-controller-manager", &layout, |_| {
                settings.controller_manager_port = free_port();
                let mut args = config::controller_manager_args(&layout, &settings);
                args.extend(gates.clone());
                args.extend(opts.extra_controller_manager_args.iter().cloned());
                let port = settings.controller_manager_port;
                (
                    bin("kube-controller-manager"),
                    args,
                    Probe::Http(port, "/healthz"),
                )
            })
            .await?;
            components.push(cm);
            // Pods are refused until their ServiceAccount has a token: wait for the token
            // controller, so tests may create pods at once.
            let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
            let token = wait_for(READY_TIMEOUT, "the default ServiceAccount's token", || {
                let sas = sas.clone();
                async move {
                    Ok(sas
                        .get_opt("default")
                        .await
                        .ok()
                        .flatten()
                        .filter(|sa| sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
                        .map(|_| ()))
                }
            })
            .await;
            if let Err(e) = token {
                return Err(start_error(components.last_mut(), &e.to_string()));
            }
        }

        if opts.scheduler {
            let sched = start_with_retries("kube-scheduler", &layout, |_| {
                settings.scheduler_secure_port = free_port();
                settings.scheduler_health_port = free_port();
                let cfg = config::scheduler_config(&layout, &settings, &opts.extenders);
                let path = layout.scheduler_config();
                let text = serde_json::to_string_pretty(&cfg).unwrap_or_default();
                if let Err(e) = std::fs::write(&path, text) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write scheduler config");
                }
                let mut args = config::scheduler_args(&layout, &settings);
                args.extend(gates.clone());
                args.extend(opts.extra_scheduler_args.iter().cloned());
                let port = settings.scheduler_health_port;
                (bin("kube-scheduler"), args, Probe::Http(port, "/healthz"))
            })
            .await?;
            components.push(sched);
        }

        Ok(ControlPlane {
            audit_log: opts.audit_log,
            components,
            client,
            server,
            layout,
            ca_pem: pki.ca_cert,
            bin_dir,
            dir: Some(dir),
            etcd_dir: Some(etcd_dir),
        })
    }

    /// A client with admin (`system:masters`) rights.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }
    /// An admin kubeconfig, for processes and kubectl.
    pub fn kubeconfig(&self) -> PathBuf {
        self.layout.kubeconfig()
    }
    pub fn server(&self) -> &str {
        &self.server
    }
    /// The CA that signed the apiserver's serving certificate (and every client certificate
    /// of the cluster, the apiserver's kubelet client among them).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
    /// The CA file, for a process that must trust the cluster's client certificates.
    /// The front-proxy CA: what aggregated API servers trust the apiserver's requests by.
    pub fn front_proxy_ca_file(&self) -> PathBuf {
        self.layout.front_proxy_ca()
    }
    pub fn ca_file(&self) -> PathBuf {
        self.layout.ca_cert()
    }
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }
    /// Every service-account request the apiserver has logged so far, in order. Empty unless
    /// [`Options::audit_log`] was set.
    pub fn audit_records(&self) -> Result<Vec<crate::audit::Record>, Error> {
        if !self.audit_log {
            return Ok(Vec::new());
        }
        crate::audit::read(&self.layout.audit_log())
    }
    /// Where kube-apiserver, kubemark and the rest were found.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
    /// The pid of a running component (`etcd`, `kube-apiserver`, …), if it was started.
    pub fn pid(&self, component: &str) -> Option<u32> {
        self.components
            .iter()
            .find(|c| c.name == component)
            .map(Component::pid)
    }
    /// Freezes (SIGSTOP) or resumes (SIGCONT) a running component, so a benchmark can queue
    /// work for it and then time it alone. Returns whether the component runs here.
    pub fn pause(&self, component: &str, paused: bool) -> bool {
        let Some(pid) = self.pid(component) else {
            return false;
        };
        let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        crate::process::signal_group(pid, signal);
        true
    }
    /// The last `lines` lines of every component's log, headed by its name.
    pub fn log_tails(&self, lines: usize) -> String {
        self.components
            .iter()
            .map(|c| {
                format!(
                    "--- {} ({}) ---\n{}\n",
                    c.name,
                    c.log.display(),
                    c.tail(lines)
                )
            })
            .collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("MOCK_KIND_E2E_LOGS").is_some() {
            eprintln!("{}", self.log_tails(40));
        }
        while let Some(mut c) = self.components.pop() {
            c.stop();
        }
        if std::env::var_os("MOCK_KIND_E2E_KEEP").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("control plane files kept in {}", dir.keep().display());
        }
        drop(self.etcd_dir.take());
    }
}

/// How to tell that a component has started.
enum Probe {
    /// `/readyz` answers `ok` to the admin of this kubeconfig.
    ApiServer(PathBuf),
    Http(u16, &'static str),
}

impl Probe {
    async fn ok(&self) -> bool {
        match self {
            Probe::ApiServer(kubeconfig) => {
                let Ok(client) = client_from(kubeconfig).await else {
                    return false;
                };
                let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
                    return false;
                };
                client
                    .request_text(req)
                    .await
                    .is_ok_and(|t| t.trim() == "ok")
            }
            Probe::Http(port, path) => http_ok(*port, path).await,
        }
    }
}

/// Starts a component and waits for its probe; when it died because a port chosen a moment ago
/// was taken meanwhile, starts it again with the ports that `prepare` picks anew.
async fn start_with_retries(
    name: &str,
    layout: &Layout,
    mut prepare: impl FnMut(usize) -> (PathBuf, Vec<String>, Probe),
) -> Result<Component, Error> {
    let log = layout.log(name);
    let mut last = String::new();
    for attempt in 0..START_ATTEMPTS {
        let (bin, args, probe) = prepare(attempt);
        let mut comp = Component::spawn(name, &bin, &args, &log)?;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut pause = Duration::from_millis(50);
        loop {
            if probe.ok().await {
                return Ok(comp);
            }
            if let Some(status) = comp.exited() {
                let tail = comp.tail(30);
                if tail.contains("address already in use") {
                    last = format!("port taken ({status})");
                    break;
                }
                return Err(Error::Start {
                    component: name.to_string(),
                    reason: format!("exited with {status}"),
                    log,
                    tail,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                let tail = comp.tail(30);
                return Err(Error::Start {
                    component: name.to_string(),
                    reason: format!("not ready within {}s", READY_TIMEOUT.as_secs()),
                    log,
                    tail,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
    Err(Error::Start {
        component: name.to_string(),
        reason: format!("{START_ATTEMPTS} attempts failed, last: {last}"),
        tail: crate::process::tail_file(&log, 30),
        log,
    })
}

fn start_error(comp: Option<&mut Component>, reason: &str) -> Error {
    match comp {
        Some(c) => Error::Start {
            component: c.name.clone(),
            reason: reason.to_string(),
            log: c.log.clone(),
            tail: c.tail(30),
        },
        None => Error::Timeout {
            what: reason.to_string(),
            secs: 0.0,
        },
    }
}

async fn client_from(kubeconfig: &Path) -> Result<kube::Client, Error> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// etcd's data dir: on /dev/shm when it is writable (etcd fsyncs every write, and tests and
/// benchmarks write a lot), else inside the control plane's dir.
fn etcd_tempdir(fallback: &Path) -> Result<TempDir, Error> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("mock-kind-etcd-")
            .tempdir_in(shm)
    {
        return Ok(d);
    }
    tempfile::Builder::new()
        .prefix("etcd-")
        .tempdir_in(fallback)
        .map_err(|e| Error::io(fallback, e))
}
