//! A fault-injecting HTTPS proxy between a client under test and the harness's kube-apiserver.
//!
//! TLS ends in the proxy so faults can be real HTTP answers: it serves a certificate for
//! 127.0.0.1 from its own CA (written into the kubeconfig it hands out) and opens one TLS
//! connection to the apiserver, with the admin client certificate, per client connection. What
//! it injects, decided by [`crate::fault_plan`] from a seed:
//! - a share of new connections reset right after accept;
//! - a share of connections reset later in their life, mid-request or idle in a pool;
//! - a share of requests answered 429 (with `Retry-After`) or 500, as apiserver's own
//!   `Status` objects;
//! - a share of requests passed on whose connection is reset once the apiserver answered
//!   (the write happened, the client never hears; a watch is cut mid-stream);
//! - a blackout: the listening socket is closed (new connections are refused) and every live
//!   connection is reset, until it is lifted.
//!
//! Every injected fault is counted, so a test can assert that it really injected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::fault_plan::{self, ConnVerdict, CutWindow, Dice, FaultRates, RequestVerdict, Stream};
use crate::{Error, config, pki};

/// How many of each fault the proxy injected, and how much it passed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: u64,
    pub reset_on_accept: u64,
    pub cut_live: u64,
    pub reset_after_forward: u64,
    pub cut_by_blackout: u64,
    pub blackouts: u64,
    pub requests: u64,
    pub forwarded: u64,
    pub too_many_requests: u64,
    pub server_errors: u64,
    /// Connections to the apiserver that failed to open or broke (not a fault we injected).
    pub upstream_failures: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    reset_on_accept: AtomicU64,
    cut_live: AtomicU64,
    reset_after_forward: AtomicU64,
    cut_by_blackout: AtomicU64,
    blackouts: AtomicU64,
    requests: AtomicU64,
    forwarded: AtomicU64,
    too_many_requests: AtomicU64,
    server_errors: AtomicU64,
    upstream_failures: AtomicU64,
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed)
}

