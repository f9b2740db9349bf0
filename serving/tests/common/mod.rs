//! Test helpers: a server on a loopback port with given limits, raw HTTP/1.1 exchanges over
//! plain TCP, and polling for a condition until a deadline.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use serving::Limits;
use telemetry::Readiness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Limits generous everywhere but where a test narrows them.
pub fn limits() -> Limits {
    Limits {
        max_body: 4096,
        max_concurrent: 64,
        request_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(30),
        drain_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(5),
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub ready: Readiness,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<serving::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `router` under `limits` on a free port of 127.0.0.1; ready from the start.
pub fn start(limits: Limits, router: Router) -> Running {
    start_with(limits, router, Readiness::default())
}

/// [`start`] with the readiness `router` reports, which the server drops on shutdown.
pub fn start_with(limits: Limits, router: Router, ready: Readiness) -> Running {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    ready.set(true);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (ready, shutdown) = (ready.clone(), shutdown.clone());
        async move { serving::serve(listener, router, &limits, None, ready, shutdown).await }
    });
    Running {
        addr,
        ready,
        shutdown,
        task,
    }
}

/// The status code and whole text of one response.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// Reads what the server sends until it closes, then parses the status line. A reset after
/// the response arrived (the server closed with request bytes unread) still counts.
pub async fn read_answer(stream: &mut TcpStream) -> std::io::Result<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no HTTP/1.1 status line in {text:?}"),
            )
        })?;
    Ok(Answer { status, text })
}

/// Sends `request` (which should say `Connection: close`) on a new connection and reads the
/// answer, within 10 s.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Answer> {
    let io = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        read_answer(&mut stream).await
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 10 s"))?
}

pub async fn fetch(addr: SocketAddr, path: &str) -> std::io::Result<Answer> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes()).await
}

/// One GET on a kept-alive connection; asserts a 200 arrived (read in one go: tiny answers).
pub async fn keep_alive_get(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("answer");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// Polls `check` every 20 ms until it yields a value or `deadline` passes.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
