//! Extender benchmark (`cargo bench -p scheduler --bench extender`), numbers as a client sees them:
//! 1. filter latency p50/p99 for 5,000 node names (nodeCacheCapable), over HTTP on loopback,
//!    the server on a single-thread runtime (one core);
//! 2. requests/s that one server core answers;
//! 3. against the real control plane (e2e harness, kube-scheduler 1.20), at 45 and 5,000 nodes:
//!    time to schedule 5,000 pods with no placement, with the extender, and in affinity mode
//!    (webhook, no extender), interleaved over MOCK_KIND_BENCH_RUNS rounds (5): medians,
//!    spreads, CPU per pod of each process, ratios per round (`cluster.rs`).
//!
//! Sizes from the environment: MOCK_KIND_BENCH_NODES (5000), MOCK_KIND_BENCH_LATENCY_REQUESTS
//! (2000), MOCK_KIND_BENCH_RPS_NODES (100), MOCK_KIND_BENCH_RPS_SECONDS (3),
//! MOCK_KIND_BENCH_RPS_CONNECTIONS (16), MOCK_KIND_BENCH_PODS (5000), MOCK_KIND_BENCH_RUNS (5),
//! MOCK_KIND_BENCH_CLUSTER_NODES (45,5000), MOCK_KIND_BENCH_CLUSTER (1; 0 skips part 3).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use axum::body::Bytes;
use e2e::bench_env::env_or;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use scheduler::{Config, Service};

#[path = "extender/cluster.rs"]
mod cluster;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

type Http = HttpClient<HttpConnector, Full<Bytes>>;

/// A synced service with `nodes` nodes: all spoofed but 10 real ones, like a hollow cluster.
fn service(nodes: usize) -> (Service, Vec<String>) {
    let svc = Service::new();
    let mut names = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let (name, spoofed) = if i < 10 {
            (format!("kind-worker-{i}"), None)
        } else {
            (format!("hollow-node-{i:05}"), Some("true"))
        };
        svc.cache.apply_node(&name, spoofed);
        names.push(name);
    }
    svc.cache
        .apply_namespace("team-a", Some("true"), Some("db-0,web-.*"));
    svc.cache.apply_namespace("plain", None, None);
    svc.cache.set_namespaces_synced();
    svc.cache.set_nodes_synced();
    (svc, names)
}

/// An ExtenderArgs body as kube-scheduler 1.20 sends it in nodeCacheCapable mode.
fn filter_body(namespace: &str, pod: &str, nodes: &[String]) -> Bytes {
    let fixture = include_str!("../tests/data/filter-node-names.json");
    let mut args: Value = serde_json::from_str(fixture).unwrap_or(Value::Null);
    args["Pod"]["metadata"]["namespace"] = json!(namespace);
    args["Pod"]["metadata"]["name"] = json!(pod);
    args["NodeNames"] = json!(nodes);
    Bytes::from(args.to_string())
}

/// Serves the extender on its own thread with a single-thread runtime: one core at most.
fn start_server(
    svc: Service,
) -> Result<(
    std::net::SocketAddr,
    CancellationToken,
    std::thread::JoinHandle<()>,
)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let token = CancellationToken::new();
    let stop = token.clone();
    let thread = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("server runtime: {e}");
                return;
            }
        };
        let config = Config::new(addr);
        let app = svc.app();
        if let Err(e) = rt.block_on(scheduler::serve_listener(
            &config,
            listener,
            app,
            Default::default(),
            stop,
        )) {
            eprintln!("server: {e}");
        }
    });
    Ok((addr, token, thread))
}

async fn post(client: &Http, url: &str, body: Bytes) -> Result<usize> {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let resp = client.request(req).await?;
    if resp.status() != http::StatusCode::OK {
        bail!("{url}: status {}", resp.status());
    }
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok(bytes.len())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn latency(
    client: &Http,
    url: &str,
    body: Bytes,
    n: usize,
) -> Result<(Duration, Duration, usize)> {
    let mut size = 0;
    for _ in 0..(n / 10).max(20) {
        size = post(client, url, body.clone()).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        post(client, url, body.clone()).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99), size))
}

