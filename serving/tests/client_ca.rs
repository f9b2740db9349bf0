//! HTTPS that asks for client certificates (`tls::server_config_with_client_ca`): a client
//! without one is served, one whose certificate chains to the client CA is served with that
//! certificate in axum-server's `TlsInfo`, and one with a certificate from another CA is
//! refused in the handshake. A chain verified once is remembered (`serving::client_chains`),
//! but the key is still proven at every handshake: the same certificate presented with
//! another key is refused after it was served.

mod common;

use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Router};
use axum_server::tls::TlsInfo;
use axum_server::tls_rustls::RustlsConfig;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serving::tls::{PemPair, server_config_with_client_ca};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("ca");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A client certificate for `cn` signed by `ca`: (chain, key).
fn client(ca: &Ca, cn: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("client cert");
    let der = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    (vec![cert.der().clone()], der)
}

/// Presents a chain and signs with a key without checking that they belong together (rustls'
/// own `with_client_auth_cert` refuses a mismatch, so a thief's client is built this way).
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

async fn get_peers(
    addr: std::net::SocketAddr,
    server_cert: &CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> anyhow::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_cert.clone())?;
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => {
            let provider = rustls::crypto::CryptoProvider::get_default()
                .ok_or_else(|| anyhow::anyhow!("no crypto provider"))?;
            let key = provider.key_provider.load_private_key(key)?;
            builder.with_client_cert_resolver(Arc::new(Presents(Arc::new(
                rustls::sign::CertifiedKey::new(chain, key),
            ))))
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    tls.write_all(b"GET /peers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    tls.read_to_string(&mut text).await?;
    Ok(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_from_the_client_ca_reach_the_handler_and_others_are_refused() {
    telemetry::install_crypto_provider();
    let serving = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cluster = ca("cluster-ca");
    let other = ca("other-ca");
    let config = server_config_with_client_ca(
        &PemPair {
            cert: serving.cert.pem(),
            key: serving.signing_key.serialize_pem(),
        },
        &cluster.pem,
    )
    .expect("config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let router = Router::new().route(
        "/peers",
        get(|Extension(info): Extension<Arc<TlsInfo>>| async move {
            format!("peers={}", info.peer_certificates.len())
        }),
    );
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            serving::serve(
                listener,
                router,
                &limits(),
                Some(RustlsConfig::from_config(config)),
                telemetry::Readiness::default(),
                shutdown,
            )
            .await
        }
    });
    let server_cert = serving.cert.der().clone();
    let (good_chain, good_key) = client(&cluster, "kube-apiserver-kubelet-client");
    let (_, thief_key) = client(&cluster, "thief");
    let cases = [
        ("no certificate: served, none seen", None, Some("peers=0")),
        (
            "from the client CA: served, seen",
            Some((good_chain.clone(), good_key.clone_key())),
            Some("peers=1"),
        ),
        (
            "the same again (its chain remembered): served, seen",
            Some((good_chain.clone(), good_key.clone_key())),
            Some("peers=1"),
        ),
        (
            "the same certificate with another key: refused",
            Some((good_chain.clone(), thief_key)),
            None,
        ),
        (
            "from another CA: refused",
            Some(client(&other, "intruder")),
            None,
        ),
        (
            "the remembered one still: served, seen",
            Some((good_chain, good_key)),
            Some("peers=1"),
        ),
    ];
    for (name, identity, want) in cases {
        let got = get_peers(addr, &server_cert, identity).await;
        match (got, want) {
            (Ok(text), Some(body)) => {
                assert!(text.starts_with("HTTP/1.1 200"), "{name}: {text}");
                assert!(text.ends_with(body), "{name}: {text}");
            }
            (Err(_), None) => {}
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
    shutdown.cancel();
    assert!(
        server_config_with_client_ca(
            &PemPair {
                cert: serving.cert.pem(),
                key: serving.signing_key.serialize_pem(),
            },
            "not a certificate",
        )
        .is_err(),
        "a client CA that is no certificate is an error"
    );
}
