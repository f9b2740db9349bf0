//! THE DECISION of the `openshift-restricted-v2` profile: a pod and its namespace's OpenShift
//! annotations in, a JSON patch or a refusal worded as OpenShift's SCC admission words it out.
//! Pure: no I/O.
//!
//! Follows openshift/apiserver-library-go `pkg/securitycontextconstraints` (sccmatching's
//! provider, the user, group, selinux, seccomp and capabilities strategies) for the one SCC
//! `restricted-v2`: defaults are filled in where unset, then the result is validated; every
//! failure becomes one `field.Error`-shaped entry, deduplicated, as `ToAggregate` does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, SELinuxOptions, SeccompProfile, SecurityContext};

use crate::allocation::MCS;
use crate::strategy::{self, Block, SUPPLEMENTAL_GROUPS, UID_RANGE};

/// The SCC's name, in the pod annotation and in messages.
pub const SCC: &str = "restricted-v2";
/// The annotation OpenShift puts on every admitted pod.
pub const SCC_ANNOTATION: &str = "openshift.io/scc";
/// Capabilities a container may add under restricted-v2.
pub const ALLOWED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];
/// Volume types restricted-v2 allows.
pub const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];
const RUNTIME_DEFAULT: &str = "runtime/default";
const DOCKER_DEFAULT: &str = "docker/default";
const SECCOMP_POD: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER: &str = "container.seccomp.security.alpha.kubernetes.io/";
/// The message OpenShift gives when no SCC can be built for the namespace (its annotations
/// are missing or unreadable): the pod's controller retries.
pub const NO_PROVIDER: &str =
    "no SecurityContextConstraintsProvider available to validate pod request";

/// What restricted-v2 takes from the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SccNamespace {
    pub uids: Block,
    pub groups: Block,
    pub mcs: String,
}

impl SccNamespace {
    /// From OpenShift's annotations; an error names the missing or unreadable one (OpenShift
    /// then has no provider for the namespace and refuses with [`NO_PROVIDER`]).
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Result<Self, String> {
        let get = |key: &str| {
            annotations
                .get(key)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("unable to find annotation {key}"))
        };
        let uids = strategy::parse_block(get(UID_RANGE)?)
            .map_err(|e| format!("annotation {UID_RANGE}: {e}"))?;
        // As OpenShift: fsGroup's range comes from supplemental-groups, else from the UID range.
        let groups = match annotations.get(SUPPLEMENTAL_GROUPS) {
            Some(v) => strategy::parse_block(v)
                .map_err(|e| format!("annotation {SUPPLEMENTAL_GROUPS}: {e}"))?,
            None => uids,
        };
        let mcs = get(MCS)?.trim().to_owned();
        if parse_level(&mcs).is_none() {
            return Err(format!("annotation {MCS}: {mcs:?} is not an SELinux level"));
        }
        Ok(Self { uids, groups, mcs })
    }

    fn uid_max(&self) -> i64 {
        self.uids.start.saturating_add(self.uids.size - 1)
    }
}

/// The outcome for one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Admitted; the patch may be empty (nothing to default).
    Admit(json_patch::Patch),
    /// Refused with OpenShift's message.
    Deny(String),
}

/// Sensitivity and category set of a level such as `s0:c26,c15` (order of categories does
/// not matter, as in OpenShift's `equalLevels`).
fn parse_level(level: &str) -> Option<(String, std::collections::BTreeSet<String>)> {
    let (sensitivity, categories) = match level.split_once(':') {
        Some((s, c)) => (s, c),
        None => (level, ""),
    };
    if sensitivity.is_empty() || level.len() > 256 {
        return None;
    }
    let cats = categories
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    Some((sensitivity.to_owned(), cats))
}

fn equal_levels(expected: &str, actual: &str) -> bool {
    match (parse_level(expected), parse_level(actual)) {
        (Some(e), Some(a)) => e == a,
        _ => false,
    }
}

/// One entry of the refusal, shaped as Go's `field.Error`.
struct FieldError {
    path: String,
    body: String,
}

