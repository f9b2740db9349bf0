//! Prometheus metrics: requests and latency by verb, decisions by outcome. Labels come from fixed
//! enums, never from request data.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::rules::{Rejection, Verdict};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Verb {
    Filter,
    Preempt,
}

/// How a request ended, as kube-scheduler sees it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RequestResult {
    /// A decision was returned.
    Ok,
    /// A retryable `Error` (caches not synced, namespace unknown).
    Retry,
    /// The body was not valid extender JSON.
    BadRequest,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    PinnedElsewhere,
    RealNode,
    SpoofedNodeExcludedPod,
    SpoofedNode,
    UnknownNode,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Pass,
        Outcome::PinnedElsewhere,
        Outcome::RealNode,
        Outcome::SpoofedNodeExcludedPod,
        Outcome::SpoofedNode,
        Outcome::UnknownNode,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl From<Verdict> for Outcome {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Pass => Outcome::Pass,
            Verdict::Reject(Rejection::PinnedElsewhere) => Outcome::PinnedElsewhere,
            Verdict::Reject(Rejection::RealNode) => Outcome::RealNode,
            Verdict::Reject(Rejection::SpoofedNodeExcludedPod) => Outcome::SpoofedNodeExcludedPod,
            Verdict::Reject(Rejection::SpoofedNode) => Outcome::SpoofedNode,
            Verdict::Reject(Rejection::UnknownNode) => Outcome::UnknownNode,
        }
    }
}

/// Label values in snake_case, from the fixed sets above.
macro_rules! label_values {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_values!(Verb { Filter => "filter", Preempt => "preempt" });
label_values!(RequestResult { Ok => "ok", Retry => "retry", BadRequest => "bad_request" });
label_values!(Outcome {
    Pass => "pass",
    PinnedElsewhere => "pinned_elsewhere",
    RealNode => "real_node",
    SpoofedNodeExcludedPod => "spoofed_node_excluded_pod",
    SpoofedNode => "spoofed_node",
    UnknownNode => "unknown_node",
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: Verb,
    result: RequestResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: Verb,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    verb: Verb,
    outcome: Outcome,
}

/// Per-node decisions counted locally during one request, then added once.
#[derive(Default, Debug)]
pub struct Tally([u64; 6]);

impl Tally {
    pub fn add(&mut self, verdict: Verdict) {
        self.0[Outcome::from(verdict).index()] += 1;
    }
}

/// The extender's metrics, registered under the `mock_kind_scheduler` prefix.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<VerbLabels, Histogram>,
    decisions: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 50 µs .. ~1.6 s: the filter targets < 1 ms, kube-scheduler times out at 5 s.
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.000_05, 2.0, 16,
                ))
            }),
            decisions: Family::default(),
        };
        registry.register(
            "requests",
            "Extender requests by verb and result",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer an extender request, by verb",
            m.duration.clone(),
        );
        registry.register(
            "decisions",
            "Per-node decisions by verb and outcome",
            m.decisions.clone(),
        );
        m
    }

    pub fn observe(&self, verb: Verb, result: RequestResult, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { verb, result })
            .inc();
        self.duration
            .get_or_create(&VerbLabels { verb })
            .observe(elapsed.as_secs_f64());
    }

    pub fn record(&self, verb: Verb, tally: &Tally) {
        for outcome in Outcome::ALL {
            let n = tally.0[outcome.index()];
            if n > 0 {
                self.decisions
                    .get_or_create(&OutcomeLabels { verb, outcome })
                    .inc_by(n);
            }
        }
    }
}
