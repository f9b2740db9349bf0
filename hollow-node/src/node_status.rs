//! The Node object and its status as a kubelet reports them, built from the configuration, the
//! clock and the node's health: no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::node_pressure::Pressures;

/// The annotation and label the scheduler extender keys on.
pub const SPOOFED: &str = "spoofed";
/// Label naming the process (node-name prefix) that manages a node.
pub const OWNER_LABEL: &str = "mock-kind.io/hollow-node";

/// What every node of one process shares.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTemplate {
    pub capacity: BTreeMap<String, String>,
    pub allocatable: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Written first: the annotations the kubelet sets (`node.alpha.kubernetes.io/ttl`,
    /// `spoofed`) win over a key of the same name.
    pub annotations: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub kubelet_version: String,
    /// nodeInfo.operatingSystem and the `kubernetes.io/os` labels.
    pub os: String,
    /// nodeInfo.architecture and the `kubernetes.io/arch` labels.
    pub arch: String,
    pub internal_ip: String,
    /// The kubelet port: every node's, or node 0's when `kubelet_port_per_node`.
    pub kubelet_port: i32,
    /// Node `i` advertises `kubelet_port + i` (`--kubelet-port-per-node`).
    pub kubelet_port_per_node: bool,
    pub instance_type: String,
    pub owner: String,
    /// Carry the `spoofed: "true"` label and annotation (false: a real-looking node).
    pub spoofed: bool,
}

/// Why a node is not ready, for the Ready condition's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// The fault schedule from the flags.
    ScheduledFault,
    /// The `mock-kind.io/health` annotation.
    Annotated(String),
    /// Ready, under scripted memory, disk or PID pressure (annotation or fault schedule).
    Pressure(Pressures),
}

impl Health {
    pub fn is_ready(&self) -> bool {
        matches!(self, Health::Ready | Health::Pressure(_))
    }

    fn pressures(&self) -> Pressures {
        match self {
            Health::Pressure(p) => *p,
            _ => Pressures::default(),
        }
    }
}

/// Truncates to whole seconds: the API stores Time with second precision, so what we write is
/// what we read back.
pub fn seconds(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn hex_id(seed: &str, len: usize) -> String {
    // FNV-1a, rehashed per chunk: stable, well-formed IDs without a hash crate.
    let mut out = String::with_capacity(len);
    let mut round = 0u64;
    while out.len() < len {
        let mut h: u64 = 0xcbf29ce484222325 ^ round;
        for b in seed.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        out.push_str(&format!("{h:016x}"));
        round += 1;
    }
    out.truncate(len);
    out
}

/// A stable 64-hex-digit ID for `seed` (container IDs, image digests, machine IDs).
pub fn stable_id(seed: &str) -> String {
    hex_id(seed, 64)
}

/// The Node a kubelet registers: labels, annotations, podCIDR, taints and initial status;
/// `kubelet_port` is the one this node advertises (its own with `--kubelet-port-per-node`).
pub fn new_node(
    tpl: &NodeTemplate,
    name: &str,
    kubelet_port: i32,
    pod_cidr: &str,
    now: jiff::Timestamp,
) -> Node {
    let mut labels = tpl.labels.clone();
    if tpl.spoofed {
        labels.insert(SPOOFED.into(), "true".into());
    }
    labels.insert(OWNER_LABEL.into(), tpl.owner.clone());
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.insert("kubernetes.io/os".into(), tpl.os.clone());
    labels.insert("kubernetes.io/arch".into(), tpl.arch.clone());
    labels.insert("beta.kubernetes.io/os".into(), tpl.os.clone());
    labels.insert("beta.kubernetes.io/arch".into(), tpl.arch.clone());
    labels.insert(
        "node.kubernetes.io/instance-type".into(),
        tpl.instance_type.clone(),
    );
    let mut annotations = tpl.annotations.clone();
    annotations.insert("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string());
    if tpl.spoofed {
        annotations.insert(SPOOFED.to_string(), "true".to_string());
    }
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr.into()),
            pod_cidrs: Some(vec![pod_cidr.into()]),
            taints: (!tpl.taints.is_empty()).then(|| tpl.taints.clone()),
            ..Default::default()
        }),
        status: Some(node_status(
            tpl,
            name,
            kubelet_port,
            &Health::Ready,
            now,
            None,
        )),
    }
}

