//! Properties of the whole decision with native sidecars among the init containers: any
//! scripts, probes, restartPolicy and sequence of looks → the kubelet's rules hold at every
//! look: init containers start in order, a sidecar is stopped only once the pod ended, a
//! Ready pod has every sidecar ready, and only a regular init container (under Never) fails
//! the pod. Then tables of sidecars killed by their liveness and startup probes, and the
//! properties of such kills.

use super::*;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

fn probe(initial: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(9901),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(5),
        ..Default::default()
    }
}

fn waiting(c: &ContainerStatus) -> bool {
    c.state.as_ref().is_some_and(|s| s.waiting.is_some())
        && c.restart_count == 0
        && c.last_state.as_ref().is_none_or(|l| l.terminated.is_none())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn sidecars_follow_the_kubelet_rules(
        // (sidecar, run, failures, startup probe delay, readiness probe delay)
        inits in proptest::collection::vec(
            (
                any::<bool>(),
                proptest::option::of(0u64..20),
                proptest::option::of(0u32..3),
                proptest::option::of(0i32..15),
                proptest::option::of(0i32..15),
            ),
            1..4,
        ),
        policy in prop_oneof![Just("Always"), Just("OnFailure"), Just("Never")],
        job in any::<bool>(),
        looks in proptest::collection::vec(0i64..30, 1..15),
    ) {
        let mut p = with("", "");
        if job && policy != "Always" {
            p.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: "j".into(),
                uid: "j1".into(),
                ..Default::default()
            }]);
        }
        let spec = p.spec.as_mut().expect("spec");
        spec.restart_policy = Some(policy.to_string());
        let mut containers = Vec::new();
        for (i, (sidecar, _, _, startup, readiness)) in inits.iter().enumerate() {
            containers.push(Container {
                name: format!("init{i}"),
                image: Some("busybox".into()),
                restart_policy: sidecar.then(|| "Always".to_string()),
                startup_probe: startup.filter(|_| *sidecar).map(probe),
                readiness_probe: readiness.filter(|_| *sidecar).map(probe),
                ..Default::default()
            });
        }
        spec.init_containers = Some(containers.clone());
        p.metadata.annotations = Some(init_annotations(inits.iter().map(|i| (i.1, i.2))));
        let mut now = 100;
        for step in looks {
            now += step;
            let st = look(&mut p, now)?;
            let statuses = st.init_container_statuses.clone().unwrap_or_default();
            prop_assert_eq!(statuses.len(), containers.len());
            let ended = matches!(st.phase.as_deref(), Some("Succeeded" | "Failed"));
            // In order: after an init container that never ran, none has run.
            if let Some(first) = statuses.iter().position(waiting) {
                for c in &statuses[first + 1..] {
                    prop_assert!(waiting(c), "{} ran before {}", c.name, statuses[first].name);
                }
            }
            for (c, s) in containers.iter().zip(&statuses) {
                if c.restart_policy.is_some() {
                    // Stopped once the pod ended (one that never ran stays waiting), and
                    // only then.
                    let state = s.state.clone().unwrap_or_default();
                    prop_assert!(!(ended && state.running.is_some()), "{} runs on: {:?}", c.name, st.phase);
                    prop_assert!(ended || state.terminated.is_none(), "{} stopped: {:?}", c.name, st.phase);
                }
            }
            let ready = st.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                for (c, s) in containers.iter().zip(&statuses) {
                    if c.restart_policy.is_some() {
                        prop_assert!(s.ready, "Ready pod, sidecar {} not ready", c.name);
                    }
                }
            }
            if st.phase.as_deref() == Some("Failed") {
                prop_assert_eq!(policy, "Never");
            }
        }
    }
}

/// A pod whose sidecar `proxy` (tcpSocket probes on 9901, period 5 s) has `probes`, a YAML
/// fragment, before the main container `app`.
fn killed_pod(policy: &str, annotations: &str, probes: &str) -> Pod {
    with(
        &format!("annotations: {{{annotations}}}"),
        &format!(
            "{{restartPolicy: {policy}, initContainers: [{{name: proxy, image: envoy, \
             restartPolicy: Always, {probes}}}], containers: [{{name: app, image: nginx}}]}}"
        ),
    )
}

