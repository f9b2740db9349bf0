//! Restart adoption after `kill -9`: the hollow-node binary is killed with SIGKILL in the middle
//! of a 1,000-pod ramp (ten Deployments, created by the real controller-manager and bound by the
//! real scheduler, which go on while it is dead), then started again. A watch on a direct client
//! sees every pod's IP and phase throughout: no pod changes IP, none that was Running goes back to
//! Pending, no IP is handed out twice, the same Node objects are kept, and every pod ends Running.

mod common;

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};

const PREFIX: &str = "hn-kill9";
const NS: &str = "ramp";
const NODES: usize = 20;
const DEPLOYMENTS: usize = 10;
const REPLICAS: i32 = 100;
const PODS: usize = DEPLOYMENTS * REPLICAS as usize;
/// Killed once this many pods are Running: well into the ramp, far from its end.
const KILL_AT: usize = 300;
const SIGKILL: i32 = 9;

/// What the watch saw of each pod.
#[derive(Default)]
struct PodLog {
    ip: HashMap<String, String>,
    phase: HashMap<String, String>,
    bound: HashSet<String>,
    violations: Vec<String>,
}

impl PodLog {
    fn see(&mut self, pod: &Pod) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        let ip = status.and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        let phase = common::phase(pod).to_string();
        if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
            self.bound.insert(name.clone());
        }
        match self.ip.get(&name) {
            Some(old) if *old != ip => self
                .violations
                .push(format!("pod {name} changed IP from {old} to {ip:?}")),
            Some(_) => {}
            None if !ip.is_empty() => {
                self.ip.insert(name.clone(), ip);
            }
            None => {}
        }
        if self.phase.get(&name).map(String::as_str) == Some("Running") && phase != "Running" {
            self.violations
                .push(format!("pod {name} went from Running to {phase:?}"));
        }
        self.phase.insert(name, phase);
    }

    fn running(&self) -> usize {
        self.phase.values().filter(|p| *p == "Running").count()
    }
}

fn watch_pods(client: kube::Client) -> Arc<Mutex<PodLog>> {
    let log = Arc::new(Mutex::new(PodLog::default()));
    let out = log.clone();
    let api: Api<Pod> = Api::namespaced(client, NS);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
        );
        while let Some(ev) = stream.next().await {
            if let Ok(pod) = ev {
                out.lock().unwrap_or_else(|e| e.into_inner()).see(&pod);
            }
        }
    });
    log
}

