//! The server's CPU per full TLS handshake with a client certificate, as metrics-server opens
//! one to every node's kubelet port: rustls in memory (no sockets), ECDSA P-256 keys as
//! hollow-node issues them, a serving certificate with 257 names (hollow-node's self-issued
//! one), a client that never resumes (Go's default transport). Compares the client CA verifier
//! that verifies every chain with `serving::client_chains::CachingVerifier`, in interleaved
//! runs: median and spread of the server's microseconds per handshake.
//!
//! `cargo bench -p serving --bench handshakes`; BENCH_HANDSHAKES (2,000 a run), BENCH_RUNS (7).

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::bench_env::env_or;
use e2e::stats::median_and_spread;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme,
};
use serving::client_chains::CachingVerifier;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// As metrics-server's `--kubelet-insecure-tls`: the server's certificate is not checked.
#[derive(Debug)]
struct Insecure;

impl ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One full handshake; the time spent in the server's calls.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> Result<Duration, BoxError> {
    let mut c = ClientConnection::new(client.clone(), ServerName::try_from("127.0.0.2")?)?;
    let mut s = ServerConnection::new(server.clone())?;
    let mut in_server = Duration::ZERO;
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        to_server.clear();
        while c.wants_write() {
            c.write_tls(&mut to_server)?;
        }
        let t = Instant::now();
        let mut r = to_server.as_slice();
        while !r.is_empty() {
            s.read_tls(&mut r)?;
            s.process_new_packets()?;
        }
        to_client.clear();
        while s.wants_write() {
            s.write_tls(&mut to_client)?;
        }
        in_server += t.elapsed();
        let mut r = to_client.as_slice();
        while !r.is_empty() {
            c.read_tls(&mut r)?;
            c.process_new_packets()?;
        }
        if to_server.is_empty() && to_client.is_empty() {
            if c.is_handshaking() || s.is_handshaking() {
                return Err("the handshake stalled".into());
            }
            break;
        }
    }
    Ok(in_server)
}

fn main() -> Result<(), BoxError> {
    let per_run = env_or("BENCH_HANDSHAKES", 2_000usize);
    let runs = env_or("BENCH_RUNS", 7usize);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, "system:metrics-server");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client_params.signed_by(&client_key, &issuer)?;
    let mut names = vec!["127.0.0.2".to_string()];
    names.extend((0..256).map(|i| format!("hollow-node-{i}")));
    let server_key = KeyPair::generate()?;
    let server_cert = CertificateParams::new(names)?.self_signed(&server_key)?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let every_time = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let server = |verifier: Arc<dyn ClientCertVerifier>| -> Result<Arc<ServerConfig>, BoxError> {
        Ok(Arc::new(
            ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_client_cert_verifier(verifier)
                .with_single_cert(
                    vec![server_cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
                )?,
        ))
    };
    let plain = server(every_time.clone())?;
    let cached = server(Arc::new(CachingVerifier::new(every_time)))?;
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Insecure))
        .with_client_auth_cert(
            vec![client_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der())),
        )?;
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);

    let per_handshake = |server: &Arc<ServerConfig>| -> Result<f64, BoxError> {
        let mut total = Duration::ZERO;
        for _ in 0..per_run {
            total += handshake(&client, server)?;
        }
        Ok(total.as_secs_f64() * 1e6 / per_run as f64)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(per_handshake(&plain)?);
        b.push(per_handshake(&cached)?);
    }
    let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| y / x).collect();
    let (am, alo, ahi) = median_and_spread(a);
    let (bm, blo, bhi) = median_and_spread(b);
    let (rm, rlo, rhi) = median_and_spread(ratios);
    println!(
        "server CPU per full TLS handshake with a client certificate, {runs} interleaved runs of {per_run}:"
    );
    println!("| client CA verifier | µs per handshake, median (min–max) |");
    println!("|---|---|");
    println!("| every chain verified | {am:.0} ({alo:.0}–{ahi:.0}) |");
    println!("| verified chains remembered (`client_chains`) | {bm:.0} ({blo:.0}–{bhi:.0}) |");
    println!("| ratio, remembered / every | {rm:.2} ({rlo:.2}–{rhi:.2}) |");
    Ok(())
}
