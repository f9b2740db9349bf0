//! Flags of `mock-kind-webhook`; every flag also reads `MOCK_KIND_WEBHOOK_…` from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::affinity_mode::PlacementMode;
use crate::strategy::{Profile, Strategy};
use crate::tls::{Bootstrap, CertSource};
use crate::{Config, Error, Result};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "mock-kind-webhook",
    version,
    about = "OpenShift-style UIDs for runAsNonRoot pods"
)]
pub struct Args {
    /// HTTPS listen address (/mutate, /healthz, /readyz, /metrics).
    #[arg(long, env = "MOCK_KIND_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// How UIDs are chosen: one OpenShift block per namespace, or a random UID per pod.
    #[arg(long, env = "MOCK_KIND_WEBHOOK_STRATEGY", value_enum, default_value_t = Strategy::Namespace)]
    pub strategy: Strategy,
    /// What the webhook makes of pods: `runasnonroot` gives runAsNonRoot pods a UID from their
    /// namespace; `openshift-restricted-v2` applies and enforces OpenShift's restricted-v2 SCC
    /// (needs --strategy namespace).
    #[arg(long, env = "MOCK_KIND_PROFILE", value_enum, default_value_t = Profile::RunAsNonRoot)]
    pub profile: Profile,
    /// How the webhook takes part in placing pods: `none` leaves it to the scheduler extender;
    /// `affinity` serves `/place`, which writes the placement rules into every pod at CREATE
    /// (a toleration of hollow nodes' taint and a required node affinity), so that a stock
    /// scheduler without the extender places pods.
    #[arg(long, env = "MOCK_KIND_PLACEMENT", value_enum, default_value_t = PlacementMode::None)]
    pub placement: PlacementMode,
    /// Namespaces never mutated, comma-separated (--namespace is always added).
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system,kube-node-lease"
    )]
    pub exclude_namespaces: Vec<String>,
    /// Lowest UID of the `pod` strategy.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_POD_UID_MIN",
        default_value_t = 1_000_000_000,
        value_parser = uid_parser()
    )]
    pub pod_uid_min: i64,
    /// Highest UID of the `pod` strategy.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_POD_UID_MAX",
        default_value_t = 1_999_999_999,
        value_parser = uid_parser()
    )]
    pub pod_uid_max: i64,
    /// Serving certificate (PEM) file; with --tls-key. Without both, the webhook bootstraps its
    /// own certificate into --secret.
    #[arg(long, env = "MOCK_KIND_WEBHOOK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM) file; with --tls-cert.
    #[arg(long, env = "MOCK_KIND_WEBHOOK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Self-bootstrap: the kubernetes.io/tls Secret holding the serving certificate.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_SECRET",
        default_value = "mock-kind-webhook-tls"
    )]
    pub secret: String,
    /// Namespace of the webhook's Service and Secret.
    #[arg(long, env = "MOCK_KIND_WEBHOOK_NAMESPACE", default_value = "mock-kind")]
    pub namespace: String,
    /// Service name the certificate is issued for.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_SERVICE",
        default_value = "mock-kind-webhook"
    )]
    pub service: String,
    /// Extra names/IPs in the bootstrapped certificate, comma-separated.
    #[arg(long, env = "MOCK_KIND_WEBHOOK_EXTRA_SANS", value_delimiter = ',')]
    pub extra_san: Vec<String>,
    /// MutatingWebhookConfiguration whose caBundle the bootstrap keeps right ("" = none).
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_CONFIG_NAME",
        default_value = "mock-kind-webhook"
    )]
    pub webhook_config: String,
    /// Lifetime of a bootstrapped serving certificate, in hours.
    #[arg(long, env = "MOCK_KIND_WEBHOOK_CERT_VALIDITY_HOURS", default_value_t = 24 * 365,
          value_parser = clap::value_parser!(u64).range(1..=MAX_HOURS))]
    pub cert_validity_hours: u64,
    /// Renew the bootstrapped certificate when it expires within this many hours.
    #[arg(long, env = "MOCK_KIND_WEBHOOK_RENEW_MARGIN_HOURS", default_value_t = 24 * 30,
          value_parser = clap::value_parser!(u64).range(0..MAX_HOURS))]
    pub renew_margin_hours: u64,
    /// Seconds between checks of the certificate files or Secret.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_CERT_CHECK_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub cert_check_seconds: u64,
    /// Kubeconfig file (default: in-cluster, else $KUBECONFIG / ~/.kube/config).
    #[arg(long, env = "MOCK_KIND_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Seconds in-flight requests get to finish once the drain delay is over.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(0..=3_600)
    )]
    pub shutdown_grace_seconds: u64,
    /// Seconds the webhook keeps answering after SIGTERM with /readyz failing, so the
    /// apiserver is not refused while Endpoints still list this pod. Keep drain + grace under
    /// the pod's terminationGracePeriodSeconds.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_DRAIN_DELAY_SECONDS",
        default_value_t = 5
    )]
    pub drain_delay_seconds: u64,
    /// Seconds between passes that free the UID blocks of deleted namespaces (with
    /// --strategy namespace), the first at start; OpenShift's controller repairs every 8 hours.
    /// 0: never.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_UID_BLOCK_REPAIR_SECONDS",
        default_value_t = 8 * 3_600,
        value_parser = clap::value_parser!(u64).range(0..=7 * 24 * 3_600)
    )]
    pub uid_block_repair_seconds: u64,
    /// Requests served at once; more get 503 at once. Bodies are at most 3 MiB, so this bounds
    /// their memory (64 × 3 MiB = 192 MiB, within the 256 Mi limit).
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_MAX_CONCURRENT_REQUESTS",
        default_value_t = 64
    )]
    pub max_concurrent_requests: usize,
    /// Seconds a request (body included) may take before it gets 503; the apiserver gives up
    /// after the webhook's timeoutSeconds (5 in deploy/) anyway.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub request_timeout_seconds: u64,
    /// Seconds a client may take to send request headers (or finish the TLS handshake, or stay
    /// idle between requests) before its connection is closed.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub header_read_timeout_seconds: u64,
    /// Milliseconds one review may spend reading or writing its namespace before the pod is
    /// allowed unchanged with a warning; keep it under the webhook configuration's
    /// timeoutSeconds (5 s in deploy/), which caps the whole call.
    #[arg(
        long,
        env = "MOCK_KIND_WEBHOOK_APISERVER_DEADLINE_MS",
        default_value_t = 4_000,
        value_parser = clap::value_parser!(u64).range(1..MAX_DEADLINE_MS)
    )]
    pub apiserver_deadline_ms: u64,
    /// Log as JSON.
    #[arg(long, env = "MOCK_KIND_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

