//! HTTPS: the extender serves the configured certificate, picks up a rotated pair, and keeps the
//! old one when the new files do not load.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, ServerName};
use scheduler::{Config, Service, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn self_signed() -> Result<(String, String, CertificateDer<'static>)> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    Ok((
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().clone(),
    ))
}

/// GET /healthz over TLS, trusting only `trusted`; returns the served leaf certificate.
async fn served_cert(
    port: u16,
    trusted: &[CertificateDer<'static>],
) -> Result<CertificateDer<'static>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.clone())?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    tls.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    anyhow::ensure!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first().cloned())
        .context("no peer certificate")
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_and_rotates_the_certificate() -> Result<()> {
    telemetry::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let (cert1, key1, der1) = self_signed()?;
    std::fs::write(&files.cert, &cert1)?;
    std::fs::write(&files.key, &key1)?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let mut config = Config::new(listener.local_addr()?);
    config.tls = Some(files.clone());
    config.tls_reload_interval = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let app = Service::new().app();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            scheduler::serve_listener(&config, listener, app, Default::default(), shutdown).await
        }
    });

    let first = e2e::wait_for(Duration::from_secs(10), "HTTPS answers", || async {
        Ok(served_cert(port, std::slice::from_ref(&der1)).await.ok())
    })
    .await?;
    assert_eq!(first, der1, "the configured certificate is served");

    // A broken rotation (garbage key) keeps the old pair serving.
    std::fs::write(&files.key, "not a key")?;
    let (cert2, key2, der2) = self_signed()?;
    std::fs::write(&files.cert, &cert2)?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let still = served_cert(port, std::slice::from_ref(&der1)).await?;
    assert_eq!(still, der1, "old pair kept while the new one does not load");

    // Completing the rotation swaps the certificate.
    std::fs::write(&files.key, &key2)?;
    let rotated = e2e::wait_for(
        Duration::from_secs(10),
        "rotated certificate served",
        || {
            let trusted = [der1.clone(), der2.clone()];
            async move {
                let got = served_cert(port, &trusted).await.ok();
                Ok(got.filter(|c| *c != trusted[0]))
            }
        },
    )
    .await?;
    assert_eq!(rotated, der2);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    Ok(())
}
