use bytes::Bytes;

use super::*;

fn sample() -> Bytes {
    let mut b = BatchBuilder::default();
    b.push(5, Some(b"k1"), b"v1", &[]);
    b.push(0, None, b"", &[("h".to_string(), Bytes::from_static(b"x"))]);
    b.push(7, Some(b""), b"value three", &[]);
    b.finish()
}

#[test]
fn round_trips_every_part() {
    let batch = RecordBatch::parse(sample(), 1024).unwrap();
    assert_eq!(batch.count(), 3);
    assert_eq!((batch.first_timestamp(), batch.max_timestamp()), (0, 7));
    let records: Vec<Record> = batch.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(records[0].value, Bytes::from_static(b"v1"));
    assert_eq!(records[1].key, None);
    assert_eq!(
        records[1].headers,
        vec![("h".into(), Bytes::from_static(b"x"))]
    );
    assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
    assert_eq!(records[2].timestamp_ms, 7);
}

#[test]
fn every_truncation_and_extension_is_refused() {
    let bytes = sample();
    for len in 0..bytes.len() {
        assert!(
            RecordBatch::parse(bytes.slice(..len), 1024).is_err() || len == 0 || {
                // A cut exactly between records is a valid, shorter batch.
                RecordBatch::parse(bytes.slice(..len), 1024)
                    .unwrap()
                    .count()
                    < 3
            },
            "cut at {len}"
        );
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(RecordBatch::parse(Bytes::from(longer), 1024).is_err());
    assert_eq!(
        RecordBatch::parse(Bytes::new(), 1024),
        Err(BatchError::Empty)
    );
}

#[test]
fn damaged_lengths_never_panic() {
    let bytes = sample();
    for i in 0..bytes.len() {
        for v in [0u8, 1, 0x7f, 0xff] {
            let mut damaged = bytes.to_vec();
            damaged[i] = v;
            let damaged = Bytes::from(damaged);
            let _ = RecordBatch::parse(damaged.clone(), 1024);
            // A stored batch is read without parsing: iterating it must not panic either.
            let stored = RecordBatch::from_stored(damaged.clone(), Compression::None, 3, 0, 7);
            let _ = stored.records().count();
            let skipped = stored.skip(2);
            assert!(skipped.records().count() as u32 <= skipped.count());
            let _ = stored.stamp_append_time(9);
            // Also cut short, so that damaged lengths reach the end of the buffer.
            for len in [damaged.len() - 1, damaged.len() / 2] {
                let cut =
                    RecordBatch::from_stored(damaged.slice(..len), Compression::None, 3, 0, 7);
                let _ = cut.records().count();
                let _ = cut.stamp_append_time(9);
            }
        }
    }
}

#[test]
fn limits_counts_and_utf8() {
    assert!(matches!(
        RecordBatch::parse(sample(), 20),
        Err(BatchError::RecordTooLarge { record: 0, .. })
    ));
    assert!(matches!(
        RecordBatch::parse_counted(sample(), Compression::None, 2, 1 << 20, 1024),
        Err(BatchError::CountMismatch {
            declared: 2,
            found: 3
        })
    ));
    let mut b = BatchBuilder::default();
    b.push(1, None, b"", &[("n".to_string(), Bytes::new())]);
    let mut bad = b.finish().to_vec();
    let name_at = bad.len() - 4 - 1;
    bad[name_at] = 0xff;
    assert!(RecordBatch::parse(Bytes::from(bad), 1024).is_err());
}

#[test]
fn stamping_and_skipping() {
    let batch = RecordBatch::parse(sample(), 1024)
        .unwrap()
        .stamp_append_time(100);
    let ts: Vec<i64> = batch.records().map(|r| r.unwrap().timestamp_ms).collect();
    assert_eq!(ts, vec![5, 100, 7]);
    assert_eq!((batch.first_timestamp(), batch.max_timestamp()), (5, 100));
    let tail = batch.skip(2);
    assert_eq!(tail.count(), 1);
    let last = tail.records().next().unwrap().unwrap();
    assert_eq!(last.value, Bytes::from_static(b"value three"));
    assert_eq!(batch.skip(3).records().count(), 0);
    // A zero after a negative timestamp is stamped too.
    let mut b = BatchBuilder::default();
    b.push(-5, None, b"old", &[]);
    b.push(0, None, b"unset", &[]);
    let stamped = RecordBatch::parse(b.finish(), 1024)
        .unwrap()
        .stamp_append_time(100);
    let ts: Vec<i64> = stamped.records().map(|r| r.unwrap().timestamp_ms).collect();
    assert_eq!(ts, vec![-5, 100]);
    assert_eq!(
        (stamped.first_timestamp(), stamped.max_timestamp()),
        (-5, 100)
    );
    let first_record = batch.records().next().unwrap().unwrap();
    for (max, expect) in [
        (0, 1),
        (1, 1),
        (40, 1),
        (batch.len() - 1, 2),
        (batch.len(), 3),
    ] {
        let head = batch.truncate_to(max);
        assert_eq!(head.count(), expect, "max {max}");
        assert_eq!(head.records().count(), expect as usize);
        assert_eq!(head.records().next().unwrap().unwrap(), first_record);
    }
}

#[test]
fn travels_through_serde_and_is_checked_on_arrival() {
    let batch = RecordBatch::parse(sample(), 1024).unwrap();
    let wire = rmp_serde::to_vec(&batch).unwrap();
    let back: RecordBatch = rmp_serde::from_slice(&wire).unwrap();
    assert_eq!(back, batch);
    let garbage = rmp_serde::to_vec(&(0u8, serde_bytes_like(b"\x05\0\0\0abc"))).unwrap();
    assert!(rmp_serde::from_slice::<RecordBatch>(&garbage).is_err());
}

fn serde_bytes_like(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

fn stamped_sample() -> Bytes {
    let mut b = BatchBuilder::default();
    for i in 0..50u8 {
        b.push(1000 + i64::from(i), Some(b"key"), &[b'v'; 300], &[]);
    }
    b.finish()
}

#[test]
fn compressed_batches_round_trip_with_every_codec() {
    let plain = stamped_sample();
    let expected: Vec<Record> = RecordBatch::parse(plain.clone(), 1024)
        .unwrap()
        .records()
        .collect::<Result<_, _>>()
        .unwrap();
    for codec in [Compression::Lz4, Compression::Zstd] {
        let packed = codec.compress(&plain).unwrap();
        assert!(
            packed.len() < plain.len() / 4,
            "{codec:?}: {}",
            packed.len()
        );
        let batch = RecordBatch::parse_counted(packed.clone(), codec, 50, 1 << 20, 1024).unwrap();
        assert_eq!(batch.compression(), codec);
        assert_eq!(batch.bytes(), &packed);
        assert_eq!(
            (batch.first_timestamp(), batch.max_timestamp()),
            (1000, 1049)
        );
        let records: Vec<Record> = batch.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records, expected);
        // A reader's one-pass check-and-read gives the same records.
        let read: Vec<Record> = RecordBatch::read_counted(packed.clone(), codec, 50, 1 << 20, 1024)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, expected);
        assert!(RecordBatch::read_counted(packed.clone(), codec, 49, 1 << 20, 1024).is_err());
        // Indivisible: skip and truncate return it whole.
        assert_eq!(batch.skip(10), batch);
        assert_eq!(batch.truncate_to(10), batch);
        // Through serde too.
        let wire = rmp_serde::to_vec(&batch).unwrap();
        assert_eq!(rmp_serde::from_slice::<RecordBatch>(&wire).unwrap(), batch);
        // Over the plain-size limit, or one record too large: refused.
        assert!(matches!(
            RecordBatch::parse_compressed(packed.clone(), codec, plain.len() - 1, 1024),
            Err(BatchError::PlainTooLarge { .. })
        ));
        assert!(RecordBatch::parse_compressed(packed, codec, 1 << 20, 100).is_err());
    }
}

