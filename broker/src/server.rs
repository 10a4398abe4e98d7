//! Wires a broker together and runs it until SIGINT/SIGTERM: storage, the controller
//! group (on seed brokers), the partition registry, background loops and the gRPC server.

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use openraft::async_runtime::watch::WatchReceiver;
use strait_proto::internal::controller_server::ControllerServer;
use strait_proto::v1::admin_server::AdminServer;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::config::BrokerConfig;
use crate::controller::bootstrap::form_controller_group;
use crate::controller::heartbeat::{Announcement, run_heartbeats};
use crate::controller::liveness::{Liveness, run_fencer};
use crate::controller::state::ControllerCommand;
use crate::controller::state_machine::ControllerStateMachine;
use crate::controller::{Controller, ControllerRaft};
use crate::metadata::MetadataCache;
use crate::partition::{Limits, PartitionRegistry, PartitionStorage};
use crate::raft::{GroupNetworkFactory, PeerPool, controller_config};
use crate::service::admin_api::AdminApi;
use crate::service::client_api::ClientApi;
use crate::service::controller_api::ControllerApi;
use crate::service::raft_transport::RaftTransportApi;
use crate::storage::{RaftLogStore, Store, StoreError};

/// Why a broker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening storage: {0}")]
    Store(#[from] StoreError),
    #[error("loading controller state: {0}")]
    ControllerState(std::io::Error),
    #[error("starting the controller group: {0}")]
    Raft(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// How often a broker heartbeats the controller.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1000);
/// Bound on each step of a controlled shutdown.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(3);
/// How often leaders check whether a preferred replica should lead again.
const LEADER_REBALANCE_INTERVAL: Duration = Duration::from_secs(30);
/// Largest message the client-facing services decode (a produce request plus framing).
const CLIENT_MESSAGE_SLACK: usize = 1024 * 1024;
/// HTTP/2 flow-control window of one stream (request), in both directions.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// HTTP/2 flow-control window of one connection: what a peer may have in flight.
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Concurrent requests one connection may have open.
const MAX_STREAMS_PER_CONNECTION: u32 = 200;

pub async fn run(config: BrokerConfig) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
    let store = Store::open(&config.data_dir.join("rocksdb"))?;
    let cache = MetadataCache::default();
    let peers = PeerPool::new(config.peer_routes.clone(), config.replication_streams);
    let (shutdown_tx, shutdown) = watch::channel(false);

    let voter = config.is_controller_voter();
    let controller_raft = if voter {
        Some(start_controller_group(&config, &store, &cache, &peers).await?)
    } else {
        None
    };
    let controller = Controller::new(
        config.id,
        controller_raft.clone(),
        cache.clone(),
        peers.clone(),
        config.seeds.clone(),
    );
    let limits = Limits {
        max_record_bytes: config.max_record_bytes,
        max_request_bytes: config.max_request_bytes,
        produce_timeout: config.produce_timeout,
    };
    if config.direct_io {
        crate::storage::partition_log::prefill_chunk_pool();
    }
    let partitions = Arc::new(PartitionRegistry::new(
        config.id,
        store.clone(),
        PartitionStorage {
            dir: config.data_dir.join("partitions"),
            direct_io: config.direct_io,
        },
        peers.clone(),
        cache.clone(),
        limits,
        config.topic_defaults,
    ));
    let liveness = Arc::new(Liveness::default());
    let roles = if voter {
        vec!["controller".to_string(), "broker".to_string()]
    } else {
        vec!["broker".to_string()]
    };

    if let Some(raft) = &controller_raft {
        tokio::spawn(form_controller_group(
            raft.clone(),
            config.id,
            config.advertise.clone(),
            config.seeds.clone(),
            peers.clone(),
        ));
    }
    tokio::spawn(run_fencer(
        controller.clone(),
        liveness.clone(),
        config.session_timeout,
        shutdown.clone(),
    ));
    // Heartbeats stop first on shutdown, so that deregistration is not undone by them.
    let (draining_tx, draining) = watch::channel(false);
    tokio::spawn(run_heartbeats(
        controller.clone(),
        partitions.clone(),
        Announcement {
            broker_id: config.id,
            addr: config.advertise.clone(),
            roles,
            rack: config.rack.clone(),
        },
        HEARTBEAT_INTERVAL,
        draining,
    ));
    tokio::spawn(run_leader_rebalancer(partitions.clone(), shutdown.clone()));
    tokio::spawn(
        partitions
            .clone()
            .run_retention(config.retention_check, shutdown.clone()),
    );
    tokio::spawn(sync_peer_addresses(
        cache.clone(),
        peers.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(partitions.clone().run_repairs(shutdown.clone()));
    tokio::spawn(partitions.clone().run_liveness(shutdown.clone()));
    let reconciler = tokio::spawn(partitions.clone().run_reconciler(shutdown.clone()));

    let client_limit = config.max_request_bytes + CLIENT_MESSAGE_SLACK;
    let server = tonic::transport::Server::builder()
        // HTTP/2's default 64 KiB windows would make a 512 KiB produce or a replication
        // message wait for several window updates; these bound what one peer may send
        // ahead of the broker reading it.
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(Some(strait_proto::MAX_FRAME_BYTES))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_service(
            ClientApi {
                cache: cache.clone(),
                controller: controller.clone(),
                partitions: partitions.clone(),
                topic_defaults: config.topic_defaults,
                produce_budget: Default::default(),
            }
            .into_service(client_limit),
        )
        .add_service(AdminServer::new(AdminApi {
            controller: controller.clone(),
            topic_defaults: config.topic_defaults,
        }))
        .add_service(
            RaftTransportApi {
                controller: controller_raft.clone(),
                partitions: partitions.clone(),
                shutdown: shutdown.clone(),
            }
            .into_service(),
        )
        .add_service(
            ControllerServer::new(ControllerApi {
                broker_id: config.id,
                advertise: config.advertise.clone(),
                controller: controller.clone(),
                liveness,
            })
            .max_encoding_message_size(64 * 1024 * 1024),
        );
    tracing::info!(
        id = config.id,
        listen = %config.listen,
        advertise = %config.advertise,
        voter,
        "broker started"
    );
    let mut stop = shutdown.clone();
    // The builder's tcp_nodelay applies only to listeners tonic binds itself: without
    // it here, Nagle's algorithm and delayed ACKs stalled small replies by 40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serve = server.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let (drain_controller, drain_partitions, broker_id) =
        (controller.clone(), partitions.clone(), config.id);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: handing off leaderships and deregistering");
        let _ = draining_tx.send(true);
        controlled_shutdown(&drain_controller, &drain_partitions, broker_id).await;
        let _ = shutdown_tx.send(true);
    });
    let result = serve.await;
    let _ = reconciler.await;
    if let Some(raft) = controller_raft
        && let Err(err) = raft.shutdown().await
    {
        tracing::warn!(%err, "controller group did not stop cleanly");
    }
    // Whatever was acknowledged was synced already; this only closes files tidily.
    let _ = store.flusher().sync().await;
    tracing::info!("broker stopped");
    result.map_err(ServerError::from)
}

/// Kafka's controlled shutdown: mark this broker down in the controller, move its
/// partition leaderships to caught-up peers, then give up controller leadership. Each step
/// is bounded so that shutdown finishes even when peers are gone.
async fn controlled_shutdown(
    controller: &Controller,
    partitions: &PartitionRegistry,
    broker_id: u64,
) {
    let image = controller.cache.image();
    let peers_alive = image
        .state
        .brokers
        .values()
        .any(|b| b.alive && b.id != broker_id);
    if !peers_alive {
        // Last broker standing: nobody to hand off to, and no quorum to deregister with.
        return;
    }
    // Deregister first, so that no peer moves a preferred leadership back to this broker.
    let deregister = controller.propose(ControllerCommand::FenceBrokers {
        ids: vec![broker_id],
    });
    match tokio::time::timeout(HANDOFF_TIMEOUT, deregister).await {
        Ok(Ok(_)) => tracing::info!("deregistered from the controller"),
        Ok(Err(err)) => tracing::warn!(%err, "could not deregister"),
        Err(_) => tracing::warn!("deregistration timed out"),
    }
    partitions.hand_off_leadership(HANDOFF_TIMEOUT).await;
    controller.hand_off_leadership(HANDOFF_TIMEOUT).await;
}

/// Every few seconds, move led partitions back to their preferred replicas.
async fn run_leader_rebalancer(
    partitions: Arc<PartitionRegistry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(LEADER_REBALANCE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        partitions.restore_preferred_leaders().await;
    }
}

async fn start_controller_group(
    config: &BrokerConfig,
    store: &Store,
    cache: &MetadataCache,
    peers: &PeerPool,
) -> Result<ControllerRaft, ServerError> {
    let sm = ControllerStateMachine::open(store.clone(), cache.clone())
        .map_err(ServerError::ControllerState)?;
    let log = RaftLogStore::new(store.clone(), 0);
    let network = GroupNetworkFactory::new(0, peers.clone());
    let raft = Raft::new(config.id, controller_config(), network, log, sm)
        .await
        .map_err(|e| ServerError::Raft(e.to_string()))?;
    // Voters learn who leads from their own group (its server metrics change only with
    // the vote, the role, the leader or the membership).
    let watch_cache = cache.clone();
    let mut metrics = raft.server_metrics();
    tokio::spawn(async move {
        loop {
            let leader = metrics.borrow_watched().current_leader;
            watch_cache.set_controller(leader);
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(raft)
}

/// Keeps the Raft network's broker addresses in line with the registry.
async fn sync_peer_addresses(
    cache: MetadataCache,
    peers: PeerPool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut images = cache.subscribe();
    loop {
        let image = images.borrow_and_update().clone();
        peers.set_addresses(image.state.brokers.values().map(|b| (b.id, b.addr.clone())));
        tokio::select! {
            changed = images.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
