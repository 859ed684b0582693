//! Starting a node's Raft groups from `[raft]`: one group per configured
//! range, peers from the config, and the one-time bootstrap. A single node
//! is a region of one voter: it bootstraps its groups itself and waits,
//! bounded, until it leads them, so its first request finds a leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Hlc;
use crate::config::RaftConfig;
use crate::engine::Replicated;
use crate::raft::host::HostError;
use crate::raft::{RaftHost, RaftNode};
use crate::storage::MvccStore;

/// Creates the host, records every peer's address and opens every range.
pub(crate) async fn start_groups(
    rc: &RaftConfig,
    endpoint: &quinn::Endpoint,
    peer_config: quinn::ClientConfig,
    store: &MvccStore,
    hlc: &Arc<Hlc>,
    hints: Option<(crate::membership::Membership, String)>,
    scope: crate::raft::ReplicationScope,
) -> Result<Arc<RaftHost>, HostError> {
    let host = RaftHost::new(
        rc.node_id,
        endpoint.clone(),
        peer_config,
        store.clone(),
        hlc.clone(),
        &rc.timing,
    )?
    .with_scope(scope);
    for p in &rc.peers {
        host.router().set_peer(p.id, p.addr);
    }
    for range in &rc.ranges {
        host.open_range(range.clone()).await?;
    }
    host.spawn_metrics(hints);
    Ok(Arc::new(host))
}

/// The engine's routing over the configured ranges.
pub(crate) fn routing(host: &Arc<RaftHost>, rc: &RaftConfig) -> Replicated {
    let addrs: HashMap<u64, String> = rc
        .peers
        .iter()
        .map(|p| (p.id, p.addr.to_string()))
        .collect();
    Replicated::new(host.clone(), rc.ranges.clone(), addrs)
}

/// With `bootstrap = true`, initialises every group that is not yet
/// initialised with all peers as voters. Idempotent across restarts.
pub(crate) async fn bootstrap(host: &Arc<RaftHost>, rc: &RaftConfig) -> Result<(), HostError> {
    if !rc.bootstrap {
        return Ok(());
    }
    let members: BTreeMap<u64, RaftNode> =
        rc.peers.iter().map(|p| (p.id, p.node.clone())).collect();
    for group in host.groups() {
        let range = group.desc.id;
        let raft_err = |e: String| HostError::Raft { range, message: e };
        if group
            .raft
            .is_initialized()
            .await
            .map_err(|e| raft_err(e.to_string()))?
        {
            continue;
        }
        group
            .raft
            .initialize(members.clone())
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        tracing::info!(range, voters = members.len(), "bootstrapped range group");
    }
    if rc.single {
        wait_for_leadership(host, rc.node_id).await?;
    }
    Ok(())
}

/// Longest a single node waits to lead its groups at start: one election
/// timeout is enough (it is the only voter); this bounds a stuck start.
pub(crate) const SINGLE_NODE_ELECTION_WAIT: Duration = Duration::from_secs(10);

/// Waits until this node leads every group (a single node: it is the only
/// voter, so it elects itself within an election timeout).
async fn wait_for_leadership(host: &Arc<RaftHost>, id: u64) -> Result<(), HostError> {
    for group in host.groups() {
        let range = group.desc.id;
        group
            .raft
            .wait(Some(SINGLE_NODE_ELECTION_WAIT))
            .current_leader(id, "single node leads its range")
            .await
            .map_err(|e| HostError::Raft {
                range,
                message: format!("a single node did not become leader of its range: {e}"),
            })?;
    }
    Ok(())
}
