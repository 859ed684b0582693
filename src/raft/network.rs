//! Raft RPCs over the peer protocol ([`crate::peer`]).
//!
//! [`PeerRouter`] implements openraft-multi's `GroupRouter`: every group on
//! this node sends through it, and it keeps **one QUIC connection per peer**
//! (mutual TLS with node certificates, ALPN `meridian-peer/1`), opening one
//! bidirectional stream per RPC. The group (range) id travels in the frame.
//!
//! AppendEntries are capped in bytes ([`crate::peer::MAX_APPEND_BYTES`]):
//! when openraft hands over more, the router sends the prefix that fits
//! (always at least one entry) and reports `PartialSuccess` up to its last
//! entry, so openraft sends the rest next. A snapshot to send is a point of
//! the range ([`super::point`]): it is materialised into a file (or the file
//! written for it before is reused) and streamed in chunks
//! ([`super::transfer`]), resumable after a dropped connection. A point the
//! gc horizon has passed fails the send as `Unreachable` after requesting a
//! fresh snapshot; openraft backs off and sends again, with the new point.
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
use tracing::Instrument;

use super::point::RangeSnapshotData;
use super::types::{NodeId, RaftNode, RangeId, RangeTypes};
use crate::peer::{self, PeerRequestV1, PeerResponseV1, RaftKindV1, MAX_RAFT_REPLY_BYTES};
use crate::trace_context::Trailer;
use crate::transport;

/// A network failure, as openraft's error constructors want an `Error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetError(String);

type Snapshot = SnapshotOf<RangeTypes, RangeSnapshotData>;

