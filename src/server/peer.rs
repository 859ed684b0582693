//! The peer protocol's dispatcher: connections that negotiated ALPN
//! `meridian-peer/1` ([`crate::peer`]).
//!
//! Only `node` certificates are admitted, checked once per connection; a
//! connection with another role is closed before any stream is read. Peer
//! streams have their own limits ([`PEER_MAX_FRAME_BYTES`],
//! [`PEER_READ_TIMEOUT_MS`]); the client protocol's `max_request_bytes` and
//! `rate_limit_rps` never apply here, so client load or a client limit can
//! never starve or wedge replication.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::engine::control::{ControlRange, CONTROL_RANGE_ID};
use crate::error_code::{ApiError, ErrorCode};
use crate::peer::{
    self, PeerRequestV1, PeerResponseV1, RaftKindV1, PEER_MAX_FRAME_BYTES, PEER_READ_TIMEOUT_MS,
};
use crate::raft::transfer::Offer;
use crate::raft::RaftHost;
use crate::trace_context::{entry_span, entry_span_if, Trailer};
use crate::transport::{self, PeerIdentity};

/// QUIC close code for a peer connection whose certificate is not a node's.
const CLOSE_NOT_A_NODE: u32 = 2;

/// The Raft hosts a node's peer protocol serves: its region's groups and,
/// when configured, its replica of the control range (whose group has
/// range id [`CONTROL_RANGE_ID`]).
#[derive(Clone)]
pub(crate) struct PeerHosts {
    /// The region's range groups.
    pub region: Arc<RaftHost>,
    /// This node's replica of the control range.
    pub control: Option<Arc<ControlRange>>,
    /// The node's engine (lease operations forwarded by peers); `None` for
    /// a node reduced to its Raft groups.
    pub engine: Option<Arc<crate::engine::Engine>>,
}

impl PeerHosts {
    /// The host running `range`'s group here.
    fn for_range(&self, range: u64) -> &RaftHost {
        match &self.control {
            Some(c) if range == CONTROL_RANGE_ID => c.engine().region().host(),
            _ => &self.region,
        }
    }
}

/// Accepts only peer-protocol connections on `endpoint` and serves them
/// with `host` until the endpoint closes: a node reduced to its Raft groups,
/// for tests and tools that run groups without the client protocol.
pub async fn serve_peers(endpoint: quinn::Endpoint, host: Arc<RaftHost>) {
    while let Some(incoming) = endpoint.accept().await {
        let host = host.clone();
        tokio::spawn(async move {
            let Some((conn, identity)) = super::accept(incoming).await else {
                return;
            };
            if transport::protocol_of(&conn) != Some(transport::Protocol::Peer) {
                conn.close(CLOSE_NOT_A_NODE.into(), b"this endpoint serves peers only");
                return;
            }
            let hosts = PeerHosts {
                region: host,
                control: None,
                engine: None,
            };
            serve_peer_connection(conn, identity, hosts).await;
        });
    }
}

/// Serves one peer connection until it closes.
pub(crate) async fn serve_peer_connection(
    conn: quinn::Connection,
    peer: PeerIdentity,
    raft: PeerHosts,
) {
    let remote = conn.remote_address();
    if let Err(e) = transport::require_role(&peer, transport::PEER_ROLES) {
        tracing::warn!(%remote, peer = %peer.name, error = %e, "refusing a peer connection");
        metrics::counter!("meridian_connections_refused_total", "reason" => "peer_role")
            .increment(1);
        conn.close(
            CLOSE_NOT_A_NODE.into(),
            b"peer protocol needs a node certificate",
        );
        return;
    }
    let span = tracing::info_span!("peer_conn", %remote, peer = %peer.name);
    async move {
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "peer connection closed");
                    return;
                }
            };
            tokio::spawn(handle_peer_stream(send, recv, raft.clone()).in_current_span());
        }
    }
    .instrument(span)
    .await;
}

async fn handle_peer_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    raft: PeerHosts,
) {
    let read = tokio::time::timeout(
        Duration::from_millis(PEER_READ_TIMEOUT_MS),
        transport::read_frame(&mut recv, PEER_MAX_FRAME_BYTES),
    )
    .await;
    let request = match read {
        Err(_) => Err(ApiError::new(
            ErrorCode::MalformedRequest,
            "peer frame not received in time",
        )),
        Ok(Err(e)) => Err(ApiError::new(e.code(), format!("peer frame: {e}"))),
        Ok(Ok(frame)) => peer::decode_traced::<PeerRequestV1>(&frame).map_err(ApiError::from),
    };
    let reply = match request {
        Err(e) => PeerResponseV1::error(&e),
        Ok((req, trailer)) => serve(req, trailer, &raft, &mut send, &mut recv).await,
    };
    if transport::write_frame(&mut send, &peer::encode(&reply))
        .await
        .is_ok()
    {
        let _ = send.finish();
        // Wait (bounded) until the peer has the reply, so it is not cut off.
        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    }
}

