//! Hollow kubelet: many fake Nodes and the pods bound to them, from one small process.
//!
//! The decisions are pure modules (`node_status`, `pod_status`, `ipam`, `annotations`, `lease`,
//! `faults`, `retry`); `nodes`, `pods`, `queue` and `gate` are the glue that watches the API and
//! writes what they decide.

pub mod annotations;
pub mod cli;
pub mod client;
pub mod config;
pub mod faults;
pub mod gate;
pub mod ipam;
pub mod kubelet;
pub mod lease;
pub mod metrics;
pub mod metrics_api;
pub mod node_lease;
pub mod node_pressure;
pub mod node_status;
pub mod nodes;
pub mod pod_status;
pub mod pods;
pub mod pool;
pub mod protowire;
pub mod queue;
pub mod reserved;
pub mod retry;
pub mod status_refresh;
pub mod usage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kube::api::PatchParams;
use kube::runtime::events::{Recorder, Reporter};
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError};

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "mock-kind-hollow-node";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("building the Kubernetes client: {0}")]
    Kube(#[source] kube::Error),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("kubelet API: {0}")]
    Kubelet(#[from] kubelet::KubeletError),
    #[error("internal state lock poisoned")]
    Poisoned,
    #[error("shutting down: {0} not created")]
    ShuttingDown(String),
}

impl Error {
    /// Whether trying the same thing again may help.
    pub fn failure(&self) -> retry::Failure {
        match self {
            Error::Api { source, .. } => retry::classify(source),
            _ => retry::Failure::Permanent,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn api_err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Api { what, source }
}

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Lists `params`' objects a page of `page` at a time, handing each to `keep` as it arrives, so
/// no more than a page of whole objects is ever decoded at once (the callers keep a cut-down
/// copy). A failed page fails the whole list; the caller retries from the start.
pub(crate) async fn list_paged<K, T>(
    api: &kube::Api<K>,
    params: &kube::api::ListParams,
    page: u32,
    mut keep: impl FnMut(K) -> Option<T>,
) -> std::result::Result<Vec<T>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.clone().limit(page);
    let mut kept = Vec::new();
    loop {
        let list = api.list(&params).await?;
        kept.extend(list.items.into_iter().filter_map(&mut keep));
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => return Ok(kept),
        }
    }
}

pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// How long shutdown waits for Node and Lease creates in flight before deleting.
const CREATES_DRAIN: Duration = Duration::from_secs(15);

/// State every task shares.
pub struct Shared {
    pub config: Config,
    pub client: kube::Client,
    /// Lease renewals only: their own connections (see `client::build_lease`), and
    /// `lease_budget` instead of `client`'s.
    pub lease_clients: Vec<kube::Client>,
    pub lease_budget: client::TokenBucket,
    /// Every Node and Lease create passes here; shutdown closes it.
    pub creates: gate::CreateGate,
    pub metrics: metrics::Metrics,
    pub nodes: Vec<nodes::NodeSlot>,
    /// The kubelet port each node advertises, and what each listener answers for.
    pub endpoints: kubelet::endpoints::Endpoints,
    /// Each node's CPU, memory and ephemeral storage, as `/stats/summary` and
    /// `/metrics/cadvisor` report them.
    pub capacity: kubelet::stats::Capacity,
    pub node_index: HashMap<String, u32>,
    pub pods: Mutex<pods::PodTable>,
    /// What the kubelet API tells of each pod's containers, kept from the pod watch.
    pub lives: kubelet::Lives,
    pub recorder: Recorder,
    pub started: Instant,
    pub pods_synced: telemetry::Readiness,
    queue: OnceLock<queue::Queue>,
    refs: OnceLock<pods::RefStores>,
}

impl Shared {
    pub fn queue(&self) -> &queue::Queue {
        // Set in `run` before any task that calls this starts.
        self.queue
            .get()
            .unwrap_or_else(|| unreachable!("queue is set before tasks start"))
    }
    pub fn refs(&self) -> &pods::RefStores {
        self.refs
            .get()
            .unwrap_or_else(|| unreachable!("stores are set before tasks start"))
    }
}

/// Hands back to the system the memory freed after a burst (the first registration round, a
/// pool brought to its plan). glibc keeps freed memory in its arenas for reuse, so the garbage of
/// thousands of Nodes decoded at once stays in the RSS long after; `malloc_trim` releases the free
/// pages of every arena.
#[allow(unsafe_code)]
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists under its own locks; it takes no
    // pointer of ours and has no precondition.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reported when the apiserver's /version cannot be read or is no version.
const FALLBACK_VERSION: &str = "v1.20.2";

/// The apiserver's version, read once at start, for the nodes' kubeletVersion (a kubelet of
/// the cluster's release, as kind's nodes are).
pub(crate) async fn apiserver_version(client: &kube::Client) -> String {
    match client.apiserver_version().await {
        Ok(info) => node_status::reported_version(&info.git_version).unwrap_or_else(|| {
            tracing::warn!(
                version = %telemetry::char_prefix(&info.git_version, 80),
                fallback = FALLBACK_VERSION,
                "the apiserver's gitVersion is no version; reporting the fallback"
            );
            FALLBACK_VERSION.into()
        }),
        Err(e) => {
            tracing::warn!(error = %e, fallback = FALLBACK_VERSION, "cannot read the apiserver's /version");
            FALLBACK_VERSION.into()
        }
    }
}

/// What a process answers on `/healthz`, `/readyz` and `/metrics`. A pool process keeps one
/// for its whole life, across the node sets of the pool's generations, so its probes and
/// counters do not depend on a set running.
#[derive(Clone)]
pub struct Ops {
    pub metrics: metrics::Metrics,
    pub ready: telemetry::Readiness,
    pub health: telemetry::Health,
}

impl Ops {
    /// Binds `listen` and serves the three endpoints there until `shutdown`.
    pub fn serve(
        listen: std::net::SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(Ops, tokio::task::JoinHandle<()>)> {
        let mut registry = Registry::with_prefix("hollow_node");
        let ops = Ops {
            metrics: metrics::Metrics::new(&mut registry),
            ready: telemetry::Readiness::default(),
            health: telemetry::Health::default(),
        };
        let listener = std::net::TcpListener::bind(listen).map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
        let router =
            telemetry::ops_router(Arc::new(registry), ops.ready.clone(), ops.health.clone());
        let server = tokio::spawn({
            let ready = ops.ready.clone();
            async move {
                let limits = serving::Limits::ops();
                if let Err(e) =
                    serving::serve(listener, router, &limits, None, ready, shutdown).await
                {
                    tracing::error!(error = %e, "ops server failed");
                }
            }
        });
        Ok((ops, server))
    }
}

/// Runs the hollow node until `shutdown` is cancelled: serves `/healthz`, `/readyz` and
/// `/metrics` on `config.listen`, registers (or adopts) the nodes, then keeps them and their
/// pods alive.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let (ops, server) = Ops::serve(config.listen, shutdown.clone())?;
    match run_set(config, &ops, shutdown).await {
        Ok(()) => {
            let _ = server.await;
            Ok(())
        }
        // The ops server stops only at shutdown; a set that never started must not wait for it.
        Err(e) => {
            server.abort();
            Err(e)
        }
    }
}

/// The node set of `config` until `shutdown`, reporting through `ops` (which outlives it).
pub async fn run_set(config: Config, ops: &Ops, shutdown: CancellationToken) -> Result<()> {
    let config = config.validate()?;
    let metrics = ops.metrics.clone();
    let (ready, health) = (ops.ready.clone(), ops.health.clone());
    let kube_config = client::config(config.kubeconfig.as_deref()).await?;
    let client_ca = match config.kubelet.listen {
        Some(_) => Some(kubelet::client_ca_pem(&config.kubelet, &kube_config)?),
        None => None,
    };
    let client = client::build(
        kube_config.clone(),
        config.qps,
        config.burst,
        metrics.clone(),
        metrics::Lane::Main,
    )?;
    // The renewals' budget is taken in `node_lease::handle_lease`, where it counts as lateness.
    let lease_clients = client::build_lease(
        kube_config,
        config.lease_transport,
        config.lease_workers,
        metrics.clone(),
    )?;
    let lease_budget = client::TokenBucket::new(config.lease_qps, config.lease_burst);

    let mut config = config;
    if config.template.kubelet_version.is_empty() {
        config.template.kubelet_version = apiserver_version(&client).await;
    }
    let slots = nodes::slots(&config)?;
    let endpoints = config.kubelet_endpoints()?;
    let node_index = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i as u32))
        .collect();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kubelet".into(),
            instance: Some(config.prefix.clone()),
        },
    );
    let shared = Arc::new(Shared {
        client,
        lease_clients,
        lease_budget,
        creates: gate::CreateGate::default(),
        metrics,
        nodes: slots,
        endpoints,
        capacity: kubelet::stats::Capacity::of(&config.template.capacity),
        node_index,
        pods: Mutex::new(pods::PodTable::default()),
        lives: kubelet::Lives::new(
            config.kubelet.listen.is_some() || config.metrics_api.listen.is_some(),
        ),
        recorder,
        started: Instant::now(),
        pods_synced: telemetry::Readiness::default(),
        queue: OnceLock::new(),
        refs: OnceLock::new(),
        config,
    });
    // The kubelet API is bound before any task starts (a port in use stops the
    // process with nothing to clean up) and serves from the start: its pods appear as the watch lists them. It
    // stops with the ops server, after the writers.
    let kubelet_api = match (shared.config.kubelet.listen, &client_ca) {
        (Some(addr), Some(ca)) => {
            kubelet::start(shared.clone(), addr, ca, shutdown.clone()).await?
        }
        _ => Vec::new(),
    };
    // The metrics API, likewise bound before anything starts.
    let metrics_api = match shared.config.metrics_api.listen {
        Some(addr) => {
            let ca = metrics_api::client_ca_pem(&shared.config.metrics_api, &shared.client).await?;
            Some(metrics_api::start(shared.clone(), addr, &ca, shutdown.clone()).await?)
        }
        None => None,
    };
    // Counted from before the first write to after the last: the replicas sharing a pool show
    // in their sum that no node is run twice.
    shared.metrics.nodes_managed.set(shared.nodes.len() as i64);
    // Background tasks (the queue and its runs, the watches) stop on `tasks`, cancelled first
    // at shutdown.
    let tasks = CancellationToken::new();
    let handler_shared = shared.clone();
    let panic_shared = shared.clone();
    let on_panic = move |work: &queue::Work| {
        panic_shared.metrics.handler_panics.inc();
        tracing::error!(
            ?work,
            "a work handler panicked; its slot is freed and the item dropped"
        );
    };
    let (queue, queue_join) = queue::start(
        shared.config.workers,
        queue::LeaseLane {
            workers: shared.config.lease_workers,
            yield_to_leases: shared.config.yield_to_leases,
        },
        tasks.clone(),
        health.guard("queue dispatcher", tasks.clone()),
        on_panic,
        move |work, waited| {
            let shared = handler_shared.clone();
            let kind = match work {
                queue::Work::Lease(_) => metrics::WorkKind::Lease,
                queue::Work::NodeStatus(_) => metrics::WorkKind::NodeStatus,
                queue::Work::Pod(_) => metrics::WorkKind::Pod,
            };
            shared
                .metrics
                .queue_wait
                .get_or_create(&metrics::WorkLabels { kind })
                .observe(waited.as_secs_f64());
            async move {
                match work {
                    queue::Work::Lease(i) => node_lease::handle_lease(&shared, i, waited).await,
                    queue::Work::NodeStatus(i) => nodes::handle_status(&shared, i).await,
                    queue::Work::Pod(key) => pods::handle(&shared, key).await,
                }
            }
        },
    );
    let _ = shared.queue.set(queue);
    let (stores, mut joins) = pods::start_ref_reflectors(&shared, &health, &tasks);
    let _ = shared.refs.set(stores.clone());

    // The first round: /readyz waits for it. A node that fails for good here is retried by
    // its NodeStatus work (`nodes::handle_status`), with backoff.
    tokio::select! {
        _ = shutdown.cancelled() => {},
        _ = nodes::register_all(&shared) => {},
    }
    release_freed_memory();
    let n = shared.nodes.len();
    for i in 0..n {
        shared.queue().add(
            queue::Work::Lease(i as u32),
            shared.config.lease.first_delay(i, n),
        );
        // A node the first round could not register tries again after its backoff; one
        // registered is next looked at when its status is due (a scripted change, or its
        // spread rewrite: `status_refresh`).
        let unregistered = match shared.nodes[i].state.lock() {
            Ok(st) if !st.registered => Some(st.failures),
            _ => None,
        };
        let first = match unregistered {
            Some(failures) => {
                retry::REGISTRATION.delay(failures.saturating_add(1), None, rand::random())
            }
            None => nodes::status_due_in(&shared, i),
        };
        shared.queue().add(
            queue::Work::NodeStatus(i as u32),
            first.max(Duration::from_secs(1)),
        );
    }
    joins.push(health.spawn_critical(
        "node annotation watch",
        tasks.clone(),
        nodes::watch_annotations(shared.clone(), tasks.clone()),
    ));
    joins.push(health.spawn_critical(
        "pod watch",
        tasks.clone(),
        pods::watch(shared.clone(), tasks.clone()),
    ));

    // Ready once the pods are listed and the reference stores are filled.
    let ready_shared = shared.clone();
    let ready_tasks = tasks.clone();
    joins.push(tokio::spawn(async move {
        let wait = async {
            let _ = stores.secrets.wait_until_ready().await;
            let _ = stores.configmaps.wait_until_ready().await;
            let _ = stores.pvcs.wait_until_ready().await;
            while !ready_shared.pods_synced.is_ready() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = ready_tasks.cancelled() => {},
            _ = wait => {
                ready.set(true);
                tracing::info!("ready");
            }
        }
    }));

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    // Writers first: the queue (its runs are dropped) and the watches that feed it, then the
    // creates already on the wire. Only then may the nodes go: nothing is left that could
    // renew a Lease or re-register a Node behind the deletion.
    tasks.cancel();
    let _ = queue_join.await;
    for j in joins {
        let _ = j.await;
    }
    if !shared.creates.close(CREATES_DRAIN).await {
        tracing::warn!(
            "node or lease creates still in flight after {CREATES_DRAIN:?}; deleting anyway"
        );
    }
    if shared.config.delete_nodes_on_exit {
        nodes::delete_all(&shared).await;
    }
    for api in kubelet_api.into_iter().chain(metrics_api) {
        let _ = api.await;
    }
    // A pool's next set reports through the same registry.
    shared.metrics.nodes_managed.set(0);
    Ok(())
}
