//! Pod glue: one watch for every bound pod (field selector `spec.nodeName!=`), filtered to our
//! nodes; tiny per-pod state; the latest Pod kept only while it still has work ahead; status
//! written through the status subresource; kubelet Events; deletion with grace period 0.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, DeleteParams, Patch, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Phase;
use crate::pod_status::{EventKind, ObjRef, Outcome, PodContext, evaluate, host_network, pod_key};
use crate::queue::Work;
use crate::retry::{self, Failure};
use crate::{Shared, is_not_found, patch_params};

mod refs;
pub use refs::{RefStores, SecretStores, start_ref_reflectors};

/// What we remember about one pod on one of our nodes.
pub struct PodEntry {
    pub uid: String,
    pub node: u32,
    pub phase: Phase,
    /// The latest Pod, while it still has work ahead (dropped once settled).
    pub pod: Option<Arc<Pod>>,
    /// When we first saw it bound (not for pods adopted after a restart).
    pub bound_at: Option<Instant>,
    pub ready_recorded: bool,
    /// Waiting for a Secret, ConfigMap or PVC: requeued when one changes.
    pub waiting_refs: bool,
    pub last_event: Option<(EventKind, Instant)>,
    /// Failed writes in a row (status or deletion), for the retry backoff.
    pub failures: u32,
}

#[derive(Default)]
pub struct PodTable {
    pub pods: HashMap<Arc<str>, PodEntry>,
}

fn strip(mut pod: Pod) -> Pod {
    pod.metadata.managed_fields = None;
    pod
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// Records a pod from the watch. Returns its key when it is on one of our nodes.
fn upsert(shared: &Shared, pod: Pod, live: bool) -> Option<Arc<str>> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    let &idx = shared.node_index.get(node)?;
    let pod = strip(pod);
    let key: Arc<str> = pod_key(&pod).into();
    shared.lives.record(&key, idx, &pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let phase = Phase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref()));
    // Restart adoption: an IP the pod already carries is reserved before anything new is
    // handed out.
    if let Some(ip) = pod_ip(&pod)
        && !host_network(&pod)
        && let Ok(mut st) = shared.nodes[idx as usize].state.lock()
        && !st.ipam.adopt(&uid, ip)
    {
        tracing::warn!(pod = %key, %ip, "pod IP outside the node's podCIDR or held by another pod");
    }
    let Ok(mut table) = shared.pods.lock() else {
        return None;
    };
    match table.pods.get_mut(&key) {
        Some(e) if e.uid == uid => {
            if e.phase != phase {
                shared.metrics.pod_phase(e.phase).dec();
                shared.metrics.pod_phase(phase).inc();
                e.phase = phase;
            }
            e.pod = Some(Arc::new(pod));
        }
        other => {
            if let Some(old) = other {
                // Same name, new pod: forget the old one.
                shared.metrics.pod_phase(old.phase).dec();
                let old_uid = old.uid.clone();
                let old_node = old.node as usize;
                if let Ok(mut st) = shared.nodes[old_node].state.lock() {
                    st.ipam.release(&old_uid);
                }
            }
            shared.metrics.pod_phase(phase).inc();
            let fresh = live && phase == Phase::Pending && pod_ip(&pod).is_none();
            table.pods.insert(
                key.clone(),
                PodEntry {
                    uid,
                    node: idx,
                    phase,
                    pod: Some(Arc::new(pod)),
                    bound_at: fresh.then(Instant::now),
                    ready_recorded: !fresh,
                    waiting_refs: false,
                    last_event: None,
                    failures: 0,
                },
            );
        }
    }
    Some(key)
}

fn forget(shared: &Shared, key: &str) {
    shared.lives.forget(key);
    let Ok(mut table) = shared.pods.lock() else {
        return;
    };
    if let Some(e) = table.pods.remove(key) {
        shared.metrics.pod_phase(e.phase).dec();
        if let Ok(mut st) = shared.nodes[e.node as usize].state.lock() {
            st.ipam.release(&e.uid);
        }
    }
}

/// The one pod watch of this process.
pub async fn watch(shared: Arc<Shared>, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields("spec.nodeName!=");
    let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
    let mut listing: HashSet<Arc<str>> = HashSet::new();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => match ev { Some(ev) => ev, None => return },
        };
        match ev {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(pod)) => {
                if let Some(k) = upsert(&shared, pod, false) {
                    listing.insert(k);
                }
            }
            Ok(watcher::Event::InitDone) => {
                // Pods that vanished while we were not watching.
                let gone: Vec<Arc<str>> = match shared.pods.lock() {
                    Ok(t) => t
                        .pods
                        .keys()
                        .filter(|k| !listing.contains(*k))
                        .cloned()
                        .collect(),
                    Err(_) => Vec::new(),
                };
                for k in gone {
                    forget(&shared, &k);
                }
                tracing::info!(pods = listing.len(), "pod list synced");
                for k in listing.drain() {
                    shared.queue().add(Work::Pod(k), Duration::ZERO);
                }
                shared.pods_synced.set(true);
            }
            Ok(watcher::Event::Apply(pod)) => {
                if let Some(k) = upsert(&shared, pod, true) {
                    shared.queue().add(Work::Pod(k), Duration::ZERO);
                }
            }
            Ok(watcher::Event::Delete(pod)) => forget(&shared, &pod_key(&pod)),
            Err(e) => tracing::warn!(error = %e, "pod watch error"),
        }
    }
}

