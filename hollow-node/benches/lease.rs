//! What a Lease renewal costs the control plane, protobuf PUT against JSON merge patch
//! (harness = false; `cargo bench -p hollow-node --bench lease`).
//!
//! One real control plane (etcd, kube-apiserver 1.20.2, controller-manager); hollow-node runs
//! in this process with N nodes renewing every interval, first with one encoding, then the
//! other, for MOCK_KIND_BENCH_RUNS rounds (the order turns each round). Each side waits one
//! interval for its renewals to settle, then counts the renewals that landed (its own
//! `hollow_node_api_requests_total` of the Lease lane) and the CPU of kube-apiserver and etcd
//! over a window. Printed: CPU ms per renewal of each, median (min–max) over the rounds, and
//! the median of the per-round ratios json / protobuf.
//!
//! Env: MOCK_KIND_BENCH_LEASE_NODES (500), MOCK_KIND_BENCH_LEASE_INTERVAL (5, seconds),
//! MOCK_KIND_BENCH_LEASE_WINDOW (30, seconds), MOCK_KIND_BENCH_RUNS (3).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use e2e::bench_env::env_or;
use hollow_node::lease::LeaseEncoding;
use tokio_util::sync::CancellationToken;

struct Side {
    /// CPU ms per renewal: kube-apiserver, etcd.
    per_renewal: [f64; 2],
    rate: f64,
}

async fn side(
    cp: &e2e::ControlPlane,
    encoding: LeaseEncoding,
    nodes: usize,
    interval: Duration,
    window: Duration,
) -> Side {
    let mut config = hollow_node::Config::new("lb", nodes);
    config.kubeconfig = Some(cp.kubeconfig());
    config.listen = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    config.lease.renew_interval = interval;
    config.lease_encoding = encoding;
    let addr = config.listen;
    let token = CancellationToken::new();
    let join = tokio::spawn(hollow_node::run(config, token.clone()));
    e2e::wait_for(
        Duration::from_secs(300),
        "every node Ready",
        || async move {
            let (_, body) = common::get(addr, "/metrics").await;
            let ready = common::metric(&body, "hollow_node_nodes_ready ");
            Ok((ready == Some(nodes as f64)).then_some(()))
        },
    )
    .await
    .expect("hollow-node up");
    // Registration and the first round of renewals (patches until versions are known).
    tokio::time::sleep(interval * 2 + Duration::from_secs(2)).await;
    let cpu = |name| cp.pid(name).map_or(0.0, e2e::procfs::cpu_seconds);
    let (a0, e0, r0) = (
        cpu("kube-apiserver"),
        cpu("etcd"),
        common::lease_requests(addr, &["PUT", "PATCH"], "Ok").await,
    );
    tokio::time::sleep(window).await;
    let (a1, e1, r1) = (
        cpu("kube-apiserver"),
        cpu("etcd"),
        common::lease_requests(addr, &["PUT", "PATCH"], "Ok").await,
    );
    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(60), join).await;
    let n = (r1 - r0).max(1.0);
    Side {
        per_renewal: [(a1 - a0) * 1e3 / n, (e1 - e0) * 1e3 / n],
        rate: n / window.as_secs_f64(),
    }
}

fn main() {
    telemetry::install_crypto_provider();
    let nodes: usize = env_or("MOCK_KIND_BENCH_LEASE_NODES", 500);
    let interval = Duration::from_secs(env_or("MOCK_KIND_BENCH_LEASE_INTERVAL", 5u64).max(1));
    let window = Duration::from_secs(env_or("MOCK_KIND_BENCH_LEASE_WINDOW", 30u64).max(5));
    let runs: usize = env_or("MOCK_KIND_BENCH_RUNS", 3usize).clamp(1, 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cp = e2e::ControlPlane::start(e2e::Options {
            scheduler: false,
            ..Default::default()
        })
        .await
        .expect("control plane");
        let encodings = [LeaseEncoding::Protobuf, LeaseEncoding::Json];
        let mut sides: [Vec<Side>; 2] = [Vec::new(), Vec::new()];
        for run in 0..runs {
            for k in 0..2 {
                let i = (k + run) % 2;
                let s = side(&cp, encodings[i], nodes, interval, window).await;
                eprintln!(
                    "  run {run} {:?}: {:.0} renewals/s, apiserver {:.2} ms, etcd {:.2} ms a renewal",
                    encodings[i], s.rate, s.per_renewal[0], s.per_renewal[1]
                );
                sides[i].push(s);
            }
        }
        println!(
            "lease renewals, {nodes} nodes every {} s, {runs} interleaved run(s) of {} s per side",
            interval.as_secs(),
            window.as_secs()
        );
        for (i, name) in ["protobuf PUT", "json merge patch"].iter().enumerate() {
            for (p, process) in ["kube-apiserver", "etcd"].iter().enumerate() {
                let (m, lo, hi) =
                    e2e::stats::median_and_spread(sides[i].iter().map(|s| s.per_renewal[p]).collect());
                println!(
                    "  {name:<17} {process:<15} CPU ms a renewal {m:.3} ({lo:.3}-{hi:.3})"
                );
            }
        }
        let (m, lo, hi) = e2e::stats::median_and_spread(
            sides[0]
                .iter()
                .zip(&sides[1])
                .map(|(pb, js)| js.per_renewal[0] / pb.per_renewal[0].max(1e-9))
                .collect(),
        );
        println!("  kube-apiserver CPU a renewal, json / protobuf (per run): {m:.2} ({lo:.2}-{hi:.2})");
    });
}
