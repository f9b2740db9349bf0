//! Pod IP allocation inside one node's podCIDR, and the rule that derives a node's podCIDR.
//!
//! A node's allocator re-adopts the IPs of pods that already exist (after a restart) before it
//! hands out anything, allocates round-robin so a freed IP is reused as late as possible, and
//! never hands one IP to two pods.

use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("invalid CIDR {0:?}: expected a.b.c.d/n with an IPv4 address")]
    InvalidCidr(String),
    #[error("node {node}: podCIDR {cidr} is exhausted ({used} addresses in use)")]
    Exhausted {
        node: String,
        cidr: String,
        used: usize,
    },
    #[error(
        "cluster CIDR {cluster} has room for {blocks} node blocks of /{mask}; block {index} is out of range"
    )]
    OutOfBlocks {
        cluster: String,
        mask: u8,
        blocks: u64,
        index: u64,
    },
}

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::InvalidCidr(s.to_string());
        let (ip, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mask = mask(prefix);
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.base)
    }

    /// The `index`-th sub-block of size `/sub_prefix` inside this block.
    pub fn sub_block(&self, sub_prefix: u8, index: u64) -> Result<Cidr, IpamError> {
        let blocks = if sub_prefix >= self.prefix && sub_prefix <= 32 {
            1u64 << (sub_prefix - self.prefix)
        } else {
            0
        };
        if index >= blocks {
            return Err(IpamError::OutOfBlocks {
                cluster: self.to_string(),
                mask: sub_prefix,
                blocks,
                index,
            });
        }
        let step = 1u64 << (32 - u32::from(sub_prefix));
        let base = u64::from(u32::from(self.base)) + index * step;
        Ok(Cidr {
            base: Ipv4Addr::from(base as u32),
            prefix: sub_prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Node `node_index` of replica `replica` (with `nodes_per_replica` nodes each) gets block
/// `replica * nodes_per_replica + node_index` of size `/node_mask` inside the cluster CIDR, so
/// replicas of a StatefulSet never overlap. An index past `u64` is out of blocks, not a wrap.
pub fn node_pod_cidr(
    cluster: Cidr,
    node_mask: u8,
    replica: u64,
    nodes_per_replica: u64,
    node_index: u64,
) -> Result<Cidr, IpamError> {
    let index = replica
        .checked_mul(nodes_per_replica)
        .and_then(|first| first.checked_add(node_index))
        .unwrap_or(u64::MAX);
    cluster.sub_block(node_mask, index)
}

/// The pod IPs of one node. Keys are pod keys (`namespace/name` or a uid): the same key always
/// gets the same IP back while it holds one.
#[derive(Debug)]
pub struct NodeIpam {
    node: String,
    cidr: Cidr,
    by_pod: HashMap<String, Ipv4Addr>,
    used: HashMap<Ipv4Addr, String>,
    /// Offset of the next candidate inside the block (round-robin).
    cursor: u64,
}

impl NodeIpam {
    pub fn new(node: impl Into<String>, cidr: Cidr) -> Self {
        NodeIpam {
            node: node.into(),
            cidr,
            by_pod: HashMap::new(),
            used: HashMap::new(),
            cursor: 1,
        }
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// Records an IP a pod already carries (restart adoption). Returns false when the IP is not
    /// in this node's block or another pod holds it; the caller then gives the pod a new IP only
    /// if it has not started yet.
    pub fn adopt(&mut self, pod: &str, ip: Ipv4Addr) -> bool {
        if !self.cidr.contains(ip) {
            return false;
        }
        match self.used.get(&ip) {
            Some(holder) if holder != pod => false,
            Some(_) => true,
            None => {
                if let Some(old) = self.by_pod.insert(pod.to_string(), ip) {
                    self.used.remove(&old);
                }
                self.used.insert(ip, pod.to_string());
                let offset = u64::from(u32::from(ip) - u32::from(self.cidr.base));
                if offset >= self.cursor {
                    self.cursor = offset + 1;
                }
                true
            }
        }
    }

    /// The pod's IP: the one it holds, else the next free one after the cursor. The network and
    /// broadcast addresses and `.1` (the gateway by convention) are never handed out.
    pub fn allocate(&mut self, pod: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.by_pod.get(pod) {
            return Ok(*ip);
        }
        let size = self.cidr.size();
        let base = u32::from(self.cidr.base);
        for step in 0..size {
            let offset = (self.cursor + step) % size;
            if size >= 4 && (offset <= 1 || offset == size - 1) {
                continue;
            }
            let ip = Ipv4Addr::from(base + offset as u32);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.used.entry(ip) {
                slot.insert(pod.to_string());
                self.by_pod.insert(pod.to_string(), ip);
                self.cursor = offset + 1;
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted {
            node: self.node.clone(),
            cidr: self.cidr.to_string(),
            used: self.used.len(),
        })
    }

    pub fn get(&self, pod: &str) -> Option<Ipv4Addr> {
        self.by_pod.get(pod).copied()
    }

    pub fn release(&mut self, pod: &str) -> Option<Ipv4Addr> {
        let ip = self.by_pod.remove(pod)?;
        self.used.remove(&ip);
        Some(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test ip")
    }

    #[test]
    fn cidr_parsing() {
        let cases: &[(&str, Option<&str>)] = &[
            ("10.244.0.0/16", Some("10.244.0.0/16")),
            ("10.244.3.7/24", Some("10.244.3.0/24")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("10.0.0.0/33", None),
            ("10.0.0.0", None),
            ("fd00::/64", None),
            ("10.0.0.0/x", None),
        ];
        for (input, want) in cases {
            let got = Cidr::parse(input).ok().map(|c| c.to_string());
            assert_eq!(got.as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn node_blocks() {
        let cluster = Cidr::parse("10.128.0.0/9").expect("cidr");
        let cases: &[(u64, u64, u64, Option<&str>)] = &[
            (0, 100, 0, Some("10.128.0.0/24")),
            (0, 100, 1, Some("10.128.1.0/24")),
            (0, 2000, 1999, Some("10.135.207.0/24")),
            (3, 100, 5, Some("10.129.49.0/24")),
            (0, 1, 32767, Some("10.255.255.0/24")),
            (0, 1, 32768, None),
        ];
        for (replica, per, index, want) in cases {
            let got = node_pod_cidr(cluster, 24, *replica, *per, *index)
                .ok()
                .map(|c| c.to_string());
            assert_eq!(got.as_deref(), *want, "replica {replica} index {index}");
        }
    }

    #[test]
    fn allocation_is_unique_stable_and_bounded() {
        let mut ipam = NodeIpam::new("n", Cidr::parse("10.0.0.0/29").expect("cidr"));
        // /29: offsets 2..=6 usable (5 addresses).
        let mut seen = HashSet::new();
        for i in 0..5 {
            let got = ipam.allocate(&format!("p{i}")).expect("allocate");
            assert!(seen.insert(got), "duplicate {got}");
            assert!(
                ![ip("10.0.0.0"), ip("10.0.0.1"), ip("10.0.0.7")].contains(&got),
                "{got}"
            );
        }
        assert_eq!(
            ipam.allocate("p0").expect("same pod"),
            ip("10.0.0.2"),
            "stable"
        );
        let err = ipam.allocate("p5").expect_err("exhausted");
        assert!(err.to_string().contains("node n"), "{err}");
        assert_eq!(ipam.release("p1"), Some(ip("10.0.0.3")));
        assert_eq!(ipam.allocate("p6").expect("reuse"), ip("10.0.0.3"));
    }

    #[test]
    fn round_robin_delays_reuse() {
        let mut ipam = NodeIpam::new("n", Cidr::parse("10.0.0.0/24").expect("cidr"));
        let a = ipam.allocate("a").expect("a");
        ipam.release("a");
        let b = ipam.allocate("b").expect("b");
        assert_ne!(a, b, "a freed IP is not handed out right away");
    }

    #[test]
    fn readoption_after_restart() {
        struct Case {
            name: &'static str,
            existing: Vec<(&'static str, &'static str)>,
            want_adopted: Vec<bool>,
        }
        let cases = [
            Case {
                name: "distinct IPs adopted",
                existing: vec![("a", "10.0.0.5"), ("b", "10.0.0.9")],
                want_adopted: vec![true, true],
            },
            Case {
                name: "foreign block refused",
                existing: vec![("a", "10.0.1.5")],
                want_adopted: vec![false],
            },
            Case {
                name: "duplicate refused",
                existing: vec![("a", "10.0.0.5"), ("b", "10.0.0.5")],
                want_adopted: vec![true, false],
            },
            Case {
                name: "same pod twice is idempotent",
                existing: vec![("a", "10.0.0.5"), ("a", "10.0.0.5")],
                want_adopted: vec![true, true],
            },
        ];
        for case in cases {
            let mut ipam = NodeIpam::new("n", Cidr::parse("10.0.0.0/24").expect("cidr"));
            let got: Vec<bool> = case
                .existing
                .iter()
                .map(|(pod, addr)| ipam.adopt(pod, ip(addr)))
                .collect();
            assert_eq!(got, case.want_adopted, "{}", case.name);
            // New allocations never collide with adopted IPs and come after them.
            let adopted: HashSet<Ipv4Addr> = case
                .existing
                .iter()
                .filter_map(|(pod, _)| ipam.get(pod))
                .collect();
            for i in 0..250 {
                let pod = format!("new{i}");
                match ipam.allocate(&pod) {
                    Ok(new) => assert!(
                        !adopted.contains(&new),
                        "{}: {new} handed out twice",
                        case.name
                    ),
                    Err(_) => break,
                }
            }
            let total: HashSet<Ipv4Addr> = ipam.used.keys().copied().collect();
            assert_eq!(total.len(), ipam.in_use(), "{}", case.name);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_cidr() -> impl Strategy<Value = Cidr> {
            (any::<u32>(), 0u8..=32).prop_map(|(ip, prefix)| Cidr {
                base: Ipv4Addr::from(ip & mask(prefix)),
                prefix,
            })
        }

        /// What a pod-IP bookkeeping step may be.
        #[derive(Debug, Clone)]
        enum Op {
            Allocate(u8),
            Adopt(u8, u32),
            Release(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => any::<u8>().prop_map(|p| Op::Allocate(p % 24)),
                1 => (any::<u8>(), any::<u32>()).prop_map(|(p, ip)| Op::Adopt(p % 24, ip)),
                1 => (any::<u8>(), 0u32..32).prop_map(|(p, off)| Op::Adopt(p % 24, off)),
                2 => any::<u8>().prop_map(|p| Op::Release(p % 24)),
            ]
        }

        proptest! {
            #[test]
            fn cidr_parse_never_panics(s in "\\PC{0,24}") {
                if let Ok(c) = Cidr::parse(&s) {
                    prop_assert!(c.prefix <= 32);
                    prop_assert!(c.contains(c.base));
                }
            }

            #[test]
            fn cidr_parse_on_cidr_shaped_input(a in any::<u32>(), prefix in any::<u16>()) {
                let s = format!("{}/{prefix}", Ipv4Addr::from(a));
                match Cidr::parse(&s) {
                    Ok(c) => {
                        prop_assert!(prefix <= 32);
                        prop_assert!(c.contains(Ipv4Addr::from(a)), "{s} -> {c}");
                    }
                    Err(_) => prop_assert!(prefix > 32),
                }
            }

            #[test]
            fn cidrs_round_trip(c in any_cidr()) {
                prop_assert_eq!(Cidr::parse(&c.to_string()), Ok(c));
            }

            #[test]
            fn node_blocks_stay_inside_the_cluster(
                cluster in any_cidr(),
                node_mask in any::<u8>(),
                replica in prop_oneof![any::<u64>(), 0u64..4],
                per_replica in prop_oneof![any::<u64>(), 0u64..300],
                index in prop_oneof![any::<u64>(), 0u64..300],
            ) {
                if let Ok(block) = node_pod_cidr(cluster, node_mask, replica, per_replica, index) {
                    prop_assert_eq!(block.prefix, node_mask);
                    prop_assert!(cluster.contains(block.base), "{block} outside {cluster}");
                    let last = u32::from(block.base) as u64 + block.size() - 1;
                    prop_assert!(cluster.contains(Ipv4Addr::from(last as u32)), "{block} leaves {cluster}");
                }
            }

            #[test]
            fn one_ip_per_pod_and_pod_per_ip(
                prefix in 26u8..=32,
                base in any::<u32>(),
                ops in proptest::collection::vec(op(), 0..80),
            ) {
                let cidr = Cidr { base: Ipv4Addr::from(base & mask(prefix)), prefix };
                let mut ipam = NodeIpam::new("n", cidr);
                for op in ops {
                    match op {
                        Op::Allocate(p) => {
                            if let Ok(ip) = ipam.allocate(&p.to_string()) {
                                prop_assert!(cidr.contains(ip));
                            }
                        }
                        Op::Adopt(p, ip) => {
                            let ip = if ip < 32 { Ipv4Addr::from(u32::from(cidr.base) | ip) } else { Ipv4Addr::from(ip) };
                            if ipam.adopt(&p.to_string(), ip) {
                                prop_assert_eq!(ipam.get(&p.to_string()), Some(ip));
                            }
                        }
                        Op::Release(p) => {
                            ipam.release(&p.to_string());
                            prop_assert_eq!(ipam.get(&p.to_string()), None);
                        }
                    }
                    // The two maps agree: each IP has one holder, each holder one IP.
                    prop_assert_eq!(ipam.by_pod.len(), ipam.used.len());
                    for (pod, ip) in &ipam.by_pod {
                        prop_assert_eq!(ipam.used.get(ip), Some(pod));
                        prop_assert!(cidr.contains(*ip));
                    }
                    prop_assert!(ipam.in_use() as u64 <= cidr.size());
                }
            }
        }
    }
}
