//! The restricted-v2 decision table: each case a pod, the namespace, and either the fields the
//! admitted pod must carry or OpenShift's exact refusal.

use super::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn ns68() -> SccNamespace {
    let ann = crate::allocation::new_block_annotations(68, None).expect("block 68");
    SccNamespace::from_annotations(&ann).expect("namespace")
}

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("test pod decodes")
}

/// Admits, applies the patch to the pod's JSON, and returns it; or the refusal.
fn run(raw: &Value, ns: &SccNamespace) -> Result<Value, String> {
    let sent = crate::fitted_patch::Sent::from_value(raw);
    match admit_sent(sent.has_metadata, &pod(raw.clone()), ns) {
        Verdict::Admit(patch) => {
            let mut doc = raw.clone();
            json_patch::patch(&mut doc, &patch.0)
                .map_err(|e| format!("patch does not apply: {e}"))?;
            Ok(doc)
        }
        Verdict::Deny(m) => Err(m),
    }
}

const PREFIX: &str = "unable to validate against any security context constraint: ";

enum Want {
    /// (JSON pointer, value) pairs of the admitted pod.
    Admit(Vec<(&'static str, Value)>),
    /// The exact refusal, after the common prefix.
    Deny(&'static str),
}

fn cases() -> Vec<(&'static str, Value, Want)> {
    let c = |sc: Value| json!({"spec": {"containers": [{"name": "app", "image": "x", "securityContext": sc}]}});
    vec![
        (
            "bare pod: every default",
            json!({"spec": {"containers": [{"name": "app", "image": "x"}]}}),
            Want::Admit(vec![
                (
                    "/metadata/annotations/openshift.io~1scc",
                    json!("restricted-v2"),
                ),
                ("/spec/securityContext/fsGroup", json!(1_000_680_000)),
                (
                    "/spec/securityContext/seLinuxOptions/level",
                    json!("s0:c26,c15"),
                ),
                (
                    "/spec/securityContext/seccompProfile/type",
                    json!("RuntimeDefault"),
                ),
                (
                    "/spec/containers/0/securityContext/runAsUser",
                    json!(1_000_680_000),
                ),
                (
                    "/spec/containers/0/securityContext/runAsNonRoot",
                    json!(true),
                ),
                (
                    "/spec/containers/0/securityContext/capabilities/drop",
                    json!(["ALL"]),
                ),
                (
                    "/spec/containers/0/securityContext/allowPrivilegeEscalation",
                    json!(false),
                ),
            ]),
        ),
        (
            "init and ephemeral containers get theirs too; own drops kept",
            json!({"spec": {
                "initContainers": [{"name": "i", "image": "x", "securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}],
                "containers": [{"name": "app", "image": "x"}],
                "ephemeralContainers": [{"name": "e", "image": "x"}]}}),
            Want::Admit(vec![
                (
                    "/spec/initContainers/0/securityContext/runAsUser",
                    json!(1_000_680_000),
                ),
                (
                    "/spec/initContainers/0/securityContext/capabilities/drop",
                    json!(["NET_RAW", "ALL"]),
                ),
                (
                    "/spec/ephemeralContainers/0/securityContext/runAsUser",
                    json!(1_000_680_000),
                ),
                (
                    "/spec/ephemeralContainers/0/securityContext/allowPrivilegeEscalation",
                    json!(false),
                ),
            ]),
        ),
        (
            "a UID in the range at pod level is kept, not copied to containers",
            json!({"spec": {"securityContext": {"runAsUser": 1_000_680_005},
                "containers": [{"name": "app", "image": "x"}]}}),
            Want::Admit(vec![
                ("/spec/securityContext/runAsUser", json!(1_000_680_005)),
                (
                    "/spec/containers/0/securityContext/runAsNonRoot",
                    json!(true),
                ),
            ]),
        ),
        (
            "what the pod sets itself wins: fsGroup, level, seccomp, runAsNonRoot",
            json!({"spec": {"securityContext": {"fsGroup": 1_000_689_999,
                    "seLinuxOptions": {"level": "s0:c15,c26"},
                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "app", "image": "x", "securityContext": {"runAsNonRoot": false, "allowPrivilegeEscalation": false,
                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}}}]}}),
            Want::Admit(vec![
                ("/spec/securityContext/fsGroup", json!(1_000_689_999)),
                (
                    "/spec/securityContext/seLinuxOptions/level",
                    json!("s0:c15,c26"),
                ),
                (
                    "/spec/containers/0/securityContext/runAsNonRoot",
                    json!(false),
                ),
                (
                    "/spec/containers/0/securityContext/capabilities/add",
                    json!(["NET_BIND_SERVICE"]),
                ),
            ]),
        ),
        (
            "runAsUser 0",
            c(json!({"runAsUser": 0})),
            Want::Deny(
                "provider restricted-v2: .containers[0].runAsUser: Invalid value: 0: must be in the ranges: [1000680000, 1000689999]",
            ),
        ),
        (
            "UID above the range",
            c(json!({"runAsUser": 1_000_690_000})),
            Want::Deny(
                "provider restricted-v2: .containers[0].runAsUser: Invalid value: 1000690000: must be in the ranges: [1000680000, 1000689999]",
            ),
        ),
        (
            "privileged",
            c(json!({"privileged": true})),
            Want::Deny(
                "provider restricted-v2: .containers[0].privileged: Invalid value: true: Privileged containers are not allowed",
            ),
        ),
        (
            "allowPrivilegeEscalation true",
            c(json!({"allowPrivilegeEscalation": true})),
            Want::Deny(
                "provider restricted-v2: .containers[0].allowPrivilegeEscalation: Invalid value: true: Allowing privilege escalation for containers is not allowed",
            ),
        ),
        (
            "capabilities beyond NET_BIND_SERVICE",
            c(json!({"capabilities": {"add": ["NET_BIND_SERVICE", "NET_ADMIN", "SYS_TIME"]}})),
            Want::Deny(
                "[provider restricted-v2: .containers[0].capabilities.add: Invalid value: \"NET_ADMIN\": capability may not be added, provider restricted-v2: .containers[0].capabilities.add: Invalid value: \"SYS_TIME\": capability may not be added]",
            ),
        ),
        (
            "hostNetwork: at pod level and for the container, as OpenShift reports it",
            json!({"spec": {"hostNetwork": true, "containers": [{"name": "app", "image": "x"}]}}),
            Want::Deny(
                "[provider restricted-v2: .spec.securityContext.hostNetwork: Invalid value: true: Host network is not allowed to be used, provider restricted-v2: .containers[0].hostNetwork: Invalid value: true: Host network is not allowed to be used]",
            ),
        ),
        (
            "hostPID and hostIPC",
            json!({"spec": {"hostPID": true, "hostIPC": true, "containers": [{"name": "app", "image": "x"}]}}),
            Want::Deny(
                "[provider restricted-v2: .spec.securityContext.hostPID: Invalid value: true: Host PID is not allowed to be used, provider restricted-v2: .spec.securityContext.hostIPC: Invalid value: true: Host IPC is not allowed to be used, provider restricted-v2: .containers[0].hostPID: Invalid value: true: Host PID is not allowed to be used, provider restricted-v2: .containers[0].hostIPC: Invalid value: true: Host IPC is not allowed to be used]",
            ),
        ),
        (
            "hostPort",
            json!({"spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
            Want::Deny(
                "provider restricted-v2: .containers[0].containers[0].hostPort: Invalid value: 8080: Host ports are not allowed to be used",
            ),
        ),
        (
            "hostPath volume; allowed ones pass",
            json!({"spec": {"volumes": [
                    {"name": "a", "configMap": {"name": "c"}},
                    {"name": "b", "hostPath": {"path": "/var/run"}},
                    {"name": "c", "emptyDir": {}},
                    {"name": "d", "nfs": {"server": "s", "path": "/"}}],
                "containers": [{"name": "app", "image": "x"}]}}),
            Want::Deny(
                "[spec.volumes[1]: Invalid value: \"hostPath\": hostPath volumes are not allowed to be used, spec.volumes[3]: Invalid value: \"nfs\": nfs volumes are not allowed to be used]",
            ),
        ),
        (
            "seccomp Unconfined at pod level: the pod and its container",
            json!({"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}},
                "containers": [{"name": "app", "image": "x"}]}}),
            Want::Deny(
                "[pod.metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]: Forbidden: unconfined is not an allowed seccomp profile. Valid values are [runtime/default], pod.metadata.annotations[container.seccomp.security.alpha.kubernetes.io/app]: Forbidden: unconfined is not an allowed seccomp profile. Valid values are [runtime/default]]",
            ),
        ),
        (
            "seccomp Localhost on a container",
            c(json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "my.json"}})),
            Want::Deny(
                "pod.metadata.annotations[container.seccomp.security.alpha.kubernetes.io/app]: Forbidden: localhost/my.json is not an allowed seccomp profile. Valid values are [runtime/default]",
            ),
        ),
        (
            "another namespace's SELinux level",
            json!({"spec": {"securityContext": {"seLinuxOptions": {"level": "s0:c3,c2"}},
                "containers": [{"name": "app", "image": "x"}]}}),
            Want::Deny(
                "[provider restricted-v2: .spec.securityContext.seLinuxOptions.level: Invalid value: \"s0:c3,c2\": must be s0:c26,c15, provider restricted-v2: .containers[0].seLinuxOptions.level: Invalid value: \"s0:c3,c2\": must be s0:c26,c15]",
            ),
        ),
        (
            "an SELinux type (spc_t): restricted-v2 sets none",
            c(json!({"seLinuxOptions": {"type": "spc_t"}})),
            Want::Deny(
                "[provider restricted-v2: .containers[0].seLinuxOptions.level: Invalid value: \"\": must be s0:c26,c15, provider restricted-v2: .containers[0].seLinuxOptions.type: Invalid value: \"spc_t\": must be ]",
            ),
        ),
        (
            "fsGroup outside the range",
            json!({"spec": {"securityContext": {"fsGroup": 5}, "containers": [{"name": "app", "image": "x"}]}}),
            Want::Deny(
                "provider restricted-v2: .spec.securityContext.fsGroup: Invalid value: []int64{5}: 5 is not an allowed group",
            ),
        ),
    ]
}

#[test]
fn decision_table() {
    let ns = ns68();
    for (name, raw, want) in cases() {
        let raw = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": raw["spec"]});
        match (run(&raw, &ns), want) {
            (Ok(doc), Want::Admit(fields)) => {
                for (ptr, value) in fields {
                    assert_eq!(doc.pointer(ptr), Some(&value), "{name}: {ptr}");
                }
                let patched: Pod =
                    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    admit(&patched, &ns),
                    Verdict::Admit(json_patch::Patch(vec![])),
                    "{name}: second pass"
                );
            }
            (Err(message), Want::Deny(text)) => {
                assert_eq!(message, format!("{PREFIX}{text}"), "{name}");
            }
            (got, _) => panic!("{name}: got {got:?}"),
        }
    }
}

