//! The watch part of client protocol v1: one request opens a watch on its
//! own QUIC stream, which then carries many response frames, in order:
//! [`WatchFrameV1::Created`], then events and progress, until the client
//! stops reading (it resets or finishes its side) or the node ends the
//! watch with [`super::ResponseV1::WatchEnded`] (an error code, a message
//! and the timestamp to watch again from). Pinned by the frozen-bytes
//! tests below, like the rest of the protocol.

use serde::{Deserialize, Serialize};

use crate::types::Timestamp;
use crate::watch::WatchEvent;

/// Opens a watch (data role).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequestV1 {
    /// The key, or with `prefix` the prefix (empty: every key).
    pub key: Vec<u8>,
    /// Watch every key starting with `key`.
    pub prefix: bool,
    /// Emit only events strictly after this HLC timestamp (a resume
    /// point); `None`: from the serving region's frontier now (no history).
    pub from: Option<u64>,
}

/// One frame of a watch stream, inside [`super::ResponseV1::Ok`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchFrameV1 {
    /// The watch is registered; it emits events strictly after `after`.
    Created {
        /// The watch's start (its `from`, or the frontier when none was given).
        after: u64,
    },
    /// Events in HLC order.
    Events(Vec<WatchEventV1>),
    /// Every event at or below `frontier` has been sent.
    Progress {
        /// The serving region's frontier for the watched keys.
        frontier: u64,
    },
}

/// A put (`value: Some`) or a delete (`value: None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEventV1 {
    /// The key.
    pub key: Vec<u8>,
    /// HLC of the write.
    pub ts: u64,
    /// The new value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// The index of `RequestV1::Watch` in postcard's encoding (a one-byte
/// varint after the version header), so the dispatcher can route a watch
/// to its long-lived handler without decoding every request twice.
pub const WATCH_REQUEST_TAG: u8 = 21;

/// Whether a request frame opens a watch (see [`WATCH_REQUEST_TAG`]). A
/// frame that says so but does not decode is refused by the watch handler.
pub fn is_watch_request(frame: &[u8]) -> bool {
    frame.len() > 2
        && u16::from_be_bytes([frame[0], frame[1]]) == super::PROTOCOL_VERSION
        && frame[2] == WATCH_REQUEST_TAG
}

impl From<&WatchEvent> for WatchFrameV1 {
    /// A progress event as its frame (events travel batched, see
    /// [`events_frame`]).
    fn from(e: &WatchEvent) -> Self {
        match e {
            WatchEvent::Progress { frontier } => WatchFrameV1::Progress {
                frontier: frontier.0,
            },
            other => events_frame(std::slice::from_ref(other)),
        }
    }
}

/// Puts and deletes as one events frame (progress events are skipped:
/// they travel as [`WatchFrameV1::Progress`]).
pub fn events_frame(events: &[WatchEvent]) -> WatchFrameV1 {
    WatchFrameV1::Events(
        events
            .iter()
            .filter_map(|e| match e {
                WatchEvent::Put { key, value, ts } => Some(WatchEventV1 {
                    key: key.clone(),
                    ts: ts.0,
                    value: Some(value.clone()),
                }),
                WatchEvent::Delete { key, ts } => Some(WatchEventV1 {
                    key: key.clone(),
                    ts: ts.0,
                    value: None,
                }),
                WatchEvent::Progress { .. } => None,
            })
            .collect(),
    )
}

impl From<WatchEventV1> for WatchEvent {
    fn from(e: WatchEventV1) -> Self {
        match e.value {
            Some(value) => WatchEvent::Put {
                key: e.key,
                value,
                ts: Timestamp(e.ts),
            },
            None => WatchEvent::Delete {
                key: e.key,
                ts: Timestamp(e.ts),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        decode_request, decode_response, encode_request, encode_response, RequestV1,
        ResponseBodyV1, ResponseV1,
    };
    use super::*;

    #[test]
    fn frozen_watch_request() {
        let req = RequestV1::Watch(WatchRequestV1 {
            key: b"k".to_vec(),
            prefix: true,
            from: Some(5),
        });
        let bytes = encode_request(&req);
        assert_eq!(bytes, vec![0, 1, WATCH_REQUEST_TAG, 1, b'k', 1, 1, 5]);
        assert!(is_watch_request(&bytes));
        assert_eq!(decode_request(&bytes), Ok(req));
        assert!(!is_watch_request(&encode_request(&RequestV1::Status)));
        assert!(!is_watch_request(&[0, 2, WATCH_REQUEST_TAG]));
    }

    #[test]
    fn frozen_watch_frames_and_end() {
        let frame = |f: WatchFrameV1| ResponseV1::Ok {
            served_at: 1,
            body: ResponseBodyV1::Watch(f),
        };
        assert_eq!(
            encode_response(&frame(WatchFrameV1::Created { after: 2 })),
            vec![0, 1, 0, 1, 15, 0, 2]
        );
        let events = frame(WatchFrameV1::Events(vec![
            WatchEventV1 {
                key: b"a".to_vec(),
                ts: 3,
                value: Some(b"v".to_vec()),
            },
            WatchEventV1 {
                key: b"a".to_vec(),
                ts: 4,
                value: None,
            },
        ]));
        let bytes = encode_response(&events);
        assert_eq!(
            bytes,
            vec![0, 1, 0, 1, 15, 1, 2, 1, b'a', 3, 1, 1, b'v', 1, b'a', 4, 0]
        );
        assert_eq!(decode_response(&bytes), Ok(events));
        assert_eq!(
            encode_response(&frame(WatchFrameV1::Progress { frontier: 9 })),
            vec![0, 1, 0, 1, 15, 2, 9]
        );
        let end = ResponseV1::WatchEnded {
            code: 3008,
            message: "m".into(),
            resume_from: 7,
        };
        // 3008 as a varint is 0xc0 0x17.
        assert_eq!(encode_response(&end), vec![0, 1, 5, 0xc0, 0x17, 1, b'm', 7]);
    }

    #[test]
    fn events_convert_both_ways() {
        let put = WatchEvent::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ts: Timestamp(3),
        };
        let del = WatchEvent::Delete {
            key: b"k".to_vec(),
            ts: Timestamp(4),
        };
        let WatchFrameV1::Events(wire) = events_frame(&[put.clone(), del.clone()]) else {
            panic!("not an events frame");
        };
        let back: Vec<WatchEvent> = wire.into_iter().map(WatchEvent::from).collect();
        assert_eq!(back, vec![put, del]);
        assert_eq!(
            WatchFrameV1::from(&WatchEvent::Progress {
                frontier: Timestamp(8)
            }),
            WatchFrameV1::Progress { frontier: 8 }
        );
    }
}
