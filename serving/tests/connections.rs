//! Connections a bad client holds open: headers trickled one byte a second are cut off at the
//! header-read timeout, so are connections that never send anything, and a thousand idle
//! connections do not keep a real request from being answered.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::*;
use serving::Limits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn hello() -> Router {
    Router::new().route("/hello", get(|| async { "hello" }))
}

/// Waits until the server closes `stream` (EOF or reset) and returns when that was; fails if
/// the request was served or nothing happens within `deadline`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), deadline: Duration) -> Instant {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(deadline, stream.read(&mut buf)).await {
        Err(_) => panic!("connection still open after {deadline:?}"),
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => {
            // hyper may say 408 before closing; anything but the served route is fine.
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(!text.contains("hello"), "the request was served: {text}");
        }
    }
    Instant::now()
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_sent_one_byte_a_second_are_cut_off_at_the_header_read_timeout() {
    let timeout = Duration::from_secs(2);
    let limits = Limits {
        header_read_timeout: timeout,
        ..limits()
    };
    let server = start(limits, hello());
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    // The slow client: a valid request head that would take a minute to finish.
    let trickle = tokio::spawn(async move {
        let head = format!(
            "GET /hello HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(40)
        );
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for byte in head.bytes() {
            tick.tick().await;
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    });
    let elapsed = closed_within(&mut read, timeout * 4).await - started;
    trickle.abort();
    assert!(
        elapsed >= timeout - Duration::from_millis(100),
        "cut off after {elapsed:?}, before the {timeout:?} timeout"
    );
    assert!(elapsed < timeout * 3, "cut off only after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_sends_is_closed_at_the_header_read_timeout() {
    let timeout = Duration::from_secs(1);
    let limits = Limits {
        header_read_timeout: timeout,
        ..limits()
    };
    let server = start(limits, hello());
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let started = Instant::now();
    let closed = closed_within(&mut silent, timeout * 5).await;
    assert!(closed - started >= timeout - Duration::from_millis(100));

    // Same for a keep-alive connection gone idle after one request.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    keep_alive_get(&mut idle, "/hello").await;
    let answered = Instant::now();
    let closed = closed_within(&mut idle, timeout * 5).await;
    assert!(closed - answered < timeout * 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_connections_do_not_stop_a_real_request() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(60),
        max_concurrent: 8,
        ..limits()
    };
    let server = start(limits, hello());
    let mut idle = Vec::with_capacity(1000);
    for i in 0..1000 {
        let stream = TcpStream::connect(server.addr)
            .await
            .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
        idle.push(stream);
    }
    // Half of them also started a request head and stalled.
    for stream in idle.iter_mut().step_by(2) {
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost:")
            .await
            .expect("partial head");
    }
    let started = Instant::now();
    let answer = fetch(server.addr, "/hello").await.expect("real request");
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        took < Duration::from_secs(2),
        "answered only after {took:?}"
    );
    // The idle ones were all still open (none was dropped to make room).
    let mut buf = [0u8; 1];
    for (i, stream) in idle.iter().enumerate() {
        match stream.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("idle connection {i} was closed: {other:?}"),
        }
    }
}
