//! The Secrets, ConfigMaps and PersistentVolumeClaims a pod references (and the keys of them it
//! names), and what the kubelet does while one is missing: FailedMount for volumes,
//! CreateContainerConfigError for env.

use k8s_openapi::api::core::v1::{KeyToPath, Pod};

use super::{EventKind, PodEvent};

/// Kinds of objects a pod can reference and the kubelet waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    Secret,
    ConfigMap,
    Pvc,
}

impl RefKind {
    fn noun(self) -> &'static str {
        match self {
            RefKind::Secret => "secret",
            RefKind::ConfigMap => "configmap",
            RefKind::Pvc => "persistentvolumeclaim",
        }
    }
}

/// One reference from a pod to an object in its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjRef {
    pub kind: RefKind,
    pub name: String,
    /// The volume that mounts it; `None` for env and envFrom references.
    pub volume: Option<String>,
    /// The key it needs (`items[].key`, `secretKeyRef.key`, `configMapKeyRef.key`); `None`
    /// when it takes the whole object.
    pub key: Option<String>,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefState {
    Present,
    Missing,
    /// The object exists without the key the reference names.
    MissingKey,
    /// A PVC that exists but is not Bound; carries its phase.
    NotBound(String),
}

/// Whether a ConfigMap or Secret has a key, by where the reference uses it: env reads a
/// ConfigMap's `data` only, a volume its `data` and `binaryData`.
pub fn has_key(r: &ObjRef, data: &dyn Fn(&str) -> bool, binary: &dyn Fn(&str) -> bool) -> bool {
    r.key
        .as_deref()
        .is_none_or(|k| data(k) || (r.volume.is_some() && binary(k)))
}

/// The keys a volume source maps (`items`), or `None` for all of them.
fn keys(items: &Option<Vec<KeyToPath>>) -> Vec<Option<&str>> {
    match items.as_deref() {
        Some(items) if !items.is_empty() => items.iter().map(|i| Some(i.key.as_str())).collect(),
        _ => vec![None],
    }
}

