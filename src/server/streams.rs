//! Cross-region replication streams: the IO that drives the sans-IO
//! stream rules of [`crate::replication::stream`] (docs/architecture.md,
//! "Cross-region replication").
//!
//! One supervisor task per node. Every [`SUPERVISE_EVERY`] it looks at the
//! range groups this node leads and:
//! - keeps one **outbound stream** task per (range, other region) running,
//!   and stops those of ranges it no longer leads;
//! - **closes** an idle range: when its applied timestamp is
//!   [`CLOSE_INTERVAL_MS`] or more behind the clock it commits a barrier, so
//!   the range's closed timestamp (its applied timestamp) keeps moving and
//!   every other region's frontier for it stays fresh.
//!
//! An outbound stream finds the range's leader in the destination region
//! (gossip's leader hint, else any live node there, then the `NotLeader`
//! answers), asks for the destination's cursor with an empty probe, and
//! then sends the change log in `(cursor, applied]` as batches cut by
//! [`cut_batch`], several in flight (the [`Outbound`] window, paced over
//! the measured round trip), in order: the destination acknowledges each
//! with its new cursor ([`Outbound::on_ack`]) or refuses it with the cursor
//! to resend from ([`Outbound::restart_from`]). Any error restarts the
//! stream from the destination's cursor after [`RETRY_PAUSE`]: nothing is
//! lost or applied twice, because the destination's cursor decides.
//!
//! Every cursor a destination names is published to the engine's
//! [`AckedCursors`], where `sync-N` writes wait for N regions to reach them.
//! A write can outlive its node's leadership of the range: it committed
//! here, and the new leader's streams carry it on, but their acks reach the
//! new leader's node. So for every range a `sync-N` write waits on and this
//! node no longer leads, the supervisor asks each destination for its
//! cursor every [`SUPERVISE_EVERY`] (one round in flight per range: the
//! streams' empty probe) and publishes the answers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesOrdered, StreamExt};
use tracing::Instrument;

use crate::clock::Hlc;
use crate::engine::replicated::AckedCursors;
use crate::membership::Membership;
use crate::peer::{PeerRequestV1, PeerResponseV1};
use crate::raft::types::{
    CatchUpV1, CatchUpVersionV1, CommandV1, LogOpV1, RangeCommand, ReplicateV1, ReplicatedChangeV1,
};
use crate::raft::{RaftHost, RangeGroup};
use crate::replication::catch_up::MAX_CHUNK_BYTES;
use crate::replication::frontier::{needs_close, CLOSE_INTERVAL_MS};
use crate::replication::read::staleness_ms;
use crate::replication::stream::{cut_batch, Outbound, Record, MAX_BATCH_BYTES};
use crate::storage::changes::CatchUpResume;
use crate::storage::{MvccStore, WriteRecord};
use crate::types::Timestamp;

/// How often the supervisor looks at leadership and idle ranges.
pub const SUPERVISE_EVERY: Duration = Duration::from_millis(CLOSE_INTERVAL_MS / 2);
/// Pause before a stream retries after an error.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Longest a stream with nothing new to send waits before looking again
/// (it is woken as soon as the range applies something; this bounds a
/// missed wake-up and the leadership check).
pub const IDLE_POLL: Duration = Duration::from_millis(250);
/// Longest one batch exchange may take (the destination commits it in its
/// region first).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply frame of a replication exchange.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// How many `NotLeader` hops one attempt follows.
const MAX_REDIRECTS: usize = 3;

/// What the streams need from the node.
#[derive(Clone)]
pub struct StreamContext {
    /// The node's range groups.
    pub host: Arc<RaftHost>,
    /// The store (change logs).
    pub store: MvccStore,
    /// The clock.
    pub hlc: Arc<Hlc>,
    /// Gossip: where the other regions' nodes are.
    pub membership: Membership,
    /// Where every stream publishes its destination's acknowledged cursor
    /// (the engine's `sync-N` writes wait on it).
    pub acked: Arc<AckedCursors>,
}

/// Starts the supervisor; abort the handle to stop every stream.
pub fn spawn(ctx: StreamContext) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(ctx))
}

fn is_leader(host: &RaftHost, g: &RangeGroup) -> bool {
    g.current_leader() == Some(host.node_id())
}

