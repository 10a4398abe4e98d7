//! Broker configuration: command-line flags and an equivalent TOML file, merged (flags
//! win) and validated once at start-up into [`BrokerConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::controller::topic_config::TopicConfig;
use serde::Deserialize;

/// A configuration problem; the broker refuses to start and prints it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("missing required setting `{0}` (flag --{0} or key `{0}` in the config file)")]
    Missing(&'static str),
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// One layer of settings; every field is optional so that a file and flags can be merged.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "strait-broker", version, about = "A Strait broker")]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BrokerArgs {
    /// TOML file with the same keys as the flags (`id`, `listen`, `seeds`, ...).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Unique, stable broker id (never reuse the id of a broker whose disk was lost).
    #[arg(long)]
    pub id: Option<u64>,
    /// gRPC listen address, e.g. 127.0.0.1:9701.
    #[arg(long)]
    pub listen: Option<String>,
    /// Address other brokers and clients use to reach this one [default: --listen].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory for all of this broker's data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated advertised addresses of the controller voters (same list on every broker).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Rack or zone label, reported in metadata.
    #[arg(long)]
    pub rack: Option<String>,
    /// Largest record (key + value + headers) accepted, in bytes [default: 1048576].
    #[arg(long)]
    pub max_record_bytes: Option<usize>,
    /// Largest produce request accepted, in bytes [default: 4194304].
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// A broker that has not heartbeated for this long is marked down [default: 6000].
    #[arg(long)]
    pub session_timeout_ms: Option<u64>,
    /// Default produce timeout when the request gives none [default: 30000].
    #[arg(long)]
    pub produce_timeout_ms: Option<u64>,
    /// Cluster default of the topic config `retention.ms` [default: 604800000, 7 days].
    #[arg(long, allow_hyphen_values = true)]
    pub retention_ms: Option<i64>,
    /// Cluster default of the topic config `retention.bytes` [default: -1, no limit].
    #[arg(long, allow_hyphen_values = true)]
    pub retention_bytes: Option<i64>,
    /// How often leaders look for segments to delete [default: 30000].
    #[arg(long)]
    pub retention_check_ms: Option<u64>,
    /// Reach a peer broker through another address: `ADDR=VIA` dials VIA whenever this
    /// broker connects to the peer advertised as ADDR (a proxy, a NAT, a tunnel).
    /// Repeatable; clients are not affected.
    #[arg(long = "peer-route", value_name = "ADDR=VIA")]
    pub peer_routes: Option<Vec<String>>,
    /// Partition groups that may replicate to one peer over a pipelined stream at once
    /// (each an HTTP/2 stream on a connection of its own); groups beyond it send one
    /// AppendEntries at a time. 0 turns pipelining off [default: 64, at most 190].
    #[arg(long)]
    pub replication_streams: Option<usize>,
    /// Write partition data with O_DIRECT, bypassing the page cache: appends wait in
    /// the broker's memory for the group commit, the newest MiB of each partition stays
    /// there for consumers, older data is read from the disk. Less CPU per byte, and no
    /// growing page cache, whose fresh pages are costly on virtual machines; false
    /// writes through the page cache [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub direct_io: Option<bool>,
    /// Threads running the broker's async work. Brokers sharing a machine (a local
    /// cluster) each do better with their share of its cores than with all of them
    /// [default: 0, one per core].
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// MiB of heap written once at start-up and kept for reuse, as the JVM's
    /// AlwaysPreTouch: the first buffers under load then cost no page faults. 0 leaves
    /// the allocator as it is [default: 64, at most 65536].
    #[arg(long)]
    pub pretouch_mib: Option<usize>,
}

impl BrokerArgs {
    /// Fills every unset field of `self` from `other`.
    fn or(self, other: BrokerArgs) -> BrokerArgs {
        BrokerArgs {
            config: self.config.or(other.config),
            id: self.id.or(other.id),
            listen: self.listen.or(other.listen),
            advertise: self.advertise.or(other.advertise),
            data_dir: self.data_dir.or(other.data_dir),
            seeds: self.seeds.or(other.seeds),
            rack: self.rack.or(other.rack),
            max_record_bytes: self.max_record_bytes.or(other.max_record_bytes),
            max_request_bytes: self.max_request_bytes.or(other.max_request_bytes),
            session_timeout_ms: self.session_timeout_ms.or(other.session_timeout_ms),
            produce_timeout_ms: self.produce_timeout_ms.or(other.produce_timeout_ms),
            retention_ms: self.retention_ms.or(other.retention_ms),
            retention_bytes: self.retention_bytes.or(other.retention_bytes),
            retention_check_ms: self.retention_check_ms.or(other.retention_check_ms),
            peer_routes: self.peer_routes.or(other.peer_routes),
            replication_streams: self.replication_streams.or(other.replication_streams),
            direct_io: self.direct_io.or(other.direct_io),
            worker_threads: self.worker_threads.or(other.worker_threads),
            pretouch_mib: self.pretouch_mib.or(other.pretouch_mib),
        }
    }
}

