//! The kubelet's HTTPS API for every node of this process: by default on one listener
//! (`<internal-ip>:<kubelet-port>`, the address all its Nodes advertise), where the path names
//! the pod, so one server answers for all of them; with `--kubelet-port-per-node` one listener
//! per node (`endpoints`). `endpoints` (which port is which node's), `routes` (paths and the
//! authorization they need), `auth` (client certificates, TokenReview, SubjectAccessReview),
//! `life` (what a pod's containers did, kept from the pod watch), `logs` (the log those lives
//! make), `stats` (resource metrics and the stats summary), `cadvisor` (`/metrics/cadvisor`)
//! and `kubelet_metrics` (`/metrics`) are the decisions; `server` is the axum glue.

pub mod auth;
pub mod cadvisor;
pub mod cpu;
pub mod decode;
pub mod endpoints;
pub mod flights;
pub mod kubelet_metrics;
pub mod life;
pub mod logs;
pub mod routes;
pub(crate) mod server;
pub mod stats;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::usage;
use cpu::CpuCounter;
use jiff::Timestamp;
use life::PodLife;

/// Most node names the self-issued serving certificate carries besides the InternalIP (the
/// apiserver dials the IP; thousands of names would make every handshake heavy).
pub const MAX_CERT_NAMES: usize = 256;

/// How the kubelet API is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeletApi {
    /// Where it listens; `None`: not served.
    pub listen: Option<SocketAddr>,
    /// PEM CAs whose client certificates authenticate (the apiserver's kubelet client); `None`:
    /// the CA the kubeconfig trusts for the apiserver (in a pod, the ServiceAccount's
    /// `ca.crt`), which in kubeadm and kind clusters is the one that signs it.
    pub client_ca_file: Option<PathBuf>,
    /// A serving certificate and key; `None`: self-issued for the InternalIP and node names.
    pub tls: Option<serving::TlsFiles>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no client CA: give --client-ca-file or a kubeconfig that names the cluster's CA")]
    NoClientCa,
    #[error("issuing the serving certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error(transparent)]
    Tls(#[from] serving::tls::Error),
}

/// The lives of the pods on this process's nodes, by `namespace/name`, with each node's pods
/// and CPU counter (the node's usage is its pods' plus the fixed overhead, integrated over
/// time as the pods come, change and go).
pub struct Lives {
    /// Only the kubelet and metrics APIs read the lives: without them the pod watch keeps none.
    kept: bool,
    /// When the nodes' CPU counters start (the process's start, their "boot").
    boot: Timestamp,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pods: HashMap<Arc<str>, Arc<PodLife>>,
    by_node: HashMap<u32, HashSet<Arc<str>>>,
    node_cpu: HashMap<u32, CpuCounter>,
}

impl Inner {
    /// Node `node`'s counter after a pod's usage went from `remove` to `add` nanocores.
    fn shift(&mut self, boot: Timestamp, node: u32, remove: u64, add: u64, now: Timestamp) {
        let c = self
            .node_cpu
            .entry(node)
            .or_insert_with(|| CpuCounter::new(boot, usage::NODE_OVERHEAD_CPU_NANOS));
        let rate = c.nanocores().saturating_sub(remove).saturating_add(add);
        *c = CpuCounter::next(Some(c), boot, rate, now);
    }

    fn remove(&mut self, boot: Timestamp, key: &str, now: Timestamp) -> Option<Arc<PodLife>> {
        let old = self.pods.remove(key)?;
        if let Some(keys) = self.by_node.get_mut(&old.node) {
            keys.remove(key);
        }
        self.shift(boot, old.node, old.cpu_nanocores(), 0, now);
        Some(old)
    }
}

/// One node's pods and CPU counter, as a scrape reads them.
pub struct NodeLives {
    pub boot: Timestamp,
    pub cpu: CpuCounter,
    pub pods: Vec<(Arc<str>, Arc<PodLife>)>,
}

impl Lives {
    /// Lives kept when `kept` (a kubelet or metrics API is served), else none.
    pub fn new(kept: bool) -> Self {
        Lives {
            kept,
            boot: Timestamp::now(),
            inner: Mutex::default(),
        }
    }

