//! Two replicas of `hollow-node --pool shared` (the binary, as processes) on the real 1.20
//! control plane share one pool of 8 nodes. Each node names its replica by its InternalIP (a:
//! 127.0.0.2, b: 127.0.0.3). Sampled ten times a second over the whole test, the replicas'
//! `hollow_node_nodes_managed` gauges never add up to more than 8 (no node run twice) and no
//! node is seen NotReady. b joining takes its share from a; SIGKILL of b moves its nodes back
//! to a, within the node Lease's 40 s; a graceful stop deletes the replica's membership Lease.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;

const POOL: &str = r#"
apiVersion: mock-kind.io/v1alpha1
kind: HollowNodePool
metadata:
  name: shared
spec:
  replicas: 8
"#;
const NODES: usize = 8;

struct Replica {
    comp: e2e::process::Component,
    addr: SocketAddr,
}

fn spawn(cp: &e2e::ControlPlane, name: &str, ip: &str) -> Replica {
    let addr = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    let args = [
        "--pool=shared".to_string(),
        format!("--replica-name={name}"),
        "--pool-namespace=default".into(),
        format!("--internal-ip={ip}"),
        format!("--kubeconfig={}", cp.kubeconfig().display()),
        format!("--listen={addr}"),
        format!("--kubelet-port={}", e2e::free_port()),
    ];
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_hollow-node"));
    let log = cp.dir().join(format!("hollow-node-{name}.log"));
    let comp = e2e::process::Component::spawn(name, bin, &args, &log).expect("spawn");
    Replica { comp, addr }
}

/// The replica's `hollow_node_nodes_managed`, 0 when it does not answer (killed).
async fn managed(addr: SocketAddr) -> u64 {
    let (code, body) = common::get(addr, "/metrics").await;
    if code != 200 {
        return 0;
    }
    common::metric(&body, "hollow_node_nodes_managed ").map_or(0, |v| v as u64)
}

fn internal_ip(n: &Node) -> Option<&str> {
    n.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.as_str())
}

/// Waits until the pool's 8 Nodes are Ready and `split` holds for their InternalIPs.
async fn wait_split(client: &kube::Client, what: &str, split: impl Fn(usize, usize) -> bool) {
    let nodes: Api<Node> = Api::all(client.clone());
    let lp = ListParams::default().labels("mock-kind.io/pool=shared");
    e2e::wait_for(Duration::from_secs(120), what, || {
        let (nodes, lp) = (nodes.clone(), lp.clone());
        let split = &split;
        async move {
            let list = nodes.list(&lp).await?.items;
            let on = |ip: &str| list.iter().filter(|n| internal_ip(n) == Some(ip)).count();
            let ok = list.len() == NODES
                && list.iter().all(common::ready)
                && split(on("127.0.0.2"), on("127.0.0.3"));
            Ok(ok.then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_a_pool_and_one_killed_hands_its_nodes_over() {
    let cp = e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        ..Default::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    common::install_crd(&cp).await;
    common::apply_yaml(&cp, "shared-pool.yaml", POOL).await;

    let mut a = spawn(&cp, "a", "127.0.0.2");
    wait_split(&client, "a runs all 8 nodes", |a, b| a == NODES && b == 0).await;

    // From here on: the gauges' sum, and any node not Ready, as a watch sees it.
    let most = Arc::new(AtomicU64::new(0));
    let b_addr = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let sampler = tokio::spawn({
        let (most, b_addr, a_addr) = (most.clone(), b_addr.clone(), a.addr);
        async move {
            loop {
                let b = b_addr.lock().map(|b| *b).unwrap_or(None);
                let sum = managed(a_addr).await
                    + match b {
                        Some(b) => managed(b).await,
                        None => 0,
                    };
                most.fetch_max(sum, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let not_ready = Arc::new(AtomicBool::new(false));
    let watch = tokio::spawn({
        let (not_ready, nodes) = (not_ready.clone(), Api::<Node>::all(client.clone()));
        async move {
            let cfg = watcher::Config::default().labels("mock-kind.io/pool=shared");
            let mut events = watcher(nodes, cfg).boxed();
            while let Some(ev) = events.next().await {
                if let Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) = ev
                    && !common::ready(&n)
                {
                    eprintln!(
                        "node {:?} seen {}",
                        n.metadata.name,
                        common::ready_status(&n)
                    );
                    not_ready.store(true, Ordering::Relaxed);
                }
            }
        }
    });

    let mut b = spawn(&cp, "b", "127.0.0.3");
    if let Ok(mut slot) = b_addr.lock() {
        *slot = Some(b.addr);
    }
    wait_split(&client, "a and b share the 8 nodes", |a, b| {
        a > 0 && b > 0 && a + b == NODES
    })
    .await;
    let (on_a, on_b) = (managed(a.addr).await, managed(b.addr).await);
    assert_eq!(on_a + on_b, NODES as u64, "gauges: a {on_a}, b {on_b}");
    assert!(on_a > 0 && on_b > 0, "gauges: a {on_a}, b {on_b}");

    b.comp.kill();
    if let Ok(mut slot) = b_addr.lock() {
        *slot = None;
    }
    wait_split(&client, "a runs all 8 again after b's SIGKILL", |a, b| {
        a == NODES && b == 0
    })
    .await;
    e2e::wait_for(Duration::from_secs(30), "a's gauge at 8", || async {
        Ok((managed(a.addr).await == NODES as u64).then_some(()))
    })
    .await
    .expect("a manages all");

    sampler.abort();
    watch.abort();
    assert!(
        most.load(Ordering::Relaxed) <= NODES as u64,
        "the replicas ran {} nodes at once, of {NODES}",
        most.load(Ordering::Relaxed)
    );
    assert!(
        !not_ready.load(Ordering::Relaxed),
        "a node went NotReady while its replica changed"
    );

    // A graceful stop leaves the pool: a's membership Lease goes with it.
    a.comp.terminate(Duration::from_secs(30));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let left = leases
        .get_opt("hollownodepool-shared-a")
        .await
        .expect("get lease");
    assert!(
        left.is_none(),
        "a's membership Lease is deleted when it stops"
    );
    for r in [&a, &b] {
        let log = std::fs::read_to_string(&r.comp.log).unwrap_or_default();
        assert!(!log.contains("panicked"), "a replica panicked:\n{log}");
    }
}
