//! Node glue: registers or adopts this process's Nodes (retrying each with backoff, never
//! giving up on one for good) with their Leases (renewed by `node_lease`), writes NodeStatus
//! on change or every few minutes, and follows the `mock-kind.io/health` annotation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::annotations::{NODE_HEALTH, node_health};
use crate::faults::health_at;
use crate::ipam::{Cidr, NodeIpam, node_pod_cidr};
use crate::node_lease::ensure_lease;
use crate::node_pressure::Pressures;
use crate::node_status::{Health, OWNER_LABEL, new_node, node_status};
use crate::queue::Work;
use crate::retry::{self, Next};
use crate::{Error, Shared, api_err, is_not_found, patch_params};

pub use crate::node_lease::LEASE_NAMESPACE;

pub struct NodeSlot {
    pub name: String,
    pub state: Mutex<NodeState>,
}

pub struct NodeState {
    pub ipam: NodeIpam,
    pub uid: Option<String>,
    /// Value of the `mock-kind.io/health` annotation, when set to anything but Ready.
    pub annotation: Option<String>,
    /// The status we last wrote, for condition transition times.
    pub last: Option<NodeStatus>,
    /// When an unchanged status is next rewritten (`status_refresh`); None before the first
    /// write.
    pub refresh_at: Option<Instant>,
    pub last_lease_ok: Instant,
    pub reported_ready: Option<bool>,
    /// A renewal failed: if the Lease went stale meanwhile, the node-lifecycle controller set
    /// Ready=Unknown, which only a status write undoes (a kubelet compares with the API's copy;
    /// we compare with our own). Rewritten after the next successful renewal.
    pub status_suspect: bool,
    /// The Node exists (created or adopted); until then its work only retries registering.
    pub registered: bool,
    /// Failed registrations or node status writes in a row.
    pub failures: u32,
    /// Failed renewals in a row.
    pub lease_failures: u32,
    /// The Lease's resourceVersion after our last write: the precondition of a protobuf
    /// renewal. Unknown (None) until a write answered it, and after a conflict.
    pub lease_rv: Option<String>,
    /// Someone else wrote this Lease (a PUT conflicted): it is renewed with merge patches from
    /// then on, which keep what they wrote, where a PUT would replace it.
    pub lease_shared: bool,
}

impl NodeSlot {
    pub fn new(name: String, cidr: Cidr) -> Self {
        NodeSlot {
            state: Mutex::new(NodeState {
                ipam: NodeIpam::new(name.clone(), cidr),
                uid: None,
                annotation: None,
                last: None,
                refresh_at: None,
                last_lease_ok: Instant::now(),
                reported_ready: None,
                status_suspect: false,
                registered: false,
                failures: 0,
                lease_failures: 0,
                lease_rv: None,
                lease_shared: false,
            }),
            name,
        }
    }
}

/// Selector for the Nodes of this process.
/// The node's `mock-kind.io/health` annotation, unless it says Ready (which is no fault).
fn health_annotation(meta: &ObjectMeta) -> Option<String> {
    let value = meta.annotations.as_ref().and_then(|a| a.get(NODE_HEALTH));
    node_health(value.map(String::as_str))
}

pub fn owner_selector(prefix: &str) -> String {
    format!("{OWNER_LABEL}={prefix}")
}

fn planned_cidr(shared: &Shared, i: usize) -> Result<Cidr, Error> {
    let c = &shared.config;
    node_pod_cidr(
        c.cluster_cidr,
        c.node_cidr_mask,
        c.replica_index,
        c.nodes as u64,
        c.node_number(i),
    )
    .map_err(Error::Ipam)
}

/// Nodes per page when listing this process's Nodes to adopt them.
const LIST_PAGE: u32 = 500;

pub fn slots(config: &crate::Config) -> Result<Vec<NodeSlot>, Error> {
    (0..config.nodes)
        .map(|i| {
            let cidr = node_pod_cidr(
                config.cluster_cidr,
                config.node_cidr_mask,
                config.replica_index,
                config.nodes as u64,
                config.node_number(i),
            )
            .map_err(Error::Ipam)?;
            Ok(NodeSlot::new(config.node_name(i), cidr))
        })
        .collect()
}

