//! What the extender knows about namespaces and nodes, fed by kube-runtime metadata watchers.
//!
//! We keep a tiny derived index instead of a reflector `Store` of whole objects: per node one
//! `NodeKind`, per namespace its compiled policy. A filter call for 5,000 nodes then costs 5,000
//! hash lookups under one read lock and no allocation. Relists (`Init` … `InitDone`) drop what
//! was not listed again, like a reflector does; reconnects and backoff come from the runtime.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher::watcher};
use kube::{Client, ResourceExt};
use telemetry::Readiness;
use tokio_util::sync::CancellationToken;

use crate::rules::{
    Exclusions, NamespacePolicy, NodeKind, SPOOFED, SPOOFED_EXCLUDED_PODS, is_spoofed_value,
};
use placement::CompiledExclusions;

/// FNV-1a: node names are short and come from the cluster, not from an attacker; SipHash's
/// DoS resistance would cost a third of a 5,000-node filter call.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Node name → kind.
pub type NodeIndex = HashMap<String, NodeKind, std::hash::BuildHasherDefault<Fnv>>;

#[derive(Debug)]
struct NamespaceEntry {
    /// The raw `spoofed_excluded_pods` value, to recompile only when it changes.
    excluded: String,
    policy: Arc<NamespacePolicy>,
}

/// The shared index. Built directly in tests; fed by [`run_watchers`] in the service.
#[derive(Debug, Default)]
pub struct Cache {
    namespaces: RwLock<HashMap<String, NamespaceEntry>>,
    nodes: RwLock<NodeIndex>,
    compiled: CompiledExclusions,
    namespaces_synced: AtomicBool,
    nodes_synced: AtomicBool,
    ready: Readiness,
}

impl Cache {
    pub fn new(ready: Readiness) -> Self {
        Cache {
            ready,
            ..Default::default()
        }
    }

    /// Adds or updates a namespace. Returns the compiled `spoofed_excluded_pods` value when it
    /// changed (so the caller can report its problems), nothing otherwise.
    pub fn apply_namespace(
        &self,
        name: &str,
        spoofed: Option<&str>,
        excluded: Option<&str>,
    ) -> Option<Arc<Exclusions>> {
        let spoofed = is_spoofed_value(spoofed);
        let excluded = excluded.unwrap_or("");
        let mut namespaces = write(&self.namespaces);
        if let Some(entry) = namespaces.get_mut(name)
            && entry.excluded == excluded
        {
            if entry.policy.spoofed != spoofed {
                entry.policy = Arc::new(NamespacePolicy {
                    spoofed,
                    exclusions: entry.policy.exclusions.clone(),
                });
            }
            return None;
        }
        let exclusions = self.compiled.get(excluded);
        namespaces.insert(
            name.to_owned(),
            NamespaceEntry {
                excluded: excluded.to_owned(),
                policy: Arc::new(NamespacePolicy {
                    spoofed,
                    exclusions: exclusions.clone(),
                }),
            },
        );
        Some(exclusions)
    }

    pub fn delete_namespace(&self, name: &str) {
        write(&self.namespaces).remove(name);
    }

    /// After a relist: forget namespaces that were not listed again.
    pub fn retain_namespaces(&self, listed: &HashSet<String>) {
        write(&self.namespaces).retain(|k, _| listed.contains(k));
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<NamespacePolicy>> {
        read(&self.namespaces).get(name).map(|e| e.policy.clone())
    }

    pub fn apply_node(&self, name: &str, spoofed: Option<&str>) {
        let kind = NodeKind::from_annotation(spoofed);
        let mut nodes = write(&self.nodes);
        match nodes.get_mut(name) {
            Some(k) => *k = kind,
            None => {
                nodes.insert(name.to_owned(), kind);
            }
        }
    }

    pub fn delete_node(&self, name: &str) {
        write(&self.nodes).remove(name);
    }

    /// After a relist: forget nodes that were not listed again.
    pub fn retain_nodes(&self, listed: &HashSet<String>) {
        write(&self.nodes).retain(|k, _| listed.contains(k));
    }

    /// The node index under one read lock, for a whole request.
    pub fn nodes(&self) -> RwLockReadGuard<'_, NodeIndex> {
        read(&self.nodes)
    }

    pub fn set_namespaces_synced(&self) {
        self.namespaces_synced.store(true, Ordering::Release);
        self.update_ready();
    }

