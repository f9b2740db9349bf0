//! Properties of the whole decision with init containers: any scripts, any restartPolicy, any
//! sequence of looks → no panic, and a status in which the containers start only after every
//! init container exited 0, in order.

use super::*;
use k8s_openapi::api::core::v1::Container;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn init_sequences_stay_consistent(
        scripts in proptest::collection::vec(
            (proptest::option::of(0u64..20), proptest::option::of(0u32..4)), 1..4),
        policy in prop_oneof![Just("Always"), Just("OnFailure"), Just("Never")],
        looks in proptest::collection::vec(0i64..30, 1..15),
    ) {
        let mut p = with("", "");
        let spec = p.spec.as_mut().expect("spec");
        spec.restart_policy = Some(policy.to_string());
        spec.init_containers = Some(
            (0..scripts.len())
                .map(|i| Container {
                    name: format!("init{i}"),
                    image: Some("busybox".into()),
                    ..Default::default()
                })
                .collect(),
        );
        p.metadata.annotations = Some(init_annotations(scripts.iter().copied()));
        let mut now = 100;
        for step in looks {
            now += step;
            let st = look(&mut p, now)?;
            let inits = st.init_container_statuses.clone().unwrap_or_default();
            prop_assert_eq!(inits.len(), scripts.len());
            let done = |c: &k8s_openapi::api::core::v1::ContainerStatus| {
                c.state.as_ref().and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code == 0)
            };
            for c in &inits {
                prop_assert_eq!(c.ready, done(c), "{:?}", c);
            }
            // In order: nothing after an init container that has not completed has started.
            if let Some(first_open) = inits.iter().position(|c| !done(c)) {
                for c in &inits[first_open + 1..] {
                    let w = c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref());
                    prop_assert_eq!(w, Some("PodInitializing"));
                }
                prop_assert!(matches!(st.phase.as_deref(), Some("Pending" | "Failed")), "{:?}", st.phase);
            } else {
                prop_assert!(st.phase.as_deref() != Some("Pending"), "all init done but Pending");
            }
            if st.phase.as_deref() == Some("Failed") {
                prop_assert_eq!(policy, "Never");
            }
        }
    }
}
