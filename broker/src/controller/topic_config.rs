//! Per-topic configuration: the keys a topic accepts (Kafka's names), their validation
//! and defaults. Validation is deterministic, so the controller re-checks it when it
//! applies a command.

use std::collections::BTreeMap;

/// Bounds of `segment.bytes`.
const SEGMENT_BYTES_RANGE: (u64, u64) = (4096, 1 << 30);
/// Smallest `segment.ms`.
const MIN_SEGMENT_MS: i64 = 1000;

/// The effective configuration of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    /// Roll the active segment once it holds this many bytes.
    pub segment_bytes: u64,
    /// Roll the active segment once its first record is this old.
    pub segment_ms: i64,
    /// Delete a sealed segment once its newest record is this old (-1: never).
    pub retention_ms: i64,
    /// Delete the oldest sealed segments while the log is larger than this (-1: no limit).
    pub retention_bytes: i64,
    /// When a replica reports an append durable to Raft.
    pub flush: Flush,
}

/// The `flush` policy: whether acknowledgement waits for fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flush {
    /// Every replica counted in the majority has fsync'd the batch before it is
    /// acknowledged (the default): no acknowledged record is lost to any crash.
    #[default]
    Sync,
    /// A replica counts a batch once it is written to its file; the fdatasync follows
    /// at once, in the background. Survives `kill -9` of any number of brokers (the
    /// page cache is the kernel's), but a power loss of a majority can lose the last
    /// acknowledged batches. Chosen per topic, explicitly.
    Async,
}

impl Flush {
    fn parse(value: &str) -> Result<Flush, String> {
        match value {
            "sync" => Ok(Flush::Sync),
            "async" => Ok(Flush::Async),
            other => Err(format!("flush must be `sync` or `async`, not `{other}`")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Flush::Sync => "sync",
            Flush::Async => "async",
        }
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            segment_bytes: 256 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            flush: Flush::Sync,
        }
    }
}

/// Every key a topic accepts.
pub const KEYS: [&str; 5] = [
    "flush",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

impl TopicConfig {
    /// The defaults overridden by `overrides`; an unknown key or a bad value is an error
    /// naming it.
    pub fn from_overrides(overrides: &BTreeMap<String, String>) -> Result<TopicConfig, String> {
        TopicConfig::default().overridden(overrides)
    }

    /// `self` (the cluster defaults) overridden by a topic's `overrides`.
    pub fn overridden(&self, overrides: &BTreeMap<String, String>) -> Result<TopicConfig, String> {
        let mut config = *self;
        for (key, value) in overrides {
            match key.as_str() {
                "segment.bytes" => {
                    let v: u64 = value.parse().map_err(|_| {
                        format!("segment.bytes must be a number of bytes, not `{value}`")
                    })?;
                    if !(SEGMENT_BYTES_RANGE.0..=SEGMENT_BYTES_RANGE.1).contains(&v) {
                        return Err(format!(
                            "segment.bytes must be between {} and {}",
                            SEGMENT_BYTES_RANGE.0, SEGMENT_BYTES_RANGE.1
                        ));
                    }
                    config.segment_bytes = v;
                }
                "flush" => config.flush = Flush::parse(value)?,
                "segment.ms" => {
                    let v: i64 = value.parse().map_err(|_| {
                        format!("segment.ms must be a number of milliseconds, not `{value}`")
                    })?;
                    if v < MIN_SEGMENT_MS {
                        return Err(format!("segment.ms must be at least {MIN_SEGMENT_MS}"));
                    }
                    config.segment_ms = v;
                }
                "retention.ms" | "retention.bytes" => {
                    let v: i64 = value.parse().map_err(|_| {
                        format!("{key} must be a number (-1 for no limit), not `{value}`")
                    })?;
                    if v < -1 {
                        return Err(format!("{key} must be -1 (no limit) or at least 0"));
                    }
                    if key == "retention.ms" {
                        config.retention_ms = v;
                    } else {
                        config.retention_bytes = v;
                    }
                }
                other => {
                    return Err(format!(
                        "unknown topic config `{other}` (known: {})",
                        KEYS.join(", ")
                    ));
                }
            }
        }
        Ok(config)
    }

    /// Every key with its effective value, for `describe`.
    pub fn effective(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("flush".to_string(), self.flush.as_str().to_string()),
            (
                "retention.bytes".to_string(),
                self.retention_bytes.to_string(),
            ),
            ("retention.ms".to_string(), self.retention_ms.to_string()),
            ("segment.bytes".to_string(), self.segment_bytes.to_string()),
            ("segment.ms".to_string(), self.segment_ms.to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_apply_over_defaults() {
        let config =
            TopicConfig::from_overrides(&overrides(&[("segment.bytes", "8192")])).expect("valid");
        assert_eq!(config.segment_bytes, 8192);
        assert_eq!(config.segment_ms, TopicConfig::default().segment_ms);
        assert_eq!(config.effective()["segment.bytes"], "8192");
    }

    #[test]
    fn bad_keys_and_values_are_refused_with_their_name() {
        for (k, v) in [
            ("bogus", "1"),
            ("segment.bytes", "abc"),
            ("segment.bytes", "1"),
            ("segment.ms", "5"),
            ("retention.ms", "-7"),
            ("retention.bytes", "lots"),
            ("flush", "sometimes"),
        ] {
            let err = TopicConfig::from_overrides(&overrides(&[(k, v)])).expect_err("refused");
            assert!(err.contains(k), "{err}");
        }
    }
}
