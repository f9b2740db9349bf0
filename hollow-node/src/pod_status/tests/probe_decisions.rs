//! Properties of the whole decision under probes: any probe spec, any scripted failure, any
//! sequence of looks → no panic, a status that agrees with itself, and kills counted once.

use super::*;
use k8s_openapi::api::core::v1::{Container, Probe};
use proptest::prelude::*;

fn any_probe() -> impl Strategy<Value = Option<Probe>> {
    proptest::option::of(
        (-1i32..30, -1i32..20, -1i32..4, -1i32..5).prop_map(|(d, p, st, ft)| Probe {
            initial_delay_seconds: Some(d),
            period_seconds: Some(p),
            success_threshold: Some(st),
            failure_threshold: Some(ft),
            ..Default::default()
        }),
    )
}

fn any_annotation() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        (0u64..120).prop_map(|s| format!("{s}s")),
        Just("bogus".to_string()),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn probed_pods_stay_consistent(
        probes in proptest::collection::vec((any_probe(), any_probe(), any_probe()), 1..3),
        annotations in (any_annotation(), any_annotation(), any_annotation(), any_annotation()),
        policy in prop_oneof![Just("Always"), Just("OnFailure"), Just("Never")],
        looks in proptest::collection::vec(0i64..40, 1..12),
    ) {
        let mut p = with("", "");
        let spec = p.spec.as_mut().expect("spec");
        spec.restart_policy = Some(policy.to_string());
        spec.containers = probes
            .iter()
            .enumerate()
            .map(|(i, (r, l, s))| Container {
                name: format!("c{i}"),
                image: Some("nginx".into()),
                readiness_probe: r.clone(),
                liveness_probe: l.clone(),
                startup_probe: s.clone(),
                ..Default::default()
            })
            .collect();
        let keys = ["readinessFailAfter", "readinessFailFor", "livenessFailAfter", "startupAfter"];
        let values = [&annotations.0, &annotations.1, &annotations.2, &annotations.3];
        p.metadata.annotations = Some(
            keys.iter()
                .zip(values)
                .filter_map(|(k, v)| Some((format!("mock-kind.io/{k}"), v.clone()?)))
                .collect(),
        );
        let mut now = 100;
        let mut kills = 0usize;
        for step in looks {
            now += step;
            let o = run(&p, now, &HashSet::new());
            if let Some(r) = o.requeue {
                prop_assert!(r >= MIN_REQUEUE, "{r:?}");
            }
            kills += o.events.iter().filter(|e| e.kind == EventKind::Killing).count();
            p = apply(&p, &o);
            let st = p.status.clone().unwrap_or_default();
            let statuses = st.container_statuses.clone().unwrap_or_default();
            for c in &statuses {
                let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
                prop_assert!(!c.ready || (running && c.started == Some(true)), "{c:?}");
            }
            let all_ready = !statuses.is_empty() && statuses.iter().all(|c| c.ready);
            let ready = st.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
            prop_assert_eq!(ready, all_ready);
            // One Killing per exited run: never more kills than restarts plus stopped runs.
            let exited: usize = statuses
                .iter()
                .map(|c| {
                    let stopped = c.state.as_ref().is_some_and(|s| {
                        s.terminated.is_some()
                            || s.waiting.as_ref().and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff")
                    });
                    usize::try_from(c.restart_count).unwrap_or(0) + usize::from(stopped)
                })
                .sum();
            prop_assert!(kills <= exited, "{kills} kills, {exited} exits");
        }
    }
}
