//! Watch: the ordering, resume and limit rules of a change stream over a
//! key or a prefix, without IO (../shared/design.md, "Coordination on top
//! of the store"; docs/consistency.md, "Watch", W1-W6).
//!
//! A watch keeps one cursor, `after`: every event at or below it has been
//! emitted (or was before the watch's `from`). Each step reads the
//! frontier `F` of the ranges the span covers (the lowest of them) and,
//! when `F > after`, takes every stored version of the span with a
//! timestamp in `(after, F]`, emits them in `(HLC, key)` order and moves
//! `after` to `F`. Versions at or below a region's frontier are final
//! (every region's writes up to it are applied there, and all regions
//! converge to the same versions), so:
//!
//! - events are ordered by HLC and never repeat (each interval is taken
//!   once, intervals do not overlap);
//! - there are no gaps (an interval is complete when taken);
//! - a watch resumed anywhere from the HLC of the last event or progress
//!   it saw emits exactly the later events, because every region holds the
//!   same versions at or below its frontier.
//!
//! An interval reaching below the gc horizon of a covered range is refused
//! ([`WatchError::Compacted`], naming the horizon) instead of being replayed
//! with collected tombstones missing. The server side
//! (`crate::server::watch`) drives [`Cursor`] with the frontier, the
//! horizon and a storage scan; the SDK (`crate::client::watch`) keeps a
//! [`ResumePoint`].

use std::time::{Duration, Instant};

use crate::error_code::{ApiError, ErrorCode};
use crate::storage::RawVersion;
use crate::types::{prefix_end, Timestamp};

/// How often a watch with nothing to report sends a progress event (if its
/// frontier moved), ms: the longest a client waits to learn how current
/// it is, and how stale a resume point can get on an idle key.
pub const PROGRESS_INTERVAL_MS: u64 = 1_000;
/// How far ahead of the serving node's clock a watch's `from` may be, ms.
/// A watch from a future timestamp waits until the frontier passes it;
/// one further ahead than this is almost certainly not an HLC of this
/// cluster (a typo, or a unit mix-up) and is refused.
pub const MAX_FROM_AHEAD_MS: u64 = 24 * 3600 * 1000;
/// Most versions one step holds in memory before emitting them. A step
/// whose interval holds more is narrowed (halved) until it fits, so a
/// watch far behind catches up in bounded steps. At least one transaction
/// (`limits::HARD_MAX_TXN_OPS`), whose versions share one timestamp.
pub const MAX_STEP_VERSIONS: usize = crate::limits::HARD_MAX_TXN_OPS;
/// Most key plus value bytes one step holds in memory (same narrowing);
/// at least one request's worth (`limits::HARD_MAX_REQUEST_BYTES`).
pub const MAX_STEP_BYTES: usize = crate::limits::HARD_MAX_REQUEST_BYTES;
/// Most events in one response frame.
pub const MAX_FRAME_EVENTS: usize = 256;
/// Most key plus value bytes in one response frame (a frame always holds
/// at least one event, so one large value travels alone).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// The keys a watch covers: `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpan {
    /// First key (inclusive).
    pub start: Vec<u8>,
    /// End key (exclusive); `None` is the end of the keyspace.
    pub end: Option<Vec<u8>>,
}

impl WatchSpan {
    /// Exactly one key.
    pub fn key(key: &[u8]) -> WatchSpan {
        let mut end = key.to_vec();
        end.push(0x00);
        WatchSpan {
            start: key.to_vec(),
            end: Some(end),
        }
    }

    /// Every key starting with `prefix` (the empty prefix: every key).
    pub fn prefix(prefix: &[u8]) -> WatchSpan {
        WatchSpan {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }

    /// The span a request names.
    pub fn of(key: &[u8], prefix: bool) -> WatchSpan {
        if prefix {
            WatchSpan::prefix(key)
        } else {
            WatchSpan::key(key)
        }
    }

    /// Whether `key` is in the span.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }
}

/// One event of a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// `key` was set to `value` at `ts`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
        /// The write's HLC version.
        ts: Timestamp,
    },
    /// `key` was deleted at `ts`.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The delete's HLC version.
        ts: Timestamp,
    },
    /// Every event of the span at or below `frontier` has been sent: the
    /// serving region's frontier for the span. Resuming from it is exact.
    Progress {
        /// The frontier.
        frontier: Timestamp,
    },
}

impl WatchEvent {
    /// The event's timestamp (the frontier of a progress event): the
    /// resume point once the event has been seen.
    pub fn ts(&self) -> Timestamp {
        match self {
            WatchEvent::Put { ts, .. } | WatchEvent::Delete { ts, .. } => *ts,
            WatchEvent::Progress { frontier } => *frontier,
        }
    }

    /// Key plus value bytes (zero for progress).
    pub fn size(&self) -> usize {
        match self {
            WatchEvent::Put { key, value, .. } => key.len() + value.len(),
            WatchEvent::Delete { key, .. } => key.len(),
            WatchEvent::Progress { .. } => 0,
        }
    }

