//! Retry decisions as pure functions: which API failures are worth trying again, how long to
//! wait (capped exponential backoff with jitter, as kwok does it), and what a server's
//! `Retry-After` asks for. The glue (`nodes`, `pods`) counts failures and calls these.

use std::time::Duration;

/// What a failed request tells us about trying it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The same request may well succeed later: no response (connection refused or reset,
    /// timeouts), 408, 429 or 5xx. `retry_after` is what the server asked for, if anything.
    Transient { retry_after: Option<Duration> },
    /// Repeating the same request will not help (4xx other than 408/429, bad data).
    Permanent,
}

/// Sorts a kube error into [`Failure`]. The server's `Retry-After` reaches us as
/// `Status.details.retryAfterSeconds`: the apiserver puts it there for some refusals, and
/// `client::ApiLayer` copies the header there for the rest (kube drops headers).
pub fn classify(e: &kube::Error) -> Failure {
    match e {
        kube::Error::Api(s) => {
            let retry_after = s
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|&s| s > 0)
                .map(|s| Duration::from_secs(u64::from(s)));
            match s.code {
                408 | 429 | 500..=599 => Failure::Transient { retry_after },
                _ => Failure::Permanent,
            }
        }
        // No usable response: refused, reset, timed out, TLS or auth refresh trouble.
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::ReadEvents(_)
        | kube::Error::Auth(_) => Failure::Transient { retry_after: None },
        _ => Failure::Permanent,
    }
}

/// Capped exponential backoff with "equal jitter": the n-th consecutive failure waits a
/// uniform time in [d/2, d] for d = min(cap, base·2ⁿ⁻¹), so a crowd of nodes that failed
/// together does not come back together, and no wait exceeds `cap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

/// Node registration: 1 s, 2 s, 4 s … up to a minute.
pub const REGISTRATION: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
};

/// Steady-state writes (node status, pod status, pod deletion): 1 s, 2 s … up to 30 s.
pub const STEADY: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(30),
};

/// Attempts of one node's registration within the first round before it is left to the
/// background (where it is retried every [`REGISTRATION`]`.cap` or sooner).
pub const REGISTRATION_ATTEMPTS: u32 = 5;

impl Backoff {
    /// Wait after `failures` consecutive failures (1 = the first), at least what the server
    /// asked for, but never more than `cap`: a broken or hostile `Retry-After` cannot park
    /// work for a day. `sample` is uniform in [0, 1) (injected so tests are deterministic).
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, sample: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let full = self
            .base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap);
        let sample = if sample.is_finite() {
            sample.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jittered = full.mul_f64(0.5 + 0.5 * sample);
        jittered.max(retry_after.unwrap_or_default()).min(self.cap)
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryIn(Duration),
    /// Stop trying now (the caller may come back much later).
    GiveUp,
}

/// One node's registration in the first round: retry transient failures with backoff, at
/// most `attempts` times in all; a permanent failure ends the round for that node at once.
pub fn registration(failure: Failure, failures: u32, attempts: u32, sample: f64) -> Next {
    match failure {
        Failure::Permanent => Next::GiveUp,
        Failure::Transient { .. } if failures >= attempts => Next::GiveUp,
        Failure::Transient { retry_after } => {
            Next::RetryIn(REGISTRATION.delay(failures, retry_after, sample))
        }
    }
}

/// Steady-state work is never abandoned (the object may heal, RBAC may be fixed): transient
/// failures back off from `backoff.base`, permanent ones wait the full cap.
pub fn steady(backoff: Backoff, failure: Failure, failures: u32, sample: f64) -> Duration {
    match failure {
        Failure::Permanent => backoff.cap,
        Failure::Transient { retry_after } => backoff.delay(failures, retry_after, sample),
    }
}

