//! Runs openraft's storage conformance suite against both groups' storage: the RocksDB
//! log store with the controller state machine, and the segmented partition log store
//! with the partition state machine, each in a temporary directory.

use std::sync::{Arc, RwLock};

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use strait_broker::controller::state_machine::ControllerStateMachine;
use strait_broker::controller::types::ControllerRaftConfig;
use strait_broker::metadata::MetadataCache;
use strait_broker::partition::state_machine::InstalledOffset;
use strait_broker::partition::types::PartitionRaftConfig;
use strait_broker::partition::{PartitionLogStore, PartitionStateMachine};
use strait_broker::storage::partition_log::log::{PartitionLog, RollPolicy, Verify};
use strait_broker::storage::partition_log::syncer::SegmentSyncer;
use strait_broker::storage::{GroupMeta, RaftLogStore, Store};

struct ControllerStores;
struct PartitionStores;

type Built<LS, SM> = (tempfile::TempDir, LS, SM);

fn open_store() -> Result<(tempfile::TempDir, Store), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("rocksdb")).map_err(std::io::Error::other)?;
    Ok((dir, store))
}

impl
    StoreBuilder<
        ControllerRaftConfig,
        RaftLogStore<ControllerRaftConfig>,
        ControllerStateMachine,
        tempfile::TempDir,
    > for ControllerStores
{
    async fn build(
        &self,
    ) -> Result<
        Built<RaftLogStore<ControllerRaftConfig>, ControllerStateMachine>,
        StorageError<ControllerRaftConfig>,
    > {
        let io = |e: std::io::Error| StorageError::read(ControllerRaftConfig::err_from_error(&e));
        let (dir, store) = open_store().map_err(io)?;
        let sm =
            ControllerStateMachine::open(store.clone(), MetadataCache::default()).map_err(io)?;
        Ok((dir, RaftLogStore::new(store, 0), sm))
    }
}

impl StoreBuilder<PartitionRaftConfig, PartitionLogStore, PartitionStateMachine, tempfile::TempDir>
    for PartitionStores
{
    async fn build(
        &self,
    ) -> Result<Built<PartitionLogStore, PartitionStateMachine>, StorageError<PartitionRaftConfig>>
    {
        let io = |e: std::io::Error| StorageError::read(PartitionRaftConfig::err_from_error(&e));
        let (dir, store) = open_store().map_err(io)?;
        let (log, _) = PartitionLog::open(
            &dir.path().join("segments"),
            RollPolicy::default(),
            Verify::ActiveSegment,
        )
        .map_err(io)?;
        let log = Arc::new(RwLock::new(log));
        let installed = InstalledOffset::default();
        let log_store = PartitionLogStore::new(
            log.clone(),
            GroupMeta::new(store.clone(), 7),
            SegmentSyncer::start(),
            installed.clone(),
            Default::default(),
        )
        .map_err(io)?;
        let (sm, _positions) =
            PartitionStateMachine::open(store, 7, installed, log, log_store.tail_cache())
                .map_err(io)?;
        Ok((dir, log_store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_storage_passes_the_openraft_suite()
-> Result<(), StorageError<ControllerRaftConfig>> {
    Suite::test_all(ControllerStores).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_storage_passes_the_openraft_suite()
-> Result<(), StorageError<PartitionRaftConfig>> {
    Suite::test_all(PartitionStores).await
}
