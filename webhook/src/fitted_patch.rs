//! A JSON patch computed on a typed object, fitted to the object as the apiserver sent it:
//! the sent object may lack, or hold `null` at, a parent the typed one serializes as `{}`.

use serde::Deserialize;
use serde_json::Value;

/// What patches are fitted to of the pod as the apiserver sent it, read in one pass over its
/// text (everything else is skipped, never built): whether it has a `metadata` object (the
/// typed pod always shows one), and the raw values of the spec fields the placement rewrites
/// (which may hold fields k8s-openapi does not model).
#[derive(Debug, Default, Deserialize)]
pub struct Sent {
    #[serde(rename = "metadata", default, deserialize_with = "is_object")]
    pub has_metadata: bool,
    #[serde(default)]
    spec: Option<SentSpec>,
}

#[derive(Debug, Default, Deserialize)]
struct SentSpec {
    #[serde(default)]
    tolerations: Option<Value>,
    #[serde(default)]
    affinity: Option<Value>,
}

fn is_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(matches!(
        Option::<Value>::deserialize(d)?,
        Some(Value::Object(_))
    ))
}

impl Sent {
    /// From the object's text; an object that is not one gives the empty shape (the typed
    /// decode then refuses it).
    pub fn read(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }

    pub fn from_value(raw: &Value) -> Self {
        Sent::deserialize(raw).unwrap_or_default()
    }

    /// `spec.tolerations` as sent (`Null` when absent).
    pub fn tolerations(&self) -> &Value {
        self.spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .unwrap_or(&Value::Null)
    }

    /// `spec.affinity` as sent (`Null` when absent).
    pub fn affinity(&self) -> &Value {
        self.spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .unwrap_or(&Value::Null)
    }
}

/// Rewrites a patch computed on the typed pod so it applies to `raw`: where `raw` lacks a
/// parent of an operation's path (absent, or null where the typed pod had an empty object),
/// the operation becomes an `add` of the whole subtree of `after` at the first missing level,
/// and the operations below that level are dropped (the subtree holds them).
pub fn fit(patch: json_patch::Patch, raw: &Value, after: &Value) -> json_patch::Patch {
    let mut doc = raw.clone();
    let mut covered: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for op in patch.0 {
        let path = op.path().to_string();
        if covered
            .iter()
            .any(|c| path == *c || path.starts_with(&format!("{c}/")))
        {
            continue;
        }
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let missing = (1..segments.len())
            .map(|n| format!("/{}", segments[..n].join("/")))
            .find(|prefix| {
                !matches!(
                    doc.pointer(prefix),
                    Some(Value::Object(_) | Value::Array(_))
                )
            });
        let op = match missing.map(|prefix| {
            (
                json_patch::jsonptr::PointerBuf::parse(prefix.clone()),
                prefix,
            )
        }) {
            None => op,
            Some((Ok(pointer), prefix)) => {
                let value = after.pointer(&prefix).cloned().unwrap_or(Value::Null);
                covered.push(prefix);
                json_patch::PatchOperation::Add(json_patch::AddOperation {
                    path: pointer,
                    value,
                })
            }
            Some((Err(_), _)) => continue,
        };
        // An operation that still does not apply is left out rather than failing the patch.
        if json_patch::patch(&mut doc, std::slice::from_ref(&op)).is_ok() {
            out.push(op);
        }
    }
    json_patch::Patch(out)
}

