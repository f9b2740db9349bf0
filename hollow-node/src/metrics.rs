//! Prometheus metrics of the hollow node: nodes managed, pods by phase, bind→Running latency,
//! API requests, errors and latency, and how long due work waits for a worker. Labels come from fixed sets.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub verb: Verb,
    pub code: Code,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
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
    /// Pods whose annotations were out of range or malformed (handled as if absent).
    pub invalid_annotations: Counter,
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
            invalid_annotations: Counter::default(),
        };
        registry.register(
            "nodes_managed",
            "Nodes this process registered and keeps alive",
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
            "invalid_annotations",
            "Pod evaluations that met a malformed or out-of-range annotation (handled as absent)",
            m.invalid_annotations.clone(),
        );
        m
    }

    pub fn pod_phase(&self, phase: Phase) -> Gauge {
        self.pods.get_or_create(&PhaseLabels { phase }).clone()
    }
}
