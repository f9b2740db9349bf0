//! The fault proxy in front of the real apiserver: each fault reaches a kube client as what it
//! claims to be, and is counted.

use std::path::Path;
use std::time::Duration;

use e2e::{ControlPlane, FaultProxy, FaultRates, Options, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client with no connection yet, and without kube's own retry of 429s, so they show.
async fn fresh_client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    cfg.default_retry = false;
    kube::Client::try_from(cfg).expect("client")
}

fn code(r: &Result<Namespace, kube::Error>) -> Option<u16> {
    match r {
        Err(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fault_reaches_the_client_as_itself() {
    let cp = ControlPlane::start(Options {
        scheduler: false,
        controller_manager: false,
        ..Options::default()
    })
    .await
    .expect("control plane");
    let proxy = FaultProxy::start(&cp.kubeconfig(), 7).await.expect("proxy");
    let client = fresh_client(proxy.kubeconfig()).await;
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.get("default").await.expect("clean: passed through");

    proxy.set_rates(FaultRates {
        too_many_requests: 1.0,
        ..FaultRates::NONE
    });
    let req = http::Request::get("/api/v1/namespaces/default")
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let res = client.send(req).await.expect("an answer");
    assert_eq!(res.status(), 429);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(code(&ns.get("default").await), Some(429), "as a Status");

    proxy.set_rates(FaultRates {
        server_error: 1.0,
        ..FaultRates::NONE
    });
    assert_eq!(code(&ns.get("default").await), Some(500));

    // Reset after the apiserver acted: the client sees a broken connection, the write happened.
    proxy.set_rates(FaultRates {
        reset_mid_request: 1.0,
        ..FaultRates::NONE
    });
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "written"}})).expect("cm");
    let created = cms.create(&PostParams::default(), &cm).await;
    assert!(
        matches!(created, Err(ref e) if !matches!(e, kube::Error::Api(_))),
        "a connection error, not an answer: {created:?}"
    );
    proxy.set_rates(FaultRates::NONE);
    cms.get("written").await.expect("the write happened");

    // Resets at accept hit only new connections.
    proxy.set_rates(FaultRates {
        reset_on_accept: 1.0,
        ..FaultRates::NONE
    });
    let fresh: Api<Namespace> = Api::all(fresh_client(proxy.kubeconfig()).await);
    assert!(fresh.get("default").await.is_err(), "reset at accept");

    // Cut within the window (0.2–5 s) of a connection's life.
    proxy.set_rates(FaultRates {
        cut_live: 1.0,
        ..FaultRates::NONE
    });
    let doomed: Api<Namespace> = Api::all(fresh_client(proxy.kubeconfig()).await);
    doomed
        .get("default")
        .await
        .expect("answered before the cut");
    wait_for(Duration::from_secs(10), "a live connection cut", || {
        let n = proxy.counts().cut_live;
        async move { Ok((n >= 1).then_some(())) }
    })
    .await
    .expect("cut");

    // Blackout: the port is closed, pooled connections are reset; then all is well again.
    proxy.set_rates(FaultRates::NONE);
    let pooled: Api<Namespace> = Api::all(fresh_client(proxy.kubeconfig()).await);
    pooled.get("default").await.expect("a pooled connection");
    proxy.set_blackout(true).await.expect("blackout on");
    let refused = tokio::net::TcpStream::connect(proxy.addr()).await;
    assert!(refused.is_err(), "connection refused in the blackout");
    assert!(pooled.get("default").await.is_err(), "nothing passes");
    proxy.set_blackout(false).await.expect("blackout off");
    wait_for(Duration::from_secs(10), "the proxy back", || {
        let pooled = pooled.clone();
        async move { Ok(pooled.get("default").await.ok().map(|_| ())) }
    })
    .await
    .expect("back after the blackout");

    let c = proxy.counts();
    assert!(c.too_many_requests >= 2 && c.server_errors >= 1, "{c:?}");
    assert_eq!(c.reset_after_forward, 1, "{c:?}");
    assert!(c.reset_on_accept >= 1 && c.cut_live >= 1, "{c:?}");
    assert!(c.cut_by_blackout >= 1 && c.blackouts == 1, "{c:?}");
}
