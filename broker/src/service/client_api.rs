//! `strait.v1.Strait`: metadata, produce and fetch (unary and in sessions), producer ids
//! and list-offsets.

use std::sync::Arc;
use std::time::Duration;

use strait_proto::v1::strait_server::{Strait, StraitServer};
use strait_proto::v1::{
    FetchRequest, FetchResponse, FetchStreamReply, FetchStreamRequest, InitProducerRequest,
    InitProducerResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProduceStreamReply, ProduceStreamRequest,
    RecordBatch,
};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{
    broker_metadata, compression_from_wire, compression_to_wire, now_ms, topic_metadata,
};
use super::grpc_stream::{FastStreams, Handler, RequestStream, reply_stream};
use super::session;
use super::status::to_status;
use crate::controller::topic_config::TopicConfig;
use crate::controller::{Controller, admin};
use crate::error::BrokerError;
use crate::metadata::MetadataCache;
use crate::partition::PartitionRegistry;
use crate::partition::types::ProducerStamp;

pub struct ClientApi {
    pub cache: MetadataCache,
    pub controller: Controller,
    pub partitions: Arc<PartitionRegistry>,
    pub topic_defaults: TopicConfig,
    /// What produce sessions may hold at once, broker-wide.
    pub produce_budget: session::ProduceBudget,
}

impl ClientApi {
    /// The client API's service: tonic's, with produce sessions (every record produced)
    /// read without tonic's copy ([`grpc_stream`]). Requests over `max_request_bytes`
    /// are refused.
    pub fn into_service(self, max_request_bytes: usize) -> FastStreams<StraitServer<ClientApi>> {
        let (partitions, budget) = (self.partitions.clone(), self.produce_budget.clone());
        let produce_stream: Handler = Arc::new(move |request: http::Request<Body>| {
            let requests = RequestStream::new(request.into_body(), max_request_bytes);
            let replies = session::produce_session(partitions.clone(), budget.clone(), requests);
            Box::pin(std::future::ready(reply_stream(replies, MAX_REPLY_BYTES)))
        });
        let server = StraitServer::new(self)
            .max_decoding_message_size(max_request_bytes)
            .max_encoding_message_size(MAX_REPLY_BYTES);
        let path = format!("/{}/ProduceStream", StraitServer::<ClientApi>::NAME);
        FastStreams::new(server, [(path, produce_stream)])
    }
}

/// The largest reply the client API sends (a fetch's records, within its `max_bytes`).
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

#[tonic::async_trait]
impl Strait for ClientApi {
    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let request = request.into_inner();
        let image = self.cache.image();
        let state = &image.state;
        let mut topics = Vec::new();
        if request.topics.is_empty() {
            topics.extend(
                state
                    .topics
                    .values()
                    .map(|t| topic_metadata(state, t, &self.topic_defaults)),
            );
        } else {
            for name in &request.topics {
                let topic = state
                    .topics
                    .get(name)
                    .ok_or_else(|| to_status(BrokerError::UnknownTopic(name.clone())))?;
                topics.push(topic_metadata(state, topic, &self.topic_defaults));
            }
        }
        Ok(Response::new(MetadataResponse {
            brokers: broker_metadata(state),
            controller_id: self.controller.controller_id(),
            topics,
            cluster_id: String::new(),
            metadata_version: image.version,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        produce(&self.partitions, request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    type ProduceStreamStream = session::Replies<ProduceStreamReply>;

    /// A running broker serves this call through [`ClientApi::into_service`] (without
    /// tonic's copy); this is tonic's way to the same session.
    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceStreamRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        Ok(Response::new(session::produce_session(
            self.partitions.clone(),
            self.produce_budget.clone(),
            request.into_inner(),
        )))
    }

    async fn init_producer(
        &self,
        _request: Request<InitProducerRequest>,
    ) -> Result<Response<InitProducerResponse>, Status> {
        let producer_id = admin::allocate_producer_id(&self.controller)
            .await
            .map_err(to_status)?;
        Ok(Response::new(InitProducerResponse { producer_id }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        fetch(&self.partitions, request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    type FetchStreamStream = session::Replies<FetchStreamReply>;

    async fn fetch_stream(
        &self,
        request: Request<Streaming<FetchStreamRequest>>,
    ) -> Result<Response<Self::FetchStreamStream>, Status> {
        Ok(Response::new(session::fetch_session(
            self.partitions.clone(),
            request.into_inner(),
        )))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        let replica = self
            .partitions
            .get(&request.topic, request.partition)
            .map_err(to_status)?;
        let (log_start_offset, high_watermark) = replica.offsets().await.map_err(to_status)?;
        let timestamp_offset = match request.timestamp_ms {
            Some(ts) => replica.offset_for_timestamp(ts).await.map_err(to_status)?,
            None => None,
        };
        Ok(Response::new(ListOffsetsResponse {
            log_start_offset,
            high_watermark,
            timestamp_offset,
        }))
    }
}

/// Appends one produce request's batch (unary or in a session) and returns its offset.
pub(crate) async fn produce(
    partitions: &PartitionRegistry,
    request: ProduceRequest,
) -> Result<ProduceResponse, BrokerError> {
    let replica = partitions.get(&request.topic, request.partition)?;
    let append_time = now_ms();
    let timeout =
        (request.timeout_ms > 0).then(|| Duration::from_millis(request.timeout_ms.into()));
    let base_offset = replica
        .produce(
            request.records,
            compression_from_wire(request.compression)?,
            request.record_count,
            (request.producer_id != 0).then_some(ProducerStamp {
                producer_id: request.producer_id,
                base_sequence: request.base_sequence,
            }),
            append_time,
            timeout,
        )
        .await?;
    Ok(ProduceResponse {
        base_offset,
        log_append_time_ms: append_time as u64,
    })
}

/// Reads committed batches for one fetch request (unary or in a session), waiting up to
/// its `max_wait_ms` for records at its offset.
pub(crate) async fn fetch(
    partitions: &PartitionRegistry,
    request: FetchRequest,
) -> Result<FetchResponse, BrokerError> {
    let replica = partitions.get(&request.topic, request.partition)?;
    let fetched = replica
        .fetch(
            request.offset,
            request.max_bytes as usize,
            Duration::from_millis(request.max_wait_ms.into()),
        )
        .await?;
    Ok(FetchResponse {
        batches: fetched
            .batches
            .into_iter()
            .map(|(base_offset, batch)| RecordBatch {
                base_offset,
                record_count: batch.count(),
                compression: compression_to_wire(batch.compression()),
                records: batch.into_bytes(),
            })
            .collect(),
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
    })
}
