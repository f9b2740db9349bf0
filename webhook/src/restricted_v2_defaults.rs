//! restricted-v2's defaults (OpenShift's CreatePodSecurityContext and
//! CreateContainerSecurityContext for this SCC), applied to the typed pod and, in the same
//! step, written as the JSON patch that applies them to the pod as sent.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Pod, PodSecurityContext, SELinuxOptions, SeccompProfile, SecurityContext,
};
use serde_json::Value;

use super::{SCC, SCC_ANNOTATION, SECCOMP_POD, SccNamespace, context_mut, slot_list};

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Fills in what restricted-v2 defaults, where unset (OpenShift's CreatePodSecurityContext and
/// CreateContainerSecurityContext for this SCC), and returns the JSON patch that does the same
/// to the pod as sent: an `add` of each field it sets, or of the whole parent where the pod had
/// none (absent or null decode alike, and `add` replaces a null). `has_metadata` says whether
/// the sent object has a `metadata` object (the typed pod always has one).
pub(super) fn mutate(pod: &mut Pod, ns: &SccNamespace, has_metadata: bool) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    let slots: Vec<(&'static str, usize)> =
        slot_list(pod).iter().map(|s| (s.list, s.index)).collect();
    let pod_seccomp_annotation = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SECCOMP_POD));
    let Some(spec) = pod.spec.as_mut() else {
        return ops;
    };
    let level = || SELinuxOptions {
        level: Some(ns.mcs.clone()),
        ..Default::default()
    };
    let runtime_default = || SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    };
    match spec.security_context.as_mut() {
        None => {
            let psc = PodSecurityContext {
                fs_group: Some(ns.groups.start),
                se_linux_options: Some(level()),
                seccomp_profile: (!pod_seccomp_annotation).then(runtime_default),
                ..Default::default()
            };
            ops.push(add(&["spec", "securityContext"], json(&psc)));
            spec.security_context = Some(psc);
        }
        Some(psc) => {
            let at = |field| ["spec", "securityContext", field];
            if psc.fs_group.is_none() {
                psc.fs_group = Some(ns.groups.start);
                ops.push(add(&at("fsGroup"), Value::from(ns.groups.start)));
            }
            if psc.se_linux_options.is_none() {
                let options = level();
                ops.push(add(&at("seLinuxOptions"), json(&options)));
                psc.se_linux_options = Some(options);
            }
            if psc.seccomp_profile.is_none() && !pod_seccomp_annotation {
                let profile = runtime_default();
                ops.push(add(&at("seccompProfile"), json(&profile)));
                psc.seccomp_profile = Some(profile);
            }
        }
    }
    let psc = spec.security_context.as_ref();
    let pod_user = psc.and_then(|p| p.run_as_user);
    let pod_non_root = psc.and_then(|p| p.run_as_non_root);
    for (list, index) in slots {
        let Some(sc) = context_mut(pod, list, index) else {
            continue;
        };
        let index = index.to_string();
        let base = ["spec", list, index.as_str(), "securityContext"];
        let whole = sc.is_none();
        let sc = sc.get_or_insert_with(SecurityContext::default);
        let mut fields: Vec<(&str, Value)> = Vec::new();
        if sc.run_as_user.or(pod_user).is_none() {
            sc.run_as_user = Some(ns.uids.start);
            fields.push(("runAsUser", Value::from(ns.uids.start)));
        }
        if sc.run_as_non_root.or(pod_non_root).is_none()
            && sc.run_as_user.or(pod_user).is_some_and(|u| u > 0)
        {
            sc.run_as_non_root = Some(true);
            fields.push(("runAsNonRoot", Value::Bool(true)));
        }
        match sc.capabilities.as_mut() {
            None => {
                let caps = Capabilities {
                    drop: Some(vec!["ALL".to_owned()]),
                    add: None,
                };
                fields.push(("capabilities", json(&caps)));
                sc.capabilities = Some(caps);
            }
            Some(caps) => match caps.drop.as_mut() {
                None => {
                    caps.drop = Some(vec!["ALL".to_owned()]);
                    ops.push(add(
                        &[&base[..], &["capabilities", "drop"]].concat(),
                        Value::from(vec!["ALL"]),
                    ));
                }
                Some(drop) if !drop.iter().any(|d| d == "ALL") => {
                    drop.push("ALL".to_owned());
                    ops.push(add(
                        &[&base[..], &["capabilities", "drop", "-"]].concat(),
                        Value::from("ALL"),
                    ));
                }
                Some(_) => {}
            },
        }
        if sc.allow_privilege_escalation.is_none() {
            sc.allow_privilege_escalation = Some(false);
            fields.push(("allowPrivilegeEscalation", Value::Bool(false)));
        }
        if whole {
            ops.push(add(&base, json(sc)));
        } else {
            for (field, value) in fields {
                ops.push(add(&[&base[..], &[field]].concat(), value));
            }
        }
    }
    let annotations = &mut pod.metadata.annotations;
    let scc = Value::from(SCC);
    match annotations {
        Some(a) if has_metadata && a.get(SCC_ANNOTATION).is_some_and(|v| v == SCC) => {}
        _ if !has_metadata => ops.push(add(
            &["metadata"],
            serde_json::json!({ "annotations": { SCC_ANNOTATION: SCC } }),
        )),
        None => ops.push(add(
            &["metadata", "annotations"],
            serde_json::json!({ SCC_ANNOTATION: SCC }),
        )),
        Some(_) => ops.push(add(&["metadata", "annotations", SCC_ANNOTATION], scc)),
    }
    annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SCC_ANNOTATION.to_owned(), SCC.to_owned());
    ops
}
