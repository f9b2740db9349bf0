//! Part 3 of the extender bench: scheduling throughput on the real control plane (e2e harness,
//! kube-scheduler 1.20), pods of a spoofed namespace, at each node count of
//! MOCK_KIND_BENCH_CLUSTER_NODES (45,5000; 5 of them real), three sides run interleaved (none,
//! extender, affinity) for MOCK_KIND_BENCH_RUNS rounds (5), each on a fresh control plane:
//! - `none`: no placement at all (the floor);
//! - `extender`: the extender wired into kube-scheduler;
//! - `affinity`: a stock kube-scheduler, the webhook's `/place` (affinity mode) mutating every
//!   pod at CREATE, hollow nodes tainted.
//!
//! Two phases, timed apart, because creation at this scale is slower than scheduling and would
//! hide it: pods are created (32 at a time) while kube-scheduler is frozen (SIGSTOP), then it is
//! resumed and timed until a watch has seen every pod bound. The affinity webhook works in the
//! first phase, the extender in the second. Per side and phase: median and spread (min–max) of
//! pods/s over the rounds, and CPU ms per pod of kube-scheduler, kube-apiserver, etcd and this
//! process (the pod-creating client plus the extender or the webhook, which run in it). The
//! ratios to `none` are taken per round (same round, same machine state), then their median
//! and spread: scheduling alone, creation alone, and both phases end to end.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use scheduler::{Config, Service};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::row;
use e2e::bench_env::env_or;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    None,
    Extender,
    Affinity,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::None => "none",
            Side::Extender => "extender",
            Side::Affinity => "affinity",
        }
    }
}

const WEBHOOK_NS: &str = "mock-kind";
const WEBHOOK_CONFIG: &str = "mock-kind-webhook";

/// The placement webhook of deploy/overlays/affinity alone (no UID webhook: only placement is
/// measured), pointed at the in-process webhook.
fn placement_webhook(port: u16) -> Result<MutatingWebhookConfiguration> {
    let text = include_str!("../../../deploy/overlays/affinity/placement-webhook.yaml");
    let patch: Value = serde_yaml::from_str(text)?;
    let mut hook = patch[0]["value"].clone();
    hook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}/place")});
    Ok(serde_json::from_value(json!({
        "metadata": {"name": WEBHOOK_CONFIG},
        "webhooks": [hook],
    }))?)
}

/// The webhook in affinity mode, bootstrapping its certificate into the configuration.
fn webhook_config(cp: &e2e::ControlPlane, port: u16) -> webhook::Config {
    let mut cert = certs::CertOptions::new("mock-kind-webhook", WEBHOOK_NS);
    cert.extra_sans = vec!["127.0.0.1".to_owned()];
    webhook::Config {
        listen: ([127, 0, 0, 1], port).into(),
        strategy: webhook::Strategy::Pod,
        profile: webhook::Profile::RunAsNonRoot,
        placement: webhook::PlacementMode::Affinity,
        namespace: WEBHOOK_NS.into(),
        exclude_namespaces: vec!["kube-system".into(), WEBHOOK_NS.into()],
        pod_uid_min: 1_000_000_000,
        pod_uid_max: 1_999_999_999,
        certs: webhook::CertSource::Bootstrap(webhook::Bootstrap {
            namespace: WEBHOOK_NS.into(),
            secret: "mock-kind-webhook-tls".into(),
            webhook_config: Some(WEBHOOK_CONFIG.into()),
            cert,
            renew_margin: Duration::from_secs(24 * 3600),
        }),
        cert_check_interval: Duration::from_secs(60),
        kubeconfig: Some(cp.kubeconfig()),
        server: serving::Limits {
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(1),
            ..webhook::cli::default_limits()
        },
        apiserver_deadline: Duration::from_secs(4),
        uid_block_repair: Duration::ZERO,
        clock: webhook::tls::system_clock(),
    }
}

