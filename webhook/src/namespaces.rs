//! Namespaces as the admission path sees them: a metadata reflector (a GET only when the
//! namespace is not cached yet), which also feeds the namespace controller (`allocator.rs`).
//! The admission path never writes a namespace: a pod whose namespace has no UID range yet
//! waits, boundedly, for the controller's annotation to reach the reflector, as OpenShift's
//! SCC admission waits on its namespace informer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use placement::{CompiledExclusions, NamespacePolicy};

use crate::affinity_mode;
use crate::allocation::MCS;
use crate::allocator::Allocator;
use crate::metrics::Metrics;
use crate::mutation::Ids;
use crate::strategy::{self, NamespaceIds, SUPPLEMENTAL_GROUPS, UID_RANGE};

/// The namespace label that exempts a namespace from the restricted-v2 profile, standing in
/// for a ServiceAccount bound to a more permissive SCC.
pub const SCC_LABEL: &str = "mock-kind.io/scc";
pub const SCC_PRIVILEGED: &str = "privileged";

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace {namespace}: {message}")]
    Annotation { namespace: String, message: String },
    #[error("namespace {namespace}: reading: {source}")]
    Read {
        namespace: String,
        source: kube::Error,
    },
    #[error("namespace {namespace} not found")]
    NotFound { namespace: String },
    #[error("namespace {namespace}: unable to find annotation {UID_RANGE}")]
    NotAnnotated { namespace: String },
}

pub type Meta = PartialObjectMeta<Namespace>;

/// What admission reads of a namespace: OpenShift's three annotations (values only of those
/// keys) and whether the namespace is exempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceView {
    pub annotations: BTreeMap<String, String>,
    pub privileged: bool,
}

impl NamespaceView {
    fn of(meta: &Meta) -> Self {
        let annotations = meta
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| [UID_RANGE, SUPPLEMENTAL_GROUPS, MCS].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let privileged = meta
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SCC_LABEL))
            .is_some_and(|v| v == SCC_PRIVILEGED);
        Self {
            annotations,
            privileged,
        }
    }

    fn has_range(&self) -> bool {
        self.annotations.contains_key(UID_RANGE)
    }
}

/// Where the controller keeps its pool record and which namespaces it leaves alone.
pub struct ControllerSettings {
    pub pool_namespace: String,
    pub exclude: Arc<[String]>,
    /// How often the pool record is rebuilt from the namespaces (zero: never).
    pub repair_interval: std::time::Duration,
}

pub struct NamespaceRanges {
    api: Api<Namespace>,
    store: Store<Meta>,
    /// Woken at every namespace event, for admissions waiting on an annotation.
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// `spoofed_excluded_pods` values compiled once for affinity mode's admissions.
    exclusions: CompiledExclusions,
}

