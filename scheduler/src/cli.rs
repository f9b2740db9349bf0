//! Command-line flags; every flag can also be set from the environment (`MOCK_KIND_…`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::{Config, TlsFiles};

#[derive(Debug, Parser)]
#[command(name = "mock-kind-scheduler", version, about)]
pub struct Args {
    /// Address to serve the extender verbs (/filter, /preempt) and /healthz /readyz /metrics on.
    /// The default matches the example KubeSchedulerConfiguration (urlPrefix
    /// http://127.0.0.1:8888/); use 0.0.0.0:8888 behind a Service.
    #[arg(
        long,
        env = "MOCK_KIND_SCHEDULER_LISTEN",
        default_value = "127.0.0.1:8888"
    )]
    pub listen: SocketAddr,

    /// Kubeconfig file. Default: the in-cluster service account, else $KUBECONFIG or
    /// ~/.kube/config.
    #[arg(long, env = "MOCK_KIND_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Log JSON lines instead of human-readable text.
    #[arg(long, env = "MOCK_KIND_LOG_JSON")]
    pub log_json: bool,

    /// PEM certificate (chain) for HTTPS; requires --tls-key. Default: plain HTTP.
    #[arg(long, env = "MOCK_KIND_SCHEDULER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for HTTPS; requires --tls-cert.
    #[arg(long, env = "MOCK_KIND_SCHEDULER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Seconds in-flight requests may take to finish once the drain delay is over.
    #[arg(
        long,
        env = "MOCK_KIND_SCHEDULER_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(0..=3_600)
    )]
    pub shutdown_grace_seconds: u64,

    /// Seconds the extender keeps serving after SIGTERM with /readyz failing, so callers stop
    /// routing here first. Keep drain + grace under the pod's terminationGracePeriodSeconds.
    #[arg(
        long,
        env = "MOCK_KIND_SCHEDULER_DRAIN_DELAY_SECONDS",
        default_value_t = 5
    )]
    pub drain_delay_seconds: u64,

    /// Largest request body in bytes; larger ones get 413. 8 MiB holds the NodeNames of
    /// 100,000+ nodes (nodeCacheCapable), or whole Node objects of about 2,000.
    #[arg(
        long,
        env = "MOCK_KIND_SCHEDULER_MAX_BODY_BYTES",
        default_value_t = 8 << 20
    )]
    pub max_body_bytes: usize,

    /// Requests served at once; more get 503 at once. With --max-body-bytes this bounds body
    /// memory (16 × 8 MiB = 128 MiB, within the 256 Mi limit).
    #[arg(
        long,
        env = "MOCK_KIND_SCHEDULER_MAX_CONCURRENT_REQUESTS",
        default_value_t = 16
    )]
    pub max_concurrent_requests: usize,

    /// Seconds a request (body included) may take before it gets 503; kube-scheduler's
    /// extender httpTimeout defaults to 30.
    #[arg(
        long,
        env = "MOCK_KIND_SCHEDULER_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub request_timeout_seconds: u64,

    /// Seconds a client may take to send request headers, or stay idle between requests,
    /// before its connection is closed.
    #[arg(
        long,
        env = "MOCK_KIND_SCHEDULER_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub header_read_timeout_seconds: u64,

    /// Seconds between checks of the TLS files for rotation.
    #[arg(
        long,
        env = "MOCK_KIND_SCHEDULER_TLS_RELOAD_SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub tls_reload_seconds: u64,
}

impl Config {
    /// Validates the flags into a `Config`.
    pub fn from_args(args: &Args) -> Result<Config, crate::Error> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(crate::Error::Config("--tls-cert needs --tls-key".into()));
            }
            (None, Some(_)) => {
                return Err(crate::Error::Config("--tls-key needs --tls-cert".into()));
            }
        };
        if args.tls_reload_seconds == 0 {
            return Err(crate::Error::Config(
                "--tls-reload-seconds must be at least 1".into(),
            ));
        }
        let server = serving::Limits {
            max_body: args.max_body_bytes,
            max_concurrent: args.max_concurrent_requests,
            request_timeout: Duration::from_secs(args.request_timeout_seconds),
            header_read_timeout: Duration::from_secs(args.header_read_timeout_seconds),
            drain_delay: Duration::from_secs(args.drain_delay_seconds),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        };
        server.validate()?;
        Ok(Config {
            listen: args.listen,
            kubeconfig: args.kubeconfig.clone(),
            tls,
            server,
            tls_reload_interval: Duration::from_secs(args.tls_reload_seconds),
        })
    }
}

/// The server limits when no flag is given (the flags' defaults, without the environment).
pub fn default_limits() -> serving::Limits {
    serving::Limits {
        max_body: 8 << 20,
        max_concurrent: 16,
        request_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(10),
        drain_delay: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_config() {
        type Case<'a> = (&'a str, &'a [&'a str], Result<(&'a str, bool), &'a str>);
        let cases: [Case<'_>; 9] = [
            ("defaults", &[], Ok(("127.0.0.1:8888", false))),
            (
                "listen",
                &["--listen", "0.0.0.0:9000"],
                Ok(("0.0.0.0:9000", false)),
            ),
            (
                "tls pair",
                &["--tls-cert", "c.pem", "--tls-key", "k.pem"],
                Ok(("127.0.0.1:8888", true)),
            ),
            ("cert without key", &["--tls-cert", "c.pem"], Err("tls")),
            (
                "zero reload interval",
                &["--tls-reload-seconds", "0"],
                Err("reload"),
            ),
            (
                "zero concurrency",
                &["--max-concurrent-requests", "0"],
                Err("concurrent"),
            ),
            (
                "zero header timeout",
                &["--header-read-timeout-seconds", "0"],
                Err("header read timeout"),
            ),
            (
                "reload interval past a day",
                &["--tls-reload-seconds", "86401"],
                Err("--tls-reload-seconds"),
            ),
            (
                "grace overflowing an Instant",
                &["--shutdown-grace-seconds", "18446744073709551615"],
                Err("--shutdown-grace-seconds"),
            ),
        ];
        for (name, flags, want) in cases {
            let argv = std::iter::once("mock-kind-scheduler").chain(flags.iter().copied());
            let got = Args::try_parse_from(argv)
                .map_err(|e| e.to_string())
                .and_then(|a| Config::from_args(&a).map_err(|e| e.to_string()));
            match (got, want) {
                (Ok(c), Ok((listen, tls))) => {
                    assert_eq!(c.listen.to_string(), listen, "{name}");
                    assert_eq!(c.tls.is_some(), tls, "{name}");
                }
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn flag_defaults_are_the_default_limits() {
        let args = Args::try_parse_from(["mock-kind-scheduler"]).expect("no flags parse");
        let config = Config::from_args(&args).expect("defaults are valid");
        assert_eq!(config.server, default_limits());
        assert!(
            config.server.stop_budget() < Duration::from_secs(30),
            "pod grace is 30 s"
        );
    }
}
