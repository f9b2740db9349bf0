//! A real local Kubernetes control plane — etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler on 127.0.0.1 — for mock-kind's end-to-end tests, benchmarks and sandbox.
//!
//! ```no_run
//! # async fn demo() -> Result<(), e2e::Error> {
//! let cp = e2e::ControlPlane::start(e2e::Options::default()).await?;
//! let client = cp.client();
//! # let _ = client; Ok(()) }
//! ```

pub mod accounts;
pub mod audit;
pub mod bench_env;
pub mod bins;
pub mod config;
pub mod control_plane;
pub mod deploy_rbac;
pub mod error;
pub mod fault_plan;
pub mod fault_proxy;
pub mod metrics_api;
pub mod pki;
pub mod pools;
pub mod process;
pub mod procfs;
pub mod rbac;
pub mod sandbox;
pub mod stats;
pub mod wait;

pub use bins::{bin_dir, workspace_root};
pub use control_plane::{ControlPlane, Options};
pub use error::Error;
pub use fault_plan::FaultRates;
pub use fault_proxy::FaultProxy;
pub use wait::{free_port, wait_for};
