//! kube-scheduler extender: pods of spoofed namespaces go to hollow (spoofed) nodes, everything
//! else to real nodes. `run` serves the extender verbs and `/healthz` `/readyz` `/metrics`.

pub mod cache;
pub mod cli;
pub mod extender;
pub mod metrics;
pub mod server;

/// The decision lives in the `placement` crate, shared with the webhook's affinity mode.
pub use placement::rules;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus_client::registry::Registry;
pub use serving::TlsFiles;
use telemetry::Readiness;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::server::AppState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("loading the Kubernetes client configuration: {0}")]
    InferConfig(#[from] kube::config::InferConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] serving::tls::Error),
    #[error(transparent)]
    Server(#[from] serving::Error),
    #[error("serving on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The validated configuration of the service; built from flags by `cli`, directly in tests.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: in-cluster configuration or `$KUBECONFIG`/`~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Body, concurrency and time limits, drain delay and shutdown grace of the server.
    pub server: serving::Limits,
    /// How often the TLS files are checked for rotation.
    pub tls_reload_interval: Duration,
}

impl Config {
    /// A plain-HTTP configuration on `listen` with the flags' defaults for everything else,
    /// but no drain delay: in-process callers (tests, benchmarks) have no Endpoints to wait for.
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            kubeconfig: None,
            tls: None,
            server: serving::Limits {
                drain_delay: Duration::ZERO,
                ..cli::default_limits()
            },
            tls_reload_interval: Duration::from_secs(30),
        }
    }
}

/// The service's shared pieces, for `run` and for in-process tests and benchmarks.
pub struct Service {
    pub cache: Arc<Cache>,
    pub ready: Readiness,
    /// Fails `/healthz` when the watches stop outside a shutdown.
    pub health: telemetry::Health,
    pub registry: Arc<Registry>,
    pub state: AppState,
}

impl Service {
    pub fn new() -> Self {
        let ready = Readiness::default();
        let cache = Arc::new(Cache::new(ready.clone()));
        let mut registry = Registry::with_prefix("mock_kind_scheduler");
        let metrics = Metrics::register(&mut registry);
        Service {
            state: AppState {
                cache: cache.clone(),
                metrics,
            },
            cache,
            ready,
            health: telemetry::Health::default(),
            registry: Arc::new(registry),
        }
    }

    /// The extender verbs plus `/healthz`, `/readyz` (caches synced) and `/metrics`.
    pub fn app(&self) -> Router {
        server::router(self.state.clone()).merge(telemetry::ops_router(
            self.registry.clone(),
            self.ready.clone(),
            self.health.clone(),
        ))
    }
}

impl Default for Service {
    fn default() -> Self {
        Self::new()
    }
}

async fn client(config: &Config) -> Result<kube::Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(kube_config)?)
}

/// Runs the extender until `shutdown` is cancelled: watches namespaces and nodes, serves HTTP(S)
/// on `config.listen`, then drains (see [`serving::serve`]).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let client = client(&config).await?;
    run_with(config, client, Service::new(), shutdown).await
}

/// [`run`] with a given client and service (tests keep a handle on `service.cache`).
pub async fn run_with(
    config: Config,
    client: kube::Client,
    service: Service,
    shutdown: CancellationToken,
) -> Result<()> {
    let watchers = service.health.spawn_critical(
        "namespace and node watches",
        shutdown.clone(),
        cache::run_watchers(client, service.cache.clone(), shutdown.child_token()),
    );
    let served = serve(
        &config,
        service.app(),
        service.ready.clone(),
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = watchers.await;
    served
}

/// Serves `app` on `config.listen` (HTTPS when `config.tls` is set) until `shutdown`; `ready`
/// drops first.
pub async fn serve(
    config: &Config,
    app: Router,
    ready: Readiness,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = std::net::TcpListener::bind(config.listen).map_err(|source| Error::Serve {
        addr: config.listen,
        source,
    })?;
    serve_listener(config, listener, app, ready, shutdown).await
}

/// Like [`serve`] on an already bound listener (tests and benchmarks bind port 0).
pub async fn serve_listener(
    config: &Config,
    listener: std::net::TcpListener,
    app: Router,
    ready: Readiness,
    shutdown: CancellationToken,
) -> Result<()> {
    let tls = match &config.tls {
        None => None,
        Some(files) => {
            let tls = serving::tls::Reloadable::from_files(files).await?;
            let rustls = tls.config();
            tokio::spawn(tls.watch_files(
                files.clone(),
                config.tls_reload_interval,
                shutdown.child_token(),
            ));
            Some(rustls)
        }
    };
    serving::serve(listener, app, &config.server, tls, ready, shutdown).await?;
    Ok(())
}