async fn requests_per_second(
    client: &Http,
    url: &str,
    body: Bytes,
    connections: usize,
    seconds: f64,
) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let workers = (0..connections).map(|_| {
        let (client, url, body, done) =
            (client.clone(), url.to_string(), body.clone(), done.clone());
        async move {
            while Instant::now() < deadline {
                post(&client, &url, body.clone()).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    for r in futures::future::join_all(workers).await {
        r?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn row(what: &str, got: String, target: &str, ok: Option<bool>) {
    let verdict = match ok {
        Some(true) => "ok",
        Some(false) => "MISSED",
        None => "",
    };
    println!("{what:<58} {got:>14}   {target:<14} {verdict}");
}

async fn in_process() -> Result<()> {
    let nodes = env_or("MOCK_KIND_BENCH_NODES", 5000usize);
    let n = env_or("MOCK_KIND_BENCH_LATENCY_REQUESTS", 2000usize);
    let rps_nodes = env_or("MOCK_KIND_BENCH_RPS_NODES", 100usize);
    let rps_seconds = env_or("MOCK_KIND_BENCH_RPS_SECONDS", 3.0f64);
    let connections = env_or("MOCK_KIND_BENCH_RPS_CONNECTIONS", 16usize);

    let (svc, names) = service(nodes);
    let state = svc.state.clone();
    println!(
        "\n== filter decision in-process (decode + rules + encode, no HTTP), {nodes} nodes =="
    );
    for (what, ns) in [("spoofed-namespace pod", "team-a"), ("plain pod", "plain")] {
        let body = filter_body(ns, "app-1", &names);
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let t = Instant::now();
            scheduler::server::answer_filter(&state, &body)
                .map_err(|f| anyhow::anyhow!(f.message))?;
            if i >= n / 10 {
                samples.push(t.elapsed());
            }
        }
        samples.sort();
        row(
            &format!("p50, {what}"),
            ms(percentile(&samples, 0.5)),
            "",
            None,
        );
        row(
            &format!("p99, {what}"),
            ms(percentile(&samples, 0.99)),
            "",
            None,
        );
    }
    let (addr, stop, thread) = start_server(svc)?;
    let url = format!("http://{addr}/filter");
    let client: Http = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    e2e_free_wait(&client, &url).await?;

    println!(
        "\n== filter over HTTP, server on one single-thread runtime, {nodes} nodes (10 real) =="
    );
    let spoofed_pod = filter_body("team-a", "app-1", &names);
    let (p50, p99, size) = latency(&client, &url, spoofed_pod.clone(), n).await?;
    row(
        &format!(
            "p50, spoofed-namespace pod ({} pass, {size} B reply)",
            nodes.saturating_sub(10)
        ),
        ms(p50),
        "",
        None,
    );
    row(
        "p99, spoofed-namespace pod",
        ms(p99),
        "<= 1 ms",
        Some(p99 <= Duration::from_millis(1)),
    );
    let plain_pod = filter_body("plain", "app-1", &names);
    let (p50, p99, size) = latency(&client, &url, plain_pod, n).await?;
    row(
        &format!(
            "p50, plain pod ({} rejected with reasons, {size} B reply)",
            nodes.saturating_sub(10)
        ),
        ms(p50),
        "",
        None,
    );
    row(
        "p99, plain pod (worst case: every node rejected)",
        ms(p99),
        "",
        None,
    );

    let small: Vec<String> = names.iter().skip(10).take(rps_nodes).cloned().collect();
    let rps = requests_per_second(
        &client,
        &url,
        filter_body("team-a", "app-1", &small),
        connections,
        rps_seconds,
    )
    .await?;
    row(
        &format!("req/s on one core, {rps_nodes} nodes/request, {connections} conns"),
        format!("{rps:.0}"),
        ">= 20000",
        Some(rps >= 20_000.0),
    );
    let rps_big = requests_per_second(&client, &url, spoofed_pod, connections, rps_seconds).await?;
    row(
        &format!("req/s on one core, {nodes} nodes/request"),
        format!("{rps_big:.0}"),
        "",
        None,
    );
    stop.cancel();
    let _ = thread.join();
    Ok(())
}

async fn e2e_free_wait(client: &Http, url: &str) -> Result<()> {
    let body = filter_body("team-a", "warmup", &["hollow-node-00010".to_string()]);
    for _ in 0..100 {
        if post(client, url, body.clone()).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the extender at {url} did not answer")
}

fn main() -> Result<()> {
    telemetry::install_crypto_provider();
    // The client side: one thread, so the server thread keeps the other core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(in_process())?;
    if env_or("MOCK_KIND_BENCH_CLUSTER", 1u8) != 0 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(cluster::cluster())?;
    }
    Ok(())
}
