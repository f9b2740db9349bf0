//! Node Leases over the wire, as a kubelet keeps them: created with the Node, renewed on their
//! own lane (a protobuf PUT on the last resourceVersion, else a JSON merge patch), and the
//! queue handler that times renewals with `lease::LeaseTiming`. Kept apart from `nodes` because
//! renewals are the one write that must never wait behind node or pod work.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PostParams};
use serde_json::json;
use tokio::time::Instant;

use crate::lease::{LeaseEncoding, proto};
use crate::nodes::{health, write_status};
use crate::queue::Work;
use crate::retry;
use crate::{Error, Shared, api_err, is_not_found, patch_params};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

fn lease_object(name: &str, node_uid: Option<String>, duration: Duration) -> Lease {
    let mut lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": duration.as_secs(),
            "renewTime": MicroTime(jiff::Timestamp::now()),
        }
    }))
    .unwrap_or_default();
    if let Some(uid) = node_uid {
        lease.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.into(),
                uid,
                ..Default::default()
            },
        ]);
    }
    lease
}

pub(crate) async fn ensure_lease(
    shared: &Shared,
    i: usize,
    uid: Option<String>,
) -> Result<(), Error> {
    let name = &shared.nodes[i].name;
    let api: Api<Lease> = Api::namespaced(shared.client.clone(), LEASE_NAMESPACE);
    let lease = lease_object(name, uid, shared.config.lease.duration);
    let created = shared
        .creates
        .run(async move { api.create(&PostParams::default(), &lease).await })
        .await
        .ok_or_else(|| Error::ShuttingDown(format!("lease {LEASE_NAMESPACE}/{name}")))?;
    match created {
        Ok(lease) => {
            if let Ok(mut st) = shared.nodes[i].state.lock() {
                st.lease_rv = lease.metadata.resource_version;
            }
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(api_err(format!("create lease {LEASE_NAMESPACE}/{name}"))(e)),
    }
}

/// One renewal: a protobuf PUT on the last resourceVersion when it is known (as the kubelet
/// renews), else a JSON merge patch; either way the answer's resourceVersion is kept for the
/// next one. A PUT that lost to another write (409) falls back to the patch at once, and the
/// node keeps patching (see `NodeState::lease_shared`).
async fn renew(shared: &Shared, idx: usize) -> Result<(), kube::Error> {
    let slot = &shared.nodes[idx];
    let client = &shared.lease_clients[idx % shared.lease_clients.len().max(1)];
    let timing = shared.config.lease;
    let (rv, uid) = slot
        .state
        .lock()
        .map(|s| {
            (
                s.lease_rv.clone().filter(|_| !s.lease_shared),
                s.uid.clone(),
            )
        })
        .unwrap_or_default();
    let keep = |rv: Option<String>| {
        if let Ok(mut st) = slot.state.lock() {
            st.lease_rv = rv;
        }
    };
    let now = jiff::Timestamp::now();
    if shared.config.lease_encoding == LeaseEncoding::Protobuf
        && let Some(rv) = rv
    {
        let renewal = proto::Renewal {
            name: &slot.name,
            namespace: LEASE_NAMESPACE,
            resource_version: &rv,
            node_uid: uid.as_deref(),
            duration_secs: i32::try_from(timing.duration.as_secs()).unwrap_or(i32::MAX),
            renew_time: (now.as_second(), now.subsec_nanosecond()),
        };
        match put_protobuf(client, &slot.name, proto::encode(&renewal)).await {
            Ok(answer) => {
                // Landed; an answer we cannot read only costs the next renewal a patch.
                keep(proto::resource_version(&answer).ok());
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                if let Ok(mut st) = slot.state.lock() {
                    st.lease_shared = true;
                }
                tracing::info!(node = %slot.name, "the Lease was written by someone else: renewed by merge patches from now on");
            }
            Err(e) => return Err(e),
        }
    }
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let patch = json!({"spec": {
        "holderIdentity": slot.name,
        "leaseDurationSeconds": timing.duration.as_secs(),
        "renewTime": MicroTime(now),
    }});
    let lease = api
        .patch(&slot.name, &patch_params(), &Patch::Merge(&patch))
        .await?;
    keep(lease.metadata.resource_version);
    Ok(())
}

/// PUTs a protobuf Lease; the answer's body on 200, else the refusal as `kube::Error::Api`
/// (its Status when the body is one, as the client layer makes of 429s and 5xx).
async fn put_protobuf(
    client: &kube::Client,
    name: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, kube::Error> {
    use http_body_util::BodyExt;
    let uri = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}?fieldManager={}",
        crate::FIELD_MANAGER
    );
    let request = http::Request::put(uri)
        .header(http::header::CONTENT_TYPE, proto::CONTENT_TYPE)
        .header(http::header::ACCEPT, proto::CONTENT_TYPE)
        .body(kube::client::Body::from(body))
        .map_err(kube::Error::HttpError)?;
    let response = client.send(request).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| kube::Error::Service(Box::new(e)))?
        .to_bytes();
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let refusal = serde_json::from_slice::<kube::core::Status>(&body)
        .ok()
        .filter(|s| s.code == status.as_u16())
        .unwrap_or_else(|| {
            kube::core::Status::failure(
                &format!("lease {LEASE_NAMESPACE}/{name}: HTTP {status}"),
                status.canonical_reason().unwrap_or(""),
            )
            .with_code(status.as_u16())
        });
    Err(kube::Error::Api(Box::new(refusal)))
}