#[test]
fn patch_fits_objects_with_null_or_missing_parents() {
    let ns = ns68();
    let cases = [
        (
            "metadata null",
            json!({"metadata": null, "spec": {"containers": [{"name": "a", "image": "x"}]}}),
        ),
        (
            "no metadata",
            json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}),
        ),
        (
            "nulls where contexts go",
            json!({"metadata": {"name": "p", "annotations": null},
                "spec": {"securityContext": null,
                    "containers": [{"name": "a", "image": "x", "securityContext": null}]}}),
        ),
        (
            "capabilities null",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x",
                "securityContext": {"capabilities": null}}]}}),
        ),
    ];
    for (name, raw) in cases {
        let doc = run(&raw, &ns).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            doc.pointer("/spec/containers/0/securityContext/runAsUser"),
            Some(&json!(1_000_680_000)),
            "{name}: {doc}"
        );
        assert_eq!(
            doc.pointer("/metadata/annotations/openshift.io~1scc"),
            Some(&json!("restricted-v2")),
            "{name}"
        );
        let patched: Pod = serde_json::from_value(doc).expect("decodes");
        let mut defaulted = pod(raw.clone());
        mutate(&mut defaulted, &ns, true);
        assert_eq!(patched, defaulted, "{name}");
        assert_eq!(
            admit(&patched, &ns),
            Verdict::Admit(json_patch::Patch(vec![])),
            "{name}"
        );
    }
}

