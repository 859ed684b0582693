//! `GET /v1/watch/{key}`: a watch as a stream of newline-delimited JSON
//! (`application/x-ndjson`), with the QUIC watch's semantics and codes
//! (docs/consistency.md, "Watch", W1-W6): the same
//! [`WatchFeed`](crate::engine::WatchFeed) behind the same pump
//! ([`WatchFeed::pump`](crate::engine::WatchFeed::pump)), written one
//! [`WatchLine`] per line: `created`, then `put`, `delete` and `progress`
//! in HLC order, and, if the node ends the watch, one final `error` line
//! with the code and `resume_from` (`MER-3008` a consumer too slow,
//! `MER-1008` history compacted, `MER-3003` the node stopping).
//!
//! **Memory.** A watch holds at most: the step the feed is sending
//! (`limits.max_request_bytes` of keys and values, or one timestamp's
//! versions when larger, plus per-version overhead), the pump's buffer of
//! [`HTTP_WATCH_MAX_BUFFER_FRAMES`] frames (fewer if
//! `limits.watch_buffer_frames` says so), the frame being written, and one
//! event's JSON line. It reserves that worst case
//! ([`reservation_bytes`]) of the gateway's response budget
//! (`server.http_response_budget_bytes`, `budget.rs`) for its whole life;
//! a watch that cannot reserve within `RESPONSE_BUDGET_WAIT` is refused
//! with 503 `MER-3003` before it starts.
//!
//! **A slow consumer** is one whose connection does not take the lines:
//! hyper stops polling the body, the pump's buffer fills, and after
//! `limits.watch_stall_timeout_ms` the pump ends the watch with
//! `MER-3008`; every frame buffered is still written before the `error`
//! line, so its `resume_from` is exact (W6). A consumer that reads nothing
//! at all loses its connection to the gateway's idle timeout, which frees
//! the reservation.
//!
//! **Resume points.** The node's end carries its own; when the gateway
//! itself ends a watch (the node stopping) it names the last event of the
//! last frame it wrote whole, so a timestamp's events are never split
//! across a resume (W3).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::budget::Reservation;
use super::dto::{b64, utf8, KeyPath};
use super::error::{http_remedy, ErrorBody, GatewayError};
use super::{observe, GatewayState};
use crate::config::Limits;
use crate::engine::watch::{self as feed, WatchOutlet};
use crate::error_code::{ApiError, ErrorCode};
use crate::types::Timestamp;
use crate::watch::{self, WatchError, WatchEvent, MAX_FRAME_BYTES, MAX_FRAME_EVENTS};

/// Content type of a watch stream: one JSON object per line.
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";
/// Most frames the pump buffers ahead of an HTTP watch stream (at most
/// `limits.watch_buffer_frames`). Smaller than the QUIC default, as
/// every buffered frame is reserved from the response budget and hyper's
/// write buffer queues behind it anyway.
pub const HTTP_WATCH_MAX_BUFFER_FRAMES: usize = 2;
/// Memory of one event beyond its key and value bytes (the event, its
/// place in a frame, allocation slack), for the reservation.
const EVENT_OVERHEAD_BYTES: usize = 128;
/// Bytes of a JSON line per byte of key or value: each is written as text
/// (a control byte escapes to six, `\u0000`) and as base64 (4 per 3).
const LINE_BYTES_PER_DATA_BYTE: usize = 8;
/// Bytes of a JSON line beyond its key and value (field names, numbers).
const LINE_FIXED_BYTES: usize = 512;

/// Tells watch streams that the gateway stopped: its sender lives in
/// [`super::serve`]'s future, so aborting the gateway drops it, and every
/// stream ends with a `MER-3003` line rather than outliving the node.
#[derive(Clone, Debug)]
pub(crate) struct Stopping(pub(crate) tokio::sync::watch::Receiver<()>);

/// Query of `GET /v1/watch/{key}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WatchQuery {
    /// Watch every key that starts with `{key}` (default false: the key
    /// alone).
    pub(crate) prefix: Option<bool>,
    /// Emit only changes after this HLC timestamp: a packed integer (an
    /// event's `ts`, a progress's `frontier`, an error line's
    /// `resume_from`) or `unix_ms.logical` (the `_str` forms). Default:
    /// from now. Below the garbage-collection horizon the stream ends at
    /// once with an `error` line `MER-1008` naming the oldest resumable
    /// timestamp; more than a day ahead of the node's clock is refused
    /// (400 MER-1007).
    #[param(pattern = r"^([0-9]{1,20}|[0-9]{1,16}\.[0-9]{1,7})$")]
    pub(crate) from: Option<String>,
}

