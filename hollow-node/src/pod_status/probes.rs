//! Readiness, liveness and startup probes as the kubelet's prober workers run them, as offsets
//! from the start of one run of a container: when each probe reports success or failure, when
//! the container counts as started and ready, and when a failing liveness or startup probe
//! makes the kubelet kill it.
//!
//! The kubelet's rules (`pkg/kubelet/prober/worker.go`, `prober_manager.go`):
//! - a probe runs every `periodSeconds`, but not before `initialDelaySeconds` after the
//!   container started; readiness and liveness do not run until the startup probe succeeded;
//! - the reported result changes only after `successThreshold` successes or
//!   `failureThreshold` failures in a row; until the first change it is the initial value:
//!   readiness Failure (not ready), liveness Success, startup Unknown (not started);
//! - a container is started when it has no startup probe or the startup probe succeeded, and
//!   ready when started and it has no readiness probe or the readiness probe reports Success.
//!
//! Our simplification: the first probe runs at `initialDelaySeconds` exactly (the kubelet's
//! ticker may run it up to one period later), and the first readiness and liveness probe at
//! the later of their initial delay and the moment the startup probe succeeded (the kubelet
//! triggers a readiness probe at once when the status is synced). Probes succeed unless an
//! annotation scripts a failure (see [`crate::annotations::Lifecycle`]); without
//! `startupAfter` the startup probe succeeds at its first run.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};

use super::{EventKind, PodEvent};
use crate::annotations::Lifecycle;

/// One probe's timing, from the container spec with the API's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSpec {
    pub initial_delay: Duration,
    pub period: Duration,
    pub success_threshold: u64,
    pub failure_threshold: u64,
}

impl ProbeSpec {
    /// The API defaults (period 10 s, thresholds 1 and 3) and minimums (1); values outside
    /// what the apiserver admits are clamped rather than trusted.
    pub fn of(p: &Probe) -> Self {
        let at_least = |v: Option<i32>, default: i32, min: i32| {
            u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(1)
        };
        ProbeSpec {
            initial_delay: Duration::from_secs(at_least(p.initial_delay_seconds, 0, 0)),
            period: Duration::from_secs(at_least(p.period_seconds, 10, 1)),
            success_threshold: at_least(p.success_threshold, 1, 1),
            failure_threshold: at_least(p.failure_threshold, 3, 1),
        }
    }
}

/// What a probe reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    Unknown,
    Success,
    Failure,
}

/// Probes fail from `from` until `until` (for good when `None`), as offsets in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failing {
    pub from: Duration,
    pub until: Option<Duration>,
}

/// The reported result of one probe over a run: changes in time order, and the offsets of
/// the first failing probe and of the first passing one after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub initial: Reported,
    pub changes: Vec<(Duration, Reported)>,
    /// The probes that fail run from `failing.0` to `failing.1` (exclusive; `None`: for good).
    pub failing: Option<(Duration, Option<Duration>)>,
}

