//! Test helpers: a TLS client that trusts a given CA, raw HTTP/1.1 requests over it, and a
//! webhook started in-process on a free port.
#![allow(dead_code)]

pub mod cluster;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// A clock for certificate checks fixed at one instant (to check certificates issued by a
/// webhook whose injected clock runs ahead).
#[derive(Debug)]
struct FixedTime(SystemTime);

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        self.0
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(UnixTime::since_unix_epoch)
    }
}

pub fn client_config(ca_pem: &str, at: Option<SystemTime>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in certs::parse_certs(ca_pem, "test CA").expect("CA parses") {
        roots.add(der).expect("CA added");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match at {
        Some(t) => rustls::ClientConfig::builder_with_details(provider, Arc::new(FixedTime(t))),
        None => rustls::ClientConfig::builder_with_provider(provider),
    };
    let config = builder
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `addr` verified against `ca_pem` for `server_name`.
pub async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    connect_at(addr, ca_pem, server_name, None).await
}

/// [`connect`], checking validity at `at` instead of now.
pub async fn connect_at(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
    at: Option<SystemTime>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(client_config(ca_pem, at))
        .connect(name, tcp)
        .await
}

pub fn peer_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")[0]
        .clone()
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 connection over `stream`; the connection task ends when the sender is dropped.
pub async fn http1(stream: TlsStream<TcpStream>) -> Sender {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    sender
}

pub async fn request(
    sender: &mut Sender,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    sender.ready().await.expect("connection ready");
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, body)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A webhook running in-process; cancelled when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<Result<(), webhook::Error>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Running {
    /// Cancels and waits for `run` to return.
    pub async fn stop(&mut self) -> Result<(), webhook::Error> {
        self.shutdown.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("webhook stops within 20 s")
            .expect("webhook task")
    }
}

/// Spawns `run(config)` on a free port of 127.0.0.1 without waiting.
pub fn spawn(mut config: webhook::Config) -> Running {
    let addr = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    config.listen = addr;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(webhook::run(config, shutdown.clone()));
    Running {
        addr,
        shutdown,
        task: Some(task),
    }
}

/// Waits until /readyz answers 200 over TLS trusted by `ca_pem`.
pub async fn wait_ready(addr: SocketAddr, ca_pem: &str) {
    let ca = ca_pem.to_owned();
    e2e::wait_for(Duration::from_secs(60), "webhook /readyz", || {
        let ca = ca.clone();
        async move {
            let Ok(stream) = connect(addr, &ca, "127.0.0.1").await else {
                return Ok(None);
            };
            let mut s = http1(stream).await;
            let (status, _) = request(&mut s, "GET", "/readyz", Vec::new()).await;
            Ok((status == 200).then_some(()))
        }
    })
    .await
    .expect("webhook ready");
}

/// Spawns `config` and waits until it is ready.
pub async fn start(config: webhook::Config, ca_pem: &str) -> Running {
    let running = spawn(config);
    wait_ready(running.addr, ca_pem).await;
    running
}
