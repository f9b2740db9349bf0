//! HTTP routes of the extender (`/filter`, `/preempt`): decode the wire types, ask the rules,
//! encode the answer, record metrics. Nothing here blocks or calls the API server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::cache::Cache;
use crate::extender::{
    ErrorResult, ExtenderArgs, ExtenderPreemptionArgs, ExtenderPreemptionResult, FilterResult,
    MetaPod, MetaVictims, Object, Passed, Str,
};
use crate::metrics::{Metrics, RequestResult, Tally, Verb};
use crate::rules::{self, NodeKind, PodFacts, Reason, Verdict};

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub cache: Arc<Cache>,
    pub metrics: Metrics,
}

/// The extender's routes (verbs relative to the `urlPrefix` in the scheduler configuration).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/filter", post(filter))
        .route("/preempt", post(preempt))
        // The server's --max-body-bytes is the limit (serving); axum's 2 MB default would
        // refuse whole Node objects (nodeCacheCapable: false) of a few hundred nodes.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A request we answer without a decision. `retry` errors come from state that will heal
/// (caches, an unknown namespace); the others from a malformed request.
#[derive(Debug)]
pub struct Failure {
    pub result: RequestResult,
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    fn retry(message: String) -> Self {
        Failure {
            result: RequestResult::Retry,
            status: StatusCode::OK,
            message,
        }
    }
    fn bad(status: StatusCode, message: String) -> Self {
        Failure {
            result: RequestResult::BadRequest,
            status,
            message,
        }
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn not_synced(cache: &Cache) -> Failure {
    Failure::retry(format!(
        "mock-kind-scheduler is starting: its {} cache has not synced yet; retry",
        cache.unsynced().join(" and ")
    ))
}

/// The pod a request is about, once the caches have synced (else a retryable failure); its
/// namespace and name go on the request's span.
fn request_pod<'a>(
    state: &AppState,
    pod: Option<&'a Object<'a>>,
    what: &str,
) -> Result<PodFacts<'a>, Failure> {
    if !state.cache.is_synced() {
        return Err(not_synced(&state.cache));
    }
    let pod = pod_facts(pod, what)?;
    let span = tracing::Span::current();
    span.record("namespace", pod.namespace);
    span.record("pod", pod.name);
    Ok(pod)
}

/// The pod's identity and its `nodeName` annotation; errors name the missing field.
fn pod_facts<'a>(pod: Option<&'a Object<'a>>, what: &str) -> Result<PodFacts<'a>, Failure> {
    let Some(pod) = pod else {
        return Err(Failure::bad(
            StatusCode::BAD_REQUEST,
            format!("{what} has no Pod"),
        ));
    };
    let meta = &pod.metadata;
    let name = meta.name.as_deref().unwrap_or_default();
    let Some(namespace) = meta.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return Err(Failure::bad(
            StatusCode::BAD_REQUEST,
            format!("{what}: pod {name:?} has no metadata.namespace"),
        ));
    };
    if name.is_empty() {
        return Err(Failure::bad(
            StatusCode::BAD_REQUEST,
            format!("{what}: a pod in namespace {namespace} has no metadata.name"),
        ));
    }
    Ok(PodFacts {
        namespace,
        name,
        pinned_node: meta.annotation(rules::POD_NODE_NAME),
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(namespace, pod))]
async fn filter(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let (result, response) = match answer_filter(&state, &body) {
        Ok(body) => (RequestResult::Ok, json(StatusCode::OK, body)),
        Err(f) => {
            tracing::debug!(error = %f.message, "filter answered with an error");
            let body = serde_json::to_vec(&ErrorResult { error: &f.message }).unwrap_or_default();
            (f.result, json(f.status, body))
        }
    };
    state
        .metrics
        .observe(Verb::Filter, result, started.elapsed());
    response
}

