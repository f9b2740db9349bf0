//! The Kubernetes client: kube's default stack plus one tower layer that rate-limits requests
//! with a token bucket (kube's client has none) and counts them for `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::metrics::{ApiLabels, Code, Metrics, Verb, VerbLabels};

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
}

impl ApiLayer {
    /// `qps` of zero disables the limiter.
    pub fn new(qps: f64, burst: u32, metrics: Metrics) -> Self {
        let limiter = (qps > 0.0).then(|| Arc::new(TokenBucket::new(qps, burst)));
        ApiLayer { limiter, metrics }
    }
}

impl<S> Layer<S> for ApiLayer {
    type Service = ApiService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiService {
            inner,
            limiter: self.limiter.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

pub struct ApiService<S> {
    inner: S,
    limiter: Option<Arc<TokenBucket>>,
    metrics: Metrics,
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

impl<S, B, RB> Service<Request<B>> for ApiService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<RB>, BoxError>>;

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
                    .get_or_create(&VerbLabels { verb })
                    .observe(sent.elapsed().as_secs_f64());
            }
            let code = match &res {
                Ok(r) if r.status().is_success() => Code::Ok,
                Ok(r) if r.status().is_client_error() => Code::ClientError,
                Ok(r) if r.status().is_server_error() => Code::ServerError,
                Ok(_) => Code::Ok,
                Err(_) => Code::Error,
            };
            let labels = ApiLabels { verb, code };
            metrics.api_requests.get_or_create(&labels).inc();
            if code != Code::Ok {
                metrics.api_errors.get_or_create(&labels).inc();
            }
            res
        })
    }
}

/// Builds a client from a kubeconfig file, or the usual inference (KUBECONFIG, in-cluster).
pub async fn build(
    kubeconfig: Option<&std::path::Path>,
    qps: f64,
    burst: u32,
    metrics: Metrics,
) -> Result<kube::Client, crate::Error> {
    let config = match kubeconfig {
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
    let builder = kube::client::ClientBuilder::try_from(config).map_err(crate::Error::Kube)?;
    Ok(builder
        .with_layer(&ApiLayer::new(qps, burst, metrics))
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