/// Offset of probe `k` when the first one runs at `first`: saturating, never panics.
fn probe_time(first: Duration, period: Duration, k: u64) -> Duration {
    let ms = first
        .as_millis()
        .saturating_add(period.as_millis().saturating_mul(u128::from(k)));
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Index of the first probe at or after `t`.
fn first_probe_at(first: Duration, period: Duration, t: Duration) -> u64 {
    if t <= first {
        return 0;
    }
    let after = (t - first).as_millis();
    let period = period.as_millis().max(1);
    u64::try_from(after.div_ceil(period)).unwrap_or(u64::MAX)
}

impl Timeline {
    /// The timeline of a probe whose first run is at `first`, starting from `initial`, with
    /// the probes in `failing` failing and all others passing.
    pub fn new(
        spec: &ProbeSpec,
        first: Duration,
        initial: Reported,
        failing: Option<Failing>,
    ) -> Self {
        let at = |k: u64| probe_time(first, spec.period, k);
        let (st, ft) = (spec.success_threshold, spec.failure_threshold);
        let kf = failing.map(|f| first_probe_at(first, spec.period, f.from));
        let ku = failing.and_then(|f| Some(first_probe_at(first, spec.period, f.until?)));
        let mut changes = Vec::new();
        let mut current = initial;
        let mut push = |t: Duration, r: Reported, changes: &mut Vec<(Duration, Reported)>| {
            if current != r {
                current = r;
                changes.push((t, r));
            }
        };
        // Probes 0..kf pass, kf..ku fail, ku.. pass again.
        if kf.is_none_or(|kf| kf >= st) {
            push(at(st - 1), Reported::Success, &mut changes);
        }
        if let Some(kf) = kf {
            let run = ku.map(|ku| ku.saturating_sub(kf));
            if run.is_none_or(|run| run >= ft) {
                push(
                    at(kf.saturating_add(ft - 1)),
                    Reported::Failure,
                    &mut changes,
                );
            }
            if let Some(ku) = ku {
                push(
                    at(ku.saturating_add(st - 1)),
                    Reported::Success,
                    &mut changes,
                );
            }
        }
        Timeline {
            initial,
            changes,
            failing: kf
                .filter(|kf| ku.is_none_or(|ku| ku > *kf))
                .map(|kf| (at(kf), ku.map(at))),
        }
    }

    /// The reported result at `t`.
    pub fn at(&self, t: Duration) -> Reported {
        self.changes
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(self.initial, |(_, r)| *r)
    }

    /// When the result first becomes `r`.
    pub fn first(&self, r: Reported) -> Option<Duration> {
        self.changes.iter().find(|(_, x)| *x == r).map(|(t, _)| *t)
    }

    /// Whether a probe run at `t` fails (the script's failures are under way).
    pub fn failing_at(&self, t: Duration) -> bool {
        self.failing
            .is_some_and(|(from, until)| from <= t && until.is_none_or(|u| t < u))
    }

    /// The moments after `t` at which something observable changes.
    fn next_after(&self, t: Duration) -> Option<Duration> {
        let marks = self.changes.iter().map(|(at, _)| *at);
        let failing = self.failing.into_iter().flat_map(|(f, u)| [Some(f), u]);
        marks.chain(failing.flatten()).filter(|m| *m > t).min()
    }
}

/// Why the kubelet kills a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kill {
    Liveness,
    Startup,
}

/// The reason and exit code of a container killed for a failed probe: the runtime's SIGKILL
/// after the grace period (an application that exits on SIGTERM would show 143 or 0).
pub const KILLED: (&str, i32) = ("Error", 137);

/// Which container the kubelet kills, for the wording of its `Killing` Event:
/// `computePodActions` words a main container's, `computeInitContainerActions` a sidecar's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killing {
    /// A main container that is started again.
    Restarted,
    /// A main container left exited (restartPolicy Never).
    Stopped,
    /// A native sidecar (always started again; the kubelet does not say so).
    Sidecar,
}

impl Kill {
    /// The probe type as the kubelet names it in events.
    pub fn probe(self) -> &'static str {
        match self {
            Kill::Liveness => "liveness",
            Kill::Startup => "startup",
        }
    }

    /// The Events of one kill of `c`: the prober's `Unhealthy` with the probe's failure, then
    /// the kubelet's `Killing`.
    pub fn events(self, c: &Container, killing: Killing, pod_ip: &str) -> [PodEvent; 2] {
        let (kind, probe, title) = match self {
            Kill::Liveness => (EventKind::LivenessFailed, &c.liveness_probe, "Liveness"),
            Kill::Startup => (EventKind::StartupFailed, &c.startup_probe, "Startup"),
        };
        let probe_type = self.probe();
        let message = match killing {
            Killing::Restarted => format!(
                "Container {} failed {probe_type} probe, will be restarted",
                c.name
            ),
            Killing::Stopped => format!("Container {} failed {probe_type} probe", c.name),
            Killing::Sidecar => format!("Init container {} failed {probe_type} probe", c.name),
        };
        [
            PodEvent {
                kind,
                message: failure_message(title, probe.as_ref(), pod_ip),
            },
            PodEvent {
                kind: EventKind::Killing,
                message,
            },
        ]
    }
}

/// One run of a container under its probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probes {
    startup: Option<Timeline>,
    readiness: Option<Timeline>,
    liveness: Option<Timeline>,
    /// When the startup probe succeeds (zero without one); `None` if it never does.
    started_at: Option<Duration>,
}

