//! The kubelet's HTTPS API for every node of this process, on one listener
//! (`<internal-ip>:<kubelet-port>`, the address all its Nodes advertise): the path names the
//! pod, so one server answers for all of them. `routes` (paths and the authorization they
//! need), `auth` (client certificates, TokenReview, SubjectAccessReview), `life` (what a pod's
//! containers did, kept from the pod watch) and `logs` (the log those lives make) are the
//! decisions; `server` is the axum glue.

pub mod auth;
pub mod life;
pub mod logs;
pub mod routes;
pub(crate) mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use crate::Shared;
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

/// The lives of the pods on this process's nodes, by `namespace/name`.
pub struct Lives {
    /// Only the kubelet and metrics APIs read the lives: without them the pod watch keeps none.
    kept: bool,
    pods: Mutex<HashMap<Arc<str>, Arc<PodLife>>>,
}

impl Lives {
    /// Lives kept when `kept` (a kubelet or metrics API is served), else none.
    pub fn new(kept: bool) -> Self {
        Lives {
            kept,
            pods: Mutex::default(),
        }
    }

    /// Remembers what the watch just said about `pod` (on node index `node`).
    pub fn record(&self, key: &Arc<str>, node: u32, pod: &Pod) {
        if !self.kept {
            return;
        }
        let life = Arc::new(life::of(pod, node));
        if let Ok(mut pods) = self.pods.lock() {
            pods.insert(key.clone(), life);
        }
    }
    pub fn forget(&self, key: &str) {
        if let Ok(mut pods) = self.pods.lock() {
            pods.remove(key);
        }
    }
    pub fn get(&self, key: &str) -> Option<Arc<PodLife>> {
        self.pods.lock().ok()?.get(key).cloned()
    }
    /// Every pod's life, taken under the lock and read after it.
    pub fn all(&self) -> Vec<(Arc<str>, Arc<PodLife>)> {
        match self.pods.lock() {
            Ok(pods) => pods.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
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

/// Binds the kubelet API's listener and serves it until `shutdown`. Binding and TLS errors
/// come back at once, so a port in use stops the process with a clear message.
pub async fn start(
    shared: Arc<Shared>,
    addr: SocketAddr,
    client_ca: &str,
    shutdown: CancellationToken,
) -> crate::Result<tokio::task::JoinHandle<()>> {
    let api = &shared.config.kubelet;
    let pair = match &api.tls {
        Some(files) => serving::tls::read_files(files)
            .await
            .map_err(KubeletError::from)?,
        None => self_issued(&shared)?,
    };
    let tls =
        serving::tls::server_config_with_client_ca(&pair, client_ca).map_err(KubeletError::from)?;
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|source| crate::Error::Listen { addr, source })?;
    let router = server::router(shared.clone());
    Ok(spawn_tls(
        listener,
        router,
        server::limits(),
        tls,
        shutdown,
        "kubelet API",
    ))
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
