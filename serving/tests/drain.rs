//! Shutdown: readiness drops first, requests (on new and kept-alive connections) are still
//! answered through the drain delay with `Connection: close`, then the listener closes and
//! `serve` returns.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::*;
use prometheus_client::registry::Registry;
use serving::Limits;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn during_the_drain_delay_readyz_is_503_while_requests_still_succeed() {
    let drain = Duration::from_secs(3);
    let limits = Limits {
        drain_delay: drain,
        ..limits()
    };
    let ready = telemetry::Readiness::default();
    let router = Router::new()
        .route("/work", get(|| async { "done" }))
        .merge(telemetry::ops_router(
            Arc::new(Registry::default()),
            ready.clone(),
            telemetry::Health::default(),
        ));
    let mut server = start_with(limits, router, ready);
    assert_eq!(
        fetch(server.addr, "/readyz").await.expect("readyz").status,
        200
    );

    // A keep-alive connection opened before the shutdown.
    let mut kept = TcpStream::connect(server.addr).await.expect("connect");
    keep_alive_get(&mut kept, "/work").await;

    let stop = Instant::now();
    server.shutdown.cancel();
    let addr = server.addr;
    wait_for(Duration::from_secs(2), "/readyz 503", || async move {
        let answer = fetch(addr, "/readyz").await.ok()?;
        (answer.status == 503).then_some(())
    })
    .await;

    // Still serving: the kept connection gets its answer and is told to close; new
    // connections are accepted and answered.
    kept.write_all(b"GET /work HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write on the kept connection");
    let answer = read_answer(&mut kept).await.expect("kept answer");
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{}",
        answer.text
    );
    let mut served_during_drain = 0;
    while stop.elapsed() < drain - Duration::from_millis(500) {
        let answer = fetch(addr, "/work")
            .await
            .expect("answered during the drain");
        assert_eq!(answer.status, 200, "{}", answer.text);
        served_during_drain += 1;
    }
    assert!(served_during_drain > 0);
    assert!(
        !server.task.is_finished(),
        "serve returned before the drain delay"
    );

    // Then the listener closes and serve returns.
    wait_for(
        drain + Duration::from_secs(5),
        "listener closed",
        || async move { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await;
    assert!(
        stop.elapsed() >= drain,
        "stopped accepting before the drain delay"
    );
    let task = &mut server.task;
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve returns")
        .expect("task")
        .expect("serve ok");
}
