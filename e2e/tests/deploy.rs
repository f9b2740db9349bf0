//! deploy/: the Kustomize overlays, the images and the kind configuration, checked against the real
//! tools and the real control plane.
//!
//! - Every overlay renders with `kubectl kustomize` and passes `kubectl apply --dry-run=server`
//!   on the harness's Kubernetes (1.20: see [`for_server`] for the PodDisruptionBudget).
//! - Applied for real, the RBAC grants each service what it calls and nothing more, as the real
//!   authorizer answers `kubectl auth can-i --as=<service account>`; applying twice changes nothing.
//! - Rendered pods keep the restricted pod-security settings; only the extender uses hostNetwork,
//!   alone in its own namespace; every other pod passes a pure check of the Pod Security
//!   Standards' "restricted" profile, which their namespace enforces.
//! - Every environment variable the manifests set is a flag of the binary the container runs, and
//!   the binaries run with the manifests' environment under their service accounts' RBAC alone:
//!   their probes answer, the webhook publishes its caBundle, the hollow node's Nodes get Ready and
//!   go away within the pod's termination grace period.
//! - deploy/kind/cluster.yaml mounts a KubeSchedulerConfiguration whose extender is the address the
//!   extender listens on, and the real kube-scheduler accepts that extender entry.
//! - The Dockerfiles build the binaries the manifests run, as user 65532 on a minimal base.
//! - The make targets: `secret.load`, `nodes` and the guards of `deploy` on the real control plane;
//!   `make kind` with stand-ins for kind and docker (neither runs on this machine).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use e2e::{ControlPlane, Options, workspace_root};
use serde::Deserialize;
use serde_json::Value;

const OVERLAYS: [&str; 4] = ["kind", "dev", "scale", "metrics"];
/// The kind overlay plus components/metrics-api: what the tests that apply one overlay for real
/// apply, so the opt-in component is exercised with everything `kind` has.
const APPLIED: &str = "metrics";
const NAMESPACE: &str = "mock-kind";
/// The extender's namespace: it alone needs hostNetwork, so it alone is not "restricted".
const EXTENDER_NAMESPACE: &str = "mock-kind-extender";
const REGISTRY_SECRET: &str = "mock-kind-registry";
/// The node the kind overlays bind the extender to: `<cluster name>-control-plane`.
const KIND_CONTROL_PLANE: &str = "mock-kind-control-plane";

/// A workload of the base, its container and the binary that container's image runs.
struct Service {
    kind: &'static str,
    namespace: &'static str,
    workload: &'static str,
    container: &'static str,
    image: &'static str,
    package: &'static str,
    bin: &'static str,
    /// The flag's variable that names a kubeconfig file.
    kubeconfig_env: &'static str,
}

const SERVICES: [Service; 3] = [
    Service {
        kind: "Deployment",
        namespace: EXTENDER_NAMESPACE,
        workload: "mock-kind-scheduler",
        container: "scheduler",
        image: "mock-kind/scheduler",
        package: "scheduler",
        bin: "mock-kind-scheduler",
        kubeconfig_env: "MOCK_KIND_KUBECONFIG",
    },
    Service {
        kind: "Deployment",
        namespace: NAMESPACE,
        workload: "mock-kind-webhook",
        container: "webhook",
        image: "mock-kind/webhook",
        package: "webhook",
        bin: "mock-kind-webhook",
        kubeconfig_env: "MOCK_KIND_KUBECONFIG",
    },
    Service {
        kind: "StatefulSet",
        namespace: NAMESPACE,
        workload: "hollow-node",
        container: "hollow-node",
        image: "mock-kind/hollow-node",
        package: "hollow-node",
        bin: "hollow-node",
        kubeconfig_env: "MOCK_KIND_KUBECONFIG",
    },
];

/// Variables the manifests may set that no flag reads, and what reads them instead.
const LIBRARY_ENV: [(&str, &str); 3] = [
    ("RUST_LOG", "telemetry::init_logging (tracing's EnvFilter)"),
    (
        "KUBERNETES_SERVICE_HOST",
        "kube-rs's in-cluster configuration",
    ),
    (
        "KUBERNETES_SERVICE_PORT",
        "kube-rs's in-cluster configuration",
    ),
];

// ---------------------------------------------------------------------------------------------
// Helpers: processes, YAML, object lookup.

fn repo(rel: &str) -> PathBuf {
    workspace_root().join(rel)
}