fn quantities(m: &BTreeMap<String, String>) -> BTreeMap<String, Quantity> {
    m.iter()
        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        .collect()
}

/// The status a kubelet would post now. `prev` is the status the API holds: a condition whose
/// status did not change keeps its lastTransitionTime.
pub fn node_status(
    tpl: &NodeTemplate,
    name: &str,
    kubelet_port: i32,
    health: &Health,
    now: jiff::Timestamp,
    prev: Option<&NodeStatus>,
) -> NodeStatus {
    let now = Time(seconds(now));
    let (ready_status, ready_reason, ready_message) = match health {
        Health::Ready | Health::Pressure(_) => (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        ),
        Health::ScheduledFault => (
            "False",
            "KubeletNotReady",
            "mock-kind: fault injected by the unhealthy-after schedule".to_string(),
        ),
        Health::Annotated(v) => (
            "False",
            "KubeletNotReady",
            format!("mock-kind: node annotation mock-kind.io/health={v}"),
        ),
    };
    let [memory, disk, pid] = health.pressures().conditions();
    let conditions = [
        memory,
        disk,
        pid,
        ("Ready", ready_status, ready_reason, ready_message.as_str()),
    ]
    .into_iter()
    .map(|(type_, status, reason, message)| {
        let previous = prev
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
        let transition = match previous {
            Some(c) if c.status == status => c.last_transition_time.clone().unwrap_or(now.clone()),
            _ => now.clone(),
        };
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(transition),
        }
    })
    .collect();
    let ids = machine_ids(name);
    NodeStatus {
        capacity: Some(quantities(&tpl.capacity)),
        allocatable: Some(quantities(&tpl.allocatable)),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: tpl.internal_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: kubelet_port }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: tpl.arch.clone(),
            operating_system: tpl.os.clone(),
            os_image: "mock-kind hollow node".into(),
            kernel_version: "5.10.0-mock".into(),
            container_runtime_version: "containerd://1.4.0-mock".into(),
            kubelet_version: tpl.kubelet_version.clone(),
            kube_proxy_version: tpl.kubelet_version.clone(),
            machine_id: ids.machine_id,
            system_uuid: ids.system_uuid,
            boot_id: ids.boot_id,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Longest version string reported.
const MAX_VERSION_LEN: usize = 64;

/// The apiserver's `gitVersion` as the nodes' kubeletVersion and kubeProxyVersion (a kubelet
/// of the cluster's own release): `None` unless it looks like a version (`v` and at most 63
/// more of `[0-9A-Za-z.+-]`), so nothing the apiserver sends can put other text there.
pub fn reported_version(git_version: &str) -> Option<String> {
    let rest = git_version.strip_prefix('v')?;
    let ok = !rest.is_empty()
        && git_version.len() <= MAX_VERSION_LEN
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
    ok.then(|| git_version.to_string())
}

/// A node's `nodeInfo` machine ID, system UUID and boot ID, which cAdvisor's machine metrics
/// carry as labels too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineIds {
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
}

/// The stable IDs of node `name`.
pub fn machine_ids(name: &str) -> MachineIds {
    MachineIds {
        machine_id: hex_id(&format!("machine/{name}"), 32),
        system_uuid: uuid_like(&format!("system/{name}")),
        boot_id: uuid_like(&format!("boot/{name}")),
    }
}

