//! What a pool's status says (counts, the Valid and Ready conditions) and which of its Nodes
//! must go, from plain data: no I/O.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::spec::PoolStatus;
use super::validate::PoolError;

/// What the reconciler found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase<'a> {
    /// Valid and running its nodes.
    Running,
    /// Valid; `spec.paused`: no heartbeats.
    Paused,
    /// Refused: nothing was touched.
    Invalid(&'a PoolError),
}

/// Node counts as the API shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub desired: i64,
    pub registered: i64,
    pub ready: i64,
}

/// The status to write for pool `name` at `generation`. A condition whose status did not
/// change keeps its lastTransitionTime from `prev`.
pub fn status(
    name: &str,
    generation: Option<i64>,
    phase: Phase,
    counts: Counts,
    prev: Option<&PoolStatus>,
    now: jiff::Timestamp,
) -> PoolStatus {
    let (valid, valid_reason, valid_message) = match phase {
        Phase::Invalid(e) => (
            "False",
            "InvalidSpec",
            format!("hollownodepool/{name}: {e}; no node was touched"),
        ),
        _ => ("True", "Valid", "the spec is valid".to_string()),
    };
    let (ready, ready_reason, ready_message) = match phase {
        Phase::Invalid(_) => (
            "False",
            "InvalidSpec",
            "the spec is invalid (see condition Valid)".to_string(),
        ),
        Phase::Paused => (
            "False",
            "Paused",
            "spec.paused: heartbeats stopped, the nodes go NotReady".to_string(),
        ),
        Phase::Running if counts.ready == counts.desired && counts.registered == counts.desired => {
            (
                "True",
                "AllNodesReady",
                format!("{} of {} nodes Ready", counts.ready, counts.desired),
            )
        }
        Phase::Running => (
            "False",
            "NodesNotReady",
            format!(
                "{} of {} nodes Ready, {} registered",
                counts.ready, counts.desired, counts.registered
            ),
        ),
    };
    let now = Time(crate::node_status::seconds(now));
    let conditions = [
        ("Valid", valid, valid_reason, valid_message),
        ("Ready", ready, ready_reason, ready_message),
    ]
    .into_iter()
    .map(|(type_, status, reason, message)| {
        let before = prev.and_then(|p| p.conditions.iter().find(|c| c.type_ == type_));
        let last_transition_time = match before {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => now.clone(),
        };
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: generation,
        }
    })
    .collect();
    PoolStatus {
        observed_generation: generation,
        desired_nodes: counts.desired,
        registered_nodes: counts.registered,
        ready_nodes: counts.ready,
        conditions,
    }
}

