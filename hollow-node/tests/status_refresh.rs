//! Unchanged NodeStatus rewrites, as a watching client sees them: the nodes of one process
//! register together, yet their periodic rewrites are spread over `--node-status-refresh`
//! instead of all landing in the same seconds one period after registration (which made every
//! node informer take thousands of updates at once, five minutes into a scale run). None
//! waits longer than the period.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

const PREFIX: &str = "hn-refresh";
const NODES: usize = 20;
const PERIOD: Duration = Duration::from_secs(20);

fn heartbeat(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_heartbeat_time
        .as_ref()
        .map(|t| t.0.to_string())
}

/// Per node: its heartbeat once registered, and when a later heartbeat was first seen.
struct Seen {
    registered: String,
    rewrite: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_statuses_are_rewritten_spread_over_the_period() {
    let cp = e2e::ControlPlane::start(e2e::Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut cfg = common::config(&cp, PREFIX, NODES);
    cfg.node_status_refresh = PERIOD;
    let hollow = common::start(cfg).await;

    // Registered (ready waits for the first round). Registration writes a node twice, at its
    // create and its first status write, and the two heartbeats differ when a second boundary
    // falls between them; so the baseline is each node's heartbeat once all have registered,
    // not the first one a watch saw (that counted a registration as a rewrite, in CI).
    let selector = format!("mock-kind.io/hollow-node={PREFIX}");
    let listed = nodes
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list nodes");
    let registered = Instant::now();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for node in &listed.items {
        if let (Some(name), Some(beat)) = (node.metadata.name.clone(), heartbeat(node)) {
            let s = Seen {
                registered: beat,
                rewrite: None,
            };
            seen.insert(name, s);
        }
    }
    assert_eq!(
        seen.len(),
        NODES,
        "every node registered: {:?}",
        seen.keys()
    );
    let rv = listed.metadata.resource_version.unwrap_or_default();
    let wp = WatchParams::default().labels(&selector).timeout(290);
    let mut stream = std::pin::pin!(nodes.watch(&wp, &rv).await.expect("watch nodes"));

    // Every node rewrites within a period: give it a period and a margin.
    let deadline = tokio::time::Instant::now() + PERIOD * 3;
    while seen.values().any(|s| s.rewrite.is_none()) {
        let ev = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(ev)) => ev.expect("watch event"),
            Ok(None) => panic!("the node watch ended"),
            Err(_) => break,
        };
        let node = match ev {
            WatchEvent::Added(n) | WatchEvent::Modified(n) => n,
            WatchEvent::Error(e) => panic!("watch failed: {e:?}"),
            _ => continue,
        };
        let (Some(name), Some(beat)) = (node.metadata.name.clone(), heartbeat(&node)) else {
            continue;
        };
        let Some(s) = seen.get_mut(&name) else {
            continue;
        };
        if s.registered != beat && s.rewrite.is_none() {
            s.rewrite = Some(Instant::now());
        }
    }
    hollow.stop().await;

    let mut after: Vec<(String, Duration)> = Vec::new();
    let mut at: Vec<Instant> = Vec::new();
    for (name, s) in &seen {
        let rewrite = s
            .rewrite
            .unwrap_or_else(|| panic!("{name} never rewrote its status within {:?}", PERIOD * 3));
        after.push((name.clone(), rewrite - registered));
        at.push(rewrite);
    }
    // None waits longer than the period (plus a margin for a busy machine).
    for (name, d) in &after {
        assert!(
            *d <= PERIOD + Duration::from_secs(5),
            "{name} rewrote {d:?} after all had registered, past the {PERIOD:?} period: {after:?}"
        );
    }
    // Spread: the first rewrites span at least half the period, and no 2 s holds a third of
    // the nodes (all together, as before, would span about the registration time: a second).
    at.sort();
    let span = at[at.len() - 1] - at[0];
    assert!(
        span >= PERIOD / 2,
        "the rewrites span only {span:?} of the {PERIOD:?} period: {after:?}"
    );
    for (i, t) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|u| **u - *t <= Duration::from_secs(2))
            .count();
        assert!(
            within <= NODES / 3,
            "{within} of {NODES} nodes rewrote within 2 s: {after:?}"
        );
    }
}
