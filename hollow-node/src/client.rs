//! The Kubernetes clients: kube's default stack plus one tower layer that rate-limits requests
//! with a token bucket (kube's client has none), counts them for `/metrics`, and hands a
//! server's `Retry-After` on to the caller. Lease renewals get clients of their own (their own
//! connections) so that a storm of pod writes never queues a renewal behind it; kube 5 speaks
//! HTTP/1.1 only, so theirs are built here over a connector that offers HTTP/2 as well.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Bytes;
use kube::core::Status;
use kube::core::response::StatusDetails;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::metrics::{ApiLabels, Code, Lane, Metrics, Verb, VerbLabels};
use crate::retry::{parse_retry_after, retry_after_seconds};

/// A token bucket that hands out reservations in arrival order: a caller takes a token now
/// (the balance may go negative) and waits until the balance it left behind is paid back.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token; returns how long the caller must wait before using it.
    pub fn reserve(&self, now: Instant) -> Duration {
        let Ok(mut state) = self.state.lock() else {
            return Duration::ZERO;
        };
        let (tokens, last) = *state;
        let refill = now.saturating_duration_since(last).as_secs_f64() * self.qps;
        let tokens = (tokens + refill).min(self.burst) - 1.0;
        *state = (tokens, now.max(last));
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.qps)
        }
    }

    pub async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[derive(Clone)]
pub struct ApiLayer {
    limiter: Option<Arc<TokenBucket>>,
    metrics: Metrics,
    lane: Lane,
}

impl ApiLayer {
    /// `qps` of zero disables the limiter.
    pub fn new(qps: f64, burst: u32, metrics: Metrics, lane: Lane) -> Self {
        let limiter = (qps > 0.0).then(|| Arc::new(TokenBucket::new(qps, burst)));
        ApiLayer {
            limiter,
            metrics,
            lane,
        }
    }
}

impl<S> Layer<S> for ApiLayer {
    type Service = ApiService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiService {
            inner,
            limiter: self.limiter.clone(),
            metrics: self.metrics.clone(),
            lane: self.lane,
        }
    }
}

pub struct ApiService<S> {
    inner: S,
    limiter: Option<Arc<TokenBucket>>,
    metrics: Metrics,
    lane: Lane,
}

fn verb<B>(req: &Request<B>) -> Verb {
    let query = req.uri().query().unwrap_or("");
    match *req.method() {
        Method::GET if query.contains("watch=true") || query.contains("watch=1") => Verb::WATCH,
        Method::GET => {
            // A collection GET is a LIST; kube puts the name last for single objects, and lists
            // end in the plural resource: we can't tell them apart cheaply, so use the query:
            // kube always sends list params (e.g. `limit=` or selectors) on lists.
            if query.contains("limit=")
                || query.contains("Selector=")
                || query.contains("resourceVersion")
            {
                Verb::LIST
            } else {
                Verb::GET
            }
        }
        Method::POST => Verb::POST,
        Method::PUT => Verb::PUT,
        Method::PATCH => Verb::PATCH,
        Method::DELETE => Verb::DELETE,
        _ => Verb::OTHER,
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Error bodies are small; a bigger one is not a Status and is passed on cut.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The body of a refusal that carried `Retry-After`, as a `Status` that holds it in
/// `details.retryAfterSeconds`: kube turns error responses into `kube::Error::Api(Status)` and
/// drops the headers, and the apiserver's own 429 ("Too many requests, please try again
/// later.") is plain text. A JSON Status keeps everything it had; the field is only filled
/// when empty, since the server's own value is the better one.
pub fn status_with_retry_after(code: StatusCode, body: &[u8], wait: Duration) -> Vec<u8> {
    let mut status = serde_json::from_slice::<Status>(body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(body);
        Status::failure(text.trim(), code.canonical_reason().unwrap_or("")).with_code(code.as_u16())
    });
    if status.code == 0 {
        status.code = code.as_u16();
    }
    let details = status.details.get_or_insert_with(|| StatusDetails {
        name: String::new(),
        group: String::new(),
        kind: String::new(),
        uid: String::new(),
        causes: Vec::new(),
        retry_after_seconds: 0,
    });
    if details.retry_after_seconds == 0 {
        details.retry_after_seconds = retry_after_seconds(wait);
    }
    serde_json::to_vec(&status).unwrap_or_default()
}

/// Refusals whose `Retry-After` the caller should see.
fn carries_retry_after(code: StatusCode) -> bool {
    code == StatusCode::TOO_MANY_REQUESTS || code.is_server_error()
}

impl<S, B, RB> Service<Request<B>> for ApiService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    RB: hyper::body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<Either<RB, Full<Bytes>>>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let verb = verb(&req);
        // The inner future does nothing until polled, so the token is taken before the
        // request leaves.
        let fut = self.inner.call(req);
        let limiter = self.limiter.clone();
        let metrics = self.metrics.clone();
        let lane = self.lane;
        Box::pin(async move {
            if let Some(l) = limiter
                && verb != Verb::WATCH
            {
                l.acquire().await;
            }
            let sent = Instant::now();
            let res = fut.await.map_err(Into::into);
            if verb != Verb::WATCH {
                metrics
                    .api_latency
                    .get_or_create(&VerbLabels { lane, verb })
                    .observe(sent.elapsed().as_secs_f64());
            }
            let code = match &res {
                Ok(r) if r.status().is_success() => Code::Ok,
                Ok(r) if r.status().is_client_error() => Code::ClientError,
                Ok(r) if r.status().is_server_error() => Code::ServerError,
                Ok(_) => Code::Ok,
                Err(_) => Code::Error,
            };
            let labels = ApiLabels { lane, verb, code };
            metrics.api_requests.get_or_create(&labels).inc();
            if code != Code::Ok {
                metrics.api_errors.get_or_create(&labels).inc();
            }
            let res = res?;
            let wait = res
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
            match wait {
                Some(wait) if carries_retry_after(res.status()) => {
                    let (parts, body) = res.into_parts();
                    let body = http_body_util::Limited::new(body, MAX_ERROR_BODY)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let status = status_with_retry_after(parts.status, &body, wait);
                    Ok(Response::from_parts(
                        parts,
                        Either::Right(Full::from(status)),
                    ))
                }
                _ => Ok(res.map(Either::Left)),
            }
        })
    }
}

