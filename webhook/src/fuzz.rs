//! Property tests that cross modules: arbitrary JSON shapes, and the whole `/mutate` route fed
//! with them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::metrics::Metrics;
use crate::server::{AppState, UidSource, router};
use crate::strategy::MAX_ID;

/// Any JSON value: scalars of every kind, strings with any characters, nested arrays and
/// objects a few levels deep.
pub(crate) fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A pod-shaped object whose every part may be wrong: arbitrary metadata and spec, or
/// containers whose securityContext is arbitrary JSON.
fn pod_like() -> impl Strategy<Value = Value> {
    let container =
        (arbitrary_json(), proptest::bool::weighted(0.75)).prop_map(|(sc, non_root)| {
            let sc = if non_root {
                json!({"runAsNonRoot": true})
            } else {
                sc
            };
            json!({"name": "c", "image": "x", "securityContext": sc})
        });
    let spec = prop_oneof![
        3 => proptest::collection::vec(container, 0..3).prop_map(|c| json!({"containers": c})),
        1 => arbitrary_json(),
    ];
    let metadata = prop_oneof![3 => Just(json!({"name": "p"})), 1 => arbitrary_json()];
    (metadata, spec)
        .prop_map(|(metadata, spec)| json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}))
}

async fn post(app: axum::Router, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let resp = app
        .oneshot(
            Request::post("/mutate")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes.to_vec())
}

/// A review-like body, carrying a pod-like object when `real_pod` and it has a request.
fn with_object(mut review: Value, object: Value, real_pod: bool) -> Value {
    if real_pod && review["request"].is_object() {
        review["request"]["object"] = object;
    }
    review
}

/// The answer's patch applied to the review's object (`None`: no patch); panics if the patch
/// does not decode or does not apply, which the properties forbid.
fn patched_object(review: &Value, answer: &Value) -> Option<(json_patch::Patch, Value)> {
    use base64::Engine;
    let b64 = answer["response"]["patch"].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("a JSON patch");
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch.0).expect("the patch applies to the object");
    Some((patch, object))
}

proptest! {
    /// Whatever the body, the answer is a 400 with a message or an allowed review for the same
    /// uid, whose patch (if any) gives a UID of the configured range.
    #[test]
    fn mutate_answers_every_body(
        review in crate::admission::tests::review_like(),
        object in pod_like(),
        real_pod in proptest::bool::weighted(0.8),
    ) {
        let review = with_object(review, object, real_pod);
        let state = AppState {
            uids: Arc::new(UidSource::Pod { min: 1_000, max: MAX_ID }),
            metrics: Arc::new(Metrics::register(&mut Registry::default())),
            exclude_namespaces: Arc::from(Vec::new()),
            profile: crate::Profile::RunAsNonRoot,
            placement: None,
            apiserver_deadline: Duration::from_secs(1),
        };
        let app = router(
            state,
            Arc::new(Registry::default()),
            telemetry::Readiness::default(),
            telemetry::Health::default(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let body = serde_json::to_vec(&review).expect("a Value serializes");
        let (status, bytes) = runtime.block_on(post(app, body));
        if status == StatusCode::BAD_REQUEST {
            prop_assert!(!bytes.is_empty());
            return Ok(());
        }
        prop_assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_slice(&bytes).expect("the answer is JSON");
        prop_assert_eq!(&answer["response"]["allowed"], &json!(true));
        prop_assert_eq!(&answer["response"]["uid"], &review["request"]["uid"]);
        if let Some((patch, _)) = patched_object(&review, &answer) {
            for op in &patch.0 {
                if let json_patch::PatchOperation::Add(add) = op {
                    let ids = [add.value.get("runAsUser"), add.value.get("fsGroup"), Some(&add.value)];
                    for id in ids.into_iter().flatten().filter_map(Value::as_i64) {
                        prop_assert!((1_000..=MAX_ID).contains(&id), "{id}");
                    }
                }
            }
        }
    }

    /// Profile restricted-v2, whatever the body: a 400 with a message, or an answer for the
    /// same uid that either admits with a patch applying to the object, or refuses with 403
    /// and OpenShift's words. Namespace team-a is annotated in the cache; any other is a cache
    /// miss whose read fails (nothing listens), so it is refused as not annotated.
    #[test]
    fn restricted_v2_answers_every_body(
        review in crate::admission::tests::review_like(),
        object in pod_like(),
        real_pod in proptest::bool::weighted(0.8),
    ) {
        let review = with_object(review, object, real_pod);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let body = serde_json::to_vec(&review).expect("a Value serializes");
        let (status, bytes) = runtime.block_on(async {
            let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
            let client = kube::Client::try_from(config).expect("client");
            let mut writer: kube::runtime::reflector::store::Writer<crate::namespaces::Meta> =
                Default::default();
            let ann = crate::allocation::new_block_annotations(68, None).expect("block");
            let ns: crate::namespaces::Meta = serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": "team-a", "annotations": ann}}),
            )
            .expect("namespace");
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(ns));
            let metrics = Arc::new(Metrics::register(&mut Registry::default()));
            let ranges = crate::namespaces::NamespaceRanges::new(
                kube::Api::all(client),
                writer.as_reader(),
                metrics.clone(),
            );
            let state = AppState {
                uids: Arc::new(UidSource::Namespace(Arc::new(ranges))),
                metrics,
                exclude_namespaces: Arc::from(Vec::new()),
                profile: crate::Profile::OpenshiftRestrictedV2,
                placement: None,
                apiserver_deadline: Duration::from_millis(200),
            };
            let app = router(
                state,
                Arc::new(Registry::default()),
                telemetry::Readiness::default(),
                telemetry::Health::default(),
            );
            post(app, body).await
        });
        if status == StatusCode::BAD_REQUEST {
            prop_assert!(!bytes.is_empty());
            return Ok(());
        }
        prop_assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_slice(&bytes).expect("the answer is JSON");
        prop_assert_eq!(&answer["response"]["uid"], &review["request"]["uid"]);
        if answer["response"]["allowed"] == json!(false) {
            prop_assert_eq!(&answer["response"]["status"]["code"], &json!(403));
            let message = answer["response"]["status"]["message"].as_str().unwrap_or_default();
            prop_assert!(
                message.starts_with("unable to validate against any security context constraint: ")
                    || message == crate::restricted_v2::NO_PROVIDER,
                "{}", message
            );
        } else {
            patched_object(&review, &answer);
        }
    }
}