/// Every Secret, ConfigMap and PVC the pod's volumes, env and envFrom reference: one per key
/// named, one for the object where no key is named.
pub fn references(pod: &Pod) -> Vec<ObjRef> {
    let mut out = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return out;
    };
    let mut push = |kind, name: &str, volume: Option<&str>, keys: Vec<Option<&str>>, optional| {
        for key in keys {
            out.push(ObjRef {
                kind,
                name: name.to_string(),
                volume: volume.map(str::to_string),
                key: key.map(str::to_string),
                optional,
            });
        }
    };
    // A volume source maps some keys (`items`) or all of them.
    for v in spec.volumes.iter().flatten() {
        let vol = Some(v.name.as_str());
        if let Some(c) = &v.persistent_volume_claim {
            push(RefKind::Pvc, &c.claim_name, vol, vec![None], false);
        }
        // Secret and ConfigMap sources, direct or projected: (kind, name, items, optional).
        let mut sources = Vec::new();
        if let Some(s) = &v.secret {
            let name = s.secret_name.as_deref().unwrap_or_default();
            sources.push((RefKind::Secret, name, &s.items, s.optional));
        }
        if let Some(c) = &v.config_map {
            sources.push((RefKind::ConfigMap, c.name.as_str(), &c.items, c.optional));
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &src.secret {
                sources.push((RefKind::Secret, s.name.as_str(), &s.items, s.optional));
            }
            if let Some(c) = &src.config_map {
                sources.push((RefKind::ConfigMap, c.name.as_str(), &c.items, c.optional));
            }
        }
        for (kind, name, items, optional) in sources {
            push(kind, name, vol, keys(items), optional.unwrap_or(false));
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in containers {
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(s) = &from.secret_key_ref {
                let key = vec![Some(s.key.as_str())];
                push(
                    RefKind::Secret,
                    &s.name,
                    None,
                    key,
                    s.optional.unwrap_or(false),
                );
            }
            if let Some(s) = &from.config_map_key_ref {
                let key = vec![Some(s.key.as_str())];
                push(
                    RefKind::ConfigMap,
                    &s.name,
                    None,
                    key,
                    s.optional.unwrap_or(false),
                );
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(s) = &e.secret_ref {
                push(
                    RefKind::Secret,
                    &s.name,
                    None,
                    vec![None],
                    s.optional.unwrap_or(false),
                );
            }
            if let Some(s) = &e.config_map_ref {
                push(
                    RefKind::ConfigMap,
                    &s.name,
                    None,
                    vec![None],
                    s.optional.unwrap_or(false),
                );
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Why the kubelet holds a pod's containers in Waiting: what it reports and records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The containers' waiting reason.
    pub reason: &'static str,
    pub message: Option<String>,
    /// Volumes are set up before the sandbox gets its IP; env is resolved after.
    pub with_ip: bool,
    pub events: Vec<PodEvent>,
}

/// The hold, if any, from the pod's references: a missing volume source holds the pod in
/// ContainerCreating (FailedMount per volume), else a missing env source in
/// CreateContainerConfigError. Optional objects may be missing.
pub fn held(
    namespace: &str,
    refs: &[ObjRef],
    lookup: &dyn Fn(&ObjRef) -> RefState,
) -> Option<Held> {
    let mut missing_volumes = Vec::new();
    let mut missing_env = Vec::new();
    for r in refs {
        let state = lookup(r);
        let problem = match (&state, r.optional) {
            (RefState::Present, _) => None,
            (RefState::Missing, true) => None,
            (RefState::Missing, false) => {
                Some(format!("{} \"{}\" not found", r.kind.noun(), r.name))
            }
            (RefState::MissingKey, true) => None,
            // The kubelet's words: the volume plugins' and `makeEnvironmentVariables`'.
            (RefState::MissingKey, false) => {
                let key = r.key.as_deref().unwrap_or_default();
                Some(match (r.volume.is_some(), r.kind) {
                    (true, RefKind::ConfigMap) => {
                        format!("configmap references non-existent config key: {key}")
                    }
                    (true, _) => format!("references non-existent secret key: {key}"),
                    (false, RefKind::ConfigMap) => format!(
                        "couldn't find key {key} in ConfigMap {namespace}/{}",
                        r.name
                    ),
                    (false, _) => {
                        format!("couldn't find key {key} in Secret {namespace}/{}", r.name)
                    }
                })
            }
            (RefState::NotBound(p), _) => Some(format!(
                "persistentvolumeclaim \"{}\" is not bound (phase {p})",
                r.name
            )),
        };
        if let Some(p) = problem {
            match &r.volume {
                Some(v) => missing_volumes.push((v.clone(), p)),
                None => missing_env.push(p),
            }
        }
    }
    if !missing_volumes.is_empty() {
        let events = missing_volumes
            .iter()
            .map(|(volume, problem)| PodEvent {
                kind: EventKind::FailedMount,
                message: format!("MountVolume.SetUp failed for volume \"{volume}\" : {problem}"),
            })
            .collect();
        return Some(Held {
            reason: "ContainerCreating",
            message: None,
            with_ip: false,
            events,
        });
    }
    if !missing_env.is_empty() {
        let message = missing_env.join("; ");
        return Some(Held {
            reason: "CreateContainerConfigError",
            events: vec![PodEvent {
                kind: EventKind::CreateContainerConfig,
                message: format!("Error: {message}"),
            }],
            message: Some(message),
            with_ip: true,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(spec: &str) -> Pod {
        let yaml = format!("metadata: {{name: p, namespace: ns}}\nspec: {spec}");
        serde_yaml::from_str(&yaml).expect("pod")
    }

    fn r(
        kind: RefKind,
        name: &str,
        volume: Option<&str>,
        key: Option<&str>,
        optional: bool,
    ) -> ObjRef {
        ObjRef {
            kind,
            name: name.into(),
            volume: volume.map(str::to_string),
            key: key.map(str::to_string),
            optional,
        }
    }

    #[test]
    fn keys_named_by_the_spec() {
        use RefKind::{ConfigMap, Secret};
        let cases = [
            (
                "volume items: one reference per key",
                "{containers: [{name: a}], volumes: [{name: v, configMap: {name: c, items: [{key: x, path: x}, {key: y, path: y}]}}]}",
                vec![
                    r(ConfigMap, "c", Some("v"), Some("x"), false),
                    r(ConfigMap, "c", Some("v"), Some("y"), false),
                ],
            ),
            (
                "volume without items: the whole object",
                "{containers: [{name: a}], volumes: [{name: v, secret: {secretName: s, optional: true}}]}",
                vec![r(Secret, "s", Some("v"), None, true)],
            ),
            (
                "projected sources with items",
                "{containers: [{name: a}], volumes: [{name: v, projected: {sources: [{secret: {name: s, items: [{key: k, path: k}]}}, {configMap: {name: c}}]}}]}",
                vec![
                    r(Secret, "s", Some("v"), Some("k"), false),
                    r(ConfigMap, "c", Some("v"), None, false),
                ],
            ),
            (
                "env key refs and envFrom",
                "{containers: [{name: a, env: [{name: E, valueFrom: {secretKeyRef: {name: s, key: k, optional: true}}}, {name: F, valueFrom: {configMapKeyRef: {name: c, key: m}}}], envFrom: [{configMapRef: {name: c}}]}]}",
                vec![
                    r(Secret, "s", None, Some("k"), true),
                    r(ConfigMap, "c", None, None, false),
                    r(ConfigMap, "c", None, Some("m"), false),
                ],
            ),
        ];
        for (name, spec, mut want) in cases {
            want.sort();
            assert_eq!(references(&pod(spec)), want, "{name}");
        }
    }

    #[test]
    fn holds_for_missing_keys() {
        use RefKind::{ConfigMap, Secret};
        // (name, reference, state, waiting reason, message or event)
        let cases = [
            (
                "env Secret key",
                r(Secret, "db", None, Some("password"), false),
                RefState::MissingKey,
                Some((
                    "CreateContainerConfigError",
                    "Error: couldn't find key password in Secret ns/db",
                )),
            ),
            (
                "env ConfigMap key",
                r(ConfigMap, "cfg", None, Some("mode"), false),
                RefState::MissingKey,
                Some((
                    "CreateContainerConfigError",
                    "Error: couldn't find key mode in ConfigMap ns/cfg",
                )),
            ),
            (
                "volume Secret key",
                r(Secret, "tls", Some("certs"), Some("tls.crt"), false),
                RefState::MissingKey,
                Some((
                    "ContainerCreating",
                    "MountVolume.SetUp failed for volume \"certs\" : references non-existent secret key: tls.crt",
                )),
            ),
            (
                "volume ConfigMap key",
                r(ConfigMap, "web", Some("config"), Some("app.yaml"), false),
                RefState::MissingKey,
                Some((
                    "ContainerCreating",
                    "MountVolume.SetUp failed for volume \"config\" : configmap references non-existent config key: app.yaml",
                )),
            ),
            (
                "optional key",
                r(Secret, "db", None, Some("k"), true),
                RefState::MissingKey,
                None,
            ),
            (
                "optional object",
                r(Secret, "db", Some("v"), Some("k"), true),
                RefState::Missing,
                None,
            ),
            (
                "present",
                r(Secret, "db", None, Some("k"), false),
                RefState::Present,
                None,
            ),
        ];
        for (name, reference, state, want) in cases {
            let got = held("ns", &[reference], &|_| state.clone());
            let got = got.map(|h| (h.reason, h.events[0].message.clone()));
            assert_eq!(got, want.map(|(r, m)| (r, m.to_string())), "{name}");
        }
    }

    #[test]
    fn env_reads_data_volumes_also_binary_data() {
        let env = r(RefKind::ConfigMap, "c", None, Some("b"), false);
        let vol = r(RefKind::ConfigMap, "c", Some("v"), Some("b"), false);
        let only_binary = |k: &str| k == "b";
        assert!(!has_key(&env, &|_| false, &only_binary));
        assert!(has_key(&vol, &|_| false, &only_binary));
        assert!(has_key(
            &r(RefKind::Secret, "s", None, None, false),
            &|_| false,
            &|_| false
        ));
    }

    fn any_ref() -> impl Strategy<Value = (ObjRef, RefState)> {
        (
            prop_oneof![
                Just(RefKind::Secret),
                Just(RefKind::ConfigMap),
                Just(RefKind::Pvc)
            ],
            "[a-z]{1,5}",
            proptest::option::of("[a-z]{1,5}"),
            proptest::option::of("\\PC{0,20}"),
            any::<bool>(),
            prop_oneof![
                Just(RefState::Present),
                Just(RefState::Missing),
                Just(RefState::MissingKey),
                Just(RefState::NotBound("Pending".into())),
            ],
        )
            .prop_map(|(kind, name, volume, key, optional, state)| {
                (
                    ObjRef {
                        kind,
                        name,
                        volume,
                        key,
                        optional,
                    },
                    state,
                )
            })
    }

    proptest! {
        #[test]
        fn held_iff_a_required_reference_fails(refs in proptest::collection::vec(any_ref(), 0..6)) {
            let states: std::collections::HashMap<ObjRef, RefState> = refs.iter().cloned().collect();
            let list: Vec<ObjRef> = states.keys().cloned().collect();
            let lookup = |r: &ObjRef| states.get(r).cloned().unwrap_or(RefState::Present);
            let got = held("ns", &list, &lookup);
            let blocking = states.iter().any(|(r, s)| match s {
                RefState::Present => false,
                RefState::Missing | RefState::MissingKey => !r.optional,
                RefState::NotBound(_) => true,
            });
            prop_assert_eq!(got.is_some(), blocking);
            if let Some(h) = got {
                prop_assert!(!h.events.is_empty());
                prop_assert!(matches!(h.reason, "ContainerCreating" | "CreateContainerConfigError"));
            }
        }
    }
}