/// The patch that turns `before` into `after` at `prefix` (a path of objects that `raw_doc`
/// has, e.g. `["spec"]`), fitted to `raw`, the sent object's value there (`Null` when absent).
/// Only the changed subtree is encoded and diffed, never the whole pod: a subtree the sent
/// object lacks (absent or null) is one `add` of `after`.
pub fn subtree<T: serde::Serialize>(
    prefix: &[&str],
    raw: &Value,
    before: &T,
    after: &T,
) -> Vec<json_patch::PatchOperation> {
    let after = serde_json::to_value(after).unwrap_or_default();
    let add_whole = || {
        vec![json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: json_patch::jsonptr::PointerBuf::from_tokens(prefix.iter().copied()),
            value: after.clone(),
        })]
    };
    if !matches!(raw, Value::Object(_) | Value::Array(_)) {
        return add_whole();
    }
    let before = serde_json::to_value(before).unwrap_or_default();
    let fitted = fit(json_patch::diff(&before, &after), raw, &after);
    let base = json_patch::jsonptr::PointerBuf::from_tokens(prefix.iter().copied());
    fitted
        .0
        .into_iter()
        .map(|mut op| {
            let path = match &mut op {
                json_patch::PatchOperation::Add(o) => &mut o.path,
                json_patch::PatchOperation::Remove(o) => &mut o.path,
                json_patch::PatchOperation::Replace(o) => &mut o.path,
                json_patch::PatchOperation::Move(o) => &mut o.path,
                json_patch::PatchOperation::Copy(o) => &mut o.path,
                json_patch::PatchOperation::Test(o) => &mut o.path,
            };
            *path = base.concat(path);
            op
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sent_reads_only_what_patches_need() {
        let cases = [
            (
                "metadata object",
                r#"{"metadata":{"name":"p"}}"#,
                true,
                json!(null),
            ),
            (
                "metadata null",
                r#"{"metadata":null,"spec":null}"#,
                false,
                json!(null),
            ),
            (
                "no metadata",
                r#"{"spec":{"tolerations":[{"key":"k"}]}}"#,
                false,
                json!([{"key":"k"}]),
            ),
            (
                "metadata not an object",
                r#"{"metadata":"x"}"#,
                false,
                json!(null),
            ),
            ("not an object", r#"[1,2]"#, false, json!(null)),
            ("not JSON", r#"{"#, false, json!(null)),
        ];
        for (name, text, has_metadata, tolerations) in cases {
            let sent = Sent::read(text);
            assert_eq!(sent.has_metadata, has_metadata, "{name}");
            assert_eq!(sent.tolerations(), &tolerations, "{name}");
            assert_eq!(sent.affinity(), &Value::Null, "{name}");
        }
        let unknown = json!({"spec": {"affinity": {"nodeAffinity": {}, "future": 1}}});
        assert_eq!(
            Sent::from_value(&unknown).affinity(),
            &json!({"nodeAffinity": {}, "future": 1})
        );
    }

    #[test]
    fn fit_table() {
        let after = json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"x": {"y": 2}, "list": [1, 2]}});
        let before = json!({"metadata": {}, "spec": {"x": {}, "list": [1]}});
        let patch = json_patch::diff(&before, &after);
        let cases = [
            ("as typed", before.clone()),
            ("metadata absent", json!({"spec": {"x": {}, "list": [1]}})),
            (
                "metadata null",
                json!({"metadata": null, "spec": {"x": null, "list": [1]}}),
            ),
            (
                "unknown fields kept",
                json!({"metadata": {"z": 0}, "spec": {"x": {}, "list": [1], "w": true}}),
            ),
        ];
        for (name, raw) in cases {
            let fitted = fit(patch.clone(), &raw, &after);
            let mut doc = raw.clone();
            json_patch::patch(&mut doc, &fitted.0).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                doc.pointer("/metadata/annotations/a"),
                Some(&json!("1")),
                "{name}"
            );
            assert_eq!(doc.pointer("/spec/x/y"), Some(&json!(2)), "{name}");
            assert_eq!(doc.pointer("/spec/list"), Some(&json!([1, 2])), "{name}");
            if name == "unknown fields kept" {
                assert_eq!(doc.pointer("/spec/w"), Some(&json!(true)));
                assert_eq!(doc.pointer("/metadata/z"), Some(&json!(0)));
            }
        }
    }
}
