//! End to end: the real kube-scheduler (1.20, e2e harness) calls the extender running in this
//! process. Nodes are plain Node objects (no kubelet): created Ready with allocatable, so the
//! controller-manager lifts the not-ready taint; pods stay Pending once bound (no kubelet runs),
//! so "bound" means `spec.nodeName` is set.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use scheduler::cache::Cache;
use scheduler::{Config, Service};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const REAL: [&str; 3] = ["real-0", "real-1", "real-2"];
const HOLLOW: [&str; 3] = ["hollow-0", "hollow-1", "hollow-2"];
const WAIT: Duration = Duration::from_secs(120);

/// The control plane with our extender configured, and the extender serving in-process.
struct Setup {
    cp: e2e::ControlPlane,
    cache: Arc<Cache>,
    shutdown: CancellationToken,
    extender: tokio::task::JoinHandle<scheduler::Result<()>>,
}

async fn setup() -> Result<Setup> {
    telemetry::install_crypto_provider();
    telemetry::init_logging(false);
    let port = e2e::free_port();
    let cp = e2e::ControlPlane::start(e2e::Options {
        extenders: vec![extender_entry(port)],
        // No kubelet renews these nodes; keep them Ready for the whole test.
        node_monitor_grace_period: Some(Duration::from_secs(3600)),
        ..Default::default()
    })
    .await?;
    let mut config = Config::new(format!("127.0.0.1:{port}").parse()?);
    config.kubeconfig = Some(cp.kubeconfig());
    config.server.shutdown_grace = Duration::from_secs(2);
    let service = Service::new();
    let cache = service.cache.clone();
    let ready = service.ready.clone();
    let shutdown = CancellationToken::new();
    let extender = tokio::spawn(scheduler::run_with(
        config,
        cp.client(),
        service,
        shutdown.clone(),
    ));
    e2e::wait_for(WAIT, "extender caches synced", || {
        let ready = ready.clone();
        async move { Ok(ready.is_ready().then_some(())) }
    })
    .await?;
    Ok(Setup {
        cp,
        cache,
        shutdown,
        extender,
    })
}

/// The extender entry from config/scheduler-config.v1beta1.yaml, pointed at `port`.
fn extender_entry(port: u16) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/scheduler-config.v1beta1.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let doc: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
    let mut entry = doc["extenders"][0].clone();
    assert_eq!(entry["nodeCacheCapable"], true, "{path}: extenders[0]");
    entry["urlPrefix"] = json!(format!("http://127.0.0.1:{port}/"));
    entry
}

fn node(name: &str, spoofed: bool, cpu: &str) -> Node {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut annotations = serde_json::Map::new();
    if spoofed {
        annotations.insert("spoofed".into(), json!("true"));
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations,
                     "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "created Ready by the test",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]
        }
    }))
    .unwrap_or_default()
}

async fn create_nodes(client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    // Hollow nodes get less CPU than real ones, so a big pod of a spoofed namespace fits nowhere.
    for (name, spoofed, cpu) in REAL
        .iter()
        .map(|n| (n, false, "8"))
        .chain(HOLLOW.iter().map(|n| (n, true, "4")))
    {
        nodes
            .create(&PostParams::default(), &node(name, spoofed, cpu))
            .await
            .with_context(|| format!("creating node {name}"))?;
    }
    // The apiserver adds node.kubernetes.io/not-ready:NoSchedule; the controller-manager lifts
    // it once it sees the Ready condition.
    e2e::wait_for(WAIT, "not-ready taints lifted from all nodes", || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await?;
            let tainted = list
                .items
                .iter()
                .filter(|n| {
                    n.spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|t| !t.is_empty())
                })
                .count();
            Ok((list.items.len() == 6 && tainted == 0).then_some(()))
        }
    })
    .await?;
    Ok(())
}

async fn create_namespace(client: &Client, name: &str, annotations: Value) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))?;
    api.create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    // Pod admission needs the namespace's default ServiceAccount (the controller-manager makes it).
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    e2e::wait_for(WAIT, &format!("serviceaccount {name}/default"), || {
        let sas = sas.clone();
        async move { Ok(sas.get_opt("default").await?.map(|_| ())) }
    })
    .await?;
    Ok(())
}

