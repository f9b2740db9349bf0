//! Optional HTTPS (kube-scheduler's `enableHTTPS` + `tlsConfig`): a rustls config loaded from PEM
//! files and reloaded when they change. A reload swaps in a complete, valid cert/key pair only;
//! on any error the previous pair keeps serving.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;

use crate::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading certificate {cert} and key {key}: {source}")]
    Load {
        cert: PathBuf,
        key: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the pair once (startup: an error here is fatal).
pub async fn load(files: &TlsFiles) -> Result<RustlsConfig, Error> {
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|source| Error::Load {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })
}

fn mtimes(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let cert = std::fs::metadata(&files.cert)
        .and_then(|m| m.modified())
        .ok()?;
    let key = std::fs::metadata(&files.key)
        .and_then(|m| m.modified())
        .ok()?;
    Some((cert, key))
}

/// Polls the files' modification times every `interval`; when they changed, reloads the pair.
/// A half-written rotation (cert updated, key not yet) fails to load and is retried next tick.
pub async fn reload_loop(
    files: TlsFiles,
    config: RustlsConfig,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut loaded = mtimes(&files);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = mtimes(&files);
        if now.is_none() || now == loaded {
            continue;
        }
        match config.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate");
                loaded = now;
            }
            Err(e) => tracing::warn!(
                cert = %files.cert.display(),
                key = %files.key.display(),
                error = %e,
                "could not reload the TLS certificate; keeping the previous one"
            ),
        }
    }
}
