//! What every client request is served with: the engine, the node's
//! identity, limits, Raft groups, gossip and the control range. Its own
//! module so the dispatcher and the watch server (which the dispatcher
//! hands watch requests to) both use it without importing each other.

use std::sync::Arc;

use crate::engine::Engine;
use crate::types::NodeInfo;

/// Shared request context.
pub(crate) struct Context {
    pub(crate) engine: Arc<Engine>,
    pub(crate) info: Arc<NodeInfo>,
    pub(crate) max_request_bytes: usize,
    pub(crate) rate_limit_rps: Option<u32>,
    /// The node's Raft groups.
    pub(crate) raft: Arc<crate::raft::RaftHost>,
    /// Gossip membership, when configured.
    pub(crate) membership: Option<crate::membership::Membership>,
    /// This node's replica of the control range, when configured.
    pub(crate) control: Option<Arc<crate::engine::control::ControlRange>>,
}
