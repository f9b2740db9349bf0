//! Command-line flags (each also from a `MOCK_KIND_…` environment variable) and their
//! translation into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::annotations::parse_duration;
use crate::config::{Config, ConfigError, MAX_QPS, SecretRefs, parse_map, parse_taints};
use crate::faults::FaultSchedule;
use crate::ipam::Cidr;
use crate::lease::LeaseTiming;
use crate::node_pressure::parse_fault_condition;
use crate::pod_status::PodSettings;
use crate::reserved::{allocatable_cpu, allocatable_memory};

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn cidr(s: &str) -> Result<Cidr, String> {
    Cidr::parse(s).map_err(|e| e.to_string())
}

/// A finite number of requests per second in `[0, MAX_QPS]` (NaN and infinities parse as f64).
fn qps(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=MAX_QPS).contains(&v) {
        return Err(format!("{v} is not between 0 and {MAX_QPS}"));
    }
    Ok(v)
}

/// Most nodes one process may be asked to keep.
const MAX_NODES: u64 = 100_000;

/// Hollow kubelet: registers many fake Nodes and drives the pods bound to them.
#[derive(Debug, Parser)]
#[command(name = "hollow-node", version)]
pub struct Args {
    /// Number of nodes this process registers.
    #[arg(long, env = "MOCK_KIND_NODES", default_value_t = 10,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_NODES))]
    pub nodes: usize,
    /// Run the HollowNodePool of this name instead of --nodes (and --node-prefix, the node
    /// template flags and the fault flags): its nodes, its template, kept in step with its
    /// spec, its status written. Default: none (the flags' nodes).
    #[arg(long, env = "MOCK_KIND_POOL")]
    pub pool: Option<String>,
    /// With --pool: this replica's name among the replicas that share the pool, each running
    /// its own share of the nodes. Default: $POD_NAME, else the hostname.
    #[arg(long, env = "MOCK_KIND_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// With --pool: the namespace of the replicas' membership Leases
    /// (`hollownodepool-<pool>-<replica>`). Default: $POD_NAMESPACE, else `default`.
    #[arg(long, env = "MOCK_KIND_POOL_NAMESPACE")]
    pub pool_namespace: Option<String>,
    /// Node names are `<prefix>-<i>`. Default: $POD_NAME, else the hostname.
    #[arg(long, env = "MOCK_KIND_NODE_PREFIX")]
    pub node_prefix: Option<String>,
    /// Offsets this process's podCIDR blocks. Default: the number ending the prefix (a
    /// StatefulSet ordinal), else 0.
    #[arg(long, env = "MOCK_KIND_REPLICA_INDEX",
          value_parser = clap::value_parser!(u64).range(0..=MAX_NODES))]
    pub replica_index: Option<u64>,
    /// Kubeconfig file. Default: $KUBECONFIG, ~/.kube/config or the in-cluster account.
    #[arg(long, env = "MOCK_KIND_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "MOCK_KIND_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The nodes' InternalIP. Default: $POD_IP, else 127.0.0.1.
    #[arg(long, env = "MOCK_KIND_INTERNAL_IP")]
    pub internal_ip: Option<String>,
    /// CPU capacity and allocatable of each node.
    #[arg(long, env = "MOCK_KIND_CPU", default_value = "4")]
    pub cpu: String,
    /// Memory capacity and allocatable of each node.
    #[arg(long, env = "MOCK_KIND_MEMORY", default_value = "16Gi")]
    pub memory: String,
    /// Pod capacity of each node.
    #[arg(long, env = "MOCK_KIND_MAX_PODS", default_value = "110")]
    pub max_pods: String,
    /// Ephemeral-storage capacity of each node.
    #[arg(long, env = "MOCK_KIND_EPHEMERAL_STORAGE", default_value = "100Gi")]
    pub ephemeral_storage: String,
    /// Extended resources, e.g. `nvidia.com/gpu=8,example.com/fpga=2`.
    #[arg(long, env = "MOCK_KIND_EXTENDED_RESOURCES", default_value = "")]
    pub extended_resources: String,
    /// Extra node labels, `k=v,k2=v2`.
    #[arg(long, env = "MOCK_KIND_NODE_LABELS", default_value = "")]
    pub node_labels: String,
    /// Node taints, `key=value:Effect,key:Effect`.
    #[arg(long, env = "MOCK_KIND_NODE_TAINTS", default_value = "")]
    pub node_taints: String,
    /// Reported as nodeInfo.kubeletVersion and kubeProxyVersion (empty: the apiserver's
    /// gitVersion, read once at start).
    #[arg(long, env = "MOCK_KIND_KUBELET_VERSION", default_value = "")]
    pub kubelet_version: String,
    /// Label node.kubernetes.io/instance-type.
    #[arg(long, env = "MOCK_KIND_INSTANCE_TYPE", default_value = "hollow")]
    pub instance_type: String,
    /// Label and annotate the nodes `spoofed: "true"` (the scheduler extender's contract);
    /// `--spoofed=false` registers real-looking nodes.
    #[arg(long, env = "MOCK_KIND_SPOOFED", default_value_t = true, action = clap::ArgAction::Set)]
    pub spoofed: bool,
    /// Port of the kubelet API (logs, exec answers) for every node of this process; the Nodes
    /// advertise it as their kubelet endpoint.
    #[arg(long, env = "MOCK_KIND_KUBELET_PORT", default_value_t = 10250,
          value_parser = clap::value_parser!(i32).range(1..=65_535))]
    pub kubelet_port: i32,
    /// Give node i its own kubelet port, --kubelet-port + i (advertised in its
    /// daemonEndpoints, one listener each), so /metrics/resource and /stats/summary know their
    /// node. Default: off (one port for all nodes). At most 8,192 nodes, and the last port
    /// must be at most 65535; about two file descriptors per node.
    #[arg(long, env = "MOCK_KIND_KUBELET_PORT_PER_NODE", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub kubelet_port_per_node: bool,
    /// Serve the kubelet API on --kubelet-port; `--kubelet-serve=false` only advertises it.
    #[arg(long, env = "MOCK_KIND_KUBELET_SERVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub kubelet_serve: bool,
    /// Address the kubelet API binds. Default: the InternalIP (what the apiserver dials).
    #[arg(long, env = "MOCK_KIND_KUBELET_BIND_ADDRESS")]
    pub kubelet_bind_address: Option<std::net::IpAddr>,
    /// CA (PEM) of the client certificates the kubelet API accepts (the apiserver's
    /// --kubelet-client-certificate). Default: the CA the kubeconfig trusts for the apiserver
    /// (in a pod, the ServiceAccount's ca.crt), which signs it in kubeadm and kind clusters.
    #[arg(long, env = "MOCK_KIND_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Serving certificate (PEM) of the kubelet API, read once at start. Default: self-issued
    /// for the InternalIP and the first 256 node names.
    #[arg(
        long,
        env = "MOCK_KIND_KUBELET_TLS_CERT_FILE",
        requires = "kubelet_tls_private_key_file"
    )]
    pub kubelet_tls_cert_file: Option<PathBuf>,
    /// Key of --kubelet-tls-cert-file.
    #[arg(
        long,
        env = "MOCK_KIND_KUBELET_TLS_PRIVATE_KEY_FILE",
        requires = "kubelet_tls_cert_file"
    )]
    pub kubelet_tls_private_key_file: Option<PathBuf>,
    /// Serve metrics.k8s.io/v1beta1 (kubectl top, HPA) on this port for this process's nodes
    /// and pods, for an APIService to route to. Default: off (an installed metrics-server
    /// owns that API).
    #[arg(long, env = "MOCK_KIND_METRICS_API_PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub metrics_api_port: Option<u16>,
    /// Address the metrics API binds. Default: the kubelet API's.
    #[arg(long, env = "MOCK_KIND_METRICS_API_BIND_ADDRESS")]
    pub metrics_api_bind_address: Option<std::net::IpAddr>,
    /// CA (PEM) of the apiserver's front-proxy client certificate (its
    /// --requestheader-client-ca-file). Default: read from the ConfigMap
    /// kube-system/extension-apiserver-authentication, as extension apiservers do.
    #[arg(long, env = "MOCK_KIND_REQUESTHEADER_CLIENT_CA_FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names of front-proxy client certificates let in (comma-separated; empty: any
    /// name the CA signed). Default: kubeadm's.
    #[arg(
        long,
        env = "MOCK_KIND_REQUESTHEADER_ALLOWED_NAMES",
        default_value = "front-proxy-client",
        value_delimiter = ','
    )]
    pub requestheader_allowed_names: Vec<String>,
    /// Pod IPs come from per-node blocks inside this range.
    #[arg(long, env = "MOCK_KIND_CLUSTER_CIDR", default_value = "10.128.0.0/9", value_parser = cidr)]
    pub cluster_cidr: Cidr,
    /// Size of each node's podCIDR block inside the cluster CIDR.
    #[arg(long, env = "MOCK_KIND_NODE_CIDR_MASK", default_value_t = 24,
          value_parser = clap::value_parser!(u8).range(0..=30))]
    pub node_cidr_mask: u8,
    /// leaseDurationSeconds of each node's Lease in kube-node-lease.
    #[arg(long, env = "MOCK_KIND_LEASE_DURATION", default_value = "40s", value_parser = duration)]
    pub lease_duration: Duration,
    /// How often each Lease is renewed (±4 % jitter; first renewals spread over one interval).
    #[arg(long, env = "MOCK_KIND_LEASE_RENEW_INTERVAL", default_value = "10s", value_parser = duration)]
    pub lease_renew_interval: Duration,
    /// How Lease renewals are written: `protobuf` (a PUT as the kubelet sends it, about a
    /// seventh cheaper for the apiserver) or `json` (a merge patch).
    #[arg(long, env = "MOCK_KIND_LEASE_ENCODING", value_enum, default_value_t = crate::lease::LeaseEncoding::Protobuf)]
    pub lease_encoding: crate::lease::LeaseEncoding,
    /// How renewals reach the apiserver: `http1` (a connection per renewal in flight) or
    /// `http2` (when the apiserver offers it; renewals are streams on a connection per 200
    /// lease workers: far less memory, but later renewals on a saturated apiserver).
    #[arg(long, env = "MOCK_KIND_LEASE_TRANSPORT", value_enum, default_value_t = crate::client::LeaseTransport::Http1)]
    pub lease_transport: crate::client::LeaseTransport,
    /// NodeStatus is written on change, else this often.
    #[arg(long, env = "MOCK_KIND_NODE_STATUS_REFRESH", default_value = "5m", value_parser = duration)]
    pub node_status_refresh: Duration,
    /// Nodes turn unhealthy this long after start (0: never).
    #[arg(long, env = "MOCK_KIND_UNHEALTHY_AFTER", default_value = "0s", value_parser = duration)]
    pub unhealthy_after: Duration,
    /// How long a fault lasts (0: forever).
    #[arg(long, env = "MOCK_KIND_UNHEALTHY_DURATION", default_value = "0s", value_parser = duration)]
    pub unhealthy_duration: Duration,
    /// With --flapping, how long nodes stay healthy between faults.
    #[arg(long, env = "MOCK_KIND_HEALTHY_DURATION", default_value = "0s", value_parser = duration)]
    pub healthy_duration: Duration,
    /// Repeat the fault: unhealthy-duration down, healthy-duration up, and so on.
    #[arg(long, env = "MOCK_KIND_FLAPPING", default_value_t = false)]
    pub flapping: bool,
    /// How long a Job's pod runs before it succeeds (no annotation).
    #[arg(long, env = "MOCK_KIND_JOB_COMPLETE_AFTER", default_value = "5s", value_parser = duration)]
    pub job_complete_after: Duration,
    /// Cap on terminationGracePeriodSeconds when pods are deleted.
    #[arg(long, env = "MOCK_KIND_TERMINATION_GRACE_CAP", default_value = "1s", value_parser = duration)]
    pub termination_grace_cap: Duration,
    /// API requests per second (0: nodes/2 + 50).
    #[arg(long, env = "MOCK_KIND_KUBE_API_QPS", default_value_t = 0.0, value_parser = qps)]
    pub kube_api_qps: f64,
    /// API request burst (0: twice the QPS).
    #[arg(long, env = "MOCK_KIND_KUBE_API_BURST", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=200_000))]
    pub kube_api_burst: u32,
    /// Requests in flight at once for node and pod work, half each (0: nodes/4, at least 64,
    /// at most 1024).
    #[arg(long, env = "MOCK_KIND_WORKERS", default_value_t = 0,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=4_096))]
    pub workers: usize,
    /// Lease renewals per second, on their own client and connections (0: twice the renewal
    /// rate, 2 × nodes / renew interval, + 10).
    #[arg(long, env = "MOCK_KIND_LEASE_API_QPS", default_value_t = 0.0)]
    pub lease_api_qps: f64,
    /// Lease renewal burst (0: a quarter of the nodes, at least 10).
    #[arg(long, env = "MOCK_KIND_LEASE_API_BURST", default_value_t = 0)]
    pub lease_api_burst: u32,
    /// Lease renewals in flight at once, apart from --workers (0: nodes/10, 8 to 512).
    #[arg(long, env = "MOCK_KIND_LEASE_WORKERS", default_value_t = 0)]
    pub lease_workers: usize,
    /// While Lease renewals wait for a slot (the apiserver answers them slower than they fall
    /// due), node status and pod work keep only an eighth of their slots, so renewals come
    /// first as a kubelet's heartbeat does; pods start later in such a storm and memory grows
    /// (off by default: see the README's numbers).
    #[arg(long, env = "MOCK_KIND_YIELD_TO_LEASES", default_value_t = false, action = clap::ArgAction::Set)]
    pub yield_to_leases: bool,
    /// Delete the nodes (and leases) on SIGTERM, after every writer has stopped.
    #[arg(long, env = "MOCK_KIND_DELETE_NODES_ON_EXIT", default_value_t = false)]
    pub delete_nodes_on_exit: bool,
    /// Where a pod's Secret references are checked: `off` (each counts as present; needs no
    /// access to Secrets), `namespaces` (only in --secret-namespaces; needs list/watch of Secrets
    /// there) or `cluster` (everywhere; needs list/watch of every Secret in the cluster).
    #[arg(long, env = "MOCK_KIND_SECRET_REFS", default_value = "off", value_parser = ["off", "namespaces", "cluster"])]
    pub secret_refs: String,
    /// With --secret-refs=namespaces: the namespaces to check, comma-separated.
    #[arg(long, env = "MOCK_KIND_SECRET_NAMESPACES", default_value = "")]
    pub secret_namespaces: String,
    /// Log as JSON.
    #[arg(long, env = "MOCK_KIND_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
    /// What the fault schedule's unhealthy windows do: `Ready` (NotReady) or a comma-separated
    /// list of MemoryPressure, DiskPressure, PIDPressure (Ready, under that pressure).
    #[arg(long, env = "MOCK_KIND_FAULT_CONDITION", default_value = "Ready")]
    pub fault_condition: String,
    /// CPU kept for the system (`--kube-reserved` cpu): allocatable = --cpu minus this, at
    /// least 0. A Kubernetes quantity (`100m`, `0.5`), at most 32 characters.
    #[arg(long, env = "MOCK_KIND_KUBE_RESERVED_CPU", default_value = "0")]
    pub kube_reserved_cpu: String,
    /// Memory kept for the system: allocatable = --memory minus this, at least 0 (`512Mi`).
    #[arg(long, env = "MOCK_KIND_KUBE_RESERVED_MEMORY", default_value = "0")]
    pub kube_reserved_memory: String,
}