async fn supervise(ctx: StreamContext) {
    let mut streams: HashMap<(u64, String), tokio::task::JoinHandle<()>> = HashMap::new();
    let closing: Arc<std::sync::Mutex<HashSet<u64>>> = Arc::default();
    let probing: Arc<std::sync::Mutex<HashSet<u64>>> = Arc::default();
    let others: Vec<String> = ctx.host.scope().others.clone();
    let mut tick = tokio::time::interval(SUPERVISE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Streams stop with the supervisor.
    struct AbortAll<'a>(&'a mut HashMap<(u64, String), tokio::task::JoinHandle<()>>);
    impl Drop for AbortAll<'_> {
        fn drop(&mut self) {
            for (_, h) in self.0.drain() {
                h.abort();
            }
        }
    }
    let guard = AbortAll(&mut streams);
    loop {
        tick.tick().await;
        let groups = ctx.host.groups();
        publish_frontier_ages(&groups);
        let waited = ctx.acked.waited();
        for g in groups
            .iter()
            .filter(|g| waited.contains(&g.desc.id) && !is_leader(&ctx.host, g))
        {
            probe_cursors(&ctx, g, &others, &probing);
        }
        let led: Vec<Arc<RangeGroup>> = groups
            .into_iter()
            .filter(|g| is_leader(&ctx.host, g))
            .collect();
        let led_ids: HashSet<u64> = led.iter().map(|g| g.desc.id).collect();
        guard.0.retain(|(range, _), h| {
            let keep = led_ids.contains(range) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        for g in &led {
            for region in &others {
                guard
                    .0
                    .entry((g.desc.id, region.clone()))
                    .or_insert_with(|| {
                        tokio::spawn(stream(ctx.clone(), g.clone(), region.clone()))
                    });
            }
            close_if_idle(&ctx, g, &closing);
        }
    }
}

/// Sets `meridian_replication_frontier_age_seconds{range}` for every range
/// on this node, leader or not: how far the range's frontier here (what
/// bounded and causal reads are served at) is behind the wall clock.
fn publish_frontier_ages(groups: &[Arc<RangeGroup>]) {
    let now = wall_now();
    for g in groups {
        let age = staleness_ms(now, g.frontier_ts()) as f64 / 1000.0;
        metrics::gauge!("meridian_replication_frontier_age_seconds", "range" => g.desc.id.to_string())
            .set(age);
    }
}

/// Asks every other region for its cursor of `g` (the streams' empty
/// probe, each answered after the destination's group applied it, so the
/// cursor is committed there) and publishes each answer, for `sync-N`
/// writes that wait on a range this node no longer leads. One round per
/// range at a time; a region that does not answer is asked again next
/// round.
fn probe_cursors(
    ctx: &StreamContext,
    g: &Arc<RangeGroup>,
    others: &[String],
    probing: &Arc<std::sync::Mutex<HashSet<u64>>>,
) {
    let range = g.desc.id;
    if !probing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(range)
    {
        return;
    }
    let (ctx, g, others, probing) = (ctx.clone(), g.clone(), others.to_vec(), probing.clone());
    tokio::spawn(async move {
        let asks = others.iter().map(|region| {
            let (ctx, g) = (&ctx, &g);
            async move {
                match tokio::time::timeout(EXCHANGE_TIMEOUT, probe(ctx, g, region)).await {
                    Ok(Ok((_, cursor))) => ctx.acked.publish(range, region, cursor),
                    Ok(Err(e)) => {
                        tracing::debug!(range, destination = %region, error = %e, "cursor probe for a waiting sync write failed")
                    }
                    Err(_) => {
                        tracing::debug!(range, destination = %region, "cursor probe for a waiting sync write timed out")
                    }
                }
            }
        });
        futures_util::future::join_all(asks).await;
        probing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&range);
    });
}