impl FieldError {
    fn invalid(path: impl Into<String>, value: impl std::fmt::Display, detail: &str) -> Self {
        Self {
            path: path.into(),
            body: format!("Invalid value: {value}: {detail}"),
        }
    }

    fn forbidden(path: impl Into<String>, detail: &str) -> Self {
        Self {
            path: path.into(),
            body: format!("Forbidden: {detail}"),
        }
    }
}

/// A string value as Go's `%q` shows it.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The path prefix OpenShift gives a provider's own checks.
fn provider() -> String {
    format!("provider {SCC}: ")
}

/// One container of any kind, with its path as OpenShift writes it (`.containers[0]`).
struct Slot<'a> {
    list: &'static str,
    index: usize,
    name: &'a str,
}

fn slot_list(pod: &Pod) -> Vec<Slot<'_>> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    // OpenShift visits init containers, then containers, then ephemeral containers.
    let mut out = Vec::new();
    for (index, c) in spec.init_containers.iter().flatten().enumerate() {
        out.push(Slot {
            list: "initContainers",
            index,
            name: &c.name,
        });
    }
    for (index, c) in spec.containers.iter().enumerate() {
        out.push(Slot {
            list: "containers",
            index,
            name: &c.name,
        });
    }
    for (index, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        out.push(Slot {
            list: "ephemeralContainers",
            index,
            name: &c.name,
        });
    }
    out
}

/// The security context of the container at `index` of `list` (a slot's place, taken apart:
/// the slot borrows the pod this changes).
fn context_mut<'a>(
    pod: &'a mut Pod,
    list: &str,
    index: usize,
) -> Option<&'a mut Option<SecurityContext>> {
    let spec = pod.spec.as_mut()?;
    match list {
        "initContainers" => spec
            .init_containers
            .as_mut()?
            .get_mut(index)
            .map(|c| &mut c.security_context),
        "containers" => spec
            .containers
            .get_mut(index)
            .map(|c| &mut c.security_context),
        _ => spec
            .ephemeral_containers
            .as_mut()?
            .get_mut(index)
            .map(|c| &mut c.security_context),
    }
}

fn context<'a>(pod: &'a Pod, slot: &Slot<'_>) -> Option<&'a SecurityContext> {
    let spec = pod.spec.as_ref()?;
    match slot.list {
        "initContainers" => spec
            .init_containers
            .as_ref()?
            .get(slot.index)?
            .security_context
            .as_ref(),
        "containers" => spec.containers.get(slot.index)?.security_context.as_ref(),
        _ => spec
            .ephemeral_containers
            .as_ref()?
            .get(slot.index)?
            .security_context
            .as_ref(),
    }
}

fn seccomp_annotation(profile: &SeccompProfile) -> String {
    match profile.type_.as_str() {
        "RuntimeDefault" => RUNTIME_DEFAULT.to_owned(),
        "Unconfined" => "unconfined".to_owned(),
        "Localhost" => format!(
            "localhost/{}",
            profile.localhost_profile.as_deref().unwrap_or_default()
        ),
        other => other.to_owned(),
    }
}

/// The volume type as OpenShift names it (`hostPath`, `nfs`…), from the volume's JSON.
fn volume_type(volume: &k8s_openapi::api::core::v1::Volume) -> String {
    let value = serde_json::to_value(volume).unwrap_or_default();
    let key = value
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "unknown".to_owned());
    if key == "vsphereVolume" {
        "vsphere".to_owned()
    } else {
        key
    }
}

/// OpenShift's SELinux `MustRunAs`: the namespace's level (categories in any order), and the
/// SCC's user, role and type, which restricted-v2 leaves empty.
fn check_selinux(
    path: &str,
    options: Option<&SELinuxOptions>,
    ns: &SccNamespace,
) -> Vec<FieldError> {
    let Some(o) = options else {
        return vec![FieldError {
            path: path.to_owned(),
            body: "Required value".into(),
        }];
    };
    let mut errs = Vec::new();
    let level = o.level.as_deref().unwrap_or_default();
    if !equal_levels(&ns.mcs, level) {
        errs.push(FieldError::invalid(
            format!("{path}.level"),
            quoted(level),
            &format!("must be {}", ns.mcs),
        ));
    }
    for (field, value) in [("role", &o.role), ("type", &o.type_), ("user", &o.user)] {
        let value = value.as_deref().unwrap_or_default();
        if !value.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.{field}"),
                quoted(value),
                "must be ",
            ));
        }
    }
    errs
}

