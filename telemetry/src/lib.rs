//! What every mock-kind service shares: structured logs, the crypto provider, the shutdown signal,
//! the liveness of critical tasks and the operability routes (`/healthz`, `/readyz`, `/metrics`).

pub mod health;
pub use health::Health;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Installs the tracing subscriber once: human-readable lines, or JSON when `json` is set.
/// The filter comes from `RUST_LOG` and defaults to `info`.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // try_init: tests and benchmarks may call this more than once in one process.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// kube-rs and rustls panic at the first TLS handshake unless a process-wide crypto provider is
/// installed; call this first thing in every binary and test. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A token cancelled on SIGTERM or Ctrl-C, so every task can drain and stop.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {},
                        _ = term.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown signal received");
        child.cancel();
    });
    token
}

/// The longest prefix of `s` within `max` bytes that ends on a char boundary: for the messages,
/// Event notes and warnings whose size the API bounds, cut without splitting a UTF-8 sequence.
pub fn char_prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Readiness shared between the component that knows (a cache that synced, a certificate that
/// loaded) and the `/readyz` route.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    ready: Readiness,
    health: Health,
}

/// `/healthz` (503 naming the critical tasks that stopped, per `health`), `/readyz` (per
/// `ready`) and `/metrics` (the registry in Prometheus text format). Merge it into a service's
/// router.
pub fn ops_router(registry: Arc<Registry>, ready: Readiness, health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            registry,
            ready,
            health,
        })
}

async fn healthz(State(state): State<OpsState>) -> impl IntoResponse {
    match state.health.check() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(dead) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("critical tasks stopped: {}", dead.join(", ")),
        ),
    }
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    if state.ready.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    async fn get_path(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn char_prefix_never_splits_a_char() {
        let cases = [
            ("short", 10, "short"),
            ("exact", 5, "exact"),
            ("abcdef", 3, "abc"),
            ("aé", 2, "a"),
            ("aé", 3, "aé"),
            ("", 0, ""),
            ("é", 0, ""),
        ];
        for (s, max, want) in cases {
            assert_eq!(char_prefix(s, max), want, "{s:?} at {max}");
        }
    }

    #[tokio::test]
    async fn routes_follow_readiness_and_registry() {
        let mut registry = Registry::with_prefix("t");
        let counter = Counter::<u64>::default();
        registry.register("hits", "test counter", counter.clone());
        counter.inc();
        let ready = Readiness::default();
        let health = Health::default();
        let router = ops_router(Arc::new(registry), ready.clone(), health.clone());

        let cases = [
            ("/healthz", StatusCode::OK, "ok"),
            ("/readyz", StatusCode::SERVICE_UNAVAILABLE, "not ready"),
            ("/metrics", StatusCode::OK, "t_hits_total 1"),
        ];
        for (path, status, needle) in cases {
            let (got, body) = get_path(router.clone(), path).await;
            assert_eq!(got, status, "{path}");
            assert!(body.contains(needle), "{path}: {body}");
        }
        ready.set(true);
        let (got, _) = get_path(router.clone(), "/readyz").await;
        assert_eq!(got, StatusCode::OK, "/readyz after ready");
        health.mark_dead("queue dispatcher");
        let (got, body) = get_path(router, "/healthz").await;
        assert_eq!(
            got,
            StatusCode::SERVICE_UNAVAILABLE,
            "/healthz after a task died"
        );
        assert!(body.contains("queue dispatcher"), "{body}");
    }
}
