//! `mock-kind-certs`: issue a CA and serving certificate for the webhook, write them as files
//! and/or a `kubernetes.io/tls` Secret, and point a MutatingWebhookConfiguration's caBundle at them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;

#[derive(Parser, Debug)]
#[command(name = "mock-kind-certs", version, about)]
struct Args {
    /// Service name the certificate is for (`<service>.<namespace>.svc`).
    #[arg(
        long,
        env = "MOCK_KIND_CERTS_SERVICE",
        default_value = "mock-kind-webhook"
    )]
    service: String,
    /// Namespace of the service (and of the Secret).
    #[arg(long, env = "MOCK_KIND_CERTS_NAMESPACE", default_value = "mock-kind")]
    namespace: String,
    /// Extra DNS names or IPs, comma-separated (e.g. 127.0.0.1).
    #[arg(long, env = "MOCK_KIND_CERTS_EXTRA_SANS", value_delimiter = ',')]
    extra_san: Vec<String>,
    /// Serving certificate lifetime in days (1–3650).
    #[arg(long, env = "MOCK_KIND_CERTS_VALIDITY_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(u64).range(1..=MAX_VALIDITY_DAYS))]
    validity_days: u64,
    /// CA lifetime in days (1–36500).
    #[arg(long, env = "MOCK_KIND_CERTS_CA_VALIDITY_DAYS", default_value_t = 3650,
          value_parser = clap::value_parser!(u64).range(1..=MAX_CA_VALIDITY_DAYS))]
    ca_validity_days: u64,
    /// Write ca.crt, tls.crt and tls.key into this directory.
    #[arg(long, env = "MOCK_KIND_CERTS_OUT_DIR")]
    out_dir: Option<PathBuf>,
    /// Create (or renew when expiring within the margin) this Secret in --namespace.
    #[arg(long, env = "MOCK_KIND_CERTS_SECRET")]
    secret: Option<String>,
    /// Renew a Secret whose certificate expires within this many days (0–3650).
    #[arg(long, env = "MOCK_KIND_CERTS_RENEW_MARGIN_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=MAX_VALIDITY_DAYS))]
    renew_margin_days: u64,
    /// Set the caBundle of this MutatingWebhookConfiguration (needs --secret or --out-dir).
    #[arg(long, env = "MOCK_KIND_CERTS_WEBHOOK_CONFIG")]
    webhook_config: Option<String>,
    /// Log as JSON.
    #[arg(long, env = "MOCK_KIND_LOG_JSON", default_value_t = false)]
    log_json: bool,
}

const DAY: u64 = 24 * 3600;
// Bounds keep `days * DAY` and `now + validity` far from overflow (a panic before this), and
// within what X.509 GeneralizedTime and clients accept.
const MAX_VALIDITY_DAYS: u64 = 3650;
const MAX_CA_VALIDITY_DAYS: u64 = 36500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::install_crypto_provider();
    let args = Args::parse();
    telemetry::init_logging(args.log_json);
    let mut opts = certs::CertOptions::new(&args.service, &args.namespace);
    opts.extra_sans = args.extra_san.clone();
    opts.validity = Duration::from_secs(args.validity_days * DAY);
    opts.ca_validity = Duration::from_secs(args.ca_validity_days * DAY);
    if args.out_dir.is_none() && args.secret.is_none() {
        anyhow::bail!("nothing to do: give --out-dir and/or --secret");
    }
    let now = SystemTime::now();

    let bundle = if let Some(name) = &args.secret {
        let client = kube::Client::try_default().await.context("kube client")?;
        let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &args.namespace);
        let margin = Duration::from_secs(args.renew_margin_days * DAY);
        let (bundle, action) =
            certs::cluster::ensure_secret(&api, &args.namespace, name, &opts, now, margin).await?;
        tracing::info!(secret = %format!("{}/{name}", args.namespace), ?action, "secret ensured");
        bundle
    } else {
        certs::generate(&opts, now, None)?
    };
    if let Some(dir) = &args.out_dir {
        certs::write_files(dir, &bundle)?;
        tracing::info!(dir = %dir.display(), "wrote ca.crt, tls.crt, tls.key");
    }
    if let Some(mwc) = &args.webhook_config {
        let client = kube::Client::try_default().await.context("kube client")?;
        let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client);
        let changed = certs::cluster::ensure_ca_bundle(&api, mwc, &bundle.ca_pem).await?;
        tracing::info!(webhook_config = %mwc, changed, "caBundle ensured");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_out_of_range_are_refused_at_parse_time() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("defaults", &[], true),
            ("longest serving cert", &["--validity-days=3650"], true),
            ("zero days", &["--validity-days=0"], false),
            (
                "serving cert overflowing u64 seconds",
                &["--validity-days=213503982334601"],
                false,
            ),
            ("CA beyond a century", &["--ca-validity-days=36501"], false),
            ("margin of ten years", &["--renew-margin-days=3650"], true),
            (
                "margin beyond",
                &["--renew-margin-days=18446744073709551615"],
                false,
            ),
        ];
        for (name, extra, ok) in cases {
            let argv = std::iter::once("mock-kind-certs").chain(extra.iter().copied());
            assert_eq!(Args::try_parse_from(argv).is_ok(), *ok, "{name}");
        }
    }
}
