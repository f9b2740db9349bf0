//! hollow-node: flags → Config → telemetry → run.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::install_crypto_provider();
    let args = hollow_node::cli::Args::parse();
    telemetry::init_logging(args.log_json);
    let pool = args.pool.clone();
    let config = args.into_config()?;
    let shutdown = telemetry::shutdown_token();
    match pool {
        Some(name) => hollow_node::pool::reconcile::run(config, name, shutdown).await?,
        None => hollow_node::run(config, shutdown).await?,
    }
    Ok(())
}
