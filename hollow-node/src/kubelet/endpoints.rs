//! Which kubelet endpoint (port) each node advertises, and which node a listening port
//! answers for. Shared (the default): every node advertises `--kubelet-port` and one listener
//! serves them all, telling nodes apart by the pod a path names. Per node
//! (`--kubelet-port-per-node`): node `i` advertises `--kubelet-port + i` on the same address,
//! so paths that name no pod (`/metrics/resource`, `/stats/summary`) know their node. One
//! address and many ports works both on loopback and in a cluster, where a hollow-node pod has
//! a single IP. Pure.

/// The most nodes that may each have their own port: every listener is a file descriptor,
/// and the apiserver keeps about one connection open to each port it dials, so a process
/// needs about two descriptors per node (`ulimit -n` 20,000 leaves room for ~9,000 nodes;
/// this bound stays below it with a margin for the API clients and the watches).
pub const MAX_PER_NODE: usize = 8192;

/// The kubelet ports of one process's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    base: u16,
    nodes: u32,
    per_node: bool,
}

/// What a listening port answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every node: the path must name a pod to tell which.
    Shared,
    /// Node `i` only.
    Node(u32),
}

/// Why a path that names no pod gets 404 on the shared port.
pub const NO_NODE: &str = "this port serves every node of the process and the path names no \
                           node: start hollow-node with --kubelet-port-per-node";

impl Scope {
    /// The node a path that names no pod (`/metrics`, `/metrics/resource`,
    /// `/metrics/cadvisor`, `/stats/summary`) asks about on a listener of this scope: its
    /// node; on the shared port none, and why.
    pub fn node_wide(self) -> Result<u32, &'static str> {
        match self {
            Scope::Node(i) => Ok(i),
            Scope::Shared => Err(NO_NODE),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointsError {
    #[error("port {0}: must be from 1 to 65535")]
    Port(i32),
    #[error(
        "--kubelet-port-per-node from port {base} for {nodes} nodes needs ports up to {last}, \
         beyond 65535"
    )]
    Range { base: u16, nodes: usize, last: u64 },
    #[error(
        "--kubelet-port-per-node with {0} nodes: at most {MAX_PER_NODE} (two file descriptors a node)"
    )]
    TooMany(usize),
}

impl Endpoints {
    /// The endpoints of `nodes` nodes from base port `base`; refused when a node's port would
    /// pass 65535.
    pub fn new(base: i32, nodes: usize, per_node: bool) -> Result<Self, EndpointsError> {
        let port = u16::try_from(base)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(EndpointsError::Port(base))?;
        let count = u32::try_from(nodes).map_err(|_| EndpointsError::TooMany(nodes))?;
        if per_node {
            if nodes > MAX_PER_NODE {
                return Err(EndpointsError::TooMany(nodes));
            }
            let last = u64::from(port) + u64::from(count.saturating_sub(1));
            if last > u64::from(u16::MAX) {
                return Err(EndpointsError::Range {
                    base: port,
                    nodes,
                    last,
                });
            }
        }
        Ok(Endpoints {
            base: port,
            nodes: count,
            per_node,
        })
    }

    pub fn per_node(&self) -> bool {
        self.per_node
    }

    /// The port node `i` advertises in `status.daemonEndpoints.kubeletEndpoint.port`; `None`
    /// for a node this process does not have.
    pub fn advertised(&self, node: usize) -> Option<u16> {
        let i = u32::try_from(node).ok().filter(|i| *i < self.nodes)?;
        if !self.per_node {
            return Some(self.base);
        }
        u16::try_from(i).ok().and_then(|i| self.base.checked_add(i))
    }

    /// The ports to listen on, each with what it answers for.
    pub fn listeners(&self) -> Vec<(u16, Scope)> {
        let count = if self.per_node { self.nodes } else { 1 };
        (0..count)
            .filter_map(|i| self.advertised(i as usize))
            .filter_map(|port| Some((port, self.scope(port)?)))
            .collect()
    }

