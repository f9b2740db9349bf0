//! axum routes: `/mutate` translates AdmissionReview <-> mutation, records metrics; plus the
//! operability routes from `telemetry`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use prometheus_client::registry::Registry;
use telemetry::Readiness;

use crate::admission;
use crate::affinity_mode::{self, Placed};
use crate::metrics::{AdmissionLabels, Metrics, Outcome, StrategyLabel, StrategyLabels};
use crate::mutation::{self, Ids};
use crate::namespaces::NamespaceRanges;
use crate::restricted_v2::{self, SccNamespace, Verdict};
use crate::strategy::{self, Profile};

/// Request bodies above this are refused with 413 (the apiserver sends at most ~3 MiB objects).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Where UIDs come from.
pub enum UidSource {
    Namespace(Arc<NamespaceRanges>),
    Pod { min: i64, max: i64 },
}

impl UidSource {
    fn label(&self) -> StrategyLabel {
        match self {
            UidSource::Namespace(_) => StrategyLabel::Namespace,
            UidSource::Pod { .. } => StrategyLabel::Pod,
        }
    }

    /// The IDs, and why an annotation was passed over if one was (for the answer's warnings).
    async fn ids(&self, namespace: &str, wait: Duration) -> Result<(Ids, Option<String>), String> {
        match self {
            UidSource::Namespace(ranges) => {
                ranges.ids(namespace, wait).await.map_err(|e| e.to_string())
            }
            UidSource::Pod { min, max } => {
                Ok((strategy::random_pod_ids(&mut rand::rng(), *min, *max), None))
            }
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub uids: Arc<UidSource>,
    pub metrics: Arc<Metrics>,
    /// Never mutated (kube-system, kube-node-lease, the webhook's own namespace…): clusters
    /// before 1.21 lack the `kubernetes.io/metadata.name` label the namespaceSelector uses.
    pub exclude_namespaces: Arc<[String]>,
    /// What the webhook makes of pods.
    pub profile: Profile,
    /// `--placement affinity`: namespaces for `/place` (which is not served without).
    pub placement: Option<Arc<NamespaceRanges>>,
    /// The namespace read/write of one review must end within this, well inside the webhook
    /// configuration's `timeoutSeconds`: past it the pod is allowed unchanged with a warning
    /// instead of the apiserver timing the call out.
    pub apiserver_deadline: Duration,
}

/// `/mutate` plus `/healthz`, `/readyz`, `/metrics`.
pub fn router(
    state: AppState,
    registry: Arc<Registry>,
    ready: Readiness,
    health: telemetry::Health,
) -> Router {
    let mut routes = Router::new().route("/mutate", post(mutate));
    if state.placement.is_some() {
        routes = routes.route("/place", post(place));
    }
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
        .merge(telemetry::ops_router(registry, ready, health))
}

#[tracing::instrument(skip_all, fields(uid, namespace, pod, operation))]
async fn mutate(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let (outcome, response) = review(&state, &body).await;
    record(&state, state.uids.label(), outcome, started);
    response
}

/// Counts an admission and its duration.
fn record(state: &AppState, strategy: StrategyLabel, outcome: Outcome, started: Instant) {
    state
        .metrics
        .admissions
        .get_or_create(&AdmissionLabels { outcome, strategy })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&StrategyLabels { strategy })
        .observe(started.elapsed().as_secs_f64());
}

/// A pod CREATE to mutate: the request, the pod as sent and decoded. Anything else is answered
/// at once (400 for a bad body; allowed untouched for other operations, resources, subresources
/// and excluded namespaces; allowed with a warning for an undecodable pod).
struct PodCreate {
    request: admission::AdmissionRequest,
    namespace: String,
    sent: crate::fitted_patch::Sent,
    pod: Pod,
}

fn pod_create(state: &AppState, body: &[u8]) -> Result<PodCreate, Box<(Outcome, Response)>> {
    let mut request = match admission::parse(body) {
        Ok(r) => r,
        Err(message) => {
            tracing::warn!(%message, "bad request");
            return Err(Box::new((
                Outcome::BadRequest,
                (StatusCode::BAD_REQUEST, message).into_response(),
            )));
        }
    };
    let object = request.object.take();
    let text = object
        .as_deref()
        .map_or("null", serde_json::value::RawValue::get);
    let span = tracing::Span::current();
    span.record("uid", request.uid.as_str());
    span.record("operation", request.operation.as_str());
    let namespace = request.namespace.clone().unwrap_or_default();
    span.record("namespace", namespace.as_str());
    let allow = |warnings: Vec<String>| {
        axum::Json(admission::allow(&request.uid, None, warnings)).into_response()
    };

    // Only pod CREATE is ever mutated; UPDATE (and anything else the configuration may have
    // been widened to) passes through untouched.
    let is_pod = request.resource.group.is_empty() && request.resource.resource == "pods";
    let subresource = request.sub_resource.as_deref().unwrap_or_default();
    let excluded = state.exclude_namespaces.contains(&namespace);
    if request.operation != "CREATE" || !is_pod || !subresource.is_empty() || excluded {
        return Err(Box::new((Outcome::Skipped, allow(Vec::new()))));
    }

    // Straight from the text into the typed pod; the patches are fitted to the object as sent.
    match serde_json::from_str(text) {
        Ok(pod) => Ok(PodCreate {
            request,
            namespace,
            sent: crate::fitted_patch::Sent::read(text),
            pod,
        }),
        Err(e) => {
            let name = request.name.clone().unwrap_or_default();
            tracing::warn!(error = %e, pod = %format!("{namespace}/{name}"), "object is not a decodable Pod; allowed unchanged");
            let warning =
                format!("mock-kind-webhook: pod {namespace}/{name} not decodable, unchanged: {e}");
            Err(Box::new((
                Outcome::Undecodable,
                allow(vec![truncate(warning)]),
            )))
        }
    }
}

async fn review(state: &AppState, body: &[u8]) -> (Outcome, Response) {
    let PodCreate {
        request,
        namespace,
        sent,
        pod,
    } = match pod_create(state, body) {
        Ok(create) => create,
        Err(answer) => return *answer,
    };
    let span = tracing::Span::current();
    let allow = |patch: Option<&json_patch::Patch>, warnings: Vec<String>| {
        axum::Json(admission::allow(&request.uid, patch, warnings)).into_response()
    };
    let pod_name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    span.record("pod", pod_name.as_str());

    if state.profile == Profile::OpenshiftRestrictedV2 {
        let deny = |message: &str| {
            tracing::info!(pod = %pod_name, %message, "refused");
            axum::Json(admission::deny(&request.uid, message)).into_response()
        };
        let UidSource::Namespace(ranges) = state.uids.as_ref() else {
            return (Outcome::Denied, deny(restricted_v2::NO_PROVIDER));
        };
        let deadline = state.apiserver_deadline;
        let view =
            tokio::time::timeout(deadline, ranges.view(&namespace, annotation_wait(deadline)))
                .await;
        let ns = match view {
            Ok(Ok(view)) if view.privileged => {
                return (Outcome::Unchanged, allow(None, Vec::new()));
            }
            Ok(Ok(view)) => SccNamespace::from_annotations(&view.annotations),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_elapsed) => Err(format!(
                "namespace {namespace}: not read within {} ms",
                deadline.as_millis()
            )),
        };
        // As OpenShift: without the namespace's annotations there is no SCC to admit with.
        let ns = match ns {
            Ok(ns) => ns,
            Err(reason) => {
                tracing::warn!(%reason, "no restricted-v2 provider for the namespace");
                return (Outcome::Denied, deny(restricted_v2::NO_PROVIDER));
            }
        };
        return match restricted_v2::admit_sent(sent.has_metadata, &pod, &ns) {
            Verdict::Admit(patch) if patch.0.is_empty() => {
                (Outcome::Unchanged, allow(None, Vec::new()))
            }
            Verdict::Admit(patch) => (Outcome::Patched, allow(Some(&patch), Vec::new())),
            Verdict::Deny(message) => (Outcome::Denied, deny(&message)),
        };
    }

