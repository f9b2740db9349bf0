//! Waiting with a deadline, free ports, and a plain-HTTP health probe.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;

/// Polls `check` until it yields `Some`, an error, or `timeout` passes. The pause between polls
/// grows from 50 ms to 1 s, so quick conditions return quickly and slow ones cost little.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Error>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs_f64(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// A port that was free on 127.0.0.1 a moment ago. Callers that bind it later retry with another
/// when it was taken in between.
/// A port is never handed out twice in one process, so harnesses started side by side do not
/// pick the same one.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..64 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        if port != 0 && given.insert(port) {
            return port;
        }
    }
    0
}

/// True when `GET http://127.0.0.1:<port><path>` answers 200.
pub async fn http_ok(port: u16, path: &str) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(buf)) => {
            let head = String::from_utf8_lossy(&buf[..buf.len().min(32)]).to_string();
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_for_returns_the_value_or_times_out() {
        let mut n = 0;
        let got = wait_for(Duration::from_secs(10), "third poll", || {
            n += 1;
            let v = (n == 3).then_some(n);
            async move { Ok(v) }
        })
        .await
        .expect("value");
        assert_eq!(got, 3);

        let err = wait_for(Duration::from_secs(2), "never", || async { Ok(None::<()>) })
            .await
            .expect_err("timeout");
        assert!(err.to_string().contains("never"), "{err}");
    }

    #[tokio::test]
    async fn http_ok_tells_200_from_other_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for status in ["200 OK", "500 Internal Server Error"] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        assert!(http_ok(port, "/healthz").await, "first answer is 200");
        assert!(!http_ok(port, "/healthz").await, "second answer is 500");
        assert!(!http_ok(free_port(), "/healthz").await, "nothing listening");
    }
}
