//! `--pool <name>`: one or more replicas run one pool. The node set of [`crate::run_set`] is
//! fixed at start, so a spec change (a new generation) stops it, brings the Nodes to the new
//! plan (`converge`: creates the missing with their per-zone labels, patches labels and taints
//! of the kept, deletes the surplus with their Leases) and starts it again on a Config built
//! from the pool; the kept Nodes are adopted, not registered again. Replicas split the nodes
//! by their membership Leases (`members` decides, `membership` reads and writes): a replica's
//! set runs only its share, and changes when replicas come or go. An invalid spec only gets a
//! condition: the last valid one keeps running. `paused` stops the sets without deleting:
//! heartbeats stop as on a powered-off machine. Status (counts, conditions) is written every
//! few seconds. The pool holds a finalizer while it runs, so a deleted pool's Nodes and Leases
//! go before it does.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, Patch};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::converge::{ReadyNodes, converge, delete_nodes};
use super::finalizer::{Finalizer, finalizer};
use super::members::decide;
use super::membership::Membership;
use super::spec::{HollowNodePool, PoolStatus};
use super::status::{Counts, Phase, status};
use super::validate::{ValidPool, validate};
use crate::config::Config;
use crate::{Error, Result, api_err, is_not_found, patch_params};

/// How often the counts in the status are refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How often the membership Lease is renewed and the members read: well inside
/// [`super::members::FENCE`].
const MEMBERS_EVERY: Duration = Duration::from_secs(2);

/// The node set running now: the generation and the node numbers it was started for.
struct Running {
    generation: Option<i64>,
    numbers: Vec<u32>,
    token: CancellationToken,
    join: JoinHandle<Result<()>>,
}

/// What the last valid spec asks of this replica's sets.
struct Desired {
    generation: Option<i64>,
    /// The whole pool's set; a replica runs it with `numbers` set to its share.
    config: Config,
    /// Nodes to run across the replicas: 0 when paused.
    replicas: u32,
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
    let mut members = Membership::new(&client, &base.pool_namespace, &name, &base.replica);
    let ready_nodes = ReadyNodes::default();
    let nodes_watch = tokio::spawn(ready_nodes.clone().watch(
        client.clone(),
        name.clone(),
        shutdown.clone(),
    ));
    let mut tick = tokio::time::interval(MEMBERS_EVERY);
    let mut current: Option<HollowNodePool> = None;
    let mut desired: Option<Desired> = None;
    let mut running: Option<Running> = None;
    let mut status_due = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => current = Some(p),
                Some(Ok(watcher::Event::Delete(_))) => {
                    current = None;
                    desired = None;
                    stop(&mut running).await;
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
            desired = None;
            stop(&mut running).await;
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
        if let Ok(valid) = &checked
            && desired.as_ref().is_none_or(|d| d.generation != generation)
        {
            // A new spec: no set runs the old one while the Nodes change.
            stop(&mut running).await;
            let config = config_for(&base, valid);
            match converge(&client, valid, &config).await {
                Err(e) => {
                    tracing::warn!(pool = %name, error = %e, "bringing the nodes to the pool's spec; retrying")
                }
                Ok(()) => {
                    crate::release_freed_memory();
                    desired = Some(Desired {
                        generation,
                        config,
                        replicas: if valid.spec.paused { 0 } else { valid.replicas },
                    })
                }
            }
        }
        // This replica's share, from a fresh read of the members: nodes it loses stop before
        // it publishes the view that gives them away; nodes it gains start only once every
        // member has published the same view.
        let read = members.sync().await;
        let now_running = running
            .as_ref()
            .map(|r| r.numbers.clone())
            .unwrap_or_default();
        let replicas = desired.as_ref().map_or(0, |d| d.replicas);
        let step = decide(
            members.me(),
            &name,
            replicas,
            &read.live,
            &now_running,
            read.fenced,
        );
        let stale = running
            .as_ref()
            .is_some_and(|r| Some(r.generation) != desired.as_ref().map(|d| d.generation));
        if step.run != now_running || stale {
            stop(&mut running).await;
            if let Some(d) = desired.as_ref().filter(|_| !step.run.is_empty()) {
                running = Some(start(&ops, &shutdown, d, step.run.clone()));
            }
        }
        if let Some(view) = step.publish {
            match members.publish(&view).await {
                // Look again at once: the others may all have published it already.
                Ok(()) => tick.reset_immediately(),
                Err(e) => {
                    tracing::warn!(pool = %name, error = %e, "publishing this replica's view")
                }
            }
        }
        // One writer of the status: the first live replica by name (each would write the same).
        let first = read.live.iter().map(|m| m.id.as_str()).min();
        if first == Some(members.me()) && Instant::now() >= status_due {
            status_due = Instant::now() + STATUS_EVERY;
            if let Err(e) = write_status(&client, pool, &ready_nodes, phase).await {
                tracing::warn!(pool = %name, error = %e, "writing the pool's status");
            }
        }
    }
    stop(&mut running).await;
    members.leave().await;
    let _ = nodes_watch.await;
    let _ = server.await;
    Ok(())
}

async fn stop(running: &mut Option<Running>) {
    if let Some(r) = running.take() {
        r.stop().await;
    }
}

/// Starts the set of node `numbers` of `desired`.
fn start(
    ops: &crate::Ops,
    shutdown: &CancellationToken,
    desired: &Desired,
    numbers: Vec<u32>,
) -> Running {
    let mut config = desired.config.clone();
    config.nodes = numbers.len();
    config.numbers = Some(numbers.clone());
    let token = shutdown.child_token();
    let (set_ops, set_token) = (ops.clone(), token.clone());
    let join = ops
        .health
        .spawn_critical("the pool's node set", token.clone(), async move {
            crate::run_set(config, &set_ops, set_token).await
        });
    Running {
        generation: desired.generation,
        numbers,
        token,
        join,
    }
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

async fn write_status(
    client: &kube::Client,
    pool: &HollowNodePool,
    nodes: &ReadyNodes,
    phase: Phase<'_>,
) -> Result<()> {
    let name = pool.name();
    // Not before the watch has listed the Nodes: counts of nothing would read as a fact.
    let Some((registered, ready)) = nodes.counts() else {
        return Ok(());
    };
    let counts = Counts {
        desired: pool.spec.replicas.max(0),
        registered,
        ready,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::spec::{PoolFaults, PoolSpec, PoolTemplate};
    use super::*;

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