/// A `Retry-After` header value (RFC 9110: delay-seconds or an HTTP-date) as a wait from
/// `now`; `None` when it is neither. A date in the past means "now".
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 is still "a very long time": the caller caps it.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// Whole seconds for `Status.details.retryAfterSeconds`: rounded up so "0.5 s" is not "none",
/// and saturated to what the field holds.
pub fn retry_after_seconds(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use kube::core::response::StatusDetails;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn api(code: u16, retry_after: u32) -> kube::Error {
        let mut s = Status::failure("x", "y").with_code(code);
        if retry_after > 0 {
            s.details = Some(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: retry_after,
            });
        }
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn classification() {
        let io = |kind| kube::Error::Service(Box::new(std::io::Error::from(kind)));
        let cases: Vec<(&str, kube::Error, Failure)> = vec![
            (
                "refused",
                io(std::io::ErrorKind::ConnectionRefused),
                Failure::Transient { retry_after: None },
            ),
            (
                "reset",
                io(std::io::ErrorKind::ConnectionReset),
                Failure::Transient { retry_after: None },
            ),
            (
                "timeout",
                io(std::io::ErrorKind::TimedOut),
                Failure::Transient { retry_after: None },
            ),
            (
                "429 with Retry-After",
                api(429, 7),
                Failure::Transient {
                    retry_after: Some(S(7)),
                },
            ),
            (
                "429 without",
                api(429, 0),
                Failure::Transient { retry_after: None },
            ),
            (
                "503",
                api(503, 2),
                Failure::Transient {
                    retry_after: Some(S(2)),
                },
            ),
            ("500", api(500, 0), Failure::Transient { retry_after: None }),
            ("408", api(408, 0), Failure::Transient { retry_after: None }),
            ("403", api(403, 0), Failure::Permanent),
            ("422", api(422, 0), Failure::Permanent),
            ("404", api(404, 0), Failure::Permanent),
            (
                "bad json",
                kube::Error::SerdeError(serde_json::from_str::<u8>("x").expect_err("not a number")),
                Failure::Permanent,
            ),
        ];
        for (name, e, want) in cases {
            assert_eq!(classify(&e), want, "{name}");
        }
    }

    #[test]
    fn backoff_table() {
        let ms = Duration::from_millis;
        let b = STEADY;
        let cases: &[(&str, u32, Option<Duration>, f64, Duration)] = &[
            ("first, low jitter", 1, None, 0.0, ms(500)),
            ("first, high jitter", 1, None, 1.0, S(1)),
            ("second doubles", 2, None, 1.0, S(2)),
            ("fifth", 5, None, 1.0, S(16)),
            ("sixth hits the cap", 6, None, 1.0, S(30)),
            ("capped, low jitter", 6, None, 0.0, S(15)),
            ("very many failures stay capped", u32::MAX, None, 1.0, S(30)),
            ("zero failures acts as the first", 0, None, 1.0, S(1)),
            (
                "Retry-After longer than backoff wins",
                1,
                Some(S(7)),
                0.0,
                S(7),
            ),
            (
                "backoff longer than Retry-After wins",
                5,
                Some(S(2)),
                1.0,
                S(16),
            ),
            (
                "Retry-After beyond the cap is capped",
                1,
                Some(S(3600)),
                0.0,
                S(30),
            ),
            ("NaN sample is the low end", 1, None, f64::NAN, ms(500)),
        ];
        for (name, failures, ra, sample, want) in cases {
            let got = b.delay(*failures, *ra, *sample);
            assert!(
                got.abs_diff(*want) < ms(1),
                "{name}: got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn registration_and_steady_table() {
        let t = |ra| Failure::Transient { retry_after: ra };
        let cases: &[(&str, Next, Next)] = &[
            (
                "transient retried",
                registration(t(None), 1, 5, 1.0),
                Next::RetryIn(S(1)),
            ),
            (
                "429 waits as asked",
                registration(t(Some(S(9))), 1, 5, 0.0),
                Next::RetryIn(S(9)),
            ),
            (
                "attempts used up",
                registration(t(None), 5, 5, 0.0),
                Next::GiveUp,
            ),
            (
                "permanent gives up at once",
                registration(Failure::Permanent, 1, 5, 0.0),
                Next::GiveUp,
            ),
            (
                "steady transient backs off",
                Next::RetryIn(steady(STEADY, t(None), 3, 1.0)),
                Next::RetryIn(S(4)),
            ),
            (
                "steady permanent waits the cap",
                Next::RetryIn(steady(STEADY, Failure::Permanent, 1, 0.0)),
                Next::RetryIn(S(30)),
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn retry_after_values() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let cases: &[(&str, Option<Duration>)] = &[
            ("5", Some(S(5))),
            (" 120 ", Some(S(120))),
            ("0", Some(S(0))),
            ("99999999999999999999999", Some(S(u64::MAX))),
            ("Thu, 01 Jan 2026 00:00:30 GMT", Some(S(30))),
            ("Wed, 31 Dec 2025 23:00:00 GMT", Some(S(0))),
            ("-1", None),
            ("1.5", None),
            ("", None),
            ("soon", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), *want, "{value:?}");
        }
        let ms = Duration::from_millis;
        assert_eq!(retry_after_seconds(ms(500)), 1);
        assert_eq!(retry_after_seconds(S(0)), 1);
        assert_eq!(retry_after_seconds(ms(2001)), 3);
        assert_eq!(retry_after_seconds(S(u64::MAX)), u32::MAX);
    }

    proptest! {
        #[test]
        fn any_header_parses_without_panic(value in ".{0,64}", secs in 0i64..4_000_000_000) {
            let now = jiff::Timestamp::from_second(secs).expect("in range");
            let _ = parse_retry_after(&value, now);
        }

        #[test]
        fn digit_headers_are_seconds(n in any::<u32>()) {
            let now = jiff::Timestamp::UNIX_EPOCH;
            prop_assert_eq!(parse_retry_after(&n.to_string(), now), Some(S(n.into())));
        }

        #[test]
        fn any_header_gives_a_capped_wait(
            value in ".{0,64}",
            failures in any::<u32>(),
            sample in any::<f64>(),
        ) {
            let ra = parse_retry_after(&value, jiff::Timestamp::UNIX_EPOCH);
            for b in [STEADY, REGISTRATION] {
                let d = b.delay(failures, ra, sample);
                prop_assert!(d <= b.cap, "{d:?}");
                prop_assert!(d >= b.base / 2 || ra.is_some(), "{d:?}");
            }
        }

        #[test]
        fn backoff_never_shrinks_with_more_failures(failures in 1u32..64, sample in 0.0f64..1.0) {
            let a = STEADY.delay(failures, None, sample);
            let b = STEADY.delay(failures + 1, None, sample);
            prop_assert!(b >= a, "{a:?} then {b:?}");
        }
    }
}