    pub fn set_nodes_synced(&self) {
        self.nodes_synced.store(true, Ordering::Release);
        self.update_ready();
    }

    fn update_ready(&self) {
        self.ready.set(self.is_synced());
    }

    pub fn is_synced(&self) -> bool {
        self.namespaces_synced.load(Ordering::Acquire) && self.nodes_synced.load(Ordering::Acquire)
    }

    /// Which caches have not synced yet, for the retryable error.
    pub fn unsynced(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.namespaces_synced.load(Ordering::Acquire) {
            out.push("namespaces");
        }
        if !self.nodes_synced.load(Ordering::Acquire) {
            out.push("nodes");
        }
        out
    }
}

// A poisoned lock only means another request panicked mid-read; the maps stay consistent
// because every write is a single insert/remove/retain.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// The name under which we report Events.
pub const REPORTER: &str = "mock-kind-scheduler";

/// Watches namespaces and nodes (metadata only) into `cache` until `shutdown`.
pub async fn run_watchers(client: Client, cache: Arc<Cache>, shutdown: CancellationToken) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: REPORTER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        },
    );
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = watch_namespaces(client.clone(), cache.clone(), recorder) => {}
        _ = watch_nodes(client, cache) => {}
    }
}

async fn watch_namespaces(client: Client, cache: Arc<Cache>, recorder: Recorder) {
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed: Option<HashSet<String>> = None;
    // (namespace, entry) pairs already logged and reported: once each.
    let mut warned: HashSet<(String, String)> = HashSet::new();
    while let Some(event) = stream.next().await {
        let obj = match event {
            Ok(Event::Init) => {
                listed = Some(HashSet::new());
                continue;
            }
            Ok(Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    cache.retain_namespaces(&listed);
                }
                cache.set_namespaces_synced();
                tracing::info!(
                    count = read(&cache.namespaces).len(),
                    "namespace cache synced"
                );
                continue;
            }
            Ok(Event::Delete(obj)) => {
                cache.delete_namespace(&obj.name_any());
                continue;
            }
            Ok(Event::Apply(obj)) => obj,
            Ok(Event::InitApply(obj)) => {
                if let Some(listed) = listed.as_mut() {
                    listed.insert(obj.name_any());
                }
                obj
            }
            Err(e) => {
                tracing::warn!(error = %e, "namespace watch failed; the runtime retries with backoff");
                continue;
            }
        };
        let name = obj.name_any();
        let annotations = obj.annotations();
        let Some(compiled) = cache.apply_namespace(
            &name,
            annotations.get(SPOOFED).map(String::as_str),
            annotations.get(SPOOFED_EXCLUDED_PODS).map(String::as_str),
        ) else {
            continue;
        };
        let mut problems = Vec::new();
        if let Some(why) = compiled.ignored() {
            tracing::warn!(
                namespace = %name,
                reason = %why,
                "spoofed_excluded_pods is out of bounds; ignored as if absent"
            );
            problems.push((
                why.to_owned(),
                "ExcludedPodsIgnored",
                format!(
                    "{SPOOFED_EXCLUDED_PODS} of namespace {name} is ignored, as if absent: {why}"
                ),
            ));
        }
        for bad in compiled.invalid() {
            tracing::warn!(
                namespace = %name,
                entry = %bad.entry,
                error = %bad.error,
                "spoofed_excluded_pods entry is not a valid regular expression; it matches by equality only"
            );
            problems.push((
                bad.entry.clone(),
                "InvalidExcludedPodPattern",
                format!(
                    "{SPOOFED_EXCLUDED_PODS} entry \"{}\" of namespace {name} is not a valid regular expression ({}); it matches only a pod named exactly \"{}\"",
                    bad.entry, bad.error, bad.entry
                ),
            ));
        }
        for (key, reason, note) in problems {
            if !warned.insert((name.clone(), key)) {
                continue;
            }
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Namespace".into()),
                name: Some(name.clone()),
                // The event lives in the namespace it is about, where its users look.
                namespace: Some(name.clone()),
                uid: obj.metadata.uid.clone(),
                ..Default::default()
            };
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(truncate(note, 1000)),
                action: "CompileExcludedPods".into(),
                secondary: None,
            };
            let recorder = recorder.clone();
            let ns = name.clone();
            tokio::spawn(async move {
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::warn!(namespace = %ns, error = %e, "could not publish the Warning event");
                }
            });
        }
    }
}

