//! Wire types of `admission.k8s.io/v1` AdmissionReview (only the fields we read or write), and
//! the response builder. kube-core's own types pin json-patch 4; ours is 5, so we keep these.

use base64::Engine;
use serde::{Deserialize, Serialize};
#[cfg(test)]
use serde_json::{Value, json};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub request: Option<AdmissionRequest>,
}

#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    #[serde(default)]
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: String,
    /// Kept as the apiserver's text: decoded once, straight into the typed pod (and a
    /// [`crate::fitted_patch::Sent`]), never into a `Value` tree.
    #[serde(default)]
    pub object: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// Longest message of a refused body: serde quotes the offending value whole, and a body may be
/// megabytes; the message goes into the 400 answer and a log line.
pub const MAX_ERROR_LEN: usize = 512;

/// Parses a request body; the error is the message for the HTTP 400, at most
/// [`MAX_ERROR_LEN`] bytes.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest, String> {
    parse_unbounded(body).map_err(|mut message| {
        if message.len() > MAX_ERROR_LEN {
            let end = telemetry::char_prefix(&message, MAX_ERROR_LEN - '…'.len_utf8()).len();
            message.truncate(end);
            message.push('…');
        }
        message
    })
}

fn parse_unbounded(body: &[u8]) -> Result<AdmissionRequest, String> {
    let review: AdmissionReview =
        serde_json::from_slice(body).map_err(|e| format!("body is not an AdmissionReview: {e}"))?;
    if review.kind.as_deref() != Some(KIND) {
        return Err(format!(
            "body is not an AdmissionReview: kind is {:?}",
            review.kind.unwrap_or_default()
        ));
    }
    if review.api_version.as_deref() != Some(API_VERSION) {
        return Err(format!(
            "AdmissionReview apiVersion {:?} is not supported, only {API_VERSION}",
            review.api_version.unwrap_or_default()
        ));
    }
    let request = review
        .request
        .ok_or_else(|| "AdmissionReview has no request".to_owned())?;
    if request.uid.is_empty() {
        return Err("AdmissionReview request has no uid".to_owned());
    }
    Ok(request)
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    api_version: &'static str,
    kind: &'static str,
    response: Response,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// base64 of the JSON patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
}

/// The `metav1.Status` of a refusal; the apiserver shows `message` to the client.
#[derive(Serialize, Debug)]
pub struct Status {
    code: u16,
    reason: &'static str,
    message: String,
}

/// Longest refusal message: a pod with many containers can collect many errors.
pub const MAX_DENY_LEN: usize = 8 * 1024;

/// A refused response for `uid` with HTTP 403 Forbidden and `message` (cut to
/// [`MAX_DENY_LEN`] bytes on a character boundary).
pub fn deny(uid: &str, message: &str) -> ReviewResponse {
    let mut message = telemetry::char_prefix(message, MAX_DENY_LEN).to_owned();
    if message.is_empty() {
        message = "refused".to_owned();
    }
    ReviewResponse {
        api_version: API_VERSION,
        kind: KIND,
        response: Response {
            uid: uid.to_owned(),
            allowed: false,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            status: Some(Status {
                code: 403,
                reason: "Forbidden",
                message,
            }),
        },
    }
}

