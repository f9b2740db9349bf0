//! kube-scheduler extender: pods of spoofed namespaces go to hollow (spoofed) nodes, everything
//! else to real nodes. `run` serves the extender verbs and `/healthz` `/readyz` `/metrics`.

pub mod cache;
pub mod cli;
pub mod extender;
pub mod metrics;
pub mod rules;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus_client::registry::Registry;
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
    Tls(#[from] tls::Error),
    #[error("serving on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// TLS certificate and key files (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration of the service; built from flags by `cli`, directly in tests.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: in-cluster configuration or `$KUBECONFIG`/`~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// How long in-flight requests may take to finish after the shutdown signal.
    pub shutdown_grace: Duration,
    /// How often the TLS files are checked for rotation.
    pub tls_reload_interval: Duration,
}

impl Config {
    /// A plain-HTTP configuration on `listen` with defaults for everything else.
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            kubeconfig: None,
            tls: None,
            shutdown_grace: Duration::from_secs(10),
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
/// on `config.listen`, then drains in-flight requests for up to `config.shutdown_grace`.
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
    let served = serve(&config, service.app(), shutdown.clone()).await;
    shutdown.cancel();
    let _ = watchers.await;
    served
}

/// Serves `app` on `config.listen` (HTTPS when `config.tls` is set) until `shutdown`.
pub async fn serve(config: &Config, app: Router, shutdown: CancellationToken) -> Result<()> {
    let listener = std::net::TcpListener::bind(config.listen).map_err(|source| Error::Serve {
        addr: config.listen,
        source,
    })?;
    serve_listener(config, listener, app, shutdown).await
}

/// Like [`serve`] on an already bound listener (tests and benchmarks bind port 0).
pub async fn serve_listener(
    config: &Config,
    listener: std::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr().map_err(|source| Error::Serve {
        addr: config.listen,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Serve { addr, source })?;
    let handle = axum_server::Handle::new();
    let grace = config.shutdown_grace;
    let drain = handle.clone();
    let token = shutdown.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        tracing::info!("shutting down: draining in-flight requests");
        drain.graceful_shutdown(Some(grace));
    });
    let make = app.into_make_service();
    let result = match &config.tls {
        None => {
            tracing::info!(%addr, "serving the extender over HTTP");
            axum_server::from_tcp(listener)
                .map_err(|source| Error::Serve { addr, source })?
                .handle(handle)
                .serve(make)
                .await
        }
        Some(files) => {
            let rustls = tls::load(files).await?;
            tokio::spawn(tls::reload_loop(
                files.clone(),
                rustls.clone(),
                config.tls_reload_interval,
                shutdown.child_token(),
            ));
            tracing::info!(%addr, "serving the extender over HTTPS");
            axum_server::from_tcp_rustls(listener, rustls)
                .map_err(|source| Error::Serve { addr, source })?
                .handle(handle)
                .serve(make)
                .await
        }
    };
    result.map_err(|source| Error::Serve { addr, source })
}
