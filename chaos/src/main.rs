//! `strait-chaos`: runs the fault-injection suite against a three-broker loopback
//! cluster (see TESTING.md). Exit status 0 when every check holds, 1 otherwise.

use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use strait_chaos::{FaultKind, RunConfig, run};

#[derive(Parser)]
#[command(
    name = "strait-chaos",
    about = "Fault injection with a history checker"
)]
struct Args {
    /// Seed of every random choice (fault order, targets, timings).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run for this many seconds, drawing faults at random; without it, each selected
    /// fault kind runs once.
    #[arg(long)]
    duration: Option<u64>,
    /// Comma-separated fault kinds (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<String>>,
    /// Partitions of the test topic (replication factor 3).
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Producers, spread over the partitions (each writes to one).
    #[arg(long, default_value_t = 6)]
    producers: u32,
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// Keep the history, data and broker logs even when every check holds.
    #[arg(long)]
    keep: bool,
    /// One more flag for every broker (repeatable, e.g. `--broker-arg=--direct-io=false`).
    #[arg(long = "broker-arg", allow_hyphen_values = true)]
    broker_args: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let faults = match args.faults {
        None => FaultKind::ALL.to_vec(),
        Some(names) => {
            let mut kinds = Vec::new();
            for name in names {
                match FaultKind::parse(&name) {
                    Some(kind) => kinds.push(kind),
                    None => bail!(
                        "unknown fault `{name}` (known: {})",
                        FaultKind::ALL.map(|k| k.name()).join(", ")
                    ),
                }
            }
            kinds
        }
    };
    let report = run(RunConfig {
        seed: args.seed,
        faults,
        duration: args.duration.map(Duration::from_secs),
        partitions: args.partitions,
        producers: args.producers,
        consumers: args.consumers,
        keep: args.keep,
        broker_args: args.broker_args,
        ..RunConfig::default()
    })
    .await?;
    println!("{report}");
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}
