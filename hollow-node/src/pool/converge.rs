//! A pool's Nodes as the apiserver holds them: listed (a page at a time, cut to what is read),
//! brought to the pool's plan (created, labels and taints edited in place, surplus deleted with
//! their Leases). Every replica of a pool may do this; the writes are idempotent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::plan::NodePlan;
use super::spec::POOL_LABEL;
use super::status::surplus;
use super::validate::ValidPool;
use crate::config::Config;
use crate::ipam::node_pod_cidr;
use crate::node_status::new_node;
use crate::nodes::LEASE_NAMESPACE;
use crate::{Result, api_err, is_not_found, list_paged, patch_params};

/// Whether each of the pool's Nodes is Ready, kept from a watch: the status's counts without
/// listing every Node every few seconds (a page of full Nodes at each status write kept the
/// process's RSS tens of MB higher).
#[derive(Clone, Default)]
pub struct ReadyNodes(Arc<Mutex<Seen>>);

/// Each Node's readiness, and whether the watch has listed them yet.
#[derive(Default)]
struct Seen {
    ready: HashMap<String, bool>,
    synced: bool,
}

impl ReadyNodes {
    /// (registered, ready) as the watch has seen them; `None` until it has listed once.
    pub fn counts(&self) -> Option<(i64, i64)> {
        let seen = self.0.lock().ok()?;
        seen.synced.then(|| {
            let ready = seen.ready.values().filter(|r| **r).count();
            (seen.ready.len() as i64, ready as i64)
        })
    }

    /// Follows the pool's Nodes until `stop`.
    pub async fn watch(self, client: kube::Client, pool: String, stop: CancellationToken) {
        let api: Api<Node> = Api::all(client);
        let cfg = watcher::Config::default().labels(&format!("{POOL_LABEL}={pool}"));
        let mut events = watcher(api, cfg).default_backoff().boxed();
        let mut fresh: HashMap<String, bool> = HashMap::new();
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = events.next() => ev,
            };
            let Ok(mut seen) = self.0.lock() else { return };
            match ev {
                None => return,
                Some(Err(e)) => tracing::debug!(%pool, error = %e, "watching the pool's nodes"),
                Some(Ok(watcher::Event::Init)) => fresh.clear(),
                Some(Ok(watcher::Event::InitApply(n))) => {
                    if let Some(name) = n.metadata.name.clone() {
                        fresh.insert(name, ready(&n));
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    seen.ready = std::mem::take(&mut fresh);
                    seen.synced = true;
                }
                Some(Ok(watcher::Event::Apply(n))) => {
                    if let Some(name) = n.metadata.name.clone() {
                        seen.ready.insert(name, ready(&n));
                    }
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    if let Some(name) = &n.metadata.name {
                        seen.ready.remove(name);
                    }
                }
            }
        }
    }
}

/// Node writes in flight at once while bringing the Nodes to a plan: each is a connection the
/// reconciler's client then keeps idle (HTTP/1.1), beside the node set's own. 16 brings 2,000
/// Nodes to their plan in about 4 s.
const WRITES_IN_FLIGHT: usize = 16;
/// Nodes per page when listing a pool's Nodes.
const LIST_PAGE: u32 = 250;
/// The template label keys a Node was given, so a later template can remove the ones it drops.
pub const TEMPLATE_LABELS: &str = "mock-kind.io/pool-labels";

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pool's Nodes, read a page at a time and cut to what the reconciler reads (a whole list
/// of 2,000 Nodes with their status and managedFields is tens of MB).
async fn pool_nodes(client: &kube::Client, pool: &str) -> Result<Vec<Node>> {
    let api: Api<Node> = Api::all(client.clone());
    let params = ListParams::default().labels(&format!("{POOL_LABEL}={pool}"));
    list_paged(&api, &params, LIST_PAGE, |n| Some(trimmed(n)))
        .await
        .map_err(api_err(format!("list nodes of pool {pool}")))
}