/// Serves one peer request; `trailer` is what its frame carried after the
/// body (the request's span joins the trace named there).
async fn serve(
    req: PeerRequestV1,
    trailer: Trailer,
    hosts: &PeerHosts,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> PeerResponseV1 {
    let parent = trailer.context;
    match req {
        PeerRequestV1::Raft {
            range,
            kind,
            payload,
        } => {
            // Heartbeats and appends outside a sampled trace would be
            // thousands of one-span traces: an append is exported only in
            // its sender's trace; a vote or a leadership transfer may start
            // one (at the sampling ratio).
            let untraced_append = parent.is_none() && kind == RaftKindV1::AppendEntries;
            let span = entry_span_if(parent, !untraced_append, || {
                if untraced_append {
                    tracing::trace_span!("raft_rpc", range, ?kind)
                } else {
                    tracing::debug_span!("raft_rpc", range, ?kind)
                }
            });
            match hosts
                .for_range(range)
                .handle_rpc(range, kind, &payload, trailer.entry)
                .instrument(span)
                .await
            {
                Ok(bytes) => PeerResponseV1::Raft(bytes),
                Err(e) => PeerResponseV1::error(&e),
            }
        }
        PeerRequestV1::SnapshotOffer {
            range,
            snapshot_id,
            total_bytes,
            vote,
            meta,
        } => {
            let span = entry_span(parent, || {
                tracing::info_span!("snapshot_receive", range, total_bytes)
            });
            match Offer::decode(range, &snapshot_id, total_bytes, &vote, &meta) {
                Ok(offer) => {
                    hosts
                        .for_range(range)
                        .receive_snapshot(offer, send, recv)
                        .instrument(span)
                        .await
                }
                Err(e) => PeerResponseV1::error(&ApiError::new(
                    ErrorCode::MalformedRequest,
                    e.to_string(),
                )),
            }
        }
        PeerRequestV1::Replicate {
            range,
            start,
            end,
            batch,
        } => {
            let span = entry_span(parent, || {
                tracing::debug_span!("replicate_receive", range, bytes = batch.len())
            });
            hosts
                .region
                .handle_replicate(range, start, end, &batch)
                .instrument(span)
                .await
        }
        PeerRequestV1::CatchUp {
            range,
            start,
            end,
            chunk,
        } => {
            let span = entry_span(parent, || {
                tracing::info_span!("catch_up_receive", range, bytes = chunk.len())
            });
            hosts
                .region
                .handle_catch_up(range, start, end, &chunk)
                .instrument(span)
                .await
        }
        PeerRequestV1::Lease(req) => {
            let Some(engine) = hosts.engine.as_ref() else {
                return PeerResponseV1::error(&crate::error_code::ApiError::new(
                    ErrorCode::Unavailable,
                    "this node serves Raft only, not lease operations",
                ));
            };
            let span = entry_span(parent, || tracing::info_span!("lease_forwarded"));
            engine.serve_lease_peer(req).instrument(span).await
        }
        PeerRequestV1::PolicyFence {
            range,
            table,
            wait_for,
        } => {
            let Some(engine) = hosts.engine.as_ref() else {
                return PeerResponseV1::error(&crate::error_code::ApiError::new(
                    ErrorCode::Unavailable,
                    "this node serves Raft only, not policy fences",
                ));
            };
            let span = entry_span(parent, || tracing::info_span!("policy_fence", range, table));
            match engine
                .fence_for_handoff(range, table, wait_for.as_deref())
                .instrument(span)
                .await
            {
                Ok(at) => PeerResponseV1::PolicyFenced { at: at.0 },
                Err(e) if e.code == ErrorCode::NotLeader => PeerResponseV1::NotLeader {
                    leader: e.leader_hint,
                },
                Err(e) => PeerResponseV1::error(&e),
            }
        }
        PeerRequestV1::Policy(change) => {
            let control = match crate::engine::control::required(hosts.control.as_deref()) {
                Ok(c) => c,
                Err(e) => return PeerResponseV1::error(&e),
            };
            let span = entry_span(parent, || tracing::info_span!("policy_change_forwarded"));
            match control.apply_here(change).instrument(span).await {
                Ok(c) => PeerResponseV1::PolicyChanged {
                    version: c.table.version,
                    epoch: c.epoch,
                    policies: crate::wire::policies_v1(&control.local_region(), &c.table.table),
                },
                Err(e) if e.code == ErrorCode::NotLeader => PeerResponseV1::NotLeader {
                    leader: e.leader_hint,
                },
                Err(e) => PeerResponseV1::error(&e),
            }
        }
    }
}
