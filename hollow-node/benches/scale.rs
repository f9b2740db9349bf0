//! Scale benchmark against the real control plane: one hollow-node PROCESS (the release
//! binary) with BENCH_NODES nodes (2,000) and BENCH_PODS pods (20,000). Reports its RSS, CPU at
//! steady state, bind→Running latency as a client watch sees it (from the event that shows
//! spec.nodeName set to the one that shows Ready=True), API requests/s from its /metrics, and
//! kubemark's RSS per node on the same control plane (BENCH_KUBEMARK processes, 3).
//!
//! `cargo bench -p hollow-node --bench scale`; BENCH_NODES=200 BENCH_PODS=2000 for a quick run.
//! BENCH_LOG_REQUESTS (200) `kubectl logs` reads of the probe pods, through the apiserver.
//! BENCH_TOP_REQUESTS (10) runs of `kubectl top pods -A`, hollow-node serving metrics.k8s.io.
//! BENCH_SCRAPE_ROUNDS (3) full scrapes of every node's /metrics/resource on its own port
//! (hollow-node runs with --kubelet-port-per-node unless it is 0), the first with every TLS
//! handshake, the later ones on kept connections.
//! BENCH_CREATE_QPS paces pod creation: the controller-manager's client QPS, so the ReplicaSet
//! controller creates about that many pods a second (50: what the scheduler places without a
//! backlog on 2 cores at 2,000 nodes; 0: 1,000, a creation storm). BENCH_WORKERS sets
//! hollow-node's --workers (0: its automatic count); BENCH_DUMP=<file> writes the per-pod ramp
//! timeline as CSV.
//!
//! BENCH_APISERVER_ARGS: more kube-apiserver flags, space-separated (a diagnosis, e.g.
//! `--etcd-compaction-interval=0`, which no cluster runs with).
//! BENCH_CONTROL_PLANE_NICE (root only) sets the control plane's CPU weight before the pods are
//! created. `kind`: the weights a kind cluster gives its pods from their CPU requests (cgroup
//! shares ∝ requests: kube-apiserver 250m, kube-controller-manager 200m, kube-scheduler and etcd
//! 100m, hollow-node 100m), as nice values over the weight of 100m: kube-apiserver -4 (×2.44),
//! kube-controller-manager -3 (×1.94), the rest 0. A number n: etcd and kube-apiserver at nice n
//! (an experiment). Unset: every process at the same weight, which no kind cluster has.
//!
//! Lease margin: a watch on kube-node-lease follows every node's renewTime, and once a second
//! the bench notes how far the oldest Lease is past its renew time (renewTime + the 10 s
//! interval), from when the Deployments are created until every pod is Ready: the max and p99
//! of those samples are the storm's lease lateness (target ≤ 15 s against a 40 s lease). The
//! issue's storm: BENCH_NODES=5000 BENCH_PODS=10000 BENCH_CREATE_QPS=0 BENCH_KUBEMARK=0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::procfs::{cpu_seconds, peak_rss_mb as hwm_mb, rss_mb};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common/scrape.rs"]
mod scrape;

use e2e::bench_env::env_or;

/// Kills the child on drop (also on panic).
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = s
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Sum of all `hollow_node_api_requests_total{...}` samples.
async fn api_requests(addr: SocketAddr) -> f64 {
    http_get(addr, "/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with("hollow_node_api_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One line per series of a Prometheus histogram in `text`: count, mean, and p50/p99 as the
/// upper bound of the bucket that holds them.
fn histogram_summary(text: &str, name: &str) -> Vec<String> {
    /// Count, sum and (le, cumulative count) buckets of one series.
    type Series = (f64, f64, Vec<(f64, f64)>);
    // Keyed by the series' labels without `le`.
    let mut series: std::collections::BTreeMap<String, Series> = Default::default();
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (metric, labels) = key.split_once('{').unwrap_or((key, ""));
        let labels = labels.trim_end_matches('}');
        let mut le = None;
        let rest: Vec<&str> = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .filter(|l| match l.strip_prefix("le=") {
                Some(v) => {
                    le = v.trim_matches('"').parse::<f64>().ok();
                    false
                }
                None => true,
            })
            .collect();
        let entry = series.entry(rest.join(",")).or_default();
        match metric.trim_start_matches(name) {
            "_count" => entry.0 = value,
            "_sum" => entry.1 = value,
            "_bucket" => entry.2.push((le.unwrap_or(f64::INFINITY), value)),
            _ => {}
        }
    }
    series
        .into_iter()
        .map(|(labels, (count, sum, mut buckets))| {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let q = |p: f64| {
                buckets
                    .iter()
                    .find(|(_, c)| *c >= p * count)
                    .map_or(f64::NAN, |(le, _)| *le)
            };
            format!(
                "{name}{{{labels}}}: n={count} mean={:.3}s p50≤{}s p99≤{}s",
                sum / count.max(1.0),
                q(0.5),
                q(0.99)
            )
        })
        .collect()
}

fn node_ready(n: &Node) -> bool {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == "node.kubernetes.io/not-ready"));
    ready && !tainted
}

