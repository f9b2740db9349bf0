//! Graceful shutdown: after the token is cancelled the server stops accepting, finishes the
//! request in flight, and returns.

use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::routing::post;
use scheduler::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_requests_finish_after_shutdown() -> Result<()> {
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let gates = std::sync::Mutex::new(Some((entered_tx, release_rx)));
    let gates = std::sync::Arc::new(gates);
    // A handler that holds the request until the test releases it.
    let app = Router::new().route(
        "/filter",
        post(move || {
            let gates = gates.clone();
            async move {
                let taken = gates.lock().ok().and_then(|mut g| g.take());
                if let Some((entered, release)) = taken {
                    let _ = entered.send(());
                    let _ = release.await;
                }
                "done"
            }
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut config = Config::new(addr);
    config.server.shutdown_grace = Duration::from_secs(10);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            scheduler::serve_listener(&config, listener, app, Default::default(), shutdown).await
        }
    });

    let client = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    });
    entered_rx.await?;
    shutdown.cancel();
    // The listener closes: new connections are refused (or reset) while the old one waits.
    let refused = e2e::wait_for(Duration::from_secs(5), "listener closed", || async move {
        Ok(tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(()))
    })
    .await;
    assert!(refused.is_ok(), "still accepting after shutdown");
    assert!(
        !server.is_finished(),
        "returned before the in-flight request finished"
    );
    let _ = release_tx.send(());
    let reply = tokio::time::timeout(Duration::from_secs(5), client).await???;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("done"), "{reply}");
    tokio::time::timeout(Duration::from_secs(5), server).await???;
    Ok(())
}
