//! `strait-bench storage`: the partition log's append throughput with the real
//! durability policy (one fdatasync per batch) against the same disk's raw sequential
//! write + fdatasync speed, measured in the same run, then the log's sequential read
//! speed.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use strait_broker::storage::partition_log::format::EntryKind;
use strait_broker::storage::partition_log::log::{NewEntry, PartitionLog, RollPolicy, Verify};

pub struct StorageArgs {
    pub batches: u64,
    pub batch_bytes: usize,
    pub records_per_batch: u32,
}

struct Run {
    secs: f64,
    latency_us: Histogram<u64>,
}

fn report(name: &str, bytes: u64, run: &Run) {
    let mb = bytes as f64 / 1_000_000.0;
    println!(
        "{name:<32} {:>9.1} MB/s   sync latency p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        mb / run.secs,
        run.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        run.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        run.latency_us.max() as f64 / 1000.0
    );
}

fn raw(dir: &Path, args: &StorageArgs, payload: &[u8]) -> anyhow::Result<Run> {
    let path = dir.join("raw.bin");
    let mut file = std::fs::File::create(&path)?;
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let started = Instant::now();
    for _ in 0..args.batches {
        let t0 = Instant::now();
        file.write_all(payload)?;
        file.sync_data()?;
        latency_us.record(t0.elapsed().as_micros().max(1) as u64)?;
    }
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(Run { secs, latency_us })
}

fn engine(dir: &Path, args: &StorageArgs, payload: &[u8]) -> anyhow::Result<(Run, PartitionLog)> {
    let (mut log, _) = PartitionLog::open(
        &dir.join("log"),
        RollPolicy::default(),
        Verify::ActiveSegment,
    )?;
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let started = Instant::now();
    for index in 0..args.batches {
        let t0 = Instant::now();
        log.append(
            NewEntry {
                term: 1,
                leader_node: 1,
                index,
                kind: EntryKind::Records,
                record_count: args.records_per_batch,
                first_timestamp: 0,
                max_timestamp: 0,
                producer_id: 0,
                base_sequence: 0,
                compression: 0,
                payload,
            },
            0,
        )?;
        log.sync()?;
        latency_us.record(t0.elapsed().as_micros().max(1) as u64)?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((Run { secs, latency_us }, log))
}

pub fn run(args: StorageArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("strait-bench-storage-")
        .tempdir_in(".")?;
    let payload = vec![0x5au8; args.batch_bytes];
    let total = args.batches * args.batch_bytes as u64;
    println!(
        "strait-bench storage: {} batches of {} B ({} records each), one fdatasync per batch, in {}",
        args.batches,
        args.batch_bytes,
        args.records_per_batch,
        dir.path().display()
    );
    let raw_run = raw(dir.path(), &args, &payload)?;
    report("raw write + fdatasync", total, &raw_run);
    let (engine_run, log) = engine(dir.path(), &args, &payload)?;
    report("partition log append + sync", total, &engine_run);
    println!(
        "engine / raw: {:.0}%",
        100.0 * raw_run.secs / engine_run.secs
    );

    // Sequential read of the whole log through the offset path (page cache warm).
    let started = Instant::now();
    let mut offset = 0u64;
    let mut bytes = 0u64;
    loop {
        let batches = log.read_offsets(offset, 1 << 20)?;
        let Some(last) = batches.last() else { break };
        offset = last.header.next_offset();
        bytes += batches.iter().map(|b| b.payload.len() as u64).sum::<u64>();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<32} {:>9.1} MB/s   ({} MB, CRC-checked)",
        "partition log sequential read",
        bytes as f64 / 1_000_000.0 / secs,
        bytes / 1_000_000
    );
    // Raw read of the same bytes for comparison.
    let file = std::fs::File::open(dir.path().join("log").join("00000000000000000000.log"))?;
    let len = file.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut pos = 0u64;
    while pos < len {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<32} {:>9.1} MB/s",
        "raw sequential read (1 MiB pread)",
        pos as f64 / 1_000_000.0 / secs
    );
    std::io::stdout().flush()?;
    Ok(())
}
