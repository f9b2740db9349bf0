//! The per-request guard: a concurrency permit or 503 at once, a deadline or 503, and
//! `Connection: close` on every answer while draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::Limits;

#[derive(Clone)]
pub(crate) struct Guard {
    permits: Arc<Semaphore>,
    request_timeout: Duration,
    draining: Arc<AtomicBool>,
}

impl Guard {
    pub(crate) fn new(limits: &Limits) -> Self {
        Guard {
            permits: Arc::new(Semaphore::new(limits.max_concurrent)),
            request_timeout: limits.request_timeout,
            draining: Arc::default(),
        }
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

pub(crate) async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let mut response = match guard.permits.clone().try_acquire_owned() {
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many concurrent requests",
        )
            .into_response(),
        Ok(_permit) => match tokio::time::timeout(guard.request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(
                    timeout_seconds = guard.request_timeout.as_secs_f64(),
                    "request timed out"
                );
                (StatusCode::SERVICE_UNAVAILABLE, "request timed out").into_response()
            }
        },
    };
    if guard.draining.load(Ordering::Acquire) {
        // Endpoints may lag: a keep-alive caller told to close reconnects through the Service
        // and lands on a replica that is not going away.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
