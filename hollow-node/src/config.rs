//! The validated configuration of one hollow-node process, kept apart from the flags so tests
//! build it directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

use crate::faults::FaultSchedule;
use crate::ipam::Cidr;
use crate::lease::LeaseTiming;
use crate::node_status::NodeTemplate;
use crate::pod_status::PodSettings;

#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    /// Nodes are named `<prefix>-<i>` for i in 0..nodes.
    pub prefix: String,
    pub nodes: usize,
    /// Offsets this process's node podCIDR blocks (the StatefulSet ordinal).
    pub replica_index: u64,
    pub listen: SocketAddr,
    pub template: NodeTemplate,
    pub cluster_cidr: Cidr,
    pub node_cidr_mask: u8,
    pub lease: LeaseTiming,
    pub node_status_refresh: Duration,
    pub faults: FaultSchedule,
    pub pods: PodSettings,
    pub qps: f64,
    pub burst: u32,
    pub workers: usize,
    /// The Lease lane's own request budget and slots (its own client, never shared).
    pub lease_qps: f64,
    pub lease_burst: u32,
    pub lease_workers: usize,
    pub delete_nodes_on_exit: bool,
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

fn invalid(flag: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.into(),
        reason: reason.into(),
    }
}

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
        let capacity = BTreeMap::from([
            ("cpu".to_string(), "4".to_string()),
            ("memory".to_string(), "16Gi".to_string()),
            ("pods".to_string(), "110".to_string()),
            ("ephemeral-storage".to_string(), "100Gi".to_string()),
        ]);
        Config {
            kubeconfig: None,
            prefix: prefix.to_string(),
            nodes,
            replica_index: ordinal(prefix),
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            template: NodeTemplate {
                allocatable: capacity.clone(),
                capacity,
                labels: BTreeMap::new(),
                taints: Vec::new(),
                kubelet_version: "v1.20.2".into(),
                internal_ip: "127.0.0.1".into(),
                kubelet_port: 10250,
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
            pods: PodSettings::default(),
            qps: 0.0,
            burst: 0,
            workers: 0,
            lease_qps: 0.0,
            lease_burst: 0,
            lease_workers: 0,
            delete_nodes_on_exit: false,
        }
    }

    /// Checks what the types cannot and fills in the automatic values.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
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
        let last = (self.replica_index + 1) * self.nodes as u64;
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
            if !v.is_finite() {
                return Err(invalid(flag, v.to_string(), "must be a finite number"));
            }
        }
        if self.qps <= 0.0 {
            // Node status and pods; renewals have their own budget below.
            self.qps = self.nodes as f64 / 2.0 + 50.0;
        }
        if self.lease_qps <= 0.0 {
            // One renewal per node per interval, twice over: retries and jitter bunch them,
            // and a lane that fell behind (a stalled apiserver) must be able to catch up.
            self.lease_qps =
                2.0 * self.nodes as f64 / self.lease.renew_interval.as_secs_f64() + 10.0;
        }
        if self.lease_burst == 0 {
            // A quarter of the nodes at once: what a few seconds' stall leaves due together.
            self.lease_burst = (self.nodes / 4).max(10) as u32;
        }
        if self.lease_workers == 0 {
            // Renewals in flight at once: nodes/interval renewals a second (500 at 5,000 nodes)
            // at up to a second of apiserver latency in a storm.
            self.lease_workers = (self.nodes / 10).clamp(8, 512);
        }
        if self.burst == 0 {
            self.burst = (self.qps * 2.0) as u32;
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
        format!("{}-{i}", self.prefix)
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
        // The Lease lane: twice the renewal rate, a quarter of the nodes as burst.
        for (nodes, qps, burst, workers) in [(100, 30.0, 25, 10), (5000, 1010.0, 1250, 500)] {
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
}