/// What [`update`], [`ready`] and the deletions read of a Node: name, labels, the template
/// annotation, taints and the Ready condition.
fn trimmed(node: Node) -> Node {
    let meta = node.metadata;
    let annotations = meta
        .annotations
        .and_then(|mut a| a.remove_entry(TEMPLATE_LABELS))
        .map(|(k, v)| BTreeMap::from([(k, v)]));
    let taints = node.spec.and_then(|s| s.taints);
    let conditions = node.status.and_then(|s| s.conditions).map(|cs| {
        cs.into_iter()
            .filter(|c| c.type_ == "Ready")
            .collect::<Vec<_>>()
    });
    Node {
        metadata: kube::api::ObjectMeta {
            name: meta.name,
            labels: meta.labels,
            annotations,
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::NodeSpec {
            taints,
            ..Default::default()
        }),
        status: Some(k8s_openapi::api::core::v1::NodeStatus {
            conditions,
            ..Default::default()
        }),
    }
}

/// Brings the Nodes to `pool`'s plan before a hollow node adopts them.
pub(super) async fn converge(
    client: &kube::Client,
    pool: &ValidPool<'_>,
    config: &Config,
) -> Result<()> {
    let plan = pool.nodes(&config.template);
    let planned: BTreeSet<String> = plan.iter().map(|n| n.name.clone()).collect();
    delete_nodes(client, pool.name, &planned).await;
    let existing: HashMap<String, Node> = pool_nodes(client, pool.name)
        .await?
        .into_iter()
        .filter_map(|n| n.metadata.name.clone().map(|k| (k, n)))
        .collect();
    let endpoints = config.kubelet_endpoints()?;
    let results: Vec<Result<()>> = futures::stream::iter(plan)
        .map(|node| {
            let existing = existing.get(&node.name);
            async move {
                match existing {
                    Some(n) => update(client, &node, n).await,
                    None => {
                        let port = endpoints
                            .advertised(node.index as usize)
                            .map_or(config.template.kubelet_port, i32::from);
                        create(client, &node, port, config).await
                    }
                }
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

fn template_labels(node: &NodePlan) -> BTreeMap<String, String> {
    new_node(
        &node.template,
        &node.name,
        0,
        "",
        jiff::Timestamp::UNIX_EPOCH,
    )
    .metadata
    .labels
    .unwrap_or_default()
}

async fn create(client: &kube::Client, node: &NodePlan, port: i32, config: &Config) -> Result<()> {
    let cidr = node_pod_cidr(
        config.cluster_cidr,
        config.node_cidr_mask,
        0,
        config.nodes as u64,
        u64::from(node.index),
    )?;
    let mut fresh = new_node(
        &node.template,
        &node.name,
        port,
        &cidr.to_string(),
        jiff::Timestamp::now(),
    );
    let keys: Vec<&str> = node.template.labels.keys().map(String::as_str).collect();
    fresh
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(TEMPLATE_LABELS.into(), keys.join(","));
    let api: Api<Node> = Api::all(client.clone());
    match api.create(&PostParams::default(), &fresh).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(api_err(format!("create node {}", node.name))(e)),
    }
}

/// Labels and taints of a kept Node to the template's, in place (same Node, same UID): labels
/// an earlier template set and this one drops are removed; others' labels are left alone.
async fn update(client: &kube::Client, node: &NodePlan, existing: &Node) -> Result<()> {
    let want = template_labels(node);
    let have = existing.metadata.labels.clone().unwrap_or_default();
    let before: BTreeSet<String> = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_LABELS))
        .map(|v| {
            v.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut labels = serde_json::Map::new();
    for k in before
        .iter()
        .filter(|k| !want.contains_key(*k) && have.contains_key(*k))
    {
        labels.insert(k.clone(), serde_json::Value::Null);
    }
    for (k, v) in want.iter().filter(|(k, v)| have.get(*k) != Some(*v)) {
        labels.insert(k.clone(), json!(v));
    }
    let taints = &node.template.taints;
    let have_taints = existing
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    // Taints others put on (the lifecycle controllers') stay; ours are replaced.
    let ours = |k: &str| taints.iter().any(|t| t.key == k);
    let mut next: Vec<_> = have_taints
        .iter()
        .filter(|t| t.key.starts_with("node.kubernetes.io/") && !ours(&t.key))
        .cloned()
        .collect();
    next.extend(taints.iter().cloned());
    let keys: Vec<&str> = node.template.labels.keys().map(String::as_str).collect();
    let same_taints = next.len() == have_taints.len()
        && next.iter().all(|t| {
            have_taints
                .iter()
                .any(|h| h.key == t.key && h.effect == t.effect && h.value == t.value)
        });
    let same_keys = before.iter().map(String::as_str).eq(keys.iter().copied());
    if labels.is_empty() && same_taints && same_keys {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"labels": labels, "annotations": {TEMPLATE_LABELS: keys.join(",")}},
        "spec": {"taints": next},
    });
    let api: Api<Node> = Api::all(client.clone());
    api.patch(&node.name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(api_err(format!(
            "patch labels and taints of node {}",
            node.name
        )))?;
    Ok(())
}

/// Deletes the pool's Nodes not in `keep`, and their Leases; false when one of them (or the
/// list) failed, which is logged (the next generation, pass or restart tries again).
pub(super) async fn delete_nodes(
    client: &kube::Client,
    pool: &str,
    keep: &BTreeSet<String>,
) -> bool {
    let nodes = match pool_nodes(client, pool).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%pool, error = %e, "listing the pool's nodes to delete");
            return false;
        }
    };
    let failed = std::sync::atomic::AtomicBool::new(false);
    let names: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let gone = surplus(keep, names);
    let node_api: Api<Node> = Api::all(client.clone());
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    futures::stream::iter(gone)
        .for_each_concurrent(WRITES_IN_FLIGHT, |n| {
            let (node_api, lease_api, failed) = (node_api.clone(), lease_api.clone(), &failed);
            async move {
                for (what, r) in [
                    (
                        "node",
                        node_api
                            .delete(&n, &DeleteParams::default())
                            .await
                            .map(|_| ()),
                    ),
                    (
                        "lease",
                        lease_api
                            .delete(&n, &DeleteParams::default())
                            .await
                            .map(|_| ()),
                    ),
                ] {
                    if let Err(e) = r
                        && !is_not_found(&e)
                    {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(%pool, node = %n, error = %e, "deleting the {what}");
                    }
                }
            }
        })
        .await;
    !failed.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_wait_for_the_first_listing() {
        let nodes = ReadyNodes::default();
        assert_eq!(nodes.counts(), None, "nothing listed yet");
        if let Ok(mut seen) = nodes.0.lock() {
            seen.ready
                .extend([("p-0".into(), true), ("p-1".into(), false)]);
        }
        assert_eq!(nodes.counts(), None, "still not listed");
        if let Ok(mut seen) = nodes.0.lock() {
            seen.synced = true;
        }
        assert_eq!(nodes.counts(), Some((2, 1)));
    }

    #[test]
    fn a_listed_node_keeps_only_what_the_reconciler_reads() {
        let node = new_node(
            &crate::node_status::NodeTemplate {
                taints: vec![k8s_openapi::api::core::v1::Taint {
                    key: "infra".into(),
                    value: Some("x".into()),
                    effect: "NoSchedule".into(),
                    time_added: None,
                }],
                ..Config::new("p", 1).template
            },
            "p-0",
            10250,
            "10.0.0.0/24",
            jiff::Timestamp::UNIX_EPOCH,
        );
        let mut node = node;
        node.metadata.annotations = Some(BTreeMap::from([
            (TEMPLATE_LABELS.to_string(), "a,b".to_string()),
            ("other".to_string(), "x".repeat(10_000)),
        ]));
        let labels = node.metadata.labels.clone();
        let kept = trimmed(node);
        assert_eq!(kept.metadata.name.as_deref(), Some("p-0"));
        assert_eq!(kept.metadata.labels, labels);
        assert_eq!(
            kept.metadata.annotations,
            Some(BTreeMap::from([(TEMPLATE_LABELS.into(), "a,b".into())]))
        );
        let taints = kept.spec.as_ref().and_then(|s| s.taints.clone());
        assert_eq!(taints.map(|t| t.len()), Some(1));
        let status = kept.status.as_ref().expect("status");
        let types: Vec<&str> = status
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, ["Ready"]);
        assert!(status.capacity.is_none() && status.node_info.is_none());
        assert!(kept.metadata.managed_fields.is_none());
    }
}
