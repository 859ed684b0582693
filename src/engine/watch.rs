//! The IO side of a watch on this node: a [`WatchFeed`] drives the pure
//! [`crate::watch::Cursor`] with the frontier and gc horizon of the ranges
//! the watched span covers and the storage scan of `(after, frontier]`
//! (docs/consistency.md, "Watch"). The QUIC server (`server::watch`) and
//! the HTTP gateway (`gateway::watch`) put a feed behind a bounded buffer.
//!
//! Where the events come from: a storage scan of the span's versions in
//! the new interval, run whenever a covered range's applied timestamp or
//! frontier moves (the range's `applied_changed` notification) and at
//! least every [`PROGRESS_INTERVAL_MS`]. It costs O(keys in the span +
//! versions in the interval) per step (docs/benchmarks.md, "Watch").

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Engine;
use crate::error_code::{ApiError, ErrorCode};
use crate::raft::RangeGroup;
use crate::storage::{MvccStore, RawVersion, SpanPageLimits, StorageError};
use crate::types::Timestamp;
use crate::watch::{
    self, Cursor, Step, WatchError, WatchEvent, WatchSpan, MAX_STEP_BYTES, MAX_STEP_VERSIONS,
    PROGRESS_INTERVAL_MS,
};

/// A watch being served on this node (see the module docs).
pub struct WatchFeed {
    store: MvccStore,
    groups: Vec<Arc<RangeGroup>>,
    span: WatchSpan,
    cursor: Cursor,
}

impl std::fmt::Debug for WatchFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchFeed")
            .field("span", &self.span)
            .field("after", &self.cursor.after())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens a watch of `key` (or every key under it with `prefix`) on this
    /// node, emitting events strictly after `from`, or after the span's
    /// frontier now when `from` is `None`. Refuses (nothing changes) a key
    /// over `max_key_bytes`, an empty key without `prefix`, a `from` too
    /// far ahead of the clock ([`watch::check_from`]). A `from` below the
    /// gc horizon ends the watch at its first step (`MER-1008`, naming the
    /// oldest resumable timestamp).
    pub fn open_watch(
        &self,
        key: &[u8],
        prefix: bool,
        from: Option<Timestamp>,
    ) -> Result<WatchFeed, ApiError> {
        if (key.is_empty() && !prefix) || key.len() > self.limits.max_key_bytes {
            return Err(ApiError::new(
                ErrorCode::KeyTooLarge,
                format!(
                    "a watched key must be 1..={} bytes (an empty prefix watches every key)",
                    self.limits.max_key_bytes
                ),
            ));
        }
        let span = WatchSpan::of(key, prefix);
        let groups = self
            .region
            .ranges()
            .iter()
            .filter(|r| {
                span.end.as_deref().is_none_or(|e| r.start.as_slice() < e)
                    && r.end.as_deref().is_none_or(|re| span.start.as_slice() < re)
            })
            .map(|r| self.region.group(r))
            .collect::<Result<Vec<_>, _>>()?;
        let frontier = min_frontier(&groups);
        // A `from` below the gc horizon is reported by the first step
        // (`WatchError::Compacted`, naming the horizon) on the stream, so
        // every front end ends such a watch the same way.
        let after = match from {
            Some(from) => {
                watch::check_from(from, self.hlc.last())?;
                from
            }
            // "From now": after this node's clock, so a replica whose
            // frontier lags (or is zero on a range it has not applied a
            // write of yet) does not start below the horizon the next
            // applied write raises.
            None => frontier.max(self.hlc.last()),
        };
        Ok(WatchFeed {
            store: self.store.clone(),
            groups,
            span,
            cursor: Cursor::new(after, Instant::now()),
        })
    }
}

fn min_frontier(groups: &[Arc<RangeGroup>]) -> Timestamp {
    groups
        .iter()
        .map(|g| g.frontier_ts())
        .min()
        .unwrap_or(Timestamp::ZERO)
}

impl WatchFeed {
    /// Every event at or below this has been returned (or precedes the
    /// watch's start).
    pub fn after(&self) -> Timestamp {
        self.cursor.after()
    }

    /// The next events in HLC order, ending with a progress event when one
    /// is due; waits until there is something to return. Cancel-safe
    /// between steps: dropping the future loses nothing that was not
    /// returned (the cursor moves only when events are returned).
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>, WatchError> {
        loop {
            // Created before the frontier is read, so no move is missed
            // (`RangeGroup::applied_changed`).
            let changed: Vec<_> = self
                .groups
                .iter()
                .map(|g| Box::pin(g.applied_changed().notified()))
                .collect();
            let frontier = min_frontier(&self.groups);
            let horizon = self
                .store
                .gc_horizon_over(&self.span.start, self.span.end.as_deref());
            let now = Instant::now();
            let mut out = Vec::new();
            if let Step::Scan { after, upto } = self.cursor.step(frontier, horizon)? {
                let (upto, versions) = self.collect(after, upto)?;
                out = self.cursor.accept(upto, versions, now);
            }
            let force = !out.is_empty();
            out.extend(self.cursor.progress(now, force));
            if !out.is_empty() {
                return Ok(out);
            }
            let quiet = Duration::from_millis(PROGRESS_INTERVAL_MS);
            let _ = tokio::time::timeout(quiet, futures_util::future::select_all(changed)).await;
        }
    }