/// Reads a kubeconfig file, or does the usual inference (KUBECONFIG, in-cluster).
pub async fn config(kubeconfig: Option<&std::path::Path>) -> Result<kube::Config, crate::Error> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| crate::Error::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| crate::Error::Kubeconfig(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| crate::Error::Kubeconfig(e.to_string()))?,
    };
    // kube's own retry (429/503/504, up to 15 times, waits up to 1000 s) would hold a work
    // slot for minutes, resend below our rate limiter, and hide the failure from the
    // backoff that knows what the work is (`retry`): failures come straight back to us.
    config.default_retry = false;
    Ok(config)
}

/// How the Lease lane reaches the apiserver (`--lease-transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LeaseTransport {
    /// HTTP/1.1 only, kube's own client: one connection per renewal in flight. The default:
    /// in the 5,000-node storm on two cores renewals were later over HTTP/2 (hollow-node
    /// README, numbers).
    #[default]
    Http1,
    /// HTTP/2 when the apiserver offers it (ALPN), as a kubelet's Go client speaks to it:
    /// renewals in flight are streams on a few connections (far less memory). HTTP/1.1 where
    /// it is not offered.
    Http2,
}

/// Streams one HTTP/2 connection is given: under the 250 a Go server (the apiserver's default
/// `--http2-max-streams-per-connection`) allows, so none waits for a stream of its own.
pub const STREAMS_PER_CONNECTION: usize = 200;

/// How many clients the Lease lane needs for `slots` renewals in flight: a hyper client keeps
/// one HTTP/2 connection to a host, so one client per [`STREAMS_PER_CONNECTION`] slots; an
/// HTTP/1.1 client opens a connection per request in flight by itself.
pub fn lease_connections(transport: LeaseTransport, slots: usize) -> usize {
    match transport {
        LeaseTransport::Http1 => 1,
        LeaseTransport::Http2 => slots.div_ceil(STREAMS_PER_CONNECTION).max(1),
    }
}

/// The Lease lane's clients (see [`lease_connections`]), without a rate limit of their own
/// (the lane's budget is taken before a renewal, where its wait counts as lateness).
pub fn build_lease(
    config: kube::Config,
    transport: LeaseTransport,
    slots: usize,
    metrics: Metrics,
) -> Result<Vec<kube::Client>, crate::Error> {
    (0..lease_connections(transport, slots))
        .map(|_| match transport {
            LeaseTransport::Http1 => build(config.clone(), 0.0, 0, metrics.clone(), Lane::Lease),
            LeaseTransport::Http2 => http2(&config, metrics.clone()),
        })
        .collect()
}

