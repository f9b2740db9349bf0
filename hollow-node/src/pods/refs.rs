//! The objects pods reference, as the kubelet needs them: Secrets and ConfigMaps with their key
//! names only (every value emptied on arrival), PersistentVolumeClaims with their phase; each
//! change requeues the pods waiting for one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::config::SecretRefs;
use crate::pod_status::{ObjRef, RefKind, RefState, has_key};
use crate::queue::Work;

/// Stores of the objects pods reference. Secrets and ConfigMaps are kept with their key names
/// only: every value is emptied before it reaches the store.
#[derive(Clone)]
pub struct RefStores {
    pub secrets: SecretStores,
    pub configmaps: Store<ConfigMap>,
    pub pvcs: Store<PersistentVolumeClaim>,
}

/// The Secrets `--secret-refs` asks to check: none, some namespaces', or all of them.
#[derive(Clone)]
pub enum SecretStores {
    Off,
    Namespaces(Arc<HashMap<String, Store<Secret>>>),
    Cluster(Store<Secret>),
}

impl SecretStores {
    /// What a pod in `namespace` finds for reference `r` to a Secret: present (with the key it
    /// names) always, where nothing is checked.
    fn state(&self, namespace: &str, r: &ObjRef) -> RefState {
        let key = ObjectRef::new(&r.name).within(namespace);
        let found = match self {
            SecretStores::Off => return RefState::Present,
            SecretStores::Namespaces(stores) => match stores.get(namespace) {
                None => return RefState::Present,
                Some(store) => store.get(&key),
            },
            SecretStores::Cluster(store) => store.get(&key),
        };
        match found {
            None => RefState::Missing,
            Some(secret) => {
                let data = |k: &str| secret.data.as_ref().is_some_and(|d| d.contains_key(k));
                key_state(r, &data, &|_| false)
            }
        }
    }

    /// Resolves once every store has been listed.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        match self {
            SecretStores::Off => Ok(()),
            SecretStores::Namespaces(stores) => {
                for store in stores.values() {
                    store.wait_until_ready().await?;
                }
                Ok(())
            }
            SecretStores::Cluster(store) => store.wait_until_ready().await,
        }
    }
}

impl RefStores {
    pub fn lookup(&self, namespace: &str, r: &ObjRef) -> RefState {
        match r.kind {
            RefKind::Secret => self.secrets.state(namespace, r),
            RefKind::ConfigMap => {
                match self
                    .configmaps
                    .get(&ObjectRef::new(&r.name).within(namespace))
                {
                    None => RefState::Missing,
                    Some(cm) => {
                        let data = |k: &str| cm.data.as_ref().is_some_and(|d| d.contains_key(k));
                        let binary =
                            |k: &str| cm.binary_data.as_ref().is_some_and(|d| d.contains_key(k));
                        key_state(r, &data, &binary)
                    }
                }
            }
            RefKind::Pvc => match self.pvcs.get(&ObjectRef::new(&r.name).within(namespace)) {
                None => RefState::Missing,
                Some(pvc) => match pvc.status.as_ref().and_then(|s| s.phase.as_deref()) {
                    Some("Bound") => RefState::Present,
                    other => RefState::NotBound(other.unwrap_or("Pending").to_string()),
                },
            },
        }
    }
}

fn key_state(r: &ObjRef, data: &dyn Fn(&str) -> bool, binary: &dyn Fn(&str) -> bool) -> RefState {
    if has_key(r, data, binary) {
        RefState::Present
    } else {
        RefState::MissingKey
    }
}

/// Empties every value of a Secret: only the key names stay in memory.
fn secret_keys_only(s: &mut Secret) {
    s.string_data = None;
    for v in s.data.iter_mut().flat_map(|d| d.values_mut()) {
        *v = k8s_openapi::ByteString(Vec::new());
    }
}

/// Empties every value of a ConfigMap: only the key names stay in memory.
fn configmap_keys_only(c: &mut ConfigMap) {
    for v in c.data.iter_mut().flat_map(|d| d.values_mut()) {
        *v = String::new();
    }
    for v in c.binary_data.iter_mut().flat_map(|d| d.values_mut()) {
        *v = k8s_openapi::ByteString(Vec::new());
    }
}

/// A reflector of `api` into a new store (managed fields dropped, then `strip` applied),
/// yielding `()` for each touched object.
fn reflect<K>(
    api: Api<K>,
    strip: fn(&mut K),
) -> (
    Store<K>,
    futures::stream::BoxStream<'static, Result<(), watcher::Error>>,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned,
    K: std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(move |m| {
            m.managed_fields_mut().clear();
            strip(m);
        })
        .reflect(writer)
        .touched_objects()
        .map(|r| r.map(|_| ()))
        .boxed();
    (store, stream)
}

