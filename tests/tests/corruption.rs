//! Bit rot in a sealed segment of a running leader: the corrupt batch is never served,
//! the replica verifies and cuts its log, leadership moves to a healthy replica, and the
//! damaged replica gets the lost entries back until its files match the others' byte
//! for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strait_client::{ConsumedRecord, OffsetSpec, PartitionConsumer, ProducerRecord};
use strait_tests::{Cluster, binary, wait_until};

/// The segment files of the only partition on a broker, oldest first.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("partitions"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .flat_map(|group| std::fs::read_dir(group.path()).into_iter().flatten())
        .filter_map(|f| f.ok().map(|f| f.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Names and contents of every segment file.
fn contents(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    segments(data_dir)
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, std::fs::read(&p).ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_sealed_segment_is_never_served_and_is_recovered_from_a_peer()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let brokers = cluster.addrs().join(",");
    let out = Command::new(binary("strait"))
        .args(["--brokers", &brokers, "topic", "create", "rot"])
        .args(["-p", "1", "-r", "3", "-c", "segment.bytes=4096"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = cluster.client().await?;
    let info = client
        .wait_for_leaders("rot", Duration::from_secs(30))
        .await?;
    let leader = info.partitions[0].leader.expect("leader");
    let producer = client.producer(Default::default());
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0..200u32 {
        let value = format!("record {i:0>190}");
        let meta = producer
            .send_and_wait("rot", ProducerRecord::new(value.clone()))
            .await?;
        acked.insert(meta.offset, value);
    }
    // Every replica holds the same segments before the damage.
    let dirs: Vec<(u64, PathBuf)> = cluster
        .brokers
        .iter()
        .map(|b| (b.id, b.data_dir().to_path_buf()))
        .collect();
    let reference = wait_until("replicas to agree", Duration::from_secs(30), || async {
        let all: Vec<_> = dirs.iter().map(|(_, d)| contents(d)).collect();
        (all[0].len() > 5 && all.iter().all(|c| *c == all[0])).then(|| all[0].clone())
    })
    .await?;

    // Flip a byte in the middle of a sealed segment of the running leader.
    let leader_dir = cluster.broker(leader).data_dir().to_path_buf();
    let victim = segments(&leader_dir)[2].clone();
    let mut bytes = std::fs::read(&victim)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&victim, &bytes)?;

    // A consumer reading from the start gets errors or intact records, never damaged
    // ones, and ends up with everything that was acknowledged.
    let read = std::sync::Mutex::new((Vec::<ConsumedRecord>::new(), 0u32));
    wait_until(
        "every record read back",
        Duration::from_secs(60),
        || async {
            let _ = client.refresh_metadata().await;
            let next = {
                let read = read.lock().unwrap_or_else(|e| e.into_inner());
                read.0.last().map_or(0, |r| r.offset + 1)
            };
            let consumer = PartitionConsumer::new(
                client.clone(),
                "rot",
                0,
                OffsetSpec::At(next),
                Default::default(),
            )
            .await;
            let polled = match consumer {
                Ok(mut consumer) => consumer.poll().await,
                Err(err) => Err(err),
            };
            let mut read = read.lock().unwrap_or_else(|e| e.into_inner());
            match polled {
                Ok(batch) => read.0.extend(batch),
                Err(_) => read.1 += 1,
            }
            (read.0.len() >= acked.len()).then_some(())
        },
    )
    .await?;
    let (records, errors) = read.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(errors > 0, "the corrupt batch must have failed a read");
    assert_eq!(records.len(), acked.len());
    for record in &records {
        assert_eq!(
            Some(record.value.as_ref()),
            acked.get(&record.offset).map(|v| v.as_bytes()),
            "offset {}",
            record.offset
        );
    }

    // The damaged replica verified its log, cut it at the damage, and got the lost
    // entries back: its segments match a healthy replica's byte for byte, and its
    // sealed segments are the ones every replica had before the damage.
    let healthy = dirs
        .iter()
        .find(|(id, _)| *id != leader)
        .map(|(_, d)| d.clone())
        .expect("another replica");
    let repaired = wait_until(
        "the damaged replica to be repaired",
        Duration::from_secs(60),
        || async {
            let repaired = contents(&leader_dir);
            (repaired == contents(&healthy)).then_some(repaired)
        },
    )
    .await?;
    let sealed = reference.len() - 1;
    assert_eq!(repaired[..sealed], reference[..sealed]);
    let logs = std::fs::read_to_string(cluster.broker(leader).log_path())?;
    assert!(
        logs.contains("corrupt data in a partition log"),
        "corruption not reported:\n{logs}"
    );
    assert!(logs.contains("may vote"), "recovery not finished:\n{logs}");
    Ok(())
}
