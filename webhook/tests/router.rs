//! `router()` driven with `oneshot` and the AdmissionReview fixtures in tests/data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;
use webhook::metrics::Metrics;
use webhook::namespaces::NamespaceRanges;
use webhook::server::{AppState, MAX_BODY, UidSource, router};

const POD_MIN: i64 = 2_000_000;
const POD_MAX: i64 = 2_000_099;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn app(uids: UidSource) -> (axum::Router, Arc<Registry>) {
    app_with_deadline(uids, Duration::from_secs(4))
}

fn app_with_deadline(
    uids: UidSource,
    apiserver_deadline: Duration,
) -> (axum::Router, Arc<Registry>) {
    app_with(uids, apiserver_deadline, webhook::Profile::RunAsNonRoot)
}

fn app_with(
    uids: UidSource,
    apiserver_deadline: Duration,
    profile: webhook::Profile,
) -> (axum::Router, Arc<Registry>) {
    let mut registry = Registry::with_prefix("mock_kind_webhook");
    let metrics = Arc::new(Metrics::register(&mut registry));
    let registry = Arc::new(registry);
    let ready = telemetry::Readiness::default();
    ready.set(true);
    let state = AppState {
        uids: Arc::new(uids),
        metrics,
        exclude_namespaces: vec!["kube-system".to_owned()].into(),
        profile,
        placement: None,
        apiserver_deadline,
    };
    (
        router(state, registry.clone(), ready, telemetry::Health::default()),
        registry,
    )
}

async fn post(app: &axum::Router, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let resp = app
        .clone()
        .oneshot(
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes.to_vec())
}

/// The patched pod, if the response carries a patch (asserting it applies and decodes).
fn apply(request: &[u8], response: &Value) -> Option<(Value, Pod)> {
    let b64 = response["response"]["patch"].as_str()?;
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("patch is a JSON patch");
    let review: Value = serde_json::from_slice(request).expect("fixture json");
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch.0).expect("patch applies to the request's object");
    let pod: Pod = serde_json::from_value(object.clone()).expect("patched object decodes as a Pod");
    Some((object, pod))
}