/// A container's probe state at one moment of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub started: bool,
    pub ready: bool,
    /// A scripted readiness failure is under way (the kubelet records `Unhealthy`).
    pub readiness_failing: bool,
    /// The next offset in the run at which something changes.
    pub next: Option<Duration>,
}

impl Probes {
    /// The probes of container `c` in one run, with the failures `script` asks for.
    pub fn of(c: &Container, script: &Lifecycle) -> Self {
        let startup = c.startup_probe.as_ref().map(|p| {
            let spec = ProbeSpec::of(p);
            // The startup probe's successThreshold must be 1.
            let spec = ProbeSpec {
                success_threshold: 1,
                ..spec
            };
            let failing = script.startup_after.map(|s| Failing {
                from: Duration::ZERO,
                until: Some(s),
            });
            Timeline::new(&spec, spec.initial_delay, Reported::Unknown, failing)
        });
        let started_at = match &startup {
            None => Some(Duration::ZERO),
            Some(t) => t
                .first(Reported::Success)
                .filter(|s| t.first(Reported::Failure).is_none_or(|f| *s < f)),
        };
        let after_start = |p: &Probe, initial: Reported, failing: Option<Failing>| {
            let spec = ProbeSpec::of(p);
            let start = started_at?;
            Some(Timeline::new(
                &spec,
                spec.initial_delay.max(start),
                initial,
                failing,
            ))
        };
        let readiness_failing = script.readiness_fail_after.map(|from| Failing {
            from,
            until: script.readiness_fail_for.map(|d| from.saturating_add(d)),
        });
        let liveness_failing = script
            .liveness_fail_after
            .map(|from| Failing { from, until: None });
        Probes {
            readiness: c
                .readiness_probe
                .as_ref()
                .and_then(|p| after_start(p, Reported::Failure, readiness_failing)),
            liveness: c
                .liveness_probe
                .as_ref()
                .and_then(|p| after_start(p, Reported::Success, liveness_failing)),
            startup,
            started_at,
        }
    }

    /// When in each run the kubelet kills the container, and why: the first failure the
    /// liveness or startup probe reports.
    pub fn kill(&self) -> Option<(Duration, Kill)> {
        let startup = self
            .startup
            .as_ref()
            .and_then(|t| t.first(Reported::Failure))
            .filter(|_| self.started_at.is_none())
            .map(|t| (t, Kill::Startup));
        let liveness = self
            .liveness
            .as_ref()
            .and_then(|t| t.first(Reported::Failure))
            .map(|t| (t, Kill::Liveness));
        startup.into_iter().chain(liveness).min()
    }

    /// When in each run the startup probe passes (zero without one); `None`: never.
    pub fn started_at(&self) -> Option<Duration> {
        self.started_at
    }

    /// The state at offset `t` of the run.
    pub fn at(&self, t: Duration) -> View {
        let started = self.started_at.is_some_and(|s| s <= t);
        let ready = started
            && self
                .readiness
                .as_ref()
                .is_none_or(|r| r.at(t) == Reported::Success);
        let timelines = [&self.startup, &self.readiness, &self.liveness];
        let next = timelines
            .into_iter()
            .flatten()
            .filter_map(|tl| tl.next_after(t))
            .chain(self.started_at.filter(|s| *s > t))
            .min();
        View {
            started,
            ready,
            readiness_failing: self.readiness.as_ref().is_some_and(|r| r.failing_at(t)),
            next,
        }
    }
}

/// The message of an `Unhealthy` Event for probe `p` that failed, as the kubelet's prober
/// words the result of each handler (an exec probe's message is the command's output, here
/// empty).
pub fn failure_message(kind: &str, p: Option<&Probe>, pod_ip: &str) -> String {
    let detail = match p {
        Some(p) if p.http_get.is_some() => "HTTP probe failed with statuscode: 503".to_string(),
        Some(Probe {
            tcp_socket: Some(t),
            ..
        }) => {
            let port = match &t.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => p.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => {
                    s.chars().take(15).collect()
                }
            };
            format!("dial tcp {pod_ip}:{port}: connect: connection refused")
        }
        _ => String::new(),
    };
    format!("{kind} probe failed: {detail}")
}

#[cfg(test)]
mod tests;
