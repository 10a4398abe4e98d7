//! `strait`: the command-line tool for Strait, in the style of `rpk` (`noun verb`).
//!
//! Every command finds the cluster through `--brokers` (or `STRAIT_BROKERS`), which
//! defaults to the addresses `strait dev` uses. Read-only commands take `--format json`.

mod cluster;
mod dev;
mod output;
mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Addresses of the brokers `strait dev` starts by default.
pub const DEV_BROKERS: &str = "127.0.0.1:9701,127.0.0.1:9702,127.0.0.1:9703";

#[derive(Parser)]
#[command(
    name = "strait",
    version,
    about = "Administer, produce to and consume from a Strait cluster"
)]
struct Cli {
    /// Comma-separated broker addresses (any subset of the cluster).
    #[arg(long, global = true, env = "STRAIT_BROKERS", default_value = DEV_BROKERS, value_delimiter = ',')]
    brokers: Vec<String>,
    /// Output format of read-only commands.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local cluster of real broker processes on loopback, in the foreground.
    Dev(dev::DevArgs),
    /// Cluster-wide commands.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Topic commands: create, list, describe, delete, produce, consume.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Cluster(cmd) => cluster::run(cmd, &cli.brokers, cli.format).await,
            Command::Topic(cmd) => topic::run(cmd, &cli.brokers, cli.format).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Connects to the cluster, with a hint on what to do when nothing answers.
pub async fn connect(brokers: &[String]) -> anyhow::Result<strait_client::Client> {
    let config = strait_client::ClientConfig::new(brokers.iter().cloned());
    strait_client::Client::connect(config).await.map_err(|err| {
        anyhow::anyhow!(
            "{err}\nhint: is a cluster running at {}? start one with `strait dev`, or pass --brokers",
            brokers.join(",")
        )
    })
}