const HOUR: u64 = 3600;
/// Ten years: longer certificates are not useful and the seconds must not overflow.
const MAX_HOURS: u64 = 24 * 365 * 10;
/// A webhook's timeoutSeconds is at most 30.
pub const MAX_DEADLINE_MS: u64 = 30_000;

/// Kubernetes accepts runAsUser and fsGroup in `[0, 2^31 - 1]`.
fn uid_parser() -> clap::builder::RangedI64ValueParser<i64> {
    clap::value_parser!(i64).range(0..=i64::from(i32::MAX))
}

impl Args {
    pub fn into_config(self) -> Result<Config> {
        let own_namespace = self.namespace.clone();
        let mut exclude_namespaces = self.exclude_namespaces.clone();
        if !exclude_namespaces.contains(&self.namespace) {
            exclude_namespaces.push(self.namespace.clone());
        }
        let certs = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => CertSource::Files { cert, key },
            (None, None) => {
                let mut cert = certs::CertOptions::new(&self.service, &self.namespace);
                cert.extra_sans = self.extra_san;
                if self.renew_margin_hours >= self.cert_validity_hours {
                    return Err(Error::Config(format!(
                        "--renew-margin-hours {} must be below --cert-validity-hours {}",
                        self.renew_margin_hours, self.cert_validity_hours
                    )));
                }
                cert.validity = Duration::from_secs(self.cert_validity_hours * HOUR);
                CertSource::Bootstrap(Bootstrap {
                    namespace: self.namespace,
                    secret: self.secret,
                    webhook_config: Some(self.webhook_config).filter(|s| !s.is_empty()),
                    cert,
                    renew_margin: Duration::from_secs(self.renew_margin_hours * HOUR),
                })
            }
            _ => return Err(Error::Config("--tls-cert and --tls-key go together".into())),
        };
        let config = Config {
            listen: self.listen,
            strategy: self.strategy,
            profile: self.profile,
            placement: self.placement,
            namespace: own_namespace,
            exclude_namespaces,
            pod_uid_min: self.pod_uid_min,
            pod_uid_max: self.pod_uid_max,
            certs,
            cert_check_interval: Duration::from_secs(self.cert_check_seconds),
            kubeconfig: self.kubeconfig,
            server: serving::Limits {
                max_body: crate::server::MAX_BODY,
                max_concurrent: self.max_concurrent_requests,
                request_timeout: Duration::from_secs(self.request_timeout_seconds),
                header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
                drain_delay: Duration::from_secs(self.drain_delay_seconds),
                shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            },
            apiserver_deadline: Duration::from_millis(self.apiserver_deadline_ms),
            uid_block_repair: Duration::from_secs(self.uid_block_repair_seconds),
            clock: crate::tls::system_clock(),
        };
        config.validate()?;
        Ok(config)
    }
}