/// One line of a watch stream, told apart by `type`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum WatchLine {
    /// The first line: the watch is open and emits changes after `after`.
    Created {
        /// Changes at or below this are not emitted.
        after: u64,
        /// `after` as `unix_ms.logical`.
        after_str: String,
    },
    /// A key was written.
    Put {
        /// The key as UTF-8 text (`null` when it is not UTF-8).
        key: Option<String>,
        /// The key in standard base64.
        key_b64: String,
        /// The value as UTF-8 text (`null` when it is not UTF-8).
        value: Option<String>,
        /// The value in standard base64.
        value_b64: String,
        /// The write's HLC timestamp (its version).
        ts: u64,
        /// `ts` as `unix_ms.logical`.
        ts_str: String,
    },
    /// A key was deleted.
    Delete {
        /// The key as UTF-8 text (`null` when it is not UTF-8).
        key: Option<String>,
        /// The key in standard base64.
        key_b64: String,
        /// The tombstone's HLC timestamp.
        ts: u64,
        /// `ts` as `unix_ms.logical`.
        ts_str: String,
    },
    /// Every change at or below `frontier` has been sent (at least every
    /// second while nothing changes).
    Progress {
        /// The region's frontier over the watched keys.
        frontier: u64,
        /// `frontier` as `unix_ms.logical`.
        frontier_str: String,
    },
    /// The last line: the node ended the watch. Watch again with
    /// `from=resume_from` to get every later change exactly once.
    Error {
        /// `MER-3008` (consumer too slow), `MER-1008` (history compacted),
        /// `MER-3003` (the node is stopping), or a storage failure's code.
        #[schema(example = "MER-3008")]
        code: String,
        /// What happened.
        message: String,
        /// What to do.
        remedy: String,
        /// Where to resume: pass it as `from`.
        resume_from: u64,
        /// `resume_from` as `unix_ms.logical`.
        resume_from_str: String,
    },
}

impl From<&WatchEvent> for WatchLine {
    fn from(e: &WatchEvent) -> Self {
        match e {
            WatchEvent::Put { key, value, ts } => WatchLine::Put {
                key: utf8(key),
                key_b64: b64(key),
                value: utf8(value),
                value_b64: b64(value),
                ts: ts.0,
                ts_str: ts.to_string(),
            },
            WatchEvent::Delete { key, ts } => WatchLine::Delete {
                key: utf8(key),
                key_b64: b64(key),
                ts: ts.0,
                ts_str: ts.to_string(),
            },
            WatchEvent::Progress { frontier } => WatchLine::Progress {
                frontier: frontier.0,
                frontier_str: frontier.to_string(),
            },
        }
    }
}

impl WatchLine {
    fn end(e: &ApiError, resume_from: Timestamp) -> WatchLine {
        WatchLine::Error {
            code: e.code.as_str().to_owned(),
            message: e.message.clone(),
            remedy: http_remedy(e.code).to_owned(),
            resume_from: resume_from.0,
            resume_from_str: resume_from.to_string(),
        }
    }

    /// The line's bytes, newline included.
    fn encode(&self) -> Bytes {
        // A WatchLine holds strings and integers only: encoding cannot
        // fail; should it, the line is empty rather than a panic.
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        Bytes::from(out)
    }
}

/// Frames the pump buffers for an HTTP watch under `limits`.
pub(crate) fn buffer_frames(limits: &Limits) -> usize {
    limits
        .watch_buffer_frames
        .clamp(1, HTTP_WATCH_MAX_BUFFER_FRAMES)
}

