//! Admission benchmark (harness = false; `cargo bench -p webhook --bench admission`).
//!
//! 1. Latency p50/p99 over TLS at a fixed arrival rate (open loop; latency counted from the
//!    scheduled send time, so a stall is not hidden by the client waiting).
//! 2. Most admissions per second with the server on a single-thread runtime (one core).
//! 3. Time to create N pods through the real kube-apiserver with vs without the webhook, in
//!    one run (batches alternate so drift hits both sides alike): as a user creates them, a
//!    Deployment whose pods the real ReplicaSet controller creates at its client QPS; and as a
//!    bare client racing the apiserver, where a third side (pods the webhook answers without a
//!    patch) and the CPU per pod of each process show what the apiserver's side of a webhook
//!    call costs.
//!
//! Env: MOCK_KIND_BENCH_RATE (1000), MOCK_KIND_BENCH_SECONDS (10), MOCK_KIND_BENCH_MAX_SECONDS (5),
//! MOCK_KIND_BENCH_PODS (1000), MOCK_KIND_BENCH_CONTROLLER_QPS (20,200,1000),
//! MOCK_KIND_BENCH_CONCURRENCY (16), MOCK_KIND_BENCH_POD_RATE (unset: 0 = unthrottled, then
//! 100/s), MOCK_KIND_BENCH_SKIP_APISERVER, MOCK_KIND_BENCH_ONLY_APISERVER,
//! MOCK_KIND_BENCH_PROFILE (runasnonroot; `openshift-restricted-v2` measures parts 1 and 2 with
//! that profile, reading namespace `team-a` from a real apiserver started for it; the pod
//! comparison of part 3 is not made for it).

#[path = "../tests/common/mod.rs"]
mod common;
mod shared;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use shared::*;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use webhook::{CertSource, Config, Strategy};

