//! The bundle in the cluster: a `kubernetes.io/tls` Secret (with `ca.crt`) kept valid with
//! create-if-absent and resourceVersion preconditions, and the caBundle of a
//! MutatingWebhookConfiguration kept equal to the Secret's `ca.crt`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::{
    Bundle, CA_CRT, CertOptions, Error, Result, TLS_CRT, TLS_KEY, generate, renewal_reason,
};

/// How many times a write that lost a race is retried after re-reading.
const ATTEMPTS: usize = 8;

/// A `kubernetes.io/tls` Secret holding `bundle`.
pub fn to_secret(namespace: &str, name: &str, bundle: &Bundle) -> Secret {
    let data = BTreeMap::from([
        (
            TLS_CRT.to_owned(),
            ByteString(bundle.cert_pem.clone().into_bytes()),
        ),
        (
            TLS_KEY.to_owned(),
            ByteString(bundle.key_pem.clone().into_bytes()),
        ),
        (
            CA_CRT.to_owned(),
            ByteString(bundle.ca_pem.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "mock-kind-certs".to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

/// The bundle stored in a Secret; names the missing key otherwise.
pub fn from_secret(secret: &Secret) -> Result<Bundle> {
    let field = |key: &'static str| -> Result<String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| Error::SecretField {
                namespace: secret.metadata.namespace.clone().unwrap_or_default(),
                name: secret.metadata.name.clone().unwrap_or_default(),
                key,
            })
    };
    Ok(Bundle {
        ca_pem: field(CA_CRT)?,
        cert_pem: field(TLS_CRT)?,
        key_pem: field(TLS_KEY)?,
    })
}

/// What [`ensure_secret`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The Secret was valid beyond the margin.
    Kept,
    /// The Secret did not exist; this call created it.
    Created,
    /// The Secret was invalid or expiring; this call replaced it.
    Renewed,
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Makes sure Secret `namespace/name` holds a bundle for `opts` valid beyond `now + margin`.
/// Several callers at once agree on one bundle: creation is create-if-absent and renewal a
/// replace with the read resourceVersion; the loser of either race re-reads and keeps the
/// winner's bundle.
pub async fn ensure_secret(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    opts: &CertOptions,
    now: SystemTime,
    margin: Duration,
) -> Result<(Bundle, Action)> {
    let what = format!("Secret {namespace}/{name}");
    for _ in 0..ATTEMPTS {
        let existing = api
            .get_opt(name)
            .await
            .map_err(|e| Error::Kube(format!("reading {what}: {e}")))?;
        match existing {
            None => {
                let bundle = generate(opts, now, None)?;
                match api
                    .create(&PostParams::default(), &to_secret(namespace, name, &bundle))
                    .await
                {
                    Ok(_) => return Ok((bundle, Action::Created)),
                    Err(e) if api_code(&e) == Some(409) => continue,
                    Err(e) => return Err(Error::Kube(format!("creating {what}: {e}"))),
                }
            }
            Some(secret) => {
                let current = from_secret(&secret);
                let reason = match &current {
                    Ok(b) => renewal_reason(b, opts, now, margin),
                    Err(e) => Some(e.to_string()),
                };
                let Some(reason) = reason else {
                    if let Ok(b) = current {
                        return Ok((b, Action::Kept));
                    }
                    continue;
                };
                tracing::info!(secret = %what, %reason, "renewing serving certificate");
                let previous_ca = current
                    .as_ref()
                    .ok()
                    .and_then(|b| crate::still_needed_ca(b, now));
                let bundle = generate(opts, now, previous_ca.as_deref())?;
                let mut replacement = to_secret(namespace, name, &bundle);
                replacement.metadata.resource_version = secret.metadata.resource_version.clone();
                replacement.metadata.labels = secret
                    .metadata
                    .labels
                    .clone()
                    .or(replacement.metadata.labels);
                replacement.metadata.annotations = secret.metadata.annotations.clone();
                match api
                    .replace(name, &PostParams::default(), &replacement)
                    .await
                {
                    Ok(_) => return Ok((bundle, Action::Renewed)),
                    Err(e) if api_code(&e) == Some(409) => continue,
                    Err(e) => return Err(Error::Kube(format!("replacing {what}: {e}"))),
                }
            }
        }
    }
    Err(Error::Kube(format!(
        "{what}: gave up after {ATTEMPTS} conflicting writes"
    )))
}

/// Sets `clientConfig.caBundle` of every webhook in MutatingWebhookConfiguration `name` to
/// `ca_pem` (replace with resourceVersion, retried on conflict). Returns whether it changed.
pub async fn ensure_ca_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    ca_pem: &str,
) -> Result<bool> {
    let what = format!("MutatingWebhookConfiguration {name}");
    for _ in 0..ATTEMPTS {
        let mut mwc = match api.get(name).await {
            Ok(m) => m,
            Err(e) if api_code(&e) == Some(404) => {
                return Err(Error::WebhookConfigNotFound {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(Error::Kube(format!("reading {what}: {e}"))),
        };
        let mut changed = false;
        for hook in mwc.webhooks.iter_mut().flatten() {
            let want = Some(ByteString(ca_pem.as_bytes().to_vec()));
            if hook.client_config.ca_bundle != want {
                hook.client_config.ca_bundle = want;
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        match api.replace(name, &PostParams::default(), &mwc).await {
            Ok(_) => return Ok(true),
            Err(e) if api_code(&e) == Some(409) => continue,
            Err(e) => {
                return Err(Error::Kube(format!(
                    "{what}: writing webhooks[].clientConfig.caBundle: {e}"
                )));
            }
        }
    }
    Err(Error::Kube(format!(
        "{what}: gave up after {ATTEMPTS} conflicting writes"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trip_and_missing_field() {
        let bundle = Bundle {
            ca_pem: "ca".into(),
            cert_pem: "crt".into(),
            key_pem: "key".into(),
        };
        let secret = to_secret("ns", "s", &bundle);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(from_secret(&secret).expect("round trip"), bundle);

        let mut broken = secret.clone();
        broken.data.as_mut().map(|d| d.remove(CA_CRT));
        let err = from_secret(&broken)
            .expect_err("missing ca.crt")
            .to_string();
        assert!(err.contains("ns/s") && err.contains("ca.crt"), "{err}");
    }
}