fn pod(name: &str, pinned: Option<&str>, cpu: Option<&str>) -> Pod {
    let mut annotations = serde_json::Map::new();
    if let Some(node) = pinned {
        annotations.insert("nodeName".into(), json!(node));
    }
    let resources = match cpu {
        Some(cpu) => json!({"requests": {"cpu": cpu}}),
        None => json!({}),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.2",
                            "resources": resources}]
        }
    }))
    .unwrap_or_default()
}

async fn create_pod(client: &Client, ns: &str, pod: &Pod) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), pod)
        .await
        .with_context(|| {
            format!(
                "creating pod {ns}/{}",
                pod.metadata.name.as_deref().unwrap_or("")
            )
        })?;
    Ok(())
}

/// Waits until every pod in `want` is bound and returns where each went.
async fn wait_bound(
    client: &Client,
    want: &BTreeMap<(String, String), Vec<&'static str>>,
) -> Result<HashMap<(String, String), String>> {
    let pods: Api<Pod> = Api::all(client.clone());
    let count = want.len();
    e2e::wait_for(WAIT, &format!("{count} pods bound"), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default()).await?;
            let bound: HashMap<(String, String), String> = list
                .items
                .into_iter()
                .filter_map(|p| {
                    let node = p.spec.and_then(|s| s.node_name)?;
                    Some((
                        (
                            p.metadata.namespace.unwrap_or_default(),
                            p.metadata.name.unwrap_or_default(),
                        ),
                        node,
                    ))
                })
                .collect();
            Ok(want.keys().all(|k| bound.contains_key(k)).then_some(bound))
        }
    })
    .await
    .map_err(Into::into)
}

/// The events with `reason` in namespace `ns`, once there is at least one.
async fn wait_for_events(client: &Client, ns: &str, reason: &str) -> Result<Vec<Event>> {
    let what = format!("{reason} event in {ns}");
    let found = e2e::wait_for(WAIT, &what, || {
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        async move {
            let list = events.list(&ListParams::default()).await?;
            let found: Vec<Event> = list
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .collect();
            Ok((!found.is_empty()).then_some(found))
        }
    })
    .await?;
    Ok(found)
}