fn object_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The wait before retrying pod `key` after a failed write: backoff over its failures in a
/// row (reset by the next write that goes through).
fn write_failed(shared: &Shared, key: &str, failure: Failure) -> Duration {
    let failures = shared
        .pods
        .lock()
        .ok()
        .and_then(|mut t| {
            let e = t.pods.get_mut(key)?;
            e.failures = e.failures.saturating_add(1);
            Some(e.failures)
        })
        .unwrap_or(1);
    retry::steady(retry::STEADY, failure, failures, rand::random())
}

/// Queue handler for `Work::Pod`.
pub async fn handle(shared: &Shared, key: Arc<str>) {
    let (pod, idx) = match shared.pods.lock() {
        Ok(t) => match t.pods.get(&key) {
            Some(PodEntry {
                pod: Some(p), node, ..
            }) => (p.clone(), *node as usize),
            _ => return,
        },
        Err(_) => return,
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    // An IP already on the pod is never changed (adopted in `upsert` when it was free);
    // otherwise the node's allocator hands one out (the same one on every evaluation).
    let ip = match pod_ip(&pod) {
        // The node's address, not ours to allocate.
        _ if host_network(&pod) => None,
        Some(ip) => Some(ip),
        None => {
            let Ok(mut st) = shared.nodes[idx].state.lock() else {
                return;
            };
            match st.ipam.allocate(&uid) {
                Ok(ip) => Some(ip),
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "no pod IP");
                    None
                }
            }
        }
    };
    let host_ip = shared.config.template.internal_ip.clone();
    let lookup = |r: &ObjRef| shared.refs().lookup(&namespace, r);
    let outcome: Outcome = evaluate(
        &pod,
        &PodContext {
            now: jiff::Timestamp::now(),
            host_ip: &host_ip,
            pod_ip: ip,
            settings: shared.config.pods,
            lookup: &lookup,
        },
    );
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let mut requeue = outcome.requeue;
    let mut wrote_ready = false;
    let mut write_failed_now = false;
    // The Pod as the apiserver answered our write.
    let mut written: Option<Pod> = None;
    if let Some(status) = &outcome.status {
        let ready = status.phase.as_deref() == Some("Running")
            && status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
        match api
            .patch_status(
                &name,
                &patch_params(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            Ok(updated) => {
                shared.metrics.status_writes.inc();
                wrote_ready = ready;
                written = Some(updated);
            }
            Err(e) if is_not_found(&e) => return,
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "pod status write failed");
                write_failed_now = true;
                requeue = Some(write_failed(shared, &key, retry::classify(&e)));
            }
        }
    }
    let waiting = outcome.waits_for_references();
    // Events: once per reason per retry period (our own status write echoes back at once).
    let publish = {
        let Ok(mut t) = shared.pods.lock() else {
            return;
        };
        let Some(e) = t.pods.get_mut(&key) else {
            return;
        };
        e.waiting_refs = waiting;
        if !write_failed_now {
            e.failures = 0;
        }
        if wrote_ready && !e.ready_recorded {
            e.ready_recorded = true;
            if let Some(at) = e.bound_at {
                shared
                    .metrics
                    .bind_to_running
                    .observe(at.elapsed().as_secs_f64());
            }
        }
        // Kills are recorded each time; conditions that last, once per quiet period.
        let first = outcome
            .events
            .iter()
            .find(|ev| ev.kind.repeats())
            .map(|ev| ev.kind);
        let quiet = shared.config.pods.retry_missing / 2;
        let publish = match (first, e.last_event) {
            (None, _) => false,
            (Some(r), Some((last, at))) if r == last && at.elapsed() < quiet => false,
            (Some(r), _) => {
                e.last_event = Some((r, Instant::now()));
                true
            }
        };
        // Until the watch brings it, the next look (a requeue may come first under load) starts
        // from what we wrote, not from the status before it: a kill or a back-off is decided and
        // recorded once.
        if let Some(updated) = written.take()
            && e.pod.as_ref().is_some_and(|p| Arc::ptr_eq(p, &pod))
        {
            e.pod = Some(Arc::new(strip(updated)));
        }
        // Settled: nothing written, nothing ahead. Drop the Pod unless a newer one arrived.
        if outcome.status.is_none()
            && requeue.is_none()
            && !outcome.delete
            && e.pod.as_ref().is_some_and(|p| Arc::ptr_eq(p, &pod))
        {
            e.pod = None;
        }
        publish
    };
    let to_publish: Vec<_> = outcome
        .events
        .iter()
        .filter(|ev| publish || !ev.kind.repeats())
        .collect();
    if !to_publish.is_empty() {
        let reference = object_ref(&pod);
        for ev in to_publish {
            if ev.kind == EventKind::InvalidAnnotation {
                shared.metrics.invalid_annotations.inc();
                tracing::warn!(pod = %key, message = %ev.message, "annotation ignored");
            }
            let event = Event {
                type_: if ev.kind.warning() {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: ev.kind.reason().to_string(),
                note: Some(ev.message.chars().take(1000).collect()),
                action: ev.kind.action().to_string(),
                secondary: None,
            };
            if let Err(e) = shared.recorder.publish(&event, &reference).await {
                tracing::warn!(pod = %key, reason = ev.kind.reason(), error = %e, "publishing event failed");
            }
        }
    }
    if outcome.delete {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "pod delete failed");
                requeue = Some(write_failed(shared, &key, retry::classify(&e)));
            }
        }
    }
    if let Some(after) = requeue {
        shared.queue().add(Work::Pod(key), after);
    }
}
