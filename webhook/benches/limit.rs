//! Pod creation through the real kube-apiserver: our webhook against the limit for any webhook
//! (harness = false; `cargo bench -p webhook --bench limit`).
//!
//! The apiserver's own cost of calling a webhook and applying a patch is paid by every mutating
//! webhook, so the comparison that says what ours costs is against a webhook that does nothing
//! but answer the same patch: the *limit* side. It runs on the same server setup (`serving`,
//! the same TLS certificate and limits, its own thread with a 2-worker runtime, as ours) and
//! answers every review with the response ours gave for the same pod, only the uid changed.
//! Two namespaces, one per side, each selected by one of two webhook configurations.
//!
//! For each profile (runasnonroot, openshift-restricted-v2), two ways of creating pods:
//! - a Deployment whose pods the real ReplicaSet controller creates at kind's default client
//!   QPS (20), as a user creates them;
//! - a bare client, 16 at a time and unthrottled, racing the apiserver.
//!
//! Each of MOCK_KIND_BENCH_RUNS runs creates a batch on both sides (the order alternates); the
//! run's ratio is limit time / our time (1.0: ours costs nothing the limit does not). Printed:
//! the median ratio with its spread (min–max), and CPU ms per pod of the apiserver, etcd and
//! this process (which holds the client and whichever webhook served that side).
//!
//! Env: MOCK_KIND_BENCH_RUNS (5), MOCK_KIND_BENCH_BATCH (300, Deployment),
//! MOCK_KIND_BENCH_BATCH_UNTHROTTLED (2000), MOCK_KIND_BENCH_CONTROLLER_QPS (20),
//! MOCK_KIND_BENCH_CONCURRENCY (16), MOCK_KIND_BENCH_PROFILES
//! (runasnonroot,openshift-restricted-v2), MOCK_KIND_BENCH_WAYS (deployment,unthrottled).

#[path = "../tests/common/mod.rs"]
mod common;
mod shared;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::PostParams;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::*;
use tokio_util::sync::CancellationToken;
use webhook::Profile;

const OURS: &str = "ours";
const LIMIT: &str = "limit";
const SIDE_LABEL: &str = "bench-side";
const UID_RANGE: &str = "openshift.io/sa.scc.uid-range";

/// The limit webhook's whole state: ours's response, as JSON text around the uid.
struct Canned {
    before_uid: String,
    after_uid: String,
}

#[derive(Deserialize)]
struct Review<'a> {
    #[serde(borrow)]
    request: ReviewRequest<'a>,
}

#[derive(Deserialize)]
struct ReviewRequest<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

async fn canned_answer(
    State(canned): State<Arc<Canned>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match serde_json::from_slice::<Review<'_>>(&body) {
        // A uid is a Kubernetes UID (hex and dashes); quoting it as JSON changes nothing.
        Ok(r) => (
            [(http::header::CONTENT_TYPE, "application/json")],
            format!("{}{}{}", canned.before_uid, r.request.uid, canned.after_uid),
        )
            .into_response(),
        Err(e) => (
            http::StatusCode::BAD_REQUEST,
            format!("not an AdmissionReview: {e}"),
        )
            .into_response(),
    }
}

/// Serves `canned` on `addr` with the webhook's server setup until `shutdown`.
fn limit_on_thread(
    addr: SocketAddr,
    pair: serving::tls::PemPair,
    canned: Canned,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("limit runtime");
        rt.block_on(async move {
            let tls = serving::tls::Reloadable::new(pair).expect("limit tls");
            let listener = std::net::TcpListener::bind(addr).expect("bind limit");
            listener.set_nonblocking(true).expect("nonblocking");
            let app = axum::Router::new()
                .route("/mutate", post(canned_answer))
                .with_state(Arc::new(canned));
            let ready = telemetry::Readiness::default();
            ready.set(true);
            let limits = bench_limits();
            if let Err(e) =
                serving::serve(listener, app, &limits, Some(tls.config()), ready, shutdown).await
            {
                eprintln!("limit webhook: {e}");
            }
        });
    })
}

