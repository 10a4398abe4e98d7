//! A fault during a produce run on a local cluster: kill -9 one broker, preferably one
//! that leads none of the topic's partitions (a follower), and restart it later, so that
//! throughput can be compared with a run without the fault.

use std::time::Duration;

use clap::Args;
use strait_client::Client;
use strait_tests::Cluster;

#[derive(Args, Debug, Clone, Copy)]
pub struct FaultArgs {
    /// With --local: kill -9 a follower broker this many seconds into the run...
    #[arg(long)]
    pub kill_follower_after: Option<u64>,
    /// ...and restart it this many seconds after the kill.
    #[arg(long, default_value_t = 10)]
    pub restart_after: u64,
}

/// Runs the fault, if one was asked for; returns what happened.
pub async fn run(
    args: FaultArgs,
    cluster: Option<&mut Cluster>,
    client: &Client,
    topic: &str,
) -> anyhow::Result<Option<String>> {
    let Some(after) = args.kill_follower_after else {
        return Ok(None);
    };
    let cluster = cluster.ok_or_else(|| anyhow::anyhow!("--kill-follower-after needs --local"))?;
    tokio::time::sleep(Duration::from_secs(after)).await;
    let info = client.topic(topic).await?;
    let leads = |id: u64| {
        info.partitions
            .iter()
            .filter(|p| p.leader == Some(id))
            .count()
    };
    let victim = cluster
        .brokers
        .iter()
        .map(|b| b.id)
        .min_by_key(|&id| (leads(id), std::cmp::Reverse(id)))
        .ok_or_else(|| anyhow::anyhow!("no brokers"))?;
    let led = leads(victim);
    eprintln!("killing broker {victim} (leader of {led} partitions of {topic})");
    cluster.kill9(victim);
    tokio::time::sleep(Duration::from_secs(args.restart_after)).await;
    eprintln!("restarting broker {victim}");
    cluster.restart(victim)?;
    Ok(Some(format!(
        "broker {victim} (leader of {led} partitions) killed at {after} s, restarted {} s later",
        args.restart_after
    )))
}
