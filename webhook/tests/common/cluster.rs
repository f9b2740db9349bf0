//! Helpers for tests against the real apiserver: the webhook's configuration pointed at an
//! in-process webhook, namespaces and pods created and waited on.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use webhook::{Bootstrap, CertSource, Config, Strategy};

pub const WEBHOOK_NS: &str = "mock-kind";
pub const SECRET: &str = "mock-kind-webhook-tls";
pub const MWC: &str = "mock-kind-webhook";
pub const UID_RANGE: &str = "openshift.io/sa.scc.uid-range";
pub const GROUPS: &str = "openshift.io/sa.scc.supplemental-groups";
pub const MCS: &str = "openshift.io/sa.scc.mcs";
pub const DAY: Duration = Duration::from_secs(24 * 3600);
pub const T: Duration = Duration::from_secs(60);

pub fn cert_opts() -> certs::CertOptions {
    let mut o = certs::CertOptions::new("mock-kind-webhook", WEBHOOK_NS);
    o.extra_sans = vec!["127.0.0.1".to_owned()];
    o
}

pub fn config(cp: &e2e::ControlPlane, strategy: Strategy, clock: webhook::Clock) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        strategy,
        profile: webhook::Profile::RunAsNonRoot,
        placement: webhook::PlacementMode::None,
        namespace: WEBHOOK_NS.into(),
        exclude_namespaces: vec![
            "kube-system".into(),
            "kube-node-lease".into(),
            WEBHOOK_NS.into(),
        ],
        pod_uid_min: 1_000_000_000,
        pod_uid_max: 1_999_999_999,
        certs: CertSource::Bootstrap(Bootstrap {
            namespace: WEBHOOK_NS.into(),
            secret: SECRET.into(),
            webhook_config: Some(MWC.into()),
            cert: cert_opts(),
            renew_margin: 30 * DAY,
        }),
        cert_check_interval: Duration::from_millis(200),
        kubeconfig: Some(cp.kubeconfig().to_path_buf()),
        server: serving::Limits {
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(5),
            ..webhook::cli::default_limits()
        },
        apiserver_deadline: Duration::from_secs(4),
        uid_block_repair: Duration::ZERO,
        clock,
    }
}

/// The configuration shipped in config/, pointed at `https://127.0.0.1:<port>/mutate`.
pub fn webhook_configuration(port: u16, ca_bundle: Option<&str>) -> MutatingWebhookConfiguration {
    let path = format!(
        "{}/config/mutatingwebhookconfiguration.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("read webhook configuration");
    let mut value: serde_json::Value = serde_yaml::from_str(&text).expect("YAML");
    let mut client_config = json!({ "url": format!("https://127.0.0.1:{port}/mutate") });
    if let Some(ca) = ca_bundle {
        use base64::Engine;
        client_config["caBundle"] = base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    value["webhooks"][0]["clientConfig"] = client_config;
    serde_json::from_value(value).expect("MutatingWebhookConfiguration")
}

pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// The ServiceAccount admission plugin wants `default` to exist; the controller-manager makes it.
pub async fn wait_default_sa(client: &Client, ns: &str) {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    e2e::wait_for(T, &format!("ServiceAccount {ns}/default"), || {
        let api = api.clone();
        async move { Ok(api.get_opt("default").await?.map(|_| ())) }
    })
    .await
    .expect("default ServiceAccount");
}

pub fn pod(name: &str, non_root: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": if non_root { json!({"runAsNonRoot": true}) } else { json!({}) },
            "containers": [{"name": "app", "image": "registry.example/app:1"}],
        }
    }))
    .expect("pod")
}

pub async fn create_pod(client: &Client, ns: &str, p: &Pod, dry_run: bool) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pp = PostParams {
        dry_run,
        ..Default::default()
    };
    api.create(&pp, p)
        .await
        .unwrap_or_else(|e| panic!("create pod {ns}: {e}"))
}

pub fn uids(p: &Pod) -> (Option<i64>, Option<i64>) {
    let sc = p.spec.as_ref().and_then(|s| s.security_context.as_ref());
    (sc.and_then(|s| s.run_as_user), sc.and_then(|s| s.fs_group))
}

pub async fn annotations(client: &Client, ns: &str) -> std::collections::BTreeMap<String, String> {
    let api: Api<Namespace> = Api::all(client.clone());
    api.get(ns)
        .await
        .expect("namespace")
        .metadata
        .annotations
        .unwrap_or_default()
}

/// Waits until the namespace controller has written OpenShift's three annotations.
pub async fn wait_annotated(
    client: &Client,
    ns: &str,
) -> std::collections::BTreeMap<String, String> {
    let api: Api<Namespace> = Api::all(client.clone());
    e2e::wait_for(T, &format!("namespace {ns} annotated"), || {
        let api = api.clone();
        async move {
            let ann = api.get(ns).await?.metadata.annotations.unwrap_or_default();
            Ok([UID_RANGE, GROUPS, MCS]
                .iter()
                .all(|k| ann.contains_key(*k))
                .then_some(ann))
        }
    })
    .await
    .expect("namespace annotated by the controller")
}

/// Waits until the MutatingWebhookConfiguration trusts the Secret's CA; returns that CA.
pub async fn wait_ca_bundle(client: &Client) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), WEBHOOK_NS);
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    e2e::wait_for(T, "Secret and caBundle", || {
        let (secrets, mwcs) = (secrets.clone(), mwcs.clone());
        async move {
            let Some(secret) = secrets.get_opt(SECRET).await? else {
                return Ok(None);
            };
            let Ok(bundle) = certs::cluster::from_secret(&secret) else {
                return Ok(None);
            };
            let mwc = mwcs.get(MWC).await?;
            let ca = mwc.webhooks.unwrap_or_default()[0]
                .client_config
                .ca_bundle
                .clone();
            Ok(
                (ca.map(|b| b.0) == Some(bundle.ca_pem.clone().into_bytes()))
                    .then_some(bundle.ca_pem),
            )
        }
    })
    .await
    .expect("caBundle set")
}

/// A control plane without kube-scheduler (and with the controller-manager when asked), with
/// the webhook's namespace created.
pub async fn control_plane(controller_manager: bool) -> e2e::ControlPlane {
    let cp = e2e::ControlPlane::start(e2e::Options {
        scheduler: false,
        controller_manager,
        ..Default::default()
    })
    .await
    .expect("control plane");
    create_namespace(&cp.client(), WEBHOOK_NS).await;
    cp
}

/// Runs the webhook with `config`, registers the shipped configuration pointed at it, and
/// waits until the apiserver trusts it and it is ready.
pub async fn serve(client: &Client, config: Config) -> super::Running {
    let wh = super::spawn(config);
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwcs.create(
        &PostParams::default(),
        &webhook_configuration(wh.addr.port(), None),
    )
    .await
    .expect("create MutatingWebhookConfiguration");
    let ca = wait_ca_bundle(client).await;
    super::wait_ready(wh.addr, &ca).await;
    wh
}