    fn of(v: RawVersion) -> WatchEvent {
        match v.value {
            Some(value) => WatchEvent::Put {
                key: v.key,
                value,
                ts: v.version,
            },
            None => WatchEvent::Delete {
                key: v.key,
                ts: v.version,
            },
        }
    }
}

/// Why a watch was refused or ended. Every variant says where to resume.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The watch needs history below the gc horizon of a range it covers:
    /// events after `requested` may have been collected (a deleted key's
    /// tombstone among them), so replaying from there could skip them.
    /// Nothing was sent for the interval. Read the span's state at
    /// `horizon` or later and watch from that read's timestamp.
    #[error(
        "history after {requested} is compacted (the gc horizon of the watched keys is {horizon}); the oldest timestamp a watch can resume from is {horizon}: read the keys at or after it (kv get/range --at), then watch from that read's timestamp"
    )]
    Compacted {
        /// The cursor the watch needed to continue from.
        requested: Timestamp,
        /// The oldest resumable timestamp.
        horizon: Timestamp,
    },
    /// The consumer did not read its events for longer than the watch's
    /// stall timeout while its buffer was full: the watch was ended, with
    /// every event up to `resume_from` delivered and none dropped. Watch
    /// again from `resume_from`.
    #[error(
        "the watch consumer fell behind (its buffer stayed full for {stalled_ms} ms); every event up to {resume_from} was sent: watch again from {resume_from}"
    )]
    Lagged {
        /// The last event (or progress) delivered before the end.
        resume_from: Timestamp,
        /// How long the buffer stayed full, ms.
        stalled_ms: u64,
    },
    /// The serving node could not go on (its storage failed, the range left
    /// it, it is shutting down); nothing after `resume_from` was sent.
    /// Watch again from `resume_from`, on this node or another.
    #[error("{message}; every event up to {resume_from} was sent: watch again from {resume_from}")]
    Failed {
        /// The underlying stable code.
        code: ErrorCode,
        /// What failed.
        message: String,
        /// The last event (or progress) delivered before the end.
        resume_from: Timestamp,
    },
}

impl WatchError {
    /// The timestamp to watch again from.
    pub fn resume_from(&self) -> Timestamp {
        match self {
            WatchError::Compacted { horizon, .. } => *horizon,
            WatchError::Lagged { resume_from, .. } | WatchError::Failed { resume_from, .. } => {
                *resume_from
            }
        }
    }

    /// The user-facing error (stable code, message with the resume point).
    pub fn to_api(&self) -> ApiError {
        let code = match self {
            WatchError::Compacted { .. } => ErrorCode::Compacted,
            WatchError::Lagged { .. } => ErrorCode::WatchLagged,
            WatchError::Failed { code, .. } => *code,
        };
        ApiError::new(code, self.to_string())
    }
}

/// Parses an HLC timestamp as the CLI and the gateway print them: either
/// the packed integer (`version`, `served_at` in --json output) or
/// `UNIX_MS.LOGICAL` (the `Display` form, `OK 1718000000000.3`).
pub fn parse_hlc(s: &str) -> Result<Timestamp, ApiError> {
    let bad = |why: &str| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "malformed HLC timestamp {s:?}: {why}; give the packed integer (as `version` in --json output) or UNIX_MS.LOGICAL (as printed by `kv put`)"
            ),
        )
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('.') {
        None if digits(s) => s.parse().map(Timestamp).map_err(|_| bad("out of range")),
        Some((ms, logical)) if digits(ms) && digits(logical) => {
            let ms: i64 = ms.parse().map_err(|_| bad("milliseconds out of range"))?;
            let logical: u64 = logical
                .parse()
                .map_err(|_| bad("logical counter out of range"))?;
            Timestamp::from_parts(ms, logical)
                .ok_or_else(|| bad("before 2024-01-01 or past the HLC's range"))
        }
        _ => Err(bad("not digits")),
    }
}

/// Checks a watch's `from` against the serving node's clock `now`
/// ([`MAX_FROM_AHEAD_MS`]).
pub fn check_from(from: Timestamp, now: Timestamp) -> Result<(), ApiError> {
    let ahead_ms = from.physical_unix_ms() - now.physical_unix_ms();
    if ahead_ms > i64::try_from(MAX_FROM_AHEAD_MS).unwrap_or(i64::MAX) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "watch from {from} is {ahead_ms} ms ahead of this node's clock ({now}); at most {MAX_FROM_AHEAD_MS} ms is accepted: use an HLC timestamp this cluster printed"
            ),
        ));
    }
    Ok(())
}

/// What a watch does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing new is final yet: wait for the frontier to move.
    Wait,
    /// Read the span's versions in `(after, upto]` and pass them to
    /// [`Cursor::accept`].
    Scan {
        /// Exclusive lower bound (the cursor).
        after: Timestamp,
        /// Inclusive upper bound (the frontier).
        upto: Timestamp,
    },
}

/// The cursor of one watch (module docs).
#[derive(Clone, Debug)]
pub struct Cursor {
    /// Every event at or below this has been emitted (or precedes `from`).
    after: Timestamp,
    /// The frontier of the last progress event (or the start).
    progressed: Timestamp,
    /// When the last progress or events were emitted.
    last_emit: Instant,
}

