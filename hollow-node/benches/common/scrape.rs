//! A full scrape of every node's `/metrics/resource` as metrics-server makes one: every node at
//! once, straight to each node's own kubelet port (`--kubelet-port-per-node`), authenticated
//! with the harness's admin client certificate, each answer decoded as metrics-server decodes
//! it. Timed as the client sees it: from the first request to the last body decoded.

use std::path::Path;
use std::time::{Duration, Instant};

use hollow_node::kubelet::decode;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A base port from which `n` ports are free on 127.0.0.1, below the usual ephemeral range so
/// outgoing connections do not take them meanwhile.
pub fn free_range(n: usize) -> Option<u16> {
    let n = u16::try_from(n).ok()?;
    (10_000u16..32_000u16.saturating_sub(n))
        .step_by(usize::from(n.max(1)))
        .find(|&base| (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
}

/// One client per node port (each keeps its connection, as metrics-server's transport does).
pub async fn clients(
    kubeconfig: &Path,
    base: u16,
    n: usize,
) -> Result<Vec<kube::Client>, BoxError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let template =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let port = u16::try_from(i)
            .ok()
            .and_then(|i| base.checked_add(i))
            .ok_or("port")?;
        let mut c = template.clone();
        c.cluster_url = format!("https://127.0.0.1:{port}").parse()?;
        // Self-issued serving certificate, as metrics-server's --kubelet-insecure-tls.
        c.accept_invalid_certs = true;
        c.read_timeout = Some(Duration::from_secs(30));
        out.push(kube::Client::try_from(c)?);
    }
    Ok(out)
}

/// One round: (time for the whole scrape, each node's latency sorted, pods decoded in all).
pub async fn round(clients: &[kube::Client]) -> Result<(f64, Vec<f64>, usize), BoxError> {
    let start = Instant::now();
    let scrapes = clients.iter().map(|c| async move {
        let t = Instant::now();
        let req = http::Request::get("/metrics/resource").body(Vec::new())?;
        let text = c.request_text(req).await?;
        let d = decode::decode(&text)?;
        let took = t.elapsed().as_secs_f64();
        if d.node.is_none() {
            return Err::<_, BoxError>("a node without complete node metrics".into());
        }
        Ok((took, d.pods.len()))
    });
    let results = futures::future::join_all(scrapes).await;
    let total = start.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(results.len());
    let mut pods = 0;
    for r in results {
        let (took, n) = r?;
        lat.push(took);
        pods += n;
    }
    lat.sort_by(f64::total_cmp);
    Ok((total, lat, pods))
}
