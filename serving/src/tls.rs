//! TLS: a reloadable rustls config (TLS 1.2 and 1.3, HTTP/1.1) and the loop that keeps it
//! current. A new certificate/key pair is swapped in only when it differs from the served one,
//! parses, and the key matches the certificate; otherwise the served pair stays. Open
//! connections keep their session; new handshakes see the new certificate.

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pair(#[from] certs::Error),
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(String),
}

/// TLS certificate (chain) and key files, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate (chain) and its key, PEM, as read from files or a Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

/// A rustls server config for the pair: TLS 1.2 and 1.3, HTTP/1.1 only (what [`crate::serve`]
/// speaks; offering h2 in ALPN would break h2-capable clients).
pub fn server_config(pair: &PemPair) -> Result<Arc<ServerConfig>, Error> {
    build(pair, None)
}

/// As [`server_config`], and asks every client for a certificate: one that chains to a CA of
/// `client_ca_pem` (for client authentication) is verified in the handshake and reaches the
/// handlers in axum-server's `TlsInfo`; a client without one is let in (the handler then looks
/// for other credentials); one with a certificate that does not verify is refused. A chain
/// verified lately is not verified again ([`crate::client_chains`]); the key is proven at every
/// handshake.
pub fn server_config_with_client_ca(
    pair: &PemPair,
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs::parse_certs(client_ca_pem, "client CA")? {
        roots.add(ca).map_err(|e| Error::ClientCa(e.to_string()))?;
    }
    build(pair, Some(roots))
}

fn build(
    pair: &PemPair,
    client_roots: Option<rustls::RootCertStore>,
) -> Result<Arc<ServerConfig>, Error> {
    let certified = certs::certified_key(&pair.cert, &pair.key, "serving certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(crate::client_chains::CachingVerifier::new(
                verifier,
            )))
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads both files of the pair.
pub async fn read_files(files: &TlsFiles) -> Result<PemPair, Error> {
    async fn read(path: &Path) -> Result<String, Error> {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })
    }
    Ok(PemPair {
        cert: read(&files.cert).await?,
        key: read(&files.key).await?,
    })
}

/// The served configuration and the pair it was built from.
pub struct Reloadable {
    rustls: RustlsConfig,
    current: PemPair,
}

/// What one check of the source found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Reloaded,
    /// Nothing swapped in; the served pair stays.
    Failed(String),
}

impl Reloadable {
    /// Serves `pair` (startup: an error here is fatal, there is nothing to serve).
    pub fn new(pair: PemPair) -> Result<Self, Error> {
        let config = server_config(&pair)?;
        Ok(Reloadable {
            rustls: RustlsConfig::from_config(config),
            current: pair,
        })
    }

    /// Loads the pair from files.
    pub async fn from_files(files: &TlsFiles) -> Result<Self, Error> {
        Self::new(read_files(files).await?)
    }

    /// The handle [`crate::serve`] takes; it follows every swap.
    pub fn config(&self) -> RustlsConfig {
        self.rustls.clone()
    }

    /// Swaps `next` in if it differs from the served pair and is valid; `Ok(false)`: unchanged.
    pub fn swap(&mut self, next: PemPair) -> Result<bool, Error> {
        if next == self.current {
            return Ok(false);
        }
        self.rustls.reload_from_config(server_config(&next)?);
        self.current = next;
        Ok(true)
    }

    /// Fetches the pair every `interval` until `shutdown` and swaps it in when it changed and
    /// is valid; `on_outcome` sees every check (for metrics). A half-written rotation (new
    /// certificate, old key) fails the key check and is retried next tick.
    pub async fn refresh_every<F, Fut, E>(
        mut self,
        interval: Duration,
        shutdown: CancellationToken,
        mut fetch: F,
        mut on_outcome: impl FnMut(&Outcome),
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<PemPair, E>>,
        E: Display,
    {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let outcome = match fetch().await {
                Err(e) => Outcome::Failed(e.to_string()),
                Ok(next) => match self.swap(next) {
                    Ok(true) => Outcome::Reloaded,
                    Ok(false) => Outcome::Unchanged,
                    Err(e) => Outcome::Failed(e.to_string()),
                },
            };
            match &outcome {
                Outcome::Reloaded => tracing::info!("serving certificate reloaded"),
                Outcome::Unchanged => {}
                Outcome::Failed(error) => tracing::warn!(
                    %error,
                    "serving certificate not reloaded; keeping the current one"
                ),
            }
            on_outcome(&outcome);
        }
    }

    /// [`Self::refresh_every`] from files.
    pub async fn watch_files(
        self,
        files: TlsFiles,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let files = &files;
        self.refresh_every(interval, shutdown, || read_files(files), |_| {})
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> PemPair {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .unwrap_or_else(|e| panic!("self-signed: {e}"));
        PemPair {
            cert: ck.cert.pem(),
            key: ck.signing_key.serialize_pem(),
        }
    }

    #[test]
    fn swap_takes_only_a_changed_complete_pair() {
        let (first, second) = (pair(), pair());
        let mut tls = Reloadable::new(first.clone()).unwrap_or_else(|e| panic!("first: {e}"));
        let mismatched = PemPair {
            cert: second.cert.clone(),
            key: first.key.clone(),
        };
        let garbage = PemPair {
            cert: "not a certificate".to_owned(),
            key: second.key.clone(),
        };
        let cases: [(&str, PemPair, Result<bool, &str>); 5] = [
            ("same pair", first.clone(), Ok(false)),
            ("key of another cert", mismatched, Err("do not match")),
            ("garbage cert", garbage, Err("no PEM certificate")),
            ("new pair", second.clone(), Ok(true)),
            ("new pair again", second, Ok(false)),
        ];
        for (name, next, want) in cases {
            let got = tls.swap(next).map_err(|e| e.to_string());
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
