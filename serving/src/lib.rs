//! One server setup for every mock-kind HTTP(S) endpoint (the extender, the webhook, hollow-node's
//! `/healthz` `/readyz` `/metrics`), so a bad client cannot tie any of them up:
//!
//! - request bodies over [`Limits::max_body`] get 413, whether announced by `Content-Length` or
//!   streamed (chunked) past the limit; with [`Limits::max_concurrent`] this bounds the memory
//!   held by request bodies to `max_body × max_concurrent`;
//! - at most [`Limits::max_concurrent`] requests run at once; one more gets **503 at once** with
//!   `Retry-After: 1` instead of waiting in a queue (a queue would hold its body and socket, and a
//!   caller such as kube-apiserver has its own deadline and retry policy);
//! - a request (reading its body included) that takes longer than [`Limits::request_timeout`]
//!   gets **503** "request timed out" (not 408: most slow requests are the server's fault);
//! - request headers not complete within [`Limits::header_read_timeout`] close the connection
//!   (hyper's HTTP/1 `header_read_timeout`, timed by tokio); this also closes keep-alive
//!   connections that stay idle that long, and bounds TLS handshakes;
//! - on shutdown, readiness drops first, the server keeps serving for [`Limits::drain_delay`]
//!   (so callers that still route here — Endpoints lag readiness — are answered, each response
//!   saying `Connection: close` so keep-alive callers reconnect elsewhere), then stops accepting
//!   and gives in-flight requests [`Limits::shutdown_grace`].
//!
//! HTTP/1.1 only: every caller (kube-apiserver's webhook client, kube-scheduler, kubelet probes,
//! Prometheus) speaks it, and skipping protocol detection is what lets the header timeout cover
//! a connection that never sends a byte.

pub mod client_chains;
mod guard;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use telemetry::Readiness;
use tokio_util::sync::CancellationToken;

pub use tls::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid server limits: {0}")]
    Limits(String),
    #[error("serving on {addr}: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a server accepts and how it stops; a plain struct, built from flags or in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body in bytes; larger ones get 413.
    pub max_body: usize,
    /// Requests served at once; one more gets 503 at once.
    pub max_concurrent: usize,
    /// Longest a request may take, body included; then 503.
    pub request_timeout: Duration,
    /// Longest a client may take to send request headers (or stay idle between requests).
    pub header_read_timeout: Duration,
    /// How long the server keeps serving after readiness dropped on shutdown.
    pub drain_delay: Duration,
    /// How long in-flight requests may take to finish once the server stops accepting.
    pub shutdown_grace: Duration,
}

impl Limits {
    /// Small endpoints with no request bodies to speak of (`/healthz`, `/readyz`, `/metrics`)
    /// that no Service routes to, so they need little drain.
    pub fn ops() -> Self {
        Limits {
            max_body: 64 << 10,
            max_concurrent: 32,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            drain_delay: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
        }
    }

    /// Why these limits cannot serve anything, if they cannot.
    pub fn validate(&self) -> Result<()> {
        let problem = if self.max_body == 0 {
            "the body limit must be at least 1 byte"
        } else if self.max_concurrent == 0 {
            "at least 1 concurrent request must be allowed"
        } else if self.request_timeout.is_zero() {
            "the request timeout must be positive"
        } else if self.header_read_timeout.is_zero() {
            "the header read timeout must be positive"
        } else {
            return Ok(());
        };
        Err(Error::Limits(problem.to_owned()))
    }

    /// How long a stop can take at most: the pod's terminationGracePeriodSeconds must exceed it.
    pub fn stop_budget(&self) -> Duration {
        self.drain_delay + self.shutdown_grace
    }
}