    if !mutation::needs_uid(&pod) {
        return (Outcome::Unchanged, allow(None, Vec::new()));
    }
    let dry_run = request.dry_run.unwrap_or(false);
    let deadline = state.apiserver_deadline;
    let decided = tokio::time::timeout(
        deadline,
        state.uids.ids(&namespace, annotation_wait(deadline)),
    )
    .await;
    let (ids, ignored) = match decided {
        Ok(Ok(decided)) => decided,
        Ok(Err(message)) => {
            tracing::warn!(%message, "no UID decided; allowed unchanged");
            let warning =
                format!("mock-kind-webhook: pod {namespace}/{pod_name} got no UID: {message}");
            return (Outcome::Error, allow(None, vec![truncate(warning)]));
        }
        Err(_elapsed) => {
            let ms = deadline.as_millis();
            tracing::warn!(
                deadline_ms = ms,
                "namespace read/write missed its deadline; allowed unchanged"
            );
            let warning = format!(
                "mock-kind-webhook: pod {namespace}/{pod_name} got no UID: the apiserver did not answer the namespace read/write within {ms} ms"
            );
            return (Outcome::Deadline, allow(None, vec![truncate(warning)]));
        }
    };
    let patch = mutation::patch(&pod, ids);
    tracing::debug!(
        uid = ids.uid,
        fs_group = ids.fs_group,
        ops = patch.0.len(),
        dry_run,
        "patched"
    );
    let warnings = ignored
        .map(|why| truncate(format!("mock-kind-webhook: namespace {namespace}: {why}")))
        .into_iter()
        .collect();
    (Outcome::Patched, allow(Some(&patch), warnings))
}