    /// Every version of the span in `(after, upto]`, or of a narrower
    /// `(after, upto']` when they do not fit one step; returns `upto'`.
    fn collect(
        &self,
        after: Timestamp,
        mut upto: Timestamp,
    ) -> Result<(Timestamp, Vec<RawVersion>), WatchError> {
        let span = (self.span.start.as_slice(), self.span.end.as_deref());
        let limits = SpanPageLimits {
            max_versions: MAX_STEP_VERSIONS,
            max_bytes: MAX_STEP_BYTES,
        };
        'narrow: loop {
            let mut out: Vec<RawVersion> = Vec::new();
            let mut bytes = 0usize;
            let mut resume = None;
            loop {
                let page = self
                    .store
                    .versions_between(span, (after, upto), resume.as_ref(), limits)
                    .map_err(|e| self.storage_error(e))?;
                bytes += page
                    .versions
                    .iter()
                    .map(|v| v.key.len() + v.value.as_ref().map_or(0, Vec::len))
                    .sum::<usize>();
                out.extend(page.versions);
                if out.len() > MAX_STEP_VERSIONS || bytes > MAX_STEP_BYTES {
                    if let Some(mid) = watch::narrow(after, upto) {
                        upto = mid;
                        continue 'narrow;
                    }
                }
                match page.next {
                    None => return Ok((upto, out)),
                    Some(next) => resume = Some(next),
                }
            }
        }
    }

    fn storage_error(&self, e: StorageError) -> WatchError {
        match e {
            StorageError::Compacted { horizon, .. } => WatchError::Compacted {
                requested: self.cursor.after(),
                horizon,
            },
            other => WatchError::Failed {
                code: other.code(),
                message: other.to_string(),
                resume_from: self.cursor.after(),
            },
        }
    }
}

/// Metric: watch streams open on this node (QUIC and HTTP).
pub const METRIC_STREAMS_OPEN: &str = "meridian_watch_streams_open";
/// Metric: watch events (puts and deletes) written to consumers.
pub const METRIC_EVENTS_SENT: &str = "meridian_watch_events_sent_total";
/// Metric: seconds between an event's HLC and its delivery to the stream.
pub const METRIC_EVENT_LAG: &str = "meridian_watch_event_lag_seconds";
/// Metric: watches ended, by `reason`.
pub const METRIC_ENDED: &str = "meridian_watch_ended_total";
/// Every `reason` label of [`METRIC_ENDED`]: the client closed its stream,
/// the consumer stalled (`MER-3008`), history was compacted (`MER-1008`),
/// the node failed or stopped, the request was refused before it started.
pub const ENDED_REASONS: &[&str] = &["client_closed", "lagged", "compacted", "failed", "refused"];

/// The [`METRIC_ENDED`] reason of an end.
pub fn ended_reason(end: Option<&WatchError>) -> &'static str {
    match end {
        None => "client_closed",
        Some(WatchError::Lagged { .. }) => "lagged",
        Some(WatchError::Compacted { .. }) => "compacted",
        Some(_) => "failed",
    }
}

/// Records that `events` were written to a consumer now: the count and,
/// per event, its lag behind its HLC's wall-clock time.
pub fn record_delivered(events: &[WatchEvent]) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut n = 0u64;
    for e in events {
        if matches!(e, WatchEvent::Progress { .. }) {
            continue;
        }
        n += 1;
        let lag_ms = (now_ms - e.ts().physical_unix_ms()).max(0);
        metrics::histogram!(METRIC_EVENT_LAG).record(lag_ms as f64 / 1000.0);
    }
    metrics::counter!(METRIC_EVENTS_SENT).increment(n);
}

/// The consumer end of a pumped watch ([`WatchFeed::pump`]): frames in
/// order, then the end (if the node ended the watch), then nothing.
#[derive(Debug)]
pub struct WatchOutlet {
    frames: tokio::sync::mpsc::Receiver<Vec<WatchEvent>>,
    end: Option<tokio::sync::oneshot::Receiver<WatchError>>,
}

impl WatchOutlet {
    /// The next frame, or the end, or `None` when the stream is over.
    pub async fn recv(&mut self) -> Option<Result<Vec<WatchEvent>, WatchError>> {
        if let Some(frame) = self.frames.recv().await {
            return Some(Ok(frame));
        }
        let end = self.end.take()?;
        end.await.ok().map(Err)
    }
}

impl WatchFeed {
    /// Runs the feed on a task of its own behind a buffer of `buffer`
    /// frames ([`watch::frames`]). When the consumer leaves the buffer full
    /// for `stall`, the watch ends with [`WatchError::Lagged`] naming the
    /// last frame queued (every frame queued is still delivered before the
    /// end: nothing is dropped). The task stops when the outlet is dropped.
    pub fn pump(self, buffer: usize, stall: Duration) -> WatchOutlet {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
        let (end_tx, end_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Some(end) = self.run(&tx, stall).await {
                let _ = end_tx.send(end);
            }
        });
        WatchOutlet {
            frames: rx,
            end: Some(end_rx),
        }
    }

    /// The pump's loop; returns the end to report (`None`: the consumer left).
    async fn run(
        mut self,
        tx: &tokio::sync::mpsc::Sender<Vec<WatchEvent>>,
        stall: Duration,
    ) -> Option<WatchError> {
        let mut delivered = self.after();
        loop {
            let events = tokio::select! {
                next = self.next() => match next {
                    Ok(events) => events,
                    Err(e) => return Some(e),
                },
                () = tx.closed() => return None,
            };
            for frame in watch::frames(events) {
                let last = frame.last().map_or(delivered, WatchEvent::ts);
                match tokio::time::timeout(stall, tx.send(frame)).await {
                    Ok(Ok(())) => delivered = last,
                    Ok(Err(_)) => return None,
                    Err(_) => {
                        return Some(WatchError::Lagged {
                            resume_from: delivered,
                            stalled_ms: u64::try_from(stall.as_millis()).unwrap_or(u64::MAX),
                        })
                    }
                }
            }
        }
    }
}
