//! Restarts as the kubelet does them: the crash-loop timing, what a restarted container
//! reports, and that the schedule does not depend on when the pod is looked at.

use super::*;
use k8s_openapi::api::core::v1::ContainerStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

#[test]
fn crash_loop_timing() {
    let s = Duration::from_secs;
    let cases = [
        (0, (0, 10, 10)),
        (9, (0, 10, 1)),
        (10, (1, 20, 20)),
        (30, (2, 40, 40)),
        (70, (3, 80, 80)),
        (10 + 20 + 40 + 80 + 160 + 300, (6, 300, 300)),
    ];
    for (elapsed, (restarts, backoff, next)) in cases {
        assert_eq!(
            crash_loop_at(s(10), s(elapsed)),
            (restarts, s(backoff), s(next)),
            "elapsed {elapsed}"
        );
    }
}

fn first_container(o: &Outcome, p: &Pod) -> ContainerStatus {
    let st = o.status.clone().or(p.status.clone()).unwrap_or_default();
    st.container_statuses
        .unwrap_or_default()
        .into_iter()
        .next()
        .expect("a container status")
}

#[test]
fn restarted_container_reports_its_last_run() {
    let p = with("annotations: {mock-kind.io/delayFailed: 5s}", "");
    let mut p = apply(&p, &run(&p, 100, &HashSet::new()));
    let mut ids = Vec::new();
    struct Step {
        now: i64,
        restarts: i32,
        running_since: Option<i64>,
        last_run: (i64, i64),
        backoff: Option<&'static str>,
    }
    let steps = [
        Step {
            now: 105,
            restarts: 1,
            running_since: Some(105),
            last_run: (100, 105),
            backoff: None,
        },
        Step {
            now: 110,
            restarts: 1,
            running_since: None,
            last_run: (105, 110),
            backoff: Some("back-off 10s"),
        },
        Step {
            now: 120,
            restarts: 2,
            running_since: Some(120),
            last_run: (105, 110),
            backoff: None,
        },
    ];
    for Step {
        now,
        restarts,
        running_since,
        last_run: (last_start, last_finish),
        backoff,
    } in steps
    {
        let o = run(&p, now, &HashSet::new());
        let c = first_container(&o, &p);
        assert_eq!(c.restart_count, restarts, "at {now}");
        let state = c.state.clone().unwrap_or_default();
        assert_eq!(
            state
                .running
                .as_ref()
                .and_then(|r| r.started_at.as_ref())
                .map(|t| t.0.as_second()),
            running_since,
            "at {now}"
        );
        let waiting = state.waiting.as_ref().and_then(|w| w.message.clone());
        assert_eq!(
            waiting
                .as_deref()
                .map(|m| &m[..m.find(" restarting").unwrap_or(0)]),
            backoff,
            "at {now}: {waiting:?}"
        );
        if let Some(m) = waiting {
            assert!(m.ends_with("container=app pod=p_ns(u1)"), "{m}");
        }
        let last = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .expect("lastState.terminated");
        assert_eq!(last.exit_code, 1, "at {now}");
        assert_eq!(last.reason.as_deref(), Some("Error"), "at {now}");
        let secs = |t: Option<Time>| t.map(|t| t.0.as_second());
        assert_eq!(secs(last.started_at), Some(last_start), "at {now}");
        assert_eq!(secs(last.finished_at), Some(last_finish), "at {now}");
        ids.push((c.container_id.clone(), last.container_id.clone()));
        p = apply(&p, &o);
    }
    // Each restart is a new container; lastState names the one that exited.
    assert_ne!(
        ids[0].0, ids[0].1,
        "running: last is the previous container"
    );
    assert_eq!(
        ids[1].0, ids[1].1,
        "backing off: last is the one that exited"
    );
    assert_eq!(
        ids[2].1, ids[1].0,
        "after the restart: last is the exited one"
    );
}

#[test]
fn back_off_message_prints_minutes_as_go_does() {
    let p = with("annotations: {mock-kind.io/crashLoop: 80s}", "");
    let o = run(&p, 100, &HashSet::new());
    let c = first_container(&o, &p);
    let msg = c.state.and_then(|s| s.waiting).and_then(|w| w.message);
    assert_eq!(
        msg.as_deref(),
        Some("back-off 1m20s restarting failed container=app pod=p_ns(u1)")
    );
}

proptest::proptest! {
    /// The restart schedule is anchored in the status we wrote: looking at the pod at any
    /// moments in between (or none, as after a restart of this process) ends in the same
    /// container status.
    #[test]
    fn restarts_do_not_depend_on_when_we_look(
        run_for in 0u64..700,
        failed in proptest::bool::ANY,
        mut looks in proptest::collection::vec(1i64..4000, 0..12),
        end in 1i64..4000,
    ) {
        let ann = if failed { "delayFailed" } else { "delaySucceeded" };
        let p = with(&format!("annotations: {{mock-kind.io/{ann}: {run_for}s}}"), "");
        let start = apply(&p, &run(&p, 100, &HashSet::new()));
        looks.retain(|t| *t < end);
        looks.sort_unstable();
        let mut stepped = start.clone();
        for t in looks {
            stepped = apply(&stepped, &run(&stepped, 100 + t, &HashSet::new()));
        }
        let a = run(&stepped, 100 + end, &HashSet::new());
        let b = run(&start, 100 + end, &HashSet::new());
        let (ca, cb) = (first_container(&a, &stepped), first_container(&b, &start));
        proptest::prop_assert_eq!(ca.restart_count, cb.restart_count);
        proptest::prop_assert_eq!(&ca.state, &cb.state);
        proptest::prop_assert_eq!(&ca.last_state, &cb.last_state);
        proptest::prop_assert_eq!(a.requeue, b.requeue);
    }
}