fn default_prefix() -> String {
    if let Ok(p) = std::env::var("POD_NAME")
        && !p.is_empty()
    {
        return p;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hollow-node".into())
}

impl Args {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let prefix = self.node_prefix.unwrap_or_else(default_prefix);
        let mut c = Config::new(&prefix, self.nodes);
        c.replica = self.replica_name.unwrap_or_else(default_prefix);
        c.pool_namespace = self
            .pool_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        if let Some(r) = self.replica_index {
            c.replica_index = r;
        }
        c.kubeconfig = self.kubeconfig;
        c.listen = self.listen;
        let mut capacity = parse_map("extended-resources", &self.extended_resources)?;
        capacity.insert("cpu".into(), self.cpu);
        capacity.insert("memory".into(), self.memory);
        capacity.insert("pods".into(), self.max_pods);
        capacity.insert("ephemeral-storage".into(), self.ephemeral_storage);
        c.template.allocatable = capacity.clone();
        c.template.capacity = capacity;
        c.template.labels = parse_map("node-labels", &self.node_labels)?;
        c.template.taints = parse_taints(&self.node_taints)?;
        c.template.kubelet_version = self.kubelet_version;
        c.template.instance_type = self.instance_type;
        c.template.kubelet_port = self.kubelet_port;
        c.template.kubelet_port_per_node = self.kubelet_port_per_node;
        c.template.spoofed = self.spoofed;
        c.template.internal_ip = self
            .internal_ip
            .or_else(|| std::env::var("POD_IP").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "127.0.0.1".into());
        if self.kubelet_serve {
            let ip = match self.kubelet_bind_address {
                Some(ip) => ip,
                None => c.template.internal_ip.parse().map_err(|_| {
                    crate::config::invalid(
                        "internal-ip",
                        &c.template.internal_ip,
                        "not an IP address",
                    )
                })?,
            };
            // Bounded to 1..=65535 by clap.
            let port = u16::try_from(self.kubelet_port).unwrap_or(10250);
            c.kubelet.listen = Some(SocketAddr::new(ip, port));
        }
        if let Some(port) = self.metrics_api_port {
            let ip = match (self.metrics_api_bind_address, c.kubelet.listen) {
                (Some(ip), _) => ip,
                (None, Some(kubelet)) => kubelet.ip(),
                (None, None) => c.template.internal_ip.parse().map_err(|_| {
                    crate::config::invalid(
                        "internal-ip",
                        &c.template.internal_ip,
                        "not an IP address",
                    )
                })?,
            };
            c.metrics_api.listen = Some(SocketAddr::new(ip, port));
        }
        c.metrics_api.client_ca_file = self.requestheader_client_ca_file;
        c.metrics_api.allowed_names = self
            .requestheader_allowed_names
            .into_iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .take(64)
            .collect();
        c.kubelet.client_ca_file = self.client_ca_file;
        c.kubelet.tls = match (
            self.kubelet_tls_cert_file,
            self.kubelet_tls_private_key_file,
        ) {
            (Some(cert), Some(key)) => Some(serving::TlsFiles { cert, key }),
            _ => None,
        };
        c.cluster_cidr = self.cluster_cidr;
        c.node_cidr_mask = self.node_cidr_mask;
        c.lease = LeaseTiming {
            duration: self.lease_duration,
            renew_interval: self.lease_renew_interval,
            ..LeaseTiming::default()
        };
        c.node_status_refresh = self.node_status_refresh;
        c.faults = FaultSchedule {
            unhealthy_after: self.unhealthy_after,
            unhealthy_duration: self.unhealthy_duration,
            healthy_duration: self.healthy_duration,
            flapping: self.flapping,
        };
        c.pods = PodSettings {
            job_complete_after: self.job_complete_after,
            grace_cap: self.termination_grace_cap,
            ..PodSettings::default()
        };
        c.qps = self.kube_api_qps;
        c.burst = self.kube_api_burst;
        c.workers = self.workers;
        c.lease_encoding = self.lease_encoding;
        c.lease_transport = self.lease_transport;
        c.lease_qps = self.lease_api_qps;
        c.lease_burst = self.lease_api_burst;
        c.lease_workers = self.lease_workers;
        c.yield_to_leases = self.yield_to_leases;
        c.delete_nodes_on_exit = self.delete_nodes_on_exit;
        c.secret_refs = SecretRefs::parse(&self.secret_refs, &self.secret_namespaces)?;
        c.fault_pressure =
            parse_fault_condition(&self.fault_condition).map_err(|e| ConfigError::Invalid {
                flag: "fault-condition",
                value: self.fault_condition.clone(),
                reason: e.to_string(),
            })?;
        let reserve = |flag, value: &str, r: Result<String, crate::reserved::QuantityError>| {
            r.map_err(|e| ConfigError::Invalid {
                flag,
                value: value.chars().take(64).collect(),
                reason: e.to_string(),
            })
        };
        let cpu = c.template.capacity.get("cpu").cloned().unwrap_or_default();
        let memory = c
            .template
            .capacity
            .get("memory")
            .cloned()
            .unwrap_or_default();
        let cpu = reserve(
            "kube-reserved-cpu",
            &self.kube_reserved_cpu,
            allocatable_cpu(&cpu, &self.kube_reserved_cpu),
        )?;
        let memory = reserve(
            "kube-reserved-memory",
            &self.kube_reserved_memory,
            allocatable_memory(&memory, &self.kube_reserved_memory),
        )?;
        c.template.allocatable.insert("cpu".into(), cpu);
        c.template.allocatable.insert("memory".into(), memory);
        c.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_config() {
        let args = Args::try_parse_from([
            "hollow-node",
            "--nodes=3",
            "--node-prefix=hollow-node-2",
            "--extended-resources=nvidia.com/gpu=8",
            "--node-taints=dedicated=gpu:NoSchedule",
            "--unhealthy-after=30s",
            "--internal-ip=127.0.0.5",
        ])
        .expect("args");
        let c = args.into_config().expect("config");
        assert_eq!(c.node_name(2), "hollow-node-2-2");
        assert_eq!(c.replica_index, 2);
        assert_eq!(
            c.template
                .capacity
                .get("nvidia.com/gpu")
                .map(String::as_str),
            Some("8")
        );
        assert_eq!(c.template.taints.len(), 1);
        assert_eq!(c.faults.unhealthy_after, Duration::from_secs(30));
        assert_eq!(c.template.internal_ip, "127.0.0.5");
        assert!(c.template.spoofed, "spoofed by default");
        assert!(Args::try_parse_from(["hollow-node", "--lease-duration=soon"]).is_err());
        // Every numeric flag is bounded where clap parses it.
        for flag in [
            "--nodes=0",
            "--nodes=100001",
            "--replica-index=18446744073709551615",
            "--kubelet-port=0",
            "--kubelet-port=65536",
            "--node-cidr-mask=31",
            "--kube-api-qps=NaN",
            "--kube-api-qps=inf",
            "--kube-api-qps=-1",
            "--kube-api-qps=100001",
            "--kube-api-burst=200001",
            "--workers=4097",
            "--lease-duration=10000h",
        ] {
            let err = Args::try_parse_from(["hollow-node", flag]).map(|_| ());
            let err = err.expect_err(flag).to_string();
            let name = flag.split('=').next().unwrap_or_default();
            assert!(err.contains(name), "{flag}: {err}");
        }
        let real = Args::try_parse_from(["hollow-node", "--node-prefix=real", "--spoofed=false"])
            .expect("args")
            .into_config()
            .expect("config");
        assert!(!real.template.spoofed);
        assert_eq!(
            real.secret_refs,
            SecretRefs::Off,
            "no Secret access by default"
        );
        let some = Args::try_parse_from([
            "hollow-node",
            "--node-prefix=hn",
            "--secret-refs=namespaces",
            "--secret-namespaces=team-a,team-b",
        ])
        .expect("args")
        .into_config()
        .expect("config");
        assert!(matches!(some.secret_refs, SecretRefs::Namespaces(ref n) if n.len() == 2));
        assert!(Args::try_parse_from(["hollow-node", "--secret-refs=some"]).is_err());
        let kubelet = |flags: &[&str]| config_with(flags).map(|c| c.kubelet);
        type Case = (
            &'static str,
            &'static [&'static str],
            Result<Option<&'static str>, &'static str>,
        );
        let cases: [Case; 5] = [
            ("default: the InternalIP", &[], Ok(Some("127.0.0.7:10250"))),
            (
                "own port",
                &["--kubelet-port=10260"],
                Ok(Some("127.0.0.7:10260")),
            ),
            (
                "own address",
                &["--kubelet-bind-address=0.0.0.0"],
                Ok(Some("0.0.0.0:10250")),
            ),
            ("off", &["--kubelet-serve=false"], Ok(None)),
            (
                "certificate without key",
                &["--kubelet-tls-cert-file=/c.pem"],
                Err("kubelet-tls-private-key-file"),
            ),
        ];
        for (name, flags, want) in cases {
            match (kubelet(flags), want) {
                (Ok(k), Ok(addr)) => {
                    assert_eq!(k.listen.map(|a| a.to_string()).as_deref(), addr, "{name}")
                }
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn node_flags() {
        let config = |flags: &[&str]| {
            let mut args = vec![
                "hollow-node",
                "--node-prefix=hn",
                "--cpu=4",
                "--memory=16Gi",
            ];
            args.extend_from_slice(flags);
            Args::try_parse_from(args).expect("args").into_config()
        };
        let c = config(&[]).expect("defaults");
        let alloc = |c: &Config, k: &str| c.template.allocatable.get(k).cloned();
        assert_eq!(alloc(&c, "cpu").as_deref(), Some("4"));
        assert_eq!(alloc(&c, "memory").as_deref(), Some("16Gi"));
        assert_eq!(
            c.template.kubelet_version, "",
            "empty: the apiserver's version"
        );
        assert_eq!(c.fault_pressure, None);
        let c = config(&[
            "--kube-reserved-cpu=250m",
            "--kube-reserved-memory=1Gi",
            "--kubelet-version=v1.29.0",
            "--fault-condition=MemoryPressure,PIDPressure",
        ])
        .expect("reserved");
        assert_eq!(alloc(&c, "cpu").as_deref(), Some("3750m"));
        assert_eq!(alloc(&c, "memory").as_deref(), Some("15728640Ki"));
        assert_eq!(
            c.template.capacity.get("cpu").map(String::as_str),
            Some("4")
        );
        assert_eq!(c.template.kubelet_version, "v1.29.0");
        assert_eq!(
            c.fault_pressure,
            Some(crate::node_pressure::Pressures {
                memory: true,
                disk: false,
                pid: true
            })
        );
        let c = config(&["--kube-reserved-cpu=8"]).expect("more than capacity");
        assert_eq!(alloc(&c, "cpu").as_deref(), Some("0"));
        for flag in [
            "--kube-reserved-cpu=lots",
            "--kube-reserved-memory=-1Gi",
            "--fault-condition=NotReady",
        ] {
            let err = config(&[flag]).expect_err(flag).to_string();
            let name = flag.split('=').next().unwrap_or_default();
            assert!(err.contains(name.trim_start_matches('-')), "{flag}: {err}");
        }
    }

    /// The config of node prefix `hn` at InternalIP 127.0.0.7 with `flags`.
    fn config_with(flags: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["hollow-node", "--node-prefix=hn", "--internal-ip=127.0.0.7"];
        argv.extend_from_slice(flags);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn kubelet_port_per_node_is_opt_in_and_bounded() {
        type Case = (
            &'static str,
            &'static [&'static str],
            Result<[Option<u16>; 3], &'static str>,
        );
        let cases: [Case; 5] = [
            (
                "default: one port for all",
                &["--nodes=2"],
                Ok([Some(10250), Some(10250), None]),
            ),
            (
                "per node: base + i",
                &["--nodes=2", "--kubelet-port-per-node"],
                Ok([Some(10250), Some(10251), None]),
            ),
            (
                "from the environment's spelling too",
                &[
                    "--nodes=2",
                    "--kubelet-port-per-node=true",
                    "--kubelet-port=20000",
                ],
                Ok([Some(20000), Some(20001), None]),
            ),
            (
                "the last port past 65535",
                &[
                    "--nodes=3",
                    "--kubelet-port-per-node",
                    "--kubelet-port=65534",
                ],
                Err("beyond 65535"),
            ),
            (
                "more nodes than listeners allowed",
                &[
                    "--nodes=9000",
                    "--kubelet-port-per-node",
                    "--kubelet-port=1024",
                ],
                Err("at most 8192"),
            ),
        ];
        for (name, flags, want) in cases {
            let got = config_with(flags).and_then(|c| {
                let c = c.validate().map_err(|e| e.to_string())?;
                let e = c.kubelet_endpoints().map_err(|e| e.to_string())?;
                Ok([0, 1, 2].map(|i| e.advertised(i)))
            });
            match (got, want) {
                (Ok(ports), Ok(want)) => assert_eq!(ports, want, "{name}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn metrics_api_is_opt_in() {
        let metrics = |flags: &[&str]| config_with(flags).map(|c| c.metrics_api);
        type Case = (
            &'static str,
            &'static [&'static str],
            Result<(Option<&'static str>, usize), &'static str>,
        );
        let cases: [Case; 6] = [
            ("off by default", &[], Ok((None, 1))),
            (
                "on the kubelet API's address",
                &["--metrics-api-port=4443"],
                Ok((Some("127.0.0.7:4443"), 1)),
            ),
            (
                "own address",
                &[
                    "--metrics-api-port=4443",
                    "--metrics-api-bind-address=127.0.0.1",
                ],
                Ok((Some("127.0.0.1:4443"), 1)),
            ),
            (
                "any front-proxy name",
                &["--requestheader-allowed-names="],
                Ok((None, 0)),
            ),
            (
                "two names",
                &["--requestheader-allowed-names=a,b"],
                Ok((None, 2)),
            ),
            ("port 0", &["--metrics-api-port=0"], Err("metrics-api-port")),
        ];
        for (name, flags, want) in cases {
            match (metrics(flags), want) {
                (Ok(m), Ok((addr, names))) => {
                    let got = (m.listen.map(|a| a.to_string()), m.allowed_names.len());
                    assert_eq!((got.0.as_deref(), got.1), (addr, names), "{name}");
                }
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