/// The health the node reports now: the annotation wins over the fault schedule; a pressure
/// list (annotation or --fault-condition) keeps the node Ready under pressure.
pub fn health(shared: &Shared, i: usize) -> (Health, Option<Duration>) {
    let annotation = shared.nodes[i]
        .state
        .lock()
        .ok()
        .and_then(|s| s.annotation.clone());
    let (ok, next) = health_at(&shared.config.faults, shared.started.elapsed());
    match annotation {
        Some(v) => match Pressures::parse(&v) {
            Ok(p) => (Health::Pressure(p), next),
            Err(_) => (Health::Annotated(v), next),
        },
        None if !ok => match shared.config.fault_pressure {
            Some(p) => (Health::Pressure(p), next),
            None => (Health::ScheduledFault, next),
        },
        None => (Health::Ready, next),
    }
}

/// What adopting a Node reads of it (`ensure_node`): its name, UID, annotations, podCIDR and
/// conditions. The rest (managedFields above all) would be held for every Node until the first
/// round ends: tens of MB at a few thousand Nodes.
fn adoptable(n: Node) -> Node {
    Node {
        metadata: ObjectMeta {
            name: n.metadata.name,
            uid: n.metadata.uid,
            annotations: n.metadata.annotations,
            ..Default::default()
        },
        spec: n.spec.map(|s| NodeSpec {
            pod_cidr: s.pod_cidr,
            ..Default::default()
        }),
        status: n.status.map(|s| NodeStatus {
            conditions: s.conditions,
            ..Default::default()
        }),
    }
}

/// Our Nodes that exist already, or none when they cannot be listed (after the registration
/// backoff's attempts): the creates then meet 409 and adopt the Node one by one.
async fn existing_nodes(shared: &Shared) -> HashMap<String, Node> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let selector = owner_selector(&shared.config.prefix);
    let mut failures = 0;
    let params = ListParams::default().labels(&selector);
    loop {
        // A replica sharing a pool keeps only its own; adoption reads little of a Node
        // (`adoptable`), and managedFields outweigh the rest.
        let listed = crate::list_paged(&api, &params, LIST_PAGE, |n: Node| {
            let name = n.metadata.name.clone()?;
            shared
                .node_index
                .contains_key(&name)
                .then(|| (name, adoptable(n)))
        })
        .await;
        let err = match listed {
            Ok(found) => return found.into_iter().collect(),
            Err(e) => e,
        };
        failures += 1;
        let next = retry::registration(
            retry::classify(&err),
            failures,
            retry::REGISTRATION_ATTEMPTS,
            rand::random(),
        );
        match next {
            Next::RetryIn(wait) => {
                tracing::warn!(%selector, error = %err, ?wait, "listing our nodes failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Next::GiveUp => {
                tracing::warn!(%selector, error = %err, "listing our nodes failed; registering each anyway");
                return HashMap::new();
            }
        }
    }
}

/// The first registration round: every node of this process, adopting those that exist,
/// each retried with backoff on transient errors. A node that still fails is logged and
/// counted, and left to its NodeStatus work, which keeps retrying it; nothing here stops
/// the process. Returns how many are registered.
pub async fn register_all(shared: &Shared) -> usize {
    let existing = existing_nodes(shared).await;
    tracing::info!(
        existing = existing.len(),
        nodes = shared.config.nodes,
        "registering nodes"
    );
    let existing = &existing;
    let registered = futures::stream::iter(0..shared.config.nodes)
        .map(|i| async move { register(shared, i, existing.get(&shared.nodes[i].name)).await })
        .buffer_unordered(32)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let missing = shared.nodes.len() - registered;
    shared.metrics.nodes_unregistered.set(missing as i64);
    if missing == 0 {
        tracing::info!(nodes = registered, prefix = %shared.config.prefix, "nodes registered");
    } else {
        tracing::warn!(
            registered,
            missing,
            prefix = %shared.config.prefix,
            "some nodes could not be registered yet; retrying them in the background"
        );
    }
    registered
}