/// Runs `cmd` with `stdin` as its input (see [`e2e::process::run_with_input`]).
fn output(cmd: &mut Command, stdin: Option<&str>) -> Output {
    e2e::process::run_with_input(cmd, stdin).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` and returns its stdout; fails the test with both streams when it fails.
fn succeed(cmd: &mut Command, stdin: Option<&str>) -> String {
    let what = format!("{cmd:?}");
    let out = output(cmd, stdin);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl(kubeconfig: &Path) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig);
    cmd
}

fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_file(rel: &str) -> Value {
    let path = repo(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut docs = yaml_docs(&text, rel);
    assert_eq!(docs.len(), 1, "{rel}: want exactly one YAML document");
    docs.remove(0)
}

/// `kubectl kustomize deploy/overlays/<overlay>`, parsed.
fn render(overlay: &str) -> Vec<Value> {
    let dir = repo(&format!("deploy/overlays/{overlay}"));
    let text = succeed(Command::new("kubectl").arg("kustomize").arg(&dir), None);
    let objs = yaml_docs(&text, &format!("kubectl kustomize {}", dir.display()));
    assert!(!objs.is_empty(), "overlay {overlay} renders nothing");
    objs
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn id(obj: &Value) -> String {
    format!("{}/{}", text(obj, "/kind"), text(obj, "/metadata/name"))
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| text(o, "/kind") == kind && text(o, "/metadata/name") == name)
        .unwrap_or_else(|| {
            let have: Vec<String> = objs.iter().map(id).collect();
            panic!("no {kind}/{name} among {have:?}")
        })
}

fn service_container<'a>(objs: &'a [Value], s: &Service) -> (&'a Value, &'a Value) {
    let workload = find(objs, s.kind, s.workload);
    let pod = workload
        .pointer("/spec/template/spec")
        .unwrap_or_else(|| panic!("{} has no pod template", id(workload)));
    let container = pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == s.container)
        .unwrap_or_else(|| panic!("{} has no container {}", id(workload), s.container));
    (pod, container)
}

/// Every pod template of the rendered objects, named by its workload.
fn pod_specs(objs: &[Value]) -> Vec<(String, &Value)> {
    objs.iter()
        .filter_map(|o| {
            let spec = match text(o, "/kind") {
                "Pod" => o.pointer("/spec"),
                "CronJob" => o.pointer("/spec/jobTemplate/spec/template/spec"),
                _ => o.pointer("/spec/template/spec"),
            }?;
            Some((id(o), spec))
        })
        .collect()
}

fn all_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| pod[k].as_array().into_iter().flatten())
}

fn env_var<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env_var(container, name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

fn env_field_ref(container: &Value, name: &str) -> Option<String> {
    env_var(container, name).map(|e| text(e, "/valueFrom/fieldRef/fieldPath").to_owned())
}

/// The workspace version: the tag the kind and scale overlays give the images.
fn workspace_version() -> String {
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).expect("read Cargo.toml");
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(rest) = line.strip_prefix("version") {
            return rest
                .trim_start_matches([' ', '='])
                .trim_matches('"')
                .to_owned();
        }
    }
    panic!("Cargo.toml: no version in [workspace.package]")
}

/// `<bin> --help`, with no MOCK_KIND_* variable leaking into clap's `[env: ...]` annotations.
fn help(s: &Service) -> String {
    let mut cmd = Command::new(built_binary(s));
    cmd.env_clear().arg("--help");
    let text = succeed(&mut cmd, None);
    assert!(
        text.contains("Usage:"),
        "{} --help printed no usage:\n{text}",
        s.bin
    );
    text
}

/// The help block of one flag: from `--<flag>` to the next flag.
fn flag_help<'a>(help: &'a str, flag: &str) -> &'a str {
    let start = help
        .find(&format!("--{flag} "))
        .or_else(|| help.find(&format!("--{flag}\n")))
        .unwrap_or_else(|| panic!("no --{flag} in:\n{help}"));
    let rest = &help[start..];
    let end = rest[2..].find("\n  -").map(|i| i + 2).unwrap_or(rest.len());
    &rest[..end]
}

fn bracketed<'a>(block: &'a str, label: &str) -> Option<&'a str> {
    let start = block.find(&format!("[{label}: "))? + label.len() + 3;
    let len = block[start..].find(']')?;
    Some(&block[start..start + len])
}

// ---------------------------------------------------------------------------------------------
// Rendering: what each overlay promises.

#[test]
fn every_overlay_renders_what_it_promises() {
    struct Want {
        overlay: &'static str,
        tag: String,
        scheduler_replicas: i64,
        webhook_replicas: i64,
        hollow_replicas: i64,
        /// The HollowNodePool `hollow`'s nodes, which the hollow-node replicas share.
        pool_nodes: i64,
    }
    let version = workspace_version();
    let cases = [
        Want {
            overlay: "kind",
            tag: version.clone(),
            scheduler_replicas: 1,
            webhook_replicas: 2,
            hollow_replicas: 1,
            pool_nodes: 100,
        },
        Want {
            overlay: "dev",
            tag: "dev".into(),
            scheduler_replicas: 1,
            webhook_replicas: 1,
            hollow_replicas: 1,
            pool_nodes: 100,
        },
        Want {
            overlay: "metrics",
            tag: version.clone(),
            scheduler_replicas: 1,
            webhook_replicas: 2,
            hollow_replicas: 1,
            pool_nodes: 100,
        },
        Want {
            overlay: "scale",
            tag: version,
            scheduler_replicas: 1,
            webhook_replicas: 2,
            hollow_replicas: 10,
            pool_nodes: 1000,
        },
    ];
    for want in &cases {
        let o = want.overlay;
        let objs = render(o);
        find(&objs, "Namespace", NAMESPACE);
        find(&objs, "Namespace", EXTENDER_NAMESPACE);

        // Images: the tags `make images` builds for this overlay, never pulled when present.
        for s in &SERVICES {
            let (pod, c) = service_container(&objs, s);
            assert_eq!(
                text(c, "/image"),
                format!("{}:{}", s.image, want.tag),
                "{o}: {} image",
                s.workload
            );
            assert_eq!(
                text(c, "/imagePullPolicy"),
                "IfNotPresent",
                "{o}: {} imagePullPolicy",
                s.workload
            );
            let secrets: Vec<&str> = pod["imagePullSecrets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| text(r, "/name"))
                .collect();
            assert!(
                secrets.contains(&REGISTRY_SECRET),
                "{o}: {} lacks imagePullSecrets {REGISTRY_SECRET}",
                s.workload
            );
        }

        let replicas = |kind: &str, name: &str| {
            find(&objs, kind, name)
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
        };
        assert_eq!(
            replicas("Deployment", "mock-kind-scheduler"),
            Some(want.scheduler_replicas),
            "{o}: extender replicas"
        );
        assert_eq!(
            replicas("Deployment", "mock-kind-webhook"),
            Some(want.webhook_replicas),
            "{o}: webhook replicas"
        );
        assert_eq!(
            replicas("StatefulSet", "hollow-node"),
            Some(want.hollow_replicas),
            "{o}: hollow-node replicas"
        );

        // Hollow nodes: parallel replicas sharing the pool, at the pod's IP.
        let sts = find(&objs, "StatefulSet", "hollow-node");
        assert_eq!(
            text(sts, "/spec/podManagementPolicy"),
            "Parallel",
            "{o}: hollow-node podManagementPolicy"
        );
        let governing = find(&objs, "Service", text(sts, "/spec/serviceName"));
        assert_eq!(
            text(governing, "/spec/clusterIP"),
            "None",
            "{o}: the StatefulSet's Service must be headless"
        );
        let (_, hollow) = service_container(&objs, &SERVICES[2]);
        assert_eq!(
            env_value(hollow, "MOCK_KIND_POOL").as_deref(),
            Some("hollow"),
            "{o}: the replicas run the pool"
        );
        assert!(
            env_var(hollow, "MOCK_KIND_NODES").is_none(),
            "{o}: no flag-sized nodes beside the pool"
        );
        assert_eq!(
            find(&objs, "HollowNodePool", "hollow")
                .pointer("/spec/replicas")
                .and_then(Value::as_i64),
            Some(want.pool_nodes),
            "{o}: the pool's nodes"
        );
        assert_eq!(
            env_field_ref(hollow, "POD_NAMESPACE").as_deref(),
            Some("metadata.namespace"),
            "{o}: the membership Leases' namespace from the downward API"
        );
        assert_eq!(
            env_field_ref(hollow, "POD_NAME").as_deref(),
            Some("metadata.name"),
            "{o}: POD_NAME from the downward API"
        );
        assert_eq!(
            env_field_ref(hollow, "POD_IP").as_deref(),
            Some("status.podIP"),
            "{o}: POD_IP from the downward API"
        );

        // The extender: on the control-plane node's host network, bound there by name (the
        // scheduler cannot place it), talking to the API server on its own node.
        let ext = find(&objs, "Deployment", "mock-kind-scheduler");
        let (pod, c) = service_container(&objs, &SERVICES[0]);
        assert_eq!(pod["hostNetwork"], true, "{o}: extender hostNetwork");
        assert_eq!(
            text(pod, "/nodeName"),
            KIND_CONTROL_PLANE,
            "{o}: extender nodeName"
        );
        assert!(
            pod.pointer("/nodeSelector/node-role.kubernetes.io~1control-plane")
                .is_some(),
            "{o}: extender nodeSelector"
        );
        let tolerated: Vec<&str> = pod["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| text(t, "/key"))
            .collect();
        assert!(
            tolerated.contains(&"node-role.kubernetes.io/control-plane"),
            "{o}: extender tolerations {tolerated:?}"
        );
        assert_eq!(
            text(ext, "/spec/strategy/type"),
            "Recreate",
            "{o}: two extenders cannot share 127.0.0.1:8888"
        );
        assert_eq!(
            env_field_ref(c, "KUBERNETES_SERVICE_HOST").as_deref(),
            Some("status.hostIP"),
            "{o}: extender API address"
        );

        // The webhook: Service, PDB and MutatingWebhookConfiguration all reach its pods.
        let (pod, c) = service_container(&objs, &SERVICES[1]);
        let labels = &find(&objs, "Deployment", "mock-kind-webhook")["spec"]["template"]["metadata"]
            ["labels"];
        let selects = |selector: &Value, what: &str| {
            let map = selector
                .as_object()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| panic!("{o}: {what} has an empty selector"));
            for (k, v) in map {
                assert_eq!(
                    &labels[k], v,
                    "{o}: {what} selects {k}={v}, the webhook pods do not carry it"
                );
            }
        };
        let svc = find(&objs, "Service", "mock-kind-webhook");
        selects(&svc["spec"]["selector"], "Service mock-kind-webhook");
        let pdb = find(&objs, "PodDisruptionBudget", "mock-kind-webhook");
        selects(
            &pdb["spec"]["selector"]["matchLabels"],
            "PodDisruptionBudget mock-kind-webhook",
        );
        let port_names: Vec<&str> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| text(p, "/name"))
            .collect();
        let svc_ports = svc["spec"]["ports"]
            .as_array()
            .expect("webhook Service ports");
        for p in svc_ports {
            let target = text(p, "/targetPort");
            assert!(
                port_names.contains(&target),
                "{o}: Service targetPort {target} is no port of the webhook container {port_names:?}"
            );
        }
        let mwc = find(&objs, "MutatingWebhookConfiguration", "mock-kind-webhook");
        for hook in mwc["webhooks"].as_array().expect("webhooks") {
            let svc_ref = &hook["clientConfig"]["service"];
            assert_eq!(
                text(svc_ref, "/name"),
                "mock-kind-webhook",
                "{o}: webhook {} service",
                hook["name"]
            );
            assert_eq!(
                text(svc_ref, "/namespace"),
                NAMESPACE,
                "{o}: webhook {} service namespace",
                hook["name"]
            );
            let port = svc_ref["port"].as_i64().unwrap_or(443);
            assert!(
                svc_ports.iter().any(|p| p["port"].as_i64() == Some(port)),
                "{o}: the Service has no port {port}"
            );
        }
        assert!(
            pod["serviceAccountName"] == "mock-kind-webhook",
            "{o}: webhook service account"
        );

        // Every namespaced object says where it goes (there is no namespace transformer), every
        // pod's ServiceAccount exists and is bound to a role.
        for obj in &objs {
            let kind = text(obj, "/kind");
            let cluster_scoped = [
                "Namespace",
                "ClusterRole",
                "ClusterRoleBinding",
                "MutatingWebhookConfiguration",
                "CustomResourceDefinition",
                "HollowNodePool",
                "APIService",
            ];
            if !cluster_scoped.contains(&kind) {
                let ns = text(obj, "/metadata/namespace");
                let want_ns = if kind.starts_with("Role") && ns == "kube-node-lease" {
                    "kube-node-lease"
                } else if kind == "RoleBinding"
                    && text(obj, "/metadata/name") == "mock-kind-hollow-node-auth-reader"
                {
                    // components/metrics-api: binds the apiserver's own Role, which is there.
                    "kube-system"
                } else if text(obj, "/metadata/name") == "mock-kind-scheduler" {
                    EXTENDER_NAMESPACE
                } else {
                    NAMESPACE
                };
                assert_eq!(ns, want_ns, "{o}: {} namespace", id(obj));
            }
        }
        for (workload, pod) in pod_specs(&objs) {
            let sa = text(pod, "/serviceAccountName");
            let sa_ns = text(find(&objs, "ServiceAccount", sa), "/metadata/namespace");
            let workload_ns = SERVICES
                .iter()
                .find(|s| format!("{}/{}", s.kind, s.workload) == workload)
                .map_or("", |s| s.namespace);
            assert_eq!(sa_ns, workload_ns, "{o}: {workload}'s ServiceAccount {sa}");
            let bound = objs
                .iter()
                .filter(|b| text(b, "/kind").ends_with("RoleBinding"))
                .any(|b| {
                    b["subjects"].as_array().into_iter().flatten().any(|s| {
                        s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == sa_ns
                    })
                });
            assert!(
                bound,
                "{o}: {workload}'s ServiceAccount {sa} is bound to no role"
            );
        }
    }
}

#[test]
fn rendered_pods_meet_the_restricted_profile() {
    for o in OVERLAYS {
        let objs = render(o);
        let pods = pod_specs(&objs);
        assert_eq!(
            pods.len(),
            SERVICES.len(),
            "{o}: workloads {:?}",
            pods.iter().map(|p| &p.0).collect::<Vec<_>>()
        );
        for (workload, pod) in pods {
            let at = |path: &str| pod.pointer(path).cloned().unwrap_or(Value::Null);
            let pod_checks: [(&str, bool); 7] = [
                (
                    "securityContext.runAsNonRoot true",
                    at("/securityContext/runAsNonRoot") == true,
                ),
                (
                    "securityContext.runAsUser 65532",
                    at("/securityContext/runAsUser") == 65532,
                ),
                (
                    "securityContext.seccompProfile RuntimeDefault",
                    at("/securityContext/seccompProfile/type") == "RuntimeDefault",
                ),
                ("no hostPID", at("/hostPID") != true),
                ("no hostIPC", at("/hostIPC") != true),
                (
                    "no hostPath volume",
                    !pod["volumes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|v| v.get("hostPath").is_some()),
                ),
                // hostNetwork is the one exception, for the extender alone (see deploy/base/namespace.yaml).
                (
                    "hostNetwork only for the extender",
                    at("/hostNetwork") != true || workload == "Deployment/mock-kind-scheduler",
                ),
            ];
            for (check, ok) in pod_checks {
                assert!(ok, "{o}: {workload}: {check}");
            }
            for c in all_containers(pod) {
                let name = text(c, "/name");
                let sc = |path: &str| {
                    c.pointer(&format!("/securityContext{path}"))
                        .cloned()
                        .unwrap_or(Value::Null)
                };
                let dropped: Vec<&str> = c
                    .pointer("/securityContext/capabilities/drop")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let probe_path =
                    |probe: &str| text(c, &format!("/{probe}/httpGet/path")).to_owned();
                let checks: [(&str, bool); 12] = [
                    ("runAsNonRoot true", sc("/runAsNonRoot") == true),
                    ("runAsUser 65532", sc("/runAsUser") == 65532),
                    (
                        "allowPrivilegeEscalation false",
                        sc("/allowPrivilegeEscalation") == false,
                    ),
                    (
                        "readOnlyRootFilesystem true",
                        sc("/readOnlyRootFilesystem") == true,
                    ),
                    ("not privileged", sc("/privileged") != true),
                    ("capabilities drop ALL", dropped.contains(&"ALL")),
                    (
                        "no capabilities added",
                        sc("/capabilities/add")
                            .as_array()
                            .is_none_or(|a| a.is_empty()),
                    ),
                    (
                        "seccompProfile RuntimeDefault",
                        sc("/seccompProfile/type") == "RuntimeDefault",
                    ),
                    (
                        "cpu and memory requests",
                        c.pointer("/resources/requests/cpu").is_some()
                            && c.pointer("/resources/requests/memory").is_some(),
                    ),
                    (
                        "cpu and memory limits",
                        c.pointer("/resources/limits/cpu").is_some()
                            && c.pointer("/resources/limits/memory").is_some(),
                    ),
                    (
                        "liveness probe on /healthz",
                        probe_path("livenessProbe") == "/healthz",
                    ),
                    (
                        "readiness probe on /readyz",
                        probe_path("readinessProbe") == "/readyz",
                    ),
                ];
                for (check, ok) in checks {
                    assert!(ok, "{o}: {workload} container {name}: {check}");
                }
            }
        }
    }
}

/// What keeps a pod out of the Pod Security Standards' "restricted" profile (Kubernetes docs,
/// "Pod Security Standards", every baseline and restricted control), read from its spec alone,
/// as the PodSecurity admission of a 1.23+ cluster would. The harness's 1.20 has no such
/// admission, so this pure check stands in for it.
fn restricted_violations(pod: &Value) -> BTreeSet<String> {
    const VOLUME_TYPES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    const SAFE_SYSCTLS: [&str; 5] = [
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
    ];
    let mut out = BTreeSet::new();
    let mut flag = |cond: bool, what: String| {
        if cond {
            out.insert(what);
        }
    };
    let psc = &pod["securityContext"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        flag(pod[host] == true, host.to_owned());
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        let kind = v
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .find(|k| *k != "name")
            .map_or("", String::as_str);
        flag(
            !VOLUME_TYPES.contains(&kind),
            format!("volume {} of type {kind}", text(v, "/name")),
        );
    }
    for sysctl in psc["sysctls"].as_array().into_iter().flatten() {
        let name = text(sysctl, "/name");
        flag(!SAFE_SYSCTLS.contains(&name), format!("sysctl {name}"));
    }
    let seccomp_ok = |sc: &Value| {
        matches!(
            text(sc, "/seccompProfile/type"),
            "RuntimeDefault" | "Localhost"
        )
    };
    let selinux_ok = |sc: &Value| {
        matches!(
            text(sc, "/seLinuxOptions/type"),
            "" | "container_t" | "container_init_t" | "container_kvm_t"
        ) && text(sc, "/seLinuxOptions/user").is_empty()
            && text(sc, "/seLinuxOptions/role").is_empty()
    };
    flag(!selinux_ok(psc), "pod seLinuxOptions".into());
    flag(psc["runAsUser"] == 0, "pod runAsUser 0".into());
    flag(
        text(psc, "/seccompProfile/type") == "Unconfined",
        "pod seccomp Unconfined".into(),
    );
    for c in all_containers(pod) {
        let name = text(c, "/name");
        let sc = &c["securityContext"];
        let field = |f: &str| format!("container {name}: {f}");
        flag(sc["privileged"] == true, field("privileged"));
        flag(
            sc["allowPrivilegeEscalation"] != false,
            field("allowPrivilegeEscalation not false"),
        );
        flag(
            sc["runAsNonRoot"] != true && psc["runAsNonRoot"] != true
                || sc["runAsNonRoot"] == false,
            field("runAsNonRoot not true"),
        );
        flag(sc["runAsUser"] == 0, field("runAsUser 0"));
        flag(
            !(seccomp_ok(sc) || sc["seccompProfile"].is_null() && seccomp_ok(psc)),
            field("seccompProfile not RuntimeDefault or Localhost"),
        );
        let caps = |k: &str| -> Vec<&str> {
            sc["capabilities"][k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect()
        };
        flag(
            !caps("drop").contains(&"ALL"),
            field("capabilities not dropping ALL"),
        );
        for cap in caps("add") {
            flag(
                cap != "NET_BIND_SERVICE",
                field(&format!("capability {cap} added")),
            );
        }
        flag(!selinux_ok(sc), field("seLinuxOptions"));
        flag(
            !matches!(text(sc, "/procMount"), "" | "Default"),
            field("procMount"),
        );
        for p in c["ports"].as_array().into_iter().flatten() {
            flag(
                p["hostPort"].as_i64().unwrap_or(0) != 0,
                field(&format!("hostPort {}", p["hostPort"])),
            );
        }
    }
    out
}

/// The namespace a rendered pod template lands in, and that namespace's Pod Security labels.
fn pod_security(objs: &[Value], workload: &str) -> (String, String) {
    let obj = objs
        .iter()
        .find(|o| id(o) == workload)
        .unwrap_or_else(|| panic!("no {workload}"));
    let ns = text(obj, "/metadata/namespace").to_owned();
    let enforce = text(
        find(objs, "Namespace", &ns),
        "/metadata/labels/pod-security.kubernetes.io~1enforce",
    )
    .to_owned();
    (ns, enforce)
}

#[test]
fn only_the_extender_leaves_the_restricted_profile_in_its_own_namespace() {
    for o in OVERLAYS {
        let objs = render(o);
        for (workload, pod) in pod_specs(&objs) {
            let (ns, enforce) = pod_security(&objs, &workload);
            let violations = restricted_violations(pod);
            if workload == "Deployment/mock-kind-scheduler" {
                // hostNetwork and nothing else; its namespace says so and holds nothing else.
                assert_eq!(
                    violations,
                    BTreeSet::from(["hostNetwork".to_owned()]),
                    "{o}: {workload}"
                );
                assert_eq!(
                    (ns.as_str(), enforce.as_str()),
                    (EXTENDER_NAMESPACE, "privileged"),
                    "{o}: {workload}"
                );
            } else {
                assert!(violations.is_empty(), "{o}: {workload}: {violations:?}");
                assert_eq!(enforce, "restricted", "{o}: {workload} in {ns}");
            }
        }
        let in_extender_ns: Vec<String> = pod_specs(&objs)
            .into_iter()
            .map(|(w, _)| w)
            .filter(|w| pod_security(&objs, w).0 == EXTENDER_NAMESPACE)
            .collect();
        assert_eq!(in_extender_ns, ["Deployment/mock-kind-scheduler"], "{o}");
        let restricted = find(&objs, "Namespace", NAMESPACE);
        for mode in ["warn", "audit"] {
            assert_eq!(
                text(
                    restricted,
                    &format!("/metadata/labels/pod-security.kubernetes.io~1{mode}")
                ),
                "restricted",
                "{o}: {NAMESPACE} {mode}"
            );
        }
    }

    // The check can fail: each edit of the webhook's pod breaks one control.
    let objs = render("kind");
    let (pod, _) = service_container(&objs, &SERVICES[1]);
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit, &str); 8] = [
        (
            "escalation",
            |p| p["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = true.into(),
            "allowPrivilegeEscalation",
        ),
        (
            "caps kept",
            |p| p["containers"][0]["securityContext"]["capabilities"] = serde_json::json!({}),
            "dropping ALL",
        ),
        (
            "cap added",
            |p| {
                p["containers"][0]["securityContext"]["capabilities"]["add"] =
                    serde_json::json!(["NET_ADMIN"])
            },
            "NET_ADMIN",
        ),
        (
            "root allowed",
            |p| {
                p["securityContext"]["runAsNonRoot"] = false.into();
                p["containers"][0]["securityContext"]["runAsNonRoot"] = Value::Null;
            },
            "runAsNonRoot",
        ),
        (
            "no seccomp",
            |p| {
                p["securityContext"]["seccompProfile"] = Value::Null;
                p["containers"][0]["securityContext"]["seccompProfile"] = Value::Null;
            },
            "seccompProfile",
        ),
        (
            "hostPath",
            |p| p["volumes"] = serde_json::json!([{"name": "h", "hostPath": {"path": "/"}}]),
            "hostPath",
        ),
        (
            "hostPort",
            |p| p["containers"][0]["ports"][0]["hostPort"] = 8443.into(),
            "hostPort",
        ),
        ("hostPID", |p| p["hostPID"] = true.into(), "hostPID"),
    ];
    for (name, edit, want) in edits {
        let mut bad = pod.clone();
        edit(&mut bad);
        let got = restricted_violations(&bad);
        assert!(got.iter().any(|v| v.contains(want)), "{name}: {got:?}");
    }
}

#[test]
fn manifests_set_only_variables_their_binaries_read() {
    let rendered: Vec<(&str, Vec<Value>)> = OVERLAYS.iter().map(|o| (*o, render(o))).collect();
    for s in &SERVICES {
        let help = help(s);
        for (o, objs) in &rendered {
            let (_, c) = service_container(objs, s);
            let names: BTreeSet<&str> = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| text(e, "/name"))
                .collect();
            assert!(
                names.iter().any(|n| n.starts_with("MOCK_KIND_")),
                "{o}: {} sets no MOCK_KIND_* variable",
                s.workload
            );
            for name in names {
                if LIBRARY_ENV.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                // A flag's variable (`[env: NAME=...]`), or one its help names as a default
                // (the hollow node's "Default: $POD_NAME").
                let read =
                    help.contains(&format!("[env: {name}=")) || help.contains(&format!("${name}"));
                assert!(
                    read,
                    "{o}: {} sets {name}, which {} does not read (its --help has no `[env: {name}=...]` \
                     nor `${name}`; variables read by libraries instead: {LIBRARY_ENV:?}):\n{help}",
                    s.workload, s.bin
                );
            }
        }
    }
}

#[test]
fn webhook_configuration_is_the_webhook_crates() {
    // deploy/base holds a copy (Kustomize loads nothing outside its root); it may differ from
    // webhook/config only by the caBundle, which the webhook fills in at start.
    fn without_ca_bundle(mut mwc: Value) -> Value {
        if let Some(hooks) = mwc.get_mut("webhooks").and_then(Value::as_array_mut) {
            for hook in hooks {
                if let Some(cc) = hook.get_mut("clientConfig").and_then(Value::as_object_mut) {
                    cc.remove("caBundle");
                }
            }
        }
        mwc
    }
    let ours = without_ca_bundle(yaml_file(
        "deploy/base/webhook-mutatingwebhookconfiguration.yaml",
    ));
    let theirs = without_ca_bundle(yaml_file(
        "webhook/config/mutatingwebhookconfiguration.yaml",
    ));
    assert_eq!(
        ours["metadata"]["name"], theirs["metadata"]["name"],
        "MutatingWebhookConfiguration name"
    );
    assert_eq!(
        ours["webhooks"], theirs["webhooks"],
        "deploy/base's webhooks differ from webhook/config's"
    );
}

// ---------------------------------------------------------------------------------------------
// Affinity mode: no extender; the webhook writes the placement into pods.

#[test]
fn affinity_overlay_places_pods_without_the_extender() {
    let objs = render("affinity");
    let extender = objs.iter().any(|o| {
        text(o, "/kind") == "Deployment" && text(o, "/metadata/name") == SERVICES[0].workload
    });
    assert!(!extender, "overlays/affinity still runs the extender");
    // The webhook serves /place, hollow nodes register tainted: variables their binaries read.
    let settings = [
        (&SERVICES[1], "MOCK_KIND_PLACEMENT", "affinity"),
        (
            &SERVICES[2],
            "MOCK_KIND_NODE_TAINTS",
            "mock-kind.io/hollow=true:NoSchedule",
        ),
    ];
    for (s, name, value) in settings {
        let (_, c) = service_container(&objs, s);
        let set = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{} does not set {name}", s.workload));
        assert_eq!(set["value"], value, "{}: {name}", s.workload);
        assert!(
            help(s).contains(&format!("[env: {name}=")),
            "{} does not read {name}",
            s.bin
        );
    }
    // The placement webhook beside the UID webhook, which is the base's unchanged.
    let mwc = find(&objs, "MutatingWebhookConfiguration", "mock-kind-webhook");
    let base = yaml_file("deploy/base/webhook-mutatingwebhookconfiguration.yaml");
    let hooks = mwc["webhooks"].as_array().cloned().unwrap_or_default();
    assert_eq!(hooks.len(), 2, "{hooks:#?}");
    assert_eq!(hooks[0], base["webhooks"][0], "the UID webhook");
    let place = &hooks[1];
    assert_eq!(text(place, "/name"), "placement.webhook.mock-kind.io");
    assert_eq!(text(place, "/clientConfig/service/path"), "/place");
    assert_eq!(text(place, "/failurePolicy"), "Fail");
    assert_eq!(text(place, "/rules/0/resources/0"), "pods");
    assert_eq!(text(place, "/rules/0/operations/0"), "CREATE");
    let excluded = &place["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(text(excluded, "/operator"), "NotIn");
    for ns in ["kube-system", NAMESPACE] {
        assert!(
            excluded["values"]
                .as_array()
                .is_some_and(|v| v.iter().any(|n| n == ns)),
            "{ns} must be left out (failurePolicy Fail): {excluded}"
        );
    }
    // Its kind cluster configures no scheduler.
    let cluster = yaml_file("deploy/kind/cluster-affinity.yaml");
    assert_eq!(cluster["kind"], "Cluster");
    assert_eq!(cluster["name"], "mock-kind");
    assert!(cluster.get("kubeadmConfigPatches").is_none(), "{cluster}");
}

// ---------------------------------------------------------------------------------------------
// kind: the cluster's own kube-scheduler calls the extender.

#[test]
fn kind_cluster_mounts_a_scheduler_config_that_points_at_the_extender() {
    let cluster = yaml_file("deploy/kind/cluster.yaml");
    assert_eq!(cluster["kind"], "Cluster");
    assert_eq!(cluster["apiVersion"], "kind.x-k8s.io/v1alpha4");
    assert_eq!(
        format!("{}-control-plane", text(&cluster, "/name")),
        KIND_CONTROL_PLANE,
        "the kind overlay binds the extender to <cluster name>-control-plane"
    );
    let nodes = cluster["nodes"].as_array().expect("nodes");
    let cp = nodes
        .iter()
        .find(|n| n["role"] == "control-plane")
        .expect("a control-plane node");

    // The kubeadm patch (cluster- or node-level): kube-scheduler --config, and the volume it reads.
    let patches: Vec<Value> = [
        &cluster["kubeadmConfigPatches"],
        &cp["kubeadmConfigPatches"],
    ]
    .into_iter()
    .flat_map(|p| p.as_array().into_iter().flatten())
    .map(|p| {
        let text = p.as_str().expect("a kubeadm patch is a YAML string");
        let mut docs = yaml_docs(text, "kubeadm patch");
        assert_eq!(docs.len(), 1, "one object per kubeadm patch");
        docs.remove(0)
    })
    .collect();
    let cc = patches
        .iter()
        .find(|p| p["kind"] == "ClusterConfiguration")
        .expect("a ClusterConfiguration patch");
    assert!(
        cc.get("apiVersion").is_none(),
        "the ClusterConfiguration patch must carry no apiVersion, so kind applies it to v1beta3 and v1beta4 alike"
    );
    let config_path = text(cc, "/scheduler/extraArgs/config");
    assert!(
        config_path.starts_with('/'),
        "scheduler.extraArgs.config: {config_path:?}"
    );
    let volume = cc["scheduler"]["extraVolumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| config_path.starts_with(&format!("{}/", text(v, "/mountPath"))))
        .unwrap_or_else(|| panic!("no scheduler extraVolume holds {config_path}"));
    assert_eq!(
        volume["readOnly"], true,
        "the scheduler's config volume is read-only"
    );

    // ... which comes from the repository through the node's extraMount.
    let node_path = text(volume, "/hostPath");
    let mount = cp["extraMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            node_path == text(m, "/containerPath")
                || node_path.starts_with(&format!("{}/", text(m, "/containerPath")))
        })
        .unwrap_or_else(|| panic!("no extraMount of the control-plane node provides {node_path}"));
    assert_eq!(mount["readOnly"], true, "the extraMount is read-only");
    let host_rel = text(mount, "/hostPath");
    assert!(
        host_rel.starts_with("deploy/kind/"),
        "extraMounts hostPath {host_rel:?}: `make kind` makes paths under deploy/kind/ absolute"
    );
    let in_node = Path::new(node_path)
        .strip_prefix(text(mount, "/containerPath"))
        .expect("under the mount");
    let in_volume = Path::new(config_path)
        .strip_prefix(text(volume, "/mountPath"))
        .expect("under the volume");
    let file = Path::new(host_rel).join(in_node).join(in_volume);
    let sched = yaml_file(file.to_str().expect("utf-8 path"));

    assert_eq!(
        sched["apiVersion"],
        "kubescheduler.config.k8s.io/v1",
        "{}",
        file.display()
    );
    assert_eq!(
        sched["kind"],
        "KubeSchedulerConfiguration",
        "{}",
        file.display()
    );
    assert_eq!(
        text(&sched, "/clientConnection/kubeconfig"),
        "/etc/kubernetes/scheduler.conf",
        "kubeadm's scheduler kubeconfig (flags are not read for what --config sets)"
    );
    let reference = yaml_file("scheduler/config/scheduler-config.v1.yaml");
    assert_eq!(
        sched["extenders"],
        reference["extenders"],
        "{} drifted from scheduler/config/scheduler-config.v1.yaml",
        file.display()
    );
    let extenders = sched["extenders"].as_array().expect("extenders");
    assert_eq!(extenders.len(), 1, "one extender");
    let ext = &extenders[0];
    assert_eq!(
        ext["ignorable"], false,
        "ignorable: false (pods wait rather than land on the wrong nodes)"
    );
    assert_eq!(ext["filterVerb"], "filter");
    assert_ne!(
        ext["enableHTTPS"], true,
        "the extender serves plain HTTP on loopback"
    );
    let url = text(ext, "/urlPrefix");
    let addr = url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .unwrap_or_else(|| panic!("urlPrefix {url:?} is not http://host:port/"));

    // The address the extender listens on: its default, and what the kind overlay sets.
    let block_help = help(&SERVICES[0]);
    let listen = flag_help(&block_help, "listen");
    let default = bracketed(listen, "default")
        .unwrap_or_else(|| panic!("--listen has no default:\n{listen}"));
    let env_name = bracketed(listen, "env")
        .and_then(|e| e.split('=').next())
        .expect("--listen reads a variable");
    assert_eq!(
        addr, default,
        "urlPrefix {url} vs mock-kind-scheduler --listen default"
    );
    let objs = render("kind");
    let (pod, c) = service_container(&objs, &SERVICES[0]);
    assert_eq!(
        env_value(c, env_name).as_deref().unwrap_or(default),
        addr,
        "the extender Deployment's {env_name}"
    );
    assert_eq!(
        pod["hostNetwork"], true,
        "kube-scheduler reaches 127.0.0.1 of its node only on the host network"
    );
    assert!(
        addr.starts_with("127.0.0.1:"),
        "the extender listens on loopback: {addr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Images.

#[test]
fn dockerfiles_build_the_binaries_the_manifests_run() {
    for s in &SERVICES {
        let rel = format!(
            "deploy/docker/{}.Dockerfile",
            s.image.trim_start_matches("mock-kind/")
        );
        let text =
            std::fs::read_to_string(repo(&rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
        let instructions: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let froms: Vec<&&str> = instructions
            .iter()
            .filter(|l| l.starts_with("FROM "))
            .collect();
        assert!(froms.len() >= 2, "{rel}: multi-stage build");
        assert!(
            froms[0].contains("--platform=$BUILDPLATFORM"),
            "{rel}: the build stage runs natively and cross-compiles"
        );
        assert!(
            text.contains("ARG TARGETARCH")
                && text.contains("aarch64-unknown-linux-musl")
                && text.contains("x86_64-unknown-linux-musl"),
            "{rel}: static musl builds for amd64 and arm64"
        );
        let last_from = froms.last().expect("a final stage");
        assert!(
            last_from.contains("gcr.io/distroless/static")
                || last_from.trim_end() == "FROM scratch",
            "{rel}: the final image is distroless/static or scratch, not {last_from}"
        );
        let final_stage = &text[text.rfind("\nFROM ").expect("final FROM")..];
        assert!(
            final_stage.contains("\nUSER 65532:65532"),
            "{rel}: numeric non-root USER in the final stage"
        );
        assert!(
            text.contains(&format!("--package {} --bin {}", s.package, s.bin)),
            "{rel}: builds package {} binary {}",
            s.package,
            s.bin
        );
        assert!(
            final_stage.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{}\"]", s.bin)),
            "{rel}: runs /usr/local/bin/{}",
            s.bin
        );
        assert!(
            repo(&format!("{rel}.dockerignore")).is_file(),
            "{rel}: a Dockerfile-specific .dockerignore keeps target/ out of the build context"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The real control plane.

/// `kubectl api-versions` of the server.
fn api_versions(kubeconfig: &Path) -> BTreeSet<String> {
    succeed(kubectl(kubeconfig).arg("api-versions"), None)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The objects as this server can take them. policy/v1 PodDisruptionBudget arrived in Kubernetes
/// 1.21; the harness runs 1.20, which serves only policy/v1beta1. On such a server the PDB is
/// applied as policy/v1beta1 with the same spec. The two versions differ only for an empty
/// selector (v1beta1: no pod, v1: every pod), and ours is not empty (checked here). Kind node
/// images are all newer than 1.21 and take the manifests as they are.
fn for_server(objs: &[Value], versions: &BTreeSet<String>) -> Vec<Value> {
    let mut objs = objs.to_vec();
    if versions.contains("policy/v1") {
        return objs;
    }
    assert!(
        versions.contains("policy/v1beta1"),
        "the server serves no PodDisruptionBudget API: {versions:?}"
    );
    for obj in &mut objs {
        if obj["kind"] == "PodDisruptionBudget" && obj["apiVersion"] == "policy/v1" {
            let selector = obj
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object);
            assert!(
                selector.is_some_and(|m| !m.is_empty()),
                "{}: an empty selector means something else in v1beta1",
                id(obj)
            );
            obj["apiVersion"] = "policy/v1beta1".into();
        }
    }
    objs
}

/// The objects as one v1 List, which kubectl applies item by item.
fn as_list(objs: &[Value]) -> String {
    serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objs }).to_string()
}

/// `kubectl apply -f -` of `objs`; returns kubectl's one line per object.
fn apply(kubeconfig: &Path, objs: &[Value], extra: &[&str]) -> Vec<String> {
    let out = succeed(
        kubectl(kubeconfig).args(["apply", "-f", "-"]).args(extra),
        Some(&as_list(objs)),
    );
    out.lines().map(str::to_owned).collect()
}

/// `make deploy`'s order: the CRDs first, until Established (a HollowNodePool is refused while
/// its kind does not exist), then every object. Returns kubectl's lines for every object.
fn apply_deploy(kubeconfig: &Path, objs: &[Value]) -> Vec<String> {
    let crds: Vec<Value> = objs
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .cloned()
        .collect();
    if !crds.is_empty() {
        apply(kubeconfig, &crds, &[]);
    }
    for crd in &crds {
        let name = format!("crd/{}", text(crd, "/metadata/name"));
        succeed(
            kubectl(kubeconfig).args([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &name,
            ]),
            None,
        );
    }
    apply(kubeconfig, objs, &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn every_overlay_passes_a_server_side_dry_run() {
    // The real kube-scheduler (1.20: config v1beta1, whose extender fields are v1's) runs with the
    // kind configuration's extender entry: the harness fails to start if the scheduler rejects it.
    let kind_sched = yaml_file("deploy/kind/scheduler/scheduler-config.yaml");
    let extenders = kind_sched["extenders"]
        .as_array()
        .cloned()
        .expect("extenders");
    let cp = ControlPlane::start(Options {
        extenders,
        ..Options::default()
    })
    .await
    .expect("control plane");
    let kc = cp.kubeconfig();
    let versions = api_versions(&kc);

    // A server-side dry run persists nothing, so the namespace would be missing for every object
    // in it: create it first, as `kubectl apply` of the Namespace does before them for real.
    for ns in [NAMESPACE, EXTENDER_NAMESPACE] {
        succeed(kubectl(&kc).args(["create", "namespace", ns]), None);
    }
    // Likewise the CRD, which `make deploy` applies and waits for before the overlay: a pool
    // is refused while its kind does not exist.
    e2e::pools::install_crd(&cp).expect("the HollowNodePool CRD");

    for o in OVERLAYS.into_iter().chain(["affinity"]) {
        let objs = render(o);
        let lines = if versions.contains("policy/v1") {
            // A server with policy/v1 takes the overlay exactly as `make deploy` applies it.
            let dir = repo(&format!("deploy/overlays/{o}"));
            let out = succeed(
                kubectl(&kc)
                    .args(["apply", "--dry-run=server", "-k"])
                    .arg(&dir),
                None,
            );
            out.lines().map(str::to_owned).collect()
        } else {
            apply(&kc, &for_server(&objs, &versions), &["--dry-run=server"])
        };
        assert_eq!(
            lines.len(),
            objs.len(),
            "{o}: one line per object:\n{}",
            lines.join("\n")
        );
        for obj in &objs {
            let name = text(obj, "/metadata/name");
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(&format!("/{name} ")) && l.ends_with("(server dry run)")),
                "{o}: {} not accepted:\n{}",
                id(obj),
                lines.join("\n")
            );
        }
    }

    // The check can fail: the same dry run refuses a field no Kubernetes has (kubectl validates
    // against the server's schema; 1.20 has no server-side field validation, so kubectl checks
    // its OpenAPI document itself) ...
    let mut bogus = for_server(&render("kind"), &versions);
    let webhook = bogus
        .iter_mut()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "mock-kind-webhook")
        .expect("webhook Deployment");
    webhook["spec"]["template"]["spec"]["containers"][0]["securityContextt"] =
        serde_json::json!({});
    let out = output(
        kubectl(&kc).args(["apply", "--dry-run=server", "-f", "-"]),
        Some(&as_list(&bogus)),
    );
    assert!(!out.status.success(), "a misspelt field passed the dry run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("securityContextt"),
        "the refusal names the field: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and, on a server without policy/v1, the PodDisruptionBudget as written.
    if !versions.contains("policy/v1") {
        let pdb = find(&render("kind"), "PodDisruptionBudget", "mock-kind-webhook").clone();
        let out = output(
            kubectl(&kc).args(["apply", "--dry-run=server", "-f", "-"]),
            Some(&as_list(&[pdb])),
        );
        assert!(
            !out.status.success(),
            "a policy/v1 PodDisruptionBudget passed on a server without policy/v1"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn applied_rbac_grants_each_service_what_it_needs_and_no_more() {
    let cp = ControlPlane::start(Options {
        scheduler: false,
        ..Options::default()
    })
    .await
    .expect("control plane");
    let kc = cp.kubeconfig();
    let objs = for_server(&render(APPLIED), &api_versions(&kc));

    // `make deploy` twice: the second apply changes nothing.
    let first = apply_deploy(&kc, &objs);
    assert_eq!(
        first.len(),
        objs.len(),
        "first apply:\n{}",
        first.join("\n")
    );
    let second = apply(&kc, &objs, &[]);
    assert!(
        second.iter().all(|l| l.ends_with(" unchanged")),
        "second apply changed something:\n{}",
        second.join("\n")
    );

    const SCHED: &str = "system:serviceaccount:mock-kind-extender:mock-kind-scheduler";
    const HOOK: &str = "system:serviceaccount:mock-kind:mock-kind-webhook";
    const HOLLOW: &str = "system:serviceaccount:mock-kind:hollow-node";
    const MWC: &str = "mutatingwebhookconfigurations.admissionregistration.k8s.io";
    const LEASES: &str = "leases.coordination.k8s.io";
    const POOLS: &str = "hollownodepools.mock-kind.io";
    // (who, verb, resource[/name], namespace: "" none, "*" all; subresource, allowed)
    let cases: &[(&str, &str, &str, &str, &str, bool)] = &[
        (SCHED, "list", "nodes", "", "", true),
        (SCHED, "watch", "nodes", "", "", true),
        (SCHED, "watch", "namespaces", "", "", true),
        (SCHED, "create", "events.events.k8s.io", "default", "", true),
        (SCHED, "create", "events", "default", "", false),
        (SCHED, "patch", "events.events.k8s.io", "default", "", false),
        (SCHED, "get", "nodes", "", "", false),
        (SCHED, "list", "pods", "*", "", false),
        (SCHED, "patch", "nodes", "", "", false),
        (SCHED, "update", "namespaces", "", "", false),
        (SCHED, "get", "secrets", "mock-kind", "", false),
        (SCHED, "*", "*", "*", "", false),
        (HOOK, "watch", "namespaces", "", "", true),
        (HOOK, "patch", "namespaces", "", "", true),
        (HOOK, "update", "namespaces", "", "", false),
        // The namespace controller re-reads a namespace (and its pool record on `mock-kind`)
        // after a conflicting write.
        (HOOK, "get", "namespaces", "", "", true),
        (
            HOOK,
            "patch",
            "secrets/mock-kind-webhook-tls",
            NAMESPACE,
            "",
            false,
        ),
        (HOOK, "delete", "namespaces", "", "", false),
        (HOOK, "create", "secrets", "mock-kind", "", true),
        (
            HOOK,
            "get",
            "secrets/mock-kind-webhook-tls",
            "mock-kind",
            "",
            true,
        ),
        (
            HOOK,
            "update",
            "secrets/mock-kind-webhook-tls",
            "mock-kind",
            "",
            true,
        ),
        (
            HOOK,
            "delete",
            "secrets/mock-kind-webhook-tls",
            "mock-kind",
            "",
            false,
        ),
        (HOOK, "get", "secrets/someone-elses", "mock-kind", "", false),
        (HOOK, "list", "secrets", "mock-kind", "", false),
        (
            HOOK,
            "get",
            "secrets/mock-kind-webhook-tls",
            "kube-system",
            "",
            false,
        ),
        (
            HOOK,
            "get",
            &format!("{MWC}/mock-kind-webhook"),
            "",
            "",
            true,
        ),
        (
            HOOK,
            "patch",
            &format!("{MWC}/mock-kind-webhook"),
            "",
            "",
            false,
        ),
        (
            HOOK,
            "update",
            &format!("{MWC}/mock-kind-webhook"),
            "",
            "",
            true,
        ),
        (
            HOOK,
            "patch",
            &format!("{MWC}/someone-elses"),
            "",
            "",
            false,
        ),
        (HOOK, "create", MWC, "", "", false),
        (HOOK, "create", "pods", "default", "", false),
        (HOOK, "*", "*", "*", "", false),
        (HOLLOW, "create", "nodes", "", "", true),
        (HOLLOW, "patch", "nodes", "", "", true),
        (HOLLOW, "delete", "nodes", "", "", true),
        (HOLLOW, "patch", "nodes", "", "status", true),
        (HOLLOW, "update", "nodes", "", "status", false),
        (HOLLOW, "update", "nodes", "", "", false),
        (HOLLOW, "create", LEASES, "kube-node-lease", "", true),
        (HOLLOW, "patch", LEASES, "kube-node-lease", "", true),
        (HOLLOW, "update", LEASES, "kube-node-lease", "", true),
        (HOLLOW, "get", LEASES, "kube-node-lease", "", false),
        (HOLLOW, "watch", LEASES, "kube-node-lease", "", false),
        (HOLLOW, "create", LEASES, "default", "", false),
        // --pool: membership Leases in its own namespace; the pool, its finalizer and status.
        (HOLLOW, "create", LEASES, "mock-kind", "", true),
        (HOLLOW, "patch", LEASES, "mock-kind", "", true),
        (HOLLOW, "list", LEASES, "mock-kind", "", true),
        (HOLLOW, "delete", LEASES, "mock-kind", "", true),
        (HOLLOW, "update", LEASES, "mock-kind", "", false),
        (HOLLOW, "watch", LEASES, "mock-kind", "", false),
        (HOLLOW, "list", POOLS, "", "", true),
        (HOLLOW, "watch", POOLS, "", "", true),
        (HOLLOW, "patch", POOLS, "", "", true),
        (HOLLOW, "patch", POOLS, "", "status", true),
        (HOLLOW, "create", POOLS, "", "", false),
        (HOLLOW, "delete", POOLS, "", "", false),
        (HOLLOW, "update", POOLS, "", "", false),
        (HOLLOW, "watch", "pods", "*", "", true),
        (HOLLOW, "delete", "pods", "default", "", true),
        (HOLLOW, "patch", "pods", "default", "status", true),
        (HOLLOW, "create", "pods", "default", "", false),
        (HOLLOW, "update", "pods", "default", "", false),
        (
            HOLLOW,
            "create",
            "events.events.k8s.io",
            "default",
            "",
            true,
        ),
        (HOLLOW, "patch", "events.events.k8s.io", "default", "", true),
        (HOLLOW, "create", "events", "default", "", false),
        // Secrets: nothing unless a namespace binds mock-kind-hollow-node-secret-refs.
        (HOLLOW, "get", "secrets", "default", "", false),
        (HOLLOW, "list", "secrets", "*", "", false),
        (HOLLOW, "watch", "secrets", "default", "", false),
        (HOLLOW, "list", "configmaps", "*", "", true),
        (HOLLOW, "get", "configmaps", "default", "", false),
        // overlays/metrics: the apiserver's front-proxy CA, that one ConfigMap only.
        (
            HOLLOW,
            "get",
            "configmaps/extension-apiserver-authentication",
            "kube-system",
            "",
            true,
        ),
        (
            HOLLOW,
            "get",
            "configmaps/kube-proxy",
            "kube-system",
            "",
            false,
        ),
        (HOLLOW, "update", "configmaps", "kube-system", "", false),
        (HOLLOW, "watch", "persistentvolumeclaims", "*", "", true),
        (
            HOLLOW,
            "get",
            "persistentvolumeclaims",
            "default",
            "",
            false,
        ),
        (HOLLOW, "get", "pods", "default", "", false),
        (HOLLOW, "create", "secrets", "default", "", false),
        (HOLLOW, "update", "configmaps", "default", "", false),
        (HOLLOW, "delete", "namespaces", "", "", false),
        (HOLLOW, "*", "*", "*", "", false),
    ];
    let mut wrong = Vec::new();
    for (who, verb, resource, ns, sub, want) in cases {
        let mut cmd = kubectl(&kc);
        cmd.args(["auth", "can-i", verb, resource, "--as", who]);
        match *ns {
            "" => {}
            "*" => {
                cmd.arg("--all-namespaces");
            }
            ns => {
                cmd.args(["--namespace", ns]);
            }
        }
        if !sub.is_empty() {
            cmd.args(["--subresource", sub]);
        }
        let out = output(&mut cmd, None);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            answer == "yes" || answer == "no",
            "kubectl auth can-i {verb} {resource} --as {who}: {answer:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if (answer == "yes") != *want {
            let scope = if ns.is_empty() {
                String::new()
            } else {
                format!(" in {ns}")
            };
            let sub = if sub.is_empty() {
                String::new()
            } else {
                format!(" ({sub})")
            };
            wrong.push(format!(
                "{who} {verb} {resource}{sub}{scope}: want {want}, the authorizer says {answer}"
            ));
        }
    }
    assert!(wrong.is_empty(), "RBAC:\n{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The binaries, run as the kind overlay's pods would run them.

/// The binary `s.bin`, built as `make test` builds it (see [`e2e::bins::workspace_binaries`]).
fn built_binary(s: &Service) -> PathBuf {
    let bin = e2e::bins::workspace_binaries()
        .expect("workspace binaries")
        .join(s.bin);
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

/// The ServiceAccount's token (Kubernetes 1.20: the token Secret the controller-manager makes).
async fn sa_token(client: &kube::Client, namespace: &str, sa: &str) -> String {
    e2e::accounts::token(client, namespace, sa)
        .await
        .expect("service account token")
}

/// A kubeconfig that authenticates as the ServiceAccount: the process gets its RBAC and no more.
fn sa_kubeconfig(cp: &ControlPlane, sa: &str, token: &str) -> PathBuf {
    e2e::accounts::kubeconfig(cp, sa, token).expect("service account kubeconfig")
}

/// A service process; killed when dropped.
struct Running {
    name: &'static str,
    child: std::process::Child,
    log: PathBuf,
}

impl Running {
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!(
            "--- last lines of {} ({}) ---\n{tail}",
            self.name,
            self.log.display()
        )
    }
    /// Fails the test, with the log, when the process has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.tail());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port a probe names: a number, or one of the container's port names.
fn probe_port(container: &Value, probe: &Value) -> u16 {
    let port = &probe["httpGet"]["port"];
    let n = port.as_u64().or_else(|| {
        let name = port.as_str()?;
        container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)?["containerPort"]
            .as_u64()
    });
    n.and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("probe port {port} of {}", container["name"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn services_run_with_the_manifests_env_probes_and_rbac() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::{Node, Secret};
    use std::net::SocketAddr;
    use std::time::Duration;

    let cp = ControlPlane::start(Options {
        scheduler: false,
        ..Options::default()
    })
    .await
    .expect("control plane");
    let kc = cp.kubeconfig();
    let objs = for_server(&render(APPLIED), &api_versions(&kc));
    apply_deploy(&kc, &objs);
    let client = cp.client();
    let mut metrics_port = None;

    // Start each service as its pod would: the container's environment (downward-API values
    // filled in as the kubelet would), its ServiceAccount's token, and only the listen address
    // moved to a free loopback port.
    struct Started {
        run: Running,
        probe_path: String,
        https: bool,
        port: u16,
    }
    fn logs(started: &[Started]) -> String {
        started
            .iter()
            .map(|s| s.run.tail())
            .collect::<Vec<_>>()
            .join("\n")
    }
    let mut started = Vec::new();
    for s in &SERVICES {
        let (pod, c) = service_container(&objs, s);
        let sa = text(pod, "/serviceAccountName");
        let token = sa_token(&client, s.namespace, sa).await;
        let mut cmd = Command::new(built_binary(s));
        cmd.env_clear()
            .env(s.kubeconfig_env, sa_kubeconfig(&cp, sa, &token));
        let mut listen = None;
        for e in c["env"].as_array().into_iter().flatten() {
            let name = text(e, "/name");
            if name.starts_with("KUBERNETES_SERVICE_") {
                continue; // the kubeconfig above says where the API server is
            }
            let mut value = match e["value"].as_str() {
                Some(v) => v.to_owned(),
                None => match text(e, "/valueFrom/fieldRef/fieldPath") {
                    "metadata.namespace" => s.namespace.to_owned(),
                    "metadata.name" => format!("{}-0", s.workload),
                    "status.podIP" | "status.hostIP" => "127.0.0.1".to_owned(),
                    other => panic!(
                        "{}: {name} from {other:?}: no value for it here",
                        s.workload
                    ),
                },
            };
            if let Ok(addr) = value.parse::<SocketAddr>() {
                let port = e2e::free_port();
                listen = Some((addr.port(), port));
                value = format!("127.0.0.1:{port}");
            }
            cmd.env(name, value);
        }
        if s.bin == "hollow-node" {
            // Its kubelet API binds <InternalIP>:10250 by default, its metrics API
            // <InternalIP>:6443; tests run side by side.
            cmd.env("MOCK_KIND_KUBELET_PORT", e2e::free_port().to_string());
            if env_value(c, "MOCK_KIND_METRICS_API_PORT").is_some() {
                let port = e2e::free_port();
                cmd.env("MOCK_KIND_METRICS_API_PORT", port.to_string());
                metrics_port = Some(port);
            }
        }
        let (manifest_port, port) = listen
            .unwrap_or_else(|| panic!("{}: no listen address in the environment", s.workload));
        let readiness = &c["readinessProbe"];
        assert_eq!(
            probe_port(c, readiness),
            manifest_port,
            "{}: the readiness probe's port vs the listen address",
            s.workload
        );
        assert_eq!(
            probe_port(c, &c["livenessProbe"]),
            manifest_port,
            "{}: the liveness probe's port",
            s.workload
        );
        let log = cp.dir().join(format!("{}.log", s.bin));
        let file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", s.bin));
        started.push(Started {
            run: Running {
                name: s.bin,
                child,
                log,
            },
            probe_path: text(readiness, "/httpGet/path").to_owned(),
            https: text(readiness, "/httpGet/scheme") == "HTTPS",
            port,
        });
    }

    // The webhook's certificate: bootstrapped into its Secret, its CA published in the caBundle.
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), NAMESPACE);
    let ca = e2e::wait_for(
        Duration::from_secs(120),
        "the webhook's Secret mock-kind-webhook-tls",
        || {
            let secrets = secrets.clone();
            async move {
                Ok(secrets
                    .get_opt("mock-kind-webhook-tls")
                    .await?
                    .and_then(|s| s.data?.remove("ca.crt")))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&started)));
    let ca_file = cp.dir().join("webhook-ca.crt");
    std::fs::write(&ca_file, &ca.0).expect("write webhook CA");
    let mwcs: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client.clone());
    let bundle = e2e::wait_for(
        Duration::from_secs(120),
        "the caBundle of mock-kind-webhook",
        || {
            let mwcs = mwcs.clone();
            async move {
                let mwc = mwcs.get("mock-kind-webhook").await?;
                let bundle = mwc
                    .webhooks
                    .into_iter()
                    .flatten()
                    .find_map(|w| w.client_config.ca_bundle);
                Ok(bundle.filter(|b| !b.0.is_empty()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&started)));
    assert_eq!(
        bundle.0, ca.0,
        "the caBundle is the CA of the bootstrapped Secret"
    );

    // Every readiness probe answers as the kubelet would ask it (the webhook's over TLS, checked
    // against its CA for the Service's DNS name, as the API server will).
    for st in &mut started {
        let (path, port, https, name) = (st.probe_path.clone(), st.port, st.https, st.run.name);
        let ca_file = ca_file.clone();
        let run = &mut st.run;
        let ready = e2e::wait_for(Duration::from_secs(90), &format!("{name} {path}"), || {
            run.assert_alive();
            let (path, ca_file) = (path.clone(), ca_file.clone());
            async move {
                let ok = if https {
                    let host = format!("mock-kind-webhook.{NAMESPACE}.svc");
                    output(
                        Command::new("curl")
                            .args(["-sf", "--max-time", "2", "--cacert"])
                            .arg(&ca_file)
                            .arg("--resolve")
                            .arg(format!("{host}:{port}:127.0.0.1"))
                            .arg(format!("https://{host}:{port}{path}")),
                        None,
                    )
                    .status
                    .success()
                } else {
                    e2e::wait::http_ok(port, &path).await
                };
                Ok(ok.then_some(()))
            }
        })
        .await;
        if let Err(e) = ready {
            panic!("{e}\n{}", st.run.tail());
        }
    }

    // The hollow node runs the overlay's pool: as many Nodes as the pool asks, Ready.
    let (_, hollow) = service_container(&objs, &SERVICES[2]);
    let pool = env_value(hollow, "MOCK_KIND_POOL").expect("MOCK_KIND_POOL");
    let want = find(&objs, "HollowNodePool", &pool)
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .expect("the pool's replicas") as usize;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    };
    let list_params = kube::api::ListParams::default().labels(&format!("mock-kind.io/pool={pool}"));
    let got = e2e::wait_for(
        Duration::from_secs(120),
        &format!("{want} Ready nodes of pool {pool}"),
        || {
            let nodes = nodes.clone();
            let lp = list_params.clone();
            async move {
                let mine = nodes.list(&lp).await?.items;
                Ok((mine.len() == want && mine.iter().all(ready)).then_some(mine.len()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&started)));
    assert_eq!(got, want);

    // Its metrics API (components/metrics-api) came up under the ServiceAccount's RBAC alone
    // (it read the front-proxy CA through the overlay's RoleBinding) and answers `kubectl top`
    // through the real aggregator. The overlay's APIService points at a Service of pods that
    // do not run here; it is pointed at the process on loopback instead.
    let port = metrics_port.expect("overlays/metrics sets MOCK_KIND_METRICS_API_PORT");
    let api = find(&objs, "APIService", "v1beta1.metrics.k8s.io");
    let svc = find(&objs, "Service", text(api, "/spec/service/name"));
    let target = svc
        .pointer("/spec/ports/0/targetPort")
        .and_then(Value::as_str)
        .expect("the Service's named targetPort");
    let named = hollow["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == target)
        .and_then(|p| p["containerPort"].as_u64());
    assert_eq!(
        named.map(|p| p.to_string()),
        env_value(hollow, "MOCK_KIND_METRICS_API_PORT"),
        "the Service's targetPort {target} is the port the metrics API listens on"
    );
    e2e::metrics_api::register(&client, port)
        .await
        .expect("point the APIService at the process");
    e2e::metrics_api::wait_available(&client, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&started)));
    let top = e2e::wait_for(
        Duration::from_secs(60),
        "kubectl top nodes lists the pool's nodes",
        || {
            let kc = kc.clone();
            async move {
                // The harness runs no kubelet: every node listed is a hollow one.
                let out = output(kubectl(&kc).args(["top", "nodes", "--no-headers"]), None);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                Ok((out.status.success() && text.lines().count() == want).then_some(text))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&started)));
    assert!(
        top.lines().all(|l| l.contains("100m")),
        "each idle node's overhead:\n{top}"
    );

    // SIGTERM, as the kubelet stops the pod: the replica leaves the pool (its membership Lease
    // in its namespace goes) and exits within the grace period; the pool's Nodes stay for the
    // next replica to adopt.
    let grace = find(&objs, "StatefulSet", "hollow-node")
        .pointer("/spec/template/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(30);
    let hollow_run = &mut started[2].run;
    let pid = hollow_run.child.id().to_string();
    succeed(Command::new("kill").args(["-TERM", &pid]), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(grace);
    while !matches!(hollow_run.child.try_wait(), Ok(Some(_))) {
        assert!(
            std::time::Instant::now() < deadline,
            "hollow-node still runs {grace} s after SIGTERM\n{}",
            hollow_run.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let members: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), NAMESPACE);
    let left = members
        .get_opt(&format!("hollownodepool-{pool}-hollow-node-0"))
        .await
        .expect("get the membership Lease");
    assert!(left.is_none(), "the replica's membership Lease outlived it");
    let kept = nodes.list(&list_params).await.expect("list").items.len();
    assert_eq!(kept, want, "the pool's Nodes stay when a replica stops");
}

// ---------------------------------------------------------------------------------------------
// The make targets that need only kubectl, through the root Makefile (bash -eu -o pipefail).

/// `make <args> KUBE_CONTEXT=` in the repository root, talking to the cluster of `kubeconfig`.
fn make(kubeconfig: &Path, args: &[&str]) -> Output {
    output(
        Command::new("make")
            .current_dir(workspace_root())
            .arg("--no-print-directory")
            .args(args)
            .arg("KUBE_CONTEXT=")
            .env("KUBECONFIG", kubeconfig),
        None,
    )
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn make_secret_load_nodes_and_deploy_guards_on_the_real_control_plane() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Secret;

    let cp = ControlPlane::start(Options {
        scheduler: false,
        ..Options::default()
    })
    .await
    .expect("control plane");
    let kc = cp.kubeconfig();
    let client = cp.client();

    // secret.load: a docker-registry Secret from a config.json, created once, then unchanged.
    let config = cp.dir().join("docker-config.json");
    let auth = r#"{"auths":{"registry.example":{"auth":"dXNlcjpwYXNz"}}}"#;
    std::fs::write(&config, auth).expect("write config.json");
    let file = format!("FILE={}", config.display());
    for round in ["first", "second"] {
        let out = make(&kc, &["secret.load", &file]);
        assert!(
            out.status.success(),
            "make secret.load ({round} run): {}",
            stderr_of(&out)
        );
    }
    // In both namespaces: every mock-kind pod names it in imagePullSecrets.
    for ns in [NAMESPACE, EXTENDER_NAMESPACE] {
        let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), ns);
        let secret = secrets.get(REGISTRY_SECRET).await.expect("registry Secret");
        assert_eq!(
            secret.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson"),
            "{ns}"
        );
        let data = secret.data.unwrap_or_default();
        assert_eq!(
            data.get(".dockerconfigjson").map(|b| b.0.as_slice()),
            Some(auth.as_bytes()),
            "{ns}: the Secret holds the file"
        );
    }
    // A config whose credentials live in a helper is refused with the reason.
    let helper = cp.dir().join("helper-config.json");
    std::fs::write(&helper, r#"{"credsStore":"desktop"}"#).expect("write config.json");
    let out = make(&kc, &["secret.load", &format!("FILE={}", helper.display())]);
    assert!(
        !out.status.success() && stderr_of(&out).contains("no inline credentials"),
        "{}",
        stderr_of(&out)
    );
    let out = make(&kc, &["secret.load", "FILE=/nonexistent/config.json"]);
    assert!(
        !out.status.success() && stderr_of(&out).contains("no file"),
        "{}",
        stderr_of(&out)
    );

    // nodes: resizes the hollow nodes of the applied overlay (0 replicas: no kubelet runs pods
    // here).
    apply_deploy(&kc, &for_server(&render("kind"), &api_versions(&kc)));
    let out = make(&kc, &["nodes", "REPLICAS=0", "NODES=7"]);
    assert!(out.status.success(), "make nodes: {}", stderr_of(&out));
    let sts: kube::Api<StatefulSet> = kube::Api::namespaced(client.clone(), NAMESPACE);
    let set =
        serde_json::to_value(sts.get("hollow-node").await.expect("StatefulSet")).expect("JSON");
    assert_eq!(
        set.pointer("/spec/replicas").and_then(Value::as_i64),
        Some(0),
        "replicas"
    );
    // The overlay runs the pool `hollow`: NODES is the pool's size.
    let pool = succeed(
        kubectl(&kc).args([
            "get",
            "hollownodepool/hollow",
            "-o",
            "jsonpath={.spec.replicas}",
        ]),
        None,
    );
    assert_eq!(pool.trim(), "7", "the pool's nodes");
    let (_, container) = service_container(std::slice::from_ref(&set), &SERVICES[2]);
    assert!(env_value(container, "MOCK_KIND_NODES").is_none());
    // On the flags (no MOCK_KIND_POOL), NODES is each replica's count.
    succeed(
        kubectl(&kc).args([
            "-n",
            NAMESPACE,
            "set",
            "env",
            "statefulset/hollow-node",
            "-c",
            "hollow-node",
            "MOCK_KIND_POOL-",
        ]),
        None,
    );
    let out = make(&kc, &["nodes", "NODES=5"]);
    assert!(out.status.success(), "make nodes: {}", stderr_of(&out));
    let set =
        serde_json::to_value(sts.get("hollow-node").await.expect("StatefulSet")).expect("JSON");
    let (_, container) = service_container(std::slice::from_ref(&set), &SERVICES[2]);
    assert_eq!(
        env_value(container, "MOCK_KIND_NODES").as_deref(),
        Some("5"),
        "nodes per replica on the flags"
    );
    for (args, needle) in [
        (&["nodes"][..], "usage: make nodes"),
        (&["nodes", "NODES=ten"][..], "whole numbers"),
        (&["deploy", "OVERLAY=nope"][..], "no overlay 'nope'"),
        // The kind overlay binds the extender to a node this cluster lacks: refused before applying.
        (
            &["deploy"][..],
            "binds the extender to node mock-kind-control-plane",
        ),
    ] {
        let out = make(&kc, args);
        assert!(
            !out.status.success() && stderr_of(&out).contains(needle),
            "make {args:?}: want a failure saying {needle:?}, got {}: {}",
            out.status,
            stderr_of(&out)
        );
    }
}

/// `make kind` with stand-ins for kind and docker (neither runs here): what it hands kind, and that
/// a second run creates nothing.
#[test]
fn make_kind_creates_the_cluster_once_with_an_absolute_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let record = dir.path().join("kind-calls");
    let clusters = dir.path().join("clusters");
    std::fs::write(&clusters, "").expect("write");
    // kind: records each call (and the config it reads on stdin); `get clusters` prints the file.
    let kind = format!(
        "#!/bin/sh\necho \"kind $*\" >> '{rec}'\n\
         if [ \"$1 $2\" = 'get clusters' ]; then cat '{clusters}'; exit 0; fi\n\
         if [ \"$1 $2\" = 'create cluster' ]; then cat > '{rec}.config'; fi\n",
        rec = record.display(),
        clusters = clusters.display()
    );
    for (name, script) in [("kind", kind.as_str()), ("docker", "#!/bin/sh\nexit 0\n")] {
        let path = bin.join(name);
        std::fs::write(&path, script).expect("write stand-in");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let make = |args: &[&str]| {
        output(
            Command::new("make")
                .current_dir(workspace_root())
                .arg("--no-print-directory")
                .args(args)
                .env("PATH", &path),
            None,
        )
    };

    let out = make(&["kind", "KUBE_VERSION=1.31.4"]);
    assert!(out.status.success(), "make kind: {}", stderr_of(&out));
    let calls = std::fs::read_to_string(&record).expect("kind was called");
    let create = calls
        .lines()
        .find(|l| l.starts_with("kind create cluster"))
        .unwrap_or_else(|| panic!("no kind create cluster in:\n{calls}"));
    for arg in [
        "--name mock-kind",
        "--image kindest/node:v1.31.4",
        "--config=-",
    ] {
        assert!(create.contains(arg), "{create}: lacks {arg}");
    }
    let config_text = std::fs::read_to_string(format!("{}.config", record.display()))
        .expect("the config kind read");
    let config = yaml_docs(&config_text, "the config make kind passes");
    let mounts: Vec<&Value> = config[0]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["extraMounts"].as_array().into_iter().flatten())
        .collect();
    assert!(!mounts.is_empty(), "no extraMounts in:\n{config_text}");
    for m in mounts {
        let host = Path::new(text(m, "/hostPath"));
        assert!(
            host.is_absolute() && host.join("scheduler-config.yaml").is_file(),
            "extraMounts hostPath {} must be the absolute path of deploy/kind/scheduler/",
            host.display()
        );
    }
    // Everything else is the file as it is in the repository.
    let mut as_written = yaml_file("deploy/kind/cluster.yaml");
    let mut passed = config[0].clone();
    for c in [&mut as_written, &mut passed] {
        for n in c["nodes"].as_array_mut().into_iter().flatten() {
            if let Some(ms) = n.get_mut("extraMounts") {
                *ms = Value::Null;
            }
        }
    }
    assert_eq!(
        passed, as_written,
        "make kind changed more than the mount paths"
    );

    // The cluster exists now: a second run creates nothing.
    std::fs::write(&clusters, "mock-kind\n").expect("write");
    std::fs::write(&record, "").expect("reset");
    let out = make(&["kind", "KUBE_VERSION=1.31.4"]);
    assert!(
        out.status.success(),
        "second make kind: {}",
        stderr_of(&out)
    );
    let calls = std::fs::read_to_string(&record).expect("calls");
    assert!(
        !calls.contains("create"),
        "the second make kind created again:\n{calls}"
    );

    // Node images older than the scheduler configuration's API are refused up front.
    std::fs::write(&clusters, "").expect("write");
    let out = make(&["kind", "KUBE_VERSION=1.20.2"]);
    assert!(
        !out.status.success() && stderr_of(&out).contains("too old"),
        "make kind KUBE_VERSION=1.20.2: {}",
        stderr_of(&out)
    );
}
