//! The prober's timing as a table: probe specs and scripts in, the state at moments out.

use super::*;
use proptest::prelude::*;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn probe(delay: i32, period: i32, success: i32, failure: i32) -> Probe {
    Probe {
        initial_delay_seconds: Some(delay),
        period_seconds: Some(period),
        success_threshold: Some(success),
        failure_threshold: Some(failure),
        ..Default::default()
    }
}

fn container(
    readiness: Option<Probe>,
    liveness: Option<Probe>,
    startup: Option<Probe>,
) -> Container {
    Container {
        name: "app".into(),
        readiness_probe: readiness,
        liveness_probe: liveness,
        startup_probe: startup,
        ..Default::default()
    }
}

#[test]
fn spec_defaults_and_clamps() {
    let cases = [
        (
            "API defaults",
            Probe::default(),
            ProbeSpec {
                initial_delay: s(0),
                period: s(10),
                success_threshold: 1,
                failure_threshold: 3,
            },
        ),
        (
            "negative and zero values clamped",
            probe(-5, 0, 0, -1),
            ProbeSpec {
                initial_delay: s(0),
                period: s(1),
                success_threshold: 1,
                failure_threshold: 1,
            },
        ),
        (
            "given values kept",
            probe(5, 2, 2, 4),
            ProbeSpec {
                initial_delay: s(5),
                period: s(2),
                success_threshold: 2,
                failure_threshold: 4,
            },
        ),
    ];
    for (name, p, want) in cases {
        assert_eq!(ProbeSpec::of(&p), want, "{name}");
    }
}

