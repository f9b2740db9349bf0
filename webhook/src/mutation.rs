//! THE DECISION: which containers of a pod need a UID and the JSON patch that gives it to them.
//! Pure: a pod and the UID/GID to use in, a `json_patch::Patch` out.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Pod, PodSecurityContext, SecurityContext};
use serde_json::{Value, json};

/// The UID for `runAsUser` and the GID for `fsGroup`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: i64,
    pub fs_group: i64,
}

/// One container of any kind, with the JSON path segment of its list.
struct Slot<'a> {
    list: &'static str,
    index: usize,
    security_context: Option<&'a SecurityContext>,
}

fn slots(pod: &Pod) -> Vec<Slot<'_>> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (index, c) in spec.containers.iter().enumerate() {
        out.push(Slot {
            list: "containers",
            index,
            security_context: c.security_context.as_ref(),
        });
    }
    for (index, c) in spec.init_containers.iter().flatten().enumerate() {
        out.push(Slot {
            list: "initContainers",
            index,
            security_context: c.security_context.as_ref(),
        });
    }
    for (index, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        out.push(Slot {
            list: "ephemeralContainers",
            index,
            security_context: c.security_context.as_ref(),
        });
    }
    out
}

fn pod_context(pod: &Pod) -> Option<&PodSecurityContext> {
    pod.spec.as_ref().and_then(|s| s.security_context.as_ref())
}

/// A container asks for a UID when `runAsNonRoot` is true (its own, else the pod's) and no
/// `runAsUser` applies (its own, else the pod's).
fn asks(slot: &Slot<'_>, pod_sc: Option<&PodSecurityContext>) -> bool {
    let non_root = slot
        .security_context
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|p| p.run_as_non_root));
    let user = slot
        .security_context
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|p| p.run_as_user));
    non_root == Some(true) && user.is_none()
}