/// Node `i` in the first round: true once registered.
async fn register(shared: &Shared, i: usize, existing: Option<&Node>) -> bool {
    let name = &shared.nodes[i].name;
    let mut failures = 0;
    loop {
        let err = match ensure_node(shared, i, existing.cloned()).await {
            Ok(()) => return true,
            Err(e) => e,
        };
        failures += 1;
        let next = retry::registration(
            err.failure(),
            failures,
            retry::REGISTRATION_ATTEMPTS,
            rand::random(),
        );
        match next {
            Next::RetryIn(wait) => {
                tracing::debug!(node = %name, error = %err, ?wait, "registration failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Next::GiveUp => {
                registration_failed(shared, i, &err, failures);
                return false;
            }
        }
    }
}

/// A registration gave up for now: said once in the log and in the metrics.
fn registration_failed(shared: &Shared, i: usize, err: &Error, failures: u32) {
    shared.metrics.registration_failures.inc();
    tracing::warn!(
        node = %shared.nodes[i].name,
        error = %err,
        failures,
        "registering the node failed; it is retried later"
    );
    if let Ok(mut st) = shared.nodes[i].state.lock() {
        st.failures = failures;
    }
}

/// Creates node `i` (or adopts `existing`), sets its podCIDR when missing, writes its status
/// and makes sure its Lease exists.
pub async fn ensure_node(shared: &Shared, i: usize, existing: Option<Node>) -> Result<(), Error> {
    let slot = &shared.nodes[i];
    let name = &slot.name;
    let api: Api<Node> = Api::all(shared.client.clone());
    let now = jiff::Timestamp::now();
    let planned = planned_cidr(shared, i)?;
    let node = match existing {
        Some(n) => n,
        None => {
            let port = kubelet_port(shared, i);
            let fresh = new_node(
                &shared.config.template,
                name,
                port,
                &planned.to_string(),
                now,
            );
            let create_api = api.clone();
            let created = shared
                .creates
                .run(async move { create_api.create(&PostParams::default(), &fresh).await })
                .await
                .ok_or_else(|| Error::ShuttingDown(format!("node {name}")))?;
            match created {
                Ok(n) => n,
                Err(kube::Error::Api(s)) if s.code == 409 => api
                    .get(name)
                    .await
                    .map_err(api_err(format!("get node {name}")))?,
                Err(e) => return Err(api_err(format!("create node {name}"))(e)),
            }
        }
    };
    // A 1.20 Node's podCIDR can be set once: keep the one it has, set ours only when empty.
    let cidr = match node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
        Some(c) => Cidr::parse(c).map_err(Error::Ipam)?,
        None => {
            let patch = json!({"spec": {"podCIDR": planned.to_string(), "podCIDRs": [planned.to_string()]}});
            api.patch(name, &patch_params(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(format!("set spec.podCIDR of node {name}")))?;
            planned
        }
    };
    let annotation = health_annotation(&node.metadata);
    let uid = node.metadata.uid.clone();
    {
        let mut st = slot.state.lock().map_err(|_| Error::Poisoned)?;
        if st.ipam.cidr() != cidr {
            st.ipam = NodeIpam::new(name.clone(), cidr);
        }
        st.uid = uid.clone();
        st.annotation = annotation;
        st.last = node.status.clone();
    }
    write_status(shared, i, true).await?;
    ensure_lease(shared, i, uid).await?;
    let mut st = slot.state.lock().map_err(|_| Error::Poisoned)?;
    if !st.registered {
        st.registered = true;
        st.failures = 0;
    }
    Ok(())
}

/// The kubelet port node `i` advertises.
fn kubelet_port(shared: &Shared, i: usize) -> i32 {
    let port = shared.endpoints.advertised(i);
    port.map_or(shared.config.template.kubelet_port, i32::from)
}

/// Writes node `i`'s status when its Ready condition changes, or when `force`.
pub(crate) async fn write_status(shared: &Shared, i: usize, force: bool) -> Result<bool, Error> {
    let slot = &shared.nodes[i];
    let (h, _) = health(shared, i);
    let (status, due) = {
        let st = slot.state.lock().map_err(|_| Error::Poisoned)?;
        let stale = st.refresh_at.is_none_or(|t| Instant::now() >= t);
        let changed = crate::node_status::ready_differs(st.last.as_ref(), &h);
        let status = node_status(
            &shared.config.template,
            &slot.name,
            kubelet_port(shared, i),
            &h,
            jiff::Timestamp::now(),
            st.last.as_ref(),
        );
        (status, force || stale || changed)
    };
    if !due {
        return Ok(false);
    }
    let api: Api<Node> = Api::all(shared.client.clone());
    let patch = json!({"status": status});
    api.patch_status(&slot.name, &patch_params(), &Patch::Strategic(&patch))
        .await
        .map_err(api_err(format!("patch status of node {}", slot.name)))?;
    let mut st = slot.state.lock().map_err(|_| Error::Poisoned)?;
    st.last = Some(status);
    let next = crate::status_refresh::next_refresh(
        st.refresh_at.is_none(),
        i,
        shared.nodes.len(),
        shared.config.node_status_refresh,
    );
    st.refresh_at = Some(Instant::now() + next);
    let ready = h.is_ready();
    if st.reported_ready != Some(ready) {
        if ready {
            shared.metrics.nodes_ready.inc();
        } else if st.reported_ready == Some(true) {
            shared.metrics.nodes_ready.dec();
        }
        st.reported_ready = Some(ready);
    }
    Ok(true)
}

/// Queue handler for `Work::NodeStatus`: registers the node while it is not (a first round
/// that failed, or a Node deleted under us), else writes its status when due. Failures back
/// off (registration up to a minute, status writes up to 30 s).
pub async fn handle_status(shared: &Shared, i: u32) {
    let idx = i as usize;
    if idx >= shared.nodes.len() {
        return;
    }
    let name = &shared.nodes[idx].name;
    let registered = shared.nodes[idx].state.lock().is_ok_and(|s| s.registered);
    let result = if registered {
        match write_status(shared, idx, false).await {
            Err(Error::Api { source, .. }) if is_not_found(&source) => {
                tracing::warn!(node = %name, "node is gone; registering it again");
                if let Ok(mut st) = shared.nodes[idx].state.lock() {
                    st.registered = false;
                }
                shared.metrics.nodes_unregistered.inc();
                register_again(shared, idx).await
            }
            other => other.map(|_| ()),
        }
    } else {
        register_again(shared, idx).await
    };
    let retry = match result {
        Ok(()) => {
            if let Ok(mut st) = shared.nodes[idx].state.lock() {
                st.failures = 0;
            }
            None
        }
        Err(e) => {
            let (failures, registered) = shared.nodes[idx]
                .state
                .lock()
                .map(|mut s| {
                    s.failures = s.failures.saturating_add(1);
                    (s.failures, s.registered)
                })
                .unwrap_or((1, registered));
            let backoff = if registered {
                tracing::warn!(node = %name, error = %e, failures, "node status write failed");
                retry::STEADY
            } else {
                registration_failed(shared, idx, &e, failures);
                retry::REGISTRATION
            };
            Some(retry::steady(
                backoff,
                e.failure(),
                failures,
                rand::random(),
            ))
        }
    };
    // A failure's backoff wins over an earlier refresh: retrying sooner is what it prevents.
    let next = retry.unwrap_or_else(|| status_due_in(shared, idx));
    shared.queue().add(Work::NodeStatus(i), next);
}

/// How long until node `idx`'s status is next due: a scripted health change, or the rewrite
/// of an unchanged status (`status_refresh`, at least a second away).
pub(crate) fn status_due_in(shared: &Shared, idx: usize) -> Duration {
    let refresh = shared.nodes[idx]
        .state
        .lock()
        .ok()
        .and_then(|s| s.refresh_at)
        .map_or(shared.config.node_status_refresh, |t| {
            t.saturating_duration_since(Instant::now())
        })
        .max(Duration::from_secs(1));
    let (_, next_change) = health(shared, idx);
    next_change.map_or(refresh, |c| c.min(refresh))
}

/// Registers node `idx` outside the first round (adopting it if it exists).
async fn register_again(shared: &Shared, idx: usize) -> Result<(), Error> {
    ensure_node(shared, idx, None).await?;
    shared.metrics.nodes_unregistered.dec();
    tracing::info!(node = %shared.nodes[idx].name, "node registered");
    // Its renewals may have been idle while it was missing.
    shared.queue().add(Work::Lease(idx as u32), Duration::ZERO);
    Ok(())
}

/// Follows the `mock-kind.io/health` annotation of our Nodes (metadata only).
pub async fn watch_annotations(shared: std::sync::Arc<Shared>, shutdown: CancellationToken) {
    let api: Api<PartialObjectMeta<Node>> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().labels(&owner_selector(&shared.config.prefix));
    let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => match ev { Some(ev) => ev, None => return },
        };
        let meta = match ev {
            Ok(watcher::Event::Apply(m)) | Ok(watcher::Event::InitApply(m)) => m,
            Ok(watcher::Event::Delete(m)) => {
                if let Some(&i) = m
                    .metadata
                    .name
                    .as_ref()
                    .and_then(|n| shared.node_index.get(n))
                {
                    shared
                        .queue()
                        .add(Work::NodeStatus(i), Duration::from_secs(1));
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "node watch error");
                continue;
            }
        };
        let Some(&i) = meta
            .metadata
            .name
            .as_ref()
            .and_then(|n| shared.node_index.get(n))
        else {
            continue;
        };
        let value = health_annotation(&meta.metadata);
        let changed = match shared.nodes[i as usize].state.lock() {
            Ok(mut st) if st.annotation != value => {
                st.annotation = value.clone();
                true
            }
            _ => false,
        };
        if changed {
            tracing::info!(node = %shared.nodes[i as usize].name, health = ?value, "health annotation changed");
            shared.queue().add(Work::NodeStatus(i), Duration::ZERO);
            shared.queue().add(Work::Lease(i), Duration::ZERO);
        }
    }
}

