//! Per-range Raft groups on openraft (pinned `=0.10.0-alpha.37`).
//!
//! Each key range of a region is one Raft group of that region's nodes. This
//! module holds the pieces a group is made of:
//!
//! - [`types`]: the type configuration (`RangeTypes`), the replicated
//!   command and reply, node and range descriptors.
//! - [`log_store`]: the Raft log and vote, kept by storage's
//!   [`RaftLog`](crate::storage::RaftLog) in keyspaces that share the node's
//!   journal with the MVCC data; this module keeps openraft's contract.
//! - [`state_machine`]: applies committed commands to the MVCC store with
//!   the same deterministic logic as the single-node writer
//!   ([`crate::decide`]), records the applied log id in the same
//!   atomic batch, and records / installs snapshots of the range.
//! - [`network`]: Raft RPCs over the peer protocol ([`crate::peer`]), one
//!   connection per peer shared by every group (openraft-multi's
//!   `GroupRouter`), AppendEntries capped in bytes.
//! - [`point`]: a snapshot is a point (log id, membership, timestamp),
//!   persisted, and materialised into a file only when a leader sends it.
//! - [`snapshot`]: the snapshot file format (written, shipped and installed
//!   in bounded memory) and [`transfer`]: streaming it to a peer in
//!   resumable chunks.
//! - [`host`]: the groups a node runs, and the receiving side of the RPCs.
//!
//! **Architecture Invariant:** apply is deterministic. The leader stamps a
//! command with its HLC when it proposes it; every replica applies it at
//! `max(proposed_at, last_applied_ts + 1)`, so all replicas write identical
//! versions even across leader changes, and versions in a range strictly
//! increase in log order.
//!
//! **Architecture Invariant:** a state machine writes its applied log id,
//! membership and last timestamp in the same fjall batch as the data it
//! applied, so a restart never re-applies an entry over its own effects.

pub mod host;
pub mod log_store;
pub mod network;
pub mod point;
pub mod reads;
pub mod snapshot;
pub mod state_machine;
pub mod transfer;
pub mod types;

pub use host::{RaftHost, RaftTiming, RangeGroup, RangeRaft};
pub use state_machine::ReplicationScope;
pub use types::{RaftNode, RangeCommand, RangeDescriptor, RangeId, RangeReply, RangeTypes};

#[cfg(test)]
mod storage_suite {
    //! openraft's own storage conformance suite, run against our log store
    //! and MVCC state machine.
    use std::sync::Arc;

    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::log_store::{LogSyncer, RangeLogStore};
    use super::state_machine::RangeStateMachine;
    use super::types::{RangeDescriptor, RangeTypes};
    use crate::clock::{Hlc, SystemClock};

    struct Builder;

    impl StoreBuilder<RangeTypes, RangeLogStore, RangeStateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, RangeLogStore, RangeStateMachine), StorageError<RangeTypes>>
        {
            let dir = tempfile::tempdir().unwrap();
            let store = crate::storage::open_for_tests(dir.path());
            let hlc = Arc::new(Hlc::open(SystemClock, store.clone(), 500, 1000).unwrap());
            let syncer = LogSyncer::start(&store).unwrap();
            let log = RangeLogStore::open(&store, 1, syncer).unwrap();
            let range = RangeDescriptor {
                id: 1,
                start: Vec::new(),
                end: None,
            };
            let sm = RangeStateMachine::open(range, store, hlc).unwrap();
            Ok((dir, log, sm))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite_passes() {
        Suite::test_all(Builder).await.unwrap();
    }
}
