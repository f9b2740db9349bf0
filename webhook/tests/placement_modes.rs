//! End to end, both placement modes on the real control plane (e2e harness, kube-scheduler
//! 1.20): one table of pods (and two DaemonSets) is created once with the scheduler extender
//! wired into kube-scheduler, once with a stock kube-scheduler and the webhook in affinity mode
//! (`/place`, registered with the overlay's own patch, deploy/overlays/affinity). Each pod must
//! land where the rules allow in both modes, on the same kind of node (the same node where the
//! rules or the user name one), and the DaemonSets' pods must be bound to the same nodes.
//!
//! Nodes are plain Node objects (no kubelet), created Ready: "bound" means `spec.nodeName` is
//! set. Hollow nodes carry the annotation and label `spoofed: "true"` in both modes, as
//! hollow-node registers them, and the taint `mock-kind.io/hollow` in affinity mode only.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{self, WEBHOOK_NS};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const REAL: [&str; 3] = ["real-0", "real-1", "real-2"];
const HOLLOW: [&str; 3] = ["hollow-0", "hollow-1", "hollow-2"];
const WAIT: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Extender,
    Affinity,
}

/// A pod of the table: where it may be bound (empty: nowhere, it must stay Pending).
struct Case {
    namespace: &'static str,
    name: &'static str,
    annotations: Value,
    /// Merged into the pod's spec: the user's own affinity, selector, tolerations.
    spec: Value,
    allowed: Vec<&'static str>,
}

fn cases() -> Vec<Case> {
    let c = |namespace, name, annotations, spec, allowed: &[&'static str]| Case {
        namespace,
        name,
        annotations,
        spec,
        allowed: allowed.to_vec(),
    };
    let hostname_in = |nodes: &[&str]| {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]}]}}}})
    };
    let mut picky = hostname_in(&["hollow-1", "real-2"]);
    picky["tolerations"] = json!([{"key": "gpu", "operator": "Exists"}]);
    vec![
        c("team-a", "app-0", json!({}), json!({}), &HOLLOW),
        c("team-a", "app-1", json!({}), json!({}), &HOLLOW),
        c("team-a", "app-2", json!({}), json!({}), &HOLLOW),
        c("mixed", "web-1", json!({}), json!({}), &REAL),
        c("mixed", "db-0", json!({}), json!({}), &REAL),
        c("mixed", "api-0", json!({}), json!({}), &HOLLOW),
        c("plain", "app-0", json!({}), json!({}), &REAL),
        c("plain", "app-1", json!({}), json!({}), &REAL),
        c("not-quite", "app-0", json!({}), json!({}), &REAL),
        c(
            "team-a",
            "pinned-real",
            json!({"nodeName": "real-1"}),
            json!({}),
            &["real-1"],
        ),
        c(
            "plain",
            "pinned-hollow",
            json!({"nodeName": "hollow-2"}),
            json!({}),
            &["hollow-2"],
        ),
        c("team-a", "picky", json!({}), picky, &["hollow-1"]),
        c(
            "team-a",
            "selector",
            json!({}),
            json!({"nodeSelector": {"kubernetes.io/hostname": "hollow-0"}}),
            &["hollow-0"],
        ),
        c(
            "plain",
            "tolerates-all",
            json!({}),
            json!({"tolerations": [{"operator": "Exists"}]}),
            &REAL,
        ),
        c(
            "team-a",
            "nowhere",
            json!({}),
            hostname_in(&["real-0"]),
            &[],
        ),
    ]
}

/// DaemonSets and the nodes their pods must be bound to. The spoofed namespace's DaemonSet
/// tolerates every taint: the DaemonSet controller picks nodes from the template, before the
/// webhook sees a pod, so in affinity mode a DaemonSet meant for hollow nodes must tolerate
/// their taint.
fn daemon_sets() -> Vec<(&'static str, &'static str, Value, Vec<&'static str>)> {
    vec![
        ("plain", "ds-plain", json!([]), REAL.to_vec()),
        (
            "team-a",
            "ds-spoofed",
            json!([{"operator": "Exists"}]),
            HOLLOW.to_vec(),
        ),
    ]
}

fn node(name: &str, hollow: bool, mode: Mode) -> Node {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut meta = json!({"name": name, "labels": {"kubernetes.io/hostname": name}});
    let mut taints = json!([]);
    if hollow {
        meta["annotations"] = json!({"spoofed": "true"});
        meta["labels"]["spoofed"] = json!("true");
        if mode == Mode::Affinity {
            let taint = placement::affinity::hollow_taint();
            taints = serde_json::to_value(vec![taint]).expect("taint");
        }
    }
    serde_json::from_value(json!({
        "metadata": meta,
        "spec": {"taints": taints},
        "status": {
            "capacity": {"cpu": "8", "memory": "64Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "64Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "created Ready by the test",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]
        }
    }))
    .expect("node")
}

