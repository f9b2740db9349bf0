//! HTTPS through the same setup: a connection that never finishes its TLS handshake is closed
//! at the header-read timeout, and a thousand such connections do not keep a real HTTPS
//! request from being answered.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use serving::Limits;
use serving::tls::{PemPair, Reloadable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Https {
    addr: SocketAddr,
    trusted: CertificateDer<'static>,
    shutdown: CancellationToken,
}

impl Drop for Https {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start_https(limits: Limits) -> Https {
    telemetry::install_crypto_provider();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let tls = Reloadable::new(PemPair {
        cert: ck.cert.pem(),
        key: ck.signing_key.serialize_pem(),
    })
    .expect("pair loads");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let router = Router::new().route("/hello", get(|| async { "hello" }));
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let ready = telemetry::Readiness::default();
            serving::serve(
                listener,
                router,
                &limits,
                Some(tls.config()),
                ready,
                shutdown,
            )
            .await
        }
    });
    Https {
        addr,
        trusted: ck.cert.der().clone(),
        shutdown,
    }
}

async fn https_hello(server: &Https) -> anyhow::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.trusted.clone())?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    tls.read_to_string(&mut text).await?;
    Ok(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_handshake_never_finished_is_closed_at_the_header_read_timeout() {
    let timeout = Duration::from_secs(1);
    let server = start_https(Limits {
        header_read_timeout: timeout,
        ..limits()
    });
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(timeout * 5, silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open or answered: {read:?}"
    );
    assert!(started.elapsed() >= timeout - Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_stalled_handshakes_do_not_stop_a_real_https_request() {
    let server = start_https(Limits {
        header_read_timeout: Duration::from_secs(60),
        ..limits()
    });
    let mut stalled = Vec::with_capacity(1000);
    for i in 0..1000 {
        let stream = TcpStream::connect(server.addr)
            .await
            .unwrap_or_else(|e| panic!("stalled connection {i}: {e}"));
        stalled.push(stream);
    }
    let started = Instant::now();
    let text = tokio::time::timeout(Duration::from_secs(10), https_hello(&server))
        .await
        .expect("answered within 10 s")
        .expect("HTTPS request");
    let took = started.elapsed();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        took < Duration::from_secs(2),
        "answered only after {took:?}"
    );
}