/// The two timed phases of a round.
const PHASES: [&str; 2] = ["creation (scheduler frozen)", "scheduling"];

/// What one side of one round measured, per phase (creation, scheduling).
struct Round {
    secs: [f64; 2],
    /// CPU seconds per phase: kube-scheduler, kube-apiserver, etcd, this process.
    cpu: [[f64; 4]; 2],
}

impl Round {
    fn total(&self) -> f64 {
        self.secs[0] + self.secs[1]
    }
}

const PROCESSES: [&str; 4] = ["kube-scheduler", "kube-apiserver", "etcd", "bench+ours"];

fn cpu_now(cp: &e2e::ControlPlane) -> [f64; 4] {
    let of = |name| cp.pid(name).map_or(0.0, e2e::procfs::cpu_seconds);
    [
        of("kube-scheduler"),
        of("kube-apiserver"),
        of("etcd"),
        e2e::procfs::cpu_seconds(std::process::id()),
    ]
}

/// Pods bound so far in `bench`, as a watch sees them; ends when `pods` are bound.
async fn watch_bound(api: Api<Pod>, pods: usize) -> Result<()> {
    use kube::runtime::watcher;
    let mut bound: HashSet<String> = HashSet::with_capacity(pods);
    let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
    while bound.len() < pods {
        let Some(event) = events.next().await else {
            bail!("the pod watch ended");
        };
        let mut see = |p: Pod| {
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                && let Some(name) = p.metadata.name
            {
                bound.insert(name);
            }
        };
        match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => see(p),
            Ok(_) => {}
            Err(e) => eprintln!("  (pod watch: {e}; it resumes)"),
        }
    }
    Ok(())
}

