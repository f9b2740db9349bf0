//! axum glue of the kubelet API: read the credential and path, ask `routes` and `auth`, answer
//! from `logs`. One fallback handler, since `routes` is the router.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_server::tls::TlsInfo;
use jiff::Timestamp;
use tokio::sync::Semaphore;

use crate::Shared;
use crate::kubelet::auth::{self, Decision, Gate};
use crate::kubelet::endpoints::Scope;
use crate::kubelet::life::PodLife;
use crate::kubelet::logs::{self, Instance, LogOptions};
use crate::kubelet::routes::{self, Action, NodeWide, Route};
use crate::kubelet::{cadvisor, kubelet_metrics, stats};

/// `kubectl logs -f` streams open at once; one more gets 503.
pub const MAX_FOLLOWERS: usize = 256;
/// How often a followed log looks for new lines (the pod watch updates the lives).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// What every listener shares: one set of authorization caches and one follower budget.
pub struct Api {
    shared: Arc<Shared>,
    gate: Gate,
    followers: Arc<Semaphore>,
}

/// One listener's state: the shared API and the node(s) it answers for.
#[derive(Clone)]
struct Listener {
    api: Arc<Api>,
    scope: Scope,
}

pub fn limits() -> serving::Limits {
    serving::Limits {
        max_body: 64 << 10,
        max_concurrent: 512,
        // Until the response starts: a review round trip or two. Followed logs stream after.
        request_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(10),
        drain_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(5),
    }
}

pub fn api(shared: Arc<Shared>) -> Arc<Api> {
    Arc::new(Api {
        gate: Gate::new(
            shared.client.clone(),
            shared.metrics.kubelet_reviews.clone(),
        ),
        shared,
        followers: Arc::new(Semaphore::new(MAX_FOLLOWERS)),
    })
}