/// The filter decision for one `ExtenderArgs` body, encoded as an `ExtenderFilterResult`.
pub fn answer_filter(state: &AppState, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let args: ExtenderArgs<'_> = serde_json::from_slice(body).map_err(|e| {
        Failure::bad(
            StatusCode::BAD_REQUEST,
            format!("the body is not ExtenderArgs JSON: {e}"),
        )
    })?;
    let pod = request_pod(state, args.pod.as_ref(), "ExtenderArgs")?;
    let policy = state.cache.namespace(pod.namespace);
    let placement = rules::placement(&pod, policy.as_deref())
        .map_err(|e| Failure::retry(format!("pod {}/{}: {e}", pod.namespace, pod.name)))?;

    let mut tally = Tally::default();
    // Full nodes (nodeCacheCapable: false), parsed before `failed` so reasons can borrow names.
    let mut nodes: Vec<Object<'_>> = Vec::new();
    let mut failed: Vec<(&str, Reason<'_>)> = Vec::new();
    let reason = |rejection| Reason {
        pod: &pod,
        placement: &placement,
        rejection,
    };
    let passed = if let Some(names) = args.node_names.as_ref() {
        let nodes = state.cache.nodes();
        let mut passed = Vec::with_capacity(names.len());
        for name in names {
            let name: &str = name;
            let verdict = rules::decide(&placement, name, nodes.get(name).copied());
            tally.add(verdict);
            match verdict {
                Verdict::Pass => passed.push(name),
                Verdict::Reject(r) => failed.push((name, reason(r))),
            }
        }
        Passed::Names(passed)
    } else if let Some(list) = args.nodes.as_ref() {
        let mut passed = Vec::with_capacity(list.items.len());
        nodes.reserve(list.items.len());
        for (i, raw) in list.items.iter().enumerate() {
            let node: Object<'_> = serde_json::from_str(raw.get()).map_err(|e| {
                Failure::bad(
                    StatusCode::BAD_REQUEST,
                    format!("ExtenderArgs: Nodes.items[{i}] is not a Node: {e}"),
                )
            })?;
            nodes.push(node);
        }
        for (i, (node, raw)) in nodes.iter().zip(&list.items).enumerate() {
            let Some(name) = node.metadata.name.as_deref() else {
                return Err(Failure::bad(
                    StatusCode::BAD_REQUEST,
                    format!("ExtenderArgs: Nodes.items[{i}] has no metadata.name"),
                ));
            };
            // The scheduler sent the whole node: its own annotation is fresher than our cache.
            let kind = NodeKind::from_annotation(node.metadata.annotation(rules::SPOOFED));
            let verdict = rules::decide(&placement, name, Some(kind));
            tally.add(verdict);
            match verdict {
                Verdict::Pass => passed.push(*raw),
                Verdict::Reject(r) => failed.push((name, reason(r))),
            }
        }
        Passed::Nodes(passed)
    } else {
        return Err(Failure::bad(
            StatusCode::BAD_REQUEST,
            format!(
                "ExtenderArgs for pod {}/{} has neither NodeNames nor Nodes",
                pod.namespace, pod.name
            ),
        ));
    };
    state.metrics.record(Verb::Filter, &tally);
    tracing::debug!(rejected = failed.len(), "filtered");
    let result = FilterResult {
        passed,
        failed: &failed,
    };
    // Roughly: name + reason per rejected node plus the passed names.
    let mut out = Vec::with_capacity(256 + failed.len() * 100 + body.len() / 4);
    serde_json::to_writer(&mut out, &result).map_err(|e| {
        Failure::bad(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the filter result: {e}"),
        )
    })?;
    Ok(out)
}

#[tracing::instrument(level = "debug", skip_all, fields(namespace, pod))]
async fn preempt(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let (result, response) = match answer_preempt(&state, &body) {
        Ok(body) => (RequestResult::Ok, json(StatusCode::OK, body)),
        // ExtenderPreemptionResult has no Error field: kube-scheduler only sees a non-200 status.
        Err(f) => {
            tracing::debug!(error = %f.message, "preempt answered with an error");
            let status = if f.status == StatusCode::OK {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                f.status
            };
            (f.result, (status, f.message).into_response())
        }
    };
    state
        .metrics
        .observe(Verb::Preempt, result, started.elapsed());
    response
}

/// Keeps only the candidate nodes our filter accepts for the preemptor, so preemption never
/// evicts pods from a node the pod may not use. Always answers `NodeNameToMetaVictims`.
pub fn answer_preempt(state: &AppState, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let args: ExtenderPreemptionArgs<'_> = serde_json::from_slice(body).map_err(|e| {
        Failure::bad(
            StatusCode::BAD_REQUEST,
            format!("the body is not ExtenderPreemptionArgs JSON: {e}"),
        )
    })?;
    let pod = request_pod(state, args.pod.as_ref(), "ExtenderPreemptionArgs")?;
    let policy = state.cache.namespace(pod.namespace);
    let placement = rules::placement(&pod, policy.as_deref())
        .map_err(|e| Failure::retry(format!("pod {}/{}: {e}", pod.namespace, pod.name)))?;

    let nodes = state.cache.nodes();
    let mut tally = Tally::default();
    let mut keep = |node: &str| {
        let verdict = rules::decide(&placement, node, nodes.get(node).copied());
        tally.add(verdict);
        verdict == Verdict::Pass
    };
    let mut out: BTreeMap<Str<'_>, MetaVictims<'_>> = BTreeMap::new();
    if let Some(meta) = args.node_name_to_meta_victims {
        for (node, victims) in meta {
            if keep(&node) {
                out.insert(
                    node,
                    victims.unwrap_or(MetaVictims {
                        pods: Vec::new(),
                        num_pdb_violations: 0,
                    }),
                );
            }
        }
    } else if let Some(full) = args.node_name_to_victims {
        for (node, victims) in full {
            if !keep(&node) {
                continue;
            }
            let mut meta = MetaVictims {
                pods: Vec::new(),
                num_pdb_violations: 0,
            };
            if let Some(victims) = victims {
                meta.num_pdb_violations = victims.num_pdb_violations;
                for (i, victim) in victims.pods.into_iter().enumerate() {
                    let m = victim.metadata;
                    let Some(uid) = m.uid else {
                        return Err(Failure::bad(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "ExtenderPreemptionArgs: victim {}/{} (NodeNameToVictims[{}].Pods[{i}]) has no metadata.uid",
                                m.namespace.as_deref().unwrap_or_default(),
                                m.name.as_deref().unwrap_or_default(),
                                &*node
                            ),
                        ));
                    };
                    meta.pods.push(MetaPod { uid });
                }
            }
            out.insert(node, meta);
        }
    }
    drop(nodes);
    state.metrics.record(Verb::Preempt, &tally);
    serde_json::to_vec(&ExtenderPreemptionResult {
        node_name_to_meta_victims: out,
    })
    .map_err(|e| {
        Failure::bad(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the preemption result: {e}"),
        )
    })
}