fn uuid_like(seed: &str) -> String {
    let h = hex_id(seed, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether a condition the API holds (Ready or a pressure) differs from what we would report:
/// the only change that forces a status write before the periodic refresh.
pub fn ready_differs(api: Option<&NodeStatus>, health: &Health) -> bool {
    let ready = ("Ready", if health.is_ready() { "True" } else { "False" });
    let pressures = health.pressures().conditions().map(|c| (c.0, c.1));
    let conditions = api.and_then(|s| s.conditions.as_ref());
    std::iter::once(ready)
        .chain(pressures)
        .any(|(type_, want)| {
            let got = conditions
                .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
                .map(|c| c.status.as_str());
            // A status without pressure conditions (written before they existed) reads as False.
            got.unwrap_or(if type_ == "Ready" { "" } else { "False" }) != want
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpl() -> NodeTemplate {
        NodeTemplate {
            capacity: BTreeMap::from([
                ("cpu".into(), "4".into()),
                ("memory".into(), "16Gi".into()),
                ("pods".into(), "110".into()),
                ("nvidia.com/gpu".into(), "1".into()),
            ]),
            allocatable: BTreeMap::from([
                ("cpu".into(), "4".into()),
                ("pods".into(), "110".into()),
            ]),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            annotations: BTreeMap::new(),
            taints: vec![],
            kubelet_version: "v1.20.2".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            internal_ip: "127.0.0.1".into(),
            kubelet_port: 10250,
            kubelet_port_per_node: false,
            instance_type: "hollow".into(),
            owner: "hn".into(),
            spoofed: true,
        }
    }

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("ts")
    }

    fn cond<'a>(s: &'a NodeStatus, t: &str) -> &'a NodeCondition {
        s.conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == t))
            .expect("condition")
    }

    #[test]
    fn new_node_carries_contract() {
        let node = new_node(&tpl(), "hn-0", 10250, "10.128.0.0/24", ts(1000));
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        let cases = [
            (
                "label spoofed",
                labels.get("spoofed").map(String::as_str),
                Some("true"),
            ),
            (
                "annotation spoofed",
                annotations.get("spoofed").map(String::as_str),
                Some("true"),
            ),
            (
                "hostname",
                labels.get("kubernetes.io/hostname").map(String::as_str),
                Some("hn-0"),
            ),
            (
                "extra label",
                labels.get("zone").map(String::as_str),
                Some("a"),
            ),
            (
                "owner",
                labels.get(OWNER_LABEL).map(String::as_str),
                Some("hn"),
            ),
            (
                "instance type",
                labels
                    .get("node.kubernetes.io/instance-type")
                    .map(String::as_str),
                Some("hollow"),
            ),
            (
                "podCIDR",
                node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
                Some("10.128.0.0/24"),
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
        let status = node.status.expect("status");
        assert_eq!(cond(&status, "Ready").status, "True");
        let cap = status.capacity.expect("capacity");
        assert_eq!(cap.get("nvidia.com/gpu").map(|q| q.0.as_str()), Some("1"));
        let addrs = status.addresses.expect("addresses");
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "127.0.0.1");
        let info = status.node_info.expect("info");
        assert_eq!(info.kubelet_version, "v1.20.2");
        assert_eq!(info.machine_id.len(), 32);
    }

    #[test]
    fn real_looking_node_is_not_spoofed() {
        let node = new_node(
            &NodeTemplate {
                spoofed: false,
                ..tpl()
            },
            "real-0",
            10250,
            "10.128.0.0/24",
            ts(1),
        );
        let labels = node.metadata.labels.unwrap_or_default();
        let annotations = node.metadata.annotations.unwrap_or_default();
        assert!(!labels.contains_key(SPOOFED), "{labels:?}");
        assert!(!annotations.contains_key(SPOOFED), "{annotations:?}");
        assert_eq!(labels.get(OWNER_LABEL).map(String::as_str), Some("hn"));
    }

    #[test]
    fn transitions_keep_or_move_transition_time() {
        let t = tpl();
        let healthy = node_status(&t, "n", 10250, &Health::Ready, ts(100), None);
        struct Case {
            name: &'static str,
            health: Health,
            want_ready: &'static str,
            want_transition: i64,
        }
        let cases = [
            Case {
                name: "still ready",
                health: Health::Ready,
                want_ready: "True",
                want_transition: 100,
            },
            Case {
                name: "fault",
                health: Health::ScheduledFault,
                want_ready: "False",
                want_transition: 200,
            },
            Case {
                name: "annotated",
                health: Health::Annotated("NotReady".into()),
                want_ready: "False",
                want_transition: 200,
            },
        ];
        for case in cases {
            let next = node_status(&t, "n", 10250, &case.health, ts(200), Some(&healthy));
            let ready = cond(&next, "Ready");
            assert_eq!(ready.status, case.want_ready, "{}", case.name);
            assert_eq!(
                ready.last_transition_time.as_ref().map(|t| t.0.as_second()),
                Some(case.want_transition),
                "{}",
                case.name
            );
            assert_eq!(
                ready.last_heartbeat_time.as_ref().map(|t| t.0.as_second()),
                Some(200),
                "{}",
                case.name
            );
            let mem = cond(&next, "MemoryPressure");
            assert_eq!(
                mem.last_transition_time.as_ref().map(|t| t.0.as_second()),
                Some(100),
                "{}",
                case.name
            );
            assert_eq!(
                ready_differs(Some(&healthy), &case.health),
                case.want_ready == "False",
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn pressure_conditions() {
        let t = tpl();
        let healthy = node_status(&t, "n", 10250, &Health::Ready, ts(100), None);
        let memory = Health::Pressure(Pressures {
            memory: true,
            ..Default::default()
        });
        let next = node_status(&t, "n", 10250, &memory, ts(200), Some(&healthy));
        // (condition, status, reason, message, lastTransitionTime)
        let cases = [
            (
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                200,
            ),
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                100,
            ),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                100,
            ),
            (
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
                100,
            ),
        ];
        for (type_, status, reason, message, transition) in cases {
            let c = cond(&next, type_);
            assert_eq!(c.status, status, "{type_}");
            assert_eq!(c.reason.as_deref(), Some(reason), "{type_}");
            assert_eq!(c.message.as_deref(), Some(message), "{type_}");
            assert_eq!(
                c.last_transition_time.as_ref().map(|t| t.0.as_second()),
                Some(transition),
                "{type_}"
            );
        }
        assert!(memory.is_ready(), "pressure keeps the node Ready");
        // A change of pressure forces a write; the same pressure does not.
        let cases = [
            ("pressure starts", Some(&healthy), &memory, true),
            ("pressure holds", Some(&next), &memory, false),
            ("pressure ends", Some(&next), &Health::Ready, true),
            ("healthy stays", Some(&healthy), &Health::Ready, false),
            ("no status yet", None, &Health::Ready, true),
        ];
        for (name, api, health, want) in cases {
            assert_eq!(ready_differs(api, health), want, "{name}");
        }
    }

    #[test]
    fn versions() {
        let cases = [
            ("release", "v1.20.2", Some("v1.20.2")),
            ("build metadata", "v1.29.0+k3s1", Some("v1.29.0+k3s1")),
            ("pre-release", "v1.31.0-rc.1", Some("v1.31.0-rc.1")),
            ("no v", "1.20.2", None),
            ("only v", "v", None),
            ("space", "v1.20 evil", None),
            ("empty", "", None),
        ];
        for (name, v, want) in cases {
            assert_eq!(reported_version(v).as_deref(), want, "{name}");
        }
        assert_eq!(reported_version(&format!("v{}", "1".repeat(70))), None);
    }

    proptest::proptest! {
        #[test]
        fn reported_versions_are_bounded(v in "\\PC{0,100}") {
            if let Some(r) = reported_version(&v) {
                proptest::prop_assert!(r.len() <= MAX_VERSION_LEN && r.starts_with('v'));
                proptest::prop_assert!(!r.contains(char::is_whitespace));
            }
        }
    }

    #[test]
    fn stable_ids() {
        assert_eq!(stable_id("a"), stable_id("a"));
        assert_ne!(stable_id("a"), stable_id("b"));
        assert_eq!(stable_id("a").len(), 64);
        assert!(stable_id("x").chars().all(|c| c.is_ascii_hexdigit()));
    }
}
