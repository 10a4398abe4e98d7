//! Administration: topics and the cluster's health.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strait_proto::v1::{
    AlterTopicConfigsRequest, CreateTopicRequest, DeleteTopicRequest, TopicMetadata,
};

use crate::client::Client;
use crate::error::ClientError;
use crate::types::{BrokerInfo, PartitionInfo, TopicInfo};

/// A topic with per-partition offsets (asked of each leader).
#[derive(Debug, Clone)]
pub struct TopicDescription {
    pub topic: TopicInfo,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone)]
pub struct PartitionDescription {
    pub info: PartitionInfo,
    /// `(log start offset, high watermark)`, or the error that prevented reading them.
    pub offsets: Result<(u64, u64), ClientError>,
}

/// What `strait cluster status` shows.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub brokers: Vec<BrokerInfo>,
    pub controller_id: Option<u64>,
    pub topics: Vec<TopicInfo>,
    /// `(topic, partition)` without a live leader.
    pub leaderless: Vec<(String, u32)>,
    /// `(topic, partition)` with a replica that is down or not in sync.
    pub under_replicated: Vec<(String, u32)>,
}

/// How long admin calls keep trying other brokers on transient errors.
const ADMIN_RETRY_WINDOW: Duration = Duration::from_secs(20);

impl Client {
    pub(crate) async fn with_any_broker<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + ADMIN_RETRY_WINDOW;
        loop {
            let mut last = ClientError::Unavailable("no broker to ask".into());
            for addr in self.candidate_brokers() {
                match call(addr).await {
                    Ok(value) => return Ok(value),
                    Err(err) if err.is_retriable() => last = err,
                    Err(err) => return Err(err),
                }
            }
            if Instant::now() > deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After a topic change: refresh the cache (best effort) and return the topic as the
    /// controller answered it.
    async fn topic_changed(&self, topic: Option<TopicMetadata>) -> Result<TopicInfo, ClientError> {
        let _ = self.refresh_metadata().await;
        topic
            .map(TopicInfo::from)
            .ok_or_else(|| ClientError::Internal("the broker returned no topic".into()))
    }

    /// Creates a topic; replicas are placed by the controller over the live brokers.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<TopicInfo, ClientError> {
        self.create_topic_with_configs(name, partitions, replication_factor, BTreeMap::new())
            .await
    }

    /// Creates a topic with config overrides (`segment.bytes`, `segment.ms`, ...).
    pub async fn create_topic_with_configs(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicInfo, ClientError> {
        let configs = &configs;
        let topic = self
            .with_any_broker(|addr| async move {
                let request = CreateTopicRequest {
                    name: name.to_string(),
                    partitions,
                    replication_factor,
                    configs: configs.clone().into_iter().collect(),
                };
                self.admin_client(&addr)?
                    .create_topic(request)
                    .await
                    .map(|r| r.into_inner().topic)
                    .map_err(|s| ClientError::from_status(&addr, &s))
            })
            .await?;
        self.topic_changed(topic).await
    }

    /// Sets and removes config overrides of a topic; returns the topic as changed.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    ) -> Result<TopicInfo, ClientError> {
        let (set, remove) = (&set, &remove);
        let topic = self
            .with_any_broker(|addr| async move {
                let request = AlterTopicConfigsRequest {
                    name: name.to_string(),
                    set: set.clone().into_iter().collect(),
                    remove: remove.clone(),
                };
                self.admin_client(&addr)?
                    .alter_topic_configs(request)
                    .await
                    .map(|r| r.into_inner().topic)
                    .map_err(|s| ClientError::from_status(&addr, &s))
            })
            .await?;
        self.topic_changed(topic).await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.with_any_broker(|addr| async move {
            self.admin_client(&addr)?
                .delete_topic(DeleteTopicRequest {
                    name: name.to_string(),
                })
                .await
                .map(|_| ())
                .map_err(|s| ClientError::from_status(&addr, &s))
        })
        .await?;
        let _ = self.refresh_metadata().await;
        Ok(())
    }

    /// Waits until every partition of `topic` has a live leader.
    pub async fn wait_for_leaders(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<TopicInfo, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.refresh_metadata().await?;
            // A broker that answers metadata may not have applied a just-created topic yet.
            match self.snapshot().topics.get(topic) {
                Some(info) if info.partitions.iter().all(|p| p.leader.is_some()) => {
                    return Ok(info.clone());
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout(format!(
                    "partitions of `{topic}` still without a leader after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        self.refresh_metadata().await?;
        let mut topics: Vec<TopicInfo> = self.snapshot().topics.values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        self.refresh_metadata().await?;
        let topic = self.topic(name).await?;
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let offsets = if p.leader.is_some() {
                self.list_offsets(name, p.partition).await
            } else {
                Err(ClientError::Unavailable("no leader".into()))
            };
            partitions.push(PartitionDescription {
                info: p.clone(),
                offsets,
            });
        }
        Ok(TopicDescription { topic, partitions })
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.refresh_metadata().await?;
        let snapshot = self.snapshot();
        let mut brokers: Vec<BrokerInfo> = snapshot.brokers.values().cloned().collect();
        brokers.sort_by_key(|b| b.id);
        let mut topics: Vec<TopicInfo> = snapshot.topics.values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let alive = |id: &u64| snapshot.brokers.get(id).is_some_and(|b| b.alive);
        let mut leaderless = Vec::new();
        let mut under_replicated = Vec::new();
        for topic in &topics {
            for p in &topic.partitions {
                if p.leader.is_none() {
                    leaderless.push((topic.name.clone(), p.partition));
                }
                if p.replicas.iter().any(|r| !alive(r) || !p.isr.contains(r)) {
                    under_replicated.push((topic.name.clone(), p.partition));
                }
            }
        }
        Ok(ClusterStatus {
            brokers,
            controller_id: snapshot.controller_id,
            topics,
            leaderless,
            under_replicated,
        })
    }
}
