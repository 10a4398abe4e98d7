//! The client handle: connections to brokers, the metadata cache and leader routing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use strait_proto::v1::admin_client::AdminClient;
use strait_proto::v1::strait_client::StraitClient;
use strait_proto::v1::{MetadataRequest, MetadataResponse};
use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;
use crate::session::{Fetch, Produce, Session, Sessions};
use crate::types::{BrokerInfo, TopicInfo};

/// Brokers asked at once for metadata; the newest answer wins.
const METADATA_FANOUT: usize = 3;
/// How long the other brokers may still answer once one has.
const METADATA_GRACE: Duration = Duration::from_millis(300);
/// Largest message the client accepts from a broker.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How to reach a cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Any subset of the brokers' addresses (`host:port`); the rest is discovered.
    pub bootstrap: Vec<String>,
    /// Deadline of a single request to a broker.
    pub request_timeout: Duration,
    /// Metadata older than this is refreshed before use.
    pub metadata_max_age: Duration,
}

impl ClientConfig {
    pub fn new<I, S>(bootstrap: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(30),
            metadata_max_age: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    pub(crate) brokers: HashMap<u64, BrokerInfo>,
    pub(crate) topics: HashMap<String, TopicInfo>,
    pub(crate) controller_id: Option<u64>,
    fetched_at: Option<Instant>,
    /// The brokers' metadata version: a refresh never installs an older one.
    version: u64,
}

struct Inner {
    config: ClientConfig,
    channels: Mutex<HashMap<String, Channel>>,
    produce_sessions: Sessions<Produce>,
    fetch_sessions: Sessions<Fetch>,
    metadata: RwLock<Arc<Snapshot>>,
}

/// A handle to a Strait cluster; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the cluster through `config.bootstrap` and loads its metadata.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        if config.bootstrap.is_empty() {
            return Err(ClientError::Config("the bootstrap list is empty".into()));
        }
        for addr in &config.bootstrap {
            if addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(ClientError::Config(format!("`{addr}` is not HOST:PORT")));
            }
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                channels: Mutex::new(HashMap::new()),
                produce_sessions: Sessions::default(),
                fetch_sessions: Sessions::default(),
                metadata: RwLock::new(Arc::new(Snapshot::default())),
            }),
        };
        client.refresh_metadata().await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ClientError::Config(format!("bad broker address `{addr}`: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            // HTTP/2's default 64 KiB windows throttle large batches and fetches.
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            // Fetch responses in large frames (see the constant).
            .max_frame_size(strait_proto::MAX_FRAME_BYTES)
            .timeout(self.inner.config.request_timeout + Duration::from_secs(35))
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub(crate) fn data_client(&self, addr: &str) -> Result<StraitClient<Channel>, ClientError> {
        Ok(StraitClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The produce session to `addr`, opened (again) when there is none or it ended.
    pub(crate) fn produce_session(&self, addr: &str) -> Result<Arc<Session<Produce>>, ClientError> {
        self.inner.produce_sessions.get(self, addr)
    }

    /// The fetch session to `addr`, opened (again) when there is none or it ended.
    pub(crate) fn fetch_session(&self, addr: &str) -> Result<Arc<Session<Fetch>>, ClientError> {
        self.inner.fetch_sessions.get(self, addr)
    }

    pub(crate) fn admin_client(&self, addr: &str) -> Result<AdminClient<Channel>, ClientError> {
        Ok(AdminClient::new(self.channel(addr)?).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Brokers worth asking, live ones first, then the bootstrap list.
    pub(crate) fn candidate_brokers(&self) -> Vec<String> {
        let snapshot = self.snapshot();
        let mut live: Vec<&BrokerInfo> = snapshot.brokers.values().filter(|b| b.alive).collect();
        live.sort_by_key(|b| b.id);
        let mut addrs: Vec<String> = live.iter().map(|b| b.addr.clone()).collect();
        for addr in &self.inner.config.bootstrap {
            if !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        addrs
    }

    async fn fetch_metadata(&self, addr: &str) -> Result<MetadataResponse, ClientError> {
        let mut request = tonic::Request::new(MetadataRequest { topics: vec![] });
        request.set_timeout(Duration::from_secs(5));
        self.data_client(addr)?
            .metadata(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ClientError::from_status(addr, &s))
    }

    /// Reloads the metadata: asks up to [`METADATA_FANOUT`] brokers at once and keeps
    /// the newest answer, so that a broker cut off from the controller (whose metadata
    /// stopped moving) cannot keep the client on a stale leader.
    pub async fn refresh_metadata(&self) -> Result<(), ClientError> {
        let mut candidates = self.candidate_brokers();
        let mut last = None;
        while !candidates.is_empty() {
            let batch: Vec<String> = candidates
                .drain(..METADATA_FANOUT.min(candidates.len()))
                .collect();
            let mut pending: FuturesUnordered<_> =
                batch.iter().map(|addr| self.fetch_metadata(addr)).collect();
            let mut newest: Option<MetadataResponse> = None;
            // Once one broker answered, the others get a short grace (a paused or
            // cut-off broker must not hold the refresh up for a whole request timeout).
            let mut grace: Option<tokio::time::Instant> = None;
            loop {
                let next = match grace {
                    None => pending.next().await,
                    Some(until) => match tokio::time::timeout_at(until, pending.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                };
                let Some(answer) = next else { break };
                match answer {
                    Ok(response) => {
                        grace.get_or_insert_with(|| tokio::time::Instant::now() + METADATA_GRACE);
                        if newest
                            .as_ref()
                            .is_none_or(|n| response.metadata_version > n.metadata_version)
                        {
                            newest = Some(response);
                        }
                    }
                    Err(err) => last = Some(err),
                }
            }
            if let Some(response) = newest {
                self.install_metadata(response);
                return Ok(());
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unavailable("no broker to ask".into())))
    }

    /// Installs `response` unless the cache holds newer metadata (then only marks the
    /// cache fresh).
    fn install_metadata(&self, response: MetadataResponse) {
        let mut current = self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if current.fetched_at.is_some() && response.metadata_version < current.version {
            let mut kept = (**current).clone();
            kept.fetched_at = Some(Instant::now());
            *current = Arc::new(kept);
            return;
        }
        let snapshot = Snapshot {
            brokers: response
                .brokers
                .into_iter()
                .map(|b| (b.id, b.into()))
                .collect(),
            topics: response
                .topics
                .into_iter()
                .map(|t| (t.name.clone(), TopicInfo::from(t)))
                .collect(),
            controller_id: response.controller_id,
            fetched_at: Some(Instant::now()),
            version: response.metadata_version,
        };
        *current = Arc::new(snapshot);
    }

    /// The cached metadata, refreshed first if it is older than `metadata_max_age`.
    pub(crate) async fn fresh_snapshot(&self) -> Result<Arc<Snapshot>, ClientError> {
        let stale = self
            .snapshot()
            .fetched_at
            .is_none_or(|t| t.elapsed() > self.inner.config.metadata_max_age);
        if stale {
            self.refresh_metadata().await?;
        }
        Ok(self.snapshot())
    }

    /// A topic's metadata, refreshing once if the cache does not know it.
    pub async fn topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        if let Some(topic) = self.fresh_snapshot().await?.topics.get(name) {
            return Ok(topic.clone());
        }
        self.refresh_metadata().await?;
        self.snapshot()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| ClientError::UnknownTopic(format!("unknown topic `{name}`")))
    }

    /// The number of partitions of `topic` (cheap: no clone of the topic's metadata).
    pub(crate) async fn partition_count(&self, name: &str) -> Result<u32, ClientError> {
        if let Some(topic) = self.fresh_snapshot().await?.topics.get(name) {
            return Ok(topic.partitions.len() as u32);
        }
        Ok(self.topic(name).await?.partitions.len() as u32)
    }

    /// The address of the leader of `topic`/`partition` according to the cache.
    pub(crate) async fn leader_addr(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<String, ClientError> {
        let info = self.topic(topic).await?;
        let p = info.partitions.get(partition as usize).ok_or_else(|| {
            ClientError::UnknownPartition(format!(
                "topic `{topic}` has {} partitions, not {}",
                info.partitions.len(),
                partition.saturating_add(1)
            ))
        })?;
        let leader = p.leader.ok_or_else(|| {
            ClientError::Unavailable(format!("{topic}/{partition} has no leader right now"))
        })?;
        self.snapshot()
            .brokers
            .get(&leader)
            .map(|b| b.addr.clone())
            .ok_or_else(|| {
                ClientError::Unavailable(format!(
                    "leader {leader} of {topic}/{partition} is unknown"
                ))
            })
    }

    /// Runs `call` against the leader of a partition, refreshing metadata and retrying
    /// retriable failures with backoff until `deadline`.
    pub(crate) async fn with_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut backoff = Duration::from_millis(20);
        loop {
            let result = match self.leader_addr(topic, partition).await {
                Ok(addr) => call(addr).await,
                Err(err) => Err(err),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(err) if err.is_retriable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(%topic, partition, %err, "retrying after refreshing metadata");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    // A failed refresh is retried on the next round.
                    let _ = self.refresh_metadata().await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}