/// One control plane with `node_count` nodes (5 real, the rest hollow); times `pods` pods
/// from the first create to the last binding.
async fn schedule_pods(side: Side, pods: usize, qps: u32, node_count: usize) -> Result<Round> {
    let port = e2e::free_port();
    let extenders = if side == Side::Extender {
        let text = include_str!("../../config/scheduler-config.v1beta1.yaml");
        let doc: Value = serde_yaml::from_str(text)?;
        let mut entry = doc["extenders"][0].clone();
        entry["urlPrefix"] = json!(format!("http://127.0.0.1:{port}/"));
        vec![entry]
    } else {
        Vec::new()
    };
    let cp = e2e::ControlPlane::start(e2e::Options {
        extenders,
        client_qps: qps,
        node_monitor_grace_period: Some(Duration::from_secs(3600)),
        ..Default::default()
    })
    .await?;
    let client = cp.client();
    let shutdown = CancellationToken::new();
    let mut task = None;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match side {
        Side::None => {}
        Side::Extender => {
            let mut config = Config::new(format!("127.0.0.1:{port}").parse()?);
            config.server.shutdown_grace = Duration::from_secs(1);
            let service = Service::new();
            let ready = service.ready.clone();
            let (client, stop) = (client.clone(), shutdown.clone());
            task = Some(tokio::spawn(async move {
                scheduler::run_with(config, client, service, stop)
                    .await
                    .map_err(anyhow::Error::from)
            }));
            e2e::wait_for(Duration::from_secs(60), "extender ready", || {
                let ready = ready.clone();
                async move { Ok(ready.is_ready().then_some(())) }
            })
            .await?;
        }
        Side::Affinity => {
            namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": WEBHOOK_NS}}))?,
                )
                .await?;
            Api::<MutatingWebhookConfiguration>::all(cp.client())
                .create(&PostParams::default(), &placement_webhook(port)?)
                .await?;
            let config = webhook_config(&cp, port);
            let stop = shutdown.clone();
            task = Some(tokio::spawn(async move {
                webhook::run(config, stop)
                    .await
                    .map_err(anyhow::Error::from)
            }));
        }
    }

    // 5 real nodes, the rest hollow (spoofed); room for 250 pods each.
    let nodes: Api<Node> = Api::all(client.clone());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let node = |i: usize| -> Result<Node> {
        let hollow = i >= 5;
        let name = if hollow {
            format!("hollow-{i}")
        } else {
            format!("real-{i}")
        };
        let mut meta = json!({"name": name});
        let mut taints = json!([]);
        if hollow {
            meta["annotations"] = json!({"spoofed": "true"});
            meta["labels"] = json!({"spoofed": "true"});
            if side == Side::Affinity {
                taints = serde_json::to_value(vec![placement::affinity::hollow_taint()])?;
            }
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": meta,
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
                       "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastHeartbeatTime": now, "lastTransitionTime": now}]}
        }))?;
        Ok(node)
    };
    let created: Vec<Result<()>> = futures::stream::iter(0..node_count.max(6))
        .map(|i| {
            let (nodes, node) = (nodes.clone(), node(i));
            async move {
                nodes.create(&PostParams::default(), &node?).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    created.into_iter().collect::<Result<()>>()?;
    e2e::wait_for(Duration::from_secs(300), "node taints lifted", || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await?;
            Ok(list
                .items
                .iter()
                .all(|n| {
                    n.spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_none_or(|t| t.iter().all(|t| !t.key.starts_with("node.kubernetes.io/")))
                })
                .then_some(()))
        }
    })
    .await?;
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "bench", "annotations": {"spoofed": "true"}}}),
            )?,
        )
        .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "bench");
    e2e::wait_for(
        Duration::from_secs(60),
        "serviceaccount bench/default",
        || {
            let sas = sas.clone();
            async move { Ok(sas.get_opt("default").await?.map(|_| ())) }
        },
    )
    .await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let pod = |name: String| -> Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"automountServiceAccountToken": false,
                     "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.2"}]}
        }))?)
    };
    if side == Side::Affinity {
        // Before timing: the apiserver trusts the webhook and it knows the namespace (a
        // server-side dry run comes back placed).
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        e2e::wait_for(Duration::from_secs(60), "webhook placing pods", || {
            let (api, pod, dry) = (api.clone(), pod("probe".into()), dry.clone());
            async move {
                let Ok(pod) = pod else { return Ok(None) };
                let placed = api
                    .create(&dry, &pod)
                    .await
                    .ok()
                    .and_then(|p| p.spec?.affinity);
                Ok(placed.map(|_| ()))
            }
        })
        .await?;
    }
    if side == Side::Extender {
        // Let the extender's caches see the namespace and nodes before timing.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let watch = tokio::spawn(watch_bound(api.clone(), pods));
    if !cp.pause("kube-scheduler", true) {
        bail!("no kube-scheduler to freeze");
    }
    let cpu_start = cpu_now(&cp);
    let started = Instant::now();
    let creates = futures::stream::iter(0..pods).map(|i| {
        let api = api.clone();
        let pod = pod(format!("pod-{i}"));
        async move {
            api.create(&PostParams::default(), &pod?).await?;
            Ok::<_, anyhow::Error>(())
        }
    });
    let results: Vec<Result<()>> = creates.buffer_unordered(32).collect().await;
    let created = started.elapsed().as_secs_f64();
    let cpu_created = cpu_now(&cp);
    cp.pause("kube-scheduler", false);
    for r in results {
        r?;
    }
    let resumed = Instant::now();
    tokio::time::timeout(Duration::from_secs(600), watch)
        .await
        .with_context(|| format!("{pods} pods not bound within 600 s"))???;
    let scheduled = resumed.elapsed().as_secs_f64();
    let cpu_bound = cpu_now(&cp);
    let diff = |a: [f64; 4], b: [f64; 4]| std::array::from_fn(|i| b[i] - a[i]);
    let cpu = [diff(cpu_start, cpu_created), diff(cpu_created, cpu_bound)];
    let bound_nodes: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.spec.and_then(|s| s.node_name))
        .collect();
    if side != Side::None {
        let wrong: HashSet<&String> = bound_nodes
            .iter()
            .filter(|n| n.starts_with("real-"))
            .collect();
        if !wrong.is_empty() {
            bail!(
                "{}: pods of a spoofed namespace landed on {wrong:?}",
                side.name()
            );
        }
    }
    eprintln!(
        "  {:<8}: {node_count} nodes, {pods} pods created in {created:.2} s, then all bound in {scheduled:.2} s",
        side.name(),
    );
    shutdown.cancel();
    if let Some(task) = task {
        let _ = task.await;
    }
    drop(cp);
    Ok(Round {
        secs: [created, scheduled],
        cpu,
    })
}

