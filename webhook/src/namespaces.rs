//! The `namespace` strategy's I/O: namespaces read from a metadata reflector (a GET only when
//! the namespace is not cached yet), a new block written with the read resourceVersion as a
//! precondition, and a re-read on conflict, so replicas racing on a new namespace agree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::mutation::Ids;
use crate::strategy::{self, NamespaceIds};

/// Writes that lost a race and are retried after re-reading.
const ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace {namespace}: {message}")]
    Annotation { namespace: String, message: String },
    #[error("namespace {namespace}: reading: {source}")]
    Read {
        namespace: String,
        source: kube::Error,
    },
    #[error("namespace {namespace}: writing annotation {annotation}: {source}")]
    Write {
        namespace: String,
        annotation: &'static str,
        source: kube::Error,
    },
    #[error("namespace {namespace}: gave up after {ATTEMPTS} conflicting writes")]
    Conflicts { namespace: String },
}

type Meta = PartialObjectMeta<Namespace>;

pub struct NamespaceRanges {
    api: Api<Namespace>,
    store: Store<Meta>,
    /// Blocks this process wrote, by namespace UID, until the reflector catches up: a
    /// namespace's second pod must not race the watch event of its first.
    written: Mutex<HashMap<String, Ids>>,
    metrics: Arc<Metrics>,
}

impl NamespaceRanges {
    /// Starts the namespace metadata reflector; it stops with `shutdown`.
    pub fn start(
        client: kube::Client,
        metrics: Arc<Metrics>,
        health: &telemetry::Health,
        shutdown: CancellationToken,
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
        health.spawn_critical("namespace watch", shutdown.clone(), async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    item = stream.next() => match item {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => tracing::warn!(error = %e, "namespace watch"),
                        None => break,
                    },
                }
            }
        });
        Arc::new(Self::new(api, store, metrics))
    }

    /// With a store fed elsewhere (tests).
    pub fn new(api: Api<Namespace>, store: Store<Meta>, metrics: Arc<Metrics>) -> Self {
        Self {
            api,
            store,
            written: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Resolves once the reflector has listed every namespace.
    pub async fn wait_until_ready(&self) -> bool {
        self.store.wait_until_ready().await.is_ok()
    }

    async fn read(&self, namespace: &str) -> Result<Meta, NamespaceError> {
        self.api
            .get_metadata(namespace)
            .await
            .map_err(|source| NamespaceError::Read {
                namespace: namespace.to_owned(),
                source,
            })
    }

    /// The IDs of `namespace`: its recorded block, else a new block written on it (unless
    /// `dry_run`: then a block is picked and nothing is written).
    pub async fn ids(&self, namespace: &str, dry_run: bool) -> Result<Ids, NamespaceError> {
        self.resolve(namespace, dry_run).await.map(|(ids, _)| ids)
    }

    /// [`Self::ids`], and why a supplemental-groups annotation was passed over, if one was.
    pub async fn resolve(
        &self,
        namespace: &str,
        dry_run: bool,
    ) -> Result<(Ids, Option<String>), NamespaceError> {
        let mut meta = match self.store.get(&ObjectRef::new(namespace)) {
            Some(m) => (*m).clone(),
            None => {
                self.metrics.namespace_cache_miss.inc();
                self.read(namespace).await?
            }
        };
        for _ in 0..ATTEMPTS {
            let annotations = meta.metadata.annotations.as_ref();
            let groups = match strategy::from_annotations(annotations) {
                Ok(NamespaceIds::Recorded { ids, ignored }) => {
                    if let Some(why) = &ignored {
                        tracing::warn!(namespace, reason = %why, "annotation ignored, as if absent");
                    }
                    return Ok((ids, ignored));
                }
                Ok(NamespaceIds::Missing { groups }) => groups,
                Err(message) => {
                    return Err(NamespaceError::Annotation {
                        namespace: namespace.to_owned(),
                        message,
                    });
                }
            };
            let uid = meta.meta().uid.clone().unwrap_or_default();
            if let Ok(written) = self.written.lock()
                && let Some(ids) = written.get(&uid)
            {
                return Ok((*ids, None));
            }
            let block = strategy::random_block(&mut rand::rng());
            let (add, ids) = strategy::allocation(block, groups);
            if dry_run {
                return Ok((ids, None));
            }
            // A merge patch carrying the read resourceVersion is refused with 409 if anyone
            // wrote the namespace since: then re-read and take their block.
            let body = serde_json::json!({
                "metadata": {
                    "resourceVersion": meta.metadata.resource_version,
                    "annotations": add,
                }
            });
            match self
                .api
                .patch_metadata(namespace, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => {
                    self.metrics.namespace_blocks_written.inc();
                    tracing::info!(namespace, range = %block.annotation(), "recorded UID range on namespace");
                    if let Ok(mut written) = self.written.lock() {
                        // Entries of namespaces the reflector now shows annotated are dropped.
                        let store = &self.store;
                        written.retain(|uid, _| {
                            !store.state().iter().any(|ns| {
                                ns.metadata.uid.as_deref() == Some(uid.as_str())
                                    && ns
                                        .metadata
                                        .annotations
                                        .as_ref()
                                        .is_some_and(|a| a.contains_key(strategy::UID_RANGE))
                            })
                        });
                        written.insert(uid, ids);
                    }
                    return Ok((ids, None));
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.metrics.namespace_conflicts.inc();
                    meta = self.read(namespace).await?;
                }
                Err(source) => {
                    return Err(NamespaceError::Write {
                        namespace: namespace.to_owned(),
                        annotation: strategy::UID_RANGE,
                        source,
                    });
                }
            }
        }
        Err(NamespaceError::Conflicts {
            namespace: namespace.to_owned(),
        })
    }
}
