//! End to end: the real kube-apiserver (e2e harness) calls the in-process webhook through a
//! MutatingWebhookConfiguration with `clientConfig.url` on 127.0.0.1, whose caBundle the
//! webhook's self-bootstrap fills in.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use common::cluster::*;
use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use webhook::Strategy;

#[tokio::test(flavor = "multi_thread")]
async fn namespace_ranges_through_the_apiserver() {
    let cp = control_plane(true).await;
    let client = cp.client();
    let cfg = config(&cp, Strategy::Namespace, webhook::tls::system_clock());
    let mut wh = serve(&client, cfg).await;

    // The namespace controller annotates a new namespace as OpenShift does; its pods all get
    // the first UID of that block.
    create_namespace(&client, "team-a").await;
    let ann = wait_annotated(&client, "team-a").await;
    wait_default_sa(&client, "team-a").await;
    let mut seen = Vec::new();
    for i in 0..4 {
        let created = create_pod(&client, "team-a", &pod(&format!("p{i}"), true), false).await;
        seen.push(uids(&created));
    }
    assert_eq!(
        annotations(&client, "team-a").await,
        ann,
        "pods changed the namespace"
    );
    let range = ann.get(UID_RANGE).expect("uid-range").clone();
    assert_eq!(ann.get(GROUPS), Some(&range), "supplemental-groups");
    let (start, size) = range.split_once('/').expect("<start>/<size>");
    let start: i64 = start.parse().expect("start");
    assert_eq!(size, "10000");
    assert_eq!(start % 10_000, 0, "aligned: {range}");
    assert!((1_000_000_000..2_000_000_000).contains(&start), "{range}");
    let index = u32::try_from((start - 1_000_000_000) / 10_000).expect("index");
    assert_eq!(
        ann.get(MCS),
        webhook::allocation::mcs_level(index).as_ref(),
        "MCS level of block {index}"
    );
    for got in &seen {
        assert_eq!(*got, (Some(start), Some(start)), "pods of team-a: {seen:?}");
    }
    // A pod that does not ask for runAsNonRoot is untouched.
    let plain = create_pod(&client, "team-a", &pod("plain", false), false).await;
    assert_eq!(uids(&plain), (None, None));

    // An exported OpenShift annotation is honoured.
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "exported",
        "annotations": {UID_RANGE: "1000680000/10000", GROUPS: "1000690000/10000"}}}))
    .expect("ns");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create exported");
    wait_default_sa(&client, "exported").await;
    let p = create_pod(&client, "exported", &pod("p", true), false).await;
    assert_eq!(uids(&p), (Some(1_000_680_000), Some(1_000_690_000)));

    // Dry-run: the pod comes back with the UID the real create gives, and nothing is written.
    create_namespace(&client, "dry").await;
    let dry = wait_annotated(&client, "dry").await;
    wait_default_sa(&client, "dry").await;
    let p = create_pod(&client, "dry", &pod("p", true), true).await;
    let block_start = dry[UID_RANGE]
        .split_once('/')
        .expect("range")
        .0
        .parse()
        .ok();
    assert_eq!(uids(&p).0, block_start, "dry-run shows the real UID");
    let real = create_pod(&client, "dry", &pod("p", true), false).await;
    assert_eq!(uids(&real), uids(&p), "the real create matches the dry run");
    assert_eq!(annotations(&client, "dry").await, dry);

    // kube-system is never mutated (1.20 has no kubernetes.io/metadata.name label: the
    // webhook's own exclusion list does it).
    wait_default_sa(&client, "kube-system").await;
    let p = create_pod(&client, "kube-system", &pod("sys", true), false).await;
    assert_eq!(uids(&p), (None, None), "kube-system pod mutated");
    assert!(
        !annotations(&client, "kube-system")
            .await
            .contains_key(UID_RANGE)
    );

    // failurePolicy Ignore: with the webhook stopped, pods are still admitted, without a UID.
    wh.stop().await.expect("webhook stops cleanly");
    let p = create_pod(&client, "team-a", &pod("while-down", true), false).await;
    assert_eq!(
        uids(&p),
        (None, None),
        "pod admitted unchanged while the webhook is down"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_renews_expired_and_expiring_certificates() {
    let cp = control_plane(false).await;
    let client = cp.client();

    // An expired bundle in the Secret and its CA in the configuration.
    let long_ago = SystemTime::now() - 400 * DAY;
    let expired = certs::generate(&cert_opts(), long_ago, None).expect("expired bundle");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), WEBHOOK_NS);
    secrets
        .create(
            &PostParams::default(),
            &certs::cluster::to_secret(WEBHOOK_NS, SECRET, &expired),
        )
        .await
        .expect("create expired Secret");
    let port = e2e::free_port();
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwcs.create(
        &PostParams::default(),
        &webhook_configuration(port, Some(&expired.ca_pem)),
    )
    .await
    .expect("create MutatingWebhookConfiguration");

    // A clock the test moves forward.
    let skew = Arc::new(AtomicU64::new(0));
    let clock: webhook::Clock = {
        let skew = skew.clone();
        Arc::new(move || SystemTime::now() + Duration::from_secs(skew.load(Ordering::SeqCst)))
    };
    let mut cfg = config(&cp, Strategy::Pod, clock);
    cfg.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(webhook::run(cfg, shutdown.clone()));
    let mut wh = Running {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        shutdown,
        task: Some(task),
    };

    e2e::wait_for(T, "the expired Secret replaced", || {
        let (secrets, old) = (secrets.clone(), expired.cert_pem.clone());
        async move {
            let b = certs::cluster::from_secret(&secrets.get(SECRET).await?).expect("bundle");
            Ok((b.cert_pem != old).then_some(()))
        }
    })
    .await
    .expect("expired certificate renewed by the bootstrap");
    let ca = wait_ca_bundle(&client).await;
    let renewed =
        certs::cluster::from_secret(&secrets.get(SECRET).await.expect("secret")).expect("bundle");
    assert_eq!(
        certs::renewal_reason(&renewed, &cert_opts(), SystemTime::now(), 30 * DAY),
        None
    );
    wait_ready(wh.addr, &ca).await;
    let stream = connect(wh.addr, &ca, "127.0.0.1").await.expect("connect");
    let renewed_der = certs::parse_certs(&renewed.cert_pem, "renewed").expect("der")[0].clone();
    assert_eq!(
        peer_cert(&stream),
        renewed_der,
        "served certificate is the renewed one"
    );
    let mut held = http1(stream).await;

    // The apiserver reaches the webhook with the new caBundle.
    create_namespace(&client, "team-b").await;
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-b");
    let default_sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa");
    sa.create(&PostParams::default(), &default_sa)
        .await
        .expect("create default SA");
    let p = create_pod(&client, "team-b", &pod("p", true), false).await;
    let uid = uids(&p).0.expect("pod got a UID through the apiserver");
    assert!((1_000_000_000..2_000_000_000).contains(&uid));

    // 340 days later the certificate is within the 30-day margin: renewed without a restart.
    // The new certificate starts at the webhook's (skewed) now, so the checks below verify it
    // at that instant; the apiserver, on the real clock, would see it as not yet valid.
    skew.store(340 * DAY.as_secs(), Ordering::SeqCst);
    let later = SystemTime::now() + 340 * DAY + Duration::from_secs(60);
    let addr = wh.addr;
    let latest = e2e::wait_for(T, "renewal picked up", || {
        let secrets = secrets.clone();
        let old = renewed.cert_pem.clone();
        async move {
            let b = certs::cluster::from_secret(&secrets.get(SECRET).await?).expect("bundle");
            if b.cert_pem == old {
                return Ok(None);
            }
            let der = certs::parse_certs(&b.cert_pem, "latest").expect("der")[0].clone();
            let served = connect_at(addr, &b.ca_pem, "127.0.0.1", Some(later))
                .await
                .map(|s| peer_cert(&s))
                .ok();
            Ok((served == Some(der)).then_some(b))
        }
    })
    .await
    .expect("renewed and served");
    // The new trust bundle keeps the previous CA; the configuration follows the Secret.
    assert_eq!(
        certs::parse_certs(&latest.ca_pem, "bundle")
            .expect("parse")
            .len(),
        2
    );
    assert_eq!(wait_ca_bundle(&client).await, latest.ca_pem);
    // The connection opened before the renewal still works.
    let (status, _) = request(
        &mut held,
        "POST",
        "/mutate",
        fixture("create_pod_runasnonroot.json"),
    )
    .await;
    assert_eq!(status, 200);
    drop(held);
    wh.stop().await.expect("clean stop");

    // Replicas bootstrapping a missing Secret at once agree on one bundle.
    secrets
        .delete(SECRET, &DeleteParams::default())
        .await
        .expect("delete secret");
    let now = SystemTime::now();
    let opts = cert_opts();
    let results = futures::future::join_all((0..4).map(|_| {
        certs::cluster::ensure_secret(&secrets, WEBHOOK_NS, SECRET, &opts, now, 30 * DAY)
    }))
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.expect("ensure")).collect();
    let created = results
        .iter()
        .filter(|(_, a)| *a == certs::cluster::Action::Created)
        .count();
    assert_eq!(
        created,
        1,
        "exactly one creator: {:?}",
        results.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    assert!(
        results.windows(2).all(|w| w[0].0 == w[1].0),
        "replicas hold different bundles"
    );
}

