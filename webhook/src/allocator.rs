//! The namespace controller: gives every new namespace OpenShift's three annotations
//! (`openshift.io/sa.scc.uid-range`, `…supplemental-groups`, `…mcs`) as OpenShift's
//! namespace-security-allocation controller does, off the admission path.
//!
//! Replicas never hand out one block twice: a block is first marked in the pool record (an
//! annotation on the webhook's own namespace, written with its read resourceVersion as a
//! precondition, re-read on conflict), and only then written on the namespace, again with the
//! namespace's resourceVersion. Two replicas racing on one namespace share its pending entry
//! in the record and so its block; one that still lost (it reserved before the entry was
//! there) re-reads, finds the winner's annotations and hands its block back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::allocation::{self, PENDING, POOL, Plan, PoolBits};
use crate::metrics::Metrics;
use crate::namespaces::Meta;

/// Namespaces handled in one pool write: a burst of new namespaces costs one pool write per
/// batch, then one write per namespace.
const BATCH: usize = 256;
/// Namespace writes in flight at once.
const PARALLEL_WRITES: usize = 16;
/// Conflicting writes retried before the batch is retried later.
const ATTEMPTS: usize = 10;
/// Delay before a failed batch is retried (the apiserver is unreachable or refuses).
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AllocatorError {
    #[error("namespace {namespace}: {source}")]
    Api {
        namespace: String,
        source: kube::Error,
    },
    #[error("pool record on namespace {namespace}: gave up after {ATTEMPTS} conflicting writes")]
    Conflicts { namespace: String },
    #[error("the pool of {} UID blocks is exhausted", allocation::BLOCKS)]
    Exhausted,
}

/// What the controller needs; namespaces are read from the webhook's metadata reflector.
pub struct Allocator {
    api: Api<Namespace>,
    store: Store<Meta>,
    /// The webhook's own namespace, which carries the pool record.
    pool_namespace: String,
    /// Namespaces left alone (kube-system, kube-node-lease…), as the admission path does.
    exclude: Arc<[String]>,
    metrics: Arc<Metrics>,
}

