//! `strait cluster status`: brokers, controller, leaderless and under-replicated
//! partitions; `--check` turns it into a Nagios-style probe (exit 0/1/2).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::Format;
use crate::output::{ids, print_json, print_table};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show brokers, the controller and partitions needing attention.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    /// Print one status line and exit 0 (OK), 1 (WARNING) or 2 (CRITICAL).
    #[arg(long)]
    check: bool,
}

pub async fn run(
    cmd: ClusterCommand,
    brokers: &[String],
    format: Format,
) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Status(args) = cmd;
    let status = match crate::connect(brokers).await {
        Ok(client) => client.cluster_status().await.map_err(anyhow::Error::from),
        Err(err) => Err(err),
    };
    if args.check {
        return Ok(check(status));
    }
    let status = status?;
    if format == Format::Json {
        print_json(&json!({
            "controller_id": status.controller_id,
            "brokers": status.brokers.iter().map(|b| json!({
                "id": b.id, "addr": b.addr, "alive": b.alive, "roles": b.roles, "rack": b.rack,
            })).collect::<Vec<_>>(),
            "topics": status.topics.len(),
            "partitions": status.topics.iter().map(|t| t.partitions.len()).sum::<usize>(),
            "leaderless": status.leaderless.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
            "under_replicated": status.under_replicated.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let controller = status
        .controller_id
        .map_or("none".to_string(), |id| id.to_string());
    println!("controller: {controller}");
    println!();
    let rows: Vec<Vec<String>> = status
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.addr.clone(),
                if b.alive { "yes" } else { "NO" }.to_string(),
                b.roles.join(","),
                if status.controller_id == Some(b.id) {
                    "*"
                } else {
                    ""
                }
                .to_string(),
            ]
        })
        .collect();
    print_table(&["ID", "ADDRESS", "ALIVE", "ROLES", "CONTROLLER"], &rows);
    println!();
    let partitions: usize = status.topics.iter().map(|t| t.partitions.len()).sum();
    println!("topics: {}, partitions: {partitions}", status.topics.len());
    println!(
        "leaderless partitions: {}{}",
        status.leaderless.len(),
        list(&status.leaderless)
    );
    println!(
        "under-replicated partitions: {}{}",
        status.under_replicated.len(),
        list(&status.under_replicated)
    );
    for topic in &status.topics {
        for p in &topic.partitions {
            if p.leader.is_none()
                || status
                    .under_replicated
                    .contains(&(topic.name.clone(), p.partition))
            {
                println!(
                    "  {}/{}: leader {} replicas {} isr {}",
                    topic.name,
                    p.partition,
                    p.leader.map_or("none".into(), |l| l.to_string()),
                    ids(&p.replicas),
                    ids(&p.isr)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(items: &[(String, u32)]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = items
        .iter()
        .take(10)
        .map(|(t, p)| format!("{t}/{p}"))
        .collect();
    let more = if items.len() > 10 { ", ..." } else { "" };
    format!(" ({}{more})", shown.join(", "))
}

fn check(status: anyhow::Result<strait_client::ClusterStatus>) -> ExitCode {
    let status = match status {
        Ok(status) => status,
        Err(err) => {
            println!(
                "STRAIT CRITICAL - cluster unreachable: {}",
                err.to_string().lines().next().unwrap_or("")
            );
            return ExitCode::from(2);
        }
    };
    let alive = status.brokers.iter().filter(|b| b.alive).count();
    let summary = format!(
        "{alive}/{} brokers alive, controller {}, {} leaderless, {} under-replicated partitions",
        status.brokers.len(),
        status
            .controller_id
            .map_or("none".into(), |c| c.to_string()),
        status.leaderless.len(),
        status.under_replicated.len()
    );
    if status.controller_id.is_none() || !status.leaderless.is_empty() {
        println!("STRAIT CRITICAL - {summary}");
        ExitCode::from(2)
    } else if alive < status.brokers.len() || !status.under_replicated.is_empty() {
        println!("STRAIT WARNING - {summary}");
        ExitCode::from(1)
    } else {
        println!("STRAIT OK - {summary}");
        ExitCode::SUCCESS
    }
}
