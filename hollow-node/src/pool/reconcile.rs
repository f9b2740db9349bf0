//! `--pool <name>`: one process runs one pool. The node set of [`crate::run`] is fixed at start,
//! so a spec change (a new generation) stops it, brings the Nodes to the new plan (creates the
//! missing with their per-zone labels, patches labels and taints of the kept, deletes the
//! surplus with their Leases) and starts it again on a Config built from the pool; the kept
//! Nodes are adopted, not registered again. An invalid spec only gets a condition: the last
//! valid one keeps running. `paused` stops it without deleting: heartbeats stop as on a
//! powered-off machine. Status (counts, conditions) is written every few seconds. The pool holds
//! a finalizer while it runs, so a deleted pool's Nodes and Leases go before it does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::finalizer::{Finalizer, finalizer};
use super::plan::NodePlan;
use super::spec::{HollowNodePool, POOL_LABEL, PoolStatus};
use super::status::{Counts, Phase, status, surplus};
use super::validate::{ValidPool, validate};
use crate::config::Config;
use crate::ipam::node_pod_cidr;
use crate::node_status::new_node;
use crate::nodes::LEASE_NAMESPACE;
use crate::{Error, Result, api_err, is_not_found, patch_params};

/// How often the counts in the status are refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Node writes in flight at once while bringing the Nodes to a plan.
const WRITES_IN_FLIGHT: usize = 32;
/// Nodes per page when listing a pool's Nodes.
const LIST_PAGE: u32 = 250;
/// The template label keys a Node was given, so a later template can remove the ones it drops.
pub const TEMPLATE_LABELS: &str = "mock-kind.io/pool-labels";

/// The hollow node of the current generation.
struct Running {
    generation: Option<i64>,
    token: CancellationToken,
    join: JoinHandle<Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.token.cancel();
        match self.join.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the pool's hollow node ended with an error"),
            Err(e) => tracing::warn!(error = %e, "the pool's hollow node panicked"),
        }
    }
}

/// The configuration of the process running `pool`: `base` (the flags) with the pool's node
/// count and template; nodes are named `<pool>-<i>` and carry the pool's name as owner.
pub fn config_for(base: &Config, pool: &ValidPool) -> Config {
    let mut c = base.clone();
    c.prefix = pool.name.to_string();
    c.nodes = pool.replicas as usize;
    c.replica_index = 0;
    c.template = pool.template(&base.template, None);
    c.template.owner = pool.name.to_string();
    c.faults = pool.faults;
    c.fault_pressure = pool.fault_pressure;
    // The pool decides when its Nodes go (scale-down, deletion): a set stops at every spec
    // change, and must leave them for the next one to adopt.
    c.delete_nodes_on_exit = false;
    // Flag-derived rates were sized for --nodes; let validate size them for the pool.
    c.qps = 0.0;
    c.burst = 0;
    c.workers = 0;
    c.lease_qps = 0.0;
    c.lease_burst = 0;
    c.lease_workers = 0;
    c
}

