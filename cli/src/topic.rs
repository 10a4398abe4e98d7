//! `strait topic ...`: create, list, describe, delete, produce (stdin lines) and consume.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;
use strait_client::{
    Client, Compression, ConsumedRecord, ConsumerConfig, OffsetSpec, ProducerConfig, ProducerRecord,
};

use crate::Format;
use crate::output::{ids, print_json, print_table};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(short, long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition (at most the number of live brokers).
        #[arg(short, long, default_value_t = 3)]
        replicas: u32,
        /// Topic config override KEY=VALUE (repeatable): segment.bytes, segment.ms.
        #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Set or remove config overrides of a topic.
    AlterConfig {
        name: String,
        /// KEY=VALUE to set (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// KEY to reset to its default (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions: leader, replicas, in-sync replicas and offsets.
    Describe { name: String },
    /// Delete a topic and its data on every broker.
    Delete { name: String },
    /// Produce one record per line of standard input.
    Produce(ProduceArgs),
    /// Consume records and print them.
    Consume(ConsumeArgs),
}

#[derive(Args)]
pub struct ProduceArgs {
    name: String,
    /// Key for every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Write every record to this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Compress batches: none, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    compression: Compression,
}

fn parse_compression(name: &str) -> Result<Compression, String> {
    Compression::parse(name).ok_or_else(|| format!("`{name}`: use none, lz4 or zstd"))
}

#[derive(Args)]
pub struct ConsumeArgs {
    name: String,
    /// Where to start: `start`, `end`, an offset, or `@TIMESTAMP` (ms since the epoch:
    /// the first record at or after it).
    #[arg(long, default_value = "start")]
    offset: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Exit after this many records (default: follow new records forever).
    #[arg(long)]
    num: Option<u64>,
}

pub async fn run(
    cmd: TopicCommand,
    brokers: &[String],
    format: Format,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect(brokers).await?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replicas,
            configs,
        } => {
            client
                .create_topic_with_configs(&name, partitions, replicas, parse_pairs(&configs)?)
                .await?;
            let topic = client
                .wait_for_leaders(&name, std::time::Duration::from_secs(30))
                .await
                .with_context(|| {
                    format!("topic `{name}` was created but not all partitions have a leader yet")
                })?;
            println!(
                "created topic {name}: {} partitions, replication factor {}",
                topic.partitions.len(),
                topic.replication_factor
            );
        }
        TopicCommand::AlterConfig { name, set, delete } => {
            let topic = client
                .alter_topic_configs(&name, parse_pairs(&set)?, delete)
                .await?;
            println!("altered topic {name}:");
            for (key, value) in &topic.configs {
                println!("  {key}={value}");
            }
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
        TopicCommand::List => list(&client, format).await?,
        TopicCommand::Describe { name } => describe(&client, &name, format).await?,
        TopicCommand::Produce(args) => produce(&client, args, format).await?,
        TopicCommand::Consume(args) => consume(&client, args, format).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &Client, format: Format) -> anyhow::Result<()> {
    let topics = client.list_topics().await?;
    if format == Format::Json {
        print_json(&json!(topics.iter().map(|t| json!({
            "name": t.name, "partitions": t.partitions.len(), "replication_factor": t.replication_factor,
        })).collect::<Vec<_>>()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.len().to_string(),
                t.replication_factor.to_string(),
            ]
        })
        .collect();
    print_table(&["NAME", "PARTITIONS", "REPLICAS"], &rows);
    Ok(())
}

async fn describe(client: &Client, name: &str, format: Format) -> anyhow::Result<()> {
    let description = client.describe_topic(name).await?;
    if format == Format::Json {
        print_json(&json!({
            "name": description.topic.name,
            "replication_factor": description.topic.replication_factor,
            "configs": description.topic.configs,
            "partitions": description.partitions.iter().map(|p| json!({
                "partition": p.info.partition,
                "leader": p.info.leader,
                "leader_epoch": p.info.leader_epoch,
                "replicas": p.info.replicas,
                "isr": p.info.isr,
                "log_start_offset": p.offsets.as_ref().ok().map(|o| o.0),
                "high_watermark": p.offsets.as_ref().ok().map(|o| o.1),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!(
        "topic {}: {} partitions, replication factor {}",
        description.topic.name,
        description.partitions.len(),
        description.topic.replication_factor
    );
    let rows: Vec<Vec<String>> = description
        .partitions
        .iter()
        .map(|p| {
            let (start, hw) = match &p.offsets {
                Ok((s, h)) => (s.to_string(), h.to_string()),
                Err(_) => ("?".into(), "?".into()),
            };
            vec![
                p.info.partition.to_string(),
                p.info.leader.map_or("none".into(), |l| l.to_string()),
                p.info.leader_epoch.to_string(),
                ids(&p.info.replicas),
                ids(&p.info.isr),
                start,
                hw,
            ]
        })
        .collect();
    print_table(
        &[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LOG-START",
            "HIGH-WATERMARK",
        ],
        &rows,
    );
    println!("configs:");
    for (key, value) in &description.topic.configs {
        println!("  {key}={value}");
    }
    Ok(())
}

async fn produce(client: &Client, args: ProduceArgs, format: Format) -> anyhow::Result<()> {
    let producer = client.producer(ProducerConfig {
        compression: args.compression,
        ..ProducerConfig::default()
    });
    let mut deliveries = Vec::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.context("reading standard input")?;
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(key), _) => (Some(key.clone()), line),
            (None, Some(sep)) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line),
            },
            (None, None) => (None, line),
        };
        let mut record = ProducerRecord::new(Bytes::from(value));
        if let Some(key) = key {
            record = record.key(Bytes::from(key));
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        deliveries.push(producer.send(&args.name, record).await?);
    }
    // partition -> (first offset, last offset, count)
    let mut summary: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
    let mut failures = 0usize;
    let mut first_error = None;
    for delivery in deliveries {
        match delivery.await {
            Ok(meta) => {
                let entry = summary
                    .entry(meta.partition)
                    .or_insert((meta.offset, meta.offset, 0));
                entry.0 = entry.0.min(meta.offset);
                entry.1 = entry.1.max(meta.offset);
                entry.2 += 1;
            }
            Err(err) => {
                failures += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    let produced: u64 = summary.values().map(|s| s.2).sum();
    if format == Format::Json {
        print_json(&json!({
            "topic": args.name,
            "produced": produced,
            "failed": failures,
            "partitions": summary.iter().map(|(p, (first, last, count))| json!({
                "partition": p, "first_offset": first, "last_offset": last, "records": count,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!("produced {produced} records to {}", args.name);
        for (p, (first, last, count)) in &summary {
            println!("  partition {p}: offsets {first}..={last} ({count} records)");
        }
    }
    if let Some(err) = first_error {
        bail!("{failures} records were not acknowledged; first error: {err}");
    }
    Ok(())
}

/// Parses `KEY=VALUE` arguments.
fn parse_pairs(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(anyhow::anyhow!("`{pair}` is not KEY=VALUE")),
        })
        .collect()
}

fn parse_offset(text: &str) -> anyhow::Result<OffsetSpec> {
    match text {
        "start" | "earliest" | "beginning" => Ok(OffsetSpec::Earliest),
        "end" | "latest" => Ok(OffsetSpec::Latest),
        t if t.starts_with('@') => t[1..]
            .parse::<i64>()
            .map(OffsetSpec::Timestamp)
            .map_err(|_| {
                anyhow::anyhow!("--offset @TIMESTAMP takes milliseconds since the epoch, not `{t}`")
            }),
        n => n.parse::<u64>().map(OffsetSpec::At).map_err(|_| {
            anyhow::anyhow!("--offset must be `start`, `end`, a number or @TIMESTAMP, not `{n}`")
        }),
    }
}

async fn consume(client: &Client, args: ConsumeArgs, format: Format) -> anyhow::Result<()> {
    let start = parse_offset(&args.offset)?;
    let partitions = args.partition.map(|p| vec![p]);
    let mut consumer = client
        .consumer(&args.name, partitions, start, ConsumerConfig::default())
        .await?;
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    while args.num.is_none_or(|n| seen < n) {
        let record = consumer.next_record().await?;
        let mut out = stdout.lock();
        let line = match format {
            Format::Text => String::from_utf8_lossy(&record.value).into_owned(),
            Format::Json => record_json(&record).to_string(),
        };
        if writeln!(out, "{line}").is_err() {
            // The reader went away (e.g. `| head`): stop quietly.
            return Ok(());
        }
        seen += 1;
    }
    Ok(())
}

fn record_json(record: &ConsumedRecord) -> serde_json::Value {
    json!({
        "topic": &*record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "value": String::from_utf8_lossy(&record.value),
        "headers": record.headers.iter().map(|(k, v)| json!({"key": k, "value": String::from_utf8_lossy(v)})).collect::<Vec<_>>(),
    })
}
