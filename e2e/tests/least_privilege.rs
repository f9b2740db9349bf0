//! Least privilege, proven from the apiserver's audit log: deploy/'s RBAC (the kind overlay, as
//! `kubectl kustomize` renders it) is applied to the real control plane, each service binary
//! runs under its own ServiceAccount's token through its normal work, and every permission the
//! RBAC grants must show up as used in the audit log — or be one of the named exceptions below,
//! each justified in deploy/README.md ("Least privilege"). No request of the three accounts may
//! be refused either.
//!
//! The work: the extender filters for kube-scheduler and reports a bad namespace annotation;
//! the webhook bootstraps its certificate, publishes its caBundle and mutates pods (reached at
//! 127.0.0.1, as the in-cluster Service would route), and a second replica that must serve one
//! more name renews the certificate; the hollow node adopts a Node someone else registered
//! without a podCIDR, registers the rest, renews their Leases, runs pods that reference a Secret
//! and a ConfigMap (checking Secrets in one namespace, bound by the README's RoleBinding
//! template), repeats a Warning Event, reviews the token and rights of a kubelet API caller,
//! finishes a pod's deletion and, on SIGTERM, deletes its Nodes; then, as `--pool`, it runs a
//! HollowNodePool (membership Lease, finalizer, status, its Node), deletes its Node and Lease
//! when the pool is deleted, and its membership Lease when it stops. The harness's kube-scheduler runs as the cluster admin, as does `make sandbox`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::audit::Record;
use e2e::deploy_rbac;
use e2e::process::Component;
use e2e::rbac::{self, Grant};
use e2e::{ControlPlane, Options, workspace_root};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

const NAMESPACE: &str = "mock-kind";
const EXTENDER_NAMESPACE: &str = "mock-kind-extender";
/// The spoofed namespace whose pods go to hollow nodes.
const TEAM: &str = "team-a";
const T: Duration = Duration::from_secs(90);

/// (namespace, ServiceAccount, binary) of each service.
const SERVICES: [(&str, &str, &str); 3] = [
    (
        EXTENDER_NAMESPACE,
        "mock-kind-scheduler",
        "mock-kind-scheduler",
    ),
    (NAMESPACE, "mock-kind-webhook", "mock-kind-webhook"),
    (NAMESPACE, "hollow-node", "hollow-node"),
];

/// Granted but not used in this run, on purpose. Each is named with its reason in
/// deploy/README.md, "Least privilege"; the test checks that the README says so and that each
/// one is still unused (a stale exception fails too). Each is (`<account> <verb>
/// <resource>[/<sub>][.<group>]`, why). None at present: every grant is used.
const EXCEPTIONS: &[(&str, &str)] = &[];

// ---------------------------------------------------------------------------------------------
// Processes and manifests.

fn run(cmd: &mut Command, stdin: Option<&str>) -> String {
    deploy_rbac::kubectl(cmd, stdin).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for an Event of team-a that `want` picks (the hollow node's repeat takes its 20 s
/// retry period, hence the longer deadline).
async fn wait_event(
    events: &Api<Event>,
    what: &str,
    running: &[Component],
    want: impl Fn(&Event) -> bool,
) {
    let want = &want;
    e2e::wait_for(Duration::from_secs(120), what, || async move {
        let list = events.list(&ListParams::default()).await?.items;
        Ok(list.iter().any(want).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(running)));
}

fn secrets_in(client: &kube::Client, namespace: &str) -> Api<Secret> {
    Api::namespaced(client.clone(), namespace)
}

fn logs(running: &[Component]) -> String {
    running
        .iter()
        .map(|c| format!("--- {} ---\n{}\n", c.name, c.tail(25)))
        .collect()
}

fn label(p: &Pod) -> String {
    let status = p.status.as_ref();
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .collect::<Vec<_>>()
        .join(",");
    format!("{phase}{waiting}")
}

async fn wait_pod(pods: &Api<Pod>, name: &str, want: &str, running: &[Component]) -> Pod {
    e2e::wait_for(T, &format!("pod {TEAM}/{name} {want}"), || async move {
        Ok(pods.get_opt(name).await?.filter(|p| label(p) == want))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(running)))
}

/// A pod for the hollow nodes: asks for a non-root user without naming one (the webhook's
/// work), mounts `secret` and reads `configmap` into its environment.
fn pod(name: &str, secret: &str, configmap: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": true},
            "volumes": [{"name": "creds", "secret": {"secretName": secret}}],
            "containers": [{
                "name": "app", "image": "example.invalid/app:1",
                "volumeMounts": [{"name": "creds", "mountPath": "/creds"}],
                "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": configmap, "key": "mode"}}}],
            }],
        },
    }))
    .expect("pod")
}