/// The deployed webhook configuration, pointed at `url` for the namespaces of one side.
fn configuration(name: &str, hook: &str, side: &str, url: &str, ca: Option<&str>) -> Value {
    let mut mwc = deployed_configuration(url);
    mwc["metadata"]["name"] = json!(name);
    let w = &mut mwc["webhooks"][0];
    w["name"] = json!(hook);
    if let Some(ca) = ca {
        w["clientConfig"]["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    w["namespaceSelector"] = json!({"matchLabels": {SIDE_LABEL: side}});
    mwc
}

struct Rig {
    cp: e2e::ControlPlane,
    client: kube::Client,
    stops: Vec<CancellationToken>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

async fn rig(profile: Profile, controller_qps: u32) -> Rig {
    let cp = e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        controller_manager: true,
        client_qps: controller_qps,
        ..Default::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    create_namespaces(
        &client,
        &[
            ("mock-kind", json!({})),
            (OURS, json!({SIDE_LABEL: OURS})),
            (LIMIT, json!({SIDE_LABEL: LIMIT})),
        ],
    )
    .await;
    let nss: Api<Namespace> = Api::all(client.clone());

    // Ours first: it bootstraps the certificate both sides serve.
    let ours = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(configuration(
        "mock-kind-webhook",
        "uids.webhook.mock-kind.io",
        OURS,
        &format!("https://{ours}/mutate"),
        None,
    ))
    .expect("mwc");
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwcs.create(&PostParams::default(), &mwc)
        .await
        .expect("create webhook configuration");
    let (stop_ours, thread_ours) =
        serve_on_thread(cluster_config(&cp.kubeconfig(), profile, ours), 2);
    e2e::wait_for(Duration::from_secs(60), "namespace ours allocated", || {
        let nss = nss.clone();
        async move {
            let ann = nss
                .get(OURS)
                .await?
                .metadata
                .annotations
                .unwrap_or_default();
            Ok(ann.contains_key(UID_RANGE).then_some(()))
        }
    })
    .await
    .expect("our namespace controller annotates ours");
    let bundle = serving_bundle(&client).await;
    wait_ready(ours, &bundle.ca_pem).await;

    // What ours answers for the bench's pod, asked directly; the limit answers that.
    let canned = canned_from(ours, &bundle.ca_pem).await;
    let limit = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    let stop_limit = CancellationToken::new();
    let thread_limit = limit_on_thread(
        limit,
        serving::tls::PemPair {
            cert: bundle.cert_pem.clone(),
            key: bundle.key_pem.clone(),
        },
        canned,
        stop_limit.clone(),
    );
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(configuration(
        "mock-kind-limit",
        "limit.webhook.mock-kind.io",
        LIMIT,
        &format!("https://{limit}/mutate"),
        Some(&bundle.ca_pem),
    ))
    .expect("limit mwc");
    mwcs.create(&PostParams::default(), &mwc)
        .await
        .expect("create limit configuration");
    for ns in [OURS, LIMIT] {
        wait_in_path(&client, ns, patched).await;
    }
    Rig {
        cp,
        client,
        stops: vec![stop_ours, stop_limit],
        threads: vec![thread_ours, thread_limit],
    }
}

/// Whether a webhook gave the pod a UID (both profiles do for the bench's pod).
fn patched(p: &Pod) -> bool {
    let pod_level = p
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.run_as_user)
        .is_some();
    let container_level = p
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.security_context.as_ref())
        .and_then(|s| s.run_as_user)
        .is_some();
    pod_level || container_level
}

/// Asks ours to admit the bench's pod in namespace `ours` and cuts its answer around the uid.
async fn canned_from(addr: SocketAddr, ca: &str) -> Canned {
    const UID: &str = "00000000-0000-0000-0000-00000000beef";
    let pod = serde_json::to_value(pod("canned", true)).expect("pod json");
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": OURS,
            "operation": "CREATE",
            "object": pod,
            "dryRun": false,
        }
    });
    let mut s = http1(connect(addr, ca, "127.0.0.1").await.expect("connect")).await;
    let (status, body) = request(
        &mut s,
        "POST",
        "/mutate",
        serde_json::to_vec(&review).expect("review"),
    )
    .await;
    let text = String::from_utf8(body).expect("utf-8 answer");
    assert_eq!(status, 200, "ours answered {status}: {text}");
    let answer: Value = serde_json::from_str(&text).expect("answer json");
    assert!(
        answer["response"]["patch"].is_string(),
        "ours gave the bench's pod no patch: {text}"
    );
    let (before, after) = text
        .split_once(UID)
        .expect("ours echoes the request's uid once");
    Canned {
        before_uid: before.to_owned(),
        after_uid: after.to_owned(),
    }
}

impl Rig {
    /// CPU seconds so far of the apiserver, etcd and this process.
    fn cpu(&self) -> [f64; 3] {
        let [apiserver, etcd] = ["kube-apiserver", "etcd"]
            .map(|c| self.cp.pid(c).map(e2e::procfs::cpu_seconds).unwrap_or(0.0));
        [
            apiserver,
            etcd,
            e2e::procfs::cpu_seconds(std::process::id()),
        ]
    }

    /// Whether the last pod of each side came out patched.
    async fn check(&self) -> bool {
        let mut ok = true;
        for ns in [OURS, LIMIT] {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let list = api
                .list(&kube::api::ListParams::default().labels("bench=webhook"))
                .await
                .expect("list pods");
            ok &= !list.items.is_empty() && list.items.iter().all(patched);
        }
        ok
    }