/// Starts the reflectors for referenced objects; each change requeues the pods waiting for one.
/// Secrets are watched only as far as `config.secret_refs` asks: in a few namespaces, each with
/// its own namespaced watch (so a namespaced Role is enough), or cluster-wide, or not at all.
pub fn start_ref_reflectors(
    shared: &Arc<Shared>,
    health: &telemetry::Health,
    shutdown: &CancellationToken,
) -> (RefStores, Vec<tokio::task::JoinHandle<()>>) {
    let client = shared.client.clone();
    let mut streams = Vec::new();
    let secrets = match &shared.config.secret_refs {
        SecretRefs::Off => SecretStores::Off,
        SecretRefs::Cluster => {
            let (store, stream) = reflect(Api::<Secret>::all(client.clone()), secret_keys_only);
            streams.push(("secret watch", stream));
            SecretStores::Cluster(store)
        }
        SecretRefs::Namespaces(names) => {
            let mut stores = HashMap::new();
            let mut all = Vec::new();
            for ns in names {
                let (store, stream) = reflect(
                    Api::<Secret>::namespaced(client.clone(), ns),
                    secret_keys_only,
                );
                stores.insert(ns.clone(), store);
                all.push(stream);
            }
            streams.push(("secret watch", futures::stream::select_all(all).boxed()));
            SecretStores::Namespaces(Arc::new(stores))
        }
    };
    let (configmaps, stream) = reflect(Api::<ConfigMap>::all(client.clone()), configmap_keys_only);
    streams.push(("configmap watch", stream));
    let (pvcs, pvc_stream) = reflect(Api::<PersistentVolumeClaim>::all(client), |_| {});
    streams.push(("pvc watch", pvc_stream));
    let mut tasks = Vec::new();
    for (task, stream) in streams {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tasks.push(health.spawn_critical(task, shutdown.clone(), async move {
            let mut stream = stream;
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ev = stream.next() => match ev { Some(ev) => ev, None => return },
                };
                match ev {
                    Ok(()) => requeue_waiting(&shared),
                    Err(e) => tracing::warn!(error = %e, "reference watch error"),
                }
            }
        }));
    }
    (
        RefStores {
            secrets,
            configmaps,
            pvcs,
        },
        tasks,
    )
}

fn requeue_waiting(shared: &Shared) {
    let keys: Vec<Arc<str>> = match shared.pods.lock() {
        Ok(t) => t
            .pods
            .iter()
            .filter(|(_, e)| e.waiting_refs)
            .map(|(k, _)| k.clone())
            .collect(),
        Err(_) => return,
    };
    for k in keys {
        shared.queue().add(Work::Pod(k), Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn secret_ref(name: &str, key: Option<&str>, volume: bool) -> ObjRef {
        ObjRef {
            kind: RefKind::Secret,
            name: name.into(),
            volume: volume.then(|| "v".into()),
            key: key.map(str::to_string),
            optional: false,
        }
    }

    #[test]
    fn secrets_count_as_present_where_they_are_not_checked() {
        let (store, mut writer) = reflector::store::<Secret>();
        let mut creds = Secret {
            metadata: ObjectMeta {
                name: Some("creds".into()),
                namespace: Some("team-a".into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(b"s3cr3t".to_vec()),
            )])),
            ..Default::default()
        };
        secret_keys_only(&mut creds);
        writer.apply_watcher_event(&watcher::Event::Apply(creds));
        let off = SecretStores::Off;
        let some = SecretStores::Namespaces(Arc::new(HashMap::from([(
            "team-a".to_string(),
            store.clone(),
        )])));
        let all = SecretStores::Cluster(store.clone());
        use RefState::{Missing, MissingKey, Present};
        let cases: [(&str, &SecretStores, &str, ObjRef, RefState); 11] = [
            (
                "off: missing counts as present",
                &off,
                "team-a",
                secret_ref("nope", None, false),
                Present,
            ),
            (
                "off: a missing key too",
                &off,
                "team-a",
                secret_ref("nope", Some("x"), false),
                Present,
            ),
            (
                "namespaces: present",
                &some,
                "team-a",
                secret_ref("creds", None, false),
                Present,
            ),
            (
                "namespaces: missing",
                &some,
                "team-a",
                secret_ref("nope", None, false),
                Missing,
            ),
            (
                "namespaces: unchecked namespace",
                &some,
                "team-b",
                secret_ref("nope", None, false),
                Present,
            ),
            (
                "cluster: present",
                &all,
                "team-a",
                secret_ref("creds", None, false),
                Present,
            ),
            (
                "cluster: missing",
                &all,
                "team-a",
                secret_ref("nope", None, false),
                Missing,
            ),
            (
                "cluster: other namespace",
                &all,
                "team-b",
                secret_ref("creds", None, false),
                Missing,
            ),
            (
                "cluster: the key",
                &all,
                "team-a",
                secret_ref("creds", Some("token"), false),
                Present,
            ),
            (
                "cluster: a missing key",
                &all,
                "team-a",
                secret_ref("creds", Some("user"), true),
                MissingKey,
            ),
            (
                "off: present",
                &off,
                "team-a",
                secret_ref("creds", None, false),
                Present,
            ),
        ];
        for (name, stores, ns, r, want) in cases {
            assert_eq!(stores.state(ns, &r), want, "{name}");
        }
        // Key names only: the value never reaches the store.
        let kept = store
            .get(&ObjectRef::new("creds").within("team-a"))
            .expect("stored");
        let values: Vec<&ByteString> = kept.data.iter().flat_map(|d| d.values()).collect();
        assert_eq!(values, vec![&ByteString(Vec::new())]);
    }

    #[test]
    fn configmaps_keep_key_names_only() {
        let mut cm = ConfigMap {
            data: Some(BTreeMap::from([("a".to_string(), "value".to_string())])),
            binary_data: Some(BTreeMap::from([("b".to_string(), ByteString(vec![1, 2]))])),
            ..Default::default()
        };
        configmap_keys_only(&mut cm);
        assert_eq!(
            cm.data,
            Some(BTreeMap::from([("a".to_string(), String::new())]))
        );
        assert_eq!(
            cm.binary_data,
            Some(BTreeMap::from([("b".to_string(), ByteString(Vec::new()))]))
        );
    }
}
