//! `make sandbox`: mock-kind on a real local control plane, without Docker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use e2e::sandbox::{Placement, Sandbox, SandboxOptions};

/// Starts a real control plane on 127.0.0.1 with mock-kind's extender, webhook and hollow nodes,
/// applies a demonstration, prints a summary, and stays up until Ctrl-C.
#[derive(Parser, Debug)]
#[command(name = "mock-kind-sandbox", version)]
struct Args {
    /// Hollow (spoofed) nodes to register.
    #[arg(long, env = "MOCK_KIND_SANDBOX_NODES", default_value_t = 100)]
    nodes: usize,
    /// Replicas of the demonstration's operator-style Deployment.
    #[arg(long, env = "MOCK_KIND_SANDBOX_REPLICAS", default_value_t = 300)]
    replicas: i32,
    /// Where mock-kind-scheduler, mock-kind-webhook and hollow-node were built
    /// (default: the directory of this binary).
    #[arg(long, env = "MOCK_KIND_SANDBOX_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Seconds to wait for the demonstration to settle.
    #[arg(long, env = "MOCK_KIND_SANDBOX_TIMEOUT", default_value_t = 300)]
    timeout: u64,
    /// Who places pods: `extender` (wired into kube-scheduler) or `affinity` (the webhook writes
    /// the rules into pods; kube-scheduler runs stock, with no extender).
    #[arg(long, env = "MOCK_KIND_SANDBOX_PLACEMENT", default_value = "extender", value_parser = ["extender", "affinity"])]
    placement: String,
    /// Print the summary and exit (status 1 if it is not as expected) instead of staying up.
    #[arg(long, env = "MOCK_KIND_SANDBOX_ONCE")]
    once: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::install_crypto_provider();
    let args = Args::parse();
    let bin_dir = args.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("target/release"))
    });
    let placement = match args.placement.as_str() {
        "affinity" => Placement::Affinity,
        _ => Placement::Extender,
    };
    let opts = SandboxOptions {
        placement,
        nodes: args.nodes,
        replicas: args.replicas,
        service_bin_dir: bin_dir,
        timeout: Duration::from_secs(args.timeout),
    };
    let sandbox = match Sandbox::start(&opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandbox: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = match sandbox.demonstrate(&opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandbox: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("\n{summary}\n");
    let ok = summary.problems().is_empty();
    if args.once {
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let kc = sandbox.control_plane.kubeconfig();
    println!(
        "Explore it:\n  export KUBECONFIG={}\n  kubectl get nodes\n  kubectl get pods -A -o wide\n",
        kc.display()
    );
    println!(
        "Logs of every component are in {}",
        sandbox.control_plane.dir().display()
    );
    println!("Press Ctrl-C to stop and clean up.");
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("sandbox: stopping every process");
    drop(sandbox);
    ExitCode::SUCCESS
}