async fn wait_nodes(
    client: &kube::Client,
    selector: &str,
    n: usize,
    timeout: Duration,
) -> Result<(), e2e::Error> {
    let api: Api<Node> = Api::all(client.clone());
    e2e::wait_for(timeout, &format!("{n} nodes {selector} Ready"), || {
        let api = api.clone();
        let selector = selector.to_string();
        async move {
            let list = api.list(&ListParams::default().labels(&selector)).await?;
            Ok((list.items.iter().filter(|n| node_ready(n)).count() >= n).then_some(()))
        }
    })
    .await
}

/// The renew interval hollow-node runs with (its default).
const RENEW_INTERVAL: f64 = 10.0;

const CONTROL_PLANE: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
];

/// Last renewTime of each of our Leases, as a watch sees them.
type Renewals = Arc<Mutex<HashMap<String, jiff::Timestamp>>>;

/// Follows the renewTime of every Lease named `<prefix>-…`.
fn watch_leases(client: &kube::Client, prefix: &str) -> (Renewals, tokio::task::JoinHandle<()>) {
    let renewals: Renewals = Arc::default();
    let r = renewals.clone();
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let prefix = format!("{prefix}-");
    let join = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(ev) = stream.next().await {
            let (Ok(watcher::Event::Apply(l)) | Ok(watcher::Event::InitApply(l))) = ev else {
                continue;
            };
            let Some(name) = l.metadata.name.filter(|n| n.starts_with(&prefix)) else {
                continue;
            };
            if let Some(t) = l.spec.and_then(|s| s.renew_time)
                && let Ok(mut m) = r.lock()
            {
                m.insert(name, t.0);
            }
        }
    });
    (renewals, join)
}