/// Queue handler for `Work::Lease`: renews unless the node is unhealthy or not registered.
/// `waited` is how long the renewal was due before a slot took it; with the wait for the
/// Lease lane's budget it makes the renewal's lateness.
pub async fn handle_lease(shared: &Shared, i: u32, waited: Duration) {
    let idx = i as usize;
    if idx >= shared.nodes.len() {
        return;
    }
    let slot = &shared.nodes[idx];
    let timing = shared.config.lease;
    let (h, _) = health(shared, idx);
    let registered = slot.state.lock().is_ok_and(|s| s.registered);
    if !h.is_ready() || !registered {
        // A faulty node's kubelet does not renew: the node-lifecycle controller notices. A
        // node not registered yet has no Lease to renew; registering it creates one.
        shared.queue().add(Work::Lease(i), timing.renew_interval);
        return;
    }
    let taken = Instant::now();
    shared.lease_budget.acquire().await;
    shared.metrics.lease_late(waited + taken.elapsed());
    // When the renewal stamps its renewTime: the next one is due an interval after it.
    let stamped = Instant::now();
    // A renewal that has not landed within an interval is stale: the next one replaces it.
    let res = tokio::time::timeout(timing.renew_interval, renew(shared, idx)).await;
    let failure = match res {
        Ok(Ok(_)) => None,
        Ok(Err(e)) if is_not_found(&e) => {
            let uid = slot.state.lock().ok().and_then(|s| s.uid.clone());
            match ensure_lease(shared, idx, uid).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(node = %slot.name, error = %e, "re-creating the lease failed");
                    Some(e.failure())
                }
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(node = %slot.name, error = %e, "lease renewal failed");
            Some(retry::classify(&e))
        }
        Err(_) => {
            // The abandoned PUT may still land: the next renewal patches (and learns the
            // resourceVersion again) rather than PUT on a version that may be gone, whose 409
            // would make this node patch for good.
            if let Ok(mut st) = slot.state.lock() {
                st.lease_rv = None;
            }
            tracing::warn!(node = %slot.name, timeout = ?timing.renew_interval, "lease renewal timed out");
            Some(retry::Failure::Transient { retry_after: None })
        }
    };
    let ok = failure.is_none();
    let (next, rewrite) = {
        let Ok(mut st) = slot.state.lock() else {
            return;
        };
        let next = match failure {
            None => {
                st.last_lease_ok = Instant::now();
                st.lease_failures = 0;
                timing.next_delay_after(stamped.elapsed(), rand::random())
            }
            Some(f) => {
                st.lease_failures = st.lease_failures.saturating_add(1);
                st.status_suspect = true;
                let retry_after = match f {
                    retry::Failure::Transient { retry_after } => retry_after,
                    retry::Failure::Permanent => None,
                };
                timing.retry_delay(
                    st.lease_failures,
                    st.last_lease_ok.elapsed(),
                    retry_after,
                    rand::random(),
                )
            }
        };
        (next, ok && st.status_suspect)
    };
    if rewrite {
        match write_status(shared, idx, true).await {
            Ok(_) => {
                if let Ok(mut st) = slot.state.lock() {
                    st.status_suspect = false;
                }
            }
            // Still suspect: tried again after the next renewal.
            Err(e) => tracing::warn!(node = %slot.name, error = %e, "node status rewrite failed"),
        }
    }
    shared.queue().add(Work::Lease(i), next);
}