#[test]
fn mcs_check_values_reach_the_pod() {
    for (index, level) in [(68, "s0:c26,c15"), (1, "s0:c3,c2")] {
        let ann = crate::allocation::new_block_annotations(index, None).expect("block");
        let ns = SccNamespace::from_annotations(&ann).expect("namespace");
        let raw = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "x"}]}});
        let doc = run(&raw, &ns).expect("admitted");
        assert_eq!(
            doc.pointer("/spec/securityContext/seLinuxOptions/level"),
            Some(&json!(level))
        );
        let uid = 1_000_000_000 + i64::from(index) * 10_000;
        assert_eq!(
            doc.pointer("/spec/containers/0/securityContext/runAsUser"),
            Some(&json!(uid))
        );
    }
}

#[test]
fn namespace_annotations_table() {
    let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    type Case<'a> = (&'a str, BTreeMap<String, String>, Result<(), &'a str>);
    let cases: &[Case] = &[
        (
            "none",
            ann(&[]),
            Err("unable to find annotation openshift.io/sa.scc.uid-range"),
        ),
        (
            "no mcs",
            ann(&[(UID_RANGE, "1000680000/10000")]),
            Err("unable to find annotation openshift.io/sa.scc.mcs"),
        ),
        (
            "bad range",
            ann(&[(UID_RANGE, "x"), (MCS, "s0:c1,c0")]),
            Err("annotation openshift.io/sa.scc.uid-range"),
        ),
        (
            "bad groups",
            ann(&[
                (UID_RANGE, "1/1"),
                (SUPPLEMENTAL_GROUPS, "y"),
                (MCS, "s0:c1,c0"),
            ]),
            Err("supplemental-groups"),
        ),
        (
            "empty level",
            ann(&[(UID_RANGE, "1/1"), (MCS, "   ")]),
            Err("unable to find annotation openshift.io/sa.scc.mcs"),
        ),
        (
            "groups default to the range",
            ann(&[(UID_RANGE, "1/1"), (MCS, "s0:c1,c0")]),
            Ok(()),
        ),
    ];
    for (name, annotations, want) in cases {
        match (SccNamespace::from_annotations(annotations), want) {
            (Ok(ns), Ok(())) => assert_eq!(ns.groups, ns.uids, "{name}"),
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
            (got, _) => panic!("{name}: {got:?}"),
        }
    }
}

