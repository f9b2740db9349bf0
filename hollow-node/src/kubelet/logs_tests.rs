use super::*;
use crate::kubelet::life::{ContainerLife, Ended, State};
use proptest::prelude::*;

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn ended(start: &str, end: &str, code: i32, reason: &str) -> Ended {
    Ended {
        started: Some(t(start)),
        finished: Some(t(end)),
        exit_code: code,
        reason: Some(reason.into()),
    }
}

fn container(state: State, restarts: i32, last: Option<Ended>, ready: bool) -> ContainerLife {
    ContainerLife {
        name: "app".into(),
        image: "nginx".into(),
        restarts,
        ready,
        state,
        last,
        usage: Default::default(),
        cpu: None,
    }
}

fn running(at: &str) -> State {
    State::Running {
        started: Some(t(at)),
    }
}

#[test]
fn options_parse_and_bound() {
    let cases: [(&str, &str, Result<LogOptions, &str>); 12] = [
        ("empty", "", Ok(LogOptions::default())),
        (
            "all of kubectl's",
            "follow=true&previous=1&timestamps=true&tailLines=10&limitBytes=100",
            Ok(LogOptions {
                follow: true,
                previous: true,
                timestamps: true,
                tail_lines: Some(10),
                limit_bytes: Some(100),
                since: None,
            }),
        ),
        (
            "since time escaped",
            "sinceTime=2026-01-02T03%3A04%3A05Z",
            Ok(LogOptions {
                since: Some(Since::Time(t("2026-01-02T03:04:05Z"))),
                ..LogOptions::default()
            }),
        ),
        (
            "since seconds",
            "sinceSeconds=60",
            Ok(LogOptions {
                since: Some(Since::Seconds(60)),
                ..LogOptions::default()
            }),
        ),
        ("unknown ignored", "pretty=true", Ok(LogOptions::default())),
        ("negative tail", "tailLines=-1", Err("tailLines")),
        ("huge tail", "tailLines=99999999999", Err("tailLines")),
        ("zero limit", "limitBytes=0", Err("limitBytes")),
        ("not a bool", "follow=yes", Err("follow")),
        ("bad time", "sinceTime=yesterday", Err("sinceTime")),
        (
            "both since",
            "sinceSeconds=5&sinceTime=2026-01-02T03:04:05Z",
            Err("at most one"),
        ),
        ("bad escape", "sinceTime=%zz", Err("escape")),
    ];
    for (name, query, want) in cases {
        let got = LogOptions::parse(query);
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
            (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{name}: {e}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
    assert_eq!(
        LogOptions::parse(&"a".repeat(MAX_QUERY + 1)),
        Err(OptionsError::TooLong)
    );
}

#[test]
fn lines_tell_the_containers_life() {
    let crashed = ended("2026-01-01T00:00:10Z", "2026-01-01T00:00:11Z", 1, "Error");
    let script = vec!["scripted hello".to_string()];
    type Case = (
        &'static str,
        ContainerLife,
        Instance,
        Result<Vec<&'static str>, &'static str>,
    );
    let cases: [Case; 7] = [
        (
            "running and ready",
            container(running("2026-01-01T00:00:00Z"), 0, None, true),
            Instance::Current,
            Ok(vec![
                "[hollow-node] container app (image nginx) started on hollow node n-0, instance 0",
                "scripted hello",
                "[hollow-node] container app is ready",
            ]),
        ),
        (
            "restarted after a crash",
            container(
                running("2026-01-01T00:00:30Z"),
                1,
                Some(crashed.clone()),
                false,
            ),
            Instance::Current,
            Ok(vec![
                "[hollow-node] container app (image nginx) started on hollow node n-0, instance 1",
                "[hollow-node] restarted: the previous instance ended with exit code 1 (Error)",
                "scripted hello",
            ]),
        ),
        (
            "previous instance",
            container(
                running("2026-01-01T00:00:30Z"),
                1,
                Some(crashed.clone()),
                false,
            ),
            Instance::Previous,
            Ok(vec![
                "[hollow-node] container app (image nginx) started on hollow node n-0, instance 0",
                "scripted hello",
                "[hollow-node] container app terminated with exit code 1 (Error)",
            ]),
        ),
        (
            "no previous instance",
            container(running("2026-01-01T00:00:00Z"), 0, None, true),
            Instance::Previous,
            Err("previous terminated container \"app\" in pod \"ns/p\" not found"),
        ),
        (
            "completed",
            container(
                State::Terminated(ended(
                    "2026-01-01T00:00:00Z",
                    "2026-01-01T00:00:05Z",
                    0,
                    "Completed",
                )),
                0,
                None,
                false,
            ),
            Instance::Current,
            Ok(vec![
                "[hollow-node] container app (image nginx) started on hollow node n-0, instance 0",
                "scripted hello",
                "[hollow-node] container app terminated with exit code 0 (Completed)",
            ]),
        ),
        (
            "backing off after a crash: the last run",
            container(
                State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                },
                1,
                Some(crashed.clone()),
                false,
            ),
            Instance::Current,
            Ok(vec![
                "[hollow-node] container app (image nginx) started on hollow node n-0, instance 0",
                "scripted hello",
                "[hollow-node] container app terminated with exit code 1 (Error)",
            ]),
        ),
        (
            "not started",
            container(
                State::Waiting {
                    reason: "ContainerCreating".into(),
                },
                0,
                None,
                false,
            ),
            Instance::Current,
            Err("container \"app\" in pod \"ns/p\" is waiting to start: ContainerCreating"),
        ),
    ];
    for (name, c, which, want) in cases {
        let got = lines(&c, "ns/p", "n-0", &script, which);
        match (got, want) {
            (Ok(g), Ok(w)) => {
                let texts: Vec<&str> = g.iter().map(|l| l.text.as_str()).collect();
                assert_eq!(texts, w, "{name}");
                assert!(
                    g.windows(2).all(|p| p[0].at <= p[1].at),
                    "{name}: in time order"
                );
            }
            (Err(e), Err(w)) => assert_eq!(e.to_string(), w, "{name}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn selection_tail_since_timestamps_and_limit() {
    let at = |s| t(s);
    let ls = vec![
        Line {
            at: at("2026-01-01T00:00:00Z"),
            text: "a".into(),
        },
        Line {
            at: at("2026-01-01T00:00:10Z"),
            text: "b".into(),
        },
        Line {
            at: at("2026-01-01T00:00:20.5Z"),
            text: "c".into(),
        },
    ];
    let now = at("2026-01-01T00:00:30Z");
    let cases: [(&str, LogOptions, Vec<&str>); 5] = [
        ("all", LogOptions::default(), vec!["a\n", "b\n", "c\n"]),
        (
            "tail 2",
            LogOptions {
                tail_lines: Some(2),
                ..LogOptions::default()
            },
            vec!["b\n", "c\n"],
        ),
        (
            "tail 0",
            LogOptions {
                tail_lines: Some(0),
                ..LogOptions::default()
            },
            vec![],
        ),
        (
            "since 15 s",
            LogOptions {
                since: Some(Since::Seconds(15)),
                ..LogOptions::default()
            },
            vec!["c\n"],
        ),
        (
            "timestamps",
            LogOptions {
                timestamps: true,
                since: Some(Since::Time(at("2026-01-01T00:00:20Z"))),
                ..LogOptions::default()
            },
            vec!["2026-01-01T00:00:20.5Z c\n"],
        ),
    ];
    for (name, opts, want) in cases {
        assert_eq!(select(&ls, &opts, now), want, "{name}");
    }
    let rendered = vec!["abc\n".to_string(), "déf\n".to_string()];
    let cases: [(&str, Option<u64>, u64, &str, bool); 5] = [
        ("no limit", None, 0, "abc\ndéf\n", false),
        ("cut mid-line", Some(2), 0, "ab", true),
        ("cut before a split character", Some(6), 0, "abc\nd", true),
        ("already sent some", Some(6), 4, "ab", true),
        ("room to spare", Some(100), 0, "abc\ndéf\n", false),
    ];
    for (name, lim, sent, want, reached) in cases {
        assert_eq!(
            limit(&rendered, lim, sent),
            (want.to_string(), reached),
            "{name}"
        );
    }
}

proptest! {
    #[test]
    fn any_query_parses_or_names_its_problem(query in ".{0,200}") {
        match LogOptions::parse(&query) {
            Ok(o) => {
                prop_assert!(o.tail_lines.is_none_or(|n| n <= MAX_TAIL_LINES as u64));
                prop_assert!(o.limit_bytes.is_none_or(|n| (1..=MAX_LIMIT_BYTES as u64).contains(&n)));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn limit_never_exceeds_the_budget(
        texts in proptest::collection::vec(".{0,30}", 0..10),
        lim in 1u64..200,
        sent in 0u64..300,
    ) {
        let rendered: Vec<String> = texts.iter().map(|t| format!("{t}\n")).collect();
        let (out, _) = limit(&rendered, Some(lim), sent);
        prop_assert!(out.len() as u64 <= lim.saturating_sub(sent));
        let all: String = rendered.concat();
        prop_assert!(all.starts_with(&out));
    }

    #[test]
    fn tail_gives_the_last_lines(n in 0u64..10, count in 0usize..10, secs in 0i64..1000) {
        let base = Timestamp::from_second(secs).expect("ts");
        let ls: Vec<Line> = (0..count).map(|i| Line { at: base, text: i.to_string() }).collect();
        let opts = LogOptions { tail_lines: Some(n), ..LogOptions::default() };
        let got = select(&ls, &opts, base);
        prop_assert_eq!(got.len(), count.min(n as usize));
        if let Some(last) = got.last() {
            prop_assert_eq!(last.clone(), format!("{}\n", count - 1));
        }
    }

    #[test]
    fn any_life_gives_ordered_lines_or_the_kubelets_error(
        restarts in 0i32..5,
        state in 0u8..3,
        has_last in any::<bool>(),
        ready in any::<bool>(),
        start in 0i64..1_000_000,
        run in 0i64..1000,
    ) {
        let at = |s: i64| Timestamp::from_second(s).expect("ts");
        let last = has_last.then(|| Ended {
            started: Some(at(start)),
            finished: Some(at(start + run)),
            exit_code: 1,
            reason: None,
        });
        let state = match state {
            0 => State::Waiting { reason: "ContainerCreating".into() },
            1 => State::Running { started: Some(at(start + run)) },
            _ => State::Terminated(Ended {
                started: Some(at(start + run)),
                finished: Some(at(start + 2 * run)),
                exit_code: 0,
                reason: Some("Completed".into()),
            }),
        };
        let c = container(state.clone(), restarts, last.clone(), ready);
        let prev = lines(&c, "ns/p", "n", &[], Instance::Previous);
        prop_assert_eq!(prev.is_ok(), restarts > 0 && has_last);
        let current = lines(&c, "ns/p", "n", &[], Instance::Current);
        let waits = matches!(state, State::Waiting { .. }) && !(restarts > 0 && has_last);
        prop_assert_eq!(current.is_err(), waits);
        for got in [prev, current].into_iter().flatten() {
            prop_assert!(got.windows(2).all(|p| p[0].at <= p[1].at));
            prop_assert!(got.first().is_some_and(|l| l.text.contains("started on hollow node n")));
        }
    }
}
