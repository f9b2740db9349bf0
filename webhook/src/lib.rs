//! Mutating admission webhook: OpenShift-style UIDs for runAsNonRoot pods on any cluster, or
//! OpenShift's restricted-v2 SCC (profile `openshift-restricted-v2`).
//!
//! `mutation` decides for runAsNonRoot pods (pod + UID → JSON patch), `restricted_v2` for the
//! SCC (pod + namespace → patch or refusal), `allocation` which block and MCS level a new
//! namespace gets; `allocator` is the namespace controller that writes them, `namespaces` the
//! reflector admission reads them from, `strategy` picks UIDs, `server` speaks AdmissionReview,
//! `tls` serves and reloads certificates, `cli` turns flags into a [`Config`].

pub mod admission;
pub mod affinity_mode;
pub mod allocation;
pub mod allocator;
pub mod cli;
pub mod fitted_patch;
#[cfg(test)]
mod fuzz;
pub mod metrics;
pub mod mutation;
pub mod namespaces;
pub mod restricted_v2;
pub mod server;
pub mod strategy;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub use affinity_mode::PlacementMode;
pub use strategy::{Profile, Strategy};
pub use tls::{Bootstrap, CertSource, Clock};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(#[from] serving::tls::Error),
    #[error(transparent)]
    Server(#[from] serving::Error),
    #[error(transparent)]
    Certs(#[from] certs::Error),
    #[error("Kubernetes client: {0}")]
    Kube(String),
    #[error("serving on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the webhook needs, validated by [`cli::Args::into_config`] or built by tests.
#[derive(Clone)]
pub struct Config {
    /// HTTPS address for `/mutate`, `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    pub strategy: Strategy,
    /// `runasnonroot` (UIDs for runAsNonRoot pods) or `openshift-restricted-v2`.
    pub profile: Profile,
    /// `affinity`: `/place` writes the placement rules into pods (see `affinity_mode`).
    pub placement: PlacementMode,
    /// The webhook's own namespace: it carries the namespace controller's pool record
    /// (annotation `mock-kind.io/uid-blocks`).
    pub namespace: String,
    /// Namespaces whose pods are never mutated, whatever the webhook configuration selects.
    pub exclude_namespaces: Vec<String>,
    /// `pod` strategy: UIDs drawn from `[pod_uid_min, pod_uid_max]`.
    pub pod_uid_min: i64,
    pub pod_uid_max: i64,
    pub certs: CertSource,
    /// How often the certificate files or Secret are re-checked.
    pub cert_check_interval: Duration,
    /// Kubeconfig to use; `None`: in-cluster or `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Concurrency and time limits, drain delay and shutdown grace of the server (the body
    /// limit is [`server::MAX_BODY`] whatever this says).
    pub server: serving::Limits,
    /// How long a review may wait on the apiserver for its namespace (see `AppState`).
    pub apiserver_deadline: Duration,
    /// How often the namespace controller frees the blocks of deleted namespaces, as
    /// OpenShift's repair does every 8 hours (zero: never).
    pub uid_block_repair: Duration,
    pub clock: Clock,
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        if self.pod_uid_min < 0 || self.pod_uid_min > self.pod_uid_max {
            return Err(Error::Config(format!(
                "pod UID range [{}, {}] is empty or negative",
                self.pod_uid_min, self.pod_uid_max
            )));
        }
        if self.pod_uid_max > i64::from(i32::MAX) {
            return Err(Error::Config(format!(
                "pod UID {} is above {}, the largest UID Kubernetes accepts",
                self.pod_uid_max,
                i32::MAX
            )));
        }
        if self.apiserver_deadline.is_zero()
            || self.apiserver_deadline >= Duration::from_millis(cli::MAX_DEADLINE_MS)
        {
            return Err(Error::Config(format!(
                "apiserver deadline {:?} must be above 0 and below a webhook's 30 s timeout",
                self.apiserver_deadline
            )));
        }
        if self.profile == Profile::OpenshiftRestrictedV2 && self.strategy != Strategy::Namespace {
            return Err(Error::Config(
                "the openshift-restricted-v2 profile takes UIDs from namespaces: --strategy namespace"
                    .into(),
            ));
        }
        if self.cert_check_interval.is_zero() {
            return Err(Error::Config(
                "certificate check interval must be > 0".into(),
            ));
        }
        self.server.validate()?;
        Ok(())
    }

    fn needs_client(&self) -> bool {
        self.strategy == Strategy::Namespace
            || self.placement == PlacementMode::Affinity
            || matches!(self.certs, CertSource::Bootstrap(_))
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Kube(format!("reading kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kube(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Kube(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
}

/// Serves until `shutdown`, then drains: /readyz fails, requests are still answered for the
/// drain delay, then the server stops accepting and lets in-flight requests finish.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    config.validate()?;
    let mut registry = Registry::with_prefix("mock_kind_webhook");
    let metrics = Arc::new(metrics::Metrics::register(&mut registry));
    let registry = Arc::new(registry);
    let ready = telemetry::Readiness::default();
    let health = telemetry::Health::default();

    let client = if config.needs_client() {
        Some(client(config.kubeconfig.as_ref()).await?)
    } else {
        None
    };
    let tls = tls::Tls::load(
        config.certs.clone(),
        client.clone(),
        config.clock.clone(),
        metrics.clone(),
    )
    .await?;
    let rustls = tls.rustls();
    health.spawn_critical(
        "certificate reload",
        shutdown.clone(),
        tls.run(config.cert_check_interval, shutdown.child_token()),
    );

    // One namespace reflector serves the UIDs and the placement; the namespace controller
    // runs only with the namespace strategy, which allocates the UID blocks.
    let affinity = config.placement == PlacementMode::Affinity;
    let namespaces = match &client {
        Some(client) if config.strategy == Strategy::Namespace || affinity => {
            let controller =
                (config.strategy == Strategy::Namespace).then(|| namespaces::ControllerSettings {
                    pool_namespace: config.namespace.clone(),
                    exclude: config.exclude_namespaces.clone().into(),
                    repair_interval: config.uid_block_repair,
                });
            let ranges = namespaces::NamespaceRanges::start(
                client.clone(),
                metrics.clone(),
                &health,
                shutdown.child_token(),
                controller,
            );
            let (ready, ranges2) = (ready.clone(), ranges.clone());
            tokio::spawn(async move {
                if ranges2.wait_until_ready().await {
                    tracing::info!("namespace cache synced");
                    ready.set(true);
                }
            });
            Some(ranges)
        }
        _ => None,
    };
    let uids = match (config.strategy, &namespaces) {
        (Strategy::Namespace, Some(ranges)) => server::UidSource::Namespace(ranges.clone()),
        (Strategy::Namespace, None) => {
            return Err(Error::Config("namespace strategy needs a client".into()));
        }
        (Strategy::Pod, _) => {
            if namespaces.is_none() {
                ready.set(true);
            }
            server::UidSource::Pod {
                min: config.pod_uid_min,
                max: config.pod_uid_max,
            }
        }
    };
    let placement = match (affinity, namespaces) {
        (true, Some(ranges)) => Some(ranges),
        (true, None) => {
            return Err(Error::Config("affinity placement needs a client".into()));
        }
        (false, _) => None,
    };
    let state = server::AppState {
        uids: Arc::new(uids),
        metrics,
        exclude_namespaces: config.exclude_namespaces.clone().into(),
        profile: config.profile,
        placement,
        apiserver_deadline: config.apiserver_deadline,
    };
    let app = server::router(state, registry, ready.clone(), health);

    let listener = std::net::TcpListener::bind(config.listen).map_err(|source| Error::Serve {
        addr: config.listen,
        source,
    })?;
    tracing::info!(addr = %config.listen, strategy = config.strategy.as_str(), profile = config.profile.as_str(), placement = config.placement.as_str(), "serving");
    serving::serve(listener, app, &config.server, Some(rustls), ready, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