/// The server limits when no flag is given (the flags' defaults, without the environment).
pub fn default_limits() -> serving::Limits {
    serving::Limits {
        max_body: crate::server::MAX_BODY,
        max_concurrent: 64,
        request_timeout: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(10),
        drain_delay: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_config_table() {
        let cases: &[(&str, &[&str], Result<&str, &str>)] = &[
            ("defaults bootstrap", &[], Ok("bootstrap")),
            ("files", &["--tls-cert", "c", "--tls-key", "k"], Ok("files")),
            ("cert without key", &["--tls-cert", "c"], Err("--tls-key")),
            (
                "empty pod range",
                &["--pod-uid-min", "10", "--pod-uid-max", "5"],
                Err("empty"),
            ),
            (
                "zero interval",
                &["--cert-check-seconds", "0"],
                Err("--cert-check-seconds"),
            ),
            ("negative uid", &["--pod-uid-min=-1"], Err("--pod-uid-min")),
            (
                "uid above 2^31-1",
                &["--pod-uid-max", "2147483648"],
                Err("--pod-uid-max"),
            ),
            (
                "validity overflowing seconds",
                &["--cert-validity-hours", "18446744073709551615"],
                Err("--cert-validity-hours"),
            ),
            (
                "margin not below validity",
                &["--cert-validity-hours", "24", "--renew-margin-hours", "24"],
                Err("--renew-margin-hours"),
            ),
            (
                "zero deadline",
                &["--apiserver-deadline-ms", "0"],
                Err("--apiserver-deadline-ms"),
            ),
            (
                "deadline past any timeoutSeconds",
                &["--apiserver-deadline-ms", "30000"],
                Err("--apiserver-deadline-ms"),
            ),
            (
                "deadline",
                &["--apiserver-deadline-ms", "2500"],
                Ok("bootstrap"),
            ),
            (
                "restricted-v2",
                &["--profile", "openshift-restricted-v2"],
                Ok("bootstrap"),
            ),
            (
                "restricted-v2 with per-pod UIDs",
                &["--profile", "openshift-restricted-v2", "--strategy", "pod"],
                Err("--strategy namespace"),
            ),
            (
                "unknown profile",
                &["--profile", "anyuid"],
                Err("--profile"),
            ),
            (
                "zero concurrency",
                &["--max-concurrent-requests", "0"],
                Err("concurrent"),
            ),
        ];
        for (name, flags, want) in cases {
            let args = Args::try_parse_from(
                std::iter::once("mock-kind-webhook").chain(flags.iter().copied()),
            )
            .map_err(|e| e.to_string());
            let got = args.and_then(|a| a.into_config().map_err(|e| e.to_string()));
            match (got, want) {
                (Ok(c), Ok(kind)) => {
                    let is = match c.certs {
                        CertSource::Files { .. } => "files",
                        CertSource::Bootstrap(_) => "bootstrap",
                    };
                    assert_eq!(is, *kind, "{name}");
                }
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, _) => panic!("{name}: want {want:?}, got {:?}", got.map(|_| "config")),
            }
        }
    }

    #[test]
    fn flag_defaults_are_the_default_limits() {
        let args = Args::try_parse_from(["mock-kind-webhook"]).expect("no flags parse");
        let config = args.into_config().expect("defaults are valid");
        assert_eq!(config.server, default_limits());
        assert!(
            config.server.stop_budget() < Duration::from_secs(30),
            "pod grace is 30 s"
        );
    }
}
