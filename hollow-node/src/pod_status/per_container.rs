//! Each container's run once the pod's containers started: its probes decide when it is
//! started and ready, and a failing liveness or startup probe makes the kubelet kill it, then
//! restart it with the back-off (restartPolicy Always, OnFailure) or leave it exited (Never).
//! The kubelet's exit of a killed container: reason `Error`, exit code 137 (the runtime's
//! SIGKILL after the grace period; an application that exits on SIGTERM would show 143 or 0).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus};

use super::containers::{Run, exited_runs, previous_container};
use super::phases::{RestartPolicy, back_off_event, first_start_of, restart_at};
use super::probes::{KILLED, Kill, Killing, Probes, failure_message};
use super::restarts::Runs;
use super::status::Builder;
use super::{EventKind, PodEvent, add, time_diff};
use crate::annotations::Lifecycle;

/// The containers' runs after their probes.
#[derive(Debug, Default)]
pub struct Probed {
    /// Containers whose run differs from the pod's, by name.
    pub runs: BTreeMap<String, Run>,
    /// Time until the next change of any container.
    pub next: Option<Duration>,
    pub events: Vec<PodEvent>,
    /// Restart policy Never and every container was killed: the pod has Failed.
    pub all_terminated: bool,
}

impl Probed {
    fn due(&mut self, after: Duration) {
        self.next = Some(self.next.map_or(after, |n| n.min(after)));
    }
}

fn running_since(prev: Option<&ContainerStatus>) -> Option<jiff::Timestamp> {
    let running = prev?.state.as_ref()?.running.as_ref()?;
    Some(running.started_at.as_ref()?.0)
}

/// Refines `base`, the run of every container, by each container's probes at `b.ctx.now`.
pub fn apply(b: &Builder<'_, '_>, lifecycle: &Lifecycle, base: &Run) -> Probed {
    let mut out = Probed::default();
    let Some(spec) = b.pod.spec.as_ref() else {
        return out;
    };
    let policy = RestartPolicy::of(spec);
    let ip = b
        .ctx
        .pod_ip
        .map_or_else(|| b.ctx.host_ip.to_string(), |ip| ip.to_string());
    let now = b.ctx.now;
    let mut terminated = 0;
    for c in &spec.containers {
        let probes = Probes::of(c, lifecycle);
        let prev = previous_container(&b.prev, &c.name, false);
        // Refines a run that is running since `since` by the probes' view at that moment.
        let view_since = |since: jiff::Timestamp, out: &mut Probed| {
            let offset = time_diff(now, since);
            let v = probes.at(offset);
            if let Some(next) = v.next {
                out.due(next.saturating_sub(offset));
            }
            if v.readiness_failing {
                out.events.push(PodEvent {
                    kind: EventKind::ReadinessFailed,
                    message: failure_message("Readiness", c.readiness_probe.as_ref(), &ip),
                });
            }
            v
        };
        let run = match base {
            Run::Running { ready, .. } => match probes.kill() {
                None => {
                    let v = view_since(running_since(prev).unwrap_or(now), &mut out);
                    Run::Running {
                        ready: *ready && v.ready,
                        started: v.started,
                    }
                }
                Some((kill, why)) => {
                    let killed = Killed {
                        c,
                        prev,
                        kill,
                        why,
                        ip: &ip,
                    };
                    match killed.run(b, policy, *ready, &mut out) {
                        KilledRun::Stopped(run) => {
                            terminated += 1;
                            run
                        }
                        KilledRun::Backoff(run) => run,
                        KilledRun::RunningSince(since, mut run) => {
                            let v = view_since(since, &mut out);
                            if let Run::Restarting { ready, started, .. }
                            | Run::Running { ready, started } = &mut run
                            {
                                *ready = *ready && v.ready;
                                *started = v.started;
                            }
                            run
                        }
                    }
                }
            },
            Run::Restarting {
                running_since: Some(since),
                ready,
                ..
            } => {
                let v = view_since(since.0, &mut out);
                let mut run = base.clone();
                if let Run::Restarting {
                    ready: r,
                    started: s,
                    ..
                } = &mut run
                {
                    *r = *ready && v.ready;
                    *s = v.started;
                }
                run
            }
            _ => continue,
        };
        out.runs.insert(c.name.clone(), run);
    }
    out.all_terminated = terminated > 0 && terminated == spec.containers.len();
    out
}

/// A container its probes kill `kill` into each run.
struct Killed<'a> {
    c: &'a Container,
    prev: Option<&'a ContainerStatus>,
    kill: Duration,
    why: Kill,
    /// The pod's IP, for the probes' failure messages.
    ip: &'a str,
}

enum KilledRun {
    /// Killed and not restarted (restartPolicy Never).
    Stopped(Run),
    /// Waiting out the restart back-off.
    Backoff(Run),
    /// Running since then, before the probes' view.
    RunningSince(jiff::Timestamp, Run),
}

impl Killed<'_> {
    fn run(
        &self,
        b: &Builder<'_, '_>,
        policy: RestartPolicy,
        ready: bool,
        out: &mut Probed,
    ) -> KilledRun {
        let now = b.ctx.now;
        let restarts = policy.restarts(false);
        let stopped = self
            .prev
            .and_then(|p| p.state.as_ref())
            .is_some_and(|s| s.terminated.is_some());
        if !restarts && stopped {
            let (reason, exit_code) = KILLED;
            return KilledRun::Stopped(Run::Terminated { reason, exit_code });
        }
        let runs = Runs::every(self.kill);
        let first = self
            .prev
            .and_then(|p| first_start_of(p, &runs))
            .or_else(|| running_since(self.prev))
            .unwrap_or(now);
        let (run, exits_now) = if restarts {
            let r = restart_at(first, now, &runs, |_| KILLED, ready);
            if let Some(next) = r.next {
                out.due(next);
            }
            if r.backing_off {
                out.events.push(back_off_event());
            }
            let run = match &r.run {
                Run::Restarting {
                    running_since: Some(since),
                    ..
                } => KilledRun::RunningSince(since.0, r.run.clone()),
                _ => KilledRun::Backoff(r.run.clone()),
            };
            (run, r.exits)
        } else {
            let due = add(first, self.kill);
            if now >= due {
                let (reason, exit_code) = KILLED;
                (KilledRun::Stopped(Run::Terminated { reason, exit_code }), 1)
            } else {
                out.due(time_diff(due, now));
                let run = Run::Running {
                    ready,
                    started: true,
                };
                (KilledRun::RunningSince(first, run), 0)
            }
        };
        if exits_now > exited_runs(self.prev) {
            let killing = if restarts {
                Killing::Restarted
            } else {
                Killing::Stopped
            };
            out.events.extend(self.why.events(self.c, killing, self.ip));
        }
        run
    }
}