/// Event notes are limited to 1 kB.
fn truncate(mut s: String, max: usize) -> String {
    let cut = telemetry::char_prefix(&s, max).len();
    s.truncate(cut);
    s
}

async fn watch_nodes(client: Client, cache: Arc<Cache>) {
    let api: Api<PartialObjectMeta<Node>> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(obj)) => {
                let name = obj.name_any();
                cache.apply_node(&name, obj.annotations().get(SPOOFED).map(String::as_str));
                if let Some(listed) = listed.as_mut() {
                    listed.insert(name);
                }
            }
            Ok(Event::Apply(obj)) => {
                cache.apply_node(
                    &obj.name_any(),
                    obj.annotations().get(SPOOFED).map(String::as_str),
                );
            }
            Ok(Event::Delete(obj)) => cache.delete_node(&obj.name_any()),
            Ok(Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    cache.retain_nodes(&listed);
                }
                cache.set_nodes_synced();
                tracing::info!(count = cache.nodes().len(), "node cache synced");
            }
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; the runtime retries with backoff")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_updates_recompile_only_on_change() {
        let cache = Cache::default();
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            &'a [&'a str],
            bool,
            Option<&'a str>,
        );
        let cases: [Case<'_>; 5] = [
            (
                "first sight reports invalid",
                Some("true"),
                Some("a(b,web"),
                &["a(b"],
                true,
                Some("web-1"),
            ),
            (
                "same value reports nothing",
                Some("true"),
                Some("a(b,web"),
                &[],
                true,
                Some("web-1"),
            ),
            (
                "spoofed flips, exclusions kept",
                Some("no"),
                Some("a(b,web"),
                &[],
                false,
                Some("web-1"),
            ),
            (
                "new value compiles",
                Some("true"),
                Some("db"),
                &[],
                true,
                None,
            ),
            ("annotation removed", Some("true"), None, &[], true, None),
        ];
        for (name, spoofed, excluded, want_invalid, want_spoofed, want_match) in cases {
            let compiled = cache.apply_namespace("team-a", spoofed, excluded);
            let got: Vec<&str> = compiled
                .iter()
                .flat_map(|c| c.invalid())
                .map(|i| i.entry.as_str())
                .collect();
            assert_eq!(got, want_invalid, "{name}");
            let policy = cache.namespace("team-a").expect(name);
            assert_eq!(policy.spoofed, want_spoofed, "{name}");
            assert_eq!(
                policy.exclusions.matching("web-1"),
                want_match.map(|_| "web"),
                "{name}"
            );
        }
    }

    #[test]
    fn compiled_values_are_shared() {
        let cache = Cache::default();
        cache.apply_namespace("a", Some("true"), Some("x,y"));
        cache.apply_namespace("b", Some("true"), Some("x,y"));
        let (a, b) = (cache.namespace("a"), cache.namespace("b"));
        let (a, b) = (a.expect("a"), b.expect("b"));
        assert!(Arc::ptr_eq(&a.exclusions, &b.exclusions));
    }

    #[test]
    fn readiness_needs_both_caches() {
        let ready = Readiness::default();
        let cache = Cache::new(ready.clone());
        assert!(!ready.is_ready());
        assert_eq!(cache.unsynced(), ["namespaces", "nodes"]);
        cache.set_nodes_synced();
        assert!(!ready.is_ready());
        assert_eq!(cache.unsynced(), ["namespaces"]);
        cache.set_namespaces_synced();
        assert!(ready.is_ready() && cache.is_synced());
    }

    #[test]
    fn relist_forgets_unlisted_objects() {
        let cache = Cache::default();
        cache.apply_node("n1", None);
        cache.apply_node("h1", Some("true"));
        cache.apply_namespace("gone", None, None);
        cache.apply_namespace("kept", None, None);
        cache.retain_nodes(&HashSet::from(["h1".to_owned()]));
        cache.retain_namespaces(&HashSet::from(["kept".to_owned()]));
        assert_eq!(cache.nodes().get("h1"), Some(&NodeKind::Spoofed));
        assert_eq!(cache.nodes().get("n1"), None);
        assert!(cache.namespace("gone").is_none() && cache.namespace("kept").is_some());
    }
}