/// Commits a barrier on `g` when its applied timestamp lags the clock by
/// [`CLOSE_INTERVAL_MS`] (one close in flight per range).
fn close_if_idle(
    ctx: &StreamContext,
    g: &Arc<RangeGroup>,
    closing: &Arc<std::sync::Mutex<HashSet<u64>>>,
) {
    let now = ctx.hlc.last().max(wall_now());
    if !needs_close(now, g.applied_ts()) {
        return;
    }
    let range = g.desc.id;
    {
        let mut set = closing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !set.insert(range) {
            return;
        }
    }
    let (g, hlc, closing) = (g.clone(), ctx.hlc.clone(), closing.clone());
    tokio::spawn(async move {
        if let Ok(now) = hlc.now() {
            let cmd = RangeCommand {
                proposed_at: now.0,
                op: CommandV1::Barrier,
            };
            let r = tokio::time::timeout(EXCHANGE_TIMEOUT, g.raft.client_write(cmd)).await;
            if !matches!(r, Ok(Ok(_))) {
                tracing::debug!(range, "idle close did not commit");
            }
        }
        closing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&range);
    });
}

/// The wall clock as an HLC timestamp (logical 0).
fn wall_now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_parts(ms, 0).unwrap_or(Timestamp::ZERO)
}

/// Why one attempt of a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("no live node known in region {0}")]
    NoNode(String),
    #[error("{0}")]
    Peer(String),
    #[error("reading the change log: {0}")]
    Log(String),
    #[error("no longer the range's leader")]
    NotLeader,
}

