//! A JSON patch computed on a typed object, fitted to the object as the apiserver sent it:
//! the sent object may lack, or hold `null` at, a parent the typed one serializes as `{}`.

use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
