//! Prometheus metrics of the hollow node: nodes managed, pods by phase, bind→Running latency,
//! API requests, errors and latency by client lane, how long due work waits for a worker, how
//! late Lease renewals go out, and registrations that failed. Labels come from fixed sets.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some("Unknown") => Phase::Unknown,
            _ => Phase::Pending,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: Phase,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum Verb {
    GET,
    LIST,
    WATCH,
    POST,
    PUT,
    PATCH,
    DELETE,
    OTHER,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Code {
    /// 2xx and other non-error statuses.
    Ok,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// No response (connection error, timeout).
    Error,
}

/// Which client sent a request: Lease renewals have their own.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Lane {
    Main,
    Lease,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub lane: Lane,
    pub verb: Verb,
    pub code: Code,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub lane: Lane,
    pub verb: Verb,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum WorkKind {
    Lease,
    NodeStatus,
    Pod,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkLabels {
    pub kind: WorkKind,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
    ])
}

#[derive(Clone)]
pub struct Metrics {
    pub nodes_managed: Gauge,
    pub nodes_ready: Gauge,
    pub pods: Family<PhaseLabels, Gauge>,
    pub bind_to_running: Histogram,
    pub api_requests: Family<ApiLabels, Counter>,
    pub api_errors: Family<ApiLabels, Counter>,
    /// From sending a request (after the rate limiter) to its response headers.
    pub api_latency: HistogramFamily<VerbLabels>,
    /// From when queued work was due to when a worker started it.
    pub queue_wait: HistogramFamily<WorkLabels>,
    pub status_writes: Counter,
    /// Work handlers that panicked (their slot is freed and the item dropped).
    pub handler_panics: Counter,
    /// From a Lease renewal's planned time to sending it (queue wait plus rate-limit wait).
    pub lease_lateness: Histogram,
    /// The largest `lease_lateness` seen so far, in milliseconds.
    pub lease_lateness_max_ms: Gauge,
    /// Node registrations that ran out of attempts or met a permanent error (retried later).
    pub registration_failures: Counter,
    /// Nodes not registered yet (their registration is retried in the background).
    pub nodes_unregistered: Gauge,
    /// Pods whose annotations were out of range or malformed (handled as if absent).
    pub invalid_annotations: Counter,
    /// TokenReviews and SubjectAccessReviews the kubelet API sent to the apiserver.
    pub kubelet_reviews: Counter,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            nodes_managed: Gauge::default(),
            nodes_ready: Gauge::default(),
            pods: Family::default(),
            bind_to_running: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ]),
            api_requests: Family::default(),
            api_errors: Family::default(),
            api_latency: Family::new_with_constructor(latency_buckets),
            queue_wait: Family::new_with_constructor(latency_buckets),
            status_writes: Counter::default(),
            handler_panics: Counter::default(),
            lease_lateness: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
            ]),
            lease_lateness_max_ms: Gauge::default(),
            registration_failures: Counter::default(),
            nodes_unregistered: Gauge::default(),
            invalid_annotations: Counter::default(),
            kubelet_reviews: Counter::default(),
        };
        registry.register(
            "nodes_managed",
            "Nodes this process runs (registers, renews, drives the pods of), from before its first write to after its last",
            m.nodes_managed.clone(),
        );
        registry.register(
            "nodes_ready",
            "Managed nodes currently reporting Ready=True",
            m.nodes_ready.clone(),
        );
        registry.register("pods", "Pods on managed nodes, by phase", m.pods.clone());
        registry.register(
            "bind_to_running_seconds",
            "From first seeing a pod bound to a managed node to writing it Running and Ready",
            m.bind_to_running.clone(),
        );
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API",
            m.api_requests.clone(),
        );
        registry.register(
            "api_errors",
            "Requests to the Kubernetes API that failed (status >= 400 or no response)",
            m.api_errors.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Kubernetes API request latency (rate limiter wait excluded), by verb",
            m.api_latency.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Delay between work falling due and a worker starting it, by kind",
            m.queue_wait.clone(),
        );
        registry.register(
            "pod_status_writes",
            "Pod status writes",
            m.status_writes.clone(),
        );
        registry.register(
            "handler_panics",
            "Work handlers that panicked; the slot was freed and the item dropped",
            m.handler_panics.clone(),
        );
        registry.register(
            "lease_lateness_seconds",
            "From a Lease renewal's planned time to sending it (queue and rate-limit wait)",
            m.lease_lateness.clone(),
        );
        registry.register(
            "lease_lateness_max_milliseconds",
            "The latest any Lease renewal was sent past its planned time, since start",
            m.lease_lateness_max_ms.clone(),
        );
        registry.register(
            "registration_failures",
            "Node registrations that gave up for now (retried in the background)",
            m.registration_failures.clone(),
        );
        registry.register(
            "nodes_unregistered",
            "Nodes whose registration has not succeeded yet",
            m.nodes_unregistered.clone(),
        );
        registry.register(
            "invalid_annotations",
            "Pod evaluations that met a malformed or out-of-range annotation (handled as absent)",
            m.invalid_annotations.clone(),
        );
        registry.register(
            "kubelet_auth_reviews",
            "TokenReviews and SubjectAccessReviews the kubelet API sent (answers are cached and shared)",
            m.kubelet_reviews.clone(),
        );
        m
    }

    /// Records how late a Lease renewal went out.
    pub fn lease_late(&self, late: std::time::Duration) {
        self.lease_lateness.observe(late.as_secs_f64());
        let ms = i64::try_from(late.as_millis()).unwrap_or(i64::MAX);
        // A lost race only loses a maximum that another renewal just set.
        if ms > self.lease_lateness_max_ms.get() {
            self.lease_lateness_max_ms.set(ms);
        }
    }

    pub fn pod_phase(&self, phase: Phase) -> Gauge {
        self.pods.get_or_create(&PhaseLabels { phase }).clone()
    }
}
