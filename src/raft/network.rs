//! Raft RPCs over the node's QUIC endpoint.
//!
//! [`PeerRouter`] implements openraft-multi's `GroupRouter`: every group on
//! this node sends through it, and it keeps **one QUIC connection per peer**
//! (mutual TLS with node certificates), opening one bidirectional stream per
//! RPC. The group (range) id travels in the frame ([`crate::wire::RaftRpcV1`]).
//!
//! Failures map onto openraft's error kinds: no connection or a broken
//! stream is `Unreachable` (openraft backs off), an expired deadline is
//! `Timeout`, and an error the remote group reported (for example it is shut
//! down) is `Unreachable` too, since the network traits cannot carry remote
//! errors.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::errors::{
    Fatal, RPCError, RaftError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::OptionalSend;
use openraft_multi::{GroupNetworkAdapter, GroupNetworkFactory, GroupRouter};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{NodeId, RaftNode, RangeId, RangeTypes};
use crate::transport;
use crate::wire::{self, RaftRpcKindV1, RaftRpcV1, RequestV1, ResponseBodyV1, ResponseV1};

/// Largest Raft RPC reply a node reads (a vote or append result is tiny; a
/// snapshot reply too). Requests (appends, snapshots) are bounded by the
/// receiver's `max_request_bytes`.
const MAX_RAFT_REPLY_BYTES: usize = 1024 * 1024;

/// A network failure, as openraft's error constructors want an `Error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetError(String);

type Snapshot = SnapshotOf<RangeTypes, Vec<u8>>;

