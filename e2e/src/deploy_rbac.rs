//! deploy/'s RBAC on the harness's control plane: an overlay rendered by `kubectl kustomize`,
//! its namespaces, ServiceAccounts and (Cluster)Roles with their bindings applied, and a
//! kubeconfig per service that authenticates as its ServiceAccount, so a service run here has
//! exactly the rights an installation gives it. Shared by the least-privilege test and
//! `make sandbox`, whose demonstration must hold under those rights too.

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::Record;
use crate::{ControlPlane, Error, workspace_root};

/// The kinds applied: what gives the services their identities and rights. Workloads are run
/// as local processes instead, and webhook configurations point at them.
pub const RBAC_KINDS: [&str; 6] = [
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// (namespace, ServiceAccount) of the extender, the webhook and hollow-node, as deploy/base
/// names them.
pub const SCHEDULER: (&str, &str) = ("mock-kind-extender", "mock-kind-scheduler");
pub const WEBHOOK: (&str, &str) = ("mock-kind", "mock-kind-webhook");
pub const HOLLOW_NODE: (&str, &str) = ("mock-kind", "hollow-node");
pub const SERVICES: [(&str, &str); 3] = [SCHEDULER, WEBHOOK, HOLLOW_NODE];

fn command_error(what: &str, reason: String) -> Error {
    Error::Start {
        component: what.to_owned(),
        reason,
        log: PathBuf::new(),
        tail: String::new(),
    }
}

/// Runs `cmd` (kubectl) and returns its stdout, or an error carrying its stderr.
pub fn kubectl(cmd: &mut Command, stdin: Option<&str>) -> Result<String, Error> {
    let what = format!("{cmd:?}");
    let out = crate::process::run_with_input(cmd, stdin)?;
    if !out.status.success() {
        return Err(command_error(
            &what,
            format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl kustomize deploy/overlays/<overlay>`, parsed.
pub fn render(overlay: &str) -> Result<Vec<Value>, Error> {
    let dir = workspace_root().join("deploy/overlays").join(overlay);
    let text = kubectl(Command::new("kubectl").arg("kustomize").arg(&dir), None)?;
    let mut objs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc)
            .map_err(|e| command_error("kubectl kustomize", format!("not YAML: {e}")))?;
        if !v.is_null() {
            objs.push(v);
        }
    }
    Ok(objs)
}

/// The objects of `objs` whose kind is one of `kinds`.
pub fn of_kinds(objs: &[Value], kinds: &[&str]) -> Vec<Value> {
    objs.iter()
        .filter(|o| kinds.contains(&o["kind"].as_str().unwrap_or("")))
        .cloned()
        .collect()
}

/// `kubectl apply` of `objs` as one List, with the control plane's admin kubeconfig.
pub fn apply(cp: &ControlPlane, objs: &[Value]) -> Result<(), Error> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objs}).to_string();
    kubectl(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(cp.kubeconfig())
            .args(["apply", "-f", "-"]),
        Some(&list),
    )
    .map(|_| ())
}

/// A kubeconfig per service that authenticates with its ServiceAccount's token.
#[derive(Clone, Debug)]
pub struct Kubeconfigs {
    pub scheduler: PathBuf,
    pub webhook: PathBuf,
    pub hollow_node: PathBuf,
}

/// [`Kubeconfigs`] for the accounts of [`SERVICES`], once their tokens exist.
pub async fn kubeconfigs(cp: &ControlPlane) -> Result<Kubeconfigs, Error> {
    let client = cp.client();
    let of = |(ns, sa): (&'static str, &'static str)| {
        let client = client.clone();
        async move {
            let token = crate::accounts::token(&client, ns, sa).await?;
            crate::accounts::kubeconfig(cp, sa, &token)
        }
    };
    Ok(Kubeconfigs {
        scheduler: of(SCHEDULER).await?,
        webhook: of(WEBHOOK).await?,
        hollow_node: of(HOLLOW_NODE).await?,
    })
}

/// The records of the services' accounts, and of those the ones the RBAC refused (403).
pub fn services_records(records: Vec<Record>) -> (Vec<Record>, Vec<Record>) {
    let users: Vec<String> = SERVICES
        .iter()
        .map(|(ns, sa)| crate::rbac::service_account_user(ns, sa))
        .collect();
    let ours: Vec<Record> = records
        .into_iter()
        .filter(|r| users.contains(&r.user))
        .collect();
    let refused = ours.iter().filter(|r| r.code == 403).cloned().collect();
    (ours, refused)
}
