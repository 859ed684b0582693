//! Running this node's replica of the control range (`[control]`): its own
//! store (`<data_dir>/control`) and Raft host, the one-time bootstrap, and
//! the follower task that hands every policy change this replica applies
//! to the node's engine (so a change takes effect on every node without a
//! restart), seeds the table from `[replication]` once, and (on the
//! leader) adds the configured learners.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use crate::clock::Hlc;
use crate::config::control::ControlConfig;
use crate::config::replication::ReplicationConfig;
use crate::config::NodeConfig;
use crate::engine::control::{control_descriptor, ControlRange, CONTROL_RANGE_ID};
use crate::engine::{Engine, EngineOptions, Replicated};
use crate::raft::host::HostError;
use crate::raft::{RaftHost, RaftNode};
use crate::storage::{MvccStore, StoreOptions};

use super::StartError;

/// Longest the follower task sleeps without a change applied: it also
/// retries the seed and the learners this often.
pub const CONTROL_POLL: Duration = Duration::from_secs(1);

/// The control range's files, inside the node's data directory.
pub const CONTROL_DIR: &str = "control";

/// Opens the control store and host and starts the control group.
pub(crate) async fn start(
    cc: &ControlConfig,
    cfg: &NodeConfig,
    endpoint: &quinn::Endpoint,
    peer_config: quinn::ClientConfig,
    hlc: &Arc<Hlc>,
) -> Result<Arc<ControlRange>, StartError> {
    let store = MvccStore::open(StoreOptions {
        path: cfg.data_dir.join(CONTROL_DIR),
        fsync: cfg.fsync,
        // Policies are small: a fixed small cache.
        cache_bytes: 8 * 1024 * 1024,
    })?;
    let host = RaftHost::new(
        cc.node_id,
        endpoint.clone(),
        peer_config,
        store.clone(),
        hlc.clone(),
        &cc.timing,
    )?;
    for m in cc.members() {
        host.router().set_peer(m.id, m.addr);
    }
    host.open_range(control_descriptor()).await?;
    let host = Arc::new(host);
    let addrs: HashMap<u64, String> = cc.members().map(|m| (m.id, m.addr.to_string())).collect();
    let engine = Engine::start(
        store,
        hlc.clone(),
        EngineOptions {
            limits: cfg.limits,
            history_window: cfg.history_window,
            gc_interval: cfg.gc_interval,
            // The control range is a range of one "region": every node
            // reads and writes it through its leader, wherever that is.
            replication: ReplicationConfig::single_region(&cfg.region),
        },
        Replicated::new(host, vec![control_descriptor()], addrs),
    )?;
    Ok(Arc::new(ControlRange::new(
        engine,
        cfg.replication.table.clone(),
        cfg.raft.ranges.clone(),
    )))
}

/// With `bootstrap = true`, initialises the control group with its voters
/// unless it already exists (idempotent across restarts).
pub(crate) async fn bootstrap(control: &ControlRange, cc: &ControlConfig) -> Result<(), HostError> {
    if !cc.bootstrap {
        return Ok(());
    }
    let raft_err = |e: String| HostError::Raft {
        range: CONTROL_RANGE_ID,
        message: e,
    };
    let group = control.group().map_err(|e| raft_err(e.message))?;
    if group
        .raft
        .is_initialized()
        .await
        .map_err(|e| raft_err(e.to_string()))?
    {
        return Ok(());
    }
    let voters: BTreeMap<u64, RaftNode> =
        cc.voters.iter().map(|p| (p.id, p.node.clone())).collect();
    group
        .raft
        .initialize(voters)
        .await
        .map_err(|e| raft_err(e.to_string()))?;
    tracing::info!(voters = cc.voters.len(), "bootstrapped the control range");
    Ok(())
}

/// Follows the control range for the life of the node: installs every
/// table this replica applies into `engine`; on the leader, seeds the
/// table from `[replication]` (once, if none exists) and adds missing
/// learners.
pub(crate) fn spawn_follower(
    control: Arc<ControlRange>,
    cc: ControlConfig,
    engine: Arc<Engine>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut installed = 0u64;
        let mut warned_mismatch = false;
        loop {
            let Ok(group) = control.group() else { return };
            let applied = group.applied_changed().notified();
            match control.load_local() {
                Ok(Some(t)) if t.version > installed => match engine.install_policies(t.table) {
                    Ok(changed) => {
                        installed = t.version;
                        metrics::gauge!("meridian_control_policy_version").set(t.version as f64);
                        metrics::gauge!("meridian_control_handoffs_in_progress")
                            .set(t.handoffs.len() as f64);
                        if !t.handoffs.is_empty() {
                            tracing::warn!(
                                version = t.version,
                                handoffs = t.handoffs.len(),
                                "policy handoffs under way: their prefixes take no writes until each completes (repeat its `policy set` to resume a stuck one)"
                            );
                        }
                        if changed {
                            tracing::info!(
                                version = t.version,
                                "installed the control range's policy table"
                            );
                        }
                    }
                    Err(e) if !warned_mismatch => {
                        warned_mismatch = true;
                        tracing::error!(error = %e, "policy table not installed");
                    }
                    Err(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => {
                    if is_leader(&group, cc.node_id).await {
                        match control.seed().await {
                            Ok(true) => {
                                tracing::info!("seeded the control range from [replication]")
                            }
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "seeding the control range failed; retrying")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the control range failed"),
            }
            if is_leader(&group, cc.node_id).await {
                add_learners(&group, &cc).await;
            }
            let _ = tokio::time::timeout(CONTROL_POLL, applied).await;
        }
    })
}

async fn is_leader(group: &crate::raft::RangeGroup, id: u64) -> bool {
    group.current_leader() == Some(id)
}

/// Adds every configured learner the membership lacks (non-blocking: the
/// leader catches it up in the background).
async fn add_learners(group: &crate::raft::RangeGroup, cc: &ControlConfig) {
    let known: Vec<u64> = group
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    for l in cc.learners.iter().filter(|l| !known.contains(&l.id)) {
        match group.raft.add_learner(l.id, l.node.clone(), false).await {
            Ok(_) => {
                tracing::info!(learner = l.id, name = %l.node.name, "added a control range learner")
            }
            Err(e) => {
                tracing::debug!(learner = l.id, error = %e, "adding a control range learner failed; retrying");
                return;
            }
        }
    }
}
