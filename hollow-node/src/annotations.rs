//! Per-pod lifecycle annotations: kube-mock's names (`zhizuqiu.github.com/…`) and ours
//! (`mock-kind.io/…`), parsed into a [`Lifecycle`] once per evaluation.

pub mod init;

use std::collections::BTreeMap;
use std::time::Duration;

/// kube-mock's annotation prefix, accepted for compatibility.
pub const KUBE_MOCK_PREFIX: &str = "zhizuqiu.github.com/";
/// Our own annotation prefix.
pub const PREFIX: &str = "mock-kind.io/";

pub const DELAY_RUNNING: &str = "delayRunning";
pub const DELAY_SUCCEEDED: &str = "delaySucceeded";
pub const DELAY_FAILED: &str = "delayFailed";
/// `mock-kind.io/crashLoop`: `"true"` or the first back-off (`10s`); the container crashes
/// right after every start and the restart back-off doubles up to 5 minutes, as the kubelet's.
pub const CRASH_LOOP: &str = "crashLoop";
/// `mock-kind.io/neverReady: "true"`: containers run but never pass readiness.
pub const NEVER_READY: &str = "neverReady";
/// `mock-kind.io/readinessFailAfter: 30s`: containers with a readinessProbe fail it from this
/// long after each start (not ready after `failureThreshold` failures; Endpoints drop the pod).
pub const READINESS_FAIL_AFTER: &str = "readinessFailAfter";
/// `mock-kind.io/readinessFailFor: 20s`: the readiness failure lasts this long, then the probe
/// passes again (absent: for good). Needs `readinessFailAfter`.
pub const READINESS_FAIL_FOR: &str = "readinessFailFor";
/// `mock-kind.io/livenessFailAfter: 60s`: containers with a livenessProbe fail it from this
/// long after each start; the kubelet kills and restarts them after `failureThreshold` failures.
pub const LIVENESS_FAIL_AFTER: &str = "livenessFailAfter";
/// `mock-kind.io/startupAfter: 45s`: containers with a startupProbe pass it only from this long
/// after each start (killed and restarted when `failureThreshold` probes fail before that).
pub const STARTUP_AFTER: &str = "startupAfter";
/// Node annotation `mock-kind.io/health: NotReady` stops the lease and reports Ready=False.
pub const NODE_HEALTH: &str = "mock-kind.io/health";

/// Longest `mock-kind.io/health` value carried into the node's Ready condition message.
pub const MAX_HEALTH_LEN: usize = 63;

/// The fault a node's `mock-kind.io/health` value asks for: none when absent or `Ready`; any
/// other value makes the node NotReady and is kept, cut to [`MAX_HEALTH_LEN`] characters, for
/// the condition message (the annotation may be as long as the apiserver allows).
pub fn node_health(value: Option<&str>) -> Option<String> {
    let value = value.filter(|v| *v != "Ready")?;
    Some(value.chars().take(MAX_HEALTH_LEN).collect())
}

/// Default first back-off of a crash loop, the kubelet's.
pub const DEFAULT_CRASH_BACKOFF: Duration = Duration::from_secs(10);

/// The scripted lifecycle of one pod. Durations count from the moment the pod may start
/// (`delay_running`) and from the moment it runs (`delay_succeeded`, `delay_failed`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub delay_running: Option<Duration>,
    pub delay_succeeded: Option<Duration>,
    pub delay_failed: Option<Duration>,
    pub crash_loop: Option<Duration>,
    pub never_ready: bool,
    /// Scripted probe failures, as offsets from each start of a container.
    pub readiness_fail_after: Option<Duration>,
    pub readiness_fail_for: Option<Duration>,
    pub liveness_fail_after: Option<Duration>,
    pub startup_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotationError {
    #[error("pod {pod}: annotation {annotation}={value:?}: {reason}")]
    Invalid {
        pod: String,
        annotation: String,
        value: String,
        reason: String,
    },
}

