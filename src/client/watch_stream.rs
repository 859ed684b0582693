//! The SDK side of a watch: [`Client::watch`] opens one QUIC stream to a
//! node, and [`WatchStream`] reads its frames lazily, one per `next` (so
//! a consumer that stops reading holds the node back through QUIC flow
//! control, and the node ends the watch with `MER-3008` rather than drop
//! anything). It keeps the [`ResumePoint`]: after any end, watching again
//! from [`WatchEnd::resume_from`] (in any region) yields exactly the
//! events not yet seen (docs/consistency.md, "Watch").

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::routes::Target;
use super::{lock, Client, ClientError};
use crate::error_code::{ApiError, ErrorCode};
use crate::transport;
use crate::types::Timestamp;
use crate::watch::{ResumePoint, WatchEvent};
use crate::wire::{self, ResponseBodyV1, ResponseV1, WatchFrameV1, WatchRequestV1};

/// Largest watch frame the SDK reads (a node's frames are far smaller:
/// `watch::MAX_FRAME_BYTES`, or one large transaction).
const MAX_WATCH_FRAME_BYTES: usize = crate::limits::HARD_MAX_FRAME_BYTES;

/// What to watch besides the key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Watch every key starting with the given key.
    pub prefix: bool,
    /// Only events strictly after this HLC timestamp (a resume point);
    /// `None`: from the serving region's frontier now.
    pub from: Option<Timestamp>,
}

/// Why a watch ended, and where to resume it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} (watch again from {resume_from})")]
pub struct WatchEnd {
    /// The stable code and message (`MER-3008` a stalled consumer,
    /// `MER-1008` compacted history, `MER-3003` a lost connection).
    pub error: ApiError,
    /// Watch again from here ([`WatchOptions::from`]); nothing after it was
    /// seen, everything up to it was (for `MER-1008`: the oldest
    /// resumable timestamp; re-read the keys there first).
    pub resume_from: Timestamp,
}

impl WatchEnd {
    /// The options that resume the watch this ended.
    pub fn resume(&self, prefix: bool) -> WatchOptions {
        WatchOptions {
            prefix,
            from: Some(self.resume_from),
        }
    }
}

/// An open watch (see the module docs). Not `Clone`: one consumer.
#[derive(Debug)]
pub struct WatchStream {
    recv: quinn::RecvStream,
    /// Kept so the stream stays open until the watch is dropped.
    _send: quinn::SendStream,
    node: SocketAddr,
    after: Timestamp,
    pending: VecDeque<WatchEvent>,
    resume: ResumePoint,
    ended: bool,
}

impl Client {
    /// Opens a watch on `key` (or every key under it with
    /// `opts.prefix`) at a node of this client's region. Refusals (a bad
    /// key, a `from` too far ahead, too many watches on the connection)
    /// are returned here; later ends come from [`WatchStream::next`].
    pub async fn watch(
        &self,
        key: impl AsRef<[u8]>,
        opts: WatchOptions,
    ) -> Result<WatchStream, ClientError> {
        let req = wire::RequestV1::Watch(WatchRequestV1 {
            key: key.as_ref().to_vec(),
            prefix: opts.prefix,
            from: opts.from.map(|t| t.0),
        });
        let frame = wire::encode_request(&req);
        let mut last = String::new();
        for _ in 0..=self.cfg.endpoints.len() {
            let addr = lock(&self.routes).pick(&Target::Any, Instant::now());
            match self.open_watch_at(addr, &frame, opts).await {
                Ok(stream) => return Ok(stream),
                Err(Opening::Refused(e)) => return Err(e),
                Err(Opening::Unreachable(e)) => {
                    lock(&self.routes).unreachable(addr, Instant::now());
                    last = e;
                }
            }
        }
        Err(self.connect_error(last))
    }

