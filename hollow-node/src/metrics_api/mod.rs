//! `metrics.k8s.io/v1beta1` (`kubectl top`, the HPA) served by hollow-node itself through an
//! APIService, for clusters without metrics-server. Opt-in (`--metrics-api-port`), so it never
//! collides with an installed metrics-server. It knows only this process's nodes and pods: one
//! replica answers for the cluster's hollow nodes only when it runs them all.
//!
//! Requests come from the apiserver's aggregator, which has already authenticated and
//! authorized the user on `metrics.k8s.io`; they are let in when they carry a client
//! certificate from the front-proxy CA (`--requestheader-client-ca-file`) whose CN is an
//! allowed name, as an extension apiserver's request-header authentication does. No second
//! SubjectAccessReview is made (metrics-server makes one; every caller here has passed the
//! apiserver's authorization of the same verb on the same resource).
//!
//! `resources` and `selector` are the decisions; this module is the glue.

pub mod protobuf;
pub mod resources;
pub mod selector;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_server::tls::TlsInfo;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::kubelet::{KubeletError, auth};
use crate::usage::{self, Usage};
use resources::{NodeSample, PodSample, Request as Req};

/// The ConfigMap where the apiserver publishes its request-header CA, read by extension
/// apiservers.
const AUTH_CONFIGMAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");
const CA_KEY: &str = "requestheader-client-ca-file";
/// Longest query string read.
const MAX_QUERY: usize = 8192;

/// How the metrics API is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsApi {
    /// Where it listens; `None`: not served.
    pub listen: Option<SocketAddr>,
    /// PEM CA of the aggregator's client certificates; `None`: the apiserver's
    /// `requestheader-client-ca-file` from `kube-system/extension-apiserver-authentication`.
    pub client_ca_file: Option<PathBuf>,
    /// Common names accepted from that CA; empty: any.
    pub allowed_names: Vec<String>,
}

/// The front-proxy CA as PEM: the file's, else the one the apiserver publishes.
pub async fn client_ca_pem(api: &MetricsApi, client: &kube::Client) -> crate::Result<String> {
    if let Some(path) = &api.client_ca_file {
        return std::fs::read_to_string(path).map_err(|source| {
            KubeletError::Read {
                path: path.clone(),
                source,
            }
            .into()
        });
    }
    let (ns, name) = AUTH_CONFIGMAP;
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), ns);
    let cm = cms.get(name).await.map_err(|source| crate::Error::Api {
        what: format!("reading ConfigMap {ns}/{name} (the front-proxy CA)"),
        source,
    })?;
    // A public certificate, held only to build the TLS configuration.
    cm.data
        .and_then(|mut d| d.remove(CA_KEY))
        .ok_or_else(|| KubeletError::NoClientCa.into())
}

/// Binds the metrics API's listener and serves it until `shutdown`.
pub async fn start(
    shared: Arc<Shared>,
    addr: SocketAddr,
    client_ca: &str,
    shutdown: CancellationToken,
) -> crate::Result<tokio::task::JoinHandle<()>> {
    let mut names = vec!["localhost".to_string(), addr.ip().to_string()];
    names.push(format!("{}.metrics", shared.config.prefix));
    let pair = crate::kubelet::issue(names, &shared.config.prefix)?;
    let tls =
        serving::tls::server_config_with_client_ca(&pair, client_ca).map_err(KubeletError::from)?;
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|source| crate::Error::Listen { addr, source })?;
    let router = Router::new().fallback(handle).with_state(shared);
    let limits = serving::Limits {
        max_concurrent: 256,
        ..crate::kubelet::server::limits()
    };
    Ok(crate::kubelet::spawn_tls(
        listener,
        router,
        limits,
        tls,
        shutdown,
        "metrics API",
    ))
}

fn json(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    json(code, &resources::status(code.as_u16(), reason, message))
}

fn label_selector(query: &str) -> Result<Vec<selector::Requirement>, String> {
    if query.len() > MAX_QUERY {
        return Err("query too long".into());
    }
    for pair in query.split('&') {
        if let Some(raw) = pair.strip_prefix("labelSelector=") {
            let s = crate::kubelet::logs::unescape(raw).ok_or("bad %-escape in labelSelector")?;
            return selector::parse(&s).map_err(|e| e.to_string());
        }
    }
    Ok(Vec::new())
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let cert = req
        .extensions()
        .get::<Arc<TlsInfo>>()
        .and_then(|t| t.peer_certificates.first())
        .and_then(|der| auth::certificate_user(der));
    let allowed = &shared.config.metrics_api.allowed_names;
    match cert {
        None => return failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
        Some(u) if !allowed.is_empty() && !allowed.contains(&u.name) => {
            let msg = format!(
                "client certificate {:?} is not an allowed front proxy",
                u.name
            );
            return failure(StatusCode::UNAUTHORIZED, "Unauthorized", &msg);
        }
        Some(_) => {}
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "get and list only",
        );
    }
    let path = req.uri().path();
    let reqs = match label_selector(req.uri().query().unwrap_or("")) {
        Ok(r) => r,
        Err(e) => return failure(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_default();
    let now = Now {
        text: now.to_string(),
        seconds: now.as_second(),
    };
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = if protobuf::wants_protobuf(accept) {
        Format::Protobuf
    } else {
        Format::Json
    };
    match resources::route(path) {
        Req::Group => json(StatusCode::OK, &resources::group()),
        Req::Resources => json(StatusCode::OK, &resources::resources()),
        Req::NotFound => failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
        Req::Nodes { name } => nodes(&shared, name.as_deref(), &reqs, &now, format),
        Req::Pods { namespace, name } => pods(
            &shared,
            namespace.as_deref(),
            name.as_deref(),
            &reqs,
            &now,
            format,
        ),
    }
}

/// The usage of each running container of each pod, by pod key.
fn running(life: &crate::kubelet::life::PodLife) -> Vec<(&str, Usage)> {
    life.containers
        .iter()
        .filter(|c| c.running())
        .map(|c| (c.name.as_str(), c.usage))
        .collect()
}

/// How an answer is written: what the caller's `Accept` prefers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Protobuf,
}