impl Lifecycle {
    /// Parses the lifecycle annotations of pod `pod` (`namespace/name`, for error messages).
    /// Our prefix wins over kube-mock's when both are present. Each malformed or out-of-range
    /// annotation is reported and handled as if it were absent; the others still apply.
    pub fn parse(
        pod: &str,
        annotations: &BTreeMap<String, String>,
    ) -> (Self, Vec<AnnotationError>) {
        let mut errors = Vec::new();
        let lookup = |key: &str| -> Option<(String, &String)> {
            for prefix in [PREFIX, KUBE_MOCK_PREFIX] {
                let full = format!("{prefix}{key}");
                if let Some(v) = annotations.get(&full) {
                    return Some((full, v));
                }
            }
            None
        };
        let invalid = |annotation: String, value: &str, reason: String| AnnotationError::Invalid {
            pod: pod.to_string(),
            annotation,
            // The value is echoed into an Event: keep it short.
            value: value.chars().take(64).collect(),
            reason,
        };
        let mut duration = |key: &str| -> Option<Duration> {
            let (full, v) = lookup(key)?;
            parse_duration(v)
                .map_err(|reason| errors.push(invalid(full, v, reason)))
                .ok()
        };
        let mut out = Lifecycle {
            delay_running: duration(DELAY_RUNNING),
            delay_succeeded: duration(DELAY_SUCCEEDED),
            delay_failed: duration(DELAY_FAILED),
            ..Default::default()
        };
        let own = |key: &str| {
            annotations
                .get(&format!("{PREFIX}{key}"))
                .map(|v| (format!("{PREFIX}{key}"), v))
        };
        if let Some((full, v)) = own(CRASH_LOOP) {
            let parsed = match v.trim() {
                "true" => Ok(Some(DEFAULT_CRASH_BACKOFF)),
                "false" => Ok(None),
                other => match parse_duration(other) {
                    Ok(d) if d.is_zero() => Err("back-off must be positive".to_string()),
                    Ok(d) => Ok(Some(d)),
                    Err(r) => Err(r),
                },
            };
            match parsed {
                Ok(c) => out.crash_loop = c,
                Err(r) => errors.push(invalid(full, v, r)),
            }
        }
        if let Some((full, v)) = own(NEVER_READY) {
            match parse_bool(v) {
                Ok(b) => out.never_ready = b,
                Err(r) => errors.push(invalid(full, v, r)),
            }
        }
        let mut own_duration = |key: &str, positive: bool| -> Option<Duration> {
            let (full, v) = own(key)?;
            match parse_duration(v) {
                Ok(d) if positive && d.is_zero() => {
                    errors.push(invalid(full, v, "must be positive".into()));
                    None
                }
                Ok(d) => Some(d),
                Err(r) => {
                    errors.push(invalid(full, v, r));
                    None
                }
            }
        };
        out.readiness_fail_after = own_duration(READINESS_FAIL_AFTER, false);
        out.readiness_fail_for = own_duration(READINESS_FAIL_FOR, true);
        out.liveness_fail_after = own_duration(LIVENESS_FAIL_AFTER, false);
        out.startup_after = own_duration(STARTUP_AFTER, false);
        if out.readiness_fail_for.is_some() && out.readiness_fail_after.is_none() {
            errors.push(invalid(
                format!("{PREFIX}{READINESS_FAIL_FOR}"),
                "",
                format!("needs {READINESS_FAIL_AFTER} (ignored)"),
            ));
            out.readiness_fail_for = None;
        }
        if out.delay_succeeded.is_some() && out.delay_failed.is_some() {
            errors.push(invalid(
                format!("{PREFIX}{DELAY_SUCCEEDED}"),
                "",
                format!(
                    "both {DELAY_SUCCEEDED} and {DELAY_FAILED} are set; choose one (both ignored)"
                ),
            ));
            out.delay_succeeded = None;
            out.delay_failed = None;
        }
        (out, errors)
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected \"true\" or \"false\"".into()),
    }
}

/// The longest duration any annotation or flag may ask for. A scripted delay beyond it is a
/// mistake (or an attack on the timers); it is refused and the annotation handled as absent.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longest accepted input: a duration needs a few dozen characters at most.
const MAX_DURATION_LEN: usize = 64;