impl Cursor {
    /// A cursor emitting events strictly after `from`.
    pub fn new(from: Timestamp, now: Instant) -> Cursor {
        Cursor {
            after: from,
            progressed: from,
            last_emit: now,
        }
    }

    /// Everything at or below this has been emitted.
    pub fn after(&self) -> Timestamp {
        self.after
    }

    /// The next step given the span's frontier and gc horizon (the highest
    /// over its ranges).
    pub fn step(&self, frontier: Timestamp, horizon: Timestamp) -> Result<Step, WatchError> {
        if frontier <= self.after {
            return Ok(Step::Wait);
        }
        // docs/consistency.md W4: never replay an interval whose
        // tombstones gc may have collected.
        if self.after < horizon {
            return Err(WatchError::Compacted {
                requested: self.after,
                horizon,
            });
        }
        Ok(Step::Scan {
            after: self.after,
            upto: frontier,
        })
    }

    /// Takes the versions of `(after, upto]` (every one of them: the
    /// caller read the whole interval) and returns them as events in
    /// `(HLC, key)` order, moving the cursor to `upto`. A version outside
    /// the interval would break ordering or exactly-once and is dropped
    /// (a debug assertion: the scan's bounds exclude it).
    pub fn accept(
        &mut self,
        upto: Timestamp,
        mut versions: Vec<RawVersion>,
        now: Instant,
    ) -> Vec<WatchEvent> {
        debug_assert!(upto > self.after, "an interval must move the cursor");
        let after = self.after;
        debug_assert!(versions
            .iter()
            .all(|v| v.version > after && v.version <= upto));
        // docs/consistency.md W1/W5: nothing at or below the cursor, ever.
        versions.retain(|v| v.version > after && v.version <= upto);
        versions.sort_by(|a, b| (a.version, &a.key).cmp(&(b.version, &b.key)));
        self.after = upto;
        if !versions.is_empty() {
            self.last_emit = now;
        }
        versions.into_iter().map(WatchEvent::of).collect()
    }

    /// A progress event, when one is due: the cursor moved past the last
    /// progress and nothing was emitted for [`PROGRESS_INTERVAL_MS`], or
    /// `force` (the first one after events, so a client learns at once
    /// that the interval is complete).
    pub fn progress(&mut self, now: Instant, force: bool) -> Option<WatchEvent> {
        let quiet = now.saturating_duration_since(self.last_emit)
            >= Duration::from_millis(PROGRESS_INTERVAL_MS);
        if self.after <= self.progressed || !(quiet || force) {
            return None;
        }
        self.progressed = self.after;
        self.last_emit = now;
        Some(WatchEvent::Progress {
            frontier: self.after,
        })
    }
}

/// Where to narrow an interval `(after, upto]` whose versions do not fit
/// one step ([`MAX_STEP_VERSIONS`], [`MAX_STEP_BYTES`]): its midpoint, or
/// `None` when it is one timestamp wide (its versions are one write's at
/// most per range, which the caller takes whole).
pub fn narrow(after: Timestamp, upto: Timestamp) -> Option<Timestamp> {
    let width = upto.0.checked_sub(after.0)?;
    (width > 1).then(|| Timestamp(after.0 + width / 2))
}

/// Cuts events into response frames of at most [`MAX_FRAME_EVENTS`]
/// events and about [`MAX_FRAME_BYTES`] bytes (at least one event each),
/// keeping their order. Events of one timestamp (one transaction's writes
/// in a range) never straddle two frames, whatever the bounds say: a
/// resume point at a frame's last timestamp is then exact.
pub fn frames(events: Vec<WatchEvent>) -> Vec<Vec<WatchEvent>> {
    let mut out: Vec<Vec<WatchEvent>> = Vec::new();
    let mut bytes = 0usize;
    for e in events {
        let size = e.size();
        let fits = out.last().is_some_and(|f| {
            let same_ts = f.last().is_some_and(|l| l.ts() == e.ts());
            same_ts || (f.len() < MAX_FRAME_EVENTS && bytes.saturating_add(size) <= MAX_FRAME_BYTES)
        });
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(frame) = out.last_mut() {
            frame.push(e);
        }
    }
    out
}

/// A client's resume point: the highest timestamp all of whose events
/// (or a progress) were seen, starting at the watch's `from`. Watching
/// again from it, in any region, yields exactly the events not yet seen
/// (docs/consistency.md W3). Events of one timestamp (one transaction)
/// count as seen together: a consumer that stops inside such a group gets
/// the whole group again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePoint(pub Timestamp);

impl ResumePoint {
    /// Records that `event` was seen; `next` is the event after it in the
    /// same frame, if any (frames never split a timestamp, [`frames`]).
    pub fn observe(&mut self, event: &WatchEvent, next: Option<&WatchEvent>) {
        let ts = event.ts();
        let whole = next.is_none_or(|n| n.ts() != ts);
        let seen = if whole { ts } else { ts.prev() };
        self.0 = self.0.max(seen);
    }
}

#[cfg(test)]
mod tests;