fn check_seccomp(path: String, profile: &str) -> Option<FieldError> {
    let ok = profile == RUNTIME_DEFAULT || profile == DOCKER_DEFAULT;
    (!ok).then(|| {
        FieldError::forbidden(
            path,
            &format!(
                "{profile} is not an allowed seccomp profile. Valid values are [{RUNTIME_DEFAULT}]"
            ),
        )
    })
}

/// Validates the defaulted pod (OpenShift's ValidatePodSecurityContext, then
/// ValidateContainerSecurityContext for every container).
fn validate(pod: &Pod, ns: &SccNamespace) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return errs;
    };
    let p = provider();
    let psc = spec.security_context.clone().unwrap_or_default();
    let pod_path = format!("{p}.spec.securityContext");
    if let Some(g) = psc.fs_group {
        let last = ns.groups.start.saturating_add(ns.groups.size - 1);
        if !(ns.groups.start..=last).contains(&g) {
            errs.push(FieldError::invalid(
                format!("{pod_path}.fsGroup"),
                format!("[]int64{{{g}}}"),
                &format!("{g} is not an allowed group"),
            ));
        }
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let pod_profile = annotations
        .get(SECCOMP_POD)
        .cloned()
        .or_else(|| psc.seccomp_profile.as_ref().map(seccomp_annotation))
        .unwrap_or_default();
    errs.extend(check_seccomp(
        format!("pod.metadata.annotations[{SECCOMP_POD}]"),
        &pod_profile,
    ));
    errs.extend(check_selinux(
        &format!("{pod_path}.seLinuxOptions"),
        psc.se_linux_options.as_ref(),
        ns,
    ));
    let host = [
        (
            "hostNetwork",
            spec.host_network,
            "Host network is not allowed to be used",
        ),
        (
            "hostPID",
            spec.host_pid,
            "Host PID is not allowed to be used",
        ),
        (
            "hostIPC",
            spec.host_ipc,
            "Host IPC is not allowed to be used",
        ),
    ];
    for (field, on, detail) in host {
        if on == Some(true) {
            errs.push(FieldError::invalid(
                format!("{pod_path}.{field}"),
                true,
                detail,
            ));
        }
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let kind = volume_type(v);
        if !ALLOWED_VOLUMES.contains(&kind.as_str()) {
            errs.push(FieldError::invalid(
                format!("spec.volumes[{i}]"),
                quoted(&kind),
                &format!("{kind} volumes are not allowed to be used"),
            ));
        }
    }
    let slots = slot_list(pod);
    for slot in &slots {
        let path = format!("{p}.{}[{}]", slot.list, slot.index);
        let sc = context(pod, slot).cloned().unwrap_or_default();
        let user = sc.run_as_user.or(psc.run_as_user);
        match user {
            None => errs.push(FieldError {
                path: format!("{path}.runAsUser"),
                body: "Required value".into(),
            }),
            Some(u) if !(ns.uids.start..=ns.uid_max()).contains(&u) => {
                errs.push(FieldError::invalid(
                    format!("{path}.runAsUser"),
                    u,
                    &format!(
                        "must be in the ranges: [{}, {}]",
                        ns.uids.start,
                        ns.uid_max()
                    ),
                ))
            }
            Some(_) => {}
        }
        errs.extend(check_selinux(
            &format!("{path}.seLinuxOptions"),
            sc.se_linux_options
                .as_ref()
                .or(psc.se_linux_options.as_ref()),
            ns,
        ));
        let container_key = format!("{SECCOMP_CONTAINER}{}", slot.name);
        let profile = sc
            .seccomp_profile
            .as_ref()
            .map(seccomp_annotation)
            .or_else(|| annotations.get(&container_key).cloned())
            .unwrap_or_else(|| pod_profile.clone());
        errs.extend(check_seccomp(
            format!("pod.metadata.annotations[{container_key}]"),
            &profile,
        ));
        if sc.privileged == Some(true) {
            errs.push(FieldError::invalid(
                format!("{path}.privileged"),
                true,
                "Privileged containers are not allowed",
            ));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        for cap in caps.add.iter().flatten() {
            if !ALLOWED_CAPABILITIES.contains(&cap.as_str()) {
                errs.push(FieldError::invalid(
                    format!("{path}.capabilities.add"),
                    quoted(cap),
                    "capability may not be added",
                ));
            }
        }
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            errs.push(FieldError::invalid(
                format!("{path}.capabilities.drop"),
                format!("{:?}", caps.drop.clone().unwrap_or_default()),
                "ALL is required to be dropped but was not found",
            ));
        }
        for (field, on, detail) in host {
            if on == Some(true) {
                errs.push(FieldError::invalid(format!("{path}.{field}"), true, detail));
            }
        }
        // OpenShift checks every container's host ports under each container's path.
        for other in &slots {
            for port in ports(pod, other) {
                errs.push(FieldError::invalid(
                    format!("{path}.{}[{}].hostPort", other.list, other.index),
                    port,
                    "Host ports are not allowed to be used",
                ));
            }
        }
        if sc.allow_privilege_escalation != Some(false) {
            let shown = match sc.allow_privilege_escalation {
                Some(v) => v.to_string(),
                None => quoted("null"),
            };
            errs.push(FieldError::invalid(
                format!("{path}.allowPrivilegeEscalation"),
                shown,
                "Allowing privilege escalation for containers is not allowed",
            ));
        }
    }
    errs
}