async fn node_uids(client: &kube::Client) -> HashSet<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default().labels(&format!("mock-kind.io/hollow-node={PREFIX}")))
        .await
        .expect("list nodes")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.uid)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_mid_ramp_then_restart_adopts_every_pod() {
    let cp = e2e::ControlPlane::start(e2e::Options::default())
        .await
        .expect("control plane");
    let client = cp.client();
    let kubeconfig = cp.kubeconfig();
    let mut first = common::spawn_binary(
        &kubeconfig,
        &cp.dir().join("hollow-node-1.log"),
        PREFIX,
        NODES,
    )
    .await;
    common::wait_nodes_ready(&client, PREFIX, NODES, Duration::from_secs(60)).await;
    let uids_before = node_uids(&client).await;
    common::create_namespace(&client, NS).await;
    let pods = watch_pods(client.clone());
    let log = || pods.lock().unwrap_or_else(|e| e.into_inner());
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
    for i in 0..DEPLOYMENTS {
        deploys
            .create(
                &Default::default(),
                &common::deployment(&format!("ramp-{i}"), REPLICAS),
            )
            .await
            .expect("deployment");
    }

    e2e::wait_for(
        Duration::from_secs(90),
        &format!("{KILL_AT} pods Running"),
        || {
            let n = log().running();
            async move { Ok((n >= KILL_AT).then_some(())) }
        },
    )
    .await
    .expect("ramp under way");
    first.assert_alive_and_sound("before the kill");
    let status = first.comp.kill().expect("reaped");
    let (running_at_kill, bound_at_kill) = {
        let l = log();
        (l.running(), l.bound.len())
    };
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "killed by SIGKILL: {status:?}"
    );
    assert!(
        running_at_kill < PODS,
        "killed mid-ramp: {running_at_kill} of {PODS} Running"
    );
    assert!(first.panics().is_empty(), "{:#?}", first.panics());

    // The ramp goes on without it: wait (a while at most) for the scheduler to bind the rest.
    let all_bound = e2e::wait_for(Duration::from_secs(30), "every pod bound", || {
        let n = log().bound.len();
        async move { Ok((n == PODS).then_some(())) }
    })
    .await;
    let (running_at_restart, bound_at_restart) = {
        let l = log();
        (l.running(), l.bound.len())
    };
    // (The watch runs a little behind: writes made just before the kill still arrive, so the
    // Running count may grow a bit after it.)
    assert!(
        bound_at_restart > running_at_restart,
        "pods bound to the dead nodes wait for the restart: {bound_at_restart} bound"
    );

    let mut second = common::spawn_binary(
        &kubeconfig,
        &cp.dir().join("hollow-node-2.log"),
        PREFIX,
        NODES,
    )
    .await;
    let all = e2e::wait_for(Duration::from_secs(120), "every pod Running", || {
        let client = client.clone();
        async move {
            let api: Api<Pod> = Api::namespaced(client, NS);
            let list = api.list(&ListParams::default()).await?.items;
            let running = list
                .iter()
                .filter(|p| common::phase(p) == "Running" && common::pod_ready(p))
                .count();
            Ok((list.len() == PODS && running == PODS).then_some(list))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; the watch saw {} Running", log().running()));
    second.assert_alive_and_sound("after the restart");

    assert_eq!(
        node_uids(&client).await,
        uids_before,
        "the same Node objects were adopted"
    );
    let ips = common::ips(&all);
    let unique: HashSet<&String> = ips.values().filter(|ip| !ip.is_empty()).collect();
    let l = log();
    eprintln!(
        "killed at {running_at_kill} Running / {bound_at_kill} bound; restarted at \
         {running_at_restart} Running / {bound_at_restart} bound (all bound: {}); \
         {} pods watched, {} distinct IPs",
        all_bound.is_ok(),
        l.phase.len(),
        unique.len()
    );
    assert!(l.violations.is_empty(), "{:#?}", l.violations);
    assert_eq!(unique.len(), PODS, "every pod has its own IP");
    for (name, ip) in &ips {
        assert_eq!(
            l.ip.get(name),
            Some(ip),
            "pod {name}: its final IP is the first one the watch saw"
        );
    }
}

#[test]
fn pod_log_flags_ip_changes_and_regressions() {
    let pod = |ip: &str, phase: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": phase, "podIP": if ip.is_empty() { None } else { Some(ip) }},
        }))
        .expect("pod")
    };
    // (case, the (podIP, phase) the watch sees in order, violations expected)
    type Seen<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, Seen, usize)] = &[
        (
            "pending then running",
            &[("", "Pending"), ("10.0.0.1", "Running")],
            0,
        ),
        (
            "same IP again",
            &[("10.0.0.1", "Running"), ("10.0.0.1", "Running")],
            0,
        ),
        (
            "IP changed",
            &[("10.0.0.1", "Running"), ("10.0.0.2", "Running")],
            1,
        ),
        ("IP lost", &[("10.0.0.1", "Pending"), ("", "Pending")], 1),
        (
            "back to Pending",
            &[("10.0.0.1", "Running"), ("10.0.0.1", "Pending")],
            1,
        ),
    ];
    for (name, seq, want) in cases {
        let mut log = PodLog::default();
        for (ip, phase) in *seq {
            log.see(&pod(ip, phase));
        }
        assert_eq!(log.violations.len(), *want, "{name}: {:?}", log.violations);
    }
}
