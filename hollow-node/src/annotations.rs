//! Per-pod lifecycle annotations: kube-mock's names (`zhizuqiu.github.com/…`) and ours
//! (`mock-kind.io/…`), parsed into a [`Lifecycle`] once per evaluation.

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
/// Node annotation `mock-kind.io/health: NotReady` stops the lease and reports Ready=False.
pub const NODE_HEALTH: &str = "mock-kind.io/health";

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
    /// Our prefix wins over kube-mock's when both are present.
    pub fn parse(
        pod: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, AnnotationError> {
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
            value: value.to_string(),
            reason,
        };
        let duration = |key: &str| -> Result<Option<Duration>, AnnotationError> {
            match lookup(key) {
                None => Ok(None),
                Some((full, v)) => parse_duration(v)
                    .map(Some)
                    .map_err(|reason| invalid(full, v, reason)),
            }
        };
        let mut out = Lifecycle {
            delay_running: duration(DELAY_RUNNING)?,
            delay_succeeded: duration(DELAY_SUCCEEDED)?,
            delay_failed: duration(DELAY_FAILED)?,
            ..Default::default()
        };
        let own = |key: &str| {
            annotations
                .get(&format!("{PREFIX}{key}"))
                .map(|v| (format!("{PREFIX}{key}"), v))
        };
        if let Some((full, v)) = own(CRASH_LOOP) {
            out.crash_loop = match v.trim() {
                "true" => Some(DEFAULT_CRASH_BACKOFF),
                "false" => None,
                other => {
                    let d = parse_duration(other).map_err(|r| invalid(full.clone(), v, r))?;
                    if d.is_zero() {
                        return Err(invalid(full, v, "back-off must be positive".into()));
                    }
                    Some(d)
                }
            };
        }
        if let Some((full, v)) = own(NEVER_READY) {
            out.never_ready = parse_bool(v).map_err(|r| invalid(full, v, r))?;
        }
        if out.delay_succeeded.is_some() && out.delay_failed.is_some() {
            return Err(invalid(
                format!("{PREFIX}{DELAY_SUCCEEDED}"),
                "",
                format!("both {DELAY_SUCCEEDED} and {DELAY_FAILED} are set; choose one"),
            ));
        }
        Ok(out)
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected \"true\" or \"false\"".into()),
    }
}

/// Parses Go-style durations as kube-mock accepts them: `10s`, `1m30s`, `500ms`, `2h`; a bare
/// number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit after {rest:?} (use ms, s, m or h)"))?;
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad number {:?}", &rest[..digits]))?;
        let after = &rest[digits..];
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let unit = &after[..unit_len];
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
        };
        total += Duration::from_secs_f64(value * scale);
        rest = &after[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
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
        ];
        for (input, want) in cases {
            let got = parse_duration(input).map_err(|_| ());
            assert_eq!(&got, want, "input {input:?}");
        }
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
                "unrelated annotations ignored",
                vec![("other.io/delayRunning", "x")],
                Ok(Lifecycle::default()),
            ),
        ];
        for (name, pairs, want) in cases {
            let got = Lifecycle::parse("ns/p", &ann(&pairs));
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
                (Err(e), Err(needle)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(needle), "{name}: {msg}");
                    assert!(
                        msg.contains("pod ns/p"),
                        "{name}: error names the pod: {msg}"
                    );
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
