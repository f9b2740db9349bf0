//! Pure rendering of what the components read: their command lines, the admin kubeconfig and the
//! KubeSchedulerConfiguration. No I/O here, so all of it is unit-tested.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// The files of one control plane, all under its own directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
    /// etcd's data lives apart (on tmpfs when there is one): etcd fsyncs every write.
    pub etcd_data: PathBuf,
}

impl Layout {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.file("ca.crt")
    }
    pub fn serving_cert(&self) -> PathBuf {
        self.file("apiserver.crt")
    }
    pub fn serving_key(&self) -> PathBuf {
        self.file("apiserver.key")
    }
    pub fn kubelet_client_cert(&self) -> PathBuf {
        self.file("apiserver-kubelet-client.crt")
    }
    pub fn kubelet_client_key(&self) -> PathBuf {
        self.file("apiserver-kubelet-client.key")
    }
    pub fn front_proxy_ca(&self) -> PathBuf {
        self.file("front-proxy-ca.crt")
    }
    pub fn front_proxy_client_cert(&self) -> PathBuf {
        self.file("front-proxy-client.crt")
    }
    pub fn front_proxy_client_key(&self) -> PathBuf {
        self.file("front-proxy-client.key")
    }
    pub fn sa_key(&self) -> PathBuf {
        self.file("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.file("sa.pub")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.file("admin.kubeconfig")
    }
    pub fn scheduler_config(&self) -> PathBuf {
        self.file("scheduler-config.json")
    }
    pub fn audit_policy(&self) -> PathBuf {
        self.file("audit-policy.json")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.file("audit.log")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.file(&format!("{component}.log"))
    }
}

/// Everything the command lines depend on besides the layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
    pub apiserver_port: u16,
    pub controller_manager_port: u16,
    pub scheduler_secure_port: u16,
    pub scheduler_health_port: u16,
    pub client_qps: u32,
    pub node_monitor_grace_period: Option<Duration>,
    pub pod_eviction_timeout: Option<Duration>,
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

pub fn etcd_args(layout: &Layout, s: &Settings) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", s.etcd_client_port);
    let peer = format!("http://127.0.0.1:{}", s.etcd_peer_port);
    vec![
        format!("--data-dir={}", p(&layout.etcd_data)),
        "--name=default".into(),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=default={peer}"),
        "--log-level=warn".into(),
        "--logger=zap".into(),
        // Tests churn thousands of objects; compaction keeps etcd small without a defrag.
        "--auto-compaction-retention=1".into(),
        "--quota-backend-bytes=4294967296".into(),
    ]
}

pub fn apiserver_args(layout: &Layout, s: &Settings) -> Vec<String> {
    vec![
        format!("--etcd-servers=http://127.0.0.1:{}", s.etcd_client_port),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={}", s.apiserver_port),
        "--insecure-port=0".into(),
        format!("--tls-cert-file={}", p(&layout.serving_cert())),
        format!("--tls-private-key-file={}", p(&layout.serving_key())),
        format!("--client-ca-file={}", p(&layout.ca_cert())),
        "--authorization-mode=Node,RBAC".into(),
        format!("--service-account-key-file={}", p(&layout.sa_pub())),
        format!("--service-account-signing-key-file={}", p(&layout.sa_key())),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        // Logs, exec and proxy go to the node's InternalIP, which hollow nodes keep on loopback.
        "--kubelet-preferred-address-types=InternalIP".into(),
        // As kubeadm (and so kind) runs it: a client certificate towards kubelets, and none of
        // their serving certificates checked (kubelets sign their own).
        format!(
            "--kubelet-client-certificate={}",
            p(&layout.kubelet_client_cert())
        ),
        format!("--kubelet-client-key={}", p(&layout.kubelet_client_key())),
        // The aggregation layer, as kubeadm configures it, so aggregated APIs (metrics.k8s.io)
        // can be served and trust the apiserver's front proxy.
        format!(
            "--requestheader-client-ca-file={}",
            p(&layout.front_proxy_ca())
        ),
        "--requestheader-allowed-names=front-proxy-client".into(),
        "--requestheader-username-headers=X-Remote-User".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        format!(
            "--proxy-client-cert-file={}",
            p(&layout.front_proxy_client_cert())
        ),
        format!(
            "--proxy-client-key-file={}",
            p(&layout.front_proxy_client_key())
        ),
        // The endpoint reconciler refuses a loopback address for the `kubernetes` Service and
        // would log that every 10 s; nothing here needs that Service's endpoints.
        "--endpoint-reconciler-type=none".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        // The harness is the only client of consequence; generous limits keep benchmarks
        // measuring mock-kind, not apiserver throttling.
        "--max-requests-inflight=2000".into(),
        "--max-mutating-requests-inflight=1000".into(),
        "--v=1".into(),
    ]
}