#[tokio::test]
async fn fixtures_pod_strategy() {
    let (app, registry) = app(UidSource::Pod {
        min: POD_MIN,
        max: POD_MAX,
    });
    // (fixture, status, patched, warning expected)
    let cases: &[(&str, StatusCode, bool, bool)] = &[
        ("create_pod_runasnonroot.json", StatusCode::OK, true, false),
        ("create_pod_dry_run.json", StatusCode::OK, true, false),
        ("create_pod_plain.json", StatusCode::OK, false, false),
        ("create_pod_explicit_uid.json", StatusCode::OK, false, false),
        ("update_pod.json", StatusCode::OK, false, false),
        ("create_pod_kube_system.json", StatusCode::OK, false, false),
        ("create_deployment.json", StatusCode::OK, false, false),
        ("create_pod_undecodable.json", StatusCode::OK, false, true),
        ("not_a_review.json", StatusCode::BAD_REQUEST, false, false),
        ("review_v1beta1.json", StatusCode::BAD_REQUEST, false, false),
    ];
    for (name, status, patched, warning) in cases {
        let body = fixture(name);
        let (got, bytes) = post(&app, body.clone()).await;
        assert_eq!(got, *status, "{name}: {}", String::from_utf8_lossy(&bytes));
        if *status != StatusCode::OK {
            assert!(!bytes.is_empty(), "{name}: 400 without a message");
            continue;
        }
        let resp: Value = serde_json::from_slice(&bytes).expect("response json");
        let req: Value = serde_json::from_slice(&body).expect("fixture json");
        assert_eq!(resp["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(resp["kind"], "AdmissionReview", "{name}");
        assert_eq!(
            resp["response"]["uid"], req["request"]["uid"],
            "{name}: uid echoed"
        );
        assert_eq!(resp["response"]["allowed"], true, "{name}: allowed");
        let has_warning = resp["response"]["warnings"]
            .as_array()
            .is_some_and(|w| !w.is_empty());
        assert_eq!(
            has_warning, *warning,
            "{name}: warnings {}",
            resp["response"]
        );
        match apply(&body, &resp) {
            Some((_, pod)) => {
                assert!(*patched, "{name}: unexpected patch");
                let sc = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.security_context.clone())
                    .expect("pod securityContext");
                let uid = sc.run_as_user.expect("runAsUser set at pod level");
                assert!((POD_MIN..=POD_MAX).contains(&uid), "{name}: uid {uid}");
                assert_eq!(sc.fs_group, Some(uid), "{name}: fsGroup");
            }
            None => assert!(!*patched, "{name}: expected a patch"),
        }
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for needle in [
        r#"mock_kind_webhook_admissions_total{outcome="patched",strategy="pod"} 2"#,
        r#"mock_kind_webhook_admissions_total{outcome="skipped",strategy="pod"} 3"#,
        r#"mock_kind_webhook_admissions_total{outcome="bad_request",strategy="pod"} 2"#,
        r#"mock_kind_webhook_admissions_total{outcome="undecodable",strategy="pod"} 1"#,
        "mock_kind_webhook_admission_duration_seconds_count{strategy=\"pod\"} 10",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (app, _) = app(UidSource::Pod {
        min: POD_MIN,
        max: POD_MAX,
    });
    let (status, _) = post(&app, vec![b' '; MAX_BODY + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Just under the limit is read (and refused only for not being an AdmissionReview).
    let (status, _) = post(&app, vec![b' '; MAX_BODY - 1]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

fn namespace(name: &str, annotations: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
    let metadata = ObjectMeta {
        name: Some(name.to_owned()),
        uid: Some(format!("uid-{name}")),
        resource_version: Some("1".to_owned()),
        annotations: Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    PartialObjectMeta::<Namespace> {
        metadata,
        ..Default::default()
    }
}

/// The namespace strategy's reader over a synced cache holding `namespaces`, with an apiserver
/// that refuses every connection (nothing listens on port 9).
fn cached_ranges(namespaces: Vec<PartialObjectMeta<Namespace>>) -> NamespaceRanges {
    telemetry::install_crypto_provider();
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");
    let mut writer: Writer<PartialObjectMeta<Namespace>> = Writer::default();
    writer.apply_watcher_event(&watcher::Event::Init);
    for ns in namespaces {
        writer.apply_watcher_event(&watcher::Event::InitApply(ns));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    NamespaceRanges::new(kube::Api::all(client), writer.as_reader(), metrics)
}

/// The namespace strategy with a seeded cache and an apiserver that does not answer: cached
/// annotations are used without I/O; an uncached namespace yields allowed + warning.
#[tokio::test]
async fn namespace_strategy_uses_cached_annotations() {
    let ranges = cached_ranges(vec![
        namespace(
            "team-a",
            &[
                ("openshift.io/sa.scc.uid-range", "1000680000/10000"),
                (
                    "openshift.io/sa.scc.supplemental-groups",
                    "1000690000/10000",
                ),
            ],
        ),
        namespace(
            "team-b",
            &[
                ("openshift.io/sa.scc.uid-range", "1000700000/10000"),
                ("openshift.io/sa.scc.supplemental-groups", "2147483647/2"),
            ],
        ),
    ]);
    let (app, _) = app(UidSource::Namespace(Arc::new(ranges)));

    let body = fixture("create_pod_runasnonroot.json");
    // The pod's (runAsUser, fsGroup) after the patch, and the answer.
    let patched_in = |namespace: &'static str| {
        let mut review: Value = serde_json::from_slice(&body).expect("json");
        review["request"]["namespace"] = namespace.into();
        let body = serde_json::to_vec(&review).expect("json");
        let app = app.clone();
        async move {
            let (status, bytes) = post(&app, body.clone()).await;
            assert_eq!(status, StatusCode::OK);
            let resp: Value = serde_json::from_slice(&bytes).expect("json");
            let (_, pod) = apply(&body, &resp).expect("patched");
            let sc = pod
                .spec
                .and_then(|s| s.security_context)
                .expect("securityContext");
            ((sc.run_as_user, sc.fs_group), resp)
        }
    };
    let (ids, _) = patched_in("team-a").await;
    assert_eq!(ids, (Some(1_000_680_000), Some(1_000_690_000)));

    // Supplemental groups out of range beside a good UID range: handled as if absent (fsGroup
    // from the UID block), and the answer says so.
    let (ids, resp) = patched_in("team-b").await;
    assert_eq!(ids, (Some(1_000_700_000), Some(1_000_700_000)));
    let warning = resp["response"]["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("team-b") && warning.contains("supplemental-groups"),
        "{warning}"
    );

    // Same pod in a namespace the cache does not know; the GET fails: allowed, warned, no patch.
    let mut review: Value = serde_json::from_slice(&body).expect("json");
    review["request"]["namespace"] = "unknown-ns".into();
    let body = serde_json::to_vec(&review).expect("json");
    let (status, bytes) = post(&app, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let resp: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none(), "{resp}");
    let warning = resp["response"]["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("unknown-ns"), "{warning}");
}

/// An apiserver that accepts the connection and never answers: the review gives up at its
/// deadline and answers allowed, unpatched, with a warning, long before the apiserver's own
/// timeoutSeconds would have cut the call.
#[tokio::test]
async fn stalled_apiserver_is_answered_allowed_at_the_deadline() {
    telemetry::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let stall = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            // Held open, never read or written: the client waits for a response forever.
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(conn);
            }
        })
    };
    let config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");
    // An empty, never-synced store: every namespace is a cache miss and goes to the apiserver.
    let writer: Writer<PartialObjectMeta<Namespace>> = Writer::default();
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let ranges = NamespaceRanges::new(kube::Api::all(client), writer.as_reader(), metrics);
    let deadline = Duration::from_millis(300);
    let (app, registry) = app_with_deadline(UidSource::Namespace(Arc::new(ranges)), deadline);

    let started = Instant::now();
    // The outer bound only turns a hang into a failure; the assertions below are the test.
    let (status, bytes) = tokio::time::timeout(
        Duration::from_secs(30),
        post(&app, fixture("create_pod_runasnonroot.json")),
    )
    .await
    .expect("the webhook answered at all");
    let took = started.elapsed();
    stall.abort();

    assert_eq!(status, StatusCode::OK);
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the namespace GET never reached the stalled apiserver"
    );
    let resp: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    assert!(resp["response"].get("patch").is_none(), "{resp}");
    let warning = resp["response"]["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("within 300 ms"), "{warning}");
    assert!(
        took >= deadline,
        "answered after {took:?}, before the deadline"
    );
    // deploy/ sets timeoutSeconds: 5; the answer must come well before it.
    assert!(
        took < deadline + Duration::from_secs(2),
        "answered after {took:?}"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let needle = r#"mock_kind_webhook_admissions_total{outcome="deadline",strategy="namespace"} 1"#;
    assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
}

/// Profile restricted-v2 with a namespace the controller has not annotated yet (and never
/// will here): the review waits most of its deadline for the annotations, then refuses the pod
/// with OpenShift's words, so its controller retries; an annotated namespace gets its patch.
#[tokio::test]
async fn restricted_v2_refuses_pods_of_unannotated_namespaces() {
    let ranges = cached_ranges(vec![
        namespace("new", &[]),
        namespace(
            "ready",
            &[
                ("openshift.io/sa.scc.uid-range", "1000680000/10000"),
                ("openshift.io/sa.scc.mcs", "s0:c26,c15"),
            ],
        ),
    ]);
    let (app, registry) = app_with(
        UidSource::Namespace(Arc::new(ranges)),
        Duration::from_millis(300),
        webhook::Profile::OpenshiftRestrictedV2,
    );
    let body = fixture("create_pod_plain.json");
    let in_ns = |namespace: &str| {
        let mut review: Value = serde_json::from_slice(&body).expect("json");
        review["request"]["namespace"] = namespace.into();
        serde_json::to_vec(&review).expect("json")
    };

    let (status, bytes) = post(&app, in_ns("new")).await;
    assert_eq!(status, StatusCode::OK);
    let resp: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(resp["response"]["allowed"], false, "{resp}");
    assert_eq!(resp["response"]["status"]["code"], 403, "{resp}");
    assert_eq!(
        resp["response"]["status"]["message"],
        webhook::restricted_v2::NO_PROVIDER,
        "{resp}"
    );

    let (status, bytes) = post(&app, in_ns("ready")).await;
    assert_eq!(status, StatusCode::OK);
    let resp: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    let raw = in_ns("ready");
    let (_, pod) = apply(&raw, &resp).expect("patched");
    let sc = pod
        .spec
        .and_then(|s| s.security_context)
        .expect("securityContext");
    assert_eq!(sc.fs_group, Some(1_000_680_000));
    assert_eq!(
        sc.se_linux_options.and_then(|o| o.level).as_deref(),
        Some("s0:c26,c15")
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let needle = r#"mock_kind_webhook_admissions_total{outcome="denied",strategy="namespace"} 1"#;
    assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
}