/// One container's state at a look: `running:<since>`, `waiting:<reason>` or
/// `terminated:<reason>`, restartCount, ready, and `lastState.terminated` as
/// `<reason>/<code>@<started>-<finished>`.
fn container_summary(c: Option<&ContainerStatus>) -> String {
    let Some(c) = c else {
        return "none".into();
    };
    let secs = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map_or(-1, |t| t.0.as_second())
    };
    let state = c.state.clone().unwrap_or_default();
    let state = match (&state.running, &state.waiting, &state.terminated) {
        (Some(r), _, _) => format!("running:{}", secs(&r.started_at)),
        (_, Some(w), _) => format!("waiting:{}", w.reason.as_deref().unwrap_or_default()),
        (_, _, Some(t)) => format!("terminated:{}", t.reason.as_deref().unwrap_or_default()),
        _ => "none".into(),
    };
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .map_or("-".into(), |t| {
            format!(
                "{}/{}@{}-{}",
                t.reason.as_deref().unwrap_or_default(),
                t.exit_code,
                secs(&t.started_at),
                secs(&t.finished_at)
            )
        });
    format!(
        "{state} restarts={} ready={} last={last}",
        c.restart_count, c.ready
    )
}

/// The pod at one look: phase, Ready and Initialized, the sidecar, the app, what was
/// recorded and when it is looked at again.
fn killed_summary(o: &Outcome, p: &Pod) -> String {
    let st = o.status.clone().or(p.status.clone()).unwrap_or_default();
    let proxy = st.init_container_statuses.iter().flatten().next();
    let app = st.container_statuses.iter().flatten().next();
    let cond = |t| condition_status(&st, t).unwrap_or_default();
    let events: Vec<String> = o
        .events
        .iter()
        .map(|e| match e.kind {
            EventKind::BackOff => "BackOff".to_string(),
            _ => format!("{}({})", e.kind.reason(), e.message),
        })
        .collect();
    format!(
        "{} Ready={} Initialized={} | proxy {} | app {} | events={events:?} requeue={:?}",
        st.phase.as_deref().unwrap_or_default(),
        cond("Ready"),
        cond("Initialized"),
        container_summary(proxy),
        container_summary(app),
        o.requeue.map(|d| d.as_secs()),
    )
}

const LIVENESS: &str =
    "livenessProbe: {tcpSocket: {port: 9901}, periodSeconds: 5, failureThreshold: 2}";
const LIVENESS_FAILED: &str =
    "Unhealthy(Liveness probe failed: dial tcp 10.128.0.2:9901: connect: connection refused)";
const LIVENESS_KILLING: &str = "Killing(Init container proxy failed liveness probe)";