/// The most memory one HTTP watch holds under `limits` (see the module
/// docs): reserved from the response budget for the watch's life.
pub(crate) fn reservation_bytes(limits: &Limits) -> usize {
    let event = limits.max_key_bytes + limits.max_value_bytes;
    let frame = MAX_FRAME_BYTES.max(event) + MAX_FRAME_EVENTS * EVENT_OVERHEAD_BYTES;
    let step =
        limits.max_request_bytes.max(event) + watch::MAX_STEP_VERSIONS * EVENT_OVERHEAD_BYTES;
    let line = LINE_BYTES_PER_DATA_BYTE * event + LINE_FIXED_BYTES;
    // The pump's buffer, plus the frame the pump is sending and the one
    // being written here.
    let frames = buffer_frames(limits) + 2;
    step.saturating_add(frames.saturating_mul(frame))
        .saturating_add(line)
}

/// Watches a key or a prefix as newline-delimited JSON.
#[utoipa::path(get, path = "/v1/watch/{key}", tag = "watch",
    params(KeyPath, WatchQuery),
    responses(
        (status = 200, description = "The watch, one JSON object per line until the client closes it: a `created` line, then `put`, `delete` and `progress` lines in HLC order (ties in key order), no gaps, no duplicates; if the node ends the watch, a last `error` line with `code` (MER-3008 consumer too slow, MER-1008 compacted, MER-3003 node stopping) and `resume_from`",
            content_type = "application/x-ndjson", body = WatchLine,
            example = json!({"type": "put", "key": "app/config/db", "key_b64": "YXBwL2NvbmZpZy9kYg==", "value": "postgres://db1:5432", "value_b64": "cG9zdGdyZXM6Ly9kYjE6NTQzMg==", "ts": 384315472163635200_u64, "ts_str": "1795639112708.0"})),
        (status = 400, description = "Bad key, prefix or from, more than a day ahead of the node's clock, or an unknown parameter (MER-1007); nothing changed", body = ErrorBody),
        (status = 413, description = "Key longer than max_key_bytes (MER-1001)", body = ErrorBody),
        (status = 503, description = "Open watches and range replies hold the gateway's whole memory budget (server.http_response_budget_bytes) for 10 s (MER-3003); no watch opened", body = ErrorBody),
    ))]