/// Sends Raft RPCs for every group of this node. Cheap to clone.
#[derive(Clone)]
pub struct PeerRouter {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    peers: RwLock<HashMap<NodeId, SocketAddr>>,
    conns: tokio::sync::Mutex<HashMap<NodeId, quinn::Connection>>,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, NetError> {
    postcard::to_allocvec(v).map_err(|e| NetError(format!("encode: {e}")))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, NetError> {
    postcard::from_bytes(b).map_err(|e| NetError(format!("decode: {e}")))
}

impl PeerRouter {
    /// A router sending from `endpoint` (which must present a node certificate).
    pub fn new(endpoint: quinn::Endpoint) -> PeerRouter {
        PeerRouter {
            inner: Arc::new(Inner {
                endpoint,
                peers: RwLock::new(HashMap::new()),
                conns: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Records (or changes) where peer `id` listens.
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        if let Ok(mut peers) = self.inner.peers.write() {
            peers.insert(id, addr);
        }
    }

    fn peer_addr(&self, id: NodeId) -> Result<SocketAddr, NetError> {
        let peers = self
            .inner
            .peers
            .read()
            .map_err(|_| NetError("peer table poisoned".into()))?;
        peers
            .get(&id)
            .copied()
            .ok_or_else(|| NetError(format!("no address known for node {id}")))
    }

    async fn connection(&self, target: NodeId) -> Result<quinn::Connection, NetError> {
        {
            let conns = self.inner.conns.lock().await;
            if let Some(c) = conns.get(&target).filter(|c| c.close_reason().is_none()) {
                return Ok(c.clone());
            }
        }
        // Connect without holding the table lock: a dead peer's handshake
        // must not stall RPCs (heartbeats!) to live peers. Two concurrent
        // connects to one peer are harmless; the later one is kept.
        let addr = self.peer_addr(target)?;
        let conn = transport::connect(&self.inner.endpoint, addr, None)
            .await
            .map_err(|e| NetError(format!("connect to node {target} at {addr}: {e}")))?;
        self.inner.conns.lock().await.insert(target, conn.clone());
        Ok(conn)
    }

    /// One RPC: a stream, a request frame, a reply frame.
    async fn call(
        &self,
        target: NodeId,
        range: RangeId,
        kind: RaftRpcKindV1,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let conn = self.connection(target).await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| NetError(format!("open stream to node {target}: {e}")))?;
        let frame = wire::encode_request(&RequestV1::Raft(RaftRpcV1 {
            range,
            kind,
            payload,
        }));
        transport::write_frame(&mut send, &frame)
            .await
            .map_err(|e| NetError(format!("send to node {target}: {e}")))?;
        let _ = send.finish();
        let reply = transport::read_frame(&mut recv, MAX_RAFT_REPLY_BYTES)
            .await
            .map_err(|e| NetError(format!("reply from node {target}: {e}")))?;
        match wire::decode_response(&reply).map_err(|e| NetError(e.to_string()))? {
            ResponseV1::Ok {
                body: ResponseBodyV1::Raft(bytes),
                ..
            } => Ok(bytes),
            ResponseV1::Ok { body, .. } => Err(NetError(format!("unexpected reply {body:?}"))),
            ResponseV1::Err { code, message } => {
                Err(NetError(format!("node {target} refused: {code} {message}")))
            }
            ResponseV1::NotLeader { message, .. } => {
                Err(NetError(format!("node {target}: {message}")))
            }
        }
    }

    /// An RPC whose reply is `Result<Resp, E>` (E: the remote group's error),
    /// with openraft's deadline.
    async fn unary<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::fmt::Display,
    >(
        &self,
        target: NodeId,
        range: RangeId,
        kind: RaftRpcKindV1,
        rpc_type: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<RangeTypes>> {
        let unreachable = |e: NetError| RPCError::Unreachable(Unreachable::new(&e));
        let payload = encode(req).map_err(unreachable)?;
        let ttl = option.soft_ttl();
        let bytes = match tokio::time::timeout(ttl, self.call(target, range, kind, payload)).await {
            Ok(r) => r.map_err(unreachable)?,
            Err(_) => return Err(RPCError::Timeout(timeout(rpc_type, target, ttl))),
        };
        let result: Result<Resp, E> = decode(&bytes).map_err(unreachable)?;
        result.map_err(|e| unreachable(NetError(format!("remote group error: {e}"))))
    }
}

fn timeout(action: RPCTypes, target: NodeId, ttl: Duration) -> Timeout<RangeTypes> {
    Timeout {
        action,
        id: target,
        target,
        timeout: ttl,
    }
}

impl GroupRouter<RangeTypes, RangeId> for PeerRouter {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &self,
        target: NodeId,
        group_id: RangeId,
        rpc: AppendEntriesRequest<RangeTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RangeTypes>, RPCError<RangeTypes>> {
        let kind = RaftRpcKindV1::AppendEntries;
        self.unary::<_, _, RaftError<RangeTypes>>(
            target,
            group_id,
            kind,
            RPCTypes::AppendEntries,
            &rpc,
            &option,
        )
        .await
    }

    async fn vote(
        &self,
        target: NodeId,
        group_id: RangeId,
        rpc: VoteRequest<RangeTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<RangeTypes>, RPCError<RangeTypes>> {
        let kind = RaftRpcKindV1::Vote;
        self.unary::<_, _, RaftError<RangeTypes>>(
            target,
            group_id,
            kind,
            RPCTypes::Vote,
            &rpc,
            &option,
        )
        .await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group_id: RangeId,
        rpc: VoteRequest<RangeTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<RangeTypes>, RPCError<RangeTypes>> {
        let kind = RaftRpcKindV1::PreVote;
        self.unary::<_, _, RaftError<RangeTypes>>(
            target,
            group_id,
            kind,
            RPCTypes::Vote,
            &rpc,
            &option,
        )
        .await
    }

    async fn full_snapshot(
        &self,
        target: NodeId,
        group_id: RangeId,
        vote: VoteOf<RangeTypes>,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<RangeTypes>, StreamingError<RangeTypes>> {
        let unreachable = |e: NetError| StreamingError::Unreachable(Unreachable::new(&e));
        let payload = encode(&(vote, snapshot.meta, snapshot.snapshot)).map_err(unreachable)?;
        let kind = RaftRpcKindV1::FullSnapshot;
        // No deadline of our own: a snapshot takes as long as its size needs;
        // replication cancels it through `cancel` when it is no longer wanted.
        let bytes = tokio::select! {
            r = self.call(target, group_id, kind, payload) => r.map_err(unreachable)?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let result: Result<SnapshotResponse<RangeTypes>, Fatal<RangeTypes>> =
            decode(&bytes).map_err(unreachable)?;
        result.map_err(|e| unreachable(NetError(format!("remote group error: {e}"))))
    }

    async fn transfer_leader(
        &self,
        target: NodeId,
        group_id: RangeId,
        req: TransferLeaderRequest<RangeTypes>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<RangeTypes>, RPCError<RangeTypes>> {
        let kind = RaftRpcKindV1::TransferLeader;
        self.unary::<_, _, Fatal<RangeTypes>>(
            target,
            group_id,
            kind,
            RPCTypes::TransferLeader,
            &req,
            &option,
        )
        .await
    }
}

impl RaftNetworkFactory<RangeTypes> for GroupNetworkFactory<PeerRouter, RangeId> {
    type Network = GroupNetworkAdapter<RangeTypes, RangeId, PeerRouter>;

    async fn new_client(&mut self, target: NodeId, node: &RaftNode) -> Self::Network {
        // Membership carries each node's address: learning it here means a
        // node added at run time is reachable by every future leader.
        if let Ok(addr) = node.addr.parse() {
            self.factory.set_peer(target, addr);
        }
        GroupNetworkAdapter::new(self.factory.clone(), target, self.group_id)
    }
}