    fn stop(self) {
        for s in &self.stops {
            s.cancel();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy)]
enum Way {
    Deployment,
    Unthrottled { concurrency: usize },
}

#[derive(Default)]
struct Tally {
    elapsed: Vec<f64>,
    cpu: [f64; 3],
    pods: usize,
}

async fn batch(rig: &Rig, way: Way, ns: &str, run: usize, n: usize) -> (f64, [f64; 3]) {
    let before = rig.cpu();
    let started = Instant::now();
    match way {
        Way::Deployment => {
            deployment_pods(&rig.client, ns, &format!("d{run}"), n).await;
        }
        Way::Unthrottled { concurrency } => {
            // Names p<run * 100,000 + i>: batches of different runs never share one.
            create_pods(&rig.client, ns, true, run * 100_000, n, concurrency, 0).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = rig.cpu();
    (elapsed, [0, 1, 2].map(|i| after[i] - before[i]))
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

async fn compare(profile: Profile, way: Way, runs: usize, n: usize, qps: u32) -> bool {
    let rig = rig(profile, qps).await;
    // One batch each first: caches, connections and the controller's informers warm alike.
    let _ = batch(&rig, way, OURS, runs, n.min(50)).await;
    let _ = batch(&rig, way, LIMIT, runs, n.min(50)).await;
    let (mut ours, mut limit) = (Tally::default(), Tally::default());
    let mut ratios = Vec::with_capacity(runs);
    for run in 0..runs {
        let order: [(&str, bool); 2] = if run % 2 == 0 {
            [(OURS, true), (LIMIT, false)]
        } else {
            [(LIMIT, false), (OURS, true)]
        };
        let mut t = [0.0; 2];
        for (ns, is_ours) in order {
            let (elapsed, cpu) = batch(&rig, way, ns, run, n).await;
            let tally = if is_ours { &mut ours } else { &mut limit };
            tally.elapsed.push(elapsed);
            tally.pods += n;
            for (a, b) in tally.cpu.iter_mut().zip(cpu) {
                *a += b;
            }
            t[usize::from(!is_ours)] = elapsed;
        }
        ratios.push(t[1] / t[0]);
    }
    let checked = rig.check().await;
    rig.stop();
    ratios.sort_by(f64::total_cmp);
    let how = match way {
        Way::Deployment => format!("Deployment, controller QPS {qps}"),
        Way::Unthrottled { concurrency } => format!("bare client, {concurrency} at a time"),
    };
    let name = match profile {
        Profile::RunAsNonRoot => "runasnonroot",
        Profile::OpenshiftRestrictedV2 => "openshift-restricted-v2",
    };
    println!("profile {name}, {how}, {runs} runs of {n} pods per side:");
    for (label, t) in [("ours", &ours), ("limit", &limit)] {
        let mut e = t.elapsed.clone();
        e.sort_by(f64::total_cmp);
        let per_pod = t.cpu.map(|c| c / t.pods.max(1) as f64 * 1e3);
        println!(
            "  {label:<6} batch time median {:.2} s; CPU ms/pod apiserver {:.2}, etcd {:.2}, client+webhook {:.2}",
            median(&e),
            per_pod[0],
            per_pod[1],
            per_pod[2]
        );
    }
    println!(
        "  ratio limit/ours median {:.3} (min {:.3}, max {:.3}; runs {:?})  target >= 0.95",
        median(&ratios),
        ratios.first().copied().unwrap_or(f64::NAN),
        ratios.last().copied().unwrap_or(f64::NAN),
        ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>()
    );
    println!("  every pod of both sides patched: {checked}");
    checked
}

fn main() {
    telemetry::install_crypto_provider();
    let runs: usize = env("MOCK_KIND_BENCH_RUNS", 5);
    let n: usize = env("MOCK_KIND_BENCH_BATCH", 300);
    // Unthrottled, 300 pods take well under a second: too short to time against drift.
    let n_unthrottled: usize = env("MOCK_KIND_BENCH_BATCH_UNTHROTTLED", 2000);
    let qps: u32 = env("MOCK_KIND_BENCH_CONTROLLER_QPS", 20);
    let concurrency: usize = env("MOCK_KIND_BENCH_CONCURRENCY", 16);
    let profiles: Vec<Profile> = std::env::var("MOCK_KIND_BENCH_PROFILES")
        .unwrap_or_else(|_| "runasnonroot,openshift-restricted-v2".into())
        .split(',')
        .filter_map(|p| match p.trim() {
            "runasnonroot" => Some(Profile::RunAsNonRoot),
            "openshift-restricted-v2" => Some(Profile::OpenshiftRestrictedV2),
            _ => None,
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    let ways: Vec<(Way, usize)> = std::env::var("MOCK_KIND_BENCH_WAYS")
        .unwrap_or_else(|_| "deployment,unthrottled".into())
        .split(',')
        .filter_map(|w| match w.trim() {
            "deployment" => Some((Way::Deployment, n)),
            "unthrottled" => Some((Way::Unthrottled { concurrency }, n_unthrottled)),
            _ => None,
        })
        .collect();
    let mut all_checked = true;
    for &profile in &profiles {
        for &(way, n) in &ways {
            all_checked &= rt.block_on(compare(profile, way, runs, n, qps));
        }
    }
    if !all_checked {
        eprintln!("some pods were not patched: the comparison is void");
        std::process::exit(1);
    }
}