/// Parses Go-style durations as kube-mock accepts them: `10s`, `1m30s`, `500ms`, `2h`, `1.5s`;
/// a bare number means seconds. Integer arithmetic in nanoseconds, checked at every step, and
/// bounded by [`MAX_DURATION`]: no input panics or wraps.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.len() > MAX_DURATION_LEN {
        return Err(format!("longer than {MAX_DURATION_LEN} characters"));
    }
    let too_long = || format!("out of range (at most {}h)", MAX_DURATION.as_secs() / 3600);
    let max_nanos = MAX_DURATION.as_nanos();
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| too_long())?;
        let d = Duration::from_secs(secs);
        return if d > MAX_DURATION {
            Err(too_long())
        } else {
            Ok(d)
        };
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit after {rest:?} (use ms, s, m or h)"))?;
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let number = &rest[..digits];
        let after = &rest[digits..];
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let unit_nanos: u128 = match &after[..unit_len] {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
        };
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!("bad number {number:?}"));
        }
        // Every digit string here is under MAX_DURATION_LEN long, but its value may still be
        // huge: each step is checked.
        let mut nanos: u128 = 0;
        for b in whole.bytes() {
            nanos = nanos
                .checked_mul(10)
                .and_then(|n| n.checked_add(u128::from(b - b'0')))
                .ok_or_else(too_long)?;
            if nanos > max_nanos {
                return Err(too_long());
            }
        }
        nanos = nanos.checked_mul(unit_nanos).ok_or_else(too_long)?;
        // Fraction digits beyond a nanosecond are dropped, as Go does.
        let mut scale = unit_nanos;
        for b in frac.bytes() {
            scale /= 10;
            nanos = nanos
                .checked_add(u128::from(b - b'0') * scale)
                .ok_or_else(too_long)?;
        }
        total = total.checked_add(nanos).ok_or_else(too_long)?;
        if total > max_nanos {
            return Err(too_long());
        }
        rest = &after[unit_len..];
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_long())?;
    // The remainder is below 10^9 and fits.
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Result<Duration, ()>)] = &[
            ("10s", Ok(Duration::from_secs(10))),
            ("1m30s", Ok(Duration::from_secs(90))),
            ("500ms", Ok(Duration::from_millis(500))),
            ("2h", Ok(Duration::from_secs(7200))),
            ("1.5s", Ok(Duration::from_millis(1500))),
            ("7", Ok(Duration::from_secs(7))),
            ("0s", Ok(Duration::ZERO)),
            ("", Err(())),
            ("10", Ok(Duration::from_secs(10))),
            ("10x", Err(())),
            ("s", Err(())),
            ("-1s", Err(())),
            ("10s5", Err(())),
            ("720h", Ok(Duration::from_secs(720 * 3600))),
            ("720h1ms", Err(())),
            ("20000h", Err(())),
            ("99999999999999999999h", Err(())),
            ("99999999999999999999999999999999999999999999", Err(())),
            ("2592001", Err(())),
            ("1.2.3s", Err(())),
            (".5s", Ok(Duration::from_millis(500))),
            ("5.s", Ok(Duration::from_secs(5))),
            (".s", Err(())),
            ("0.0000000001s", Ok(Duration::ZERO)),
            ("1.000000001s", Ok(Duration::new(1, 1))),
            ("1.5ms", Ok(Duration::from_micros(1500))),
        ];
        for (input, want) in cases {
            let got = parse_duration(input).map_err(|_| ());
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn a_bad_annotation_is_dropped_alone() {
        let secs = Duration::from_secs;
        let (got, errors) = Lifecycle::parse(
            "ns/p",
            &ann(&[
                ("mock-kind.io/delayRunning", "20000h"),
                ("mock-kind.io/delaySucceeded", "5s"),
                ("mock-kind.io/neverReady", "maybe"),
            ]),
        );
        assert_eq!(
            got,
            Lifecycle {
                delay_succeeded: Some(secs(5)),
                ..Default::default()
            }
        );
        let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("delayRunning") && msgs[0].contains("out of range"));
        assert!(msgs[1].contains("neverReady"));
    }

    #[test]
    fn lifecycles() {
        let secs = Duration::from_secs;
        type Case = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            Result<Lifecycle, &'static str>,
        );
        let cases: Vec<Case> = vec![
            ("none", vec![], Ok(Lifecycle::default())),
            (
                "kube-mock names",
                vec![
                    ("zhizuqiu.github.com/delayRunning", "5s"),
                    ("zhizuqiu.github.com/delaySucceeded", "10s"),
                ],
                Ok(Lifecycle {
                    delay_running: Some(secs(5)),
                    delay_succeeded: Some(secs(10)),
                    ..Default::default()
                }),
            ),
            (
                "our prefix wins",
                vec![
                    ("zhizuqiu.github.com/delayRunning", "5s"),
                    ("mock-kind.io/delayRunning", "1s"),
                ],
                Ok(Lifecycle {
                    delay_running: Some(secs(1)),
                    ..Default::default()
                }),
            ),
            (
                "failed",
                vec![("mock-kind.io/delayFailed", "3s")],
                Ok(Lifecycle {
                    delay_failed: Some(secs(3)),
                    ..Default::default()
                }),
            ),
            (
                "crash loop true",
                vec![("mock-kind.io/crashLoop", "true")],
                Ok(Lifecycle {
                    crash_loop: Some(secs(10)),
                    ..Default::default()
                }),
            ),
            (
                "crash loop backoff",
                vec![("mock-kind.io/crashLoop", "2s")],
                Ok(Lifecycle {
                    crash_loop: Some(secs(2)),
                    ..Default::default()
                }),
            ),
            (
                "crash loop zero",
                vec![("mock-kind.io/crashLoop", "0s")],
                Err("mock-kind.io/crashLoop"),
            ),
            (
                "never ready",
                vec![("mock-kind.io/neverReady", "true")],
                Ok(Lifecycle {
                    never_ready: true,
                    ..Default::default()
                }),
            ),
            (
                "never ready bad",
                vec![("mock-kind.io/neverReady", "yes")],
                Err("mock-kind.io/neverReady"),
            ),
            (
                "bad duration names the annotation",
                vec![("zhizuqiu.github.com/delayRunning", "soon")],
                Err("zhizuqiu.github.com/delayRunning"),
            ),
            (
                "succeeded and failed",
                vec![
                    ("mock-kind.io/delaySucceeded", "1s"),
                    ("mock-kind.io/delayFailed", "1s"),
                ],
                Err("choose one"),
            ),
            (
                "probe failures",
                vec![
                    ("mock-kind.io/readinessFailAfter", "30s"),
                    ("mock-kind.io/readinessFailFor", "20s"),
                    ("mock-kind.io/livenessFailAfter", "1m"),
                    ("mock-kind.io/startupAfter", "0s"),
                ],
                Ok(Lifecycle {
                    readiness_fail_after: Some(secs(30)),
                    readiness_fail_for: Some(secs(20)),
                    liveness_fail_after: Some(secs(60)),
                    startup_after: Some(secs(0)),
                    ..Default::default()
                }),
            ),
            (
                "readiness fails for good from the start",
                vec![("mock-kind.io/readinessFailAfter", "0s")],
                Ok(Lifecycle {
                    readiness_fail_after: Some(secs(0)),
                    ..Default::default()
                }),
            ),
            (
                "readiness failure of zero length",
                vec![
                    ("mock-kind.io/readinessFailAfter", "1s"),
                    ("mock-kind.io/readinessFailFor", "0s"),
                ],
                Err("mock-kind.io/readinessFailFor"),
            ),
            (
                "readiness failure length alone",
                vec![("mock-kind.io/readinessFailFor", "5s")],
                Err("needs readinessFailAfter"),
            ),
            (
                "liveness out of range",
                vec![("mock-kind.io/livenessFailAfter", "721h")],
                Err("mock-kind.io/livenessFailAfter"),
            ),
            (
                "startup not a duration",
                vec![("mock-kind.io/startupAfter", "later")],
                Err("mock-kind.io/startupAfter"),
            ),
            (
                "probe failures take only our prefix",
                vec![("zhizuqiu.github.com/livenessFailAfter", "1s")],
                Ok(Lifecycle::default()),
            ),
            (
                "unrelated annotations ignored",
                vec![("other.io/delayRunning", "x")],
                Ok(Lifecycle::default()),
            ),
        ];
        for (name, pairs, want) in cases {
            let (got, errors) = Lifecycle::parse("ns/p", &ann(&pairs));
            match want {
                Ok(w) => {
                    assert_eq!(got, w, "{name}");
                    assert!(errors.is_empty(), "{name}: {errors:?}");
                }
                Err(needle) => {
                    assert_eq!(errors.len(), 1, "{name}: {errors:?}");
                    let msg = errors[0].to_string();
                    assert!(msg.contains(needle), "{name}: {msg}");
                    assert!(
                        msg.contains("pod ns/p"),
                        "{name}: error names the pod: {msg}"
                    );
                }
            }
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_duration_never_panics_and_stays_bounded(s in "\\PC*") {
                if let Ok(d) = parse_duration(&s) {
                    prop_assert!(d <= MAX_DURATION);
                }
            }

            #[test]
            fn parse_duration_on_duration_shaped_input(
                parts in proptest::collection::vec(
                    ("[0-9]{0,25}(\\.[0-9]{0,12})?", prop_oneof!["ms", "s", "m", "h", "x", ""]),
                    0..5,
                )
            ) {
                let s: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
                if let Ok(d) = parse_duration(&s) {
                    prop_assert!(d <= MAX_DURATION, "{s}: {d:?}");
                }
            }

            #[test]
            fn node_health_is_bounded(value in proptest::option::of("\\PC{0,200}")) {
                let got = node_health(value.as_deref());
                prop_assert_eq!(got.is_none(), value.as_deref().is_none_or(|v| v == "Ready"));
                if let (Some(got), Some(value)) = (got, value) {
                    prop_assert!(got.chars().count() <= MAX_HEALTH_LEN);
                    prop_assert!(value.starts_with(&got));
                }
            }

            #[test]
            fn whole_seconds_round_trip(secs in 0u64..=MAX_DURATION.as_secs()) {
                prop_assert_eq!(parse_duration(&format!("{secs}s")), Ok(Duration::from_secs(secs)));
                prop_assert_eq!(parse_duration(&secs.to_string()), Ok(Duration::from_secs(secs)));
            }

            #[test]
            fn lifecycle_parse_never_panics(
                entries in proptest::collection::btree_map(
                    prop_oneof![
                        Just("mock-kind.io/delayRunning".to_string()),
                        Just("mock-kind.io/delaySucceeded".to_string()),
                        Just("mock-kind.io/delayFailed".to_string()),
                        Just("mock-kind.io/crashLoop".to_string()),
                        Just("mock-kind.io/neverReady".to_string()),
                        Just("mock-kind.io/readinessFailAfter".to_string()),
                        Just("mock-kind.io/readinessFailFor".to_string()),
                        Just("mock-kind.io/livenessFailAfter".to_string()),
                        Just("mock-kind.io/startupAfter".to_string()),
                        Just("zhizuqiu.github.com/delayRunning".to_string()),
                        "\\PC{0,40}",
                    ],
                    "\\PC{0,80}",
                    0..8,
                )
            ) {
                let (l, _errors) = Lifecycle::parse("ns/p", &entries);
                let all = [
                    l.delay_running, l.delay_succeeded, l.delay_failed, l.crash_loop,
                    l.readiness_fail_after, l.readiness_fail_for, l.liveness_fail_after, l.startup_after,
                ];
                for d in all.into_iter().flatten() {
                    prop_assert!(d <= MAX_DURATION);
                }
                prop_assert!(l.readiness_fail_for.is_none() || l.readiness_fail_after.is_some());
                prop_assert!(l.readiness_fail_for != Some(Duration::ZERO));
                prop_assert!(!(l.delay_succeeded.is_some() && l.delay_failed.is_some()));
            }
        }
    }
}
