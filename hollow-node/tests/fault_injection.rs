//! Fault injection: the hollow-node binary talks to the real apiserver through
//! `e2e::FaultProxy`. Phase 1 answers 429 and 500 to a share of requests and resets a share of
//! connections, at accept and mid-life, while a Deployment rolls all its pods; phase 2 is a 30 s
//! blackout (port closed, live connections reset) during which the Deployment rolls again;
//! phase 3 is clean. The process must never exit or panic, no node may leave Ready outside the
//! blackout (watched on a direct client), every pod must be Running soon after it, and its RSS
//! must come back near where it was before the faults.
//!
//! The node-monitor grace period is 20 s, shorter than the blackout, so every node does go
//! NotReady in it and the test proves that each one comes back (the controller's Ready=Unknown
//! is undone only by a status write).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const PREFIX: &str = "hn-faults";
const NS: &str = "faults";
const NODES: usize = 50;
const PODS: i32 = 200;
const SEED: u64 = 13;
const BLACKOUT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(20);
/// After the blackout a NotReady may still show: the node-lifecycle controller looks every 5 s
/// (node-monitor-period) and a Lease renewal is due at most one renew interval (10 s) after the
/// connection returns.
const BLACKOUT_TAIL: Duration = Duration::from_secs(15);
/// RSS after recovery may exceed RSS before the faults by this share plus `RSS_SLACK_MB`: the
/// same 200 pods are held, so growth is allocator pages and buffers kept after the reconnect
/// storm (measured +4.3 to +6.8 MB on ~32 MB in four runs). The ~10 MB of headroom left is
/// crossed by a leak of ~5 kB per request (~2,000 here) or ~100 kB per connection (~100).
const RSS_GROWTH: f64 = 0.1;
const RSS_SLACK_MB: f64 = 12.0;

/// About 14 % of requests fail (429, 500, or reset after the apiserver acted) and 55 % of new
/// connections are reset, at once or within 1.5 s. New connections are few (the client pools:
/// about 20 in this phase, numbered from about 37) and which of them meet a fault is fixed by
/// the seed, so the shares are high enough that each fault comes early in that range (seed 13:
/// resets at 41, 56, 62; cuts at 38, 40, 44, …). With 0.10 and 0.30 the first reset was the
/// 56th connection and a CI run saw no cut within 90 s.
const PHASE_1: e2e::FaultRates = e2e::FaultRates {
    reset_on_accept: 0.15,
    cut_live: 0.40,
    too_many_requests: 0.05,
    server_error: 0.06,
    reset_mid_request: 0.03,
};

#[derive(Clone, Debug)]
struct Transition {
    at: Duration,
    node: String,
    ready: String,
}

/// Records every change of each node's Ready condition, with its time since `t0`.
fn watch_readiness(client: kube::Client, t0: Instant) -> Arc<Mutex<Vec<Transition>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let out = log.clone();
    let api: Api<Node> = Api::all(client);
    let cfg = watcher::Config::default().labels(&format!("mock-kind.io/hollow-node={PREFIX}"));
    tokio::spawn(async move {
        let mut last: HashMap<String, String> = HashMap::new();
        let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
        while let Some(ev) = stream.next().await {
            let Ok(node) = ev else { continue };
            let name = node.metadata.name.clone().unwrap_or_default();
            let ready = common::ready_status(&node);
            if last.get(&name) != Some(&ready) {
                last.insert(name.clone(), ready.clone());
                out.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Transition {
                        at: t0.elapsed(),
                        node: name,
                        ready,
                    });
            }
        }
    });
    log
}

fn deployment() -> Deployment {
    let mut d = common::deployment("web", PODS);
    // Half the pods at a time, so each roll is a burst of creates, binds and deletes.
    d.spec.as_mut().expect("spec").strategy = Some(
        serde_json::from_value(json!({
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": "50%"}
        }))
        .expect("strategy"),
    );
    d
}

/// Replaces every pod of the Deployment (a new template, as `kubectl rollout restart`).
async fn roll(deploys: &Api<Deployment>, round: u32) {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "example.com/round": round.to_string()}}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("roll the deployment");
}

/// True when the rollout is done: all pods of the newest template, all available, none old.
fn rolled(d: &Deployment) -> bool {
    let generation = d.metadata.generation.unwrap_or(0);
    d.status.as_ref().is_some_and(|s| {
        s.observed_generation.unwrap_or(0) >= generation
            && s.replicas == Some(PODS)
            && s.updated_replicas == Some(PODS)
            && s.available_replicas == Some(PODS)
    })
}

/// Every pod of the Deployment Running and Ready (the first time it waits for a whole ramp).
async fn all_running(client: &kube::Client) {
    common::wait_running(
        client,
        NS,
        "app=web",
        PODS as usize,
        Duration::from_secs(90),
    )
    .await;
}

