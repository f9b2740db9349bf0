//! TLS: a reloadable rustls config (TLS 1.2+), fed either from a certificate/key file pair or
//! from the self-bootstrapped Secret. A new pair replaces the served one only when both parse
//! and match; otherwise the old one stays. Open connections keep their session; only new
//! handshakes see the new certificate, so nothing is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::metrics::{Metrics, ReloadLabels, ReloadResult};

/// A source of "now", injectable so tests can age certificates without waiting.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Self-bootstrap: keep Secret `namespace/secret` valid and the webhook configuration's caBundle
/// equal to its `ca.crt`.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub namespace: String,
    pub secret: String,
    /// MutatingWebhookConfiguration whose caBundle to keep right (none: leave it alone).
    pub webhook_config: Option<String>,
    pub cert: certs::CertOptions,
    /// Renew when the certificate expires within this margin.
    pub renew_margin: Duration,
}

#[derive(Clone, Debug)]
pub enum CertSource {
    Files { cert: PathBuf, key: PathBuf },
    Bootstrap(Bootstrap),
}

/// A rustls server config for the pair: TLS 1.2 and 1.3, HTTP/1.1.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, Error> {
    let certified = certs::certified_key(cert_pem, key_pem, "serving certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    // HTTP/1.1 only: with h2 offered, kube-apiserver 1.20's webhook client measured a higher
    // per-call overhead in benches/admission.rs (keep-alive connections are reused either way).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Clone, PartialEq, Eq)]
struct Pair {
    cert: String,
    key: String,
}

async fn read_files(cert: &Path, key: &Path) -> Result<Pair, Error> {
    let read = |p: PathBuf| async move {
        tokio::fs::read_to_string(&p)
            .await
            .map_err(|e| Error::Tls(format!("reading {}: {e}", p.display())))
    };
    Ok(Pair {
        cert: read(cert.to_path_buf()).await?,
        key: read(key.to_path_buf()).await?,
    })
}

/// Ensures the Secret (and caBundle) and returns the pair to serve.
async fn bootstrap_once(
    client: &kube::Client,
    b: &Bootstrap,
    now: SystemTime,
) -> Result<Pair, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &b.namespace);
    let (bundle, action) = certs::cluster::ensure_secret(
        &secrets,
        &b.namespace,
        &b.secret,
        &b.cert,
        now,
        b.renew_margin,
    )
    .await?;
    if action != certs::cluster::Action::Kept {
        tracing::info!(secret = %format!("{}/{}", b.namespace, b.secret), ?action, "serving certificate written");
    }
    if let Some(name) = &b.webhook_config {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        match certs::cluster::ensure_ca_bundle(&api, name, &bundle.ca_pem).await {
            Ok(true) => tracing::info!(webhook_config = %name, "caBundle updated"),
            Ok(false) => {}
            // Applied later than the webhook started (or not at all): checked again next time.
            Err(e @ certs::Error::WebhookConfigNotFound { .. }) => {
                tracing::warn!(error = %e, "caBundle not set")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Pair {
        cert: bundle.cert_pem,
        key: bundle.key_pem,
    })
}

/// The served TLS configuration and the loop that keeps it current.
pub struct Tls {
    pub rustls: RustlsConfig,
    current: Pair,
    source: CertSource,
    client: Option<kube::Client>,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl Tls {
    /// Loads the first pair; an error here stops the webhook (nothing to serve).
    pub async fn load(
        source: CertSource,
        client: Option<kube::Client>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let current = fetch(&source, client.as_ref(), &clock).await?;
        let config = server_config(&current.cert, &current.key)?;
        Ok(Self {
            rustls: RustlsConfig::from_config(config),
            current,
            source,
            client,
            clock,
            metrics,
        })
    }

    /// One check: fetch the pair and swap it in if it changed and is valid.
    pub async fn refresh(&mut self) -> Result<bool, Error> {
        let next = fetch(&self.source, self.client.as_ref(), &self.clock).await?;
        if next == self.current {
            return Ok(false);
        }
        let config = server_config(&next.cert, &next.key)?;
        self.rustls.reload_from_config(config);
        self.current = next;
        Ok(true)
    }

    /// Re-checks every `interval` until `shutdown`; failures keep the served pair.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.refresh().await {
                Ok(true) => {
                    tracing::info!("serving certificate reloaded");
                    self.metrics
                        .cert_reloads
                        .get_or_create(&ReloadLabels {
                            result: ReloadResult::Loaded,
                        })
                        .inc();
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "serving certificate not reloaded; keeping the current one");
                    self.metrics
                        .cert_reloads
                        .get_or_create(&ReloadLabels {
                            result: ReloadResult::Failed,
                        })
                        .inc();
                }
            }
        }
    }
}

async fn fetch(
    source: &CertSource,
    client: Option<&kube::Client>,
    clock: &Clock,
) -> Result<Pair, Error> {
    match source {
        CertSource::Files { cert, key } => read_files(cert, key).await,
        CertSource::Bootstrap(b) => {
            let client = client
                .ok_or_else(|| Error::Config("bootstrap needs a Kubernetes client".into()))?;
            bootstrap_once(client, b, clock()).await
        }
    }
}
