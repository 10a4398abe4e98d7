//! Runs openraft's storage conformance suite against the broker's log store and both
//! state machines, each on a fresh RocksDB in a temporary directory.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use strait_broker::controller::state_machine::ControllerStateMachine;
use strait_broker::controller::types::ControllerRaftConfig;
use strait_broker::metadata::MetadataCache;
use strait_broker::partition::PartitionStateMachine;
use strait_broker::partition::types::PartitionRaftConfig;
use strait_broker::storage::{RaftLogStore, Store};

struct ControllerStores;
struct PartitionStores;

fn open_store() -> Result<(tempfile::TempDir, Store), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path()).map_err(std::io::Error::other)?;
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
        (
            tempfile::TempDir,
            RaftLogStore<ControllerRaftConfig>,
            ControllerStateMachine,
        ),
        StorageError<ControllerRaftConfig>,
    > {
        let (dir, store) = open_store()
            .map_err(|e| StorageError::read(ControllerRaftConfig::err_from_error(&e)))?;
        let sm = ControllerStateMachine::open(store.clone(), MetadataCache::default())
            .map_err(|e| StorageError::read(ControllerRaftConfig::err_from_error(&e)))?;
        Ok((dir, RaftLogStore::new(store, 0), sm))
    }
}

impl
    StoreBuilder<
        PartitionRaftConfig,
        RaftLogStore<PartitionRaftConfig>,
        PartitionStateMachine,
        tempfile::TempDir,
    > for PartitionStores
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            RaftLogStore<PartitionRaftConfig>,
            PartitionStateMachine,
        ),
        StorageError<PartitionRaftConfig>,
    > {
        let (dir, store) = open_store()
            .map_err(|e| StorageError::read(PartitionRaftConfig::err_from_error(&e)))?;
        let (sm, _index) = PartitionStateMachine::new();
        Ok((dir, RaftLogStore::new(store, 7), sm))
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
