//! Properties of the whole decision with native sidecars among the init containers: any
//! scripts, probes, restartPolicy and sequence of looks → the kubelet's rules hold at every
//! look: init containers start in order, a sidecar is stopped only once the pod ended, a
//! Ready pod has every sidecar ready, and only a regular init container (under Never) fails
//! the pod.

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