/// `--delete-nodes-on-exit`: removes our Nodes and their Leases.
pub async fn delete_all(shared: &Shared) {
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), LEASE_NAMESPACE);
    futures::stream::iter(shared.nodes.iter())
        .for_each_concurrent(32, |slot| {
            let (nodes, leases) = (nodes.clone(), leases.clone());
            async move {
                if let Err(e) = nodes.delete(&slot.name, &Default::default()).await
                    && !is_not_found(&e)
                {
                    tracing::warn!(node = %slot.name, error = %e, "deleting node failed");
                }
                let _ = leases.delete(&slot.name, &Default::default()).await;
            }
        })
        .await;
    tracing::info!(nodes = shared.nodes.len(), "deleted nodes on exit");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adopted_node_keeps_what_adoption_reads() {
        let mut node = new_node(
            &crate::Config::new("p", 1).template,
            "p-0",
            10250,
            "10.0.0.0/24",
            jiff::Timestamp::UNIX_EPOCH,
        );
        node.metadata.uid = Some("u".into());
        node.metadata.annotations = Some([(NODE_HEALTH.to_string(), "sick".to_string())].into());
        node.metadata.managed_fields = Some(vec![Default::default()]);
        let want_conditions = node.status.as_ref().and_then(|s| s.conditions.clone());
        let kept = adoptable(node);
        assert_eq!(kept.metadata.name.as_deref(), Some("p-0"));
        assert_eq!(kept.metadata.uid.as_deref(), Some("u"));
        assert_eq!(health_annotation(&kept.metadata).as_deref(), Some("sick"));
        assert!(kept.metadata.managed_fields.is_none() && kept.metadata.labels.is_none());
        let spec = kept.spec.as_ref().expect("spec");
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.0.0.0/24"));
        let status = kept.status.as_ref().expect("status");
        assert!(want_conditions.is_some());
        assert_eq!(status.conditions, want_conditions);
        assert!(status.capacity.is_none() && status.node_info.is_none());
    }
}
