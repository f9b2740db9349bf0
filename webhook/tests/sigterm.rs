//! The real `mock-kind-webhook` binary, sent SIGTERM in the middle of a burst of admissions,
//! answers every one of them with 200: /readyz fails at once, but the server keeps answering
//! for the drain delay, telling keep-alive callers to reconnect instead of resetting them.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

const WORKERS: usize = 32;
const REQUESTS: usize = 600;
/// The webhook's default --drain-delay-seconds.
const DRAIN: Duration = Duration::from_secs(5);

/// Kills the child if the test fails before it exits.
struct Webhook(Child);

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(unsafe_code)]
fn sigterm(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) takes plain integers; the pid is our own child, not yet reaped.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM) failed");
}

/// One admission on `sender`; the status and whether the server asked to close the connection.
async fn admit(sender: &mut Sender, body: &[u8]) -> Result<(u16, bool), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let request = http::Request::post("/mutate")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let close = response
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok((status, close))
}

/// Sends admissions on a keep-alive connection until `REQUESTS` were sent in all; like Go's
/// transport, a connection the server asked to close is replaced. Returns the failures.
async fn worker(
    addr: SocketAddr,
    ca: Arc<String>,
    sent: Arc<AtomicUsize>,
    terminated: Arc<AtomicBool>,
    after_sigterm: Arc<AtomicUsize>,
) -> Vec<String> {
    let body = fixture("create_pod_runasnonroot.json");
    let mut failures = Vec::new();
    let mut sender: Option<Sender> = None;
    while sent.fetch_add(1, Ordering::SeqCst) < REQUESTS {
        let late = terminated.load(Ordering::SeqCst);
        let mut conn = match sender.take() {
            Some(s) => s,
            None => match connect(addr, &ca, "127.0.0.1").await {
                Ok(stream) => http1(stream).await,
                Err(e) => {
                    failures.push(format!("connect (after SIGTERM: {late}): {e}"));
                    continue;
                }
            },
        };
        match admit(&mut conn, &body).await {
            Ok((200, close)) => {
                if late {
                    after_sigterm.fetch_add(1, Ordering::SeqCst);
                }
                if !close {
                    sender = Some(conn);
                }
            }
            Ok((status, _)) => failures.push(format!("status {status} (after SIGTERM: {late})")),
            Err(e) => failures.push(format!("{e} (after SIGTERM: {late})")),
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_burst_of_admissions_drops_none() {
    telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = certs::CertOptions::new("mock-kind-webhook", "mock-kind");
    opts.extra_sans = vec!["127.0.0.1".to_owned()];
    let bundle = certs::generate(&opts, SystemTime::now(), None).expect("bundle");
    certs::write_files(dir.path(), &bundle).expect("write");
    let addr = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
    let child = Command::new(env!("CARGO_BIN_EXE_mock-kind-webhook"))
        .args(["--listen", &addr.to_string(), "--strategy", "pod"])
        .arg("--tls-cert")
        .arg(dir.path().join(certs::TLS_CRT))
        .arg("--tls-key")
        .arg(dir.path().join(certs::TLS_KEY))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start mock-kind-webhook");
    let mut webhook = Webhook(child);
    wait_ready(addr, &bundle.ca_pem).await;

    let ca = Arc::new(bundle.ca_pem.clone());
    let sent = Arc::new(AtomicUsize::new(0));
    let terminated = Arc::new(AtomicBool::new(false));
    let after_sigterm = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            tokio::spawn(worker(
                addr,
                ca.clone(),
                sent.clone(),
                terminated.clone(),
                after_sigterm.clone(),
            ))
        })
        .collect();

    // SIGTERM once a third of the burst was sent.
    let watched = sent.clone();
    e2e::wait_for(Duration::from_secs(60), "a third of the burst sent", || {
        let sent = watched.load(Ordering::SeqCst);
        async move { Ok((sent >= REQUESTS / 3).then_some(())) }
    })
    .await
    .expect("burst under way");
    let signalled = Instant::now();
    terminated.store(true, Ordering::SeqCst);
    sigterm(&webhook.0);

    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.expect("worker"));
    }
    let burst_done = signalled.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} admissions failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        burst_done < DRAIN,
        "the burst outlasted the drain delay ({burst_done:?}); the test proves nothing"
    );
    assert!(
        after_sigterm.load(Ordering::SeqCst) > 0,
        "no admission was answered after SIGTERM"
    );

    // Still draining: /readyz already fails so Endpoints drop the pod.
    let mut s = http1(
        connect(addr, &bundle.ca_pem, "127.0.0.1")
            .await
            .expect("connect"),
    )
    .await;
    let (status, _) = request(&mut s, "GET", "/readyz", Vec::new()).await;
    assert_eq!(status, 503, "/readyz during the drain");
    drop(s);

    // Then the process exits cleanly.
    let status = e2e::wait_for(Duration::from_secs(30), "webhook exit", || {
        let exited = webhook.0.try_wait().ok().flatten();
        async move { Ok(exited) }
    })
    .await
    .expect("webhook exits after drain and grace");
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() >= DRAIN,
        "exited {:?} after SIGTERM, before the drain delay",
        signalled.elapsed()
    );
}
