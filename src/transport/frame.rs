//! Length-prefixed frames on a QUIC stream: a `u32` big-endian byte count,
//! then that many bytes. The header logic is pure ([`encode_header`],
//! [`decode_header`]); the async functions only move bytes.

use quinn::{ReadError, ReadExactError, RecvStream, SendStream, WriteError};

use crate::error_code::ErrorCode;
use crate::limits::HARD_MAX_FRAME_BYTES;

/// Bytes in a frame header.
pub const FRAME_HEADER_BYTES: usize = 4;

/// The largest frame anyone may send or receive, whatever `max_len` a
/// reader passes: no configuration can make a node accept a bigger one.
pub const MAX_FRAME_BYTES: usize = HARD_MAX_FRAME_BYTES;

/// Most bytes taken from the stream per read while filling a frame body, so
/// memory grows with bytes actually received, not with what a header claims.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a frame could not be written or read. After any error other than
/// [`FrameError::TooLarge`] on write, the stream is unusable: drop it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is longer than the limit. On read the body was not read
    /// (the caller should answer `MER-1003` and reset the stream); on write
    /// nothing was sent and the stream is still usable.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame length (claimed by the header, on read).
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The peer finished the stream cleanly before a new frame began: there
    /// are no more requests on it. Not a protocol error.
    #[error("stream finished")]
    Finished,
    /// The peer finished the stream in the middle of a frame; the partial
    /// frame was discarded. A protocol error by the peer.
    #[error("stream finished {received} bytes into a {expected}-byte frame")]
    Truncated {
        /// Bytes of the frame (header plus body) that arrived.
        received: usize,
        /// Bytes the frame should have had (header plus body).
        expected: usize,
    },
    /// Reading failed: the peer reset the stream or the connection was lost.
    #[error("reading frame: {0}")]
    Read(#[from] ReadError),
    /// Writing failed: the peer stopped the stream or the connection was lost.
    #[error("writing frame: {0}")]
    Write(#[from] WriteError),
}

impl FrameError {
    /// The stable user-visible code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::RequestTooLarge,
            FrameError::Truncated { .. } => ErrorCode::MalformedRequest,
            FrameError::Finished | FrameError::Read(_) | FrameError::Write(_) => {
                ErrorCode::Unavailable
            }
        }
    }
}

/// The header for a `len`-byte frame, or `TooLarge` above [`MAX_FRAME_BYTES`].
pub fn encode_header(len: usize) -> Result<[u8; FRAME_HEADER_BYTES], FrameError> {
    let too_large = || FrameError::TooLarge {
        len: len as u64,
        max: MAX_FRAME_BYTES,
    };
    if len > MAX_FRAME_BYTES {
        return Err(too_large());
    }
    let len = u32::try_from(len).map_err(|_| too_large())?;
    Ok(len.to_be_bytes())
}

/// The body length a header announces, or `TooLarge` if it exceeds
/// `max_len` (itself capped at [`MAX_FRAME_BYTES`]).
pub fn decode_header(
    header: [u8; FRAME_HEADER_BYTES],
    max_len: usize,
) -> Result<usize, FrameError> {
    let max = max_len.min(MAX_FRAME_BYTES);
    let len = u32::from_be_bytes(header);
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok(len),
        _ => Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        }),
    }
}

/// Writes one frame. Does not finish the stream, so several frames may
/// follow; call `finish()` after the last one.
pub async fn write_frame(send: &mut SendStream, bytes: &[u8]) -> Result<(), FrameError> {
    let header = encode_header(bytes.len())?;
    send.write_all(&header).await?;
    send.write_all(bytes).await?;
    Ok(())
}

/// Reads one frame of at most `max_len` bytes (capped at [`MAX_FRAME_BYTES`]).
///
/// An oversized header fails with [`FrameError::TooLarge`] before any of the
/// body is read or allocated. There is no timeout here: wrap the call in
/// `tokio::time::timeout` where a slow peer must not hold a task.
pub async fn read_frame(recv: &mut RecvStream, max_len: usize) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Err(FrameError::Finished),
        Err(ReadExactError::FinishedEarly(received)) => {
            return Err(FrameError::Truncated {
                received,
                expected: FRAME_HEADER_BYTES,
            })
        }
        Err(ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let len = decode_header(header, max_len)?;
    read_body(recv, len).await
}

/// Reads exactly `len` bytes, growing the buffer only as data arrives.
async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::with_capacity(len.min(READ_CHUNK_BYTES));
    while body.len() < len {
        let want = (len - body.len()).min(READ_CHUNK_BYTES);
        match recv.read_chunk(want, true).await? {
            Some(chunk) => body.extend_from_slice(&chunk.bytes),
            None => {
                return Err(FrameError::Truncated {
                    received: FRAME_HEADER_BYTES + body.len(),
                    expected: FRAME_HEADER_BYTES + len,
                })
            }
        }
    }
    Ok(body)
}

// Tests may panic on unexpected results; that is how they fail.
#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn header_is_big_endian_length() {
        assert_eq!(encode_header(0).expect("empty"), [0, 0, 0, 0]);
        assert_eq!(encode_header(0x0102_0304).expect("len"), [1, 2, 3, 4]);
        assert_eq!(
            decode_header([1, 2, 3, 4], usize::MAX).expect("len"),
            0x0102_0304
        );
    }

    #[test]
    fn decode_refuses_lengths_over_max() {
        assert_eq!(decode_header([0, 0, 4, 0], 1024).expect("at limit"), 1024);
        match decode_header([0, 0, 4, 1], 1024) {
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024,
            }) => {}
            other => panic!("{other:?}"),
        }
        match decode_header([0xff; 4], usize::MAX) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, MAX_FRAME_BYTES);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encode_refuses_frames_over_the_hard_limit() {
        encode_header(MAX_FRAME_BYTES).expect("at limit");
        let err = encode_header(MAX_FRAME_BYTES + 1).expect_err("over");
        assert_eq!(err.code(), ErrorCode::RequestTooLarge);
    }
}