    async fn open_watch_at(
        &self,
        addr: SocketAddr,
        frame: &[u8],
        opts: WatchOptions,
    ) -> Result<WatchStream, Opening> {
        let unreachable = |e: String| Opening::Unreachable(format!("{addr}: {e}"));
        let (conn, _) = self.connection(addr).await.map_err(Opening::Unreachable)?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let opened = async {
            transport::write_frame(&mut send, frame)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            transport::read_frame(&mut recv, MAX_WATCH_FRAME_BYTES)
                .await
                .map_err(|e| unreachable(e.to_string()))
        };
        let first = tokio::time::timeout(self.cfg.request_timeout, opened)
            .await
            .map_err(|_| unreachable("no answer to the watch request in time".into()))??;
        let reply = wire::decode_response(&first)
            .map_err(|e| Opening::Refused(ClientError::Protocol(e.to_string())))?;
        let after = match reply {
            ResponseV1::Ok {
                body: ResponseBodyV1::Watch(WatchFrameV1::Created { after }),
                ..
            } => Timestamp(after),
            ResponseV1::Err { code, message } => {
                return Err(Opening::Refused(wire::api_error(code, message).into()))
            }
            other => {
                return Err(Opening::Refused(ClientError::Protocol(format!(
                    "unexpected first watch frame: {other:?}"
                ))))
            }
        };
        let start = opts.from.unwrap_or(after);
        Ok(WatchStream {
            recv,
            _send: send,
            node: addr,
            after,
            pending: VecDeque::new(),
            resume: ResumePoint(start),
            ended: false,
        })
    }
}

/// Why opening a watch at one node failed.
enum Opening {
    /// The node answered with a refusal: final.
    Refused(ClientError),
    /// The node could not be reached: try another.
    Unreachable(String),
}

impl WatchStream {
    /// The node serving the watch.
    pub fn node(&self) -> SocketAddr {
        self.node
    }

    /// The watch emits events strictly after this (its `from`, or the
    /// serving region's frontier when it opened).
    pub fn started_after(&self) -> Timestamp {
        self.after
    }

    /// Where to resume if the watch were dropped now: every event at or
    /// below it has been returned by [`WatchStream::next`], none above it.
    pub fn resume_point(&self) -> Timestamp {
        self.resume.0
    }

    /// The next event: a put, a delete or a progress, in HLC order; an
    /// `Err` once when the watch ends (with where to resume), then `None`.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, WatchEnd>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.resume.observe(&event, self.pending.front());
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            match self.read_frame().await {
                Ok(events) => self.pending.extend(events),
                Err(end) => {
                    self.ended = true;
                    return Some(Err(end));
                }
            }
        }
    }

    /// The watch as a `futures` stream of [`WatchStream::next`]'s items.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<WatchEvent, WatchEnd>> {
        futures_util::stream::unfold(self, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })
    }

    async fn read_frame(&mut self) -> Result<Vec<WatchEvent>, WatchEnd> {
        let resume_from = self.resume.0;
        let end = |code: ErrorCode, message: String| WatchEnd {
            error: ApiError::new(code, message),
            resume_from,
        };
        let raw = match transport::read_frame(&mut self.recv, MAX_WATCH_FRAME_BYTES).await {
            Ok(raw) => raw,
            Err(transport::FrameError::Read(quinn::ReadError::Reset(code))) => {
                return Err(end(
                    ErrorCode::WatchLagged,
                    format!("the node ended the watch (reset {code}): this consumer fell behind; every event up to {resume_from} was received: watch again from {resume_from}"),
                ))
            }
            Err(e) => {
                return Err(end(
                    ErrorCode::Unavailable,
                    format!("the watch stream broke ({e}); every event up to {resume_from} was received: watch again from {resume_from}"),
                ))
            }
        };
        match wire::decode_response(&raw) {
            Ok(ResponseV1::Ok {
                body: ResponseBodyV1::Watch(frame),
                ..
            }) => Ok(match frame {
                WatchFrameV1::Events(events) => events.into_iter().map(WatchEvent::from).collect(),
                WatchFrameV1::Progress { frontier } => vec![WatchEvent::Progress {
                    frontier: Timestamp(frontier),
                }],
                WatchFrameV1::Created { .. } => Vec::new(),
            }),
            Ok(ResponseV1::WatchEnded {
                code,
                message,
                resume_from,
            }) => Err(WatchEnd {
                error: wire::api_error(code, message),
                resume_from: Timestamp(resume_from),
            }),
            Ok(other) => Err(end(
                ErrorCode::Internal,
                format!("unexpected watch frame: {other:?}"),
            )),
            Err(e) => Err(end(ErrorCode::MalformedRequest, e.to_string())),
        }
    }
}
