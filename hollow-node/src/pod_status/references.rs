//! The Secrets, ConfigMaps and PersistentVolumeClaims a pod references, and what the kubelet
//! does while one is missing: FailedMount for volumes, CreateContainerConfigError for env.

use k8s_openapi::api::core::v1::Pod;

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
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefState {
    Present,
    Missing,
    /// A PVC that exists but is not Bound; carries its phase.
    NotBound(String),
}

/// Every Secret, ConfigMap and PVC the pod's volumes, env and envFrom reference.
pub fn references(pod: &Pod) -> Vec<ObjRef> {
    let mut out = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return out;
    };
    for v in spec.volumes.iter().flatten() {
        let vol = Some(v.name.clone());
        if let Some(s) = &v.secret {
            out.push(ObjRef {
                kind: RefKind::Secret,
                name: s.secret_name.clone().unwrap_or_default(),
                volume: vol.clone(),
                optional: s.optional.unwrap_or(false),
            });
        }
        if let Some(c) = &v.config_map {
            out.push(ObjRef {
                kind: RefKind::ConfigMap,
                name: c.name.clone(),
                volume: vol.clone(),
                optional: c.optional.unwrap_or(false),
            });
        }
        if let Some(c) = &v.persistent_volume_claim {
            out.push(ObjRef {
                kind: RefKind::Pvc,
                name: c.claim_name.clone(),
                volume: vol.clone(),
                optional: false,
            });
        }
        if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(s) = &src.secret {
                    out.push(ObjRef {
                        kind: RefKind::Secret,
                        name: s.name.clone(),
                        volume: vol.clone(),
                        optional: s.optional.unwrap_or(false),
                    });
                }
                if let Some(c) = &src.config_map {
                    out.push(ObjRef {
                        kind: RefKind::ConfigMap,
                        name: c.name.clone(),
                        volume: vol.clone(),
                        optional: c.optional.unwrap_or(false),
                    });
                }
            }
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
                out.push(ObjRef {
                    kind: RefKind::Secret,
                    name: s.name.clone(),
                    volume: None,
                    optional: s.optional.unwrap_or(false),
                });
            }
            if let Some(s) = &from.config_map_key_ref {
                out.push(ObjRef {
                    kind: RefKind::ConfigMap,
                    name: s.name.clone(),
                    volume: None,
                    optional: s.optional.unwrap_or(false),
                });
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(s) = &e.secret_ref {
                out.push(ObjRef {
                    kind: RefKind::Secret,
                    name: s.name.clone(),
                    volume: None,
                    optional: s.optional.unwrap_or(false),
                });
            }
            if let Some(s) = &e.config_map_ref {
                out.push(ObjRef {
                    kind: RefKind::ConfigMap,
                    name: s.name.clone(),
                    volume: None,
                    optional: s.optional.unwrap_or(false),
                });
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
pub fn held(refs: &[ObjRef], lookup: &dyn Fn(&ObjRef) -> RefState) -> Option<Held> {
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