/// Serves `router` on `listener` (HTTPS with `tls`, plain HTTP without) under `limits` until
/// `shutdown` is cancelled, then: `readiness` set false, `limits.drain_delay` more of normal
/// service, stop accepting, `limits.shutdown_grace` for in-flight requests. Returns once every
/// connection is closed.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    limits: &Limits,
    tls: Option<RustlsConfig>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<()> {
    limits.validate()?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "an unknown address".to_owned());
    let io_err = |source| Error::Serve {
        addr: addr.clone(),
        source,
    };
    let guard = guard::Guard::new(limits);
    let app = router
        // The body limit is ours alone: axum's default 2 MB would undercut a larger one.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.max_body,
        ))
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            guard::guard,
        ));
    let handle = axum_server::Handle::new();
    let stopper = tokio::spawn(stop_sequence(
        shutdown,
        readiness,
        guard,
        handle.clone(),
        limits.drain_delay,
        limits.shutdown_grace,
    ));
    let make = app.into_make_service();
    let plain = axum_server::from_tcp(listener).map_err(io_err)?;
    // TCP_NODELAY on every accepted connection: callers (kube-scheduler, the apiserver) send a
    // request and wait for its whole answer on a kept-alive connection; Nagle's algorithm would
    // hold the answer's last segment until the caller's delayed ACK (up to 40 ms on Linux).
    let served = match tls {
        None => {
            tracing::info!(%addr, "serving HTTP");
            configure(plain.acceptor(NoDelayAcceptor::new()), limits, handle)
                .serve(make)
                .await
        }
        Some(config) => {
            tracing::info!(%addr, "serving HTTPS");
            let acceptor = RustlsAcceptor::new(config)
                .handshake_timeout(limits.header_read_timeout)
                .acceptor(NoDelayAcceptor::new());
            configure(plain.acceptor(acceptor), limits, handle)
                .serve(make)
                .await
        }
    };
    stopper.abort();
    served.map_err(io_err)
}

fn configure<A>(
    mut server: axum_server::Server<SocketAddr, A>,
    limits: &Limits,
    handle: axum_server::Handle<SocketAddr>,
) -> axum_server::Server<SocketAddr, A> {
    // axum-server installs a tokio timer in this builder; without one hyper would panic (or, in
    // older versions, silently ignore the timeout).
    server
        .http_builder()
        .http1()
        .header_read_timeout(limits.header_read_timeout);
    server.http1_only().handle(handle)
}

async fn stop_sequence(
    shutdown: CancellationToken,
    readiness: Readiness,
    guard: guard::Guard,
    handle: axum_server::Handle<SocketAddr>,
    drain_delay: Duration,
    grace: Duration,
) {
    shutdown.cancelled().await;
    readiness.set(false);
    guard.start_draining();
    tracing::info!(
        drain_delay_seconds = drain_delay.as_secs_f64(),
        "shutting down: not ready, still serving while callers notice"
    );
    tokio::time::sleep(drain_delay).await;
    tracing::info!(
        grace_seconds = grace.as_secs_f64(),
        "no longer accepting; finishing in-flight requests"
    );
    handle.graceful_shutdown(Some(grace));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_validation_table() {
        let ok = Limits::ops();
        let cases: [(&str, Limits, Option<&str>); 5] = [
            ("ops defaults", ok.clone(), None),
            (
                "zero body",
                Limits {
                    max_body: 0,
                    ..ok.clone()
                },
                Some("body limit"),
            ),
            (
                "zero concurrency",
                Limits {
                    max_concurrent: 0,
                    ..ok.clone()
                },
                Some("concurrent"),
            ),
            (
                "zero request timeout",
                Limits {
                    request_timeout: Duration::ZERO,
                    ..ok.clone()
                },
                Some("request timeout"),
            ),
            (
                "zero header timeout",
                Limits {
                    header_read_timeout: Duration::ZERO,
                    ..ok.clone()
                },
                Some("header read timeout"),
            ),
        ];
        for (name, limits, want) in cases {
            let got = limits.validate().map_err(|e| e.to_string());
            match (got, want) {
                (Ok(()), None) => {}
                (Err(e), Some(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