/// Runs pool `name` until `shutdown`.
pub async fn run(base: Config, name: String, shutdown: CancellationToken) -> Result<()> {
    // Served for the process's whole life: probes answer while the pool is paused, empty,
    // invalid or between generations, and a set that dies fails /healthz.
    let (ops, server) = crate::Ops::serve(base.listen, shutdown.clone())?;
    let kube_config = crate::client::config(base.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(kube_config).map_err(Error::Kube)?;
    let mut base = base;
    if base.template.kubelet_version.is_empty() {
        base.template.kubelet_version = crate::apiserver_version(&client).await;
    }
    let pools: Api<HollowNodePool> = Api::all(client.clone());
    let selector = format!("metadata.name={name}");
    let mut events = watcher(pools.clone(), watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut tick = tokio::time::interval(STATUS_EVERY);
    let mut current: Option<HollowNodePool> = None;
    let mut running: Option<Running> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => current = Some(p),
                Some(Ok(watcher::Event::Delete(_))) => {
                    current = None;
                    if let Some(r) = running.take() {
                        r.stop().await;
                    }
                    delete_nodes(&client, &name, &BTreeSet::new()).await;
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => ops.ready.set(true),
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::warn!(pool = %name, error = %e, "watching the pool");
                    continue;
                }
                None => break,
            }
        }
        let Some(pool) = &current else { continue };
        if pool.metadata.deletion_timestamp.is_some() {
            // Deleted, held by our finalizer: the set stops before its Nodes go, so nothing
            // renews or re-registers one behind the deletion.
            if let Some(r) = running.take() {
                r.stop().await;
            }
            if let Err(e) = finish_deletion(&client, pool).await {
                tracing::warn!(pool = %name, error = %e, "deleting the pool's nodes; retrying");
            }
            continue;
        }
        if let Err(e) = write_finalizers(&client, pool, false).await {
            tracing::warn!(pool = %name, error = %e, "adding the pool's finalizer; retrying");
        }
        let generation = pool.metadata.generation;
        let checked = validate(&name, &pool.spec);
        let phase = match &checked {
            Err(e) => Phase::Invalid(e),
            Ok(v) if v.spec.paused => Phase::Paused,
            Ok(_) => Phase::Running,
        };
        let changed = running.as_ref().is_none_or(|r| r.generation != generation);
        if let Ok(valid) = &checked
            && changed
        {
            if let Some(r) = running.take() {
                r.stop().await;
            }
            let config = config_for(&base, valid);
            match converge(&client, valid, &config).await {
                Err(e) => {
                    tracing::warn!(pool = %name, error = %e, "bringing the nodes to the pool's spec; retrying")
                }
                Ok(()) => {
                    let token = shutdown.child_token();
                    // Paused or empty: nothing to keep alive, but this generation is done.
                    let join = if valid.spec.paused || valid.replicas == 0 {
                        tokio::spawn(async { Ok(()) })
                    } else {
                        let (ops, token) = (ops.clone(), token.clone());
                        ops.health.clone().spawn_critical(
                            "the pool's node set",
                            token.clone(),
                            async move { crate::run_set(config, &ops, token).await },
                        )
                    };
                    running = Some(Running {
                        generation,
                        token,
                        join,
                    });
                }
            }
        }
        if let Err(e) = write_status(&client, pool, phase).await {
            tracing::warn!(pool = %name, error = %e, "writing the pool's status");
        }
    }
    if let Some(r) = running.take() {
        r.stop().await;
    }
    let _ = server.await;
    Ok(())
}

/// Deletes the deleted pool's Nodes and Leases, and once none is left, removes the finalizer
/// so the apiserver can let the pool go.
async fn finish_deletion(client: &kube::Client, pool: &HollowNodePool) -> Result<()> {
    // The set is stopped and Nodes carry no finalizers: what was deleted is gone.
    let all_deleted = delete_nodes(client, pool.name(), &BTreeSet::new()).await;
    write_finalizers(client, pool, !all_deleted).await
}

/// Writes the finalizers `finalizer::finalizer` decides for `pool` (deleting when it has a
/// deletionTimestamp; `nodes_left` when some of its Nodes or Leases could not be deleted), on
/// the pool's resourceVersion so a concurrent edit of the list is never overwritten.
async fn write_finalizers(
    client: &kube::Client,
    pool: &HollowNodePool,
    nodes_left: bool,
) -> Result<()> {
    let existing = pool.metadata.finalizers.clone().unwrap_or_default();
    let deleting = pool.metadata.deletion_timestamp.is_some();
    let Finalizer::Write(next) = finalizer(&existing, deleting, nodes_left) else {
        return Ok(());
    };
    let name = pool.name();
    let patch = json!({"metadata": {
        "finalizers": next,
        "resourceVersion": pool.metadata.resource_version,
    }});
    let api: Api<HollowNodePool> = Api::all(client.clone());
    match api
        .patch(name, &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile (ours was not the last finalizer), or edited: the watch brings
        // the pool as it is now, and the next pass decides again.
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api_err(format!(
            "patch finalizers of hollownodepool/{name}"
        ))(e)),
    }
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pool's Nodes, read a page at a time and cut to what the reconciler reads: a whole
/// list of 2,000 Nodes with their status and managedFields, every [`STATUS_EVERY`], kept the
/// process's RSS about 100 MB above what the same nodes take under `--nodes`.
async fn pool_nodes(client: &kube::Client, pool: &str) -> Result<Vec<Node>> {
    let api: Api<Node> = Api::all(client.clone());
    let mut params = ListParams::default()
        .labels(&format!("{POOL_LABEL}={pool}"))
        .limit(LIST_PAGE);
    let mut nodes = Vec::new();
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(api_err(format!("list nodes of pool {pool}")))?;
        nodes.extend(page.items.into_iter().map(trimmed));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => return Ok(nodes),
        }
    }
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