// ---------------------------------------------------------------------------------------------
// The comparison.

/// An exception's spelling: `<account> <verb> <resource>[/<sub>][.<group>]`, scope left out.
fn short(g: &Grant) -> String {
    let account = g.user.rsplit(':').next().unwrap_or(&g.user);
    format!("{account} {}", g.what())
}

/// What each account used, one line per (verb, resource, scope) with a count.
fn summary(records: &[Record]) -> String {
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        let scope = if r.namespace.is_empty() {
            "cluster".to_owned()
        } else {
            r.namespace.clone()
        };
        let sub = if r.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", r.subresource)
        };
        *used
            .entry(format!(
                "{} {} {}{sub} {} ({scope}) {}",
                r.user, r.verb, r.resource, r.api_group, r.code
            ))
            .or_default() += 1;
    }
    used.iter().map(|(k, n)| format!("  {k} x{n}\n")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_granted_permission_is_used_by_the_services_or_a_named_exception() {
    let bin_dir = e2e::bins::workspace_binaries().expect("workspace binaries");
    let (extender_port, webhook_port, hollow_port, kubelet_port) = (
        e2e::free_port(),
        e2e::free_port(),
        e2e::free_port(),
        e2e::free_port(),
    );

    // kube-scheduler calls the extender as in the kind cluster, at our port.
    let kind = std::fs::read_to_string(
        workspace_root().join("deploy/kind/scheduler/scheduler-config.yaml"),
    )
    .expect("read the kind scheduler config");
    let kind: Value = serde_yaml::from_str(&kind).expect("YAML");
    let mut extenders = kind["extenders"].as_array().cloned().expect("extenders");
    for e in &mut extenders {
        e["urlPrefix"] = format!("http://127.0.0.1:{extender_port}/").into();
    }
    let cp = ControlPlane::start(Options {
        audit_log: true,
        extenders,
        ..Options::default()
    })
    .await
    .expect("control plane");
    let kc = cp.kubeconfig();
    let client = cp.client();
    let kubectl = || {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig").arg(&kc);
        c
    };

    // deploy/'s RBAC, namespaces and webhook configuration (the workloads are the processes
    // below). The webhook is reached at 127.0.0.1 instead of through its Service; the
    // namespace that checks Secrets gets the README's RoleBinding.
    let rendered = deploy_rbac::render("kind").expect("kubectl kustomize deploy/overlays/kind");
    let mut kinds = deploy_rbac::RBAC_KINDS.to_vec();
    kinds.push("MutatingWebhookConfiguration");
    let mut objs: Vec<Value> = deploy_rbac::of_kinds(&rendered, &kinds);
    for o in &mut objs {
        if o["kind"] == "MutatingWebhookConfiguration" {
            for hook in o["webhooks"].as_array_mut().into_iter().flatten() {
                hook["clientConfig"] =
                    json!({"url": format!("https://127.0.0.1:{webhook_port}/mutate")});
            }
        }
    }
    run(kubectl().args(["create", "namespace", TEAM]), None);
    run(
        kubectl().args([
            "annotate",
            "namespace",
            TEAM,
            "spoofed=true",
            // Not a regular expression: the extender reports it with a Warning Event.
            "spoofed_excluded_pods=([",
        ]),
        None,
    );
    let binding = run(
        kubectl().args([
            "-n",
            TEAM,
            "create",
            "rolebinding",
            "mock-kind-hollow-node-secret-refs",
            "--clusterrole=mock-kind-hollow-node-secret-refs",
            "--serviceaccount=mock-kind:hollow-node",
            "--dry-run=client",
            "-o",
            "json",
        ]),
        None,
    );
    objs.push(serde_json::from_str(&binding).expect("RoleBinding JSON"));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objs}).to_string();
    run(kubectl().args(["apply", "-f", "-"]), Some(&list));

    // A Node of the hollow node's name that someone else registered, without a podCIDR: the
    // hollow node's create meets it (409), reads it back and patches its podCIDR in.
    let nodes: Api<Node> = Api::all(client.clone());
    let foreign: Node =
        serde_json::from_value(json!({"metadata": {"name": "hollow-node-0-2"}})).expect("node");
    nodes
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create Node hollow-node-0-2");
    // Its Lease too, as a hollow node that ran before would have left it: the create meets it
    // (409), so the first renewal does not know its resourceVersion and merge-patches (the
    // adoption path), and the next ones are protobuf PUTs (update).
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    let foreign_lease = serde_json::from_value(json!({
        "metadata": {"name": "hollow-node-0-2"},
        "spec": {"holderIdentity": "hollow-node-0-2", "leaseDurationSeconds": 40}
    }))
    .expect("lease");
    leases
        .create(&PostParams::default(), &foreign_lease)
        .await
        .expect("create Lease hollow-node-0-2");

    // The three services, each under its own ServiceAccount's token.
    let mut kubeconfigs = Vec::new();
    for (ns, sa, _) in SERVICES {
        let token = e2e::accounts::token(&client, ns, sa)
            .await
            .expect("service account token");
        kubeconfigs.push(e2e::accounts::kubeconfig(&cp, sa, &token).expect("kubeconfig"));
    }
    let flags: [Vec<String>; 3] = [
        vec![format!("--listen=127.0.0.1:{extender_port}")],
        vec![
            format!("--listen=127.0.0.1:{webhook_port}"),
            format!("--namespace={NAMESPACE}"),
            "--extra-san=127.0.0.1".into(),
            "--strategy=namespace".into(),
        ],
        vec![
            "--nodes=3".into(),
            "--node-prefix=hollow-node-0".into(),
            format!("--listen=127.0.0.1:{hollow_port}"),
            format!("--kubelet-port={kubelet_port}"),
            "--internal-ip=127.0.0.1".into(),
            "--lease-duration=10s".into(),
            "--lease-renew-interval=2s".into(),
            "--delete-nodes-on-exit".into(),
            "--secret-refs=namespaces".into(),
            format!("--secret-namespaces={TEAM}"),
        ],
    ];
    let mut running = Vec::new();
    for (((_, _, bin), kubeconfig), flags) in SERVICES.iter().zip(&kubeconfigs).zip(flags) {
        let mut args = vec![format!("--kubeconfig={}", kubeconfig.display())];
        args.extend(flags);
        let log = cp.dir().join(format!("{bin}.log"));
        running.push(Component::spawn(bin, &bin_dir.join(bin), &args, &log).expect("start"));
    }

    // Webhook: certificate bootstrapped into its Secret, CA published in the caBundle.
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    e2e::wait_for(T, "the caBundle of mock-kind-webhook", || async {
        let mwc = mwcs.get("mock-kind-webhook").await?;
        Ok(mwc
            .webhooks
            .into_iter()
            .flatten()
            .find_map(|w| w.client_config.ca_bundle)
            .filter(|b| !b.0.is_empty()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&running)));

    // Serving (the apiserver skips a webhook it cannot reach: failurePolicy Ignore).
    e2e::wait_for(T, "the webhook's /readyz", || async {
        let url = format!("https://127.0.0.1:{webhook_port}/readyz");
        let ok = Command::new("curl")
            .args(["-skf", "--max-time", "2", &url])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Ok(ok.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&running)));

    // Hollow node: three Nodes, the adopted one with its podCIDR.
    let hollow_nodes = |list: Vec<Node>| -> usize {
        list.iter()
            .filter(|n| {
                n.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("hollow-node-0-"))
            })
            .count()
    };
    e2e::wait_for(
        T,
        "3 hollow nodes, hollow-node-0-2 with a podCIDR",
        || async {
            let adopted = nodes
                .get("hollow-node-0-2")
                .await?
                .spec
                .is_some_and(|s| s.pod_cidr.is_some());
            let n = hollow_nodes(nodes.list(&ListParams::default()).await?.items);
            Ok((n == 3 && adopted).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&running)));

    // Pods of the spoofed namespace: scheduled through the extender onto hollow nodes,
    // mutated by the webhook, run by the hollow node once what they reference exists.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), TEAM);
    e2e::wait_for(T, "ServiceAccount team-a/default", || async {
        Ok(sas.get_opt("default").await?.map(|_| ()))
    })
    .await
    .expect("default ServiceAccount");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), TEAM);
    let pods: Api<Pod> = Api::namespaced(client.clone(), TEAM);
    let secret = |name: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"k": "v"}}))
            .expect("secret")
    };
    secrets
        .create(&PostParams::default(), &secret("creds"))
        .await
        .expect("create Secret creds");
    let pp = PostParams::default();
    pods.create(&pp, &pod("waits-for-config", "creds", "settings"))
        .await
        .expect("create pod");
    pods.create(&pp, &pod("waits-for-secret", "later", "settings"))
        .await
        .expect("create pod");
    let mutated = wait_pod(
        &pods,
        "waits-for-secret",
        "PendingContainerCreating",
        &running,
    )
    .await;
    let uid = mutated
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.run_as_user);
    assert!(uid.is_some(), "the webhook gave the pod a UID: {mutated:?}");
    wait_pod(
        &pods,
        "waits-for-config",
        "PendingCreateContainerConfigError",
        &running,
    )
    .await;

    // The hollow node repeats its Warning once the retry period passed: the Event's series.
    let events: Api<Event> = Api::namespaced(client.clone(), TEAM);
    wait_event(
        &events,
        "a repeated Failed Event (series count 2)",
        &running,
        |e| {
            e.reason.as_deref() == Some("Failed") && e.series.as_ref().is_some_and(|s| s.count >= 2)
        },
    )
    .await;
    wait_event(
        &events,
        "the extender's InvalidExcludedPodPattern Event",
        &running,
        |e| e.reason.as_deref() == Some("InvalidExcludedPodPattern"),
    )
    .await;

    let settings: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"mode": "x"}}))
            .expect("configmap");
    Api::namespaced(client.clone(), TEAM)
        .create(&pp, &settings)
        .await
        .expect("create ConfigMap");
    secrets
        .create(&pp, &secret("later"))
        .await
        .expect("create Secret later");
    for name in ["waits-for-config", "waits-for-secret"] {
        wait_pod(&pods, name, "Running", &running).await;
    }

    // A second webhook replica that must serve one more name renews the shared certificate
    // (replacing the Secret) and republishes the caBundle.
    let before = secrets_in(&client, NAMESPACE)
        .get("mock-kind-webhook-tls")
        .await
        .expect("webhook Secret");
    let args = vec![
        format!("--kubeconfig={}", kubeconfigs[1].display()),
        format!("--listen=127.0.0.1:{}", e2e::free_port()),
        format!("--namespace={NAMESPACE}"),
        "--extra-san=127.0.0.1,localhost".into(),
        "--strategy=namespace".into(),
    ];
    let log = cp.dir().join("mock-kind-webhook-2.log");
    running.push(
        Component::spawn(
            "mock-kind-webhook-2",
            &bin_dir.join("mock-kind-webhook"),
            &args,
            &log,
        )
        .expect("start"),
    );
    let tls = secrets_in(&client, NAMESPACE);
    e2e::wait_for(
        T,
        "the webhook certificate renewed for localhost",
        || async {
            let now = tls.get("mock-kind-webhook-tls").await?;
            Ok((now.metadata.resource_version != before.metadata.resource_version).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&running)));

    // A caller of the kubelet API with a bearer token (here the extender's, which has no
    // nodes/proxy): the hollow node reviews the token, then the caller's rights.
    let caller = e2e::accounts::token(&client, SERVICES[0].0, SERVICES[0].1)
        .await
        .expect("extender token");
    let (code, _) = e2e::process::curl_insecure(
        &format!("https://127.0.0.1:{kubelet_port}/containerLogs/{TEAM}/waits-for-config/app"),
        Some(&caller),
    )
    .await
    .expect("curl");
    assert_eq!(
        code,
        403,
        "the extender may not read logs from the kubelet API\n{}",
        logs(&running)
    );

    // Deleted pods go (the hollow node finishes the deletion), then the Nodes on SIGTERM.
    pods.delete("waits-for-config", &DeleteParams::default())
        .await
        .expect("delete pod");
    e2e::wait_for(T, "pod waits-for-config gone", || async {
        Ok(pods
            .get_opt("waits-for-config")
            .await?
            .is_none()
            .then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&running)));
    running[2].terminate(Duration::from_secs(60));
    e2e::wait_for(T, "the hollow nodes deleted on SIGTERM", || async {
        Ok((hollow_nodes(nodes.list(&ListParams::default()).await?.items) == 0).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&running)));

    // --pool under the same account (installing the CRD is the cluster admin's part): the
    // pool's finalizer and status written, its Node registered; then the pool deleted, so its
    // Node and Lease go and the finalizer is removed.
    e2e::pools::install_crd(&cp).expect("install the CRD");
    let pool = json!({
        "apiVersion": "mock-kind.io/v1alpha1",
        "kind": "HollowNodePool",
        "metadata": {"name": "lp"},
        "spec": {"replicas": 1},
    });
    e2e::pools::apply(&cp, &pool).expect("apply pool lp");
    let pool_args = vec![
        format!("--kubeconfig={}", kubeconfigs[2].display()),
        "--pool=lp".into(),
        format!("--pool-namespace={NAMESPACE}"),
        format!("--listen=127.0.0.1:{}", e2e::free_port()),
        format!("--kubelet-port={}", e2e::free_port()),
        "--internal-ip=127.0.0.1".into(),
        "--lease-duration=10s".into(),
        "--lease-renew-interval=2s".into(),
    ];
    running.push(
        Component::spawn(
            "hollow-node-pool",
            &bin_dir.join("hollow-node"),
            &pool_args,
            &cp.dir().join("hollow-node-pool.log"),
        )
        .expect("start the pool's hollow node"),
    );
    let pool_status = || {
        run(
            kubectl().args([
                "get",
                "hollownodepool/lp",
                "-o",
                "jsonpath={.status.readyNodes}/{.metadata.finalizers}",
            ]),
            None,
        )
    };
    e2e::wait_for(T, "pool lp: 1 Ready node and the finalizer", || async {
        Ok(pool_status().starts_with("1/").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", pool_status(), logs(&running)));
    run(
        kubectl().args(["delete", "hollownodepool/lp", "--timeout=90s"]),
        None,
    );
    let pool_node = nodes.get_opt("lp-0").await.expect("get lp-0");
    assert!(pool_node.is_none(), "the deleted pool's Node is gone");
    for c in &mut running {
        c.terminate(Duration::from_secs(10));
    }

    // The comparison.
    let records = cp.audit_records().expect("audit log");
    let users: Vec<String> = SERVICES
        .iter()
        .map(|(ns, sa, _)| rbac::service_account_user(ns, sa))
        .collect();
    let ours: Vec<Record> = records
        .into_iter()
        .filter(|r| users.contains(&r.user))
        .collect();
    let used = summary(&ours);
    eprintln!("requests of the three accounts:\n{used}");
    for user in &users {
        assert!(
            ours.iter().any(|r| &r.user == user),
            "no request of {user} in the audit log"
        );
    }
    let refused: Vec<&Record> = ours.iter().filter(|r| r.code == 403).collect();
    assert!(
        refused.is_empty(),
        "requests the RBAC refused:\n{refused:#?}\n{}",
        logs(&running)
    );

    let grants = rbac::grants(&objs);
    for user in &users {
        assert!(grants.iter().any(|g| &g.user == user), "{user}: no grants");
    }
    let unused = rbac::unused(&grants, &ours);
    let unexplained: Vec<String> = unused
        .iter()
        .filter(|g| !EXCEPTIONS.iter().any(|(e, _)| *e == short(g)))
        .map(|g| g.to_string())
        .collect();
    let stale: Vec<&str> = EXCEPTIONS
        .iter()
        .map(|(e, _)| *e)
        .filter(|e| !unused.iter().any(|g| short(g) == *e))
        .collect();
    let readme = std::fs::read_to_string(workspace_root().join("deploy/README.md"))
        .expect("deploy/README.md");
    let undocumented: Vec<&str> = EXCEPTIONS
        .iter()
        .map(|(e, _)| *e)
        .filter(|e| !readme.contains(&format!("`{e}`")))
        .collect();
    assert!(
        unexplained.is_empty() && stale.is_empty() && undocumented.is_empty(),
        "granted but never used:\n  {}\nexceptions that are used after all: {stale:?}\n\
         exceptions deploy/README.md does not name: {undocumented:?}\nused:\n{used}",
        unexplained.join("\n  ")
    );
}
