//! Per-request limits over real loopback sockets: oversized bodies get 413 whether announced or
//! streamed, requests beyond the concurrency limit get 503 at once, and a request that outlives
//! its timeout gets 503.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use common::*;
use serving::Limits;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

fn echo() -> Router {
    Router::new().route(
        "/echo",
        post(|body: Bytes| async move { body.len().to_string() }),
    )
}

fn chunked(total: usize) -> Vec<u8> {
    let mut request =
        b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let mut left = total;
    while left > 0 {
        let n = left.min(1000);
        request.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        request.extend(std::iter::repeat_n(b'x', n));
        request.extend_from_slice(b"\r\n");
        left -= n;
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

fn with_length(len: usize, body: usize) -> Vec<u8> {
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b'x', body));
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_get_413_announced_or_chunked() {
    let limits = Limits {
        max_body: 4096,
        ..limits()
    };
    let server = start(limits, echo());
    // (case, request, status, body of a 200)
    let cases: [(&str, Vec<u8>, u16, &str); 5] = [
        (
            "content-length at the limit",
            with_length(4096, 4096),
            200,
            "4096",
        ),
        ("chunked at the limit", chunked(4096), 200, "4096"),
        // Only the headers are sent: the answer must not wait for a body it will refuse.
        (
            "content-length over the limit, no body sent",
            with_length(4097, 0),
            413,
            "",
        ),
        ("content-length a GiB", with_length(1 << 30, 0), 413, ""),
        ("chunked over the limit", chunked(4097), 413, ""),
    ];
    for (name, request, status, body) in cases {
        let answer = exchange(server.addr, &request)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(answer.status, status, "{name}: {}", answer.text);
        if status == 200 {
            assert!(answer.text.ends_with(body), "{name}: {}", answer.text);
        }
    }
}

/// A route that holds each request until released, reporting when one entered.
fn holding(entered: mpsc::UnboundedSender<()>, release: Arc<Notify>) -> Router {
    Router::new()
        .route(
            "/hold",
            get(move || {
                let (entered, release) = (entered.clone(), release.clone());
                async move {
                    let released = release.notified();
                    let _ = entered.send(());
                    released.await;
                    "released"
                }
            }),
        )
        .route("/quick", get(|| async { "quick" }))
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_concurrency_limit_get_503_at_once() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let limits = Limits {
        max_concurrent: 2,
        ..limits()
    };
    let server = start(limits, holding(entered_tx, release.clone()));
    let addr = server.addr;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { fetch(addr, "/hold").await }))
        .collect();
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), entered.recv())
            .await
            .expect("both held requests entered");
    }

    let started = Instant::now();
    let refused = fetch(addr, "/quick").await.expect("answer");
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.header("retry-after"), Some("1"), "{}", refused.text);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused only after {:?}",
        started.elapsed()
    );

    release.notify_waiters();
    for h in held {
        let answer = h.await.expect("task").expect("held answer");
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let after = fetch(addr, "/quick").await.expect("answer");
    assert_eq!(after.status, 200, "a permit came back: {}", after.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_its_timeout_gets_503_and_frees_its_permit() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        max_concurrent: 1,
        ..limits()
    };
    let router = Router::new()
        .route("/never", get(std::future::pending::<&'static str>))
        .route("/quick", get(|| async { "quick" }));
    let server = start(limits, router);
    let started = Instant::now();
    let answer = fetch(server.addr, "/never").await.expect("answer");
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert!(
        answer.text.ends_with("request timed out"),
        "{}",
        answer.text
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let quick = fetch(server.addr, "/quick").await.expect("answer");
    assert_eq!(quick.status, 200, "{}", quick.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_sent_too_slowly_gets_503_at_the_request_timeout() {
    let limits = Limits {
        request_timeout: Duration::from_millis(500),
        ..limits()
    };
    let server = start(limits, echo());
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // Headers complete, body promised but never sent.
    stream
        .write_all(&with_length(100, 10))
        .await
        .expect("write");
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut stream))
        .await
        .expect("answered within 10 s")
        .expect("answer");
    assert_eq!(answer.status, 503, "{}", answer.text);
}
