//! Pool bench (issue 14's numbers) against the real control plane: the same BENCH_NODES (2,000)
//! hollow nodes from `hollow-node --nodes N` and from a `HollowNodePool` of N run by
//! `hollow-node --pool`, each a release PROCESS, interleaved over BENCH_ROUNDS (3) rounds with
//! the order turning. For each side: process start → every Node Ready, as a watch on the Nodes
//! sees it; the process's RSS once all are Ready (after BENCH_SETTLE_SECS, 10); and, for the
//! pool, `kubectl scale hollownodepool/bench --replicas=0` → no Node left. Medians with their
//! spread, and the pool / flags ratio of each round.
//!
//! Targets: pool → all Ready within 10 % of `--nodes`; N → 0 within 60 s; the pool's process
//! at most 10 MB above the flags' one.
//!
//! `cargo bench -p hollow-node --bench pool`; BENCH_NODES=200 BENCH_ROUNDS=1 for a quick run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::procfs::rss_mb;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::watch;

use e2e::bench_env::env_or;
use e2e::process::Component;

/// How long a stopping hollow-node may take before it is killed (it deletes its Nodes first).
const STOP_GRACE: Duration = Duration::from_secs(60);

/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; the wait blocks this worker thread only.
fn stop(mut hollow: Component) {
    tokio::task::block_in_place(|| hollow.terminate(STOP_GRACE));
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// (Nodes, Ready Nodes) with label `selector`, as a watch sees them.
fn watch_nodes(client: &kube::Client, selector: &str) -> watch::Receiver<(usize, usize)> {
    let (tx, rx) = watch::channel((0, 0));
    let api: Api<Node> = Api::all(client.clone());
    let cfg = watcher::Config::default().labels(selector);
    tokio::spawn(async move {
        let mut ready: HashMap<String, bool> = HashMap::new();
        let mut stream = std::pin::pin!(watcher(api, cfg));
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    let ok = node_ready(&n);
                    ready.insert(n.metadata.name.unwrap_or_default(), ok);
                }
                Ok(watcher::Event::Delete(n)) => {
                    ready.remove(&n.metadata.name.unwrap_or_default());
                }
                Ok(watcher::Event::Init) => ready.clear(),
                _ => continue,
            }
            let count = (ready.len(), ready.values().filter(|r| **r).count());
            if tx.send(count).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits until `(nodes, ready)` passes `done`; the time it took from `since`.
async fn until(
    rx: &mut watch::Receiver<(usize, usize)>,
    since: Instant,
    timeout: Duration,
    what: &str,
    done: impl Fn((usize, usize)) -> bool,
) -> Result<Duration, String> {
    let reached = tokio::time::timeout(timeout, rx.wait_for(|c| done(*c)))
        .await
        .is_ok_and(|r| r.is_ok());
    if reached {
        Ok(since.elapsed())
    } else {
        Err(format!(
            "{what}: not within {timeout:?} (seen {:?})",
            *rx.borrow()
        ))
    }
}

async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> Result<(), String> {
    let o = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("kubectl: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Side {
    ready_secs: f64,
    rss_mb: f64,
    /// Pool only: `kubectl scale --replicas=0` → no Node.
    to_zero_secs: f64,
}

struct Bench {
    cp: e2e::ControlPlane,
    nodes: usize,
    settle: Duration,
    timeout: Duration,
}

impl Bench {
    /// The release hollow-node with `args`, its output in the control plane's directory.
    fn spawn(&self, side: &str, args: Vec<String>) -> Result<Component, String> {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_hollow-node"));
        let log = self.cp.dir().join(format!("hollow-node-{side}.log"));
        Component::spawn(side, bin, &args, &log).map_err(|e| e.to_string())
    }

    fn common_args(&self) -> Vec<String> {
        vec![
            format!("--kubeconfig={}", self.cp.kubeconfig().display()),
            format!(
                "--listen={}",
                SocketAddr::from(([127, 0, 0, 1], e2e::free_port()))
            ),
            format!("--kubelet-port={}", e2e::free_port()),
            "--kube-api-qps=3000".into(),
            "--kube-api-burst=3000".into(),
        ]
    }

    async fn flags(&self) -> Result<Side, String> {
        let client = self.cp.client();
        let mut rx = watch_nodes(&client, "mock-kind.io/hollow-node=flags");
        let mut args = self.common_args();
        args.extend([
            format!("--nodes={}", self.nodes),
            "--node-prefix=flags".into(),
            "--delete-nodes-on-exit".into(),
        ]);
        let start = Instant::now();
        let hollow = self.spawn("flags", args)?;
        let n = self.nodes;
        let ready = until(
            &mut rx,
            start,
            self.timeout,
            "flags: all Ready",
            |(_, r)| r >= n,
        )
        .await?;
        tokio::time::sleep(self.settle).await;
        let rss = rss_mb(hollow.pid());
        stop(hollow);
        until(
            &mut rx,
            Instant::now(),
            self.timeout,
            "flags: Nodes deleted",
            |(t, _)| t == 0,
        )
        .await?;
        Ok(Side {
            ready_secs: ready.as_secs_f64(),
            rss_mb: rss,
            to_zero_secs: f64::NAN,
        })
    }

    async fn pool(&self) -> Result<Side, String> {
        let client = self.cp.client();
        let kc = self.cp.kubeconfig();
        let mut rx = watch_nodes(&client, "mock-kind.io/pool=bench");
        let file = self.cp.dir().join("bench-pool.yaml");
        let manifest = format!(
            "apiVersion: mock-kind.io/v1alpha1\nkind: HollowNodePool\nmetadata:\n  name: bench\nspec:\n  replicas: {}\n",
            self.nodes
        );
        std::fs::write(&file, manifest).map_err(|e| e.to_string())?;
        kubectl(&kc, &["apply", "-f", &file.display().to_string()]).await?;
        let mut args = self.common_args();
        args.push("--pool=bench".into());
        let start = Instant::now();
        let hollow = self.spawn("pool", args)?;
        let n = self.nodes;
        let ready = until(&mut rx, start, self.timeout, "pool: all Ready", |(_, r)| {
            r >= n
        })
        .await?;
        tokio::time::sleep(self.settle).await;
        let rss = rss_mb(hollow.pid());
        let scaled = Instant::now();
        kubectl(&kc, &["scale", "hollownodepool/bench", "--replicas=0"]).await?;
        let to_zero = until(
            &mut rx,
            scaled,
            self.timeout,
            "pool: scaled to 0",
            |(t, _)| t == 0,
        )
        .await?;
        // Deleted while its process runs: the finalizer is removed at once (no Node is left).
        kubectl(&kc, &["delete", "hollownodepool/bench", "--timeout=60s"]).await?;
        stop(hollow);
        Ok(Side {
            ready_secs: ready.as_secs_f64(),
            rss_mb: rss,
            to_zero_secs: to_zero.as_secs_f64(),
        })
    }
}

/// Median and (min, max) of `v`.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn row(name: &str, v: &[f64], unit: &str, target: &str) {
    let (m, lo, hi) = spread(v);
    let each: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
    println!(
        "| {name} | {m:.2}{unit} ({lo:.2}–{hi:.2}) | {} | {target} |",
        each.join(", ")
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    telemetry::install_crypto_provider();
    let nodes = env_or("BENCH_NODES", 2000usize);
    let rounds = env_or("BENCH_ROUNDS", 3usize);
    println!("pool bench: {nodes} nodes, {rounds} rounds");
    let cp = e2e::ControlPlane::start(e2e::Options {
        client_qps: 1000,
        scheduler: false,
        extra_apiserver_args: vec![
            "--max-requests-inflight=1000".into(),
            "--max-mutating-requests-inflight=500".into(),
        ],
        ..Default::default()
    })
    .await?;
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/base/crd-hollownodepools.yaml"
    );
    kubectl(&cp.kubeconfig(), &["apply", "-f", crd]).await?;
    kubectl(
        &cp.kubeconfig(),
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/hollownodepools.mock-kind.io",
        ],
    )
    .await?;
    let bench = Bench {
        cp,
        nodes,
        settle: Duration::from_secs(env_or("BENCH_SETTLE_SECS", 10u64)),
        timeout: Duration::from_secs(env_or("BENCH_TIMEOUT_SECS", 300u64)),
    };
    let (mut flags, mut pools) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (f, p) = if round % 2 == 0 {
            let f = bench.flags().await?;
            (f, bench.pool().await?)
        } else {
            let p = bench.pool().await?;
            (bench.flags().await?, p)
        };
        println!(
            "round {}: --nodes Ready {:.1} s, RSS {:.1} MB; pool Ready {:.1} s, RSS {:.1} MB, to 0 in {:.1} s",
            round + 1,
            f.ready_secs,
            f.rss_mb,
            p.ready_secs,
            p.rss_mb,
            p.to_zero_secs
        );
        flags.push(f);
        pools.push(p);
    }
    let col = |v: &[Side], f: fn(&Side) -> f64| v.iter().map(f).collect::<Vec<f64>>();
    let ratio: Vec<f64> = flags
        .iter()
        .zip(&pools)
        .map(|(f, p)| p.ready_secs / f.ready_secs)
        .collect();
    let extra: Vec<f64> = flags
        .iter()
        .zip(&pools)
        .map(|(f, p)| p.rss_mb - f.rss_mb)
        .collect();
    println!();
    println!(
        "| metric ({nodes} nodes, {rounds} rounds) | median (min–max) | each round | target |"
    );
    println!("|---|---|---|---|");
    row(
        "`--nodes`: start → all Ready",
        &col(&flags, |s| s.ready_secs),
        " s",
        "",
    );
    row(
        "pool: start → all Ready",
        &col(&pools, |s| s.ready_secs),
        " s",
        "",
    );
    row("pool / `--nodes`, per round", &ratio, "", "≤ 1.10");
    row(
        "pool: scale to 0 → no Node",
        &col(&pools, |s| s.to_zero_secs),
        " s",
        "≤ 60 s",
    );
    row(
        "`--nodes`: RSS when Ready",
        &col(&flags, |s| s.rss_mb),
        " MB",
        "",
    );
    row(
        "pool: RSS when Ready",
        &col(&pools, |s| s.rss_mb),
        " MB",
        "",
    );
    row("pool − `--nodes` RSS, per round", &extra, " MB", "≤ 10 MB");
    Ok(())
}
