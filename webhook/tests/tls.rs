//! TLS over a real socket: the generated CA is trusted, a wrong host name is refused, rotated
//! files are served to new connections while open ones keep working, and a broken pair is not
//! loaded.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;
use webhook::{CertSource, Config, Strategy};

fn opts() -> certs::CertOptions {
    let mut o = certs::CertOptions::new("mock-kind-webhook", "mock-kind");
    o.extra_sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    o
}

fn files_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        strategy: Strategy::Pod,
        profile: webhook::Profile::RunAsNonRoot,
        placement: webhook::PlacementMode::None,
        namespace: "mock-kind".into(),
        exclude_namespaces: Vec::new(),
        pod_uid_min: 1_000_000_000,
        pod_uid_max: 1_999_999_999,
        certs: CertSource::Files {
            cert: dir.join(certs::TLS_CRT),
            key: dir.join(certs::TLS_KEY),
        },
        cert_check_interval: Duration::from_millis(100),
        kubeconfig: None,
        server: serving::Limits {
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(5),
            ..webhook::cli::default_limits()
        },
        apiserver_deadline: Duration::from_secs(4),
        uid_block_repair: Duration::ZERO,
        clock: webhook::tls::system_clock(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_ca_connects_wrong_name_and_untrusted_ca_refused() {
    telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = certs::generate(&opts(), SystemTime::now(), None).expect("bundle");
    certs::write_files(dir.path(), &bundle).expect("write");
    let mut wh = start(files_config(dir.path()), &bundle.ca_pem).await;

    // (server name, CA, expect success)
    let other = certs::generate(&opts(), SystemTime::now(), None).expect("other CA");
    let cases: &[(&str, &str, &str, bool)] = &[
        ("IP SAN", "127.0.0.1", &bundle.ca_pem, true),
        (
            "service DNS name",
            "mock-kind-webhook.mock-kind.svc",
            &bundle.ca_pem,
            true,
        ),
        (
            "cluster.local name",
            "mock-kind-webhook.mock-kind.svc.cluster.local",
            &bundle.ca_pem,
            true,
        ),
        ("wrong host name", "evil.example.com", &bundle.ca_pem, false),
        (
            "wrong service",
            "other.mock-kind.svc",
            &bundle.ca_pem,
            false,
        ),
        ("untrusted CA", "127.0.0.1", &other.ca_pem, false),
    ];
    for (name, server_name, ca, ok) in cases {
        let got = connect(wh.addr, ca, server_name).await;
        assert_eq!(got.is_ok(), *ok, "{name}: {:?}", got.err());
        if let Ok(stream) = got {
            let mut s = http1(stream).await;
            let (status, body) = request(
                &mut s,
                "POST",
                "/mutate",
                fixture("create_pod_runasnonroot.json"),
            )
            .await;
            assert_eq!(status, 200, "{name}");
            let resp: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(resp["response"]["patchType"], "JSONPatch", "{name}");
        }
    }
    wh.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_files_reload_without_dropping_connections_and_bad_pair_is_ignored() {
    telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = certs::generate(&opts(), SystemTime::now(), None).expect("first");
    certs::write_files(dir.path(), &first).expect("write");
    let mut wh = start(files_config(dir.path()), &first.ca_pem).await;
    let first_der = certs::parse_certs(&first.cert_pem, "first").expect("der")[0].clone();

    // A long-lived connection opened before the rotation.
    let stream = connect(wh.addr, &first.ca_pem, "127.0.0.1")
        .await
        .expect("connect");
    assert_eq!(peer_cert(&stream), first_der);
    let mut held = http1(stream).await;
    assert_eq!(
        request(&mut held, "GET", "/healthz", Vec::new()).await.0,
        200
    );

    // A broken pair (new certificate, old key) must not be loaded.
    let second = certs::generate(&opts(), SystemTime::now(), Some(&first.ca_pem)).expect("second");
    certs::write_files(
        dir.path(),
        &certs::Bundle {
            key_pem: first.key_pem.clone(),
            ..second.clone()
        },
    )
    .expect("write broken");
    let addr = wh.addr;
    let ca = first.ca_pem.clone();
    e2e::wait_for(
        Duration::from_secs(10),
        "a failed reload in /metrics",
        || {
            let ca = ca.clone();
            async move {
                let mut s = http1(connect(addr, &ca, "127.0.0.1").await.expect("connect")).await;
                let (_, body) = request(&mut s, "GET", "/metrics", Vec::new()).await;
                let text = String::from_utf8_lossy(&body).into_owned();
                Ok(text
                    .contains("mock_kind_webhook_certificate_reloads_total{result=\"failed\"}")
                    .then_some(()))
            }
        },
    )
    .await
    .expect("failed reload recorded");
    let still = connect(wh.addr, &first.ca_pem, "127.0.0.1")
        .await
        .expect("connect");
    assert_eq!(peer_cert(&still), first_der, "broken pair was served");

    // The complete pair: new connections get it (second.ca_pem trusts both CAs).
    certs::write_files(dir.path(), &second).expect("write second");
    let second_der = certs::parse_certs(&second.cert_pem, "second").expect("der")[0].clone();
    let ca = second.ca_pem.clone();
    e2e::wait_for(Duration::from_secs(10), "the rotated certificate", || {
        let (ca, want) = (ca.clone(), second_der.clone());
        async move {
            let s = connect(addr, &ca, "127.0.0.1").await.expect("connect");
            Ok((peer_cert(&s) == want).then_some(()))
        }
    })
    .await
    .expect("rotated");

    // The connection opened before the rotation still serves requests.
    let (status, _) = request(
        &mut held,
        "POST",
        "/mutate",
        fixture("create_pod_runasnonroot.json"),
    )
    .await;
    assert_eq!(status, 200, "held connection after rotation");
    drop(held);
    wh.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_and_stops_accepting() {
    telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = certs::generate(&opts(), SystemTime::now(), None).expect("bundle");
    certs::write_files(dir.path(), &bundle).expect("write");
    let mut wh = start(files_config(dir.path()), &bundle.ca_pem).await;
    let addr = wh.addr;
    wh.stop().await.expect("run returns Ok after shutdown");
    assert!(
        connect(addr, &bundle.ca_pem, "127.0.0.1").await.is_err(),
        "still accepting after shutdown"
    );
}
