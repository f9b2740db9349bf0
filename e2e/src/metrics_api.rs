//! Registers hollow-node's `metrics.k8s.io` with the apiserver's aggregator on loopback: an
//! `ExternalName` Service naming `localhost` (Endpoints refuse 127.0.0.0/8 and there is no
//! kube-proxy; the aggregator resolves an ExternalName Service to `<name>:<port>` itself) and
//! the `v1beta1.metrics.k8s.io` APIService pointing at it.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Error;

pub const SERVICE_NAMESPACE: &str = "kube-system";
pub const SERVICE_NAME: &str = "mock-kind-metrics";
pub const API_SERVICE: &str = "v1beta1.metrics.k8s.io";

/// Points `metrics.k8s.io/v1beta1` at `localhost:<port>` (created or updated).
pub async fn register(client: &kube::Client, port: u16) -> Result<(), Error> {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE},
        "spec": {
            "type": "ExternalName",
            "externalName": "localhost",
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    }))
    .map_err(|e| Error::Binaries(format!("metrics Service: {e}")))?;
    upsert(
        &Api::<Service>::namespaced(client.clone(), SERVICE_NAMESPACE),
        SERVICE_NAME,
        &svc,
    )
    .await?;
    let api: APIService = serde_json::from_value(json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": API_SERVICE},
        "spec": {
            "group": "metrics.k8s.io",
            "version": "v1beta1",
            "service": {"namespace": SERVICE_NAMESPACE, "name": SERVICE_NAME, "port": port},
            // hollow-node issues its own serving certificate, as metrics-server does by default.
            "insecureSkipTLSVerify": true,
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }))
    .map_err(|e| Error::Binaries(format!("metrics APIService: {e}")))?;
    upsert(&Api::<APIService>::all(client.clone()), API_SERVICE, &api).await
}

/// Creates `obj`, or merges it into the one already there.
async fn upsert<K>(api: &Api<K>, name: &str, obj: &K) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            api.patch(name, &PatchParams::default(), &Patch::Merge(obj))
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the aggregator reports the APIService Available.
pub async fn available(client: &kube::Client) -> Result<bool, Error> {
    let api = Api::<APIService>::all(client.clone())
        .get_opt(API_SERVICE)
        .await?;
    Ok(api
        .and_then(|a| a.status)
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True"))
}

/// Waits up to `timeout` until the aggregator reports the APIService Available.
pub async fn wait_available(
    client: &kube::Client,
    timeout: std::time::Duration,
) -> Result<(), Error> {
    crate::wait_for(
        timeout,
        "APIService v1beta1.metrics.k8s.io Available",
        || async { Ok(available(client).await?.then_some(())) },
    )
    .await
}

/// How many NodeMetrics `metrics.k8s.io` lists (what `kubectl top nodes` reads), or the error.
pub async fn node_metrics(client: &kube::Client) -> Result<usize, String> {
    let req = http::Request::get(format!("/apis/metrics.k8s.io/{}/nodes", "v1beta1"))
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let list: serde_json::Value = client.request(req).await.map_err(|e| e.to_string())?;
    Ok(list["items"].as_array().map_or(0, Vec::len))
}
