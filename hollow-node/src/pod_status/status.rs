//! The pod-level status: phase, conditions (readiness gates included), IPs and QoS class,
//! around the container statuses.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodCondition, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use std::collections::BTreeMap;

use super::PodContext;
use super::containers::{PodId, Run, container_status, previous_container};
use super::sidecars::{self, is_sidecar};
use crate::node_status::seconds;

/// The QoS class the kubelet and apiserver compute.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        let lim = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let relevant = |m: &BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >| {
            m.iter()
                .filter(|(k, q)| (k.as_str() == "cpu" || k.as_str() == "memory") && !is_zero(&q.0))
                .map(|(k, q)| (k.clone(), q.0.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let (req, lim) = (relevant(&req), relevant(&lim));
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        if lim.len() < 2
            || ["cpu", "memory"]
                .iter()
                .any(|k| req.get(*k).is_some_and(|r| Some(r) != lim.get(*k)))
        {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn is_zero(q: &str) -> bool {
    let mut digits = q.chars().filter(|c| c.is_ascii_digit()).peekable();
    digits.peek().is_some() && digits.all(|c| c == '0')
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: &Time,
    prev: &PodStatus,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let previous = prev.conditions.iter().flatten().find(|c| c.type_ == type_);
    let transition = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone().or(Some(now.clone())),
        _ => Some(now.clone()),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason,
        message,
        last_transition_time: transition,
        last_probe_time: None,
        ..Default::default()
    }
}

/// What the pod and its containers are doing, for [`Builder::build`].
pub struct BuildArgs<'a> {
    pub phase: String,
    pub run: &'a Run,
    /// Containers whose run differs from `run` (probes, probe kills), by name.
    pub per_container: Option<&'a BTreeMap<String, Run>>,
    pub initialized: bool,
    pub with_ip: bool,
    /// Reason on Ready/ContainersReady when they are False.
    pub ready_reason: Option<String>,
}

/// One evaluation's inputs for building statuses: the pod, its current status and the clock.
pub struct Builder<'a, 'c> {
    pub pod: &'a Pod,
    pub ctx: &'a PodContext<'c>,
    pub prev: PodStatus,
    pub now: Time,
    pub id: PodId,
    /// The init containers' runs, when the init sequence decided them (else: all Completed
    /// once initialized, waiting PodInitializing before).
    pub init_runs: Option<Vec<Run>>,
    /// When the init sequence was done (the last init container completed or sidecar
    /// started), when it decided so.
    pub init_done_at: Option<jiff::Timestamp>,
}

impl<'a, 'c> Builder<'a, 'c> {
    pub fn new(pod: &'a Pod, ctx: &'a PodContext<'c>) -> Self {
        Builder {
            pod,
            ctx,
            prev: pod.status.clone().unwrap_or_default(),
            now: Time(seconds(ctx.now)),
            id: PodId::of(pod),
            init_runs: None,
            init_done_at: None,
        }
    }

    pub fn build(&self, a: BuildArgs<'_>) -> PodStatus {
        let init_runs = self.init_runs.as_deref();
        build_status(
            self.pod, self.ctx, &self.prev, &self.now, &self.id, init_runs, a,
        )
    }

    /// `desired`, if writing it would change the pod's status.
    pub fn changed(&self, desired: PodStatus) -> Option<PodStatus> {
        Some(desired).filter(|s| status_differs(&self.prev, s))
    }

    /// Pending, every container in `run` (waiting), not initialized.
    pub fn pending(&self, run: Run, with_ip: bool) -> PodStatus {
        self.build(BuildArgs {
            phase: "Pending".into(),
            run: &run,
            per_container: None,
            // Without init containers the kubelet reports Initialized at once.
            initialized: self
                .pod
                .spec
                .as_ref()
                .is_none_or(|s| s.init_containers.as_ref().is_none_or(Vec::is_empty)),
            with_ip,
            ready_reason: Some("ContainersNotReady".into()),
        })
    }
}

fn build_status(
    pod: &Pod,
    ctx: &PodContext<'_>,
    prev: &PodStatus,
    now: &Time,
    id: &PodId,
    init_runs: Option<&[Run]>,
    a: BuildArgs<'_>,
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut containers: Vec<&Container> = spec.containers.iter().collect();
    containers.sort_by(|x, y| x.name.cmp(&y.name));
    let container_statuses: Vec<ContainerStatus> = containers
        .iter()
        .map(|c| {
            let run = a
                .per_container
                .and_then(|runs| runs.get(&c.name))
                .unwrap_or(a.run);
            container_status(id, c, run, now, previous_container(prev, &c.name, false))
        })
        .collect();
    // A pod that ended has its sidecars stopped.
    let stopped: Vec<Run>;
    let init_runs = match (init_runs, spec.init_containers.as_deref()) {
        (Some(runs), Some(inits))
            if matches!(a.phase.as_str(), "Succeeded" | "Failed")
                && inits.iter().any(is_sidecar) =>
        {
            let mut runs = runs.to_vec();
            sidecars::stop(&mut runs, inits, now);
            stopped = runs;
            Some(&stopped[..])
        }
        _ => init_runs,
    };
    let init_statuses: Option<Vec<ContainerStatus>> = spec
        .init_containers
        .as_ref()
        .filter(|v| !v.is_empty())
        .map(|inits| {
            inits
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let decided = init_runs.and_then(|runs| runs.get(i));
                    if let Some(run) = decided {
                        let mut s = container_status(
                            id,
                            c,
                            run,
                            now,
                            previous_container(prev, &c.name, true),
                        );
                        // An init container is ready once it exited 0; a sidecar while it runs
                        // and passes its readiness probe.
                        if !is_sidecar(c) {
                            s.ready =
                                matches!(run, Run::Exited { exit, .. } if exit.exit_code == 0);
                        }
                        return s;
                    }
                    let run = if a.initialized {
                        Run::Terminated {
                            reason: "Completed",
                            exit_code: 0,
                        }
                    } else {
                        Run::Waiting {
                            reason: "PodInitializing",
                            message: None,
                        }
                    };
                    let mut s =
                        container_status(id, c, &run, now, previous_container(prev, &c.name, true));
                    // A completed init container is ready; a stopped sidecar is not.
                    if a.initialized && !is_sidecar(c) {
                        s.ready = true;
                    }
                    s
                })
                .collect()
        });
    // The kubelet counts sidecars for readiness, named first (`GenerateContainersReadyCondition`).
    let sidecar_statuses: Vec<&ContainerStatus> = match (&init_statuses, &spec.init_containers) {
        (Some(statuses), Some(inits)) => statuses
            .iter()
            .zip(inits)
            .filter(|(_, c)| is_sidecar(c))
            .map(|(s, _)| s)
            .collect(),
        _ => Vec::new(),
    };
    let containers_ready = !container_statuses.is_empty()
        && container_statuses.iter().all(|c| c.ready)
        && sidecar_statuses.iter().all(|c| c.ready);
    let not_ready: Vec<&str> = sidecar_statuses
        .iter()
        .copied()
        .chain(container_statuses.iter())
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    // Readiness gates: Ready only when every gate's condition (set by someone else) is True.
    let gates: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .map(|g| g.condition_type.clone())
        .collect();
    let failed_gates: Vec<&String> = gates
        .iter()
        .filter(|g| {
            !prev
                .conditions
                .iter()
                .flatten()
                .any(|c| &c.type_ == *g && c.status == "True")
        })
        .collect();
    let ready = containers_ready && failed_gates.is_empty();
    // A completed pod's not-ready conditions carry only the reason PodCompleted, no message.
    let completed = a.ready_reason.as_deref() == Some("PodCompleted");
    let cr_message = (!containers_ready && !completed)
        .then(|| format!("containers with unready status: [{}]", not_ready.join(" ")));
    let (ready_reason, ready_message) = if !containers_ready {
        (
            a.ready_reason.clone().or(Some("ContainersNotReady".into())),
            cr_message.clone(),
        )
    } else if !failed_gates.is_empty() {
        (
            Some("ReadinessGatesNotReady".into()),
            Some(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                failed_gates[0]
            )),
        )
    } else {
        (None, None)
    };
    let cr_reason = (!containers_ready).then(|| {
        a.ready_reason
            .clone()
            .unwrap_or("ContainersNotReady".into())
    });
    // The kubelet names the init containers that have not exited 0 and the sidecars not
    // started (`isInitContainerInitialized`).
    let incomplete: Vec<&str> = init_statuses
        .iter()
        .flatten()
        .zip(spec.init_containers.iter().flatten())
        .filter(|(s, c)| {
            if is_sidecar(c) {
                s.started != Some(true)
            } else {
                !s.ready
            }
        })
        .map(|(s, _)| s.name.as_str())
        .collect();
    let init_message = (!a.initialized && !incomplete.is_empty()).then(|| {
        format!(
            "containers with incomplete status: [{}]",
            incomplete.join(" ")
        )
    });
    let mut conditions = vec![
        condition(
            "Initialized",
            a.initialized,
            (!a.initialized).then(|| "ContainersNotInitialized".into()),
            init_message,
            now,
            prev,
        ),
        condition("Ready", ready, ready_reason, ready_message, now, prev),
        condition(
            "ContainersReady",
            containers_ready,
            cr_reason,
            cr_message,
            now,
            prev,
        ),
    ];
    // PodScheduled is the scheduler's; other types (readiness gates, DisruptionTarget) belong
    // to whoever set them.
    let ours = ["Initialized", "Ready", "ContainersReady"];
    for c in prev.conditions.iter().flatten() {
        if !ours.contains(&c.type_.as_str()) {
            conditions.push(c.clone());
        }
    }
    if !conditions.iter().any(|c| c.type_ == "PodScheduled") {
        conditions.push(condition("PodScheduled", true, None, None, now, prev));
    }
    // A hostNetwork pod shares the node's network namespace: the kubelet reports the node's
    // InternalIP as its IP, with no allocation from the podCIDR.
    let ip = match (a.with_ip, host_network(pod)) {
        (false, _) => None,
        (true, true) => Some(ctx.host_ip.to_string()),
        (true, false) => ctx.pod_ip.map(|ip| ip.to_string()),
    };
    let ephemeral = super::ephemeral::statuses(id, &spec, &a.phase, now, prev);
    PodStatus {
        phase: Some(a.phase),
        conditions: Some(conditions),
        host_ip: Some(ctx.host_ip.to_string()),
        pod_ip: ip.clone().or_else(|| prev.pod_ip.clone()),
        pod_ips: ip
            .map(|ip| vec![PodIP { ip }])
            .or_else(|| prev.pod_ips.clone()),
        start_time: Some(prev.start_time.clone().unwrap_or(now.clone())),
        qos_class: Some(qos_class(pod).into()),
        container_statuses: Some(container_statuses),
        init_container_statuses: init_statuses,
        ephemeral_container_statuses: ephemeral,
        ..Default::default()
    }
}

/// Whether the pod uses the node's network namespace (`spec.hostNetwork`).
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Whether writing `desired` would change the pod's status: compares the fields we set.
pub fn status_differs(current: &PodStatus, desired: &PodStatus) -> bool {
    let (Ok(serde_json::Value::Object(cur)), Ok(serde_json::Value::Object(want))) =
        (serde_json::to_value(current), serde_json::to_value(desired))
    else {
        return true;
    };
    want.iter().any(|(k, v)| cur.get(k) != Some(v))
}