fn container_json() -> impl Strategy<Value = Value> {
    let sc = (
        proptest::option::of(prop_oneof![
            Just(0i64),
            1_000_680_000..1_000_690_000i64,
            any::<i64>()
        ]),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![Just("ALL"), Just("NET_RAW"), Just("NET_BIND_SERVICE")],
            0..3,
        )),
        proptest::option::of(prop_oneof![
            Just("RuntimeDefault"),
            Just("Unconfined"),
            Just("Localhost")
        ]),
    )
        .prop_map(|(user, non_root, privileged, escalation, drop, seccomp)| {
            json!({"runAsUser": user, "runAsNonRoot": non_root, "privileged": privileged,
                   "allowPrivilegeEscalation": escalation,
                   "capabilities": {"drop": drop, "add": ["NET_BIND_SERVICE"]},
                   "seccompProfile": seccomp.map(|t| json!({"type": t}))})
        });
    (proptest::option::of(sc), proptest::option::of(0..70_000i32)).prop_map(|(sc, host_port)| {
        let mut c = json!({"name": "c", "image": "x"});
        if let Some(sc) = sc {
            c["securityContext"] = sc;
        }
        if let Some(p) = host_port {
            c["ports"] = json!([{"containerPort": 80, "hostPort": p}]);
        }
        c
    })
}

proptest! {
    #[test]
    fn arbitrary_pods_never_panic(raw in crate::fuzz::arbitrary_json(), spec in crate::fuzz::arbitrary_json()) {
        let ns = ns68();
        for v in [raw, json!({"spec": spec})] {
            if let Ok(p) = serde_json::from_value::<Pod>(v)
                && let Verdict::Deny(m) = admit(&p, &ns)
            {
                prop_assert!(m.starts_with(PREFIX), "{}", m);
            }
        }
    }

    #[test]
    fn a_mutated_pod_is_admitted_unchanged(
        containers in proptest::collection::vec(container_json(), 1..3),
        init in proptest::collection::vec(container_json(), 0..2),
        fs_group in proptest::option::of(prop_oneof![1_000_680_000..1_000_690_000i64, any::<i64>()]),
        level in proptest::option::of(prop_oneof![Just("s0:c26,c15"), Just("s0:c15,c26"), Just("s0:c1,c0")]),
        host_network in any::<Option<bool>>(),
        future in crate::fuzz::arbitrary_json(),
    ) {
        let ns = ns68();
        let mut raw = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": containers, "initContainers": init, "hostNetwork": host_network,
                "securityContext": {"fsGroup": fs_group, "seLinuxOptions": level.map(|l| json!({"level": l}))}}});
        // Fields k8s-openapi does not model ride along and must not break the patch.
        raw["spec"]["futureField"] = future;
        match run(&raw, &ns) {
            Ok(doc) => {
                let patched: Pod = serde_json::from_value(doc).expect("the patched pod decodes");
                // The patch does to the pod as sent exactly what the typed defaulting does.
                let mut defaulted = pod(raw.clone());
                mutate(&mut defaulted, &ns, true);
                prop_assert_eq!(&patched, &defaulted);
                prop_assert_eq!(admit(&patched, &ns), Verdict::Admit(json_patch::Patch(vec![])));
            }
            Err(m) => prop_assert!(m.starts_with(PREFIX), "{}", m),
        }
    }
}