/// One outbound stream until this node stops leading the range.
async fn stream(ctx: StreamContext, g: Arc<RangeGroup>, region: String) {
    let range = g.desc.id.to_string();
    // The stream's event counters exist from its start, at 0: a dashboard
    // shows "no restarts" rather than no data.
    for name in [
        "meridian_replication_stream_restarts_total",
        "meridian_replication_resends_total",
        "meridian_replication_catch_ups_total",
    ] {
        metrics::counter!(name, "range" => range.clone(), "destination" => region.clone())
            .increment(0);
    }
    loop {
        if !is_leader(&ctx.host, &g) {
            return;
        }
        match run_stream(&ctx, &g, &region).await {
            Err(StreamEnd::NotLeader) => return,
            Err(e) => {
                metrics::counter!("meridian_replication_stream_restarts_total",
                    "range" => range.clone(), "destination" => region.clone())
                .increment(1);
                tracing::debug!(range = g.desc.id, destination = %region, error = %e, "replication stream restarts");
            }
            Ok(()) => {}
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Candidate addresses of the range's leader in `region`: the gossiped
/// leader first, then every live node of the region.
fn candidates(ctx: &StreamContext, range: u64, region: &str) -> Vec<SocketAddr> {
    let members = ctx.membership.members();
    let mut out = Vec::new();
    if let Some(hint) = ctx.membership.leader_hint(range, region) {
        if let Some(m) = members
            .iter()
            .find(|m| m.identity.node_id == hint.leader_node)
        {
            out.push(m.identity.peer_addr);
        }
    }
    for m in &members {
        if m.identity.region == region
            && m.state.is_active()
            && !out.contains(&m.identity.peer_addr)
        {
            out.push(m.identity.peer_addr);
        }
    }
    out
}

/// Encodes `batch` as the peer request for `g`'s range.
fn request(g: &RangeGroup, batch: &ReplicateV1) -> Result<PeerRequestV1, StreamEnd> {
    let batch = postcard::to_allocvec(batch)
        .map_err(|e| StreamEnd::Peer(format!("encode a replication batch: {e}")))?;
    Ok(PeerRequestV1::Replicate {
        range: g.desc.id,
        start: g.desc.start.clone(),
        end: g.desc.end.clone(),
        batch,
    })
}

/// One exchange with `addr`, bounded by [`EXCHANGE_TIMEOUT`].
async fn exchange(
    ctx: &StreamContext,
    addr: SocketAddr,
    req: &PeerRequestV1,
) -> Result<PeerResponseV1, StreamEnd> {
    // A root span, sampled at the node's ratio: a sampled batch's trace
    // follows it into the destination region (its leader's receive,
    // propose, its followers' appends and applies).
    let (range, bytes) = match req {
        PeerRequestV1::Replicate { range, batch, .. } => (*range, batch.len()),
        _ => (0, 0),
    };
    let span = crate::trace_context::entry_span(
        None,
        || tracing::debug_span!(parent: None, "replicate_send", range, to = %addr, bytes),
    );
    match tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        ctx.host.router().exchange(addr, req, MAX_REPLY_BYTES),
    )
    .instrument(span)
    .await
    {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(StreamEnd::Peer(e.to_string())),
        Err(_) => Err(StreamEnd::Peer(format!(
            "{addr}: no reply in {EXCHANGE_TIMEOUT:?}"
        ))),
    }
}

/// What a destination answered to a batch: (applied, cursor), or why the
/// stream must restart.
fn replicated(addr: SocketAddr, reply: PeerResponseV1) -> Result<(bool, Timestamp), StreamEnd> {
    match reply {
        PeerResponseV1::Replicated { applied, cursor } => Ok((applied, Timestamp(cursor))),
        PeerResponseV1::NotLeader { leader } => Err(StreamEnd::Peer(format!(
            "{addr} no longer leads the range (leader: {leader:?})"
        ))),
        PeerResponseV1::Err { code, message } => {
            Err(StreamEnd::Peer(format!("{addr} refused: {code} {message}")))
        }
        other => Err(StreamEnd::Peer(format!(
            "{addr}: unexpected reply {other:?}"
        ))),
    }
}

/// Finds the range's leader in `region` with an empty batch (the probe),
/// following `NotLeader` answers; returns its address and its cursor for
/// this origin.
async fn probe(
    ctx: &StreamContext,
    g: &RangeGroup,
    region: &str,
) -> Result<(SocketAddr, Timestamp), StreamEnd> {
    let req = request(
        g,
        &ReplicateV1 {
            origin: ctx.host.scope().local.clone(),
            after: 0,
            closed: 0,
            records: Vec::new(),
        },
    )?;
    let mut dest: Option<SocketAddr> = None;
    let mut tried = Vec::new();
    for _ in 0..=MAX_REDIRECTS {
        let addr = match dest {
            Some(a) => a,
            None => candidates(ctx, g.desc.id, region)
                .into_iter()
                .find(|a| !tried.contains(a))
                .ok_or_else(|| StreamEnd::NoNode(region.to_string()))?,
        };
        tried.push(addr);
        match exchange(ctx, addr, &req).await? {
            PeerResponseV1::NotLeader { leader } => {
                dest = leader.and_then(|l| l.parse().ok());
            }
            other => return replicated(addr, other).map(|(_, cursor)| (addr, cursor)),
        }
    }
    Err(StreamEnd::Peer(format!(
        "no leader of range {} found in {region} after {MAX_REDIRECTS} redirects",
        g.desc.id
    )))
}

fn change_of(r: WriteRecord) -> Record<Vec<LogOpV1>> {
    Record {
        ts: r.ts,
        payload: r.ops.into_iter().map(LogOpV1::from).collect(),
    }
}

fn payload_bytes(ops: &[LogOpV1]) -> usize {
    ops.iter()
        .map(|op| match op {
            LogOpV1::Put { key, value } => key.len() + value.len(),
            LogOpV1::Delete { key } => key.len(),
        })
        .sum()
}

/// A batch's exchange as it completes: the reply, when it was sent, and
/// its payload bytes.
type Sent = (Result<PeerResponseV1, StreamEnd>, Instant, usize);

/// One attempt: probe the cursor, then stream until an error.
///
/// Up to the [`Outbound`] window of batches is in flight at once, each its
/// own exchange with the destination's leader, spaced by the window's
/// pacing. Replies are handled in the order the batches were sent
/// (`FuturesOrdered`), so an ack always describes a prefix of what was
/// sent. A refusal (the destination's cursor is not where a batch starts:
/// a batch was lost, or overtaken by a later one) drops whatever is still
/// in flight and resends from the cursor it names; any error ends the
/// attempt, and the next one starts from the destination's cursor again.
async fn run_stream(ctx: &StreamContext, g: &RangeGroup, region: &str) -> Result<(), StreamEnd> {
    let origin = ctx.host.scope().local.clone();
    let labels = [
        ("range", g.desc.id.to_string()),
        ("destination", region.to_string()),
    ];
    let (addr, cursor) = probe(ctx, g, region).await?;
    ctx.acked.publish(g.desc.id, region, cursor);
    let start = ctx
        .store
        .change_log_start(g.desc.id)
        .map_err(|e| StreamEnd::Log(e.to_string()))?;
    let cursor = if cursor < start {
        tracing::warn!(range = g.desc.id, destination = %region, cursor = cursor.0, log_start = start.0,
            "destination is behind this replica's change log: catching it up from the range's state");
        catch_up(ctx, g, region, addr, &labels).await?
    } else {
        cursor
    };
    let mut out = Outbound::resume_from(cursor);
    let mut in_flight = FuturesOrdered::new();
    tracing::info!(range = g.desc.id, destination = %region, cursor = cursor.0, "replication stream started");
    loop {
        if !is_leader(&ctx.host, g) {
            return Err(StreamEnd::NotLeader);
        }
        // Register for the next apply before reading the applied
        // timestamp, so none is missed while the window is being filled.
        let moved = g.applied_changed().notified();
        // When a close with no records was held back (CLOSE_ONLY_EVERY).
        let mut held_close = None;
        while let Some(after) = out.next_after(Instant::now()) {
            // Everything at or below the applied timestamp is in the change
            // log (same batch), and every later local write is stamped
            // above it.
            let closed = g.applied_ts();
            if closed <= after {
                break;
            }
            let (wire, bytes) = next_batch(ctx, g, &origin, after, closed).await?;
            if wire.records.is_empty() && !out.close_only_due(Instant::now()) {
                held_close = out.close_only_at();
                break;
            }
            let req = request(g, &wire)?;
            let sent_at = Instant::now();
            out.on_sent(sent_at, Timestamp(wire.closed), bytes);
            in_flight.push_back(async move { (exchange(ctx, addr, &req).await, sent_at, bytes) });
        }
        let now = Instant::now();
        let wake = out
            .poll_timeout()
            .into_iter()
            .chain(held_close)
            .filter(|t| *t > now)
            .fold(now + IDLE_POLL, Instant::min);
        let can_send = out.next_after(now).is_some();
        tokio::select! {
            Some(sent) = in_flight.next(), if !in_flight.is_empty() => {
                let (applied, cursor) = on_reply(ctx, g, region, addr, &labels, sent)?;
                if applied {
                    out.on_ack(Instant::now(), cursor);
                } else {
                    tracing::debug!(range = g.desc.id, destination = %region, cursor = cursor.0, "destination asked to resend from its cursor");
                    out.restart_from(cursor);
                    in_flight = FuturesOrdered::new();
                }
                let lag = staleness_ms(wall_now(), out.acked()) as f64 / 1000.0;
                metrics::gauge!("meridian_replication_acked_lag_seconds", &labels).set(lag);
            }
            () = moved, if can_send => {}
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// Brings a destination whose cursor is below where this replica's change
/// log is complete up to the range's state (`replication::catch_up`): one
/// frozen view of the store, sent in chunks of about
/// [`MAX_CHUNK_BYTES`] in key order, one exchange at a time, each
/// proposed and applied by the destination's group before the next goes.
/// Returns the destination's cursor after it (the view's applied
/// timestamp; or the cursor it already had, if it refused the first chunk
/// as not new). An interrupted catch-up starts over: merging is
/// idempotent.
async fn catch_up(
    ctx: &StreamContext,
    g: &RangeGroup,
    region: &str,
    addr: SocketAddr,
    labels: &[(&'static str, String); 2],
) -> Result<Timestamp, StreamEnd> {
    // Both read before the view is frozen: it holds every version at or
    // below them. The horizon is read after: the view is complete above it.
    let origin_frontier = g.frontier_ts();
    let at = g.applied_ts();
    let view = Arc::new(
        ctx.store
            .frozen_view()
            .map_err(|e| StreamEnd::Log(e.to_string()))?,
    );
    let horizon = ctx.store.gc_horizon_at(&g.desc.start);
    let origin = ctx.host.scope().local.clone();
    let mut from = CatchUpResume {
        key: g.desc.start.clone(),
        below: None,
    };
    let (mut chunks, mut versions) = (0u64, 0usize);
    loop {
        if !is_leader(&ctx.host, g) {
            return Err(StreamEnd::NotLeader);
        }
        let chunk = {
            let (view, start, end) = (view.clone(), from.clone(), g.desc.end.clone());
            tokio::task::spawn_blocking(move || {
                view.catch_up_chunk(&start, end.as_deref(), at, MAX_CHUNK_BYTES)
            })
            .await
            .map_err(|e| StreamEnd::Log(e.to_string()))?
            .map_err(|e| StreamEnd::Log(e.to_string()))?
        };
        let bytes: usize = chunk
            .versions
            .iter()
            .map(|v| v.key.len() + v.value.as_ref().map_or(0, Vec::len))
            .sum();
        versions += chunk.versions.len();
        let wire = CatchUpV1 {
            origin: origin.clone(),
            at: at.0,
            horizon: horizon.0,
            origin_frontier: origin_frontier.0,
            from: from.key.clone(),
            to: chunk.next.as_ref().map(|n| n.key.clone()),
            versions: chunk
                .versions
                .into_iter()
                .map(|v| CatchUpVersionV1 {
                    key: v.key,
                    ts: v.version.0,
                    value: v.value,
                })
                .collect(),
            last: chunk.next.is_none(),
        };
        let req = PeerRequestV1::CatchUp {
            range: g.desc.id,
            start: g.desc.start.clone(),
            end: g.desc.end.clone(),
            chunk: postcard::to_allocvec(&wire)
                .map_err(|e| StreamEnd::Peer(format!("encode a catch-up chunk: {e}")))?,
        };
        let (applied, cursor) = replicated(addr, exchange(ctx, addr, &req).await?)?;
        chunks += 1;
        if !applied {
            // The destination's cursor is at or past the view: nothing to do.
            return Ok(cursor);
        }
        metrics::counter!("meridian_replication_bytes_total", labels).increment(bytes as u64);
        match chunk.next {
            Some(next) => from = next,
            None => {
                metrics::counter!("meridian_replication_catch_ups_total", labels).increment(1);
                tracing::info!(range = g.desc.id, destination = %region, chunks, versions, at = at.0,
                    "destination caught up from the range's state");
                ctx.acked.publish(g.desc.id, region, cursor);
                return Ok(cursor);
            }
        }
    }
}

/// Reads the change log in `(after, closed]` and cuts the next batch.
async fn next_batch(
    ctx: &StreamContext,
    g: &RangeGroup,
    origin: &str,
    after: Timestamp,
    closed: Timestamp,
) -> Result<(ReplicateV1, usize), StreamEnd> {
    let records = {
        let store = ctx.store.clone();
        let range = g.desc.id;
        tokio::task::spawn_blocking(move || {
            store.read_changes(range, after, closed, MAX_BATCH_BYTES)
        })
        .await
        .map_err(|e| StreamEnd::Log(e.to_string()))?
        .map_err(|e| StreamEnd::Log(e.to_string()))?
    };
    let (batch, bytes) = cut_batch(after, records.into_iter().map(change_of), closed, |ops| {
        payload_bytes(ops)
    });
    let wire = ReplicateV1 {
        origin: origin.to_string(),
        after: batch.after.0,
        closed: batch.closed.0,
        records: batch
            .records
            .into_iter()
            .map(|r| ReplicatedChangeV1 {
                ts: r.ts.0,
                ops: r.payload,
            })
            .collect(),
    };
    Ok((wire, bytes))
}

/// Handles the reply to one batch: metrics, the destination's cursor
/// published for `sync-N` writes, and (applied, cursor) for the window.
fn on_reply(
    ctx: &StreamContext,
    g: &RangeGroup,
    region: &str,
    addr: SocketAddr,
    labels: &[(&'static str, String); 2],
    (reply, sent_at, bytes): Sent,
) -> Result<(bool, Timestamp), StreamEnd> {
    let (applied, cursor) = replicated(addr, reply?)?;
    metrics::histogram!("meridian_replication_batch_seconds", labels)
        .record(sent_at.elapsed().as_secs_f64());
    // A refusal names the destination's cursor too: a durable fact either way.
    ctx.acked.publish(g.desc.id, region, cursor);
    if applied {
        metrics::counter!("meridian_replication_bytes_total", labels).increment(bytes as u64);
    } else {
        // The batch did not continue the destination's cursor: an earlier
        // one was lost, or this one overtook it on its way (each batch is
        // its own QUIC stream, proposed as it arrives).
        metrics::counter!("meridian_replication_resends_total", labels).increment(1);
    }
    Ok((applied, cursor))
}