/// The router of one listener, answering for `scope`.
pub fn router(api: Arc<Api>, scope: Scope) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(Listener { api, scope })
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// A `metav1.Status`: what kubectl shows as `Error from server (<reason>): <message>` when
/// an exec, attach or port-forward upgrade is answered without upgrading.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = crate::metrics_api::resources::status(code.as_u16(), reason, message);
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(State(Listener { api, scope }): State<Listener>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let route = routes::route(&path);
    let Some(attrs) = routes::attributes(&method, &path) else {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    };
    let pod_key = match &route {
        Route::ContainerLogs { namespace, pod, .. } | Route::Refused { namespace, pod, .. } => {
            Some(format!("{namespace}/{pod}"))
        }
        Route::Healthz | Route::NodeWide(_) | Route::NotFound => None,
    };
    let life = pod_key.as_deref().and_then(|k| api.shared.lives.get(k));
    // A node's own port knows only that node's pods, as a kubelet does.
    let life = life.filter(|l| match scope {
        Scope::Shared => true,
        Scope::Node(i) => l.node == i,
    });
    // The listener's node, else the pod's; requests that name no pod of ours on the shared
    // port are authorized on the first node.
    let node_index = match scope {
        Scope::Node(i) => i as usize,
        Scope::Shared => life.as_ref().map_or(0, |l| l.node as usize),
    };
    let node = api
        .shared
        .nodes
        .get(node_index)
        .map(|n| n.name.as_str())
        .unwrap_or_default();
    let peer = req
        .extensions()
        .get::<Arc<TlsInfo>>()
        .and_then(|t| t.peer_certificates.first())
        .map(Vec::as_slice);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let cred = auth::credential(peer, authorization);
    let user = match api.gate.decide(cred, attrs, node).await {
        Decision::Allowed(user) => user,
        Decision::Unauthenticated => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
        Decision::Forbidden(msg) => return text(StatusCode::FORBIDDEN, msg),
        Decision::Failed(msg) => return text(StatusCode::INTERNAL_SERVER_ERROR, msg),
    };
    tracing::debug!(user = %user.name, %method, %path, "kubelet API request");
    match route {
        Route::Healthz => text(StatusCode::OK, "ok"),
        Route::NodeWide(what) => match scope.node_wide() {
            Ok(i) => node_stats(&api.shared, i, node, what, &query),
            // The shared port serves several nodes and the path names none.
            Err(why) => text(StatusCode::NOT_FOUND, why),
        },
        Route::NotFound => text(StatusCode::NOT_FOUND, "404 page not found"),
        Route::Refused { action, pod, .. } => match life {
            None => text(StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist")),
            Some(_) => refuse(action, pod_key.as_deref().unwrap_or_default(), node),
        },
        Route::ContainerLogs { pod, container, .. } => {
            let Some(life) = life else {
                return text(StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist"));
            };
            let key = pod_key.unwrap_or_default();
            container_logs(&api, &key, &pod, &container, life, node, &query, &method)
        }
    }
}

/// `/metrics/resource`, `/metrics/cadvisor`, `/metrics` or `/stats/summary` of node `i`, from
/// one sample of its pods.
fn node_stats(shared: &Shared, i: u32, node: &str, what: NodeWide, query: &str) -> Response {
    let lives = shared.lives.node(i);
    let now = Timestamp::now();
    // The summary is to the second; the metrics in whole milliseconds, so the counters are read
    // at the instant their timestamps say.
    let at = match what {
        NodeWide::StatsSummary => Timestamp::from_second(now.as_second()),
        _ => Timestamp::from_millisecond(now.as_millisecond()),
    }
    .unwrap_or(now);
    let sample = stats::sample(node, lives.boot, &lives.cpu, &lives.pods, at);
    const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
    let (content_type, body) = match what {
        NodeWide::StatsSummary => {
            let summary =
                stats::summary(&sample, shared.capacity, stats::only_cpu_and_memory(query));
            ("application/json", summary.to_string())
        }
        NodeWide::ResourceMetrics => (PROMETHEUS, stats::prometheus(&sample)),
        NodeWide::CadvisorMetrics => (PROMETHEUS, cadvisor::text(&sample, shared.capacity)),
        NodeWide::KubeletMetrics => (PROMETHEUS, kubelet_metrics::text(&sample)),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn refuse(action: Action, pod: &str, node: &str) -> Response {
    let message = format!(
        "cannot {} pod {pod}: it runs on hollow node {node}, where no container runs \
         (mock-kind simulates pods; nothing executes)",
        action.describe()
    );
    status(StatusCode::BAD_REQUEST, "BadRequest", &message)
}

#[allow(clippy::too_many_arguments)]
fn container_logs(
    api: &Arc<Api>,
    key: &str,
    pod: &str,
    container: &str,
    life: Arc<PodLife>,
    node: &str,
    query: &str,
    method: &Method,
) -> Response {
    let opts = match LogOptions::parse(query) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid log options: {e}")),
    };
    let Some(c) = life.container(container) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod:?}"),
        );
    };
    let which = if opts.previous {
        Instance::Previous
    } else {
        Instance::Current
    };
    let all = match logs::lines(c, key, node, &life.script, which) {
        Ok(l) => l,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let now = Timestamp::now();
    let (first, reached) = logs::limit(&logs::select(&all, &opts, now), opts.limit_bytes, 0);
    // Following ends with the instance: a previous one, or one that has ended, has no more.
    let follow = opts.follow && !opts.previous && !reached && !logs::finished(c);
    if *method == Method::HEAD || !follow {
        return text(StatusCode::OK, first);
    }
    let Ok(permit) = api.followers.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("more than {MAX_FOLLOWERS} logs followed at once"),
        );
    };
    let state = Follow {
        api: api.clone(),
        key: key.to_string(),
        container: container.to_string(),
        node: node.to_string(),
        uid: life.uid.clone(),
        restarts: c.restarts,
        seen: all.len(),
        sent: first.len() as u64,
        opts,
        pending: Some(first),
        done: false,
        _permit: permit,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let chunk = s.next().await?;
        Some((Ok::<Bytes, Infallible>(Bytes::from(chunk)), s))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A followed log: what has been sent, and how to tell that the instance has ended.
struct Follow {
    api: Arc<Api>,
    key: String,
    container: String,
    node: String,
    uid: String,
    restarts: i32,
    seen: usize,
    sent: u64,
    opts: LogOptions,
    pending: Option<String>,
    /// The instance ended or the byte limit was reached: the last chunk has gone out.
    done: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Follow {
    /// The next chunk to send; `None` once the pod is gone, the instance ended or the byte
    /// limit was reached.
    async fn next(&mut self) -> Option<String> {
        if let Some(first) = self.pending.take() {
            // An empty first chunk still starts the response, so the client sees headers.
            return Some(first);
        }
        loop {
            if self.done {
                return None;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
            let life = self.api.shared.lives.get(&self.key)?;
            if life.uid != self.uid {
                return None;
            }
            let c = life.container(&self.container)?;
            if c.restarts != self.restarts {
                return None;
            }
            let all =
                logs::lines(c, &self.key, &self.node, &life.script, Instance::Current).ok()?;
            let ended = logs::finished(c);
            if all.len() > self.seen {
                let fresh = &all[self.seen..];
                self.seen = all.len();
                let opts = LogOptions {
                    tail_lines: None,
                    ..self.opts.clone()
                };
                let (chunk, reached) = logs::limit(
                    &logs::select(fresh, &opts, Timestamp::now()),
                    opts.limit_bytes,
                    self.sent,
                );
                self.sent = self.sent.saturating_add(chunk.len() as u64);
                // Send what is left, then end on the next call.
                self.done = reached || ended;
                if !chunk.is_empty() {
                    return Some(chunk);
                }
            }
            if ended {
                return None;
            }
        }
    }
}