pub async fn cluster() -> Result<()> {
    let pods = env_or("MOCK_KIND_BENCH_PODS", 5000usize);
    let qps = env_or("MOCK_KIND_BENCH_SCHEDULER_QPS", 1000u32);
    let runs = env_or("MOCK_KIND_BENCH_RUNS", 5usize).clamp(1, 20);
    let node_counts: Vec<usize> = std::env::var("MOCK_KIND_BENCH_CLUSTER_NODES")
        .unwrap_or_else(|_| "45,5000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    for node_count in node_counts {
        at_node_count(pods, qps, runs, node_count).await?;
    }
    Ok(())
}

async fn at_node_count(pods: usize, qps: u32, runs: usize, node_count: usize) -> Result<()> {
    println!(
        "\n== real control plane (kube-scheduler 1.20), {pods} pods, {node_count} nodes, scheduler qps {qps}, {runs} interleaved run(s) =="
    );
    let sides = [Side::None, Side::Extender, Side::Affinity];
    let mut rounds: Vec<Vec<Round>> = sides.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        // The order turns each round, so drift does not favour one side.
        for k in 0..sides.len() {
            let i = (k + run) % sides.len();
            let round = schedule_pods(sides[i], pods, qps, node_count)
                .await
                .with_context(|| format!("run {run}, {}", sides[i].name()))?;
            rounds[i].push(round);
        }
    }
    for (phase, phase_name) in PHASES.iter().enumerate() {
        println!("  {phase_name}:");
        for (side, rounds) in sides.iter().zip(&rounds) {
            let (median, min, max) = e2e::stats::median_and_spread(
                rounds.iter().map(|r| pods as f64 / r.secs[phase]).collect(),
            );
            row(
                &format!("pods/s, {}", side.name()),
                format!("{median:.1} ({min:.0}-{max:.0})"),
                "",
                None,
            );
            let per_pod: Vec<String> = PROCESSES
                .iter()
                .enumerate()
                .map(|(p, name)| {
                    let (ms, _, _) = e2e::stats::median_and_spread(
                        rounds
                            .iter()
                            .map(|r| r.cpu[phase][p] * 1e3 / pods as f64)
                            .collect(),
                    );
                    format!("{name} {ms:.2}")
                })
                .collect();
            println!("    CPU ms/pod (medians): {}", per_pod.join(", "));
        }
    }
    for (i, side) in sides.iter().enumerate().skip(1) {
        let ratio = |of: &dyn Fn(&Round) -> f64| {
            e2e::stats::median_and_spread(
                rounds[0]
                    .iter()
                    .zip(&rounds[i])
                    .map(|(none, ours)| of(none) / of(ours))
                    .collect(),
            )
        };
        for (what, of) in [
            (
                "scheduling",
                &(|r: &Round| r.secs[1]) as &dyn Fn(&Round) -> f64,
            ),
            ("creation", &|r: &Round| r.secs[0]),
            ("end to end", &Round::total),
        ] {
            let (median, min, max) = ratio(of);
            row(
                &format!("throughput ratio {}/none, {what} (per round)", side.name()),
                format!("{median:.3} ({min:.2}-{max:.2})"),
                ">= 0.95",
                Some(median >= 0.95),
            );
        }
    }
    Ok(())
}