/// `/place` (affinity mode): the placement rules written into the pod.
#[tracing::instrument(skip_all, fields(uid, namespace, pod, operation))]
async fn place(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let (outcome, response) = placement_review(&state, &body).await;
    record(&state, StrategyLabel::Placement, outcome, started);
    response
}

async fn placement_review(state: &AppState, body: &[u8]) -> (Outcome, Response) {
    let Some(namespaces) = state.placement.as_ref() else {
        return (Outcome::Skipped, StatusCode::NOT_FOUND.into_response());
    };
    let create = match pod_create(state, body) {
        Ok(create) => create,
        Err(answer) => return *answer,
    };
    let uid = create.request.uid.as_str();
    let namespace = create.namespace.as_str();
    tracing::Span::current().record("pod", affinity_mode::pod_name(&create.pod));
    // A namespace that cannot be read is not guessed: the refusal is retried by the pod's
    // client or controller, as the extender's retryable error is by the scheduler.
    let deadline = state.apiserver_deadline;
    let (policy, warnings) =
        match tokio::time::timeout(deadline, namespaces.placement(namespace)).await {
            Ok(Ok((policy, warnings))) => (Some(policy), warnings),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "namespace not read for placement");
                (None, Vec::new())
            }
            Err(_elapsed) => {
                tracing::warn!(
                    deadline_ms = deadline.as_millis(),
                    "namespace read missed its deadline"
                );
                (None, Vec::new())
            }
        };
    let warnings = warnings
        .into_iter()
        .map(|w| truncate(format!("mock-kind-webhook: namespace {namespace}: {w}")))
        .collect();
    match affinity_mode::place(&create.sent, &create.pod, namespace, policy.as_ref()) {
        Placed::Patch(patch) if patch.0.is_empty() => (
            Outcome::Unchanged,
            axum::Json(admission::allow(uid, None, warnings)).into_response(),
        ),
        Placed::Patch(patch) => (
            Outcome::Patched,
            axum::Json(admission::allow(uid, Some(&patch), warnings)).into_response(),
        ),
        Placed::Refuse(message) => {
            tracing::info!(%message, "refused");
            (
                Outcome::Denied,
                axum::Json(admission::deny(uid, &message)).into_response(),
            )
        }
    }
}

/// How long a review waits for the namespace controller's annotations: most of the deadline,
/// so that a namespace still unannotated is reported as such, not as a slow apiserver.
pub fn annotation_wait(deadline: Duration) -> Duration {
    deadline.saturating_sub(deadline / 4)
}

/// Warnings over 256 characters may be cut by the apiserver; cut them ourselves on a char edge.
fn truncate(mut s: String) -> String {
    let end = telemetry::char_prefix(&s, 250).len();
    s.truncate(end);
    s
}
