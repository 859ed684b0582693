//! The byte budget of range pages being read and sent at once (issue 12,
//! "total memory of concurrent responses bounded").
//!
//! A range request reserves its page's worst case in bytes
//! ([`Limits::page_reservation_bytes`]) before the engine reads the page, and keeps
//! the reservation until the last chunk of its reply has been handed to the
//! connection (or the connection is gone). The reply is streamed: one
//! entry's JSON at a time is encoded from the page ([`stream_page`]), so a
//! page never exists twice (as raw pairs and as JSON) and the reservation
//! covers what the request holds. A request that cannot reserve within
//! [`RESPONSE_BUDGET_WAIT`] gets `MER-3003` (503) and reads nothing.
//!
//! Bound: pages held at once ≤ `server.http_response_budget_bytes`; on top
//! of that each streaming reply holds one entry's JSON (at most about
//! 11 × (`max_key_bytes` + `max_value_bytes`)) and hyper's write buffer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::dto::{KvItem, RangeResponse};
use super::error::GatewayError;
#[cfg(doc)]
use crate::config::Limits;
use crate::error_code::ErrorCode;
use crate::types::KeyValue;

/// Longest a range request waits for its reservation before it is refused
/// with `MER-3003`; well inside `HTTP_REQUEST_TIMEOUT`.
pub const RESPONSE_BUDGET_WAIT: Duration = Duration::from_secs(10);
/// The budget counts in KiB, so a `u32` of permits covers any budget.
const UNIT: usize = 1024;

/// The budget shared by every range request of one gateway.
#[derive(Clone, Debug)]
pub struct ResponseBudget {
    units: Arc<Semaphore>,
    total_units: u32,
    wait: Duration,
}

/// Bytes of the budget held by one request; released when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl ResponseBudget {
    /// A budget of `bytes` (rounded up to whole KiB) with the default wait.
    pub fn new(bytes: usize) -> ResponseBudget {
        ResponseBudget::with_wait(bytes, RESPONSE_BUDGET_WAIT)
    }

    /// A budget with another wait (tests).
    pub fn with_wait(bytes: usize, wait: Duration) -> ResponseBudget {
        let total_units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        ResponseBudget {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            wait,
        }
    }

    /// Reserves `bytes` (at most the whole budget), waiting up to the
    /// budget's wait; `MER-3003` when the budget stays exhausted.
    pub(crate) async fn reserve(&self, bytes: usize) -> Result<Reservation, GatewayError> {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .min(self.total_units);
        let acquire = self.units.clone().acquire_many_owned(units);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation { _permit: permit }),
            // The semaphore is never closed; treat it as exhausted anyway.
            Ok(Err(_)) | Err(_) => Err(GatewayError::api(
                ErrorCode::Unavailable,
                format!(
                    "the gateway is sending as many range pages as its memory budget allows (server.http_response_budget_bytes = {} KiB) and none finished within {}s; nothing was read",
                    self.total_units,
                    self.wait.as_secs()
                ),
            )),
        }
    }

    /// KiB of the budget not reserved now.
    #[cfg(test)]
    pub(crate) fn available_kib(&self) -> usize {
        self.units.available_permits()
    }
}