#[test]
fn damaged_or_lying_compressed_batches_are_refused() {
    let plain = stamped_sample();
    for codec in [Compression::Lz4, Compression::Zstd] {
        let packed = codec.compress(&plain).unwrap();
        for cut in [0, 3, packed.len() / 2, packed.len() - 1] {
            assert!(
                RecordBatch::parse_compressed(packed.slice(..cut), codec, 1 << 20, 1024).is_err(),
                "{codec:?} cut at {cut}"
            );
        }
        let mut flipped = packed.to_vec();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        // Damage is either refused or decodes to something that fails the record check;
        // it never panics.
        let _ = RecordBatch::parse_compressed(Bytes::from(flipped), codec, 1 << 20, 1024);
        // Compressed bytes read as another codec are refused.
        let other = if codec == Compression::Lz4 {
            Compression::Zstd
        } else {
            Compression::Lz4
        };
        assert!(RecordBatch::parse_compressed(packed, other, 1 << 20, 1024).is_err());
    }
    // An LZ4 batch that declares 1 GiB is refused before anything is allocated.
    let mut bomb = (1u32 << 30).to_le_bytes().to_vec();
    bomb.extend_from_slice(&[0u8; 16]);
    assert!(matches!(
        RecordBatch::parse_compressed(Bytes::from(bomb), Compression::Lz4, 1 << 20, 1024),
        Err(BatchError::PlainTooLarge { .. })
    ));
    // A zstd batch of 64 MiB of zeros stops at the limit.
    let bomb = Compression::Zstd.compress(&vec![0u8; 64 << 20]).unwrap();
    assert!(matches!(
        RecordBatch::parse_compressed(bomb, Compression::Zstd, 1 << 20, 1024),
        Err(BatchError::PlainTooLarge { .. })
    ));
    assert_eq!(Compression::parse("zstd"), Some(Compression::Zstd));
    assert_eq!(Compression::from_code(9), None);
}