/// The validated configuration of a broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub id: u64,
    pub listen: SocketAddr,
    pub advertise: String,
    pub data_dir: PathBuf,
    pub seeds: Vec<String>,
    pub rack: String,
    pub max_record_bytes: usize,
    pub max_request_bytes: usize,
    pub session_timeout: Duration,
    pub produce_timeout: Duration,
    /// Topic configs of topics that do not override them.
    pub topic_defaults: TopicConfig,
    pub retention_check: Duration,
    /// Peer address → the address to dial instead.
    pub peer_routes: BTreeMap<String, String>,
    /// Replication streams open at once to one peer.
    pub replication_streams: usize,
    /// Partition appends bypass the page cache.
    pub direct_io: bool,
    /// Async worker threads (0: one per core).
    pub worker_threads: usize,
    /// MiB of heap touched at start-up (0: none).
    pub pretouch_mib: usize,
}

impl BrokerConfig {
    /// Reads the config file named by `args.config` (if any), overlays the flags and
    /// validates the result.
    pub fn load(args: BrokerArgs) -> Result<BrokerConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<BrokerArgs>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => BrokerArgs::default(),
        };
        Self::validate(args.or(file))
    }

    fn validate(args: BrokerArgs) -> Result<BrokerConfig, ConfigError> {
        let id = args.id.ok_or(ConfigError::Missing("id"))?;
        let listen_text = args.listen.ok_or(ConfigError::Missing("listen"))?;
        let listen: SocketAddr = listen_text.parse().map_err(|e| ConfigError::Invalid {
            key: "listen",
            message: format!("`{listen_text}` is not HOST:PORT with a numeric host ({e})"),
        })?;
        let advertise = args.advertise.unwrap_or_else(|| listen_text.clone());
        check_host_port("advertise", &advertise)?;
        let data_dir = args.data_dir.ok_or(ConfigError::Missing("data-dir"))?;
        let seeds: Vec<String> = args
            .seeds
            .ok_or(ConfigError::Missing("seeds"))?
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if seeds.is_empty() {
            return Err(ConfigError::Invalid {
                key: "seeds",
                message: "at least one seed address is needed".into(),
            });
        }
        for seed in &seeds {
            check_host_port("seeds", seed)?;
        }
        let max_record_bytes = args.max_record_bytes.unwrap_or(1024 * 1024);
        let max_request_bytes = args.max_request_bytes.unwrap_or(4 * 1024 * 1024);
        if max_record_bytes == 0 || max_record_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                key: "max-record-bytes",
                message: "must be between 1 and 16777216".into(),
            });
        }
        if max_request_bytes < max_record_bytes || max_request_bytes > 32 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                key: "max-request-bytes",
                message: "must be at least max-record-bytes and at most 33554432".into(),
            });
        }
        let session_timeout_ms = args.session_timeout_ms.unwrap_or(6000);
        if !(1000..=600_000).contains(&session_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "session-timeout-ms",
                message: "must be between 1000 and 600000".into(),
            });
        }
        let produce_timeout_ms = args.produce_timeout_ms.unwrap_or(30_000);
        if !(100..=600_000).contains(&produce_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "produce-timeout-ms",
                message: "must be between 100 and 600000".into(),
            });
        }
        let mut defaults = BTreeMap::new();
        if let Some(ms) = args.retention_ms {
            defaults.insert("retention.ms".to_string(), ms.to_string());
        }
        if let Some(bytes) = args.retention_bytes {
            defaults.insert("retention.bytes".to_string(), bytes.to_string());
        }
        let topic_defaults =
            TopicConfig::from_overrides(&defaults).map_err(|message| ConfigError::Invalid {
                key: "retention",
                message,
            })?;
        let retention_check_ms = args.retention_check_ms.unwrap_or(30_000);
        if !(100..=3_600_000).contains(&retention_check_ms) {
            return Err(ConfigError::Invalid {
                key: "retention-check-ms",
                message: "must be between 100 and 3600000".into(),
            });
        }
        let mut peer_routes = BTreeMap::new();
        for route in args.peer_routes.unwrap_or_default() {
            let bad = |message: String| ConfigError::Invalid {
                key: "peer-route",
                message,
            };
            let (addr, via) = route
                .split_once('=')
                .ok_or_else(|| bad(format!("`{route}` is not ADDR=VIA")))?;
            check_host_port("peer-route", addr)?;
            check_host_port("peer-route", via)?;
            if peer_routes
                .insert(addr.to_string(), via.to_string())
                .is_some()
            {
                return Err(bad(format!("`{addr}` is routed twice")));
            }
        }
        let replication_streams = args.replication_streams.unwrap_or(64);
        if replication_streams > 190 {
            // Below the 200 concurrent streams a broker accepts per connection.
            return Err(ConfigError::Invalid {
                key: "replication-streams",
                message: "must be at most 190".into(),
            });
        }
        let worker_threads = args.worker_threads.unwrap_or(0);
        if worker_threads > 1024 {
            return Err(ConfigError::Invalid {
                key: "worker-threads",
                message: "must be at most 1024".into(),
            });
        }
        let pretouch_mib = args.pretouch_mib.unwrap_or(64);
        if pretouch_mib > 65536 {
            return Err(ConfigError::Invalid {
                key: "pretouch-mib",
                message: "must be at most 65536".into(),
            });
        }
        Ok(BrokerConfig {
            id,
            listen,
            advertise,
            data_dir,
            seeds,
            rack: args.rack.unwrap_or_default(),
            max_record_bytes,
            max_request_bytes,
            session_timeout: Duration::from_millis(session_timeout_ms),
            produce_timeout: Duration::from_millis(produce_timeout_ms),
            topic_defaults,
            retention_check: Duration::from_millis(retention_check_ms),
            peer_routes,
            replication_streams,
            direct_io: args.direct_io.unwrap_or(true),
            worker_threads,
            pretouch_mib,
        })
    }

    /// Whether this broker is one of the controller voters named by `--seeds`.
    pub fn is_controller_voter(&self) -> bool {
        self.seeds.iter().any(|s| s == &self.advertise)
    }
}

