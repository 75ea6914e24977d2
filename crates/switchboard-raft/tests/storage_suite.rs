//! openraft's own storage conformance suite against the redb log store and the state-machine
//! adapter, each build in a fresh directory.

use openraft::testing::{StoreBuilder, Suite};
use switchboard_raft::{LogStore, StateMachineStore, StorageError, TypeConfig};
use tempfile::TempDir;

struct OnDisk;

fn io_error(e: impl std::fmt::Display) -> StorageError {
    openraft::StorageIOError::write(openraft::AnyError::error(e)).into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for OnDisk {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(io_error)?;
        let log = LogStore::open(&dir.path().join("raft.redb")).map_err(io_error)?;
        let sm = StateMachineStore::open(&dir.path().join("state")).map_err(io_error)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(OnDisk).expect("openraft storage suite");
}