/// The moment an answer is for: RFC 3339 for JSON, seconds for protobuf.
struct Now {
    text: String,
    seconds: i64,
}

fn protobuf(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, protobuf::MEDIA_TYPE)],
        body,
    )
        .into_response()
}

/// How one resource's samples are written, in either format.
struct Kind<T> {
    list: &'static str,
    one: &'static str,
    resource: &'static str,
    json: fn(&T, &str) -> Value,
    protobuf_list: fn(&[T], i64) -> Vec<u8>,
    protobuf_one: fn(&T, i64) -> Vec<u8>,
}

/// The list, or the one item `name` asks for (404 when it is not among `items`).
fn answer<T>(
    kind: &Kind<T>,
    items: &[T],
    name: Option<&str>,
    now: &Now,
    format: Format,
) -> Response {
    match (name, items.first(), format) {
        (None, _, Format::Json) => {
            let items = items.iter().map(|i| (kind.json)(i, &now.text)).collect();
            json(StatusCode::OK, &resources::list(kind.list, items))
        }
        (None, _, Format::Protobuf) => protobuf((kind.protobuf_list)(items, now.seconds)),
        (Some(_), Some(item), Format::Json) => json(
            StatusCode::OK,
            &resources::object(kind.one, (kind.json)(item, &now.text)),
        ),
        (Some(_), Some(item), Format::Protobuf) => protobuf((kind.protobuf_one)(item, now.seconds)),
        (Some(n), None, _) => failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{}.metrics.k8s.io {n:?} not found", kind.resource),
        ),
    }
}

fn nodes(
    shared: &Shared,
    name: Option<&str>,
    reqs: &[selector::Requirement],
    now: &Now,
    format: Format,
) -> Response {
    let mut per_node: Vec<Vec<Usage>> = vec![Vec::new(); shared.nodes.len()];
    for (_, life) in shared.lives.all() {
        if let Some(v) = per_node.get_mut(life.node as usize) {
            v.extend(running(&life).into_iter().map(|(_, u)| u));
        }
    }
    let tpl = &shared.config.template;
    let items: Vec<NodeSample<'_>> = shared
        .nodes
        .iter()
        .zip(per_node)
        .filter(|(slot, _)| {
            name.is_none_or(|n| n == slot.name)
                && (reqs.is_empty() || {
                    let mut labels = tpl.labels.clone();
                    labels.insert("kubernetes.io/hostname".into(), slot.name.clone());
                    selector::matches(reqs, &labels)
                })
        })
        .map(|(slot, used)| NodeSample {
            name: &slot.name,
            usage: usage::node(used),
        })
        .collect();
    let kind = Kind {
        list: "NodeMetricsList",
        one: "NodeMetrics",
        resource: "nodemetrics",
        json: resources::node_metrics,
        protobuf_list: protobuf::node_metrics_list,
        protobuf_one: protobuf::node_metrics_object,
    };
    answer(&kind, &items, name, now, format)
}

fn pods(
    shared: &Shared,
    namespace: Option<&str>,
    name: Option<&str>,
    reqs: &[selector::Requirement],
    now: &Now,
    format: Format,
) -> Response {
    let mut lives = shared.lives.all();
    lives.sort_by(|a, b| a.0.cmp(&b.0));
    let mut items = Vec::new();
    for (key, life) in &lives {
        let Some((ns, pod)) = key.split_once('/') else {
            continue;
        };
        if namespace.is_some_and(|want| want != ns) || name.is_some_and(|want| want != pod) {
            continue;
        }
        if !selector::matches(reqs, &life.labels) {
            continue;
        }
        let containers = running(life);
        // metrics-server lists only pods it has a sample of: those with a running container.
        if containers.is_empty() {
            continue;
        }
        items.push(PodSample {
            namespace: ns,
            name: pod,
            containers,
        });
    }
    let kind = Kind {
        list: "PodMetricsList",
        one: "PodMetrics",
        resource: "podmetrics",
        json: resources::pod_metrics,
        protobuf_list: protobuf::pod_metrics_list,
        protobuf_one: protobuf::pod_metrics_object,
    };
    answer(&kind, &items, name, now, format)
}