/// Of the Nodes labelled with the pool, those the plan does not hold (above the count after
/// a scale-down, or not named `<pool>-<i>`): to be deleted with their Leases.
pub fn surplus<'a>(
    planned: &BTreeSet<String>,
    existing: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut out: Vec<String> = existing
        .into_iter()
        .filter(|n| !planned.contains(*n))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("ts")
    }

    fn cond<'a>(s: &'a PoolStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn conditions() {
        let bad = PoolError::Replicas(-1);
        let counts = |desired, registered, ready| Counts {
            desired,
            registered,
            ready,
        };
        struct Case<'a> {
            name: &'a str,
            phase: Phase<'a>,
            counts: Counts,
            valid: (&'a str, &'a str),
            ready: (&'a str, &'a str),
            message: &'a str,
        }
        let cases = [
            Case {
                name: "all ready",
                phase: Phase::Running,
                counts: counts(3, 3, 3),
                valid: ("True", "Valid"),
                ready: ("True", "AllNodesReady"),
                message: "3 of 3 nodes Ready",
            },
            Case {
                name: "coming up",
                phase: Phase::Running,
                counts: counts(3, 2, 1),
                valid: ("True", "Valid"),
                ready: ("False", "NodesNotReady"),
                message: "1 of 3 nodes Ready, 2 registered",
            },
            Case {
                name: "scaled to zero",
                phase: Phase::Running,
                counts: counts(0, 0, 0),
                valid: ("True", "Valid"),
                ready: ("True", "AllNodesReady"),
                message: "0 of 0 nodes Ready",
            },
            Case {
                name: "paused",
                phase: Phase::Paused,
                counts: counts(3, 3, 3),
                valid: ("True", "Valid"),
                ready: ("False", "Paused"),
                message: "spec.paused",
            },
            Case {
                name: "invalid",
                phase: Phase::Invalid(&bad),
                counts: counts(0, 2, 2),
                valid: ("False", "InvalidSpec"),
                ready: ("False", "InvalidSpec"),
                message: "see condition Valid",
            },
        ];
        for c in cases {
            let s = status("gpu", Some(4), c.phase, c.counts, None, ts(100));
            let v = cond(&s, "Valid");
            let r = cond(&s, "Ready");
            assert_eq!(
                (v.status.as_str(), v.reason.as_str()),
                c.valid,
                "{}",
                c.name
            );
            assert_eq!(
                (r.status.as_str(), r.reason.as_str()),
                c.ready,
                "{}",
                c.name
            );
            assert!(r.message.contains(c.message), "{}: {}", c.name, r.message);
            assert_eq!(s.observed_generation, Some(4), "{}", c.name);
            assert_eq!(r.observed_generation, Some(4), "{}", c.name);
            assert_eq!(s.registered_nodes, c.counts.registered, "{}", c.name);
        }
        let s = status(
            "gpu",
            Some(1),
            Phase::Invalid(&bad),
            Counts::default(),
            None,
            ts(1),
        );
        assert_eq!(
            cond(&s, "Valid").message,
            "hollownodepool/gpu: spec.replicas -1 is outside 0 to 10000; no node was touched"
        );
    }

    #[test]
    fn transition_times() {
        let up = status(
            "p",
            Some(1),
            Phase::Running,
            Counts::default(),
            None,
            ts(100),
        );
        let cases = [
            ("still ready", Phase::Running, 100, 100),
            ("paused", Phase::Paused, 100, 200),
        ];
        for (name, phase, valid_at, ready_at) in cases {
            let next = status("p", Some(2), phase, Counts::default(), Some(&up), ts(200));
            let at = |t| cond(&next, t).last_transition_time.0.as_second();
            assert_eq!((at("Valid"), at("Ready")), (valid_at, ready_at), "{name}");
        }
    }

    #[test]
    fn surplus_nodes() {
        let planned: BTreeSet<String> = ["gpu-0".to_string(), "gpu-1".to_string()].into();
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("nothing extra", &["gpu-0", "gpu-1"], &[]),
            (
                "scaled down",
                &["gpu-0", "gpu-1", "gpu-3", "gpu-2"],
                &["gpu-2", "gpu-3"],
            ),
            (
                "foreign name with our label",
                &["gpu-0", "other"],
                &["other"],
            ),
            ("none yet", &[], &[]),
        ];
        for (name, existing, want) in cases {
            assert_eq!(surplus(&planned, existing.iter().copied()), *want, "{name}");
        }
    }

    proptest::proptest! {
        #[test]
        fn surplus_and_plan_partition_existing(
            replicas in 0u32..50,
            existing in proptest::collection::btree_set(0u32..80, 0..60),
        ) {
            let planned: BTreeSet<String> = (0..replicas).map(|i| format!("p-{i}")).collect();
            let names: Vec<String> = existing.iter().map(|i| format!("p-{i}")).collect();
            let gone = surplus(&planned, names.iter().map(String::as_str));
            for n in &names {
                proptest::prop_assert_eq!(gone.contains(n), !planned.contains(n), "{}", n);
            }
        }

        #[test]
        fn status_never_panics(desired in any_count(), registered in any_count(), ready in any_count(), generation in proptest::option::of(proptest::prelude::any::<i64>())) {
            let s = status("p", generation, Phase::Running, Counts { desired, registered, ready }, None, ts(0));
            proptest::prop_assert_eq!(s.conditions.len(), 2);
        }
    }

    fn any_count() -> impl proptest::strategy::Strategy<Value = i64> {
        proptest::prelude::any::<i64>()
    }
}