#[test]
fn detached_batches_travel_beside_the_message_without_copies() {
    let a = batch_of(&[b"first"]);
    let b = batch_of(&[b"second", b"third"]);
    let message = (7u32, vec![a.clone(), b.clone()]);
    let (wire, payloads) = detached::detach(|| rmp_serde::to_vec(&message).unwrap());
    assert_eq!(payloads.len(), 2);
    assert_eq!(
        payloads[0].as_ptr(),
        a.bytes().as_ptr(),
        "detached, not copied"
    );
    // The encoding holds indices, not the records.
    assert!(wire.len() < 16, "{} bytes", wire.len());
    let back: (u32, Vec<RecordBatch>) =
        detached::attach(payloads.clone(), || rmp_serde::from_slice(&wire).unwrap());
    assert_eq!(back, message);
    assert_eq!(
        back.1[1].bytes().as_ptr(),
        b.bytes().as_ptr(),
        "attached, not copied"
    );
    // Outside of detach, a batch is inline again.
    let inline = rmp_serde::to_vec(&message).unwrap();
    assert!(inline.len() > a.bytes().len() + b.bytes().len());
    assert_eq!(
        rmp_serde::from_slice::<(u32, Vec<RecordBatch>)>(&inline).unwrap(),
        message
    );
}

#[test]
fn detached_indices_that_do_not_match_the_payloads_are_refused() {
    let a = batch_of(&[b"first"]);
    let (wire, payloads) =
        detached::detach(|| rmp_serde::to_vec(&vec![a.clone(), a.clone()]).unwrap());
    // Outside of attach.
    assert!(rmp_serde::from_slice::<Vec<RecordBatch>>(&wire).is_err());
    // Too few payloads.
    let short = vec![payloads[0].clone()];
    assert!(detached::attach(short, || rmp_serde::from_slice::<Vec<RecordBatch>>(&wire)).is_err());
    // One index twice.
    let twice = rmp_serde::to_vec(&vec![(0u8, 0u64), (0u8, 0u64)]).unwrap();
    assert!(
        detached::attach(
            payloads.clone(),
            || rmp_serde::from_slice::<Vec<RecordBatch>>(&twice)
        )
        .is_err()
    );
    // Garbage in a payload is checked like inline bytes.
    let garbage = vec![Bytes::from_static(b"\x05\0\0\0abc")];
    let one = rmp_serde::to_vec(&(0u8, 0u64)).unwrap();
    assert!(detached::attach(garbage, || rmp_serde::from_slice::<RecordBatch>(&one)).is_err());
}

#[test]
fn a_panicking_detach_leaves_the_thread_serializing_inline() {
    let a = batch_of(&[b"first"]);
    let caught = std::panic::catch_unwind(|| detached::detach(|| panic!("in serialize")));
    assert!(caught.is_err());
    let inline = rmp_serde::to_vec(&a).unwrap();
    assert_eq!(rmp_serde::from_slice::<RecordBatch>(&inline).unwrap(), a);
}

fn batch_of(values: &[&[u8]]) -> RecordBatch {
    let mut b = BatchBuilder::default();
    for value in values {
        b.push(1, None, value, &[]);
    }
    RecordBatch::parse(b.finish(), 1024).unwrap()
}