/// The reply to a range request, streamed: `{"kvs":[` then one pair's JSON
/// per chunk, then the other fields, byte for byte what serializing
/// `envelope` with `kvs` would give. The page and `reservation` are dropped
/// when the last chunk has been taken (or the connection is dropped).
pub(crate) fn stream_page(
    kvs: Vec<KeyValue>,
    envelope: RangeResponse,
    reservation: Reservation,
) -> Result<Response, GatewayError> {
    let (head, tail) = split_envelope(&envelope)?;
    let state = Chunks {
        head: Some(head),
        kvs: kvs.into_iter(),
        first: true,
        tail: Some(tail),
        _reservation: reservation,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        let chunk = s.next_chunk()?;
        Some((Ok::<Bytes, Infallible>(chunk), s))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `envelope` (whose `kvs` must be empty) serialized and cut around the
/// empty list: `{"kvs":[` and `],...}`. `kvs` is the struct's first field,
/// so the cut is at a fixed place; checked, not assumed.
fn split_envelope(envelope: &RangeResponse) -> Result<(Bytes, Bytes), GatewayError> {
    const HEAD: &[u8] = b"{\"kvs\":[";
    let json = serde_json::to_vec(envelope).map_err(internal)?;
    if !envelope.kvs.is_empty() || !json.starts_with(HEAD) || json.get(HEAD.len()) != Some(&b']') {
        return Err(GatewayError::api(
            ErrorCode::Internal,
            "the range reply's envelope does not start with an empty kvs list",
        ));
    }
    let json = Bytes::from(json);
    Ok((json.slice(..HEAD.len()), json.slice(HEAD.len()..)))
}

fn internal(e: serde_json::Error) -> GatewayError {
    GatewayError::api(ErrorCode::Internal, format!("encoding a range reply: {e}"))
}

struct Chunks {
    head: Option<Bytes>,
    kvs: std::vec::IntoIter<KeyValue>,
    first: bool,
    tail: Option<Bytes>,
    _reservation: Reservation,
}

impl Chunks {
    fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(head) = self.head.take() {
            return Some(head);
        }
        if let Some(kv) = self.kvs.next() {
            let mut out = Vec::new();
            if !std::mem::take(&mut self.first) {
                out.push(b',');
            }
            // A KvItem holds strings and integers only: encoding cannot fail.
            if serde_json::to_writer(&mut out, &KvItem::from(&kv)).is_err() {
                return None;
            }
            return Some(Bytes::from(out));
        }
        self.tail.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Timestamp;

    fn envelope() -> RangeResponse {
        RangeResponse {
            kvs: Vec::new(),
            next_page_token: Some("abc".into()),
            served_at: 42,
            served_at_str: Timestamp(42).to_string(),
            staleness_ms: 3,
            token: "42".into(),
        }
    }

    fn pairs() -> Vec<KeyValue> {
        vec![
            KeyValue {
                key: b"a/1".to_vec(),
                value: b"one \"quoted\"\n".to_vec(),
                version: Timestamp(7),
            },
            KeyValue {
                key: vec![0xff, 0x00],
                value: vec![0, 1, 2, 255],
                version: Timestamp(8),
            },
        ]
    }

    async fn body_of(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn the_stream_is_byte_for_byte_the_serialized_reply() {
        for kvs in [pairs(), Vec::new()] {
            let mut whole = envelope();
            whole.kvs = kvs.iter().map(KvItem::from).collect();
            let expected = serde_json::to_vec(&whole).unwrap();
            let budget = ResponseBudget::new(1 << 20);
            let reservation = budget.reserve(1 << 20).await.unwrap();
            let response = stream_page(kvs, envelope(), reservation).unwrap();
            assert_eq!(budget.available_kib(), 0, "held while the reply is unsent");
            assert_eq!(body_of(response).await, expected);
            assert_eq!(budget.available_kib(), 1024, "released once sent");
        }
    }

    #[tokio::test]
    async fn an_exhausted_budget_refuses_with_unavailable_after_its_wait() {
        let budget = ResponseBudget::with_wait(64 * 1024, Duration::from_millis(50));
        let held = budget.reserve(40 * 1024).await.unwrap();
        let err = budget.reserve(40 * 1024).await.unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_slice(&err.into_json()).unwrap();
        assert_eq!(body["error"]["code"], "MER-3003", "{body}");
        drop(held);
        // A reservation larger than the whole budget takes the whole budget
        // rather than waiting forever.
        let all = budget.reserve(1 << 30).await.unwrap();
        assert_eq!(budget.available_kib(), 0);
        drop(all);
        assert_eq!(budget.available_kib(), 64);
    }
}