impl Allocator {
    pub fn new(
        api: Api<Namespace>,
        store: Store<Meta>,
        pool_namespace: String,
        exclude: Arc<[String]>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            api,
            store,
            pool_namespace,
            exclude,
            metrics,
        }
    }

    /// Whether `ns` needs the controller (fed from the watch; cheap, no I/O).
    pub fn wants(&self, ns: &Meta) -> bool {
        let name = ns.metadata.name.as_deref().unwrap_or_default();
        !self.exclude.iter().any(|e| e == name)
            && ns.metadata.deletion_timestamp.is_none()
            && !matches!(
                allocation::plan(ns.metadata.annotations.as_ref()),
                Plan::Complete | Plan::Invalid(_)
            )
    }

    /// Handles names from `queue` until `shutdown`, a batch at a time.
    pub async fn run(
        &self,
        mut queue: mpsc::UnboundedReceiver<String>,
        shutdown: CancellationToken,
    ) {
        let mut pending: BTreeSet<String> = BTreeSet::new();
        // Blocks reserved for namespaces that got another one, not yet handed back.
        let mut unreleased: Vec<(String, u32)> = Vec::new();
        loop {
            if pending.is_empty() && unreleased.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    name = queue.recv() => match name {
                        Some(name) => { pending.insert(name); }
                        None => return,
                    },
                }
            }
            while pending.len() < BATCH {
                match queue.try_recv() {
                    Ok(name) => {
                        pending.insert(name);
                    }
                    Err(_) => break,
                }
            }
            let batch: Vec<String> = std::mem::take(&mut pending).into_iter().collect();
            let failed = self.handle(&batch, &mut unreleased).await;
            let stuck = !self.hand_back(&mut unreleased).await;
            if !failed.is_empty() || stuck {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
                pending.extend(failed);
            }
        }
    }

    /// One batch; returns the names to retry and adds to `unreleased` the blocks reserved for
    /// namespaces that ended up with another one.
    async fn handle(&self, names: &[String], unreleased: &mut Vec<(String, u32)>) -> Vec<String> {
        // Re-read every namespace: the queue may hold names the watch saw before our own
        // write of them landed in the store.
        let fresh = futures::stream::iter(names.iter().cloned())
            .map(|name| async move {
                let got = self.api.get_metadata_opt(&name).await;
                (name, got)
            })
            .buffer_unordered(PARALLEL_WRITES)
            .collect::<Vec<_>>()
            .await;
        let mut failed = Vec::new();
        let mut need_block = Vec::new();
        let mut fill = Vec::new();
        for (name, got) in fresh {
            match got {
                Ok(Some(ns)) if self.wants(&ns) => {
                    match allocation::plan(ns.metadata.annotations.as_ref()) {
                        Plan::NewBlock => need_block.push(ns),
                        Plan::Fill(_) => fill.push(ns),
                        Plan::Complete | Plan::Invalid(_) => {}
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(namespace = %name, error = %e, "reading namespace");
                    failed.push(name);
                }
            }
        }
        let indices = if need_block.is_empty() {
            Vec::new()
        } else {
            let names: Vec<String> = need_block
                .iter()
                .filter_map(|ns| ns.metadata.name.clone())
                .collect();
            match self.reserve(&names).await {
                Ok(indices) => indices,
                Err(e) => {
                    tracing::warn!(error = %e, "reserving UID blocks");
                    failed.extend(need_block.iter().filter_map(|ns| ns.metadata.name.clone()));
                    return failed;
                }
            }
        };
        let writes = need_block
            .into_iter()
            .zip(indices.into_iter().chain(std::iter::repeat(None)))
            .map(|(ns, index)| (ns, Write::Block(index)))
            .chain(fill.into_iter().map(|ns| (ns, Write::Fill)));
        let results = futures::stream::iter(writes)
            .map(|(ns, write)| self.write(ns, write))
            .buffer_unordered(PARALLEL_WRITES)
            .collect::<Vec<_>>()
            .await;
        for (name, result) in results {
            match result {
                Ok(Some(lost)) => unreleased.push((name, lost)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(namespace = %name, error = %e, "annotating namespace");
                    failed.push(name);
                }
            }
        }
        failed
    }

    /// Reserves a block for each of `names` in the pool record (see [`allocation::reserve`]):
    /// a namespace another replica already reserved for keeps that block. Blocks the
    /// namespaces in the store hold (set by hand or imported) count as used.
    async fn reserve(&self, names: &[String]) -> Result<Vec<Option<u32>>, AllocatorError> {
        let state = self.store.state();
        let held: BTreeSet<u32> = state
            .iter()
            .filter_map(|ns| allocation::used_block(ns.metadata.annotations.as_ref()))
            .collect();
        let carried: std::collections::HashMap<&str, u32> = state
            .iter()
            .filter_map(|ns| {
                let block = allocation::used_block(ns.metadata.annotations.as_ref())?;
                Some((ns.metadata.name.as_deref()?, block))
            })
            .collect();
        self.update_pool(|bits, pending| {
            allocation::reserve(bits, pending, &held, names, |n| carried.get(n).copied())
        })
        .await
    }

    /// Hands `unreleased` back in one pool write (releases one by one would conflict with each
    /// other and with the other replicas); false when that failed and they are kept for later.
    async fn hand_back(&self, unreleased: &mut Vec<(String, u32)>) -> bool {
        if unreleased.is_empty() {
            return true;
        }
        match self.release(unreleased).await {
            Ok(()) => {
                self.metrics
                    .namespace_blocks_released
                    .inc_by(unreleased.len() as u64);
                unreleased.clear();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, blocks = unreleased.len(), "handing back UID blocks");
                false
            }
        }
    }

    /// Returns blocks reserved for namespaces that ended up with another one (a replica won the
    /// race) or was deleted. Only while the record still names that namespace: then nobody else
    /// can hold it, and a second release of the same block (two losers) finds the entry gone
    /// and leaves the bit alone.
    async fn release(&self, lost: &[(String, u32)]) -> Result<(), AllocatorError> {
        self.update_pool(|bits, pending| {
            for (name, index) in lost {
                if let Some(at) = pending.iter().position(|(n, i)| n == name && i == index) {
                    pending.remove(at);
                    bits.remove(*index);
                }
            }
        })
        .await
    }

    fn api_error(&self, source: kube::Error) -> AllocatorError {
        AllocatorError::Api {
            namespace: self.pool_namespace.clone(),
            source,
        }
    }

    /// The pool record as read now: its resourceVersion, the blocks handed out, the pending
    /// reservations.
    async fn read_pool(
        &self,
    ) -> Result<(Option<String>, PoolBits, allocation::Pending), AllocatorError> {
        let pool = self
            .api
            .get_metadata(&self.pool_namespace)
            .await
            .map_err(|e| self.api_error(e))?;
        let recorded = pool.metadata.annotations.as_ref();
        let bits = match recorded
            .and_then(|a| a.get(POOL))
            .map(|v| PoolBits::decode(v))
        {
            None => PoolBits::default(),
            Some(Ok(bits)) => bits,
            Some(Err(e)) => {
                // Rebuilt from the namespaces: every block they hold stays used.
                tracing::warn!(namespace = %self.pool_namespace, reason = %e, "pool record unreadable, rebuilt from the namespaces");
                PoolBits::default()
            }
        };
        let pending = recorded
            .and_then(|a| a.get(PENDING))
            .map(|v| allocation::decode_pending(v))
            .unwrap_or_default();
        Ok((pool.metadata.resource_version, bits, pending))
    }

    /// Writes the pool record on the resourceVersion it was read at: false on a conflict.
    async fn write_pool(
        &self,
        resource_version: Option<String>,
        bits: &PoolBits,
        pending: &allocation::Pending,
    ) -> Result<bool, AllocatorError> {
        let body = serde_json::json!({"metadata": {
            "resourceVersion": resource_version,
            "annotations": {POOL: bits.encode(), PENDING: allocation::encode_pending(pending)},
        }});
        match self
            .api
            .patch_metadata(
                &self.pool_namespace,
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.metrics.namespace_conflicts.inc();
                Ok(false)
            }
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Reads the pool record, applies `change`, writes it back with the read resourceVersion
    /// as a precondition; on conflict, again from a fresh read.
    async fn update_pool<T>(
        &self,
        mut change: impl FnMut(&mut PoolBits, &mut allocation::Pending) -> T,
    ) -> Result<T, AllocatorError> {
        for _ in 0..ATTEMPTS {
            let (rv, mut bits, mut pending) = self.read_pool().await?;
            let out = change(&mut bits, &mut pending);
            if self.write_pool(rv, &bits, &pending).await? {
                return Ok(out);
            }
        }
        Err(AllocatorError::Conflicts {
            namespace: self.pool_namespace.clone(),
        })
    }

    /// OpenShift's repair pass: the record rebuilt from the blocks the namespaces hold, so
    /// the blocks of deleted namespaces are handed out again. The namespaces are listed after
    /// the record is read (a block whose reservation was settled before that read is on its
    /// namespace by then) and the record is written on the read resourceVersion (a reservation
    /// made meanwhile makes it start over). Returns how many blocks it freed.
    pub async fn repair(&self) -> Result<usize, AllocatorError> {
        for _ in 0..ATTEMPTS {
            let (rv, before, pending) = self.read_pool().await?;
            let listed = self
                .api
                .list_metadata(&ListParams::default())
                .await
                .map_err(|e| self.api_error(e))?;
            let namespaces: std::collections::BTreeMap<String, Option<u32>> = listed
                .items
                .iter()
                .filter_map(|ns| {
                    let name = ns.metadata.name.clone()?;
                    Some((
                        name,
                        allocation::used_block(ns.metadata.annotations.as_ref()),
                    ))
                })
                .collect();
            let (bits, left, freed) = allocation::repaired(&before, &namespaces, &pending);
            if freed == 0 && left == pending {
                return Ok(0);
            }
            if self.write_pool(rv, &bits, &left).await? {
                return Ok(freed);
            }
        }
        Err(AllocatorError::Conflicts {
            namespace: self.pool_namespace.clone(),
        })
    }

    /// [`Self::repair`] at once and then every `interval` until `shutdown`; a failed pass is
    /// logged and tried again at the next.
    pub async fn repair_every(&self, interval: Duration, shutdown: CancellationToken) {
        loop {
            match self.repair().await {
                Ok(0) => tracing::debug!("uid block repair: nothing to free"),
                Ok(freed) => tracing::info!(
                    freed,
                    "uid block repair: blocks of deleted namespaces freed"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "uid block repair failed; tried again at the next interval")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// [`Self::write_namespace`]; the reserved block to hand back if it did not land.
    async fn write(&self, ns: Meta, write: Write) -> (String, Result<Option<u32>, AllocatorError>) {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let result = self.write_namespace(ns, &write).await;
        let result = match (write, result) {
            (Write::Block(Some(ours)), Ok(Landed::Other(held))) if held != Some(ours) => {
                Ok(Some(ours))
            }
            (_, result) => result.map(|_| None),
        };
        (name, result)
    }

    /// Writes the annotations on one namespace with its resourceVersion as a precondition; on
    /// conflict re-reads and re-plans (someone else's annotations win).
    async fn write_namespace(&self, mut ns: Meta, write: &Write) -> Result<Landed, AllocatorError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let api_error = |source| AllocatorError::Api {
            namespace: name.clone(),
            source,
        };
        for _ in 0..ATTEMPTS {
            let annotations = ns.metadata.annotations.as_ref();
            let held = allocation::used_block(annotations);
            let add = match (write, allocation::plan(annotations)) {
                (_, Plan::Complete | Plan::Invalid(_)) => return Ok(Landed::Other(held)),
                (_, Plan::Fill(add)) => add,
                (Write::Block(Some(index)), Plan::NewBlock) => {
                    match allocation::new_block_annotations(*index, annotations) {
                        Some(add) => add,
                        None => return Err(AllocatorError::Exhausted),
                    }
                }
                // Gained no block (pool exhausted) or annotations vanished since: next batch.
                (_, Plan::NewBlock) => return Err(AllocatorError::Exhausted),
            };
            let body = serde_json::json!({"metadata": {
                "resourceVersion": ns.metadata.resource_version,
                "annotations": add,
            }});
            match self
                .api
                .patch_metadata(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => {
                    self.metrics.namespace_blocks_written.inc();
                    tracing::info!(namespace = %name, range = add.get(crate::strategy::UID_RANGE).map(String::as_str).unwrap_or("(kept)"), "annotated namespace");
                    return Ok(Landed::Ours);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.metrics.namespace_conflicts.inc();
                    match self.api.get_metadata_opt(&name).await {
                        Ok(Some(fresh)) => ns = fresh,
                        Ok(None) => return Ok(Landed::Other(None)),
                        Err(e) => return Err(api_error(e)),
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Landed::Other(None)),
                Err(e) => return Err(api_error(e)),
            }
        }
        Err(AllocatorError::Conflicts { namespace: name })
    }
}

/// How a namespace write ended.
enum Landed {
    /// Our annotations are on the namespace.
    Ours,
    /// The namespace already had its range (this block, if one of the pool) or is gone.
    Other(Option<u32>),
}

enum Write {
    /// A new block (`None`: the pool ran out for this one).
    Block(Option<u32>),
    /// Only the missing supplemental-groups / MCS annotations (planned again at write time).
    Fill,
}