pub(crate) async fn watch(
    State(state): State<GatewayState>,
    Extension(stopping): Extension<Stopping>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Response {
    observe(&state, "watch", async {
        let opened = open(&state, path, q).await;
        if opened.is_err() {
            metrics::counter!(feed::METRIC_ENDED, "reason" => "refused").increment(1);
        }
        let (outlet, after, reservation) = opened?;
        let lines = Lines::new(outlet, after, stopping, reservation);
        let stream = futures_util::stream::unfold(lines, |mut lines| async move {
            let line = lines.next_line().await?;
            Some((Ok::<Bytes, Infallible>(line), lines))
        });
        Ok((
            [
                (header::CONTENT_TYPE, NDJSON_CONTENT_TYPE),
                (header::CACHE_CONTROL, "no-store"),
            ],
            Body::from_stream(stream),
        )
            .into_response())
    })
    .await
}

async fn open(
    state: &GatewayState,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<(WatchOutlet, Timestamp, Reservation), GatewayError> {
    let key = super::extract::path_key(path)?;
    let q = super::extract::query(q)?;
    let from = q.from.as_deref().map(watch::parse_hlc).transpose()?;
    let limits = state.engine.limits();
    // Reserved before the feed exists, so a refused watch holds nothing.
    let reservation = state.responses.reserve(reservation_bytes(limits)).await?;
    let feed = state
        .engine
        .open_watch(key.as_bytes(), q.prefix.unwrap_or(false), from)?;
    let after = feed.after();
    let stall = Duration::from_millis(limits.watch_stall_timeout_ms);
    Ok((feed.pump(buffer_frames(limits), stall), after, reservation))
}

/// A watch's lines, produced as the connection takes them. Counts itself
/// open from creation to drop, and ended with the reason it ended for.
struct Lines {
    created: Option<Bytes>,
    frame: std::vec::IntoIter<WatchEvent>,
    outlet: WatchOutlet,
    stopping: Stopping,
    /// The last event of the last frame written whole (or the start).
    delivered: Timestamp,
    done: bool,
    reason: &'static str,
    _reservation: Reservation,
}

impl Lines {
    fn new(
        outlet: WatchOutlet,
        after: Timestamp,
        stopping: Stopping,
        reservation: Reservation,
    ) -> Lines {
        metrics::gauge!(feed::METRIC_STREAMS_OPEN).increment(1.0);
        let created = WatchLine::Created {
            after: after.0,
            after_str: after.to_string(),
        };
        Lines {
            created: Some(created.encode()),
            frame: Vec::new().into_iter(),
            outlet,
            stopping,
            delivered: after,
            done: false,
            reason: feed::ended_reason(None),
            _reservation: reservation,
        }
    }

    /// The next line, or `None` once the final one was returned.
    async fn next_line(&mut self) -> Option<Bytes> {
        if let Some(created) = self.created.take() {
            return Some(created);
        }
        if self.done {
            return None;
        }
        if let Some(event) = self.frame.next() {
            feed::record_delivered(std::slice::from_ref(&event));
            if self.frame.as_slice().is_empty() {
                self.delivered = event.ts();
            }
            return Some(WatchLine::from(&event).encode());
        }
        // Between frames only, so a resume point never splits one.
        let next = tokio::select! {
            next = self.outlet.recv() => next,
            _ = self.stopping.0.changed() => return Some(self.stopped()),
        };
        match next {
            Some(Ok(frame)) => {
                self.frame = frame.into_iter();
                Box::pin(self.next_line()).await
            }
            Some(Err(end)) => Some(self.ended(&end)),
            // The pump stops without an end only if it failed itself.
            None => Some(self.finish(
                "failed",
                &ApiError::new(ErrorCode::Internal, "the watch's feed stopped"),
                self.delivered,
            )),
        }
    }

    fn ended(&mut self, end: &WatchError) -> Bytes {
        let reason = feed::ended_reason(Some(end));
        self.finish(reason, &end.to_api(), end.resume_from())
    }

    fn stopped(&mut self) -> Bytes {
        let e = ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "the node's gateway is stopping; every event up to {} was sent: watch again from there, on this node once it is back or on another",
                self.delivered
            ),
        );
        self.finish("failed", &e, self.delivered)
    }

    fn finish(&mut self, reason: &'static str, e: &ApiError, resume_from: Timestamp) -> Bytes {
        self.done = true;
        self.reason = reason;
        tracing::debug!(reason, %resume_from, "HTTP watch ended");
        WatchLine::end(e, resume_from).encode()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        metrics::gauge!(feed::METRIC_STREAMS_OPEN).decrement(1.0);
        metrics::counter!(feed::METRIC_ENDED, "reason" => self.reason).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worst_case_line_fits_its_share_of_the_reservation() {
        let limits = Limits::default();
        let key = vec![0x01u8; limits.max_key_bytes];
        let value = vec![0x00u8; limits.max_value_bytes];
        let line = WatchLine::from(&WatchEvent::Put {
            key,
            value,
            ts: Timestamp(u64::MAX),
        })
        .encode();
        let event = limits.max_key_bytes + limits.max_value_bytes;
        assert!(line.len() <= LINE_BYTES_PER_DATA_BYTE * event + LINE_FIXED_BYTES);
        assert!(reservation_bytes(&limits) > line.len() + limits.max_request_bytes);
    }

    #[test]
    fn the_buffer_is_at_most_the_http_bound_and_at_least_one_frame() {
        let mut limits = Limits::default();
        assert_eq!(buffer_frames(&limits), HTTP_WATCH_MAX_BUFFER_FRAMES);
        limits.watch_buffer_frames = 1;
        assert_eq!(buffer_frames(&limits), 1);
        let small = reservation_bytes(&limits);
        limits.watch_buffer_frames = 1_000;
        assert!(reservation_bytes(&limits) > small);
    }

    #[test]
    fn lines_are_tagged_json_objects_ending_in_a_newline() {
        let e = ApiError::new(ErrorCode::WatchLagged, "too slow");
        let line = WatchLine::end(&e, Timestamp(42)).encode();
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "MER-3008");
        assert_eq!(v["resume_from"], 42);
        let put = WatchLine::from(&WatchEvent::Put {
            key: b"k".to_vec(),
            value: vec![0xff],
            ts: Timestamp(7),
        })
        .encode();
        let v: serde_json::Value = serde_json::from_slice(&put).unwrap();
        assert_eq!(v["type"], "put");
        assert_eq!(v["key"], "k");
        assert!(v["value"].is_null());
        assert_eq!(v["value_b64"], "/w==");
    }
}