impl NamespaceRanges {
    /// Starts the namespace metadata reflector and, with `controller`, the namespace
    /// controller fed from it; both stop with `shutdown`.
    pub fn start(
        client: kube::Client,
        metrics: Arc<Metrics>,
        health: &telemetry::Health,
        shutdown: CancellationToken,
        controller: Option<ControllerSettings>,
    ) -> Arc<Self> {
        let api: Api<Namespace> = Api::all(client.clone());
        let (store, writer) = reflector::store();
        let metadata_api: Api<Meta> = Api::all(client);
        let stream = watcher::watcher(metadata_api, watcher::Config::default())
            .default_backoff()
            .modify(|ns| {
                ns.metadata.managed_fields = None;
            })
            .reflect(writer)
            .touched_objects();
        let changed = Arc::new(Notify::new());
        let allocator = controller.map(|c| {
            let (tx, rx) = mpsc::unbounded_channel();
            let allocator = Arc::new(Allocator::new(
                api.clone(),
                store.clone(),
                c.pool_namespace,
                c.exclude,
                metrics.clone(),
            ));
            let (run, stop) = (allocator.clone(), shutdown.clone());
            health.spawn_critical("namespace controller", shutdown.clone(), async move {
                run.run(rx, stop).await;
            });
            if !c.repair_interval.is_zero() {
                let (repair, stop) = (allocator.clone(), shutdown.clone());
                health.spawn_critical("uid block repair", shutdown.clone(), async move {
                    repair.repair_every(c.repair_interval, stop).await;
                });
            }
            (allocator, tx)
        });
        let notify = changed.clone();
        health.spawn_critical("namespace watch", shutdown.clone(), async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    item = stream.next() => match item {
                        Some(Ok(ns)) => {
                            if let Some((allocator, tx)) = &allocator
                                && allocator.wants(&ns)
                                && let Some(name) = ns.metadata.name.clone()
                            {
                                // The receiver lives as long as the controller task.
                                let _ = tx.send(name);
                            }
                            notify.notify_waiters();
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "namespace watch"),
                        None => break,
                    },
                }
            }
        });
        Arc::new(Self {
            api,
            store,
            changed,
            metrics,
            exclusions: CompiledExclusions::default(),
        })
    }

    /// With a store fed elsewhere and no controller (tests).
    pub fn new(api: Api<Namespace>, store: Store<Meta>, metrics: Arc<Metrics>) -> Self {
        Self {
            api,
            store,
            changed: Arc::new(Notify::new()),
            metrics,
            exclusions: CompiledExclusions::default(),
        }
    }

    /// Resolves once the reflector has listed every namespace.
    pub async fn wait_until_ready(&self) -> bool {
        self.store.wait_until_ready().await.is_ok()
    }

    /// The namespace as admission sees it. Without a UID range yet, waits up to `wait` for
    /// the controller's annotations to reach the reflector, then reports
    /// [`NamespaceError::NotAnnotated`].
    pub async fn view(
        &self,
        namespace: &str,
        wait: Duration,
    ) -> Result<NamespaceView, NamespaceError> {
        let key = ObjectRef::new(namespace);
        let view = NamespaceView::of(&*self.meta(namespace).await?);
        if view.has_range() {
            return Ok(view);
        }
        let waited = tokio::time::timeout(wait, async {
            loop {
                // Registered before the check, so an event between the two is not missed.
                let notified = self.changed.notified();
                if let Some(view) = self
                    .store
                    .get(&key)
                    .map(|m| NamespaceView::of(&m))
                    .filter(NamespaceView::has_range)
                {
                    return view;
                }
                notified.await;
            }
        })
        .await;
        waited.map_err(|_| NamespaceError::NotAnnotated {
            namespace: namespace.to_owned(),
        })
    }

    /// The namespace's metadata from the reflector, or read once when not cached yet.
    async fn meta(&self, namespace: &str) -> Result<Arc<Meta>, NamespaceError> {
        if let Some(meta) = self.store.get(&ObjectRef::new(namespace)) {
            return Ok(meta);
        }
        self.metrics.namespace_cache_miss.inc();
        let meta = self
            .api
            .get_metadata_opt(namespace)
            .await
            .map_err(|source| NamespaceError::Read {
                namespace: namespace.to_owned(),
                source,
            })?
            .ok_or_else(|| NamespaceError::NotFound {
                namespace: namespace.to_owned(),
            })?;
        Ok(Arc::new(meta))
    }

    /// The namespace's placement annotations, compiled (no wait: unlike a UID range, nothing
    /// writes them after the namespace is created), and why a part was passed over.
    pub async fn placement(
        &self,
        namespace: &str,
    ) -> Result<(NamespacePolicy, Vec<String>), NamespaceError> {
        let meta = self.meta(namespace).await?;
        Ok(affinity_mode::policy_of(
            meta.metadata.annotations.as_ref(),
            &self.exclusions,
        ))
    }

    /// The `namespace` strategy's IDs: the recorded block's first UID and first supplemental
    /// GID, and why a supplemental-groups annotation was passed over, if one was.
    pub async fn ids(
        &self,
        namespace: &str,
        wait: Duration,
    ) -> Result<(Ids, Option<String>), NamespaceError> {
        let view = self.view(namespace, wait).await?;
        match strategy::from_annotations(Some(&view.annotations)) {
            Ok(NamespaceIds::Recorded { ids, ignored }) => {
                if let Some(why) = &ignored {
                    tracing::warn!(namespace, reason = %why, "annotation ignored, as if absent");
                }
                Ok((ids, ignored))
            }
            Ok(NamespaceIds::Missing { .. }) => Err(NamespaceError::NotAnnotated {
                namespace: namespace.to_owned(),
            }),
            Err(message) => Err(NamespaceError::Annotation {
                namespace: namespace.to_owned(),
                message,
            }),
        }
    }
}
