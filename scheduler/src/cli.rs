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

    /// Seconds in-flight requests may take to finish after SIGTERM.
    #[arg(
        long,
        env = "MOCK_KIND_SCHEDULER_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(0..=3_600)
    )]
    pub shutdown_grace_seconds: u64,

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
        Ok(Config {
            listen: args.listen,
            kubeconfig: args.kubeconfig.clone(),
            tls,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
            tls_reload_interval: Duration::from_secs(args.tls_reload_seconds),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_config() {
        type Case<'a> = (&'a str, &'a [&'a str], Result<(&'a str, bool), &'a str>);
        let cases: [Case<'_>; 7] = [
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
}