#[test]
fn sidecars_killed_by_their_probes() {
    struct Case {
        name: &'static str,
        pod: Pod,
        /// (seconds since epoch, expected summary) evaluated in order, each applied.
        steps: Vec<(i64, String)>,
    }
    let kill = format!(r#"["{LIVENESS_FAILED}", "{LIVENESS_KILLING}"]"#);
    let back_off_kill = format!(r#"["BackOff", "{LIVENESS_FAILED}", "{LIVENESS_KILLING}"]"#);
    let startup_kill = r#""Unhealthy(Startup probe failed: dial tcp 10.128.0.2:9901: connect: connection refused)", "Killing(Init container proxy failed startup probe)""#;
    let cases = vec![
        // The probes at 20 and 25 s of each run fail: killed 25 s after each start.
        Case {
            name: "liveness: killed, restarted at once, then after the back-off",
            pod: killed_pod("Always", "mock-kind.io/livenessFailAfter: 20s", LIVENESS),
            steps: vec![
                (
                    100,
                    "Running Ready=True Initialized=True | proxy running:100 restarts=0 ready=true last=- | app running:100 restarts=0 ready=true last=- | events=[] requeue=Some(20)".into(),
                ),
                (
                    125,
                    format!("Running Ready=True Initialized=True | proxy running:125 restarts=1 ready=true last=Error/137@100-125 | app running:100 restarts=0 ready=true last=- | events={kill} requeue=Some(20)"),
                ),
                (
                    150,
                    format!("Running Ready=False Initialized=True | proxy waiting:CrashLoopBackOff restarts=1 ready=false last=Error/137@125-150 | app running:100 restarts=0 ready=true last=- | events={back_off_kill} requeue=Some(10)"),
                ),
                // A second look in the back-off: no second kill.
                (
                    155,
                    r#"Running Ready=False Initialized=True | proxy waiting:CrashLoopBackOff restarts=1 ready=false last=Error/137@125-150 | app running:100 restarts=0 ready=true last=- | events=["BackOff"] requeue=Some(5)"#.into(),
                ),
                (
                    160,
                    "Running Ready=True Initialized=True | proxy running:160 restarts=2 ready=true last=Error/137@125-150 | app running:100 restarts=0 ready=true last=- | events=[] requeue=Some(20)".into(),
                ),
                // Killed at 185 (back-off 20 s), 230 (40 s) and 295 (80 s), unseen: one kill's
                // events at the next look, running since 375 with the next failing probe at 395.
                (
                    390,
                    format!("Running Ready=True Initialized=True | proxy running:375 restarts=5 ready=true last=Error/137@270-295 | app running:100 restarts=0 ready=true last=- | events={kill} requeue=Some(5)"),
                ),
            ],
        },
        // restartPolicy Never: the sidecar is restarted all the same, the app runs on.
        Case {
            name: "liveness under Never, a readiness probe: not ready until it passes again",
            pod: killed_pod(
                "Never",
                "mock-kind.io/livenessFailAfter: 20s",
                &format!("{LIVENESS}, readinessProbe: {{tcpSocket: {{port: 9901}}, periodSeconds: 5, initialDelaySeconds: 5}}"),
            ),
            steps: vec![
                (
                    100,
                    "Running Ready=False Initialized=True | proxy running:100 restarts=0 ready=false last=- | app running:100 restarts=0 ready=true last=- | events=[] requeue=Some(5)".into(),
                ),
                (
                    105,
                    "Running Ready=True Initialized=True | proxy running:100 restarts=0 ready=true last=- | app running:100 restarts=0 ready=true last=- | events=[] requeue=Some(15)".into(),
                ),
                (
                    125,
                    format!("Running Ready=False Initialized=True | proxy running:125 restarts=1 ready=false last=Error/137@100-125 | app running:100 restarts=0 ready=true last=- | events={kill} requeue=Some(5)"),
                ),
                (
                    130,
                    "Running Ready=True Initialized=True | proxy running:125 restarts=1 ready=true last=Error/137@100-125 | app running:100 restarts=0 ready=true last=- | events=[] requeue=Some(15)".into(),
                ),
            ],
        },
        // startupAfter 1h, failureThreshold 3: the startup probes at 0, 5 and 10 s of each run
        // fail, so it is killed 10 s after each start and never started: the pod stays
        // Pending (the app waits), whatever its restartPolicy.
        Case {
            name: "startup probe never passes: killed and restarted, the pod stays Pending",
            pod: killed_pod(
                "Never",
                "mock-kind.io/startupAfter: 1h",
                "startupProbe: {tcpSocket: {port: 9901}, periodSeconds: 5, failureThreshold: 3}",
            ),
            steps: vec![
                (
                    100,
                    "Pending Ready=False Initialized=False | proxy running:100 restarts=0 ready=false last=- | app waiting:PodInitializing restarts=0 ready=false last=- | events=[] requeue=Some(10)".into(),
                ),
                (
                    110,
                    format!("Pending Ready=False Initialized=False | proxy running:110 restarts=1 ready=false last=Error/137@100-110 | app waiting:PodInitializing restarts=0 ready=false last=- | events=[{startup_kill}] requeue=Some(10)"),
                ),
                (
                    120,
                    format!(r#"Pending Ready=False Initialized=False | proxy waiting:CrashLoopBackOff restarts=1 ready=false last=Error/137@110-120 | app waiting:PodInitializing restarts=0 ready=false last=- | events=["BackOff", {startup_kill}] requeue=Some(10)"#),
                ),
                (
                    130,
                    "Pending Ready=False Initialized=False | proxy running:130 restarts=2 ready=false last=Error/137@110-120 | app waiting:PodInitializing restarts=0 ready=false last=- | events=[] requeue=Some(10)".into(),
                ),
            ],
        },
        // The script first: the first run exits 1 at 5 s; the liveness probe kills the run
        // after it 25 s in (at 30 s), which waits the 10 s back-off the scripted exit began.
        Case {
            name: "scripted failures first, then liveness kills",
            pod: killed_pod(
                "Always",
                "mock-kind.io/livenessFailAfter: 20s, mock-kind.io/initRun.proxy: 5s, mock-kind.io/initFailures.proxy: \"1\"",
                LIVENESS,
            ),
            steps: vec![
                (
                    100,
                    "Running Ready=True Initialized=True | proxy running:100 restarts=0 ready=true last=- | app running:100 restarts=0 ready=true last=- | events=[] requeue=Some(5)".into(),
                ),
                (
                    105,
                    "Running Ready=True Initialized=True | proxy running:105 restarts=1 ready=true last=Error/1@100-105 | app running:100 restarts=0 ready=true last=- | events=[] requeue=Some(20)".into(),
                ),
                (
                    130,
                    format!("Running Ready=False Initialized=True | proxy waiting:CrashLoopBackOff restarts=1 ready=false last=Error/137@105-130 | app running:100 restarts=0 ready=true last=- | events={back_off_kill} requeue=Some(10)"),
                ),
                (
                    140,
                    "Running Ready=True Initialized=True | proxy running:140 restarts=2 ready=true last=Error/137@105-130 | app running:100 restarts=0 ready=true last=- | events=[] requeue=Some(20)".into(),
                ),
            ],
        },
    ];
    for case in cases {
        let mut p = case.pod;
        for (now, want) in case.steps {
            let o = run(&p, now, &HashSet::new());
            assert_eq!(killed_summary(&o, &p), want, "{} at {now}", case.name);
            p = apply(&p, &o);
        }
    }
}

fn any_kill_probe() -> impl Strategy<Value = Option<Probe>> {
    proptest::option::of(
        (0i32..20, 1i32..10, 1i32..4).prop_map(|(delay, period, failures)| Probe {
            initial_delay_seconds: Some(delay),
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            ..probe(0)
        }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Sidecars under liveness and startup kills, with or without a script, at any looks:
    /// restartCount never decreases, a sidecar waiting out a back-off is neither started nor
    /// ready, a kill is recorded once, and the app is never restarted for it.
    #[test]
    fn killed_sidecars_follow_the_kubelet_rules(
        liveness in any_kill_probe(),
        startup in any_kill_probe(),
        readiness in proptest::option::of(0i32..15),
        fail_after in proptest::option::of(0u64..60),
        startup_after in proptest::option::of(0u64..60),
        script in (proptest::option::of(0u64..20), proptest::option::of(0u32..3)),
        policy in prop_oneof![Just("Always"), Just("OnFailure"), Just("Never")],
        looks in proptest::collection::vec(0i64..60, 1..15),
    ) {
        let mut p = with("", "");
        let spec = p.spec.as_mut().expect("spec");
        spec.restart_policy = Some(policy.to_string());
        spec.init_containers = Some(vec![Container {
            name: "init0".into(),
            image: Some("envoy".into()),
            restart_policy: Some("Always".into()),
            liveness_probe: liveness,
            startup_probe: startup,
            readiness_probe: readiness.map(probe),
            ..Default::default()
        }]);
        let mut annotations = init_annotations(std::iter::once(script));
        if let Some(f) = fail_after {
            annotations.insert("mock-kind.io/livenessFailAfter".into(), format!("{f}s"));
        }
        if let Some(s) = startup_after {
            annotations.insert("mock-kind.io/startupAfter".into(), format!("{s}s"));
        }
        p.metadata.annotations = Some(annotations);
        let mut now = 100;
        let mut restarts = 0;
        let mut kills = 0;
        for step in looks {
            now += step;
            let o = run(&p, now, &HashSet::new());
            if let Some(r) = o.requeue {
                prop_assert!(r >= MIN_REQUEUE, "{r:?}");
            }
            for e in o.events.iter().filter(|e| e.kind == EventKind::Killing) {
                prop_assert!(e.message.starts_with("Init container init0 failed"), "{}", e.message);
                kills += 1;
            }
            p = apply(&p, &o);
            let st = p.status.clone().unwrap_or_default();
            let sidecar = st.init_container_statuses.iter().flatten().next().cloned().unwrap_or_default();
            prop_assert!(sidecar.restart_count >= restarts, "{restarts} then {sidecar:?}");
            restarts = sidecar.restart_count;
            let waiting = sidecar.state.as_ref().is_some_and(|s| s.waiting.is_some());
            prop_assert!(!(waiting && (sidecar.ready || sidecar.started == Some(true))), "{sidecar:?}");
            prop_assert!(kills <= i64::from(restarts) + i64::from(waiting), "{kills} kills, {sidecar:?}");
            prop_assert!(st.phase.as_deref() != Some("Failed"), "{:?}", st.phase);
            for c in st.container_statuses.iter().flatten() {
                prop_assert_eq!(c.restart_count, 0, "{:?}", c);
            }
        }
    }
}
