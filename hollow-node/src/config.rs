//! The validated configuration of one hollow-node process, kept apart from the flags so tests
//! build it directly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

use crate::faults::FaultSchedule;
use crate::ipam::Cidr;
use crate::lease::LeaseTiming;
use crate::node_pressure::Pressures;
use crate::node_status::NodeTemplate;
use crate::pod_status::PodSettings;

#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    /// Nodes are named `<prefix>-<i>` for i in 0..nodes.
    pub prefix: String,
    pub nodes: usize,
    /// The node numbers this process runs, when it runs a share of a pool that other replicas
    /// share: node `i` of this process is `<prefix>-<numbers[i]>`, with that number's podCIDR
    /// block. `None`: `0..nodes`.
    pub numbers: Option<Vec<u32>>,
    /// This replica among those sharing a pool (`--pool`): `$POD_NAME`, else the hostname.
    pub replica: String,
    /// Where the replicas sharing a pool keep their membership Leases (`$POD_NAMESPACE`).
    pub pool_namespace: String,
    /// Offsets this process's node podCIDR blocks (the StatefulSet ordinal).
    pub replica_index: u64,
    pub listen: SocketAddr,
    pub template: NodeTemplate,
    pub cluster_cidr: Cidr,
    pub node_cidr_mask: u8,
    pub lease: LeaseTiming,
    pub node_status_refresh: Duration,
    pub faults: FaultSchedule,
    /// The schedule's unhealthy windows put these pressures on a Ready node instead of making
    /// it NotReady (`--fault-condition`).
    pub fault_pressure: Option<Pressures>,
    pub pods: PodSettings,
    pub qps: f64,
    pub burst: u32,
    pub workers: usize,
    pub lease_encoding: crate::lease::LeaseEncoding,
    pub lease_transport: crate::client::LeaseTransport,
    /// The Lease lane's own request budget and slots (its own client, never shared).
    pub lease_qps: f64,
    pub lease_burst: u32,
    pub lease_workers: usize,
    /// Node and pod work give up most of their slots while renewals are behind (opt-in).
    pub yield_to_leases: bool,
    pub delete_nodes_on_exit: bool,
    /// Where the Secrets that pods reference are checked, and so what Secret access it needs.
    pub secret_refs: SecretRefs,
    /// The kubelet API (logs, exec answers); off unless a listen address is set.
    pub kubelet: crate::kubelet::KubeletApi,
    /// `metrics.k8s.io` for `kubectl top` and the HPA; off unless a listen address is set.
    pub metrics_api: crate::metrics_api::MetricsApi,
}

/// Where the hollow node checks that the Secrets a pod references exist. Each choice needs
/// exactly the Secret access it names, and nothing else reads Secrets (metadata only: a
/// Secret's data is never asked for).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecretRefs {
    /// Not checked: every referenced Secret counts as present. Needs no Secret access.
    #[default]
    Off,
    /// Checked in these namespaces (one watch each); elsewhere as `Off`. Needs list and watch
    /// of Secrets in these namespaces only.
    Namespaces(BTreeSet<String>),
    /// Checked everywhere with one cluster-wide watch. Needs list and watch of every Secret.
    Cluster,
}

impl SecretRefs {
    /// `--secret-refs` (`off`, `namespaces` or `cluster`) with `--secret-namespaces`, which
    /// `namespaces` needs and the others refuse, so a list is never silently ignored.
    pub fn parse(mode: &str, namespaces: &str) -> Result<Self, ConfigError> {
        let list: BTreeSet<String> = namespaces
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        if let Some(bad) = list.iter().find(|n| !is_dns_label(n)) {
            return Err(invalid(
                "secret-namespaces",
                bad.as_str(),
                "not a namespace name (a lowercase DNS label)",
            ));
        }
        match (mode, list.is_empty()) {
            ("namespaces", false) => Ok(SecretRefs::Namespaces(list)),
            ("namespaces", true) => Err(invalid(
                "secret-namespaces",
                namespaces,
                "--secret-refs=namespaces needs at least one namespace",
            )),
            ("off" | "cluster", false) => Err(invalid(
                "secret-namespaces",
                namespaces,
                format!("only used with --secret-refs=namespaces, not {mode}"),
            )),
            ("off", true) => Ok(SecretRefs::Off),
            ("cluster", true) => Ok(SecretRefs::Cluster),
            _ => Err(invalid(
                "secret-refs",
                mode,
                "must be off, namespaces or cluster",
            )),
        }
    }
}

