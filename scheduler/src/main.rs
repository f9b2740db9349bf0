//! mock-kind-scheduler: flags → Config → telemetry → run.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::install_crypto_provider();
    let args = scheduler::cli::Args::parse();
    telemetry::init_logging(args.log_json);
    let config = scheduler::Config::from_args(&args)?;
    let shutdown = telemetry::shutdown_token();
    if let Err(e) = scheduler::run(config, shutdown).await {
        tracing::error!(error = %e, "mock-kind-scheduler failed");
        return Err(e.into());
    }
    tracing::info!("mock-kind-scheduler stopped");
    Ok(())
}