#[test]
fn container_states_over_a_run() {
    let none = Lifecycle::default();
    let script = |f: &dyn Fn(&mut Lifecycle)| {
        let mut l = Lifecycle::default();
        f(&mut l);
        l
    };
    let ready_fail = script(&|l| {
        l.readiness_fail_after = Some(s(30));
        l.readiness_fail_for = Some(s(20));
    });
    let ready_fail_for_good = script(&|l| l.readiness_fail_after = Some(s(30)));
    let slow_start = script(&|l| l.startup_after = Some(s(25)));
    let never_starts = script(&|l| l.startup_after = Some(s(100)));
    // (name, container, script, offset, started, ready, readiness failing, next change)
    type Case = (
        &'static str,
        Container,
        Lifecycle,
        u64,
        bool,
        bool,
        bool,
        Option<u64>,
    );
    let cases: Vec<Case> = vec![
        (
            "no probes: ready at once",
            container(None, None, None),
            none.clone(),
            0,
            true,
            true,
            false,
            None,
        ),
        (
            "readiness: not ready before the initial delay",
            container(Some(probe(10, 5, 1, 3)), None, None),
            none.clone(),
            9,
            true,
            false,
            false,
            Some(10),
        ),
        (
            "readiness: ready at the initial delay",
            container(Some(probe(10, 5, 1, 3)), None, None),
            none.clone(),
            10,
            true,
            true,
            false,
            None,
        ),
        (
            "readiness: successThreshold 3 needs two more periods",
            container(Some(probe(10, 5, 3, 3)), None, None),
            none.clone(),
            19,
            true,
            false,
            false,
            Some(20),
        ),
        (
            "scripted failure: probes fail from 30 s, still ready before failureThreshold",
            container(Some(probe(0, 10, 1, 3)), None, None),
            ready_fail_for_good.clone(),
            45,
            true,
            true,
            true,
            Some(50),
        ),
        (
            "scripted failure: not ready at the third failure (30, 40, 50)",
            container(Some(probe(0, 10, 1, 3)), None, None),
            ready_fail_for_good.clone(),
            50,
            true,
            false,
            true,
            None,
        ),
        (
            "two failures (30, 40) under failureThreshold 3: stays ready",
            container(Some(probe(0, 10, 1, 3)), None, None),
            ready_fail.clone(),
            50,
            true,
            true,
            false,
            None,
        ),
        (
            "scripted failure for good",
            container(Some(probe(0, 10, 1, 1)), None, None),
            ready_fail_for_good.clone(),
            1000,
            true,
            false,
            true,
            None,
        ),
        (
            "scripted failure for good: ready before",
            container(Some(probe(0, 10, 1, 1)), None, None),
            ready_fail_for_good.clone(),
            29,
            true,
            true,
            false,
            Some(30),
        ),
        (
            "scripted failure of 20 s, threshold 1: not ready from 30",
            container(Some(probe(0, 10, 1, 1)), None, None),
            ready_fail.clone(),
            35,
            true,
            false,
            true,
            Some(50),
        ),
        (
            "scripted failure of 20 s, threshold 1: ready again at 50",
            container(Some(probe(0, 10, 1, 1)), None, None),
            ready_fail.clone(),
            50,
            true,
            true,
            false,
            None,
        ),
        (
            "startup probe holds started and ready",
            container(Some(probe(0, 10, 1, 3)), None, Some(probe(5, 10, 1, 3))),
            none.clone(),
            4,
            false,
            false,
            false,
            Some(5),
        ),
        (
            "startup probe passes at its first run; readiness follows",
            container(Some(probe(0, 10, 1, 3)), None, Some(probe(5, 10, 1, 3))),
            none.clone(),
            5,
            true,
            true,
            false,
            None,
        ),
        (
            "startupAfter 25 s: started at the probe at 25",
            container(None, None, Some(probe(5, 10, 1, 3))),
            slow_start.clone(),
            24,
            false,
            false,
            false,
            Some(25),
        ),
        (
            "startupAfter 25 s: started",
            container(None, None, Some(probe(5, 10, 1, 3))),
            slow_start.clone(),
            25,
            true,
            true,
            false,
            None,
        ),
        (
            "readiness waits for startup, then its own delay",
            container(Some(probe(40, 10, 1, 3)), None, Some(probe(5, 10, 1, 3))),
            slow_start.clone(),
            39,
            true,
            false,
            false,
            Some(40),
        ),
        (
            "never started: not ready",
            container(Some(probe(0, 10, 1, 3)), None, Some(probe(0, 10, 1, 3))),
            never_starts.clone(),
            15,
            false,
            false,
            false,
            Some(20),
        ),
    ];
    for (name, c, script, t, started, ready, failing, next) in cases {
        let got = Probes::of(&c, &script).at(s(t));
        let want = View {
            started,
            ready,
            readiness_failing: failing,
            next: next.map(s),
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn kills() {
    let script = |live: Option<u64>, start: Option<u64>| Lifecycle {
        liveness_fail_after: live.map(s),
        startup_after: start.map(s),
        ..Default::default()
    };
    // (name, container, script, kill)
    let cases = [
        (
            "no script, no kill",
            container(None, Some(probe(0, 10, 1, 3)), None),
            script(None, None),
            None,
        ),
        (
            "liveness fails from 60 s: probes 60, 70, 80 fail; killed at 80",
            container(None, Some(probe(0, 10, 1, 3)), None),
            script(Some(60), None),
            Some((s(80), Kill::Liveness)),
        ),
        (
            "liveness failing between probes: first failing probe at 70",
            container(None, Some(probe(0, 10, 1, 1)), None),
            script(Some(61), None),
            Some((s(70), Kill::Liveness)),
        ),
        (
            "no liveness probe, no kill",
            container(Some(probe(0, 10, 1, 3)), None, None),
            script(Some(1), None),
            None,
        ),
        (
            "startup too slow: failureThreshold 3 at 0, 10, 20; killed at 20",
            container(None, None, Some(probe(0, 10, 1, 3))),
            script(None, Some(100)),
            Some((s(20), Kill::Startup)),
        ),
        (
            "startup in time: no kill",
            container(None, None, Some(probe(0, 10, 1, 3))),
            script(None, Some(20)),
            None,
        ),
        (
            "liveness counts from the startup success",
            container(None, Some(probe(0, 5, 1, 1)), Some(probe(0, 10, 1, 3))),
            script(Some(0), Some(20)),
            Some((s(20), Kill::Liveness)),
        ),
    ];
    for (name, c, l, want) in cases {
        assert_eq!(Probes::of(&c, &l).kill(), want, "{name}");
    }
}

#[test]
fn failure_messages() {
    let http = Probe {
        http_get: Some(Default::default()),
        ..Default::default()
    };
    let tcp = Probe {
        tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
            port: k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases = [
        (
            "http",
            Some(&http),
            "Readiness probe failed: HTTP probe failed with statuscode: 503",
        ),
        (
            "tcp",
            Some(&tcp),
            "Readiness probe failed: dial tcp 10.0.0.1:8080: connect: connection refused",
        ),
        ("exec: the output, empty", None, "Readiness probe failed: "),
    ];
    for (name, p, want) in cases {
        assert_eq!(failure_message("Readiness", p, "10.0.0.1"), want, "{name}");
    }
}

fn any_probe() -> impl Strategy<Value = Option<Probe>> {
    proptest::option::of(
        (
            proptest::num::i32::ANY,
            proptest::num::i32::ANY,
            -2i32..5,
            proptest::num::i32::ANY,
        )
            .prop_map(|(d, p, st, ft)| probe(d, p, st, ft)),
    )
}

proptest! {
    #[test]
    fn probes_never_panic_and_stay_consistent(
        readiness in any_probe(),
        liveness in any_probe(),
        startup in any_probe(),
        script in (
            proptest::option::of(0u64..3_000_000),
            proptest::option::of(1u64..3_000_000),
            proptest::option::of(0u64..3_000_000),
            proptest::option::of(0u64..3_000_000),
        ),
        t in 0u64..5_000_000,
    ) {
        let l = Lifecycle {
            readiness_fail_after: script.0.map(s),
            readiness_fail_for: script.0.and(script.1).map(s),
            liveness_fail_after: script.2.map(s),
            startup_after: script.3.map(s),
            ..Default::default()
        };
        let c = container(readiness.clone(), liveness, startup);
        let p = Probes::of(&c, &l);
        let v = p.at(s(t));
        prop_assert!(!v.ready || v.started, "ready but not started: {v:?}");
        if let Some(next) = v.next {
            prop_assert!(next > s(t));
        }
        if readiness.is_none() {
            prop_assert_eq!(v.ready, v.started);
        }
        if l.readiness_fail_after.is_none() && l.startup_after.is_none() && readiness.is_some() {
            // Without a script the probe passes from its first run on, for good.
            let later = p.at(s(t).saturating_add(s(20_000_000_000)));
            prop_assert!(later.ready, "{later:?}");
        }
    }
}
