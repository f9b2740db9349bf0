//! Table tests of the pod lifecycle: steps of (time, expected status summary), each applied.

use super::*;
use k8s_openapi::api::core::v1::PodCondition;
use std::collections::HashSet;

mod init_decisions;
mod probe_decisions;
mod restart_policy;
mod sidecar_decisions;

fn ts(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(s).expect("ts")
}

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).expect("pod yaml")
}

const BASE: &str = r#"
metadata: {name: p, namespace: ns, uid: u1, creationTimestamp: "1970-01-01T00:01:40Z"}
spec:
  nodeName: hn-0
  containers: [{name: app, image: nginx}]
"#;

fn with(extra_meta: &str, extra_spec: &str) -> Pod {
    let mut p = pod(BASE);
    if !extra_meta.is_empty() {
        let m: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
            serde_yaml::from_str(extra_meta).expect("meta");
        p.metadata.annotations = m.annotations.or(p.metadata.annotations);
        p.metadata.owner_references = m.owner_references.or(p.metadata.owner_references);
        p.metadata.deletion_timestamp = m.deletion_timestamp.or(p.metadata.deletion_timestamp);
        p.metadata.deletion_grace_period_seconds = m
            .deletion_grace_period_seconds
            .or(p.metadata.deletion_grace_period_seconds);
    }
    if !extra_spec.is_empty() {
        let s: k8s_openapi::api::core::v1::PodSpec =
            serde_yaml::from_str(extra_spec).expect("spec");
        p.spec = Some(s);
    }
    p
}

fn run(p: &Pod, now: i64, present: &HashSet<String>) -> Outcome {
    let lookup = |r: &ObjRef| {
        let key = format!("{:?}/{}", r.kind, r.name);
        if present.contains(&key) {
            RefState::Present
        } else if present.contains(&format!("unbound:{key}")) {
            RefState::NotBound("Pending".into())
        } else {
            RefState::Missing
        }
    };
    evaluate(
        p,
        &PodContext {
            now: ts(now),
            host_ip: "127.0.0.1",
            pod_ip: Some(Ipv4Addr::new(10, 128, 0, 2)),
            settings: PodSettings::default(),
            lookup: &lookup,
        },
    )
}

/// Applies the outcome's status like the API would (merge of the top-level fields).
/// The `initRun`/`initFailures` annotations of init containers `init0`, `init1`, … from their
/// optional (run seconds, failures).
fn init_annotations(
    scripts: impl Iterator<Item = (Option<u64>, Option<u32>)>,
) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    for (i, (run, failures)) in scripts.enumerate() {
        if let Some(r) = run {
            annotations.insert(format!("mock-kind.io/initRun.init{i}"), format!("{r}s"));
        }
        if let Some(f) = failures {
            annotations.insert(format!("mock-kind.io/initFailures.init{i}"), f.to_string());
        }
    }
    annotations
}

/// One look at `p` at `now` (no objects present) in a property test: the status written
/// applied to `p`, and returned; a requeue below the minimum fails the case.
fn look(p: &mut Pod, now: i64) -> Result<PodStatus, proptest::test_runner::TestCaseError> {
    let o = run(p, now, &HashSet::new());
    if let Some(r) = o.requeue {
        proptest::prop_assert!(r >= MIN_REQUEUE, "{r:?}");
    }
    *p = apply(p, &o);
    Ok(p.status.clone().unwrap_or_default())
}

fn apply(p: &Pod, o: &Outcome) -> Pod {
    let mut p = p.clone();
    if let Some(s) = &o.status {
        p.status = Some(s.clone());
    }
    p
}

