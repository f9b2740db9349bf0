//! TLS: the serving certificate, fed either from a certificate/key file pair or from the
//! self-bootstrapped Secret, into `serving`'s reloadable rustls config (which swaps a new pair
//! in only when it parses and matches, keeping the old one otherwise).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serving::tls::{Outcome, PemPair, Reloadable, TlsFiles};
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

/// Ensures the Secret (and caBundle) and returns the pair to serve.
async fn bootstrap_once(
    client: &kube::Client,
    b: &Bootstrap,
    now: SystemTime,
) -> Result<PemPair, Error> {
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
    Ok(PemPair {
        cert: bundle.cert_pem,
        key: bundle.key_pem,
    })
}

/// The served TLS configuration and where its pair comes from.
pub struct Tls {
    served: Reloadable,
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
        let first = fetch(&source, client.as_ref(), &clock).await?;
        Ok(Self {
            served: Reloadable::new(first)?,
            source,
            client,
            clock,
            metrics,
        })
    }

    /// The config to serve; it follows every reload.
    pub fn rustls(&self) -> RustlsConfig {
        self.served.config()
    }

    /// Re-checks the source every `interval` until `shutdown`; failures keep the served pair.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let Tls {
            served,
            source,
            client,
            clock,
            metrics,
        } = self;
        let fetch_pair = || fetch(&source, client.as_ref(), &clock);
        let record = |outcome: &Outcome| {
            let result = match outcome {
                Outcome::Unchanged => return,
                Outcome::Reloaded => ReloadResult::Loaded,
                Outcome::Failed(_) => ReloadResult::Failed,
            };
            metrics
                .cert_reloads
                .get_or_create(&ReloadLabels { result })
                .inc();
        };
        served
            .refresh_every(interval, shutdown, fetch_pair, record)
            .await
    }
}

async fn fetch(
    source: &CertSource,
    client: Option<&kube::Client>,
    clock: &Clock,
) -> Result<PemPair, Error> {
    match source {
        CertSource::Files { cert, key } => {
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            Ok(serving::tls::read_files(&files).await?)
        }
        CertSource::Bootstrap(b) => {
            let client = client
                .ok_or_else(|| Error::Config("bootstrap needs a Kubernetes client".into()))?;
            bootstrap_once(client, b, clock()).await
        }
    }
}
