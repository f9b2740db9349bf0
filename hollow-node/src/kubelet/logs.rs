//! `containerLogs`: the query the kubelet accepts (bounded, bad values refused with the reason)
//! and the log a hollow container wrote, built from its life alone: deterministic lines for
//! each start, restart, readiness and end, plus the pod's scripted lines.

use jiff::Timestamp;

use crate::kubelet::life::{ContainerLife, Ended, State};

/// Largest `tailLines` and `limitBytes` accepted.
pub const MAX_TAIL_LINES: i64 = 1_000_000;
pub const MAX_LIMIT_BYTES: i64 = 1 << 30;
/// Largest `sinceSeconds` accepted: ten years.
pub const MAX_SINCE_SECONDS: i64 = 10 * 366 * 24 * 3600;
/// Longest query string read.
pub const MAX_QUERY: usize = 4096;

/// What a log request asks for, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub since: Option<Since>,
}

/// Lines from this moment on, or from this many seconds before the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    Time(Timestamp),
    Seconds(u64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("query string longer than {MAX_QUERY} bytes")]
    TooLong,
    #[error("{name}={value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("at most one of sinceTime or sinceSeconds may be specified")]
    BothSince,
}

fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> OptionsError {
    OptionsError::Invalid {
        name,
        value: telemetry::char_prefix(value, 64).to_string(),
        reason: reason.into(),
    }
}

/// Go's `strconv.ParseBool`, which the kubelet's query decoding uses.
fn boolean(name: &'static str, v: &str) -> Result<bool, OptionsError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(name, v, "not a boolean")),
    }
}

fn bounded(name: &'static str, v: &str, min: i64, max: i64) -> Result<u64, OptionsError> {
    let n: i64 = v.parse().map_err(|_| invalid(name, v, "not an integer"))?;
    if !(min..=max).contains(&n) {
        return Err(invalid(name, v, format!("must be between {min} and {max}")));
    }
    u64::try_from(n).map_err(|_| invalid(name, v, "must not be negative"))
}

/// A minimal `%XX` decoder: enough for the RFC 3339 times and numbers the apiserver sends.
pub(crate) fn unescape(v: &str) -> Option<String> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = v.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl LogOptions {
    /// Parses the query string of a `containerLogs` request. Unknown parameters are ignored,
    /// as the kubelet ignores them.
    pub fn parse(query: &str) -> Result<Self, OptionsError> {
        if query.len() > MAX_QUERY {
            return Err(OptionsError::TooLong);
        }
        let mut o = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let v = unescape(raw).ok_or_else(|| invalid("query", raw, "bad %-escape"))?;
            match k {
                "follow" => o.follow = boolean("follow", &v)?,
                "previous" => o.previous = boolean("previous", &v)?,
                "timestamps" => o.timestamps = boolean("timestamps", &v)?,
                "tailLines" => o.tail_lines = Some(bounded("tailLines", &v, 0, MAX_TAIL_LINES)?),
                "limitBytes" => {
                    o.limit_bytes = Some(bounded("limitBytes", &v, 1, MAX_LIMIT_BYTES)?)
                }
                "sinceSeconds" => {
                    since_seconds = Some(bounded("sinceSeconds", &v, 1, MAX_SINCE_SECONDS)?)
                }
                "sinceTime" => {
                    since_time = Some(
                        v.parse::<Timestamp>()
                            .map_err(|_| invalid("sinceTime", &v, "not an RFC 3339 time"))?,
                    )
                }
                _ => {}
            }
        }
        o.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => return Err(OptionsError::BothSince),
            (Some(s), None) => Some(Since::Seconds(s)),
            (None, Some(t)) => Some(Since::Time(t)),
            (None, None) => None,
        };
        Ok(o)
    }

    /// The earliest line time wanted, for a request made at `now`.
    pub fn since_at(&self, now: Timestamp) -> Option<Timestamp> {
        match self.since? {
            Since::Time(t) => Some(t),
            Since::Seconds(s) => {
                let secs = i64::try_from(s).unwrap_or(i64::MAX);
                now.checked_sub(jiff::SignedDuration::from_secs(secs))
                    .ok()
                    .or(Some(Timestamp::MIN))
            }
        }
    }
}

/// One line of a container's log and when it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub at: Timestamp,
    pub text: String,
}

/// Why there is no log to give; the text is the kubelet's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("container {container:?} in pod {pod:?} is waiting to start: {reason}")]
    Waiting {
        container: String,
        pod: String,
        reason: String,
    },
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious { container: String, pod: String },
}

/// Which instance of the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instance {
    Current,
    Previous,
}

fn exit_text(e: &Ended) -> String {
    match &e.reason {
        Some(r) => format!("exit code {} ({r})", e.exit_code),
        None => format!("exit code {}", e.exit_code),
    }
}

/// One instance of a container: its number (the restart count when it started), its start,
/// how the instance before it ended, whether it became ready, and how it ended.
struct Run<'a> {
    number: i32,
    start: Timestamp,
    restart_after: Option<&'a Ended>,
    ready: bool,
    end: Option<&'a Ended>,
}