/// Whether any container of `pod` asks for a UID (so a strategy must pick one).
pub fn needs_uid(pod: &Pod) -> bool {
    let pod_sc = pod_context(pod);
    slots(pod).iter().any(|s| asks(s, pod_sc))
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

/// The patch that gives `ids` to every container of `pod` that asks for a UID; empty when none
/// asks. The UID goes on the pod's securityContext when every container asks and none sets its
/// own `runAsUser` (one field, inherited by all); otherwise on each asking container, so a
/// container that did not ask keeps the image's user. `fsGroup` is added when absent.
/// Only `add` operations on paths whose parents exist, so the patch applies to the original.
pub fn patch(pod: &Pod, ids: Ids) -> Patch {
    let pod_sc = pod_context(pod);
    let all = slots(pod);
    let asking: Vec<&Slot<'_>> = all.iter().filter(|s| asks(s, pod_sc)).collect();
    if asking.is_empty() {
        return Patch(Vec::new());
    }
    let own_uid = all
        .iter()
        .any(|s| s.security_context.and_then(|c| c.run_as_user).is_some());
    let pod_level = !own_uid && asking.len() == all.len();
    let add_fs_group = pod_sc.and_then(|p| p.fs_group).is_none();

    let mut ops = Vec::new();
    let mut pod_fields = serde_json::Map::new();
    if pod_level {
        pod_fields.insert("runAsUser".into(), json!(ids.uid));
    }
    if add_fs_group {
        pod_fields.insert("fsGroup".into(), json!(ids.fs_group));
    }
    match pod_sc {
        None if !pod_fields.is_empty() => {
            ops.push(add(&["spec", "securityContext"], Value::Object(pod_fields)));
        }
        None => {}
        Some(_) => {
            for (k, v) in pod_fields {
                ops.push(add(&["spec", "securityContext", &k], v));
            }
        }
    }
    if !pod_level {
        for slot in asking {
            let index = slot.index.to_string();
            match slot.security_context {
                None => ops.push(add(
                    &["spec", slot.list, &index, "securityContext"],
                    json!({ "runAsUser": ids.uid }),
                )),
                Some(_) => ops.push(add(
                    &["spec", slot.list, &index, "securityContext", "runAsUser"],
                    json!(ids.uid),
                )),
            }
        }
    }
    Patch(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: Ids = Ids {
        uid: 1_000_230_000,
        fs_group: 1_000_240_000,
    };

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).expect("test pod decodes")
    }

    /// (name, pod, expected (container path, runAsUser) pairs after patching, expected pod
    /// runAsUser, expected fsGroup)
    struct Case {
        name: &'static str,
        pod: Value,
        containers: Vec<(&'static str, Option<i64>)>,
        pod_uid: Option<i64>,
        fs_group: Option<i64>,
        empty: bool,
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "no securityContext at all",
                pod: json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}),
                containers: vec![("/spec/containers/0", None)],
                pod_uid: None,
                fs_group: None,
                empty: true,
            },
            Case {
                name: "pod-level runAsNonRoot, one container: pod level",
                pod: json!({"spec": {"securityContext": {"runAsNonRoot": true},
                    "containers": [{"name": "a", "image": "x"}]}}),
                containers: vec![("/spec/containers/0", None)],
                pod_uid: Some(IDS.uid),
                fs_group: Some(IDS.fs_group),
                empty: false,
            },
            Case {
                name: "container-level runAsNonRoot on every container: pod level",
                pod: json!({"spec": {"containers": [
                    {"name": "a", "image": "x", "securityContext": {"runAsNonRoot": true}},
                    {"name": "b", "image": "x", "securityContext": {"runAsNonRoot": true}}]}}),
                containers: vec![("/spec/containers/0", None), ("/spec/containers/1", None)],
                pod_uid: Some(IDS.uid),
                fs_group: Some(IDS.fs_group),
                empty: false,
            },
            Case {
                name: "only one of two containers asks: per container",
                pod: json!({"spec": {"containers": [
                    {"name": "a", "image": "x", "securityContext": {"runAsNonRoot": true}},
                    {"name": "b", "image": "x"}]}}),
                containers: vec![
                    ("/spec/containers/0", Some(IDS.uid)),
                    ("/spec/containers/1", None),
                ],
                pod_uid: None,
                fs_group: Some(IDS.fs_group),
                empty: false,
            },
            Case {
                name: "a sibling sets its own runAsUser: per container, sibling kept",
                pod: json!({"spec": {"securityContext": {"runAsNonRoot": true, "fsGroup": 7},
                    "containers": [
                    {"name": "a", "image": "x"},
                    {"name": "b", "image": "x", "securityContext": {"runAsUser": 1234}}]}}),
                containers: vec![
                    ("/spec/containers/0", Some(IDS.uid)),
                    ("/spec/containers/1", Some(1234)),
                ],
                pod_uid: None,
                fs_group: Some(7),
                empty: false,
            },
            Case {
                name: "pod-level runAsUser explicit: untouched",
                pod: json!({"spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1001},
                    "containers": [{"name": "a", "image": "x"}]}}),
                containers: vec![("/spec/containers/0", None)],
                pod_uid: Some(1001),
                fs_group: None,
                empty: true,
            },
            Case {
                name: "runAsNonRoot false at container overrides pod true",
                pod: json!({"spec": {"securityContext": {"runAsNonRoot": true},
                    "containers": [
                    {"name": "a", "image": "x", "securityContext": {"runAsNonRoot": false}},
                    {"name": "b", "image": "x"}]}}),
                containers: vec![
                    ("/spec/containers/0", None),
                    ("/spec/containers/1", Some(IDS.uid)),
                ],
                pod_uid: None,
                fs_group: Some(IDS.fs_group),
                empty: false,
            },
            Case {
                name: "runAsNonRoot false everywhere: untouched",
                pod: json!({"spec": {"securityContext": {"runAsNonRoot": false},
                    "containers": [{"name": "a", "image": "x"}]}}),
                containers: vec![("/spec/containers/0", None)],
                pod_uid: None,
                fs_group: None,
                empty: true,
            },
            Case {
                name: "init container asks, app container does not",
                pod: json!({"spec": {
                    "initContainers": [{"name": "i", "image": "x", "securityContext": {"runAsNonRoot": true}}],
                    "containers": [{"name": "a", "image": "x"}]}}),
                containers: vec![
                    ("/spec/initContainers/0", Some(IDS.uid)),
                    ("/spec/containers/0", None),
                ],
                pod_uid: None,
                fs_group: Some(IDS.fs_group),
                empty: false,
            },
            Case {
                name: "init and app containers inherit pod runAsNonRoot: pod level",
                pod: json!({"spec": {"securityContext": {"runAsNonRoot": true},
                    "initContainers": [{"name": "i", "image": "x"}],
                    "containers": [{"name": "a", "image": "x"}]}}),
                containers: vec![
                    ("/spec/initContainers/0", None),
                    ("/spec/containers/0", None),
                ],
                pod_uid: Some(IDS.uid),
                fs_group: Some(IDS.fs_group),
                empty: false,
            },
            Case {
                name: "ephemeral container asks, app container has its own UID",
                pod: json!({"spec": {
                    "containers": [{"name": "a", "image": "x", "securityContext": {"runAsUser": 5}}],
                    "ephemeralContainers": [{"name": "e", "image": "x", "securityContext": {"runAsNonRoot": true}}]}}),
                containers: vec![
                    ("/spec/containers/0", Some(5)),
                    ("/spec/ephemeralContainers/0", Some(IDS.uid)),
                ],
                pod_uid: None,
                fs_group: Some(IDS.fs_group),
                empty: false,
            },
            Case {
                name: "container explicit runAsUser with runAsNonRoot: untouched",
                pod: json!({"spec": {"containers": [
                    {"name": "a", "image": "x", "securityContext": {"runAsNonRoot": true, "runAsUser": 99}}]}}),
                containers: vec![("/spec/containers/0", Some(99))],
                pod_uid: None,
                fs_group: None,
                empty: true,
            },
            Case {
                name: "pod has securityContext without the fields: fields added inside",
                pod: json!({"spec": {"securityContext": {"runAsNonRoot": true, "supplementalGroups": [5]},
                    "containers": [{"name": "a", "image": "x", "securityContext": {"privileged": false}}]}}),
                containers: vec![("/spec/containers/0", None)],
                pod_uid: Some(IDS.uid),
                fs_group: Some(IDS.fs_group),
                empty: false,
            },
        ]
    }

    #[test]
    fn table() {
        for case in cases() {
            let original = pod(case.pod.clone());
            let p = patch(&original, IDS);
            assert_eq!(p.0.is_empty(), case.empty, "{}: patch {:?}", case.name, p);
            assert_eq!(
                needs_uid(&original),
                !case.empty,
                "{}: needs_uid",
                case.name
            );

            // The patch applies to the pod as the apiserver sends it and yields a Pod.
            let mut doc = serde_json::to_value(&original).expect("encode");
            json_patch::patch(&mut doc, &p.0)
                .unwrap_or_else(|e| panic!("{}: patch does not apply: {e}", case.name));
            let patched: Pod = serde_json::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("{}: patched pod does not decode: {e}", case.name));

            let get = |ptr: &str| doc.pointer(ptr).and_then(Value::as_i64);
            assert_eq!(
                get("/spec/securityContext/runAsUser"),
                case.pod_uid,
                "{}: pod runAsUser",
                case.name
            );
            assert_eq!(
                get("/spec/securityContext/fsGroup"),
                case.fs_group,
                "{}: fsGroup",
                case.name
            );
            for (path, want) in &case.containers {
                let got = get(&format!("{path}/securityContext/runAsUser"));
                assert_eq!(got, *want, "{}: {path} runAsUser", case.name);
            }
            // Idempotent: a reinvocation on the patched pod changes nothing.
            assert!(
                patch(&patched, IDS).0.is_empty(),
                "{}: second pass not empty",
                case.name
            );
            assert!(!needs_uid(&patched), "{}: still needs a UID", case.name);
        }
    }

    #[test]
    fn patch_applies_to_raw_apiserver_json_with_unknown_fields() {
        // The apiserver's JSON may carry fields k8s-openapi does not model and explicit nulls.
        let raw = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"securityContext": null, "futureField": {"x": 1},
                "containers": [{"name": "a", "image": "x", "securityContext": {"runAsNonRoot": true}}]}});
        let typed: Pod = serde_json::from_value(raw.clone()).expect("decode");
        let p = patch(&typed, IDS);
        let mut doc = raw;
        json_patch::patch(&mut doc, &p.0).expect("applies");
        assert_eq!(
            doc.pointer("/spec/securityContext/runAsUser"),
            Some(&json!(IDS.uid))
        );
        assert_eq!(doc.pointer("/spec/futureField/x"), Some(&json!(1)));
        let _: Pod = serde_json::from_value(doc).expect("decodes");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// `(runAsNonRoot, runAsUser)` of a container's securityContext, or none at all.
        fn container_sc() -> impl Strategy<Value = Option<(Option<bool>, Option<i64>)>> {
            proptest::option::of((
                any::<Option<bool>>(),
                proptest::option::of(0..=i64::from(i32::MAX)),
            ))
        }

        fn sc_json(sc: Option<(Option<bool>, Option<i64>)>) -> Value {
            let mut c = json!({"name": "c", "image": "x"});
            if let Some((non_root, user)) = sc {
                let mut sc = serde_json::Map::new();
                if let Some(v) = non_root {
                    sc.insert("runAsNonRoot".into(), json!(v));
                }
                if let Some(v) = user {
                    sc.insert("runAsUser".into(), json!(v));
                }
                c["securityContext"] = Value::Object(sc);
            }
            c
        }

        type Sc = Option<(Option<bool>, Option<i64>)>;

        fn pod_json(
            pod_sc: Option<(Option<bool>, Option<i64>, Option<i64>)>,
            lists: &[(&str, &Vec<Sc>)],
        ) -> Value {
            let mut spec = serde_json::Map::new();
            for (list, scs) in lists {
                if !scs.is_empty() || *list == "containers" {
                    let items: Vec<Value> = scs.iter().map(|sc| sc_json(*sc)).collect();
                    spec.insert((*list).into(), Value::Array(items));
                }
            }
            if let Some((non_root, user, fs_group)) = pod_sc {
                spec.insert(
                    "securityContext".into(),
                    json!({"runAsNonRoot": non_root, "runAsUser": user, "fsGroup": fs_group}),
                );
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
        }

        /// Per container, in slot order: (asks for a UID, the runAsUser that applies to it).
        fn effective(pod: &Pod) -> Vec<(bool, Option<i64>)> {
            let pod_sc = pod_context(pod);
            slots(pod)
                .iter()
                .map(|s| {
                    let user = s
                        .security_context
                        .and_then(|c| c.run_as_user)
                        .or_else(|| pod_sc.and_then(|p| p.run_as_user));
                    (asks(s, pod_sc), user)
                })
                .collect()
        }

        proptest! {
            #[test]
            fn patch_gives_exactly_the_asking_containers_the_uid(
                pod_sc in proptest::option::of((
                    any::<Option<bool>>(),
                    proptest::option::of(0..=i64::from(i32::MAX)),
                    proptest::option::of(0..=i64::from(i32::MAX)),
                )),
                containers in proptest::collection::vec(container_sc(), 0..4),
                init in proptest::collection::vec(container_sc(), 0..3),
                ephemeral in proptest::collection::vec(container_sc(), 0..2),
                uid in 0..=i64::from(i32::MAX),
                fs_group in 0..=i64::from(i32::MAX),
                future in crate::fuzz::arbitrary_json(),
            ) {
                let mut raw = pod_json(pod_sc, &[
                    ("containers", &containers),
                    ("initContainers", &init),
                    ("ephemeralContainers", &ephemeral),
                ]);
                // Fields k8s-openapi does not model ride along and must not break the patch.
                raw["spec"]["futureField"] = future;
                let before: Pod = serde_json::from_value(raw.clone()).expect("generated pod decodes");
                let ids = Ids { uid, fs_group };
                let p = patch(&before, ids);
                prop_assert_eq!(p.0.is_empty(), !needs_uid(&before));

                let mut doc = raw;
                json_patch::patch(&mut doc, &p.0).expect("the patch applies to the original");
                let after: Pod = serde_json::from_value(doc).expect("the patched pod decodes");
                prop_assert!(!needs_uid(&after));
                for ((asked, old), (_, new)) in effective(&before).into_iter().zip(effective(&after)) {
                    if asked {
                        prop_assert_eq!(new, Some(uid));
                    } else {
                        prop_assert_eq!(new, old);
                    }
                }
                let fs = |pod: &Pod| pod_context(pod).and_then(|c| c.fs_group);
                match (fs(&before), p.0.is_empty()) {
                    (Some(old), _) => prop_assert_eq!(fs(&after), Some(old)),
                    (None, true) => prop_assert_eq!(fs(&after), None),
                    (None, false) => prop_assert_eq!(fs(&after), Some(fs_group)),
                }
            }
        }
    }
}