/// A namespace name: 1-63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}={value:?}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

pub(crate) fn invalid(
    flag: &'static str,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.into(),
        reason: reason.into(),
    }
}

/// The most API requests per second a process may be set to make.
pub const MAX_QPS: f64 = 100_000.0;

/// Parses `k=v,k2=v2`.
pub fn parse_map(flag: &'static str, s: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| invalid(flag, item, "expected key=value"))?;
        if k.trim().is_empty() {
            return Err(invalid(flag, item, "empty key"));
        }
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Parses taints `key=value:Effect` or `key:Effect`, comma separated.
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (kv, effect) = item
            .rsplit_once(':')
            .ok_or_else(|| invalid("taints", item, "expected key[=value]:Effect"))?;
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return Err(invalid(
                "taints",
                item,
                "effect must be NoSchedule, PreferNoSchedule or NoExecute",
            ));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (kv.to_string(), None),
        };
        if key.is_empty() {
            return Err(invalid("taints", item, "empty key"));
        }
        out.push(Taint {
            key,
            value,
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(out)
}

/// A node's capacity when neither the flags nor a pool say otherwise.
pub fn default_capacity() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cpu".to_string(), "4".to_string()),
        ("memory".to_string(), "16Gi".to_string()),
        ("pods".to_string(), "110".to_string()),
        ("ephemeral-storage".to_string(), "100Gi".to_string()),
    ])
}