/// Sends Raft RPCs for every group of this node. Cheap to clone.
#[derive(Clone)]
pub struct PeerRouter {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    /// Client config with the node certificate and the peer ALPN.
    config: quinn::ClientConfig,
    peers: RwLock<HashMap<NodeId, SocketAddr>>,
    conns: tokio::sync::Mutex<HashMap<NodeId, quinn::Connection>>,
    /// Connections to nodes outside the region's groups (other regions'
    /// nodes, for replication), by address.
    by_addr: tokio::sync::Mutex<HashMap<SocketAddr, quinn::Connection>>,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, NetError> {
    postcard::to_allocvec(v).map_err(|e| NetError(format!("encode: {e}")))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, NetError> {
    postcard::from_bytes(b).map_err(|e| NetError(format!("decode: {e}")))
}

impl PeerRouter {
    /// A router sending from `endpoint` with `config` (from
    /// [`transport::peer_client_config`]: node certificate, peer ALPN).
    pub fn new(endpoint: quinn::Endpoint, config: quinn::ClientConfig) -> PeerRouter {
        PeerRouter {
            inner: Arc::new(Inner {
                endpoint,
                config,
                peers: RwLock::new(HashMap::new()),
                conns: tokio::sync::Mutex::new(HashMap::new()),
                by_addr: tokio::sync::Mutex::new(HashMap::new()),
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
        let conn = transport::connect_peer(&self.inner.endpoint, &self.inner.config, addr)
            .await
            .map_err(|e| NetError(format!("connect to node {target} at {addr}: {e}")))?;
        self.inner.conns.lock().await.insert(target, conn.clone());
        Ok(conn)
    }

    /// One peer exchange with the node at `addr` (any region): a stream,
    /// `req`, and one reply frame of at most `max_reply` bytes. The
    /// connection is kept for the next exchange and replaced when it broke.
    pub async fn exchange(
        &self,
        addr: SocketAddr,
        req: &PeerRequestV1,
        max_reply: usize,
    ) -> Result<PeerResponseV1, NetError> {
        let cached = {
            let conns = self.inner.by_addr.lock().await;
            conns
                .get(&addr)
                .filter(|c| c.close_reason().is_none())
                .cloned()
        };
        let conn = match cached {
            Some(c) => c,
            None => {
                let c = transport::connect_peer(&self.inner.endpoint, &self.inner.config, addr)
                    .await
                    .map_err(|e| NetError(format!("connect to {addr}: {e}")))?;
                self.inner.by_addr.lock().await.insert(addr, c.clone());
                c
            }
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| NetError(format!("open stream to {addr}: {e}")))?;
        // A forwarded lease or policy change, or a replication batch, sent
        // inside a sampled span carries its trace on to the receiver.
        let trailer = Trailer {
            context: crate::trace_context::current(),
            entry: None,
        };
        let frame = peer::encode_traced(req, &trailer);
        transport::write_frame(&mut send, &frame)
            .await
            .map_err(|e| NetError(format!("send to {addr}: {e}")))?;
        let _ = send.finish();
        let reply = transport::read_frame(&mut recv, max_reply)
            .await
            .map_err(|e| NetError(format!("reply from {addr}: {e}")))?;
        peer::decode(&reply).map_err(|e| NetError(e.to_string()))
    }

    /// One RPC: a stream, a request frame (carrying `trailer`: the sending
    /// span's sampled context, and the traced entry of an AppendEntries), a
    /// reply frame.
    async fn call(
        &self,
        target: NodeId,
        range: RangeId,
        kind: RaftKindV1,
        payload: Vec<u8>,
        trailer: Trailer,
    ) -> Result<Vec<u8>, NetError> {
        let conn = self.connection(target).await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| NetError(format!("open stream to node {target}: {e}")))?;
        let req = PeerRequestV1::Raft {
            range,
            kind,
            payload,
        };
        let frame = peer::encode_traced(&req, &trailer);
        transport::write_frame(&mut send, &frame)
            .await
            .map_err(|e| NetError(format!("send to node {target}: {e}")))?;
        let _ = send.finish();
        let reply = transport::read_frame(&mut recv, MAX_RAFT_REPLY_BYTES)
            .await
            .map_err(|e| NetError(format!("reply from node {target}: {e}")))?;
        match peer::decode(&reply).map_err(|e| NetError(e.to_string()))? {
            PeerResponseV1::Raft(bytes) => Ok(bytes),
            PeerResponseV1::Err { code, message } => {
                Err(NetError(format!("node {target} refused: {code} {message}")))
            }
            other => Err(NetError(format!("unexpected reply {other:?}"))),
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
        kind: RaftKindV1,
        req: &Req,
        ttl: Duration,
        entry: Option<u64>,
    ) -> Result<Resp, RPCError<RangeTypes>> {
        let rpc_type = match kind {
            RaftKindV1::AppendEntries => RPCTypes::AppendEntries,
            RaftKindV1::Vote | RaftKindV1::PreVote => RPCTypes::Vote,
            RaftKindV1::TransferLeader => RPCTypes::TransferLeader,
        };
        let unreachable = |e: NetError| RPCError::Unreachable(Unreachable::new(&e));
        let payload = encode(req).map_err(unreachable)?;
        let trailer = Trailer {
            context: crate::trace_context::current(),
            entry,
        };
        let call = self.call(target, range, kind, payload, trailer);
        let bytes = match tokio::time::timeout(ttl, call).await {
            Ok(r) => r.map_err(unreachable)?,
            Err(_) => return Err(RPCError::Timeout(timeout(rpc_type, target, ttl))),
        };
        let result: Result<Resp, E> = decode(&bytes).map_err(unreachable)?;
        result.map_err(|e| unreachable(NetError(format!("remote group error: {e}"))))
    }
}

/// The span of an AppendEntries sent to `target`, and the `proposed_at` of
/// the entry it traces: a child of the first of its entries whose proposal
/// is in a sampled trace (see [`crate::trace_context`]), so that trace
/// shows the entry reaching the follower; otherwise a span that is never
/// exported (heartbeats and untraced appends are most RPCs).
fn append_span(
    target: NodeId,
    range: RangeId,
    rpc: &AppendEntriesRequest<RangeTypes>,
) -> (tracing::Span, Option<u64>) {
    let traced = rpc.entries.iter().find_map(|e| match &e.payload {
        openraft::EntryPayload::Normal(cmd) => {
            crate::trace_context::recall(range, cmd.proposed_at).map(|c| (c, cmd.proposed_at))
        }
        _ => None,
    });
    let Some((parent, entry)) = traced else {
        return (tracing::Span::none(), None);
    };
    let span = crate::trace_context::entry_span(Some(parent), || {
        tracing::debug_span!(
            "raft_append_entries_send",
            range,
            target,
            entries = rpc.entries.len()
        )
    });
    (span, Some(entry))
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
    type SnapshotData = RangeSnapshotData;

    async fn append_entries(
        &self,
        target: NodeId,
        group_id: RangeId,
        mut rpc: AppendEntriesRequest<RangeTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RangeTypes>, RPCError<RangeTypes>> {
        let (fits, bytes) = entries_within(&rpc.entries, peer::MAX_APPEND_BYTES);
        let last_sent = (fits < rpc.entries.len()).then(|| rpc.entries[fits - 1].log_id);
        rpc.entries.truncate(fits);
        // openraft gives every append the heartbeat interval; a batch of
        // large entries needs time to cross the link and reach the
        // follower's disk, or it times out and is resent forever.
        let extra = transfer_allowance(bytes);
        let kind = RaftKindV1::AppendEntries;
        let (span, traced_entry) = append_span(target, group_id, &rpc);
        let reply = self
            .unary::<_, _, RaftError<RangeTypes>>(
                target,
                group_id,
                kind,
                &rpc,
                option.soft_ttl() + extra,
                traced_entry,
            )
            .instrument(span)
            .await?;
        Ok(partial(reply, last_sent))
    }

    async fn vote(
        &self,
        target: NodeId,
        group_id: RangeId,
        rpc: VoteRequest<RangeTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<RangeTypes>, RPCError<RangeTypes>> {
        let kind = RaftKindV1::Vote;
        self.unary::<_, _, RaftError<RangeTypes>>(
            target,
            group_id,
            kind,
            &rpc,
            option.soft_ttl(),
            None,
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
        let kind = RaftKindV1::PreVote;
        self.unary::<_, _, RaftError<RangeTypes>>(
            target,
            group_id,
            kind,
            &rpc,
            option.soft_ttl(),
            None,
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
        // No deadline of our own: materialising and sending a snapshot take
        // as long as its size needs (each frame is bounded by the receiver's
        // read timeout); replication cancels it through `cancel` when it is
        // no longer wanted.
        let send = async {
            let file = match snapshot.snapshot {
                RangeSnapshotData::Point(point) => point
                    .materialize()
                    .await
                    .map_err(|e| NetError(e.to_string()))?,
                RangeSnapshotData::Received(file) => file,
            };
            let conn = self.connection(target).await?;
            super::transfer::send_snapshot(&conn, group_id, &vote, &snapshot.meta, &file)
                .await
                .map_err(|e| NetError(e.to_string()))
        };
        let bytes = tokio::select! {
            r = send => r.map_err(unreachable)?,
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
        let kind = RaftKindV1::TransferLeader;
        self.unary::<_, _, Fatal<RangeTypes>>(target, group_id, kind, &req, option.soft_ttl(), None)
            .await
    }
}

/// How many of `entries`, from the first, fit in `max_bytes` (by
/// [`super::RangeCommand::approx_bytes`]), and their bytes; at least one, so
/// an entry larger than the budget still travels, alone.
pub fn entries_within(
    entries: &[openraft::type_config::alias::EntryOf<RangeTypes>],
    max_bytes: usize,
) -> (usize, usize) {
    let mut bytes = 0usize;
    let mut n = 0;
    for e in entries {
        let next = bytes.saturating_add(entry_bytes(e));
        if n > 0 && next > max_bytes {
            break;
        }
        bytes = next;
        n += 1;
    }
    (n, bytes)
}

/// Time added to an append's deadline for its payload: `bytes` at
/// [`peer::PEER_MIN_BYTES_PER_SEC`].
pub fn transfer_allowance(bytes: usize) -> Duration {
    Duration::from_secs_f64(bytes as f64 / peer::PEER_MIN_BYTES_PER_SEC as f64)
}

fn entry_bytes(e: &openraft::type_config::alias::EntryOf<RangeTypes>) -> usize {
    const ENTRY_OVERHEAD: usize = 32;
    ENTRY_OVERHEAD
        + match &e.payload {
            openraft::EntryPayload::Normal(cmd) => cmd.approx_bytes(),
            openraft::EntryPayload::Membership(m) => 64 * m.nodes().count(),
            openraft::EntryPayload::Blank => 0,
        }
}

/// The reply to report for an append that sent only the entries up to
/// `last_sent` (when it was cut): a full success becomes a partial one up to
/// there; every other reply stands. (openraft: the returned matching log id
/// is at or after the request's `prev_log_id`, as it must be.)
fn partial(
    reply: AppendEntriesResponse<RangeTypes>,
    last_sent: Option<openraft::type_config::alias::LogIdOf<RangeTypes>>,
) -> AppendEntriesResponse<RangeTypes> {
    match (reply, last_sent) {
        (AppendEntriesResponse::Success, Some(last)) => {
            AppendEntriesResponse::PartialSuccess(Some(last))
        }
        (reply, _) => reply,
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

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::testing::log_id;

    use super::*;
    use crate::raft::types::{CommandV1, RangeCommand};

    fn entry(index: u64, value_bytes: usize) -> openraft::type_config::alias::EntryOf<RangeTypes> {
        let cmd = RangeCommand {
            proposed_at: 0,
            op: CommandV1::Put {
                key: b"k".to_vec(),
                value: vec![0; value_bytes],
            },
        };
        RaftEntry::new(
            log_id::<RangeTypes>(1, 1, index),
            openraft::EntryPayload::Normal(cmd),
        )
    }

    #[test]
    fn appends_are_cut_at_the_byte_budget_but_carry_at_least_one_entry() {
        let small: Vec<_> = (1..=10).map(|i| entry(i, 100)).collect();
        assert_eq!(entries_within(&small, peer::MAX_APPEND_BYTES).0, 10);
        let big: Vec<_> = (1..=8).map(|i| entry(i, 1_000_000)).collect();
        let (n, bytes) = entries_within(&big, peer::MAX_APPEND_BYTES);
        assert_eq!(n, 1, "two 1 MB entries exceed the 1 MiB budget");
        assert!(bytes > 1_000_000);
        let huge = vec![entry(1, 3 * peer::MAX_APPEND_BYTES)];
        assert_eq!(entries_within(&huge, peer::MAX_APPEND_BYTES).0, 1);
        assert_eq!(entries_within(&[], peer::MAX_APPEND_BYTES), (0, 0));
    }

    #[test]
    fn a_cut_append_reports_partial_success_up_to_its_last_entry() {
        let last = log_id::<RangeTypes>(1, 1, 4);
        assert_eq!(
            partial(AppendEntriesResponse::Success, Some(last)),
            AppendEntriesResponse::PartialSuccess(Some(last))
        );
        assert_eq!(
            partial(AppendEntriesResponse::Success, None),
            AppendEntriesResponse::Success
        );
        assert_eq!(
            partial(AppendEntriesResponse::Conflict, Some(last)),
            AppendEntriesResponse::Conflict
        );
    }

    #[test]
    fn large_appends_get_time_for_their_bytes() {
        assert_eq!(transfer_allowance(0), Duration::ZERO);
        assert_eq!(
            transfer_allowance(peer::PEER_MIN_BYTES_PER_SEC),
            Duration::from_secs(1)
        );
    }
}