async fn write_status(
    client: &kube::Client,
    pool: &HollowNodePool,
    phase: Phase<'_>,
) -> Result<()> {
    let name = pool.name();
    let nodes = pool_nodes(client, name).await?;
    let counts = Counts {
        desired: pool.spec.replicas.max(0),
        registered: nodes.len() as i64,
        ready: nodes.iter().filter(|n| ready(n)).count() as i64,
    };
    let prev: Option<&PoolStatus> = pool.status.as_ref();
    let next = status(
        name,
        pool.metadata.generation,
        phase,
        counts,
        prev,
        jiff::Timestamp::now(),
    );
    if prev == Some(&next) {
        return Ok(());
    }
    let api: Api<HollowNodePool> = Api::all(client.clone());
    api.patch_status(
        name,
        &patch_params(),
        &Patch::Merge(&json!({ "status": next })),
    )
    .await
    .map_err(api_err(format!("patch status of hollownodepool/{name}")))?;
    Ok(())
}

/// Brings the Nodes to `pool`'s plan before a hollow node adopts them.
async fn converge(client: &kube::Client, pool: &ValidPool<'_>, config: &Config) -> Result<()> {
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
async fn delete_nodes(client: &kube::Client, pool: &str, keep: &BTreeSet<String>) -> bool {
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
    use super::super::spec::{PoolFaults, PoolSpec, PoolTemplate};
    use super::*;

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

    #[test]
    fn config_from_pool() {
        let mut base = Config::new("hollow-node-7", 500);
        base.qps = 10.0;
        base.delete_nodes_on_exit = true;
        base.template.internal_ip = "10.1.2.3".into();
        let spec = PoolSpec {
            replicas: 4,
            template: PoolTemplate {
                capacity: BTreeMap::from([("nvidia.com/gpu".into(), "8".into())]),
                ..Default::default()
            },
            faults: PoolFaults {
                unhealthy_after: "1m".into(),
                ..Default::default()
            },
            paused: false,
        };
        let pool = validate("gpu", &spec).expect("valid");
        let c = config_for(&base, &pool)
            .validate()
            .expect("config validates");
        let cases: [(&str, String, String); 8] = [
            ("prefix", c.prefix.clone(), "gpu".into()),
            (
                "nodes kept when a set stops",
                c.delete_nodes_on_exit.to_string(),
                "false".into(),
            ),
            ("first node", c.node_name(0), "gpu-0".into()),
            ("nodes", c.nodes.to_string(), "4".into()),
            ("owner", c.template.owner.clone(), "gpu".into()),
            ("replica index", c.replica_index.to_string(), "0".into()),
            (
                "process ip kept",
                c.template.internal_ip.clone(),
                "10.1.2.3".into(),
            ),
            (
                "gpu",
                c.template
                    .capacity
                    .get("nvidia.com/gpu")
                    .cloned()
                    .unwrap_or_default(),
                "8".into(),
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(c.faults.unhealthy_after, Duration::from_secs(60));
        assert!(
            c.qps > 0.0 && c.qps != 10.0,
            "rates sized for the pool: {}",
            c.qps
        );
    }
}