    /// What a request that arrived on `port` may ask about; `None` for a port of no node.
    /// One node alone is never ambiguous, so its shared port answers for it.
    pub fn scope(&self, port: u16) -> Option<Scope> {
        if !self.per_node {
            return match self.nodes {
                _ if port != self.base => None,
                1 => Some(Scope::Node(0)),
                _ => Some(Scope::Shared),
            };
        }
        let i = u32::from(port.checked_sub(self.base)?);
        (i < self.nodes).then_some(Scope::Node(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ports_and_scopes() {
        type Case = (
            &'static str,
            (i32, usize, bool),
            Result<(Vec<Option<u16>>, Vec<(u16, Scope)>), EndpointsError>,
        );
        let cases: [Case; 7] = [
            (
                "shared: one port for all",
                (10250, 3, false),
                Ok((
                    vec![Some(10250), Some(10250), Some(10250), None],
                    vec![(10250, Scope::Shared)],
                )),
            ),
            (
                "shared with one node: that node's",
                (10250, 1, false),
                Ok((vec![Some(10250), None], vec![(10250, Scope::Node(0))])),
            ),
            (
                "per node: base + i",
                (10250, 3, true),
                Ok((
                    vec![Some(10250), Some(10251), Some(10252), None],
                    vec![
                        (10250, Scope::Node(0)),
                        (10251, Scope::Node(1)),
                        (10252, Scope::Node(2)),
                    ],
                )),
            ),
            (
                "per node up to 65535 exactly",
                (65534, 2, true),
                Ok((
                    vec![Some(65534), Some(65535), None],
                    vec![(65534, Scope::Node(0)), (65535, Scope::Node(1))],
                )),
            ),
            (
                "per node past 65535: refused",
                (65534, 3, true),
                Err(EndpointsError::Range {
                    base: 65534,
                    nodes: 3,
                    last: 65536,
                }),
            ),
            ("port 0", (0, 1, false), Err(EndpointsError::Port(0))),
            (
                "too many per-node listeners",
                (1024, MAX_PER_NODE + 1, true),
                Err(EndpointsError::TooMany(MAX_PER_NODE + 1)),
            ),
        ];
        for (name, (base, nodes, per_node), want) in cases {
            let got = Endpoints::new(base, nodes, per_node).map(|e| {
                let advertised = (0..want.as_ref().map_or(0, |w| w.0.len()))
                    .map(|i| e.advertised(i))
                    .collect();
                (advertised, e.listeners())
            });
            assert_eq!(got, want, "{name}");
        }
        let e = Endpoints::new(10250, 3, true).expect("endpoints");
        let scopes = [10249, 10250, 10252, 10253].map(|p| e.scope(p));
        assert_eq!(
            scopes,
            [None, Some(Scope::Node(0)), Some(Scope::Node(2)), None],
            "ports outside the range answer for no node"
        );
    }

    #[test]
    fn only_a_node_port_answers_for_a_node() {
        assert_eq!(Scope::Node(3).node_wide(), Ok(3));
        assert_eq!(Scope::Shared.node_wide(), Err(NO_NODE));
        assert!(NO_NODE.contains("--kubelet-port-per-node"));
    }

    proptest! {
        #[test]
        fn every_node_is_found_on_the_port_it_advertises(
            base in 1i32..=65535,
            nodes in 1usize..=20_000,
            per_node: bool,
        ) {
            let Ok(e) = Endpoints::new(base, nodes, per_node) else {
                // Refused only when per node and out of range or too many.
                prop_assert!(per_node);
                prop_assert!(nodes > MAX_PER_NODE || base as usize + nodes - 1 > 65535);
                return Ok(());
            };
            let listeners = e.listeners();
            for i in [0, nodes / 2, nodes - 1] {
                let port = e.advertised(i);
                prop_assert!(port.is_some());
                let scope = port.and_then(|p| e.scope(p));
                if per_node || nodes == 1 {
                    prop_assert_eq!(scope, Some(Scope::Node(i as u32)));
                } else {
                    prop_assert_eq!(scope, Some(Scope::Shared));
                }
                prop_assert!(listeners.iter().any(|(p, _)| Some(*p) == port));
            }
            prop_assert_eq!(listeners.len(), if per_node { nodes } else { 1 });
            prop_assert_eq!(e.advertised(nodes), None);
        }
    }
}