async fn failed_scheduling_messages(
    client: &Client,
    ns: &str,
    pod: &str,
) -> Result<Vec<String>, kube::Error> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .filter_map(|e| e.message)
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_scheduler_places_pods_by_the_rules() -> Result<()> {
    let Setup {
        cp,
        cache,
        shutdown,
        extender,
    } = setup().await?;
    let client = cp.client();
    create_nodes(&client).await?;
    create_namespace(&client, "team-a", json!({"spoofed": "true"})).await?;
    create_namespace(
        &client,
        "mixed",
        json!({"spoofed": "true", "spoofed_excluded_pods": " db-0 , web-.* ,bad(regex, "}),
    )
    .await?;
    create_namespace(&client, "plain", json!({})).await?;
    create_namespace(&client, "not-quite", json!({"spoofed": "True"})).await?;

    // 100 pods and where each may go.
    let mut want: BTreeMap<(String, String), Vec<&'static str>> = BTreeMap::new();
    let mut plan: Vec<(&str, String, Option<&'static str>, Vec<&'static str>)> = Vec::new();
    for i in 0..30 {
        plan.push(("team-a", format!("app-{i}"), None, HOLLOW.to_vec()));
    }
    for i in 0..10 {
        plan.push((
            "team-a",
            format!("pinned-{i}"),
            Some("real-1"),
            vec!["real-1"],
        ));
    }
    for i in 0..10 {
        plan.push(("mixed", format!("web-{i}"), None, REAL.to_vec()));
    }
    plan.push(("mixed", "db-0".into(), None, REAL.to_vec()));
    for i in 0..14 {
        plan.push(("mixed", format!("api-{i}"), None, HOLLOW.to_vec()));
    }
    for i in 0..25 {
        plan.push(("plain", format!("app-{i}"), None, REAL.to_vec()));
    }
    for i in 0..5 {
        plan.push((
            "plain",
            format!("pinned-{i}"),
            Some("hollow-2"),
            vec!["hollow-2"],
        ));
    }
    for i in 0..5 {
        plan.push(("not-quite", format!("app-{i}"), None, REAL.to_vec()));
    }
    assert_eq!(plan.len(), 100);
    for (ns, name, pinned, allowed) in &plan {
        create_pod(&client, ns, &pod(name, *pinned, None)).await?;
        want.insert((ns.to_string(), name.clone()), allowed.clone());
    }
    let bound = wait_bound(&client, &want).await?;
    let mut wrong = Vec::new();
    for (key, allowed) in &want {
        let node = &bound[key];
        if !allowed.contains(&node.as_str()) {
            wrong.push(format!(
                "{}/{} on {node} (allowed {allowed:?})",
                key.0, key.1
            ));
        }
    }
    assert!(wrong.is_empty(), "pods bound against the rules: {wrong:#?}");

    // A pod with no eligible node: hollow nodes lack the CPU, real nodes are ours to refuse.
    create_pod(&client, "team-a", &pod("too-big", None, Some("6"))).await?;
    let messages = e2e::wait_for(WAIT, "FailedScheduling event of team-a/too-big", || {
        let client = client.clone();
        async move {
            let m = failed_scheduling_messages(&client, "team-a", "too-big").await?;
            Ok((!m.is_empty()).then_some(m))
        }
    })
    .await?;
    let joined = messages.join("\n");
    eprintln!("FailedScheduling of team-a/too-big: {joined}");
    // One reason for all the real nodes, counted by the scheduler.
    let reason = format!(
        "{} node(s) are real but namespace team-a is spoofed",
        REAL.len()
    );
    assert!(joined.contains(&reason), "missing {reason:?} in {joined}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team-a");
    let too_big = pods.get("too-big").await?;
    assert_eq!(
        too_big.spec.and_then(|s| s.node_name),
        None,
        "team-a/too-big must stay unbound"
    );

    // The invalid entry: one Warning event on the namespace, the other entries still work
    // (web-* and db-0 above went to real nodes).
    let warnings = wait_for_events(&client, "mixed", "InvalidExcludedPodPattern").await?;
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    assert!(
        warnings[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("bad(regex"),
        "{warnings:#?}"
    );

    // A value past the bounds (33 entries) is ignored whole, as if absent: web-0 would be
    // excluded by it, and goes to a spoofed node instead; one Warning event says why.
    let entries: Vec<String> = (0..33).map(|i| format!("web-{i}")).collect();
    create_namespace(
        &client,
        "hostile",
        json!({"spoofed": "true", "spoofed_excluded_pods": entries.join(",")}),
    )
    .await?;
    create_pod(&client, "hostile", &pod("web-0", None, None)).await?;
    let hostile = BTreeMap::from([(
        ("hostile".to_string(), "web-0".to_string()),
        HOLLOW.to_vec(),
    )]);
    let bound = wait_bound(&client, &hostile).await?;
    let node = &bound[&("hostile".to_string(), "web-0".to_string())];
    assert!(HOLLOW.contains(&node.as_str()), "hostile/web-0 on {node}");
    let ignored = wait_for_events(&client, "hostile", "ExcludedPodsIgnored").await?;
    assert_eq!(ignored[0].type_.as_deref(), Some("Warning"));
    let message = ignored[0].message.as_deref().unwrap_or_default();
    assert!(message.contains("33 entries"), "{message}");

    // An annotation change on a live namespace applies to new pods.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            "plain",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"spoofed": "true"}}})),
        )
        .await?;
    e2e::wait_for(WAIT, "extender sees namespace plain as spoofed", || {
        let cache = cache.clone();
        async move { Ok(cache.namespace("plain").filter(|p| p.spoofed).map(|_| ())) }
    })
    .await?;
    // Touching the mixed namespace again does not repeat the warning.
    namespaces
        .patch(
            "mixed",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await?;
    let mut later = BTreeMap::new();
    for i in 0..5 {
        let name = format!("after-{i}");
        create_pod(&client, "plain", &pod(&name, None, None)).await?;
        later.insert(("plain".to_string(), name), HOLLOW.to_vec());
    }
    let bound = wait_bound(&client, &later).await?;
    for (key, allowed) in &later {
        let node = &bound[key];
        assert!(
            allowed.contains(&node.as_str()),
            "{}/{} on {node} after plain became spoofed",
            key.0,
            key.1
        );
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "mixed");
    let again = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("InvalidExcludedPodPattern"))
        .count();
    assert_eq!(again, 1, "the invalid entry is reported once");

    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(10), extender).await {
        Ok(Ok(Ok(()))) => {}
        other => bail!("extender did not stop cleanly: {other:?}"),
    }
    drop(cp);
    Ok(())
}