fn pod_spec(extra: &Value) -> Value {
    let mut spec = json!({
        "automountServiceAccountToken": false,
        "containers": [{"name": "app", "image": "registry.example/app:1",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    spec
}

/// The extender entry of scheduler/config/scheduler-config.v1beta1.yaml, pointed at `port`.
fn extender_entry(port: u16) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scheduler/config/scheduler-config.v1beta1.yaml"
    );
    let text = std::fs::read_to_string(path).expect("scheduler configuration");
    let doc: Value = serde_yaml::from_str(&text).expect("YAML");
    let mut entry = doc["extenders"][0].clone();
    entry["urlPrefix"] = json!(format!("http://127.0.0.1:{port}/"));
    entry
}

/// The webhook configuration of affinity mode: config/'s, plus the placement webhook that
/// deploy/overlays/affinity adds, both pointed at the in-process webhook.
fn affinity_webhook_configuration(port: u16) -> MutatingWebhookConfiguration {
    let base = cluster::webhook_configuration(port, None);
    let mut value = serde_json::to_value(base).expect("json");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/overlays/affinity/placement-webhook.yaml"
    );
    let text = std::fs::read_to_string(path).expect("overlay patch");
    let patch: json_patch::Patch = serde_yaml::from_str(&text).expect("JSON patch");
    json_patch::patch(&mut value, &patch.0).expect("patch applies");
    let hook = &mut value["webhooks"][1];
    assert_eq!(hook["clientConfig"]["service"]["path"], "/place");
    assert_eq!(hook["failurePolicy"], "Fail");
    hook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}/place")});
    serde_json::from_value(value).expect("MutatingWebhookConfiguration")
}

/// What a mode did: the node each pod of the table and each DaemonSet pod was bound to.
#[derive(Debug)]
struct Outcome {
    pods: BTreeMap<(String, String), Option<String>>,
    daemon_sets: BTreeMap<String, BTreeSet<String>>,
}