/// kube's client stack (base URI, authentication, impersonation headers) over a hyper client
/// whose TLS offers h2 as well as http/1.1: kube 5 builds its connector for HTTP/1.1 only.
fn http2(config: &kube::Config, metrics: Metrics) -> Result<kube::Client, crate::Error> {
    use kube::client::ConfigExt;
    let tls = config.rustls_client_config().map_err(crate::Error::Kube)?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| crate::Error::Kubeconfig(format!("tls-server-name {name}: {e}")))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let https = builder.enable_all_versions().wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, kube::client::Body>(https);
    let service = tower::ServiceBuilder::new()
        .layer(ApiLayer::new(0.0, 0, metrics, Lane::Lease))
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(crate::Error::Kube)?)
        .layer(config.extra_headers_layer().map_err(crate::Error::Kube)?)
        // One error type under the optional auth layer, whose own is boxed.
        .map_err(BoxError::from)
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// A client of its own (a new connection pool) over `config`, limited to `qps`/`burst`
/// (0: no limit) and counted under `lane`.
pub fn build(
    config: kube::Config,
    qps: f64,
    burst: u32,
    metrics: Metrics,
    lane: Lane,
) -> Result<kube::Client, crate::Error> {
    let builder = kube::client::ClientBuilder::try_from(config).map_err(crate::Error::Kube)?;
    Ok(builder
        .with_layer(&ApiLayer::new(qps, burst, metrics, lane))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_reservations() {
        let bucket = TokenBucket::new(10.0, 2);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let cases = [
            ("burst 1", 0, ms(0)),
            ("burst 2", 0, ms(0)),
            ("first over burst waits one period", 0, ms(100)),
            ("second over burst waits two", 0, ms(200)),
            ("after 300 ms the debt is paid", 300, ms(0)),
            ("then it waits again", 300, ms(100)),
        ];
        for (name, at, want) in cases {
            let got = bucket.reserve(t0 + ms(at));
            assert!(
                got.abs_diff(want) < ms(1),
                "{name}: got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn retry_after_reaches_the_status() {
        let s = Duration::from_secs;
        let read = |body: Vec<u8>| serde_json::from_slice::<Status>(&body).expect("status");
        /// Name, response code, body, Retry-After; then the Status' code, seconds, message.
        type Case<'a> = (&'a str, StatusCode, &'a [u8], Duration, u16, u32, &'a str);
        let cases: &[Case] = &[
            (
                "apiserver's plain-text 429",
                StatusCode::TOO_MANY_REQUESTS,
                b"Too many requests, please try again later.\n",
                s(1),
                429,
                1,
                "Too many requests, please try again later.",
            ),
            (
                "JSON Status without details",
                StatusCode::SERVICE_UNAVAILABLE,
                br#"{"kind":"Status","status":"Failure","message":"etcd down","code":503}"#,
                s(4),
                503,
                4,
                "etcd down",
            ),
            (
                "the server's own retryAfterSeconds is kept",
                StatusCode::TOO_MANY_REQUESTS,
                br#"{"status":"Failure","message":"m","code":429,"details":{"retryAfterSeconds":9}}"#,
                s(2),
                429,
                9,
                "m",
            ),
            (
                "binary junk",
                StatusCode::BAD_GATEWAY,
                &[0xff, 0xfe, 0x00],
                Duration::from_millis(10),
                502,
                1,
                "\u{fffd}\u{fffd}\u{0}",
            ),
        ];
        for (name, code, body, wait, want_code, want_secs, want_msg) in cases {
            let got = read(status_with_retry_after(*code, body, *wait));
            assert_eq!(got.code, *want_code, "{name}");
            assert_eq!(
                got.details.map(|d| d.retry_after_seconds),
                Some(*want_secs),
                "{name}"
            );
            assert_eq!(got.message, *want_msg, "{name}");
        }
        assert!(carries_retry_after(StatusCode::TOO_MANY_REQUESTS));
        assert!(carries_retry_after(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!carries_retry_after(StatusCode::CONFLICT));
    }

    #[test]
    fn lease_connection_counts() {
        use LeaseTransport::{Http1, Http2};
        let cases = [
            ("http/1.1 pools by itself", Http1, 1000, 1),
            ("one slot, one connection", Http2, 1, 1),
            ("no slots still a client", Http2, 0, 1),
            ("a full connection", Http2, STREAMS_PER_CONNECTION, 1),
            ("one stream over", Http2, STREAMS_PER_CONNECTION + 1, 2),
            ("1,000 slots at 5,000 nodes", Http2, 1000, 5),
        ];
        for (name, transport, slots, want) in cases {
            assert_eq!(lease_connections(transport, slots), want, "{name}");
        }
    }

    #[test]
    fn verbs() {
        let cases = [
            (
                Method::GET,
                "/api/v1/pods?watch=true&fieldSelector=x",
                Verb::WATCH,
            ),
            (
                Method::GET,
                "/api/v1/pods?fieldSelector=spec.nodeName%21%3D&limit=500",
                Verb::LIST,
            ),
            (Method::GET, "/api/v1/namespaces/a/pods/b", Verb::GET),
            (
                Method::PATCH,
                "/api/v1/namespaces/a/pods/b/status",
                Verb::PATCH,
            ),
            (Method::POST, "/api/v1/nodes", Verb::POST),
            (Method::DELETE, "/api/v1/namespaces/a/pods/b", Verb::DELETE),
        ];
        for (method, uri, want) in cases {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .expect("req");
            assert_eq!(verb(&req), want, "{uri}");
        }
    }
}