    /// Remembers what the watch just said about `pod` (on node index `node`).
    pub fn record(&self, key: &Arc<str>, node: u32, pod: &Pod) {
        if !self.kept {
            return;
        }
        let now = Timestamp::now();
        let mut life = life::of(pod, node);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let prev = inner.remove(self.boot, key, now);
        life::carry_cpu(&mut life, prev.as_deref(), now);
        inner.shift(self.boot, node, 0, life.cpu_nanocores(), now);
        inner.by_node.entry(node).or_default().insert(key.clone());
        inner.pods.insert(key.clone(), Arc::new(life));
    }
    pub fn forget(&self, key: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove(self.boot, key, Timestamp::now());
        }
    }
    pub fn get(&self, key: &str) -> Option<Arc<PodLife>> {
        self.inner.lock().ok()?.pods.get(key).cloned()
    }
    /// Every pod's life, taken under the lock and read after it.
    pub fn all(&self) -> Vec<(Arc<str>, Arc<PodLife>)> {
        match self.inner.lock() {
            Ok(inner) => inner
                .pods
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
    /// Node `node`'s pods and CPU counter, taken under the lock.
    pub fn node(&self, node: u32) -> NodeLives {
        let idle = CpuCounter::new(self.boot, usage::NODE_OVERHEAD_CPU_NANOS);
        let Ok(inner) = self.inner.lock() else {
            return NodeLives {
                boot: self.boot,
                cpu: idle,
                pods: Vec::new(),
            };
        };
        let pods = inner.by_node.get(&node).into_iter().flatten();
        NodeLives {
            boot: self.boot,
            cpu: inner.node_cpu.get(&node).copied().unwrap_or(idle),
            pods: pods
                .filter_map(|k| Some((k.clone(), inner.pods.get(k)?.clone())))
                .collect(),
        }
    }
}

/// The client CA as PEM: the file's, else the kubeconfig's CA.
pub fn client_ca_pem(api: &KubeletApi, kube: &kube::Config) -> Result<String, KubeletError> {
    if let Some(path) = &api.client_ca_file {
        return std::fs::read_to_string(path).map_err(|source| KubeletError::Read {
            path: path.clone(),
            source,
        });
    }
    if let Some(ders) = &kube.root_cert
        && !ders.is_empty()
    {
        return Ok(ders
            .iter()
            .map(|d| certs::pem_encode(&rustls::pki_types::CertificateDer::from(d.as_slice())))
            .collect());
    }
    if let Some(path) = &kube.root_cert_file {
        return std::fs::read_to_string(path).map_err(|source| KubeletError::Read {
            path: path.clone(),
            source,
        });
    }
    Err(KubeletError::NoClientCa)
}

/// A self-signed serving certificate for the InternalIP and the first [`MAX_CERT_NAMES`] node
/// names, as a kubelet without `--tls-cert-file` issues itself one.
fn self_issued(shared: &Shared) -> Result<serving::tls::PemPair, KubeletError> {
    let mut names = vec![shared.config.template.internal_ip.clone()];
    names.extend(
        shared
            .nodes
            .iter()
            .take(MAX_CERT_NAMES)
            .map(|n| n.name.clone()),
    );
    issue(names, &shared.config.prefix)
}

/// A self-signed serving certificate for `names`, with common name `cn`.
pub fn issue(names: Vec<String>, cn: &str) -> Result<serving::tls::PemPair, KubeletError> {
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn.to_string());
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(serving::tls::PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Binds the kubelet API's listeners (one, or one per node) and serves them until `shutdown`.
/// Binding and TLS errors come back at once, so a port in use stops the process with a clear
/// message. Every listener shares the TLS configuration and the authorization caches.
pub async fn start(
    shared: Arc<Shared>,
    addr: SocketAddr,
    client_ca: &str,
    shutdown: CancellationToken,
) -> crate::Result<Vec<tokio::task::JoinHandle<()>>> {
    let api = &shared.config.kubelet;
    let pair = match &api.tls {
        Some(files) => serving::tls::read_files(files)
            .await
            .map_err(KubeletError::from)?,
        None => self_issued(&shared)?,
    };
    let tls =
        serving::tls::server_config_with_client_ca(&pair, client_ca).map_err(KubeletError::from)?;
    let mut bound = Vec::new();
    for (port, scope) in shared.endpoints.listeners() {
        let addr = SocketAddr::new(addr.ip(), port);
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| crate::Error::Listen { addr, source })?;
        bound.push((listener, scope));
    }
    let api = server::api(shared.clone());
    Ok(bound
        .into_iter()
        .map(|(listener, scope)| {
            let router = server::router(api.clone(), scope);
            let limits = server::limits();
            spawn_tls(
                listener,
                router,
                limits,
                tls.clone(),
                shutdown.clone(),
                "kubelet API",
            )
        })
        .collect())
}

/// Serves `router` over TLS on `listener` until `shutdown`. Ready from the start: nothing
/// routes by readiness to these listeners (the apiserver dials the node address directly).
pub(crate) fn spawn_tls(
    listener: std::net::TcpListener,
    router: axum::Router,
    limits: serving::Limits,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let rustls = axum_server::tls_rustls::RustlsConfig::from_config(tls);
        let ready = telemetry::Readiness::default();
        ready.set(true);
        if let Err(e) =
            serving::serve(listener, router, &limits, Some(rustls), ready, shutdown).await
        {
            tracing::error!(error = %e, server = what, "server failed");
        }
    })
}