async fn run(mode: Mode) -> Outcome {
    telemetry::install_crypto_provider();
    telemetry::init_logging(false);
    let extender_port = e2e::free_port();
    let cp = e2e::ControlPlane::start(e2e::Options {
        extenders: match mode {
            Mode::Extender => vec![extender_entry(extender_port)],
            Mode::Affinity => Vec::new(),
        },
        node_monitor_grace_period: Some(Duration::from_secs(3600)),
        ..Default::default()
    })
    .await
    .expect("control plane");
    let client = cp.client();
    let shutdown = CancellationToken::new();
    cluster::create_namespace(&client, WEBHOOK_NS).await;

    // The placement: the extender in-process, or the webhook in affinity mode.
    let _webhook = match mode {
        Mode::Extender => {
            let mut config =
                scheduler::Config::new(format!("127.0.0.1:{extender_port}").parse().expect("addr"));
            config.kubeconfig = Some(cp.kubeconfig());
            let service = scheduler::Service::new();
            let ready = service.ready.clone();
            tokio::spawn(scheduler::run_with(
                config,
                cp.client(),
                service,
                shutdown.clone(),
            ));
            e2e::wait_for(WAIT, "extender ready", || {
                let ready = ready.clone();
                async move { Ok(ready.is_ready().then_some(())) }
            })
            .await
            .expect("extender");
            None
        }
        Mode::Affinity => {
            let mut config =
                cluster::config(&cp, webhook::Strategy::Pod, webhook::tls::system_clock());
            config.placement = webhook::PlacementMode::Affinity;
            let wh = common::spawn(config);
            let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
            mwcs.create(
                &PostParams::default(),
                &affinity_webhook_configuration(wh.addr.port()),
            )
            .await
            .expect("create MutatingWebhookConfiguration");
            let ca = cluster::wait_ca_bundle(&client).await;
            common::wait_ready(wh.addr, &ca).await;
            Some(wh)
        }
    };

    let nodes: Api<Node> = Api::all(client.clone());
    for (name, hollow) in REAL
        .iter()
        .map(|n| (n, false))
        .chain(HOLLOW.iter().map(|n| (n, true)))
    {
        nodes
            .create(&PostParams::default(), &node(name, hollow, mode))
            .await
            .expect("create node");
    }
    e2e::wait_for(WAIT, "not-ready taints lifted", || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await?;
            let tainted = list.items.iter().any(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key.starts_with("node.kubernetes.io/")))
            });
            Ok((list.items.len() == 6 && !tainted).then_some(()))
        }
    })
    .await
    .expect("nodes ready");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    for (name, annotations) in [
        ("team-a", json!({"spoofed": "true"})),
        (
            "mixed",
            json!({"spoofed": "true", "spoofed_excluded_pods": " db-0 , web-.* "}),
        ),
        ("plain", json!({})),
        ("not-quite", json!({"spoofed": "True"})),
    ] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))
                .expect("namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        cluster::wait_default_sa(&client, name).await;
    }

    for case in cases() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": case.name, "annotations": case.annotations},
            "spec": pod_spec(&case.spec),
        }))
        .expect("pod");
        Api::<Pod>::namespaced(client.clone(), case.namespace)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: create {}/{}: {e}", case.namespace, case.name));
    }
    for (ns, name, tolerations, _) in daemon_sets() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": pod_spec(&json!({"tolerations": tolerations})),
                },
            },
        }))
        .expect("daemonset");
        Api::<DaemonSet>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &ds)
            .await
            .expect("create daemonset");
    }

    // Everything that may be bound is; the pod with no node has been refused by the scheduler.
    let outcome = e2e::wait_for(WAIT, &format!("{mode:?}: pods bound"), || {
        let client = client.clone();
        async move {
            let pods: Api<Pod> = Api::all(client.clone());
            let all = pods.list(&ListParams::default()).await?.items;
            let node_of = |ns: &str, name: &str| {
                all.iter()
                    .find(|p| {
                        p.metadata.namespace.as_deref() == Some(ns)
                            && p.metadata.name.as_deref() == Some(name)
                    })
                    .and_then(|p| p.spec.as_ref()?.node_name.clone())
            };
            let mut done = true;
            let mut outcome = Outcome {
                pods: BTreeMap::new(),
                daemon_sets: BTreeMap::new(),
            };
            for case in cases() {
                let node = node_of(case.namespace, case.name);
                done &= node.is_some() || case.allowed.is_empty();
                outcome
                    .pods
                    .insert((case.namespace.into(), case.name.into()), node);
            }
            for (ns, name, _, want) in daemon_sets() {
                let bound: BTreeSet<String> = all
                    .iter()
                    .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
                    .filter(|p| {
                        p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("app"))
                            .map(String::as_str)
                            == Some(name)
                    })
                    .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                    .collect();
                done &= bound.len() >= want.len();
                outcome.daemon_sets.insert(name.into(), bound);
            }
            let events: Api<Event> = Api::namespaced(client.clone(), "team-a");
            let refused = events
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("FailedScheduling")
                        && e.involved_object.name.as_deref() == Some("nowhere")
                });
            Ok((done && refused).then_some(outcome))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    shutdown.cancel();
    drop(cp);
    outcome
}

fn kind(node: &str) -> &'static str {
    if HOLLOW.contains(&node) {
        "hollow"
    } else {
        "real"
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_modes_place_pods_identically() {
    let mut outcomes = Vec::new();
    for mode in [Mode::Extender, Mode::Affinity] {
        let outcome = run(mode).await;
        eprintln!("{mode:?}: {outcome:#?}");
        for case in cases() {
            let node = &outcome.pods[&(case.namespace.to_owned(), case.name.to_owned())];
            match node {
                Some(node) => assert!(
                    case.allowed.contains(&node.as_str()),
                    "{mode:?}: {}/{} on {node}, allowed {:?}",
                    case.namespace,
                    case.name,
                    case.allowed
                ),
                None => assert!(
                    case.allowed.is_empty(),
                    "{mode:?}: {}/{} unbound",
                    case.namespace,
                    case.name
                ),
            }
        }
        for (_, name, _, want) in daemon_sets() {
            let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(
                outcome.daemon_sets[name], want,
                "{mode:?}: DaemonSet {name}"
            );
        }
        outcomes.push((mode, outcome));
    }
    // Identical placements: the same kind of node for every pod (the same node where one is
    // named), the same nodes for the DaemonSets.
    let kinds = |o: &Outcome| -> BTreeMap<(String, String), Option<&'static str>> {
        o.pods
            .iter()
            .map(|(k, n)| (k.clone(), n.as_deref().map(kind)))
            .collect()
    };
    let (extender, affinity) = (&outcomes[0].1, &outcomes[1].1);
    assert_eq!(kinds(extender), kinds(affinity), "kinds of node per pod");
    assert_eq!(
        extender.daemon_sets, affinity.daemon_sets,
        "DaemonSet nodes"
    );
}
