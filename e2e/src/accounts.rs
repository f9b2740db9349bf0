//! ServiceAccounts as clients: the token Kubernetes 1.20's token controller puts in a Secret
//! (the harness's controller-manager holds the signing key), and a kubeconfig that
//! authenticates with it, so a process gets that account's RBAC and nothing more.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;

use crate::{ControlPlane, Error, wait_for};

/// The token of ServiceAccount `namespace/name`, once the token controller has made it.
pub async fn token(client: &kube::Client, namespace: &str, name: &str) -> Result<String, Error> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    wait_for(
        Duration::from_secs(60),
        &format!("a token for ServiceAccount {namespace}/{name}"),
        || {
            let (sas, secrets) = (sas.clone(), secrets.clone());
            async move {
                let Some(account) = sas.get_opt(name).await? else {
                    return Ok(None);
                };
                for r in account.secrets.into_iter().flatten() {
                    let Some(secret) = r.name else { continue };
                    let token = secrets
                        .get_opt(&secret)
                        .await?
                        .and_then(|s| s.data?.remove("token"));
                    if let Some(token) = token {
                        return Ok(Some(String::from_utf8_lossy(&token.0).into_owned()));
                    }
                }
                Ok(None)
            }
        },
    )
    .await
}

/// A kubeconfig file in the control plane's directory that authenticates with `token` as
/// ServiceAccount `name`.
pub fn kubeconfig(cp: &ControlPlane, name: &str, token: &str) -> Result<PathBuf, Error> {
    // One CA file per account: a file rewritten while another process reads it would be empty.
    let ca = cp.dir().join(format!("{name}-ca.crt"));
    std::fs::write(&ca, cp.ca_pem()).map_err(|e| Error::io(&ca, e))?;
    let path = cp.dir().join(format!("{name}.kubeconfig"));
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "cp", "cluster": { "server": cp.server(), "certificate-authority": ca } }],
        "users": [{ "name": name, "user": { "token": token } }],
        "contexts": [{ "name": name, "context": { "cluster": "cp", "user": name } }],
        "current-context": name,
    });
    std::fs::write(&path, config.to_string()).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}