struct Upstream {
    addr: SocketAddr,
    name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

struct State {
    rates: Mutex<FaultRates>,
    window: CutWindow,
    dice: Dice,
    blackout: watch::Sender<bool>,
    /// Whether the port is open: the accept loop follows the blackout switch a moment later.
    listening: watch::Sender<bool>,
    counters: Counters,
    acceptor: tokio_rustls::TlsAcceptor,
    upstream: Upstream,
}

impl State {
    fn rates(&self) -> FaultRates {
        *self.rates.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FaultProxy {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 in front of the apiserver named in
    /// `upstream_kubeconfig` (one with embedded certificate data, as the harness writes), with
    /// no faults until [`FaultProxy::set_rates`] or [`FaultProxy::set_blackout`].
    pub async fn start(upstream_kubeconfig: &Path, seed: u64) -> Result<Self, Error> {
        telemetry::install_crypto_provider();
        let up = UpstreamCreds::read(upstream_kubeconfig)?;
        let ours = pki::Pki::generate()?;
        let acceptor = server_tls(&ours.serving_cert, &ours.serving_key)?;
        let upstream = Upstream {
            addr: up.addr,
            name: ServerName::IpAddress(up.addr.ip().into()),
            tls: client_tls(&up.ca_pem, &up.cert_pem, &up.key_pem)?,
        };
        let listener =
            bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(|e| Error::io("127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("127.0.0.1:0", e))?;
        let dir = tempfile::Builder::new()
            .prefix("mock-kind-fault-proxy-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        // Clients trust our CA; the admin credentials ride along unused (the proxy asks for no
        // client certificate), so the file is an ordinary harness kubeconfig.
        let kubeconfig = dir.path().join("proxy.kubeconfig");
        let text = config::kubeconfig(
            &format!("https://{addr}"),
            &ours.ca_cert,
            &up.cert_pem,
            &up.key_pem,
        );
        std::fs::write(&kubeconfig, text).map_err(|e| Error::io(&kubeconfig, e))?;
        let state = Arc::new(State {
            rates: Mutex::new(FaultRates::NONE),
            window: CutWindow::default(),
            dice: Dice { seed },
            blackout: watch::Sender::new(false),
            listening: watch::Sender::new(true),
            counters: Counters::default(),
            acceptor,
            upstream,
        });
        let task = tokio::spawn(accept_loop(state.clone(), listener, addr));
        Ok(FaultProxy {
            addr,
            kubeconfig,
            state,
            task,
            _dir: dir,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig whose server is this proxy.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Applies to connections accepted and requests received from now on.
    pub fn set_rates(&self, rates: FaultRates) {
        *self.state.rates.lock().unwrap_or_else(|e| e.into_inner()) = rates;
    }

    /// On: the listener closes and every live connection is reset. Off: listening again.
    /// Returns once the port is closed (or open again), so a connect right after it sees the
    /// new state; a port that cannot be bound again within 10 s is an error.
    pub async fn set_blackout(&self, on: bool) -> Result<(), Error> {
        let changed = self.state.blackout.send_if_modified(|b| {
            let changed = *b != on;
            *b = on;
            changed
        });
        if changed && on {
            bump(&self.state.counters.blackouts);
        }
        let secs = 10.0;
        tokio::time::timeout(
            Duration::from_secs_f64(secs),
            until(&mut self.state.listening.subscribe(), !on),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: format!(
                "the fault proxy's port to be {}",
                if on { "closed" } else { "open" }
            ),
            secs,
        })
    }

    pub fn counts(&self) -> Counts {
        let c = &self.state.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            connections: get(&c.connections),
            reset_on_accept: get(&c.reset_on_accept),
            cut_live: get(&c.cut_live),
            reset_after_forward: get(&c.reset_after_forward),
            cut_by_blackout: get(&c.cut_by_blackout),
            blackouts: get(&c.blackouts),
            requests: get(&c.requests),
            forwarded: get(&c.forwarded),
            too_many_requests: get(&c.too_many_requests),
            server_errors: get(&c.server_errors),
            upstream_failures: get(&c.upstream_failures),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Live connections end with it: each one watches the blackout switch.
        self.state.blackout.send_replace(true);
        self.task.abort();
    }
}

/// The apiserver's address and the admin's credentials, from a kubeconfig with embedded data.
struct UpstreamCreds {
    addr: SocketAddr,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl UpstreamCreds {
    fn read(path: &Path) -> Result<Self, Error> {
        let bad = |what: &str| Error::FaultProxy(format!("{}: {what}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        let field = |ptr: &str| -> Result<String, Error> {
            doc.pointer(ptr)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("no {ptr}")))
        };
        let pem = |ptr: &str| -> Result<String, Error> {
            let data = base64::engine::general_purpose::STANDARD
                .decode(field(ptr)?)
                .map_err(|e| bad(&format!("{ptr}: {e}")))?;
            String::from_utf8(data).map_err(|e| bad(&format!("{ptr}: {e}")))
        };
        let server = field("/clusters/0/cluster/server")?;
        let addr = server
            .strip_prefix("https://")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad(&format!("server {server} is not https://<ip>:<port>")))?;
        Ok(UpstreamCreds {
            addr,
            ca_pem: pem("/clusters/0/cluster/certificate-authority-data")?,
            cert_pem: pem("/users/0/user/client-certificate-data")?,
            key_pem: pem("/users/0/user/client-key-data")?,
        })
    }
}

fn tls_err(what: &str) -> impl FnOnce(rustls::Error) -> Error + '_ {
    move |e| Error::FaultProxy(format!("{what}: {e}"))
}

fn pem_err(what: &str) -> impl FnOnce(rustls::pki_types::pem::Error) -> Error + '_ {
    move |e| Error::FaultProxy(format!("{what}: {e}"))
}

fn server_tls(cert_pem: &str, key_pem: &str) -> Result<tokio_rustls::TlsAcceptor, Error> {
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(pem_err("cert"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err("key"))?;
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(tls_err("serving certificate"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

fn client_tls(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<tokio_rustls::TlsConnector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(pem_err("CA"))?;
    roots.add(ca).map_err(tls_err("CA"))?;
    let cert =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(pem_err("client cert"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err("client key"))?;
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .map_err(tls_err("client certificate"))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// SO_REUSEADDR, so the port can be bound again right after a blackout.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn until(rx: &mut watch::Receiver<bool>, want: bool) {
    // The guard `wait_for` returns holds the channel's lock: drop it here, at once.
    let _ = rx.wait_for(|b| *b == want).await.map(|_| ());
}

async fn accept_loop(state: Arc<State>, listener: TcpListener, addr: SocketAddr) {
    let mut blackout = state.blackout.subscribe();
    let mut listener = Some(listener);
    let mut conn_seq = 0u64;
    loop {
        let Some(l) = listener.as_ref() else {
            state.listening.send_replace(false);
            until(&mut blackout, false).await;
            // Another process may hold the port for a moment; keep trying, the test's
            // deadlines tell if it never comes back.
            loop {
                match bind(addr) {
                    Ok(l) => {
                        state.listening.send_replace(true);
                        break listener = Some(l);
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "fault proxy cannot listen again");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let n = conn_seq;
                conn_seq += 1;
                bump(&state.counters.connections);
                let verdict = fault_plan::connection(
                    &state.rates(),
                    &state.window,
                    state.dice.roll(Stream::ConnPick, n),
                    state.dice.roll(Stream::ConnWhen, n),
                );
                if verdict == ConnVerdict::Reset {
                    bump(&state.counters.reset_on_accept);
                    let _ = tcp.set_zero_linger();
                    drop(tcp);
                    continue;
                }
                tokio::spawn(serve(state.clone(), tcp, verdict));
            }
            () = until(&mut blackout, true) => listener = None,
        }
    }
}

/// How a connection is cut: `reset` makes its drop send RST; `now` asks its task to drop it.
#[derive(Default)]
struct Cut {
    reset: AtomicBool,
    now: tokio::sync::Notify,
}

impl Cut {
    fn fire(&self) {
        self.reset.store(true, Ordering::Relaxed);
        self.now.notify_one();
    }
}

/// One client connection: TLS in, one TLS connection out, requests passed one at a time
/// (HTTP/1.1 has one in flight per connection), until either side closes or a fault cuts it.
async fn serve(state: Arc<State>, tcp: TcpStream, verdict: ConnVerdict) {
    let mut blackout = state.blackout.subscribe();
    let cut = Arc::new(Cut::default());
    let io = ResetOnDrop {
        tcp,
        cut: cut.clone(),
    };
    let cut_after = match verdict {
        ConnVerdict::CutAfter(d) => Some(d),
        _ => None,
    };
    // Each arm marks the cut before the select drops the connection, so the drop sends RST.
    let timed = async {
        match cut_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
        cut.fire();
    };
    let black = async {
        until(&mut blackout, true).await;
        cut.fire();
    };
    tokio::select! {
        () = relay(&state, io, cut.clone()) => {}
        () = timed => {
            bump(&state.counters.cut_live);
        }
        () = black => {
            bump(&state.counters.cut_by_blackout);
        }
        // Fired by a request's verdict, which counted itself.
        () = cut.now.notified() => {}
    }
}

/// Relays until either side closes the connection.
async fn relay(state: &Arc<State>, io: ResetOnDrop, cut: Arc<Cut>) {
    let Ok(tls) = state.acceptor.accept(io).await else {
        // The client gave up on the handshake: nothing of the apiserver's doing.
        return;
    };
    let up = &state.upstream;
    let upstream = async {
        let tcp = TcpStream::connect(up.addr).await.ok()?;
        let tls = up.tls.connect(up.name.clone(), tcp).await.ok()?;
        hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(tls))
            .await
            .ok()
    };
    let Some((send, up_conn)) = upstream.await else {
        bump(&state.counters.upstream_failures);
        return;
    };
    let send = Arc::new(tokio::sync::Mutex::new(send));
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        answer(svc_state.clone(), send.clone(), cut.clone(), req)
    });
    let down = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(tls), svc);
    tokio::select! {
        // An error here is the client's doing (it closed mid-answer) or an upstream failure
        // that `answer` counted.
        _ = down => {}
        r = up_conn => if r.is_err() {
            bump(&state.counters.upstream_failures);
        },
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

async fn answer(
    state: Arc<State>,
    send: Arc<tokio::sync::Mutex<SendRequest<Incoming>>>,
    cut: Arc<Cut>,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let n = bump(&state.counters.requests);
    let verdict = fault_plan::request(&state.rates(), state.dice.roll(Stream::Request, n));
    let (code, retry_after) = match verdict {
        RequestVerdict::Forward | RequestVerdict::ResetAfterForward => {
            let res = {
                let mut send = send.lock().await;
                let sent = async {
                    send.ready().await?;
                    send.send_request(req).await
                };
                sent.await.inspect_err(|_| {
                    bump(&state.counters.upstream_failures);
                })?
            };
            if verdict == RequestVerdict::ResetAfterForward {
                bump(&state.counters.reset_after_forward);
                cut.fire();
                // The connection task drops this future with the connection.
                return std::future::pending().await;
            }
            bump(&state.counters.forwarded);
            return Ok(res.map(BodyExt::boxed));
        }
        RequestVerdict::TooManyRequests { retry_after_secs } => {
            bump(&state.counters.too_many_requests);
            (StatusCode::TOO_MANY_REQUESTS, Some(retry_after_secs))
        }
        RequestVerdict::ServerError => {
            bump(&state.counters.server_errors);
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        }
    };
    // Read the request through, as the apiserver would, so the connection stays usable.
    req.into_body().collect().await?;
    Ok(status_response(code, retry_after))
}

/// An answer shaped like the apiserver's own: a `Status` object, `Retry-After` on a 429.
fn status_response(code: StatusCode, retry_after: Option<u32>) -> Response<Body> {
    let reason = match code {
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        _ => "InternalError",
    };
    let mut status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected by the fault proxy: {code}"),
        "reason": reason, "code": code.as_u16(),
    });
    if let Some(secs) = retry_after {
        status["details"] = serde_json::json!({ "retryAfterSeconds": secs });
    }
    let body = Full::new(Bytes::from(status.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut res = Response::new(body);
    *res.status_mut() = code;
    let headers = res.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = retry_after {
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    res
}

/// A client socket that, once `reset` is set, closes with RST instead of FIN: that is how a
/// crashed or partitioned peer looks to the client.
struct ResetOnDrop {
    tcp: TcpStream,
    cut: Arc<Cut>,
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if self.cut.reset.load(Ordering::Relaxed) {
            let _ = self.tcp.set_zero_linger();
        }
    }
}

impl AsyncRead for ResetOnDrop {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetOnDrop {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