fn summary(o: &Outcome, p: &Pod) -> String {
    let st = o.status.clone().or(p.status.clone()).unwrap_or_default();
    let c = st.container_statuses.iter().flatten().next();
    let state = c
        .and_then(|c| c.state.as_ref())
        .map(|s| {
            if let Some(w) = &s.waiting {
                format!("waiting:{}", w.reason.clone().unwrap_or_default())
            } else if s.running.is_some() {
                "running".to_string()
            } else if let Some(t) = &s.terminated {
                format!("terminated:{}", t.reason.clone().unwrap_or_default())
            } else {
                "none".into()
            }
        })
        .unwrap_or_default();
    let ready = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
        .unwrap_or_default();
    format!(
        "{} {} ready={} ip={} restarts={} events={:?} requeue={:?} delete={}",
        st.phase.unwrap_or_default(),
        state,
        ready,
        st.pod_ip.unwrap_or_default(),
        c.map(|c| c.restart_count).unwrap_or(0),
        o.events.iter().map(|e| e.kind.reason()).collect::<Vec<_>>(),
        o.requeue.map(|d| d.as_secs()),
        o.delete
    )
}

#[test]
fn transitions() {
    let present: HashSet<String> = ["Secret/s", "ConfigMap/c", "Pvc/claim"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    struct Case {
        name: &'static str,
        pod: Pod,
        /// (seconds since epoch, expected summary) evaluated in order, each applied.
        steps: Vec<(i64, &'static str)>,
    }
    let cases = vec![
        Case {
            name: "plain pod runs at once",
            pod: with("", ""),
            steps: vec![
                (
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                ),
                (
                    200,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                ),
            ],
        },
        Case {
            name: "delayRunning",
            pod: with("annotations: {zhizuqiu.github.com/delayRunning: 10s}", ""),
            steps: vec![
                (
                    100,
                    "Pending waiting:ContainerCreating ready=False ip= restarts=0 events=[] requeue=Some(10) delete=false",
                ),
                (
                    105,
                    "Pending waiting:ContainerCreating ready=False ip= restarts=0 events=[] requeue=Some(5) delete=false",
                ),
                (
                    110,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                ),
            ],
        },
        Case {
            name: "delaySucceeded under Never",
            pod: with(
                "annotations: {mock-kind.io/delaySucceeded: 3s}",
                "{restartPolicy: Never, containers: [{name: app, image: nginx}]}",
            ),
            steps: vec![
                (
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=Some(3) delete=false",
                ),
                (
                    103,
                    "Succeeded terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                ),
                (
                    500,
                    "Succeeded terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                ),
            ],
        },
        Case {
            name: "delayFailed under Never",
            pod: with(
                "annotations: {mock-kind.io/delayFailed: 2s}",
                "{restartPolicy: Never, containers: [{name: app, image: nginx}]}",
            ),
            steps: vec![
                (
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=Some(2) delete=false",
                ),
                (
                    102,
                    "Failed terminated:Error ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                ),
            ],
        },
        Case {
            name: "delaySucceeded under Always: restarted at once, then after 10 s",
            pod: with("annotations: {mock-kind.io/delaySucceeded: 3s}", ""),
            steps: vec![
                (
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=Some(3) delete=false",
                ),
                (
                    103,
                    "Running running ready=True ip=10.128.0.2 restarts=1 events=[] requeue=Some(3) delete=false",
                ),
                (
                    106,
                    "Running waiting:CrashLoopBackOff ready=False ip=10.128.0.2 restarts=1 events=[\"BackOff\"] requeue=Some(10) delete=false",
                ),
                (
                    116,
                    "Running running ready=True ip=10.128.0.2 restarts=2 events=[] requeue=Some(3) delete=false",
                ),
                (
                    119,
                    "Running waiting:CrashLoopBackOff ready=False ip=10.128.0.2 restarts=2 events=[\"BackOff\"] requeue=Some(20) delete=false",
                ),
                (
                    139,
                    "Running running ready=True ip=10.128.0.2 restarts=3 events=[] requeue=Some(3) delete=false",
                ),
            ],
        },
        Case {
            name: "delayFailed under OnFailure restarts",
            pod: with(
                "annotations: {mock-kind.io/delayFailed: 2s}",
                "{restartPolicy: OnFailure, containers: [{name: app, image: nginx}]}",
            ),
            steps: vec![
                (
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=Some(2) delete=false",
                ),
                (
                    102,
                    "Running running ready=True ip=10.128.0.2 restarts=1 events=[] requeue=Some(2) delete=false",
                ),
                (
                    104,
                    "Running waiting:CrashLoopBackOff ready=False ip=10.128.0.2 restarts=1 events=[\"BackOff\"] requeue=Some(10) delete=false",
                ),
            ],
        },
        Case {
            name: "delaySucceeded under OnFailure succeeds",
            pod: with(
                "annotations: {mock-kind.io/delaySucceeded: 3s}",
                "{restartPolicy: OnFailure, containers: [{name: app, image: nginx}]}",
            ),
            steps: vec![
                (
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=Some(3) delete=false",
                ),
                (
                    103,
                    "Succeeded terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                ),
            ],
        },
        Case {
            name: "crashLoop under Never fails the pod",
            pod: with(
                "annotations: {mock-kind.io/crashLoop: 10s}",
                "{restartPolicy: Never, containers: [{name: app, image: nginx}]}",
            ),
            steps: vec![(
                100,
                "Failed terminated:Error ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
            )],
        },
        Case {
            name: "job pod completes after the default",
            pod: with(
                "ownerReferences: [{apiVersion: batch/v1, kind: Job, name: j, uid: j1}]",
                "{restartPolicy: Never, containers: [{name: app, image: busybox}]}",
            ),
            steps: vec![
                (
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=Some(5) delete=false",
                ),
                (
                    105,
                    "Succeeded terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                ),
            ],
        },
        Case {
            name: "crash loop with doubling back-off",
            pod: with("annotations: {mock-kind.io/crashLoop: 10s}", ""),
            steps: vec![
                (
                    100,
                    "Running waiting:CrashLoopBackOff ready=False ip=10.128.0.2 restarts=0 events=[\"BackOff\"] requeue=Some(10) delete=false",
                ),
                (
                    110,
                    "Running waiting:CrashLoopBackOff ready=False ip=10.128.0.2 restarts=1 events=[\"BackOff\"] requeue=Some(20) delete=false",
                ),
                (
                    135,
                    "Running waiting:CrashLoopBackOff ready=False ip=10.128.0.2 restarts=2 events=[\"BackOff\"] requeue=Some(35) delete=false",
                ),
            ],
        },
        Case {
            name: "never ready",
            pod: with("annotations: {mock-kind.io/neverReady: \"true\"}", ""),
            steps: vec![(
                100,
                "Running running ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
            )],
        },
        Case {
            name: "bad annotation: event, pod still runs",
            pod: with("annotations: {mock-kind.io/delayRunning: soon}", ""),
            steps: vec![(
                100,
                "Running running ready=True ip=10.128.0.2 restarts=0 events=[\"InvalidAnnotation\"] requeue=None delete=false",
            )],
        },
        Case {
            name: "missing secret volume",
            pod: with(
                "",
                "{containers: [{name: app, image: nginx}], volumes: [{name: v, secret: {secretName: nope}}]}",
            ),
            steps: vec![(
                100,
                "Pending waiting:ContainerCreating ready=False ip= restarts=0 events=[\"FailedMount\"] requeue=Some(20) delete=false",
            )],
        },
        Case {
            name: "optional missing secret is fine",
            pod: with(
                "",
                "{containers: [{name: app, image: nginx}], volumes: [{name: v, secret: {secretName: nope, optional: true}}]}",
            ),
            steps: vec![(
                100,
                "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
            )],
        },
        Case {
            name: "present secret, configmap and bound pvc",
            pod: with(
                "",
                "{containers: [{name: app, image: nginx, envFrom: [{configMapRef: {name: c}}]}], volumes: [{name: v, secret: {secretName: s}}, {name: d, persistentVolumeClaim: {claimName: claim}}]}",
            ),
            steps: vec![(
                100,
                "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
            )],
        },
        Case {
            name: "missing configmap env",
            pod: with(
                "",
                "{containers: [{name: app, image: nginx, env: [{name: X, valueFrom: {configMapKeyRef: {name: gone, key: k}}}]}]}",
            ),
            steps: vec![(
                100,
                "Pending waiting:CreateContainerConfigError ready=False ip=10.128.0.2 restarts=0 events=[\"Failed\"] requeue=Some(20) delete=false",
            )],
        },
        Case {
            name: "missing projected configmap",
            pod: with(
                "",
                "{containers: [{name: app, image: nginx}], volumes: [{name: v, projected: {sources: [{configMap: {name: gone}}]}}]}",
            ),
            steps: vec![(
                100,
                "Pending waiting:ContainerCreating ready=False ip= restarts=0 events=[\"FailedMount\"] requeue=Some(20) delete=false",
            )],
        },
        Case {
            name: "deleted running pod: terminate, then delete after the capped grace",
            pod: with(
                "{deletionTimestamp: \"1970-01-01T00:02:10Z\", deletionGracePeriodSeconds: 30}",
                "",
            ),
            steps: vec![
                (
                    100,
                    "Running running ready=True ip=10.128.0.2 restarts=0 events=[] requeue=None delete=false",
                ),
                // deletion requested at 100 (130 - 30), grace capped to 1 s
                (
                    100,
                    "Running terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=Some(1) delete=false",
                ),
                (
                    101,
                    "Running terminated:Completed ready=False ip=10.128.0.2 restarts=0 events=[] requeue=None delete=true",
                ),
            ],
        },
    ];
    for case in cases {
        let mut p = case.pod.clone();
        let deletion = p.metadata.deletion_timestamp.take();
        for (i, (now, want)) in case.steps.iter().enumerate() {
            // The deletion case first runs the pod, then marks it deleted.
            if i == 1 && deletion.is_some() {
                p.metadata.deletion_timestamp = deletion.clone();
            }
            let o = run(&p, *now, &present);
            assert_eq!(summary(&o, &p), *want, "{} step {i}", case.name);
            p = apply(&p, &o);
        }
    }
}

#[test]
fn unbound_pvc_waits() {
    let present: HashSet<String> = ["unbound:Pvc/claim".to_string()].into_iter().collect();
    let p = with(
        "",
        "{containers: [{name: app, image: nginx}], volumes: [{name: d, persistentVolumeClaim: {claimName: claim}}]}",
    );
    let o = run(&p, 100, &present);
    assert_eq!(o.events.len(), 1);
    assert!(o.events[0].message.contains("not bound"), "{:?}", o.events);
}

#[test]
fn missing_secret_then_present_runs() {
    let p = with(
        "",
        "{containers: [{name: app, image: nginx}], volumes: [{name: v, secret: {secretName: later}}]}",
    );
    let o = run(&p, 100, &HashSet::new());
    assert_eq!(
        o.events[0].message,
        "MountVolume.SetUp failed for volume \"v\" : secret \"later\" not found"
    );
    let p = apply(&p, &o);
    let o = run(&p, 130, &["Secret/later".to_string()].into_iter().collect());
    let st = o.status.expect("status written");
    assert_eq!(st.phase.as_deref(), Some("Running"));
    // startTime stays at the first look, the container starts now.
    assert_eq!(st.start_time.map(|t| t.0.as_second()), Some(100));
    let started = st
        .container_statuses
        .as_ref()
        .and_then(|c| c[0].state.as_ref()?.running.as_ref()?.started_at.clone());
    assert_eq!(started.map(|t| t.0.as_second()), Some(130));
}

fn condition_status(st: &PodStatus, type_: &str) -> Option<String> {
    st.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

#[test]
fn running_status_is_kubelet_shaped() {
    let p = with(
        "",
        r#"
containers: [{name: b, image: "quay.io/x/y:1", resources: {requests: {cpu: "1", memory: 1Gi}, limits: {cpu: "1", memory: 1Gi}}}, {name: a, image: "ghcr.io/o/r@sha256:abc", resources: {limits: {cpu: "1", memory: 1Gi}}}]
initContainers: [{name: init, image: busybox, resources: {limits: {cpu: "1", memory: 1Gi}}}]
readinessGates: [{conditionType: example.com/gate}]
"#,
    );
    let o = run(&p, 100, &HashSet::new());
    let st = o.status.expect("status");
    assert_eq!(st.qos_class.as_deref(), Some("Guaranteed"));
    let names: Vec<&str> = st
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"], "sorted by name as the kubelet does");
    let cs = st.container_statuses.clone().unwrap_or_default();
    assert_eq!(cs[0].image, "ghcr.io/o/r@sha256:abc");
    assert_eq!(cs[0].image_id, "ghcr.io/o/r@sha256:abc");
    assert_eq!(cs[1].image, "quay.io/x/y:1");
    assert!(
        cs[1].image_id.starts_with("quay.io/x/y@sha256:"),
        "{}",
        cs[1].image_id
    );
    assert!(
        cs[1]
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://") && id.len() == 13 + 64)
    );
    assert_eq!(cs[1].started, Some(true));
    let init = st.init_container_statuses.clone().unwrap_or_default();
    assert_eq!(init[0].image, "docker.io/library/busybox:latest");
    assert_eq!(
        init[0]
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.reason.clone())
            .as_deref(),
        Some("Completed")
    );
    let cond = |t: &str| condition_status(&st, t);
    assert_eq!(cond("ContainersReady").as_deref(), Some("True"));
    assert_eq!(
        cond("Ready").as_deref(),
        Some("False"),
        "readiness gate not set"
    );
    assert_eq!(cond("Initialized").as_deref(), Some("True"));
    assert_eq!(cond("PodScheduled").as_deref(), Some("True"));
    assert_eq!(
        st.pod_ips.as_ref().map(|v| v[0].ip.clone()).as_deref(),
        Some("10.128.0.2")
    );
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));

    // Someone sets the gate: the pod becomes Ready, the gate condition is kept.
    let mut p = apply(
        &p,
        &Outcome {
            status: Some(st),
            ..Default::default()
        },
    );
    if let Some(s) = p.status.as_mut() {
        s.conditions
            .get_or_insert_with(Vec::new)
            .push(PodCondition {
                type_: "example.com/gate".into(),
                status: "True".into(),
                ..Default::default()
            });
    }
    let st = run(&p, 101, &HashSet::new()).status.expect("status");
    let cond = |t: &str| condition_status(&st, t);
    assert_eq!(cond("Ready").as_deref(), Some("True"));
    assert_eq!(cond("example.com/gate").as_deref(), Some("True"));
}

#[test]
fn event_kinds_render_kubelet_reasons() {
    let cases = [
        (
            EventKind::InvalidAnnotation,
            "InvalidAnnotation",
            "Sync",
            false,
        ),
        (EventKind::FailedMount, "FailedMount", "MountVolume", true),
        (
            EventKind::CreateContainerConfig,
            "Failed",
            "CreateContainer",
            true,
        ),
        (EventKind::BackOff, "BackOff", "StartContainer", false),
    ];
    for (kind, reason, action, waits) in cases {
        assert_eq!(kind.reason(), reason, "{kind:?}");
        assert_eq!(kind.action(), action, "{kind:?}");
        assert_eq!(kind.waits_for_reference(), waits, "{kind:?}");
        assert!(kind.warning(), "{kind:?}");
    }
}

#[test]
fn qos_classes() {
    let cases = [
        ("best effort", "{containers: [{name: a}]}", "BestEffort"),
        (
            "burstable",
            "{containers: [{name: a, resources: {requests: {cpu: 100m}}}]}",
            "Burstable",
        ),
        (
            "guaranteed",
            "{containers: [{name: a, resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}}]}",
            "Guaranteed",
        ),
        (
            "limits differ from requests",
            "{containers: [{name: a, resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 2, memory: 1Gi}}}]}",
            "Burstable",
        ),
    ];
    for (name, spec, want) in cases {
        let p = with("", spec);
        assert_eq!(qos_class(&p), want, "{name}");
    }
}