fn check_host_port(key: &'static str, value: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::Invalid {
        key,
        message: format!("`{value}` {why}"),
    };
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad("is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(bad("has an empty host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("has an invalid port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> BrokerArgs {
        let mut argv = vec!["strait-broker"];
        argv.extend_from_slice(extra);
        BrokerArgs::parse_from(argv)
    }

    #[test]
    fn flags_make_a_valid_config() {
        let cfg = BrokerConfig::load(args(&[
            "--id=1",
            "--listen=127.0.0.1:9701",
            "--data-dir=/tmp/x",
            "--seeds=127.0.0.1:9701,127.0.0.1:9702",
        ]))
        .expect("valid");
        assert_eq!(cfg.advertise, "127.0.0.1:9701");
        assert_eq!(cfg.replication_streams, 64);
        assert!(cfg.direct_io);
        assert_eq!(cfg.worker_threads, 0);
        assert!(cfg.is_controller_voter());
        assert_eq!(cfg.seeds.len(), 2);
    }

    #[test]
    fn missing_id_is_refused() {
        let err = BrokerConfig::load(args(&[
            "--listen=127.0.0.1:1",
            "--data-dir=/x",
            "--seeds=a:1",
        ]))
        .expect_err("id missing");
        assert!(err.to_string().contains("`id`"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "id = 1\nlisten = \"127.0.0.1:1\"\nbogus = 3\n").expect("write");
        let err = BrokerConfig::load(args(&["--config", path.to_str().expect("utf8")]))
            .expect_err("unknown key");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn file_and_flags_merge_with_flags_winning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "id = 1\nlisten = \"127.0.0.1:9701\"\ndata-dir = \"/d\"\nseeds = [\"127.0.0.1:9701\"]\n",
        )
        .expect("write");
        let cfg = BrokerConfig::load(args(&["--config", path.to_str().expect("utf8"), "--id=7"]))
            .expect("valid");
        assert_eq!(cfg.id, 7);
        assert_eq!(cfg.listen.port(), 9701);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            ["--listen=nowhere", "--seeds=a:1"],
            ["--listen=127.0.0.1:1", "--seeds=a:0"],
            ["--listen=127.0.0.1:1", "--seeds=noport"],
            ["--listen=127.0.0.1:1", "--peer-route=a:1"],
            ["--listen=127.0.0.1:1", "--peer-route=a:1=b"],
            ["--listen=127.0.0.1:1", "--replication-streams=191"],
            ["--listen=127.0.0.1:1", "--worker-threads=100000"],
        ] {
            let mut a = vec!["--id=1", "--data-dir=/x"];
            a.extend_from_slice(&bad);
            if !a.iter().any(|f| f.starts_with("--seeds")) {
                a.push("--seeds=a:1");
            }
            assert!(BrokerConfig::load(args(&a)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn peer_routes_map_a_peer_address_to_the_one_dialled() {
        let cfg = BrokerConfig::load(args(&[
            "--id=1",
            "--listen=127.0.0.1:9701",
            "--data-dir=/x",
            "--seeds=127.0.0.1:9701,127.0.0.1:9702",
            "--peer-route=127.0.0.1:9702=127.0.0.1:19702",
        ]))
        .expect("valid");
        assert_eq!(
            cfg.peer_routes.get("127.0.0.1:9702").map(String::as_str),
            Some("127.0.0.1:19702")
        );
        let twice = BrokerConfig::load(args(&[
            "--id=1",
            "--listen=127.0.0.1:9701",
            "--data-dir=/x",
            "--seeds=127.0.0.1:9701",
            "--peer-route=127.0.0.1:9702=127.0.0.1:1",
            "--peer-route=127.0.0.1:9702=127.0.0.1:2",
        ]));
        assert!(twice.is_err());
    }
}