/// "name cores, …" between two CPU readings `seconds` apart.
fn core_shares(before: &[(&str, f64)], after: &[(&str, f64)], seconds: f64) -> String {
    before
        .iter()
        .zip(after)
        .map(|((name, a), (_, b))| format!("{name} {:.2}", (b - a) / seconds))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How far the oldest Lease is past its renew time now, in seconds (negative: none is late).
fn oldest_lateness(renewals: &Renewals) -> f64 {
    let now = jiff::Timestamp::now();
    renewals
        .lock()
        .ok()
        .and_then(|m| m.values().min().copied())
        .map_or(f64::NAN, |oldest| {
            now.duration_since(oldest).as_secs_f64() - RENEW_INTERVAL
        })
}

/// Gives every thread of `pid` the nice value `nice` with renice(1) (Linux nice is per thread);
/// how many took it.
fn renice(pid: u32, nice: i32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok()?.file_name().into_string().ok())
        .filter(|tid| {
            Command::new("renice")
                .args(["-n", &nice.to_string(), "-p", tid])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .count()
}

#[derive(Default)]
struct Timeline {
    bound: HashMap<String, Instant>,
    ready: HashMap<String, Instant>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn deployment(name: &str, replicas: usize) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "bench": "scale"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": "nginx:1.19",
                        "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]
                }
            }
        }
    }))
    .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    telemetry::install_crypto_provider();
    let nodes = env_or("BENCH_NODES", 2000usize);
    let pods = env_or("BENCH_PODS", 20000usize);
    let kubemarks = env_or("BENCH_KUBEMARK", 3usize);
    let steady = Duration::from_secs(env_or("BENCH_STEADY_SECS", 30u64));
    println!("scale bench: {nodes} nodes, {pods} pods, {kubemarks} kubemark nodes");

    // The controller-manager's client QPS paces pod creation (the ReplicaSet controller is the
    // client): latency is then the hollow node's, not a backlog in the scheduler. 0 leaves it at
    // the control plane's 1,000, i.e. a creation storm.
    let create_qps = env_or("BENCH_CREATE_QPS", 50usize);
    let mut cm_args = vec!["--concurrent-replicaset-syncs=10".to_string()];
    if create_qps > 0 {
        cm_args.push(format!("--kube-api-qps={create_qps}"));
        cm_args.push(format!("--kube-api-burst={create_qps}"));
    }
    let cp = e2e::ControlPlane::start(e2e::Options {
        client_qps: 1000,
        extra_apiserver_args: [
            "--max-requests-inflight=1000".to_string(),
            "--max-mutating-requests-inflight=500".to_string(),
        ]
        .into_iter()
        .chain(
            std::env::var("BENCH_APISERVER_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string),
        )
        .collect(),
        extra_controller_manager_args: cm_args,
        ..Default::default()
    })
    .await?;
    let client = cp.client();

    // The hollow node, as a process.
    let port = e2e::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let bin = env!("CARGO_BIN_EXE_hollow-node");
    let metrics_port = e2e::free_port();
    let scrape_rounds = env_or("BENCH_SCRAPE_ROUNDS", 3usize);
    // Node i's kubelet API on base + i when the scrape is measured, else one port.
    let kubelet_base = match scrape_rounds {
        0 => e2e::free_port(),
        _ => scrape::free_range(nodes).ok_or("no range of free ports for the nodes")?,
    };
    let t_start = Instant::now();
    let child = Command::new(bin)
        .args([
            format!("--kubelet-port-per-node={}", scrape_rounds > 0),
            format!("--nodes={nodes}"),
            "--node-prefix=bench".into(),
            format!("--kubeconfig={}", cp.kubeconfig().display()),
            format!("--listen={addr}"),
            format!("--max-pods={}", (pods / nodes.max(1)) * 3 + 10),
            "--kube-api-qps=3000".into(),
            "--kube-api-burst=3000".into(),
            format!("--workers={}", env_or("BENCH_WORKERS", 0usize)),
            // Its kubelet API (kubectl logs and the scrape below), on ports of its own.
            format!("--kubelet-port={kubelet_base}"),
            // metrics.k8s.io (kubectl top below), registered once the nodes are Ready.
            format!("--metrics-api-port={metrics_port}"),
            "--metrics-api-bind-address=127.0.0.1".into(),
            format!(
                "--requestheader-client-ca-file={}",
                cp.front_proxy_ca_file().display()
            ),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let hollow = Proc(child);
    let pid = hollow.0.id();
    // 300 s by default; a loaded machine at 5,000 nodes needs more (BENCH_NODES_TIMEOUT_SECS).
    wait_nodes(
        &client,
        "mock-kind.io/hollow-node=bench",
        nodes,
        Duration::from_secs(env_or("BENCH_NODES_TIMEOUT_SECS", 300u64)),
    )
    .await?;
    let t_nodes = t_start.elapsed();
    println!("{nodes} nodes Ready in {:.1}s", t_nodes.as_secs_f64());
    // Leases: start from a settled lane (every node renewed on schedule once), so what the
    // storm shows is the storm's.
    let (renewals, lease_watch) = watch_leases(&client, "bench");
    let rn = renewals.clone();
    e2e::wait_for(
        Duration::from_secs(120),
        &format!("{nodes} leases renewed on time"),
        || {
            let rn = rn.clone();
            async move {
                let n = rn.lock().map(|m| m.len()).unwrap_or(0);
                Ok((n >= nodes && oldest_lateness(&rn) < 1.0).then_some(()))
            }
        },
    )
    .await?;
    let lease_samples: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (rn, ls) = (renewals.clone(), lease_samples.clone());
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let late = oldest_lateness(&rn);
            if let Ok(mut v) = ls.lock() {
                v.push(late);
            }
        }
    });
    // From here on every node should stay Ready: a renewal that comes too late shows as a node
    // the controller-manager marks NotReady (or Unknown).
    let not_ready: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let nr = not_ready.clone();
    let node_api: Api<Node> = Api::all(client.clone());
    let node_watch = tokio::spawn(async move {
        let cfg = watcher::Config::default().labels("mock-kind.io/hollow-node=bench");
        let mut stream = std::pin::pin!(watcher(node_api, cfg));
        while let Some(ev) = stream.next().await {
            let (Ok(watcher::Event::Apply(n)) | Ok(watcher::Event::InitApply(n))) = ev else {
                continue;
            };
            if !node_ready(&n)
                && let Ok(mut set) = nr.lock()
            {
                set.insert(n.metadata.name.unwrap_or_default());
            }
        }
    });

    // Client-side watch: bind and Ready instants per pod.
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "bench"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await?;
    let timeline: Arc<Mutex<Timeline>> = Arc::default();
    let tl = timeline.clone();
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(
            pod_api,
            watcher::Config::default().labels("bench=scale")
        ));
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            let (watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = (match ev {
                Ok(ev) => ev,
                Err(_) => continue,
            }) else {
                continue;
            };
            let name = p.metadata.name.clone().unwrap_or_default();
            let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let Ok(mut t) = tl.lock() else { continue };
            if bound {
                t.bound.entry(name.clone()).or_insert(now);
            }
            if ready {
                t.ready.entry(name).or_insert(now);
            }
        }
    });

    // Processes on one machine share it by thread; in a kind cluster the pods' cgroups share it
    // by their CPU requests.
    let weights: Vec<(&str, i32)> = match std::env::var("BENCH_CONTROL_PLANE_NICE").as_deref() {
        Ok("kind") => vec![("kube-apiserver", -4), ("kube-controller-manager", -3)],
        Ok(n) => n
            .parse::<i32>()
            .map(|n| vec![("etcd", n), ("kube-apiserver", n)])
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    for (name, nice) in weights {
        let threads = cp.pid(name).map_or(0, |pid| renice(pid, nice));
        println!("{name}: {threads} threads at nice {nice}");
    }

    // The pods: ten Deployments so the ReplicaSet controller works in parallel.
    let deployments = 10.min(pods.max(1));
    let deploy_api: Api<Deployment> = Api::namespaced(client.clone(), "bench");
    let req_before = api_requests(addr).await;
    // Where the CPU goes, per process: the control plane shares the two cores with us.
    let me = std::process::id();
    let cpu_by_process = |cp: &e2e::ControlPlane| -> Vec<(&'static str, f64)> {
        let mut v: Vec<(&'static str, f64)> = CONTROL_PLANE
            .iter()
            .map(|c| (*c, cp.pid(c).map(cpu_seconds).unwrap_or(f64::NAN)))
            .collect();
        v.push(("hollow-node", cpu_seconds(pid)));
        v.push(("bench client", cpu_seconds(me)));
        v
    };
    let cpu_before = cpu_by_process(&cp);
    let t_pods = Instant::now();
    for d in 0..deployments {
        let n = pods / deployments + usize::from(d < pods % deployments);
        deploy_api
            .create(&Default::default(), &deployment(&format!("d{d}"), n))
            .await?;
    }
    let mut peak_rss = 0.0f64;
    let tl = timeline.clone();
    e2e::wait_for(
        Duration::from_secs(900),
        &format!("{pods} pods Ready"),
        || {
            let tl = tl.clone();
            peak_rss = peak_rss.max(rss_mb(pid));
            async move {
                let ready = tl.lock().map(|t| t.ready.len()).unwrap_or(0);
                Ok((ready >= pods).then_some(()))
            }
        },
    )
    .await?;
    let ramp = t_pods.elapsed();
    sampler.abort();
    lease_watch.abort();
    let mut lease_late = lease_samples.lock().map(|v| v.clone()).unwrap_or_default();
    lease_late.sort_by(|a, b| a.total_cmp(b));
    let req_ramp = api_requests(addr).await - req_before;
    println!("{pods} pods Ready in {:.1}s", ramp.as_secs_f64());
    println!(
        "cores used during the ramp: {}",
        core_shares(&cpu_before, &cpu_by_process(&cp), ramp.as_secs_f64())
    );

    // Steady state: nothing changes but heartbeats.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu0 = cpu_seconds(pid);
    let steady_before = cpu_by_process(&cp);
    let req0 = api_requests(addr).await;
    let t0 = Instant::now();
    tokio::time::sleep(steady).await;
    let cpu_core = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    println!(
        "cores used at steady state: {}",
        core_shares(
            &steady_before,
            &cpu_by_process(&cp),
            t0.elapsed().as_secs_f64()
        )
    );
    let steady_rps = (api_requests(addr).await - req0) / t0.elapsed().as_secs_f64();
    let rss = rss_mb(pid);
    let hwm = hwm_mb(pid);

    // Probe: with everything in place, pods arrive at a steady BENCH_PROBE_RATE per second; their
    // latency is the hollow node's own responsiveness at scale, not the ramp's queueing in the
    // control plane.
    let probes = env_or("BENCH_PROBES", 200usize);
    let rate = env_or("BENCH_PROBE_RATE", 20usize).max(1);
    let probe_api: Api<Pod> = Api::namespaced(client.clone(), "bench");
    for i in 0..probes {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("probe-{i}"), "labels": {"bench": "scale", "probe": "yes"}},
            "spec": {"automountServiceAccountToken": false, "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "app", "image": "nginx:1.19"}]}
        }))?;
        probe_api.create(&Default::default(), &p).await?;
        tokio::time::sleep(Duration::from_millis(1000 / rate as u64)).await;
    }
    let tl = timeline.clone();
    e2e::wait_for(Duration::from_secs(120), "probe pods Ready", || {
        let tl = tl.clone();
        async move {
            let ready = tl
                .lock()
                .map(|t| t.ready.keys().filter(|k| k.starts_with("probe-")).count())
                .unwrap_or(0);
            Ok((ready >= probes).then_some(()))
        }
    })
    .await?;
    // kubectl logs at scale: BENCH_LOG_REQUESTS reads of a probe pod's log through the
    // apiserver (which dials the hollow node's kubelet API with its client certificate), one at
    // a time, timed from request to the whole body.
    let log_requests = env_or("BENCH_LOG_REQUESTS", 200usize);
    let mut log_lat = Vec::with_capacity(log_requests);
    for i in 0..log_requests {
        let name = format!("probe-{}", i % probes.max(1));
        let t = Instant::now();
        let text = probe_api
            .logs(&name, &kube::api::LogParams::default())
            .await?;
        log_lat.push(t.elapsed().as_secs_f64());
        if !text.contains("started on hollow node") {
            return Err(format!("log of {name} is not the hollow container's: {text:?}").into());
        }
    }
    log_lat.sort_by(f64::total_cmp);
    // kubectl top pods -A: the aggregator asks hollow-node's metrics.k8s.io for every pod.
    e2e::metrics_api::register(&client, metrics_port).await?;
    e2e::metrics_api::wait_available(&client, Duration::from_secs(60)).await?;
    // Available is set before every apiserver routes the group: wait for a first answer.
    let kc = cp.kubeconfig();
    e2e::wait_for(
        Duration::from_secs(60),
        "a first kubectl top pods -A",
        || {
            let kc = kc.clone();
            async move {
                let out = tokio::process::Command::new("kubectl")
                    .env("KUBECONFIG", kc)
                    .args(["top", "pods", "-A", "--no-headers"])
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .map_err(|e| e2e::Error::Binaries(format!("kubectl: {e}")))?;
                Ok(out.status.success().then_some(()))
            }
        },
    )
    .await?;
    let top_requests = env_or("BENCH_TOP_REQUESTS", 10usize);
    let mut top_lat = Vec::with_capacity(top_requests);
    let mut top_rows = 0;
    for _ in 0..top_requests {
        let t = Instant::now();
        let out = Command::new("kubectl")
            .env("KUBECONFIG", cp.kubeconfig())
            .args(["top", "pods", "-A", "--no-headers"])
            .stdin(Stdio::null())
            .output()?;
        top_lat.push(t.elapsed().as_secs_f64());
        if !out.status.success() {
            return Err(format!(
                "kubectl top pods -A: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        top_rows = String::from_utf8_lossy(&out.stdout).lines().count();
    }
    top_lat.sort_by(f64::total_cmp);
    // Full scrapes of every node's /metrics/resource, as metrics-server makes them.
    let mut scrapes = Vec::new();
    if scrape_rounds > 0 {
        let clients = scrape::clients(&cp.kubeconfig(), kubelet_base, nodes)
            .await
            .map_err(|e| e.to_string())?;
        for r in 0..scrape_rounds {
            let before = cpu_by_process(&cp);
            let round = scrape::round(&clients).await.map_err(|e| e.to_string())?;
            println!(
                "cores used during scrape round {}: {}",
                r + 1,
                core_shares(&before, &cpu_by_process(&cp), round.0)
            );
            scrapes.push(round);
        }
    }
    node_watch.abort();
    let nodes_not_ready = not_ready.lock().map(|s| s.len()).unwrap_or(0);
    let own = http_get(addr, "/metrics").await;
    let own_hist: Vec<String> = [
        "hollow_node_bind_to_running_seconds",
        "hollow_node_queue_wait_seconds",
        "hollow_node_api_request_duration_seconds",
        "hollow_node_lease_lateness_seconds",
    ]
    .iter()
    .flat_map(|name| histogram_summary(&own, name))
    .chain(
        own.lines()
            .filter(|l| {
                l.starts_with("hollow_node_api_errors_total")
                    || l.starts_with("hollow_node_lease_lateness_max_milliseconds")
                    || l.starts_with("hollow_node_registration_failures_total")
            })
            .map(str::to_string),
    )
    .collect();
    watch.abort();

    let (mut lat, mut probe_lat): (Vec<f64>, Vec<f64>) = {
        let t = timeline.lock().map_err(|_| "timeline lock")?;
        let all: Vec<(bool, f64)> = t
            .ready
            .iter()
            .filter_map(|(name, r)| {
                Some((
                    name.starts_with("probe-"),
                    r.saturating_duration_since(*t.bound.get(name)?)
                        .as_secs_f64(),
                ))
            })
            .collect();
        (
            all.iter().filter(|(p, _)| !p).map(|(_, l)| *l).collect(),
            all.iter().filter(|(p, _)| *p).map(|(_, l)| *l).collect(),
        )
    };
    // For a look at how latency moves over the ramp: seconds after the Deployments were
    // created at which the pod was seen bound, and its bind→Ready latency.
    if let Ok(path) = std::env::var("BENCH_DUMP")
        && let Ok(t) = timeline.lock()
    {
        let mut rows: Vec<(f64, f64)> = t
            .ready
            .iter()
            .filter(|(name, _)| !name.starts_with("probe-"))
            .filter_map(|(name, r)| {
                let b = t.bound.get(name)?;
                Some((
                    b.saturating_duration_since(t_pods).as_secs_f64(),
                    r.saturating_duration_since(*b).as_secs_f64(),
                ))
            })
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let csv: String = rows
            .iter()
            .map(|(b, l)| format!("{b:.3},{l:.3}\n"))
            .collect();
        std::fs::write(&path, format!("bound_s,latency_s\n{csv}"))?;
        println!("per-pod ramp timeline written to {path}");
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    probe_lat.sort_by(|a, b| a.total_cmp(b));

    // kubemark side by side: each in its own mount namespace with a private /tmp.
    let mut km_rss = Vec::new();
    if kubemarks > 0 {
        let km = cp.bin_dir().join("kubemark");
        let mut procs = Vec::new();
        for i in 0..kubemarks {
            let script = format!(
                // The kubeconfig lives under /tmp: read it before the tmpfs hides it.
                "kc=\"$(cat {1})\" && mount -t tmpfs tmpfs /tmp && printf '%s' \"$kc\" > /tmp/kubeconfig && exec {0} --morph=kubelet --name=kubemark-{i} --kubeconfig=/tmp/kubeconfig --kubelet-port={2} --kubelet-read-only-port=0 --v=0",
                km.display(),
                cp.kubeconfig().display(),
                e2e::free_port(),
            );
            let log = std::fs::File::create(cp.dir().join(format!("kubemark-{i}.log")))?;
            let child = Command::new("unshare")
                .args(["-m", "--propagation", "private", "sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()?;
            procs.push(Proc(child));
        }
        let names: Vec<String> = (0..kubemarks).map(|i| format!("kubemark-{i}")).collect();
        let selector = format!("kubernetes.io/hostname in ({})", names.join(","));
        match wait_nodes(&client, &selector, kubemarks, Duration::from_secs(120)).await {
            Ok(()) => {
                tokio::time::sleep(Duration::from_secs(20)).await;
                for p in &procs {
                    km_rss.push(rss_mb(p.0.id()));
                }
            }
            Err(e) => {
                println!("kubemark nodes did not become Ready: {e}");
                let log =
                    std::fs::read_to_string(cp.dir().join("kubemark-0.log")).unwrap_or_default();
                for l in log
                    .lines()
                    .filter(|l| l.starts_with('E') || l.starts_with('F') || l.starts_with("panic"))
                    .take(15)
                {
                    println!("  kubemark-0: {l}");
                }
            }
        }
    }
    let km_avg = if km_rss.is_empty() {
        f64::NAN
    } else {
        km_rss.iter().sum::<f64>() / km_rss.len() as f64
    };

    println!();
    println!("| metric | value | target |");
    println!("|---|---|---|");
    println!("| nodes / pods | {nodes} / {pods} | 2000 / 20000 |");
    println!("| hollow-node RSS at steady state | {rss:.0} MB (peak {hwm:.0} MB) | ≤ 200 MB |");
    println!(
        "| hollow-node RSS per node | {:.3} MB | |",
        rss / nodes.max(1) as f64
    );
    for (i, (total, lat, seen)) in scrapes.iter().enumerate() {
        let what = if i == 0 {
            "first, with TLS handshakes"
        } else {
            "kept connections"
        };
        println!(
            "| full scrape of {nodes} nodes' /metrics/resource ({what}): whole / per node p50 / p99 | {total:.3} s / {:.1} ms / {:.1} ms ({seen} pods decoded) | ≤ 2 s |",
            pct(lat, 0.5) * 1000.0,
            pct(lat, 0.99) * 1000.0,
        );
    }
    println!("| hollow-node CPU at steady state | {cpu_core:.3} core | ≤ 0.2 core |");
    println!(
        "| bind→Running during the ramp (client watch) p50 / p99 / max | {:.3} s / {:.3} s / {:.3} s (n={}) | p99 ≤ 1 s |",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len()
    );
    println!(
        "| bind→Running at steady state, {probes} pods at {rate}/s, p50 / p99 / max | {:.3} s / {:.3} s / {:.3} s (n={}) | p99 ≤ 1 s |",
        pct(&probe_lat, 0.5),
        pct(&probe_lat, 0.99),
        probe_lat.last().copied().unwrap_or(f64::NAN),
        probe_lat.len()
    );
    println!(
        "| kubectl logs through the apiserver, one at a time, p50 / p99 / max | {:.1} ms / {:.1} ms / {:.1} ms (n={}) | p99 ≤ 50 ms |",
        pct(&log_lat, 0.5) * 1000.0,
        pct(&log_lat, 0.99) * 1000.0,
        log_lat.last().copied().unwrap_or(f64::NAN) * 1000.0,
        log_lat.len()
    );
    println!(
        "| kubectl top pods -A ({top_rows} pods listed), whole command, p50 / max | {:.2} s / {:.2} s (n={}) | ≤ 1 s |",
        pct(&top_lat, 0.5),
        top_lat.last().copied().unwrap_or(f64::NAN),
        top_lat.len()
    );
    println!("| nodes seen not Ready after all were Ready | {nodes_not_ready} | 0 |");
    println!(
        "| oldest Lease past its renew time during the ramp, max / p99 of 1 s samples | {:.1} s / {:.1} s (n={}) | max ≤ 15 s |",
        lease_late.last().copied().unwrap_or(f64::NAN),
        pct(&lease_late, 0.99),
        lease_late.len()
    );
    println!(
        "| API requests/s at steady state | {steady_rps:.1} | leases: {:.0}/s |",
        nodes as f64 / 10.0
    );
    println!(
        "| API requests/s during the pod ramp | {:.1} | |",
        req_ramp / ramp.as_secs_f64()
    );
    println!(
        "| nodes Ready after start | {:.1} s | |",
        t_nodes.as_secs_f64()
    );
    println!(
        "| pods Ready after create | {:.1} s | (control plane bound) |",
        ramp.as_secs_f64()
    );
    println!("| kubemark RSS per node | {km_avg:.0} MB ({km_rss:?}) | |");
    println!(
        "| RSS per node, kubemark / hollow-node | {:.0}x | |",
        km_avg / (rss / nodes.max(1) as f64)
    );
    println!();
    println!(
        "hollow-node's own view over the whole run (bind→Running: first seen bound → Ready written):"
    );
    for l in own_hist {
        println!("  {l}");
    }
    drop(hollow);
    Ok(())
}
