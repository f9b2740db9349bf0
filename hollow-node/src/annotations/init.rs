//! Scripted init containers: `mock-kind.io/initRun.<name>: 5s` (each run of init container
//! `<name>` lasts this long; default: it completes at once) and
//! `mock-kind.io/initFailures.<name>: "2"` (its first 2 runs exit 1, then one succeeds).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{AnnotationError, PREFIX, parse_duration};

pub const INIT_RUN: &str = "initRun.";
pub const INIT_FAILURES: &str = "initFailures.";
/// More failures would only lengthen a test by hours of capped back-off.
pub const MAX_INIT_FAILURES: u32 = 100;

/// What one init container does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitScript {
    /// How long each run lasts before it exits.
    pub run: Duration,
    /// How many runs exit 1 (Error) before one exits 0.
    pub failures: u32,
}

/// The scripts of the init containers named `names` (in spec order), from the pod's
/// annotations; an annotation with a bad value or naming no init container is reported and
/// ignored.
pub fn parse(
    pod: &str,
    annotations: &BTreeMap<String, String>,
    names: &[&str],
) -> (Vec<InitScript>, Vec<AnnotationError>) {
    let mut scripts = vec![InitScript::default(); names.len()];
    let mut errors = Vec::new();
    for (key, value) in annotations {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let (field, name) = if let Some(n) = rest.strip_prefix(INIT_RUN) {
            (INIT_RUN, n)
        } else if let Some(n) = rest.strip_prefix(INIT_FAILURES) {
            (INIT_FAILURES, n)
        } else {
            continue;
        };
        let invalid = |reason: String| AnnotationError::Invalid {
            pod: pod.to_string(),
            annotation: key.chars().take(128).collect(),
            value: value.chars().take(64).collect(),
            reason,
        };
        let Some(index) = names.iter().position(|n| *n == name) else {
            errors.push(invalid("the pod has no init container of that name".into()));
            continue;
        };
        let script = &mut scripts[index];
        if field == INIT_RUN {
            match parse_duration(value) {
                Ok(d) => script.run = d,
                Err(r) => errors.push(invalid(r)),
            }
        } else {
            match value.trim().parse::<u32>() {
                Ok(n) if n <= MAX_INIT_FAILURES => script.failures = n,
                _ => errors.push(invalid(format!(
                    "expected a count from 0 to {MAX_INIT_FAILURES}"
                ))),
            }
        }
    }
    (scripts, errors)
}

#[cfg(test)]
mod tests {
    use super::super::tests::ann;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scripts() {
        let s = Duration::from_secs;
        let script = |run, failures| InitScript {
            run: s(run),
            failures,
        };
        // (name, annotations, scripts of [migrate, setup], errors naming)
        type Case = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            Vec<InitScript>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("none", vec![], vec![script(0, 0), script(0, 0)], vec![]),
            (
                "run and failures",
                vec![
                    ("mock-kind.io/initRun.migrate", "5s"),
                    ("mock-kind.io/initFailures.migrate", "2"),
                    ("mock-kind.io/initRun.setup", "1m"),
                ],
                vec![script(5, 2), script(60, 0)],
                vec![],
            ),
            (
                "unknown container",
                vec![("mock-kind.io/initRun.nope", "5s")],
                vec![script(0, 0), script(0, 0)],
                vec!["no init container"],
            ),
            (
                "too many failures",
                vec![("mock-kind.io/initFailures.setup", "101")],
                vec![script(0, 0), script(0, 0)],
                vec!["from 0 to 100"],
            ),
            (
                "negative failures",
                vec![("mock-kind.io/initFailures.setup", "-1")],
                vec![script(0, 0), script(0, 0)],
                vec!["from 0 to 100"],
            ),
            (
                "bad duration, the other still applies",
                vec![
                    ("mock-kind.io/initRun.migrate", "forever"),
                    ("mock-kind.io/initFailures.migrate", "1"),
                ],
                vec![script(0, 1), script(0, 0)],
                vec!["initRun.migrate"],
            ),
            (
                "other prefixes ignored",
                vec![("zhizuqiu.github.com/initRun.migrate", "5s")],
                vec![script(0, 0), script(0, 0)],
                vec![],
            ),
        ];
        for (name, pairs, want, errs) in cases {
            let (got, errors) = parse("ns/p", &ann(&pairs), &["migrate", "setup"]);
            assert_eq!(got, want, "{name}");
            assert_eq!(errors.len(), errs.len(), "{name}: {errors:?}");
            for (e, needle) in errors.iter().zip(errs) {
                let msg = e.to_string();
                assert!(
                    msg.contains(needle) && msg.contains("pod ns/p"),
                    "{name}: {msg}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_stays_bounded(
            entries in proptest::collection::btree_map(
                prop_oneof![
                    "mock-kind.io/initRun\\.[a-z]{0,3}",
                    "mock-kind.io/initFailures\\.[a-z]{0,3}",
                    "\\PC{0,40}",
                ],
                "\\PC{0,30}",
                0..8,
            )
        ) {
            let names = ["a", "ab", "abc"];
            let (scripts, errors) = parse("ns/p", &entries, &names);
            prop_assert_eq!(scripts.len(), names.len());
            for s in scripts {
                prop_assert!(s.run <= super::super::MAX_DURATION);
                prop_assert!(s.failures <= MAX_INIT_FAILURES);
            }
            prop_assert!(errors.len() <= entries.len());
        }
    }
}
