//! The harness's error type: each variant says what is missing and how to provide it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Kubernetes binaries unavailable: {0}\n  set KUBE_BIN_DIR to a directory holding kube-apiserver, kube-controller-manager, kube-scheduler, kubemark and etcd, or run `make kube-bins` (builds Kubernetes 1.20.2 from Debian's source package)"
    )]
    Binaries(String),
    #[error("{component} did not start: {reason}\n--- last lines of {log} ---\n{tail}")]
    Start {
        component: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },
    #[error("timed out after {secs:.0}s waiting for {what}")]
    Timeout { what: String, secs: f64 },
    #[error("certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("fault proxy: {0}")]
    FaultProxy(String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