fn file_config(dir: &std::path::Path, addr: SocketAddr) -> Config {
    Config {
        listen: addr,
        strategy: Strategy::Pod,
        profile: webhook::Profile::RunAsNonRoot,
        placement: webhook::PlacementMode::None,
        namespace: "mock-kind".into(),
        exclude_namespaces: vec!["kube-system".into()],
        pod_uid_min: 1_000_000_000,
        pod_uid_max: 1_999_999_999,
        certs: CertSource::Files {
            cert: dir.join(certs::TLS_CRT),
            key: dir.join(certs::TLS_KEY),
        },
        cert_check_interval: Duration::from_secs(60),
        kubeconfig: None,
        server: bench_limits(),
        apiserver_deadline: Duration::from_secs(4),
        uid_block_repair: Duration::ZERO,
        clock: webhook::tls::system_clock(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Pool {
    addr: SocketAddr,
    ca: String,
    idle: Mutex<Vec<Sender>>,
}

impl Pool {
    async fn get(&self) -> Sender {
        if let Some(s) = self.idle.lock().await.pop() {
            return s;
        }
        http1(
            connect(self.addr, &self.ca, "127.0.0.1")
                .await
                .expect("connect"),
        )
        .await
    }
    async fn put(&self, s: Sender) {
        self.idle.lock().await.push(s);
    }
}

/// Latencies, the p99 of how late the dispatcher fired, and the number of non-200 answers.
async fn open_loop(
    addr: SocketAddr,
    ca: &str,
    rate: u64,
    seconds: u64,
    body: Arc<Vec<u8>>,
) -> (Vec<Duration>, Duration, u64) {
    let pool = Arc::new(Pool {
        addr,
        ca: ca.to_owned(),
        idle: Mutex::new(Vec::new()),
    });
    // Warm a few connections (handshakes are not what is measured).
    for _ in 0..16 {
        let s = pool.get().await;
        pool.put(s).await;
    }
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let errors = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut lags = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        // Tokio's timer fires up to ~1 ms late; that lag is the client's, not the server's, so
        // latency runs from the actual dispatch (the dispatcher never waits for answers, so a
        // slow server cannot hold sends back). The lag is reported separately.
        let fired = tokio::time::Instant::now();
        lags.push(fired - scheduled);
        let (pool, body, errors) = (pool.clone(), body.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = pool.get().await;
            let (status, _) = request(&mut s, "POST", "/mutate", body.to_vec()).await;
            let latency = fired.elapsed();
            if status != 200 {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            pool.put(s).await;
            latency
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(d) = t.await {
            lat.push(d);
        }
    }
    lat.sort();
    lags.sort();
    (lat, percentile(&lags, 0.99), errors.load(Ordering::Relaxed))
}

async fn closed_loop(
    addr: SocketAddr,
    ca: &str,
    conns: usize,
    seconds: u64,
    body: Arc<Vec<u8>>,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut s = http1(connect(addr, ca, "127.0.0.1").await.expect("connect")).await;
        let (done, body) = (done.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let (status, _) = request(&mut s, "POST", "/mutate", body.to_vec()).await;
                if status == 200 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// One side of the comparison: a namespace and the kind of pod created in it, with the time
/// and CPU (apiserver, etcd, this process) its batches took.
struct Side {
    ns: &'static str,
    non_root: bool,
    elapsed: Duration,
    cpu: [f64; 3],
}

impl Side {
    fn new(ns: &'static str, non_root: bool) -> Self {
        Side {
            ns,
            non_root,
            elapsed: Duration::ZERO,
            cpu: [0.0; 3],
        }
    }

    fn label(&self) -> &'static str {
        match (self.ns, self.non_root) {
            ("without-webhook", _) => "without webhook",
            (_, true) => "with webhook (patched)",
            (_, false) => "with webhook (called, no patch)",
        }
    }

    /// Adds one batch: its time and the CPU readings taken around it.
    fn add(&mut self, elapsed: Duration, before: [f64; 3], after: [f64; 3]) {
        self.elapsed += elapsed;
        for ((total, b), a) in self.cpu.iter_mut().zip(before).zip(after) {
            *total += a - b;
        }
    }

    /// Two rows: the side's time for `what`, and its CPU per pod by process (`processes`).
    fn print(&self, what: &str, pods: usize, processes: &str) {
        println!(
            "{:<52} {:>11.2}s {:>12}",
            what,
            self.elapsed.as_secs_f64(),
            ""
        );
        let [a, b, c] = self.cpu.map(|cpu| cpu / pods as f64 * 1e3);
        println!(
            "{:<52} {:>12} {:>12}",
            format!("  CPU ms/pod: {processes}"),
            format!("{a:.2}/{b:.2}/{c:.2}"),
            ""
        );
    }
}

fn print_checked(checked: bool) {
    println!(
        "{:<52} {:>12} {:>12}",
        "webhook in the path for one side only", checked, "true"
    );
}

/// A control plane with the webhook in its path: namespaces `with-webhook` and
/// `without-webhook` (excluded by the configuration's namespaceSelector), the webhook serving
/// on its own thread, and its caBundle in place.
struct Rig {
    cp: e2e::ControlPlane,
    client: kube::Client,
    addr: SocketAddr,
    shutdown: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

async fn rig(options: e2e::Options) -> Rig {
    let cp = e2e::ControlPlane::start(options)
        .await
        .expect("control plane");
    let client = cp.client();
    create_namespaces(
        &client,
        &[
            ("mock-kind", json!({})),
            ("with-webhook", json!({})),
            (
                "without-webhook",
                json!({"mock-kind.io/webhook": "disabled"}),
            ),
        ],
    )
    .await;
    let port = e2e::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mwc = deployed_configuration(&format!("https://127.0.0.1:{port}/mutate"));
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(mwc).expect("mwc");
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mwc)
        .await
        .expect("create webhook configuration");
    let config = cluster_config(&cp.kubeconfig(), webhook::Profile::RunAsNonRoot, addr);
    // Its own thread and runtime, as its own process would be (main.rs: one worker per core),
    // not behind the client's work.
    let (shutdown, thread) = serve_on_thread(config, 2);
    // Ready once a runAsNonRoot pod comes back patched (caBundle set, cache synced).
    wait_in_path(&client, "with-webhook", |p| {
        p.spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.run_as_user)
            .is_some()
    })
    .await;
    Rig {
        cp,
        client,
        addr,
        shutdown,
        thread,
    }
}

impl Rig {
    /// Whether the webhook patched the pods of `with-webhook` and left `without-webhook` alone
    /// (one pod of each, by the `bench=webhook` label), and prints what it says of its own work.
    async fn finish(self) -> bool {
        let first = |ns: &'static str| {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            async move {
                let list = api
                    .list(
                        &kube::api::ListParams::default()
                            .labels("bench=webhook")
                            .limit(1),
                    )
                    .await
                    .ok()?;
                let pod = list.items.into_iter().next()?;
                Some(pod.spec?.security_context?.run_as_user.is_some())
            }
        };
        let checked = first("with-webhook").await == Some(true)
            && first("without-webhook").await == Some(false);
        // The webhook's own view: admissions answered and their mean service time.
        let ca = serving_bundle(&self.client).await.ca_pem;
        let mut s = http1(connect(self.addr, &ca, "127.0.0.1").await.expect("connect")).await;
        let (_, metrics) = request(&mut s, "GET", "/metrics", Vec::new()).await;
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        let value = |name: &str| -> f64 {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let count = value("mock_kind_webhook_admission_duration_seconds_count");
        let sum = value("mock_kind_webhook_admission_duration_seconds_sum");
        println!(
            "(webhook served {count} admissions during the run, mean service time {:.3} ms)",
            sum / count * 1e3
        );
        self.shutdown.cancel();
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        drop(self.cp);
        checked
    }

    /// CPU seconds so far of the apiserver, etcd and the controller-manager (0 when not run).
    fn cpu(&self) -> [f64; 3] {
        ["kube-apiserver", "etcd", "kube-controller-manager"]
            .map(|c| self.cp.pid(c).map(e2e::procfs::cpu_seconds).unwrap_or(0.0))
    }
}

async fn apiserver_ratio(pods: usize, concurrency: usize, rate: u64) -> ([Side; 3], bool) {
    let rig = rig(e2e::Options {
        scheduler: false,
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let client = rig.client.clone();
    // Three sides, in batches that take turns so drift hits all alike. CPU is read per side
    // for the apiserver, etcd and this process (the client and the webhook's thread): on a
    // CPU-bound machine the ratio is a ratio of CPU spent per pod.
    let me = std::process::id();
    let cpu = || {
        let [apiserver, etcd, _] = rig.cpu();
        [apiserver, etcd, e2e::procfs::cpu_seconds(me)]
    };
    let mut sides = [
        Side::new("without-webhook", true),
        Side::new("with-webhook", true),
        Side::new("with-webhook", false),
    ];
    let warm = 50.min(pods);
    for s in &sides {
        let from = if s.non_root { 1_000_000 } else { 2_000_000 };
        create_pods(&client, s.ns, s.non_root, from, warm, concurrency, 0).await;
    }
    let batch = (pods / 4).max(1);
    let mut done = 0;
    while done < pods {
        let n = batch.min(pods - done);
        for s in &mut sides {
            let from = if s.non_root { done } else { 3_000_000 + done };
            let before = cpu();
            let elapsed = create_pods(&client, s.ns, s.non_root, from, n, concurrency, rate).await;
            s.add(elapsed, before, cpu());
        }
        done += n;
    }
    let checked = rig.finish().await;
    (sides, checked)
}

fn main() {
    telemetry::install_crypto_provider();
    let rate: u64 = env("MOCK_KIND_BENCH_RATE", 1000);
    let seconds: u64 = env("MOCK_KIND_BENCH_SECONDS", 10);
    let max_seconds: u64 = env("MOCK_KIND_BENCH_MAX_SECONDS", 5);
    let pods: usize = env("MOCK_KIND_BENCH_PODS", 1000);
    let concurrency: usize = env("MOCK_KIND_BENCH_CONCURRENCY", 16);
    // 0: as fast as the apiserver takes them; e.g. 100: a QPS-limited controller. Unset: both.
    let pod_rates: Vec<u64> = match std::env::var("MOCK_KIND_BENCH_POD_RATE") {
        Ok(v) => vec![v.parse().unwrap_or(0)],
        Err(_) => vec![0, 100],
    };
    // The ReplicaSet controller's client QPS for the Deployment comparison: 20 is the
    // controller-manager's default (and kind's), 1,000 makes it a creation storm.
    let controller_qps: Vec<u32> = std::env::var("MOCK_KIND_BENCH_CONTROLLER_QPS")
        .unwrap_or_else(|_| "20,200,1000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let skip_apiserver = std::env::var_os("MOCK_KIND_BENCH_SKIP_APISERVER").is_some();

    let only_apiserver = std::env::var_os("MOCK_KIND_BENCH_ONLY_APISERVER").is_some();
    let restricted =
        std::env::var("MOCK_KIND_BENCH_PROFILE").as_deref() == Ok("openshift-restricted-v2");
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = certs::generate(&opts(), SystemTime::now(), None).expect("certs");
    certs::write_files(dir.path(), &bundle).expect("write certs");
    let body = Arc::new(fixture("create_pod_runasnonroot.json"));
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");

    let comparisons = || {
        for &qps in &controller_qps {
            let (sides, checked) = client_rt.block_on(deployment_ratio(pods, qps));
            print_deployment_ratio(pods, qps, &sides, checked);
        }
        for &rate in &pod_rates {
            let (sides, checked) = client_rt.block_on(apiserver_ratio(pods, concurrency, rate));
            print_ratio(pods, concurrency, rate, &sides, checked);
        }
    };
    if only_apiserver {
        comparisons();
        return;
    }
    // restricted-v2 reads the namespace's annotations: a real apiserver (no controller-manager,
    // no scheduler) holds namespace team-a, annotated by the webhook's namespace controller.
    let control_plane = restricted.then(|| client_rt.block_on(restricted_namespace()));
    let config = |addr| {
        let mut c = file_config(dir.path(), addr);
        if let Some(cp) = &control_plane {
            c.profile = webhook::Profile::OpenshiftRestrictedV2;
            c.strategy = Strategy::Namespace;
            c.kubeconfig = Some(cp.kubeconfig().to_path_buf());
        }
        c
    };
    // 1. Open-loop latency, server on a 1-worker runtime (the client has the other core).
    let addr = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    let (stop, thread) = serve_on_thread(config(addr), 1);
    let (lat, lag_p99, errors) = client_rt.block_on(async {
        wait_ready(addr, &bundle.ca_pem).await;
        if let Some(cp) = &control_plane {
            let nss: Api<Namespace> = Api::all(cp.client());
            e2e::wait_for(Duration::from_secs(60), "team-a annotated", || {
                let nss = nss.clone();
                async move {
                    let ann = nss
                        .get("team-a")
                        .await?
                        .metadata
                        .annotations
                        .unwrap_or_default();
                    Ok(ann.contains_key("openshift.io/sa.scc.mcs").then_some(()))
                }
            })
            .await
            .expect("team-a annotated by the namespace controller");
        }
        open_loop(addr, &bundle.ca_pem, rate, seconds, body.clone()).await
    });
    stop.cancel();
    let _ = thread.join();
    let (p50, p99, max) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );

    // 2. Throughput with the server on one current-thread runtime.
    let addr = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    let (stop, thread) = serve_on_thread(config(addr), 0);
    let rps = client_rt.block_on(async {
        wait_ready(addr, &bundle.ca_pem).await;
        closed_loop(addr, &bundle.ca_pem, 32, max_seconds, body.clone()).await
    });
    stop.cancel();
    let _ = thread.join();

    let profile = if restricted {
        "openshift-restricted-v2"
    } else {
        "runasnonroot"
    };
    println!(
        "webhook admission benchmark (TLS, pod CREATE with runAsNonRoot, patched; profile {profile})"
    );
    println!("{:<52} {:>12} {:>12}", "measure", "value", "target");
    println!(
        "{:<52} {:>12} {:>12}",
        format!("requests at {rate}/s for {seconds}s (errors)"),
        format!("{} ({errors})", lat.len()),
        ""
    );
    println!(
        "{:<52} {:>10.3}ms {:>12}",
        "latency p50",
        p50.as_secs_f64() * 1e3,
        ""
    );
    println!(
        "{:<52} {:>10.3}ms {:>12}",
        "latency p99",
        p99.as_secs_f64() * 1e3,
        "<= 2 ms"
    );
    println!(
        "{:<52} {:>10.3}ms {:>12}",
        "latency max",
        max.as_secs_f64() * 1e3,
        ""
    );
    println!(
        "{:<52} {:>10.3}ms {:>12}",
        "client dispatch lag p99 (timer, not counted)",
        lag_p99.as_secs_f64() * 1e3,
        ""
    );
    println!(
        "{:<52} {:>12.0} {:>12}",
        "max admissions/s, server on one core", rps, ""
    );

    if skip_apiserver || restricted {
        println!(
            "(apiserver comparison skipped: MOCK_KIND_BENCH_SKIP_APISERVER or the restricted-v2 profile)"
        );
        return;
    }
    comparisons();
}

/// A control plane with namespaces `mock-kind` and `team-a`; the webhook started on it
/// annotates `team-a` before it turns ready.
async fn restricted_namespace() -> e2e::ControlPlane {
    let cp = e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        controller_manager: false,
        ..Default::default()
    })
    .await
    .expect("control plane");
    let nss: Api<Namespace> = Api::all(cp.client());
    for name in ["mock-kind", "team-a"] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }
    cp
}

/// The user's view: Deployments whose pods the real ReplicaSet controller creates, its client
/// QPS (`qps`) pacing it as it would in a cluster; the two sides take turns in four rounds.
async fn deployment_ratio(pods: usize, qps: u32) -> ([Side; 2], bool) {
    let rig = rig(e2e::Options {
        scheduler: false,
        controller_manager: true,
        client_qps: qps,
        ..Default::default()
    })
    .await;
    let mut sides = [
        Side::new("without-webhook", true),
        Side::new("with-webhook", true),
    ];
    let rounds = 4;
    for round in 0..rounds {
        let n = pods / rounds + usize::from(round < pods % rounds);
        for s in &mut sides {
            let before = rig.cpu();
            let elapsed = deployment_pods(&rig.client, s.ns, &format!("d{round}"), n).await;
            s.add(elapsed, before, rig.cpu());
        }
    }
    let checked = rig.finish().await;
    (sides, checked)
}

fn print_deployment_ratio(pods: usize, qps: u32, sides: &[Side; 2], checked: bool) {
    for s in sides {
        s.print(
            &format!(
                "Deployment of {pods} pods {}, controller QPS {qps}",
                s.label()
            ),
            pods,
            "apiserver / etcd / controller-manager",
        );
    }
    println!(
        "{:<52} {:>12.3} {:>12}",
        format!("ratio (without / with), controller QPS {qps}"),
        sides[0].elapsed.as_secs_f64() / sides[1].elapsed.as_secs_f64(),
        ">= 0.95"
    );
    print_checked(checked);
}

fn print_ratio(pods: usize, concurrency: usize, rate: u64, sides: &[Side; 3], checked: bool) {
    let how = if rate > 0 {
        format!("{concurrency} at a time, {rate}/s")
    } else {
        format!("{concurrency} at a time, unthrottled")
    };
    for s in sides {
        s.print(
            &format!("create {pods} pods {} ({how})", s.label()),
            pods,
            "apiserver / etcd / client+webhook",
        );
    }
    let ratio = |s: &Side| sides[0].elapsed.as_secs_f64() / s.elapsed.as_secs_f64();
    println!(
        "{:<52} {:>12.3} {:>12}",
        "ratio (without / with, patched)",
        ratio(&sides[1]),
        ">= 0.95"
    );
    println!(
        "{:<52} {:>12.3} {:>12}",
        "ratio (without / with, called without a patch)",
        ratio(&sides[2]),
        ""
    );
    print_checked(checked);
}