/// Everything one instance of container `c` on node `node` wrote.
fn instance_lines(c: &ContainerLife, node: &str, script: &[String], run: Run<'_>) -> Vec<Line> {
    let Run {
        number,
        start,
        restart_after,
        ready,
        end,
    } = run;
    let line = |at: Timestamp, text: String| Line { at, text };
    let mut out = vec![line(
        start,
        format!(
            "[hollow-node] container {} (image {}) started on hollow node {node}, instance {number}",
            c.name, c.image
        ),
    )];
    if let Some(prev) = restart_after {
        out.push(line(
            start,
            format!(
                "[hollow-node] restarted: the previous instance ended with {}",
                exit_text(prev)
            ),
        ));
    }
    out.extend(script.iter().map(|s| line(start, s.clone())));
    if ready {
        out.push(line(
            start,
            format!("[hollow-node] container {} is ready", c.name),
        ));
    }
    if let Some(e) = end {
        out.push(line(
            e.finished.unwrap_or(start).max(start),
            format!(
                "[hollow-node] container {} terminated with {}",
                c.name,
                exit_text(e)
            ),
        ));
    }
    out
}

/// The log of `c` in pod `pod` (`namespace/name`) on `node`: the current or the previous
/// instance, every line, in order.
pub fn lines(
    c: &ContainerLife,
    pod: &str,
    node: &str,
    script: &[String],
    which: Instance,
) -> Result<Vec<Line>, LogError> {
    match which {
        Instance::Previous => {
            let prev =
                c.last
                    .as_ref()
                    .filter(|_| c.restarts > 0)
                    .ok_or_else(|| LogError::NoPrevious {
                        container: c.name.clone(),
                        pod: pod.to_string(),
                    })?;
            let start = prev
                .started
                .or(prev.finished)
                .unwrap_or(Timestamp::UNIX_EPOCH);
            let number = c.restarts.saturating_sub(1);
            let run = Run {
                number,
                start,
                restart_after: None,
                ready: false,
                end: Some(prev),
            };
            Ok(instance_lines(c, node, script, run))
        }
        // Backing off after a crash, the kubelet gives the last run's log.
        Instance::Current
            if matches!(c.state, State::Waiting { .. }) && c.restarts > 0 && c.last.is_some() =>
        {
            lines(c, pod, node, script, Instance::Previous)
        }
        Instance::Current => {
            let (start, end) = match &c.state {
                State::Waiting { reason } => {
                    return Err(LogError::Waiting {
                        container: c.name.clone(),
                        pod: pod.to_string(),
                        reason: reason.clone(),
                    });
                }
                State::Running { started } => (*started, None),
                State::Terminated(e) => (e.started.or(e.finished), Some(e)),
            };
            let start = start.unwrap_or(Timestamp::UNIX_EPOCH);
            let restart_after = c.last.as_ref().filter(|_| c.restarts > 0);
            let run = Run {
                number: c.restarts,
                start,
                restart_after,
                ready: c.ready,
                end,
            };
            Ok(instance_lines(c, node, script, run))
        }
    }
}

/// Whether the current instance has stopped writing: terminated, or never to start.
pub fn finished(c: &ContainerLife) -> bool {
    matches!(c.state, State::Terminated(_))
}

/// The lines `opts` selects (since, then tail), rendered with or without timestamps, not cut.
pub fn select(lines: &[Line], opts: &LogOptions, now: Timestamp) -> Vec<String> {
    let since = opts.since_at(now);
    let kept: Vec<&Line> = lines
        .iter()
        .filter(|l| since.is_none_or(|s| l.at >= s))
        .collect();
    let skip = match opts.tail_lines {
        Some(n) => kept
            .len()
            .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
        None => 0,
    };
    kept[skip..]
        .iter()
        .map(|l| render(l, opts.timestamps))
        .collect()
}

/// One line as written to the client, newline included.
pub fn render(l: &Line, timestamps: bool) -> String {
    if timestamps {
        // The kubelet's RFC3339Nano: UTC, fraction without trailing zeros.
        format!("{} {}\n", l.at, l.text)
    } else {
        format!("{}\n", l.text)
    }
}

/// Joins `rendered` and cuts at `limit` bytes (mid-line, as the kubelet does), counting `sent`
/// bytes already written. Returns the text and whether the limit was reached.
pub fn limit(rendered: &[String], limit: Option<u64>, sent: u64) -> (String, bool) {
    let mut out = String::new();
    let budget = limit.map(|l| l.saturating_sub(sent));
    for r in rendered {
        out.push_str(r);
    }
    match budget {
        Some(b) if (out.len() as u64) >= b => {
            let cut = usize::try_from(b).unwrap_or(usize::MAX).min(out.len());
            // Bytes, not characters: the kubelet cuts bytes; a split character is the
            // client's to handle, but a Rust String must stay valid UTF-8.
            let mut end = cut;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            (out, true)
        }
        _ => (out, false),
    }
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
