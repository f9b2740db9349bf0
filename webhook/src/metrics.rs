//! Prometheus metrics of the webhook; every label comes from a fixed set.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// A patch was returned.
    Patched,
    /// A pod that needs nothing.
    Unchanged,
    /// Not a pod CREATE (UPDATE, other resources, subresources): passed through.
    Skipped,
    /// The object did not decode as a Pod: allowed with a warning.
    Undecodable,
    /// No UID could be decided (namespace unreadable, bad annotation): allowed with a warning.
    Error,
    /// The namespace read/write missed `--apiserver-deadline-ms`: allowed with a warning.
    Deadline,
    /// The body was not an AdmissionReview: HTTP 400.
    BadRequest,
    /// Refused by the `openshift-restricted-v2` profile.
    Denied,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StrategyLabel {
    Namespace,
    Pod,
    /// `/place` (affinity mode), whatever the UID strategy.
    Placement,
}

/// Label values are snake_case, as Prometheus users expect.
macro_rules! label_values {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}

label_values!(Outcome {
    Patched => "patched",
    Unchanged => "unchanged",
    Skipped => "skipped",
    Undecodable => "undecodable",
    Error => "error",
    Deadline => "deadline",
    BadRequest => "bad_request",
    Denied => "denied",
});
label_values!(StrategyLabel { Namespace => "namespace", Pod => "pod", Placement => "placement" });
label_values!(ReloadResult { Loaded => "loaded", Failed => "failed" });

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub outcome: Outcome,
    pub strategy: StrategyLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StrategyLabels {
    pub strategy: StrategyLabel,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    Loaded,
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}

pub struct Metrics {
    pub admissions: Family<AdmissionLabels, Counter>,
    pub latency: Family<StrategyLabels, Histogram>,
    pub namespace_blocks_written: Counter,
    pub namespace_conflicts: Counter,
    pub namespace_blocks_released: Counter,
    pub namespace_cache_miss: Counter,
    pub cert_reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    /// Registers every metric under `registry` (prefix it `mock_kind_webhook`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            admissions: Family::default(),
            latency: Family::new_with_constructor(|| {
                // 50 µs .. ~3.3 s
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.00005, 2.0, 17,
                ))
            }),
            namespace_blocks_written: Counter::default(),
            namespace_conflicts: Counter::default(),
            namespace_blocks_released: Counter::default(),
            namespace_cache_miss: Counter::default(),
            cert_reloads: Family::default(),
        };
        registry.register(
            "admissions",
            "Admission reviews answered, by outcome and UID strategy",
            m.admissions.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review, by UID strategy",
            m.latency.clone(),
        );
        registry.register(
            "namespace_ranges_written",
            "Namespaces this process annotated with a UID range or the missing supplemental-groups / MCS",
            m.namespace_blocks_written.clone(),
        );
        registry.register(
            "namespace_range_conflicts",
            "Namespace writes refused because another writer was first (then re-read)",
            m.namespace_conflicts.clone(),
        );
        registry.register(
            "namespace_blocks_released",
            "Blocks reserved for a namespace that another replica annotated first, handed back",
            m.namespace_blocks_released.clone(),
        );
        registry.register(
            "namespace_cache_misses",
            "Namespaces not yet in the reflector, read with a GET",
            m.namespace_cache_miss.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving certificate reload attempts, by result",
            m.cert_reloads.clone(),
        );
        m
    }
}
