//! Replica agreement, checked on the files: with every broker stopped, each replica's
//! partition log is read and verified (a damaged log is a violation), and any two
//! replicas must hold identical entries (term, kind, offsets, payload checksum) at every
//! Raft index both have.

use std::collections::BTreeMap;
use std::path::Path;

use strait_broker::storage::partition_log::log::{PartitionLog, RollPolicy, Verify};

/// One entry as compared: term, kind, base offset, record count, payload CRC32C.
type EntrySummary = (u64, u8, u64, u32, u32);
/// One replica's log: broker id and its entries by Raft index.
type ReplicaLog = (u64, BTreeMap<u64, EntrySummary>);

/// Reads and verifies the entries of one replica's partition directory, on a copy so
/// that the replica's files stay as they were; damage is an error, never repaired.
fn entries(dir: &Path) -> anyhow::Result<BTreeMap<u64, EntrySummary>> {
    let copy = tempfile::tempdir()?;
    for file in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        std::fs::copy(file.path(), copy.path().join(file.file_name()))?;
    }
    let (log, damage) = PartitionLog::open(copy.path(), RollPolicy::default(), Verify::Everything)?;
    if let Some(damage) = damage {
        anyhow::bail!(
            "damaged log in {}: {} at byte {} of {}",
            dir.display(),
            damage.recovery.reason,
            damage.recovery.valid_bytes,
            damage.segment.display()
        );
    }
    let batches = log.read_indexes(0, u64::MAX, usize::MAX)?;
    Ok(batches
        .into_iter()
        .map(|b| {
            let h = b.header;
            (
                h.index,
                (
                    h.term,
                    h.kind as u8,
                    h.base_offset,
                    h.record_count,
                    crc32c::crc32c(&b.payload),
                ),
            )
        })
        .collect())
}

/// Compares every partition group found in the brokers' data directories; returns
/// one message per disagreement, and how many groups were compared.
pub fn compare(data_dirs: &[(u64, std::path::PathBuf)]) -> anyhow::Result<(usize, Vec<String>)> {
    let mut groups: BTreeMap<String, Vec<ReplicaLog>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (broker, dir) in data_dirs {
        let Ok(partitions) = std::fs::read_dir(dir.join("partitions")) else {
            continue;
        };
        for group in partitions.filter_map(|e| e.ok()) {
            let name = group.file_name().to_string_lossy().into_owned();
            match entries(&group.path()) {
                Ok(log) => groups.entry(name).or_default().push((*broker, log)),
                Err(err) => problems.push(format!("broker {broker} group {name}: {err}")),
            }
        }
    }
    for (group, replicas) in &groups {
        for (i, (a, left)) in replicas.iter().enumerate() {
            for (b, right) in &replicas[i + 1..] {
                let differing = left
                    .iter()
                    .filter_map(|(index, entry)| {
                        right
                            .get(index)
                            .filter(|other| *other != entry)
                            .map(|_| *index)
                    })
                    .next();
                if let Some(index) = differing {
                    problems.push(format!(
                        "group {group}: brokers {a} and {b} disagree at Raft index {index}: {:?} vs {:?}",
                        left.get(&index),
                        right.get(&index)
                    ));
                }
            }
        }
    }
    Ok((groups.len(), problems))
}