/// A replica of the namespace controller (with its namespace reflector), as `--strategy
/// namespace` runs it, repairing every `repair_interval` (zero: never).
fn namespace_controller(
    client: &kube::Client,
    stop: &tokio_util::sync::CancellationToken,
    repair_interval: Duration,
) -> Arc<webhook::namespaces::NamespaceRanges> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(webhook::metrics::Metrics::register(&mut registry));
    let exclude: Arc<[String]> = vec![
        "kube-system".to_owned(),
        "kube-node-lease".to_owned(),
        WEBHOOK_NS.to_owned(),
    ]
    .into();
    webhook::namespaces::NamespaceRanges::start(
        client.clone(),
        metrics,
        &telemetry::Health::default(),
        stop.clone(),
        Some(webhook::namespaces::ControllerSettings {
            pool_namespace: WEBHOOK_NS.into(),
            exclude,
            repair_interval,
        }),
    )
}

/// 1,000 namespaces created at once, three controller replicas racing: 1,000 distinct blocks,
/// each with the MCS level OpenShift derives from it; a namespace created with its own range
/// keeps it and that block is never handed out again.
#[tokio::test(flavor = "multi_thread")]
async fn thousand_namespaces_get_distinct_blocks() {
    const N: usize = 1_000;
    let cp = control_plane(false).await;
    let client = cp.client();
    // An exported namespace holding block 3 before any controller runs.
    let api: Api<Namespace> = Api::all(client.clone());
    let exported: Namespace = serde_json::from_value(json!({"metadata": {"name": "exported",
        "annotations": {UID_RANGE: "1000030000/10000"}}}))
    .expect("ns");
    api.create(&PostParams::default(), &exported)
        .await
        .expect("create exported");

    let stop = tokio_util::sync::CancellationToken::new();
    let replicas: Vec<_> = (0..3)
        .map(|_| namespace_controller(&client, &stop, Duration::ZERO))
        .collect();
    for r in &replicas {
        r.wait_until_ready().await;
    }

    use futures::StreamExt;
    let names: Vec<String> = (0..N).map(|i| format!("burst-{i:04}")).collect();
    futures::stream::iter(names.iter())
        .map(|name| {
            let client = client.clone();
            async move { create_namespace(&client, name).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;

    let all = e2e::wait_for(
        Duration::from_secs(300),
        "1,000 namespaces annotated",
        || {
            let api = api.clone();
            async move {
                let list = api.list(&Default::default()).await?;
                let burst: Vec<_> = list
                    .items
                    .into_iter()
                    .filter(|ns| {
                        ns.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("burst-") || n == "exported")
                    })
                    .map(|ns| ns.metadata.annotations.unwrap_or_default())
                    .collect();
                let done = burst
                    .iter()
                    .filter(|a| [UID_RANGE, GROUPS, MCS].iter().all(|k| a.contains_key(*k)))
                    .count();
                Ok((done == N + 1).then_some(burst))
            }
        },
    )
    .await
    .expect("every namespace annotated");

    let mut blocks = std::collections::BTreeSet::new();
    let mut levels = std::collections::BTreeSet::new();
    for ann in &all {
        let range = &ann[UID_RANGE];
        assert_eq!(ann.get(GROUPS), Some(range));
        let start: i64 = range
            .strip_suffix("/10000")
            .expect("size")
            .parse()
            .expect("start");
        let index = u32::try_from((start - 1_000_000_000) / 10_000).expect("index");
        assert_eq!(
            Some(&ann[MCS]),
            webhook::allocation::mcs_level(index).as_ref(),
            "{range}"
        );
        assert!(blocks.insert(index), "block {index} handed out twice");
        levels.insert(ann[MCS].clone());
    }
    assert_eq!(blocks.len(), N + 1);
    assert_eq!(levels.len(), N + 1);
    assert!(blocks.contains(&3), "the exported block kept");
    // Lowest free: the pool stays dense. Free blocks below the highest are holes (handed back
    // after a lost race) that later namespaces fill. Once the replicas have settled, every block
    // marked in the pool record is held by a namespace: none leaked.
    let highest = blocks.iter().next_back().copied().unwrap_or_default();
    let leaked = || {
        let api = api.clone();
        let client = client.clone();
        async move {
            let record = annotations(&client, WEBHOOK_NS).await;
            let bits = webhook::allocation::PoolBits::decode(&record[webhook::allocation::POOL])
                .expect("pool record");
            let list = api.list(&Default::default()).await?;
            let held: std::collections::BTreeSet<u32> = list
                .items
                .iter()
                .filter_map(|ns| webhook::allocation::used_block(ns.metadata.annotations.as_ref()))
                .collect();
            let leaked = (0..webhook::allocation::BLOCKS)
                .filter(|i| bits.contains(*i) && !held.contains(i))
                .count();
            let holes = (0..highest).filter(|i| !held.contains(i)).count();
            Ok::<_, kube::Error>((leaked, holes))
        }
    };
    let (leaked_at_once, _) = leaked().await.expect("pool record read");
    let settled = e2e::wait_for(T, "no block leaked", || {
        let check = leaked();
        async move {
            Ok(check
                .await
                .map(|(l, h)| (l == 0).then_some(h))
                .ok()
                .flatten())
        }
    })
    .await;
    stop.cancel();
    println!(
        "1,000 namespaces, 3 replicas: highest block {highest}; {leaked_at_once} blocks reserved but not held when the last namespace was annotated; settled: {settled:?} (free blocks below the highest)"
    );
    assert!(settled.is_ok(), "blocks leaked: {settled:?}");
    assert!(
        (highest as usize) < 2 * (N + 10),
        "blocks not taken lowest first: highest {highest}"
    );
}

/// A deleted namespace's block is handed out again after a repair pass (OpenShift's controller
/// repairs every 8 hours, this one every second): the next new namespace gets it as the lowest
/// free block. Without the repair it would get the block after `keep-c`'s.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_namespaces_block_is_handed_out_again_after_repair() {
    // The controller-manager's namespace controller finishes the deletion.
    let cp = control_plane(true).await;
    let client = cp.client();
    let stop = tokio_util::sync::CancellationToken::new();
    let ranges = namespace_controller(&client, &stop, Duration::from_secs(1));
    ranges.wait_until_ready().await;
    let api: Api<Namespace> = Api::all(client.clone());
    let range_of = |name: &'static str| {
        let api = api.clone();
        async move {
            e2e::wait_for(
                Duration::from_secs(60),
                &format!("namespace {name} annotated"),
                || {
                    let api = api.clone();
                    async move {
                        Ok(api
                            .get(name)
                            .await?
                            .metadata
                            .annotations
                            .and_then(|a| a.get(UID_RANGE).cloned()))
                    }
                },
            )
            .await
            .expect("uid-range")
        }
    };
    for name in ["keep-a", "gone-b", "keep-c"] {
        create_namespace(&client, name).await;
    }
    let a = range_of("keep-a").await;
    let b = range_of("gone-b").await;
    let c = range_of("keep-c").await;
    assert!(a != b && b != c && a != c, "{a} {b} {c}");

    api.delete("gone-b", &DeleteParams::default())
        .await
        .expect("delete gone-b");
    e2e::wait_for(Duration::from_secs(90), "namespace gone-b deleted", || {
        let api = api.clone();
        async move { Ok(api.get_opt("gone-b").await?.is_none().then_some(())) }
    })
    .await
    .expect("gone-b deleted");
    // A repair pass runs every second; give it two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    create_namespace(&client, "new-d").await;
    assert_eq!(
        range_of("new-d").await,
        b,
        "the block of the deleted namespace, the lowest free one"
    );
    stop.cancel();
}