/// The StatefulSet ordinal at the end of a prefix (`hollow-node-3` → 3), else 0.
pub fn ordinal(prefix: &str) -> u64 {
    prefix
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

impl Config {
    /// A configuration for `nodes` nodes named `<prefix>-<i>` with the defaults of the flags.
    pub fn new(prefix: &str, nodes: usize) -> Self {
        let capacity = default_capacity();
        Config {
            kubeconfig: None,
            prefix: prefix.to_string(),
            nodes,
            numbers: None,
            replica: prefix.to_string(),
            pool_namespace: "default".into(),
            replica_index: ordinal(prefix),
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            template: NodeTemplate {
                allocatable: capacity.clone(),
                capacity,
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                taints: Vec::new(),
                // Empty: the apiserver's version, read at start.
                kubelet_version: String::new(),
                os: "linux".into(),
                arch: "amd64".into(),
                internal_ip: "127.0.0.1".into(),
                kubelet_port: 10250,
                kubelet_port_per_node: false,
                instance_type: "hollow".into(),
                owner: prefix.to_string(),
                spoofed: true,
            },
            cluster_cidr: Cidr {
                base: std::net::Ipv4Addr::new(10, 128, 0, 0),
                prefix: 9,
            },
            node_cidr_mask: 24,
            lease: LeaseTiming::default(),
            node_status_refresh: Duration::from_secs(300),
            faults: FaultSchedule::default(),
            fault_pressure: None,
            pods: PodSettings::default(),
            qps: 0.0,
            burst: 0,
            workers: 0,
            lease_encoding: crate::lease::LeaseEncoding::default(),
            lease_transport: crate::client::LeaseTransport::default(),
            lease_qps: 0.0,
            lease_burst: 0,
            lease_workers: 0,
            yield_to_leases: false,
            delete_nodes_on_exit: false,
            secret_refs: SecretRefs::Off,
            kubelet: crate::kubelet::KubeletApi::default(),
            metrics_api: crate::metrics_api::MetricsApi::default(),
        }
    }

    /// The kubelet port of each node and what each listening port answers for.
    pub fn kubelet_endpoints(&self) -> Result<crate::kubelet::endpoints::Endpoints, ConfigError> {
        let t = &self.template;
        crate::kubelet::endpoints::Endpoints::new(
            t.kubelet_port,
            self.nodes,
            t.kubelet_port_per_node,
        )
        .map_err(|e| invalid("kubelet-port", t.kubelet_port.to_string(), e.to_string()))
    }

    /// Checks what the types cannot and fills in the automatic values.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if let Some(numbers) = &self.numbers
            && numbers.len() != self.nodes
        {
            return Err(invalid(
                "nodes",
                self.nodes.to_string(),
                format!("the pool share names {} nodes", numbers.len()),
            ));
        }
        if self.prefix.is_empty()
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(invalid(
                "node-prefix",
                &self.prefix,
                "must be a lowercase DNS name",
            ));
        }
        if self.node_cidr_mask < self.cluster_cidr.prefix || self.node_cidr_mask > 30 {
            return Err(invalid(
                "node-cidr-mask",
                self.node_cidr_mask.to_string(),
                format!(
                    "must be between the cluster CIDR's /{} and /30",
                    self.cluster_cidr.prefix
                ),
            ));
        }
        let blocks = 1u64 << (self.node_cidr_mask - self.cluster_cidr.prefix);
        // Checked: the replica index comes from a flag or a host name ending in any number.
        let last = self
            .replica_index
            .checked_add(1)
            .and_then(|r| r.checked_mul(self.nodes as u64))
            .unwrap_or(u64::MAX);
        if last > blocks {
            return Err(invalid(
                "cluster-cidr",
                self.cluster_cidr.to_string(),
                format!(
                    "holds {blocks} /{} blocks; replica {} with {} nodes needs {last}",
                    self.node_cidr_mask, self.replica_index, self.nodes
                ),
            ));
        }
        if self.lease.renew_interval >= self.lease.duration || self.lease.renew_interval.is_zero() {
            return Err(invalid(
                "lease-renew-interval",
                format!("{:?}", self.lease.renew_interval),
                "must be positive and shorter than the lease duration",
            ));
        }
        self.kubelet_endpoints()?;
        if self
            .template
            .internal_ip
            .parse::<std::net::IpAddr>()
            .is_err()
        {
            return Err(invalid(
                "internal-ip",
                &self.template.internal_ip,
                "not an IP address",
            ));
        }
        for (flag, v) in [
            ("kube-api-qps", self.qps),
            ("lease-api-qps", self.lease_qps),
        ] {
            if !v.is_finite() || v > MAX_QPS {
                return Err(invalid(
                    flag,
                    v.to_string(),
                    format!("must be a number from 0 to {MAX_QPS}"),
                ));
            }
        }
        if self.qps <= 0.0 {
            // Node status and pods; renewals have their own budget below.
            self.qps = (self.nodes as f64 / 2.0 + 50.0).min(MAX_QPS);
        }
        if self.lease_qps <= 0.0 {
            // One renewal per node per interval, twice over: retries and jitter bunch them,
            // and a lane that fell behind (a stalled apiserver) must be able to catch up.
            self.lease_qps = (2.0 * self.nodes as f64 / self.lease.renew_interval.as_secs_f64()
                + 10.0)
                .min(MAX_QPS);
        }
        if self.lease_burst == 0 {
            // A quarter of the nodes at once: what a few seconds' stall leaves due together.
            self.lease_burst = (self.nodes / 4).max(10) as u32;
        }
        if self.lease_workers == 0 {
            // Renewals in flight at once: nodes/interval renewals a second (500 at 5,000 nodes)
            // at up to a second of apiserver latency in a storm. Twice that (1,000 at 5,000
            // nodes) gave 13.3 and 44.4 s of Lease lateness in two storms against 19.2 s, and
            // 40-60 MB more memory: not worth it (hollow-node README, numbers).
            self.lease_workers = (self.nodes / 10).clamp(8, 512);
        }
        if self.burst == 0 {
            // At most 2 × MAX_QPS: far inside u32.
            self.burst = (self.qps * 2.0).ceil() as u32;
        }
        if self.workers == 0 {
            // Requests in flight at once. When the apiserver is saturated each write waits
            // there for up to seconds, and a pod's latency is its wait for a free slot plus
            // that: a slot per four nodes kept the queue wait near zero at 2,000 nodes while
            // 20,000 pods were created at once (benches/scale.rs).
            self.workers = (self.nodes / 4).clamp(64, 1024);
        }
        Ok(self)
    }

    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{}", self.prefix, self.node_number(i))
    }

    /// The number of this process's node `i`: its name's suffix and its podCIDR block.
    pub fn node_number(&self, i: usize) -> u64 {
        match &self.numbers {
            Some(n) => n.get(i).map_or(u64::MAX, |n| u64::from(*n)),
            None => i as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_taints() {
        assert_eq!(
            parse_map("labels", "a=1, b=2").expect("map"),
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert!(parse_map("labels", "a").is_err());
        let t = parse_taints("k=v:NoSchedule,gpu:NoExecute").expect("taints");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].value.as_deref(), Some("v"));
        assert_eq!(t[1].key, "gpu");
        assert!(parse_taints("k=v:Sometimes").is_err());
    }

    #[test]
    fn validation() {
        let cases: Vec<(&str, Config, Option<&str>)> = vec![
            ("defaults", Config::new("hollow-node-3", 100), None),
            (
                "bad prefix",
                Config::new("Hollow_Node", 1),
                Some("node-prefix"),
            ),
            (
                "too many nodes for the cluster cidr",
                Config {
                    cluster_cidr: Cidr::parse("10.0.0.0/16").expect("cidr"),
                    ..Config::new("hn", 300)
                },
                Some("cluster-cidr"),
            ),
            (
                "infinite qps",
                Config {
                    lease_qps: f64::INFINITY,
                    ..Config::new("hn", 1)
                },
                Some("lease-api-qps"),
            ),
            (
                "NaN qps",
                Config {
                    qps: f64::NAN,
                    ..Config::new("hn", 1)
                },
                Some("kube-api-qps"),
            ),
            (
                "bad ip",
                Config {
                    template: NodeTemplate {
                        internal_ip: "x".into(),
                        ..Config::new("hn", 1).template
                    },
                    ..Config::new("hn", 1)
                },
                Some("internal-ip"),
            ),
        ];
        for (name, cfg, want) in cases {
            match (cfg.validate(), want) {
                (Ok(c), None) => {
                    assert!(c.qps > 0.0 && c.burst > 0, "{name}: auto qps");
                }
                (Err(e), Some(flag)) => assert!(e.to_string().contains(flag), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want error {want:?}"),
            }
        }
        // Automatic slots follow the node count within bounds; an explicit count is kept.
        for (nodes, workers, want) in [(100, 0, 64), (2000, 0, 500), (10_000, 0, 1024), (100, 8, 8)]
        {
            let c = Config {
                workers,
                ..Config::new("hn", nodes)
            }
            .validate()
            .expect("valid");
            assert_eq!(c.workers, want, "{nodes} nodes, --workers {workers}");
        }
        // The Lease lane: twice the renewal rate, a quarter of the nodes as burst, a slot per
        // ten nodes from 8 to 512.
        for (nodes, qps, burst, workers) in [
            (10, 12.0, 10, 8),
            (100, 30.0, 25, 10),
            (5000, 1010.0, 1250, 500),
            (20000, 4010.0, 5000, 512),
        ] {
            let c = Config::new("hn", nodes).validate().expect("valid");
            assert_eq!(
                (c.lease_qps, c.lease_burst, c.lease_workers),
                (qps, burst, workers),
                "{nodes} nodes"
            );
        }
        assert_eq!(ordinal("hollow-node-3"), 3);
        assert_eq!(ordinal("host"), 0);
    }

    #[test]
    fn secret_refs_modes() {
        let ns =
            |names: &[&str]| SecretRefs::Namespaces(names.iter().map(|n| n.to_string()).collect());
        let cases: Vec<(&str, &str, &str, Result<SecretRefs, &str>)> = vec![
            ("off", "off", "", Ok(SecretRefs::Off)),
            ("cluster", "cluster", "", Ok(SecretRefs::Cluster)),
            ("one namespace", "namespaces", "team-a", Ok(ns(&["team-a"]))),
            (
                "list, spaces, dup",
                "namespaces",
                " b, a ,b,",
                Ok(ns(&["a", "b"])),
            ),
            (
                "namespaces without a list",
                "namespaces",
                " , ",
                Err("needs at least one"),
            ),
            ("list with off", "off", "a", Err("only used with")),
            ("list with cluster", "cluster", "a", Err("only used with")),
            (
                "unknown mode",
                "some",
                "",
                Err("must be off, namespaces or cluster"),
            ),
            (
                "uppercase",
                "namespaces",
                "Team",
                Err("not a namespace name"),
            ),
            (
                "leading dash",
                "namespaces",
                "-a",
                Err("not a namespace name"),
            ),
            ("dot", "namespaces", "a.b", Err("not a namespace name")),
        ];
        for (name, mode, list, want) in cases {
            match (SecretRefs::parse(mode, list), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
                (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(
            Config::new("hn", 1).secret_refs,
            SecretRefs::Off,
            "least access by default"
        );
    }

    proptest::proptest! {
        #[test]
        fn secret_namespaces_never_panic_and_keep_only_names(list in ".{0,80}") {
            if let Ok(SecretRefs::Namespaces(set)) = SecretRefs::parse("namespaces", &list) {
                proptest::prop_assert!(!set.is_empty());
                for n in set {
                    proptest::prop_assert!(is_dns_label(&n), "{:?}", n);
                }
            }
        }

        #[test]
        fn valid_names_round_trip(names in proptest::collection::btree_set("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..5)) {
            let joined = names.iter().cloned().collect::<Vec<_>>().join(",");
            proptest::prop_assert_eq!(
                SecretRefs::parse("namespaces", &joined).ok(),
                Some(SecretRefs::Namespaces(names))
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Keys and values that survive the `k=v,` syntax: no separators, no edge spaces.
        fn word() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9./_-]{1,12}"
        }

        proptest! {
            #[test]
            fn parsers_never_panic(s in "\\PC{0,60}") {
                if let Ok(map) = parse_map("labels", &s) {
                    prop_assert!(map.keys().all(|k| !k.is_empty()));
                }
                if let Ok(taints) = parse_taints(&s) {
                    for t in taints {
                        prop_assert!(!t.key.is_empty());
                        prop_assert!(["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()));
                    }
                }
            }

            #[test]
            fn maps_round_trip(map in proptest::collection::btree_map(word(), "[a-zA-Z0-9./_-]{0,12}", 0..6)) {
                let text: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
                prop_assert_eq!(parse_map("labels", &text.join(",")).expect("parses"), map);
            }

            #[test]
            fn taints_round_trip(
                taints in proptest::collection::vec(
                    (word(), proptest::option::of(word()), prop_oneof![Just("NoSchedule"), Just("PreferNoSchedule"), Just("NoExecute")]),
                    0..5,
                )
            ) {
                let text: Vec<String> = taints
                    .iter()
                    .map(|(k, v, e)| match v {
                        Some(v) => format!("{k}={v}:{e}"),
                        None => format!("{k}:{e}"),
                    })
                    .collect();
                let got = parse_taints(&text.join(",")).expect("parses");
                let got: Vec<_> = got.into_iter().map(|t| (t.key, t.value, t.effect)).collect();
                let want: Vec<_> = taints
                    .into_iter()
                    .map(|(k, v, e)| (k, v, e.to_owned()))
                    .collect();
                prop_assert_eq!(got, want);
            }

            #[test]
            fn validate_never_panics_and_bounds_what_it_fills_in(
                prefix in prop_oneof!["[a-z0-9.-]{1,20}", "hollow-node-[0-9]{1,22}"],
                nodes in prop_oneof![0usize..3000, any::<usize>()],
                replica in proptest::option::of(prop_oneof![0u64..8, any::<u64>()]),
                cluster_prefix in 0u8..=32,
                node_mask in any::<u8>(),
                qps in prop_oneof![any::<f64>(), 0.0..1000.0],
                burst in any::<u32>(),
                workers in prop_oneof![Just(0usize), any::<usize>()],
            ) {
                let mut c = Config::new(&prefix, nodes);
                // Else the ordinal Config::new read from the prefix, which may be any number.
                if let Some(r) = replica {
                    c.replica_index = r;
                }
                c.cluster_cidr = Cidr { base: std::net::Ipv4Addr::new(0, 0, 0, 0), prefix: cluster_prefix };
                c.node_cidr_mask = node_mask;
                c.qps = qps;
                c.burst = burst;
                c.workers = workers;
                if let Ok(c) = c.validate() {
                    prop_assert!(c.qps > 0.0 && c.qps <= MAX_QPS);
                    prop_assert!(c.burst > 0);
                    prop_assert!(c.workers > 0);
                    prop_assert!(c.node_cidr_mask <= 30);
                    // Every node's block exists.
                    let last = (c.replica_index + 1).checked_mul(c.nodes as u64);
                    prop_assert!(last.is_some_and(|l| l <= 1u64 << (c.node_cidr_mask - c.cluster_cidr.prefix)));
                }
            }
        }
    }
}
