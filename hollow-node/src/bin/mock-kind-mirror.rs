//! mock-kind-mirror: a cluster's Nodes → the HollowNodePool manifests that reproduce them.
//! Flags → read Nodes (cluster or recording) → `pool::mirror` → YAML.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hollow_node::pool::{manifests, mirror};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

/// Most Nodes read (a bound on memory and time).
const MAX_NODES: usize = 100_000;
/// Largest recording read with --from-file.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads the Nodes of a cluster and writes HollowNodePool manifests that reproduce them:
/// grouped by shape, counted, zones kept, host names, provider IDs and addresses dropped.
#[derive(Debug, Parser)]
#[command(name = "mock-kind-mirror", version)]
struct Args {
    /// Kubeconfig of the cluster to read. Default: $KUBECONFIG, ~/.kube/config or in-cluster.
    #[arg(
        long,
        env = "MOCK_KIND_MIRROR_KUBECONFIG",
        conflicts_with = "from_file"
    )]
    kubeconfig: Option<PathBuf>,
    /// Read Nodes from a recording (`kubectl get nodes -o yaml` or `-o json`, at most 256 MiB)
    /// instead of a cluster.
    #[arg(long, env = "MOCK_KIND_MIRROR_FROM_FILE")]
    from_file: Option<PathBuf>,
    /// Only Nodes matching this label selector (cluster only). Default: all.
    #[arg(long, env = "MOCK_KIND_MIRROR_SELECTOR", default_value = "")]
    selector: String,
    /// Multiply every pool's node count (rounded, at least 1), above 0 and at most 1000.
    #[arg(long, env = "MOCK_KIND_MIRROR_SCALE", default_value_t = 1.0)]
    scale: f64,
    /// Write `<pool>.yaml` files and a kustomization.yaml here. Default: one stream on stdout.
    #[arg(long, env = "MOCK_KIND_MIRROR_OUTPUT_DIR")]
    output_dir: Option<PathBuf>,
}

/// `items` of a List, as kubectl writes it.
#[derive(serde::Deserialize)]
struct NodeList {
    #[serde(default)]
    items: Vec<Node>,
}

fn from_file(path: &PathBuf) -> anyhow::Result<Vec<Node>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_FILE_BYTES,
        "{}: larger than 256 MiB",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // YAML is a superset of JSON: one parser reads both.
    let list: NodeList = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not a list of Nodes", path.display()))?;
    anyhow::ensure!(list.items.len() <= MAX_NODES, "more than {MAX_NODES} Nodes");
    Ok(list.items)
}

async fn from_cluster(args: &Args) -> anyhow::Result<Vec<Node>> {
    let config = hollow_node::client::config(args.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config)?;
    let api: Api<Node> = Api::all(client);
    let mut nodes = Vec::new();
    let mut params = ListParams::default().labels(&args.selector).limit(500);
    loop {
        let page = api.list(&params).await.context("listing Nodes")?;
        nodes.extend(page.items);
        anyhow::ensure!(nodes.len() <= MAX_NODES, "more than {MAX_NODES} Nodes");
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(nodes),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    telemetry::install_crypto_provider();
    let args = Args::parse();
    let nodes = match &args.from_file {
        Some(path) => from_file(path)?,
        None => from_cluster(&args).await?,
    };
    let pools = mirror::mirror(&nodes, args.scale)?;
    match &args.output_dir {
        Some(dir) => manifests::write_dir(dir, &pools)?,
        None => print!("{}", manifests::stream(&pools)?),
    }
    eprintln!("{} node(s) → {} pool(s)", nodes.len(), pools.len());
    Ok(())
}