/// An allowed response for `uid`, with `patch` when it has operations and `warnings`.
pub fn allow(
    uid: &str,
    patch: Option<&json_patch::Patch>,
    warnings: Vec<String>,
) -> ReviewResponse {
    let patch = patch.filter(|p| !p.0.is_empty()).and_then(|p| {
        serde_json::to_vec(p)
            .ok()
            .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
    });
    ReviewResponse {
        api_version: API_VERSION,
        kind: KIND,
        response: Response {
            uid: uid.to_owned(),
            allowed: true,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings,
            status: None,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fuzz::arbitrary_json;
    use proptest::prelude::*;

    /// A JSON object with the AdmissionReview keys, each holding something arbitrary or
    /// something close to right.
    pub(crate) fn review_like() -> impl Strategy<Value = Value> {
        // Mostly right, so that the deeper paths are reached too.
        let kind = prop_oneof![3 => Just(json!(KIND)), 1 => arbitrary_json()];
        let api_version = prop_oneof![3 => Just(json!(API_VERSION)), 1 => arbitrary_json()];
        let uid = prop_oneof![3 => "\\PC{0,40}".prop_map(Value::from), 1 => arbitrary_json()];
        let operation = prop_oneof![
            3 => Just(json!("CREATE")),
            1 => Just(json!("UPDATE")),
            1 => arbitrary_json()
        ];
        let namespace = prop_oneof![3 => Just(json!("team-a")), 1 => arbitrary_json()];
        let dry_run = prop_oneof![3 => any::<bool>().prop_map(Value::Bool), 1 => arbitrary_json()];
        let request = (uid, operation, namespace, arbitrary_json(), dry_run).prop_map(
            |(uid, operation, namespace, object, dry_run)| {
                json!({"uid": uid, "operation": operation, "namespace": namespace,
                       "resource": {"group": "", "version": "v1", "resource": "pods"},
                       "object": object, "dryRun": dry_run})
            },
        );
        let request = prop_oneof![4 => request.prop_map(Some), 1 => arbitrary_json().prop_map(Some), 1 => Just(None)];
        (kind, api_version, request).prop_map(|(k, a, r)| {
            let mut review = json!({"kind": k, "apiVersion": a});
            if let Some(r) = r {
                review["request"] = r;
            }
            review
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Err(e) = parse(&body) {
                prop_assert!(!e.is_empty() && e.len() <= MAX_ERROR_LEN);
            }
        }

        #[test]
        fn errors_stay_short_whatever_the_value(big in "\\PC{600,2000}", place in 0usize..4) {
            let mut review = json!({"kind": KIND, "apiVersion": API_VERSION, "request": {"uid": "u", "operation": "CREATE"}});
            match place {
                0 => review["kind"] = json!(big),
                1 => review["apiVersion"] = json!(big),
                2 => review["request"] = json!(big),
                _ => review["request"]["dryRun"] = json!(big),
            }
            let e = parse(&serde_json::to_vec(&review).expect("json")).expect_err("refused");
            prop_assert!(e.len() <= MAX_ERROR_LEN, "{} bytes", e.len());
        }

        #[test]
        fn parse_never_panics_on_json_shapes(review in review_like()) {
            let body = serde_json::to_vec(&review).expect("a Value serializes");
            match parse(&body) {
                Ok(req) => {
                    prop_assert!(!req.uid.is_empty());
                    prop_assert_eq!(&review["kind"], &json!(KIND));
                    prop_assert_eq!(&review["apiVersion"], &json!(API_VERSION));
                }
                Err(e) => prop_assert!(!e.is_empty() && e.len() <= MAX_ERROR_LEN),
            }
        }

        #[test]
        fn allow_round_trips_the_uid_and_warnings(
            uid in "\\PC{1,40}",
            warnings in proptest::collection::vec("\\PC{0,40}", 0..3),
        ) {
            let v = serde_json::to_value(allow(&uid, None, warnings.clone())).expect("json");
            prop_assert_eq!(&v["response"]["uid"], &json!(uid));
            prop_assert_eq!(&v["response"]["allowed"], &json!(true));
            let got: Vec<String> = v["response"].get("warnings")
                .map(|w| serde_json::from_value(w.clone()).expect("strings"))
                .unwrap_or_default();
            prop_assert_eq!(got, warnings);
        }
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, &str, Result<&str, &str>)] = &[
            ("not json", "{", Err("not an AdmissionReview")),
            (
                "a pod",
                r#"{"kind":"Pod","apiVersion":"v1"}"#,
                Err("kind is \"Pod\""),
            ),
            (
                "v1beta1",
                r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"u","operation":"CREATE"}}"#,
                Err("not supported"),
            ),
            (
                "no request",
                r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
                Err("no request"),
            ),
            (
                "empty uid",
                r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"","operation":"CREATE"}}"#,
                Err("no uid"),
            ),
            (
                "minimal",
                r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u1","operation":"CREATE"}}"#,
                Ok("u1"),
            ),
        ];
        for (name, body, want) in cases {
            match (parse(body.as_bytes()), want) {
                (Ok(req), Ok(uid)) => assert_eq!(req.uid, *uid, "{name}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, _) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn deny_table() {
        let long = "é".repeat(MAX_DENY_LEN);
        let cases: &[(&str, &str, usize)] = &[
            ("short", "unable to validate", 18),
            ("empty", "", 7),
            ("cut on a char boundary", &long, MAX_DENY_LEN),
        ];
        for (name, message, len) in cases {
            let v = serde_json::to_value(deny("u", message)).expect("json");
            assert_eq!(v["response"]["allowed"], false, "{name}");
            assert_eq!(v["response"]["uid"], "u", "{name}");
            assert_eq!(v["response"]["status"]["code"], 403, "{name}");
            let got = v["response"]["status"]["message"]
                .as_str()
                .expect("message");
            assert_eq!(got.len(), *len, "{name}");
            assert!(v["response"].get("patch").is_none(), "{name}");
        }
    }

    #[test]
    fn allow_encodes_patch_only_when_non_empty() {
        let empty = serde_json::to_value(allow("u", Some(&json_patch::Patch(vec![])), vec![]))
            .expect("json");
        assert_eq!(empty["response"]["uid"], "u");
        assert_eq!(empty["response"]["allowed"], true);
        assert!(empty["response"].get("patch").is_none());
        assert!(empty["response"].get("patchType").is_none());

        let p: json_patch::Patch =
            serde_json::from_value(serde_json::json!([{"op":"add","path":"/a","value":1}]))
                .expect("patch");
        let full = serde_json::to_value(allow("u", Some(&p), vec!["w".into()])).expect("json");
        assert_eq!(full["response"]["patchType"], "JSONPatch");
        assert_eq!(full["response"]["warnings"][0], "w");
        let b64 = full["response"]["patch"].as_str().expect("patch string");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        let back: json_patch::Patch = serde_json::from_slice(&raw).expect("patch json");
        assert_eq!(back, p);
    }
}