async fn leases_renewed_since(client: &kube::Client, since: jiff::Timestamp) -> usize {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let Ok(list) = api.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|l| {
            l.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(PREFIX))
        })
        .filter(|l| {
            l.spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .is_some_and(|t| t.0 > since)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_api_errors_resets_and_a_blackout() {
    let t0 = Instant::now();
    let cp = e2e::ControlPlane::start(e2e::Options {
        node_monitor_grace_period: Some(GRACE),
        ..Default::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    let proxy = e2e::FaultProxy::start(&cp.kubeconfig(), SEED)
        .await
        .expect("fault proxy");
    let mut hollow = common::spawn_binary(
        proxy.kubeconfig(),
        &cp.dir().join("hollow-node.log"),
        PREFIX,
        NODES,
    )
    .await;
    common::wait_nodes_ready(&client, PREFIX, NODES, Duration::from_secs(90)).await;
    let transitions = watch_readiness(client.clone(), t0);
    common::create_namespace(&client, NS).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deploys
        .create(&Default::default(), &deployment())
        .await
        .expect("deployment");
    common::wait_running(
        &client,
        NS,
        "app=web",
        PODS as usize,
        Duration::from_secs(90),
    )
    .await;
    let rss_before = e2e::procfs::rss_mb(hollow.pid());
    hollow.assert_alive_and_sound("before the faults");

    // Phase 1: errors and resets while every pod is replaced.
    let phase1 = t0.elapsed();
    proxy.set_rates(PHASE_1);
    roll(&deploys, 1).await;
    let phase1_done = e2e::wait_for(
        Duration::from_secs(90),
        "rollout 1 under faults, and each kind of fault injected",
        || {
            let deploys = deploys.clone();
            let c = proxy.counts();
            async move {
                let injected = c.too_many_requests >= 5
                    && c.server_errors >= 5
                    && c.reset_after_forward >= 3
                    && c.reset_on_accept >= 1
                    && c.cut_live >= 1;
                Ok((injected && rolled(&deploys.get("web").await?)).then_some(()))
            }
        },
    )
    .await;
    if let Err(e) = phase1_done {
        let d = deploys.get("web").await.ok().and_then(|d| d.status);
        panic!("{e}; injected so far: {:?}; {d:?}", proxy.counts());
    }
    all_running(&client).await;
    hollow.assert_alive_and_sound("after phase 1");
    let after_phase1 = proxy.counts();

    // Phase 2: blackout; the control plane rolls the pods meanwhile, unseen by hollow-node.
    proxy.set_rates(e2e::FaultRates::NONE);
    proxy.set_blackout(true).await.expect("blackout on");
    let blackout_start = t0.elapsed();
    roll(&deploys, 2).await;
    // The fault is a span of time, not a condition to wait for.
    tokio::time::sleep(BLACKOUT).await;
    proxy.set_blackout(false).await.expect("blackout off");
    let blackout_end = t0.elapsed();
    let back = jiff::Timestamp::now();
    hollow.assert_alive_and_sound("after the blackout");

    // Phase 3: clean. Every Lease renewed, every pod of the new template Running.
    e2e::wait_for(
        Duration::from_secs(30),
        "every Lease renewed after the blackout",
        || {
            let client = client.clone();
            async move { Ok((leases_renewed_since(&client, back).await == NODES).then_some(())) }
        },
    )
    .await
    .expect("leases renewed");
    e2e::wait_for(
        Duration::from_secs(90),
        "rollout 2 after the blackout",
        || {
            let deploys = deploys.clone();
            async move { Ok(rolled(&deploys.get("web").await?).then_some(())) }
        },
    )
    .await
    .expect("pods converge after the blackout");
    all_running(&client).await;
    common::wait_nodes_ready(&client, PREFIX, NODES, Duration::from_secs(30)).await;
    let recovered = t0.elapsed();
    let rss_after = e2e::procfs::rss_mb(hollow.pid());
    hollow.assert_alive_and_sound("after recovery");
    assert_eq!(
        common::get(hollow.addr, "/healthz").await.0,
        200,
        "/healthz"
    );

    let counts = proxy.counts();
    let seen = transitions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let not_ready: Vec<&Transition> = seen.iter().filter(|t| t.ready != "True").collect();
    eprintln!(
        "phase 1 from {phase1:?}: {after_phase1:?}\nblackout {blackout_start:?}..{blackout_end:?}, \
         recovered at {recovered:?}: {counts:?}\nRSS {rss_before:.1} MB -> {rss_after:.1} MB\n\
         {} Ready transitions; away from Ready: {:?}",
        seen.len(),
        not_ready
            .iter()
            .map(|t| format!("{} {} at {:?}", t.node, t.ready, t.at))
            .collect::<Vec<_>>()
    );
    assert!(
        counts.cut_by_blackout >= 1,
        "the blackout cut live connections"
    );
    let window = blackout_start..=blackout_end + BLACKOUT_TAIL;
    let outside: Vec<&&Transition> = not_ready
        .iter()
        .filter(|t| !window.contains(&t.at))
        .collect();
    assert!(
        outside.is_empty(),
        "nodes left Ready outside the blackout {window:?}: {outside:#?}"
    );
    let felt: std::collections::HashSet<&str> = not_ready.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(
        felt.len(),
        NODES,
        "a blackout longer than the grace period makes every node NotReady, and each came back"
    );
    let bound = rss_before * (1.0 + RSS_GROWTH) + RSS_SLACK_MB;
    assert!(
        rss_before > 0.0 && rss_after <= bound,
        "RSS {rss_before:.1} MB before the faults, {rss_after:.1} MB after recovery (bound {bound:.1})"
    );
}