/// The apiserver's audit flags: the policy of [`crate::audit::policy`], JSON lines written as
/// each request completes (blocking mode, so a test reads every request it waited for).
pub fn audit_args(layout: &Layout) -> Vec<String> {
    vec![
        format!("--audit-policy-file={}", p(&layout.audit_policy())),
        format!("--audit-log-path={}", p(&layout.audit_log())),
        "--audit-log-format=json".into(),
        "--audit-log-mode=blocking".into(),
        // No rotation: the harness's runs are short and a test reads the one file.
        "--audit-log-maxbackup=0".into(),
    ]
}

pub fn controller_manager_args(layout: &Layout, s: &Settings) -> Vec<String> {
    let mut args = vec![
        format!("--kubeconfig={}", p(&layout.kubeconfig())),
        "--bind-address=127.0.0.1".into(),
        "--secure-port=0".into(),
        // The insecure port serves /healthz for the harness's readiness check (1.20 still has it).
        "--address=127.0.0.1".into(),
        format!("--port={}", s.controller_manager_port),
        "--leader-elect=false".into(),
        "--use-service-account-credentials=true".into(),
        format!("--service-account-private-key-file={}", p(&layout.sa_key())),
        format!("--root-ca-file={}", p(&layout.ca_cert())),
        format!("--kube-api-qps={}", s.client_qps),
        format!("--kube-api-burst={}", s.client_qps.saturating_mul(2)),
        // Deployments of thousands of pods: the ReplicaSet controller creates at most 500 a
        // sync with slow start; more workers let several workloads progress at once.
        "--concurrent-replicaset-syncs=10".into(),
        "--concurrent-deployment-syncs=10".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    if let Some(grace) = s.node_monitor_grace_period {
        args.push(format!("--node-monitor-grace-period={}", secs(grace)));
        // The monitor must look more often than the grace period, or it notices late.
        let period = (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(5));
        args.push(format!("--node-monitor-period={}", secs(period)));
    }
    if let Some(timeout) = s.pod_eviction_timeout {
        args.push(format!("--pod-eviction-timeout={}", secs(timeout)));
    }
    args
}

pub fn scheduler_args(layout: &Layout, s: &Settings) -> Vec<String> {
    vec![
        format!("--config={}", p(&layout.scheduler_config())),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", s.scheduler_secure_port),
        "--port=0".into(),
        "--v=1".into(),
    ]
}

/// KubeSchedulerConfiguration in the v1beta1 form that kube-scheduler 1.20 reads (JSON is YAML).
pub fn scheduler_config(layout: &Layout, s: &Settings, extenders: &[Value]) -> Value {
    let health = format!("127.0.0.1:{}", s.scheduler_health_port);
    json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1beta1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {
            "kubeconfig": p(&layout.kubeconfig()),
            "qps": s.client_qps,
            "burst": s.client_qps.saturating_mul(2),
        },
        "leaderElection": { "leaderElect": false },
        "healthzBindAddress": health,
        "metricsBindAddress": health,
        "extenders": extenders,
    })
}