/// Host ports (> 0) a container asks for.
fn ports(pod: &Pod, slot: &Slot<'_>) -> Vec<i32> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let ports = match slot.list {
        "initContainers" => spec
            .init_containers
            .as_ref()
            .and_then(|c| c.get(slot.index))
            .and_then(|c| c.ports.clone()),
        "containers" => spec
            .containers
            .get(slot.index)
            .and_then(|c| c.ports.clone()),
        // Ephemeral containers may not have ports.
        _ => None,
    };
    ports
        .into_iter()
        .flatten()
        .filter_map(|p| p.host_port.filter(|h| *h > 0))
        .collect()
}

/// The refusal text: one entry alone, or several in brackets, deduplicated (Go's aggregate).
fn message(errs: &[FieldError]) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let entries: Vec<String> = errs
        .iter()
        .map(|e| format!("{}: {}", e.path, e.body))
        .filter(|m| seen.insert(m.clone()))
        .collect();
    let list = if entries.len() == 1 {
        entries[0].clone()
    } else {
        format!("[{}]", entries.join(", "))
    };
    format!("unable to validate against any security context constraint: {list}")
}

/// Admits `pod` under restricted-v2 in a namespace with `ns`: the patch that applies the
/// SCC's defaults, or OpenShift's refusal.
pub fn admit(pod: &Pod, ns: &SccNamespace) -> Verdict {
    admit_sent(true, pod, ns)
}

/// [`admit`] for the object as the apiserver sent it, knowing only what the patch needs of it
/// (`fitted_patch::Sent`): whether it has a `metadata` object. The patch is built as the pod is defaulted, with no re-encoding of the
/// pod (that doubled the cost of an admission).
pub fn admit_sent(has_metadata: bool, pod: &Pod, ns: &SccNamespace) -> Verdict {
    let mut mutated = pod.clone();
    let ops = mutate(&mut mutated, ns, has_metadata);
    let errs = validate(&mutated, ns);
    if !errs.is_empty() {
        return Verdict::Deny(message(&errs));
    }
    Verdict::Admit(json_patch::Patch(ops))
}

#[path = "restricted_v2_defaults.rs"]
mod defaults;
use defaults::mutate;

#[cfg(test)]
#[path = "restricted_v2_tests.rs"]
mod tests;