/// An admin kubeconfig with the certificates inline, so it can be copied anywhere.
pub fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "mock-kind", "cluster": {
            "server": server, "certificate-authority-data": b64(ca_pem) } }],
        "users": [{ "name": "admin", "user": {
            "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem) } }],
        "contexts": [{ "name": "mock-kind", "context": { "cluster": "mock-kind", "user": "admin" } }],
        "current-context": "mock-kind",
    });
    // serde_json's output is valid YAML; kubectl and kube-rs both read it.
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// The `--feature-gates` flag every component gets for `gates` (`(name, on)`, in order), as
/// kind's cluster-wide `featureGates` does; `None` for none. In 1.20 every component's binary
/// knows every gate, so one list fits all.
pub fn feature_gates_arg(gates: &[(String, bool)]) -> Option<String> {
    if gates.is_empty() {
        return None;
    }
    let list: Vec<String> = gates.iter().map(|(g, on)| format!("{g}={on}")).collect();
    Some(format!("--feature-gates={}", list.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_gates() {
        let gate = |g: &str, on| (g.to_string(), on);
        let cases = [
            ("none", vec![], None),
            (
                "one",
                vec![gate("EphemeralContainers", true)],
                Some("--feature-gates=EphemeralContainers=true"),
            ),
            (
                "two, in order",
                vec![
                    gate("EphemeralContainers", true),
                    gate("TTLAfterFinished", false),
                ],
                Some("--feature-gates=EphemeralContainers=true,TTLAfterFinished=false"),
            ),
        ];
        for (name, gates, want) in cases {
            assert_eq!(feature_gates_arg(&gates).as_deref(), want, "{name}");
        }
    }

    fn layout() -> Layout {
        Layout {
            dir: PathBuf::from("/cp"),
            etcd_data: PathBuf::from("/shm/etcd"),
        }
    }

    fn settings() -> Settings {
        Settings {
            etcd_client_port: 2001,
            etcd_peer_port: 2002,
            apiserver_port: 6001,
            controller_manager_port: 7001,
            scheduler_secure_port: 8001,
            scheduler_health_port: 8002,
            client_qps: 100,
            node_monitor_grace_period: None,
            pod_eviction_timeout: None,
        }
    }

    fn has(args: &[String], want: &str) -> bool {
        args.iter().any(|a| a == want)
    }

    #[test]
    fn command_lines_use_the_given_ports_and_files() {
        let (l, s) = (layout(), settings());
        let cases: Vec<(&str, Vec<String>, &str)> = vec![
            (
                "etcd client",
                etcd_args(&l, &s),
                "--listen-client-urls=http://127.0.0.1:2001",
            ),
            ("etcd data", etcd_args(&l, &s), "--data-dir=/shm/etcd"),
            (
                "apiserver etcd",
                apiserver_args(&l, &s),
                "--etcd-servers=http://127.0.0.1:2001",
            ),
            (
                "apiserver port",
                apiserver_args(&l, &s),
                "--secure-port=6001",
            ),
            (
                "apiserver loopback kubelets",
                apiserver_args(&l, &s),
                "--kubelet-preferred-address-types=InternalIP",
            ),
            (
                "apiserver kubelet client",
                apiserver_args(&l, &s),
                "--kubelet-client-certificate=/cp/apiserver-kubelet-client.crt",
            ),
            (
                "apiserver front proxy ca",
                apiserver_args(&l, &s),
                "--requestheader-client-ca-file=/cp/front-proxy-ca.crt",
            ),
            (
                "apiserver front proxy client",
                apiserver_args(&l, &s),
                "--proxy-client-cert-file=/cp/front-proxy-client.crt",
            ),
            (
                "apiserver rbac",
                apiserver_args(&l, &s),
                "--authorization-mode=Node,RBAC",
            ),
            (
                "audit policy",
                audit_args(&l),
                "--audit-policy-file=/cp/audit-policy.json",
            ),
            (
                "audit log",
                audit_args(&l),
                "--audit-log-path=/cp/audit.log",
            ),
            ("audit json", audit_args(&l), "--audit-log-format=json"),
            ("cm port", controller_manager_args(&l, &s), "--port=7001"),
            (
                "cm qps",
                controller_manager_args(&l, &s),
                "--kube-api-qps=100",
            ),
            (
                "cm burst",
                controller_manager_args(&l, &s),
                "--kube-api-burst=200",
            ),
            (
                "cm kubeconfig",
                controller_manager_args(&l, &s),
                "--kubeconfig=/cp/admin.kubeconfig",
            ),
            (
                "scheduler config",
                scheduler_args(&l, &s),
                "--config=/cp/scheduler-config.json",
            ),
            (
                "scheduler port",
                scheduler_args(&l, &s),
                "--secure-port=8001",
            ),
        ];
        for (name, args, want) in cases {
            assert!(has(&args, want), "{name}: {want} not in {args:?}");
        }
        assert!(
            !controller_manager_args(&l, &s)
                .iter()
                .any(|a| a.starts_with("--node-monitor")),
            "no grace-period flags unless asked"
        );
    }

    #[test]
    fn grace_period_sets_a_faster_monitor() {
        let cases = [
            (Duration::from_secs(8), "--node-monitor-period=2s"),
            (Duration::from_secs(2), "--node-monitor-period=1s"),
            (Duration::from_secs(60), "--node-monitor-period=5s"),
        ];
        for (grace, want) in cases {
            let s = Settings {
                node_monitor_grace_period: Some(grace),
                ..settings()
            };
            let args = controller_manager_args(&layout(), &s);
            assert!(has(&args, want), "{grace:?}: {args:?}");
            assert!(
                has(
                    &args,
                    &format!("--node-monitor-grace-period={}s", grace.as_secs())
                ),
                "{grace:?}: {args:?}"
            );
        }
    }

    #[test]
    fn scheduler_config_carries_extenders_and_loopback_health() {
        let ext = json!({"urlPrefix": "http://127.0.0.1:9999/", "filterVerb": "filter"});
        let cfg = scheduler_config(&layout(), &settings(), std::slice::from_ref(&ext));
        assert_eq!(cfg["apiVersion"], "kubescheduler.config.k8s.io/v1beta1");
        assert_eq!(cfg["extenders"][0], ext);
        assert_eq!(cfg["healthzBindAddress"], "127.0.0.1:8002");
        assert_eq!(
            cfg["clientConnection"]["kubeconfig"],
            "/cp/admin.kubeconfig"
        );
        assert_eq!(cfg["clientConnection"]["qps"], 100);
        assert_eq!(cfg["leaderElection"]["leaderElect"], false);
    }

    #[test]
    fn kubeconfig_embeds_base64_credentials() {
        let text = kubeconfig("https://127.0.0.1:6001", "CA", "CERT", "KEY");
        let doc: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6001"
        );
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(doc["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(doc["current-context"], "mock-kind");
    }
}
