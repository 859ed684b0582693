//! Streaming a snapshot file to a peer, and receiving one, over the peer
//! protocol (see [`crate::peer`] for the exchange).
//!
//! The sender reads the file in [`SNAPSHOT_CHUNK_BYTES`] chunks; the
//! receiver appends each chunk to a partial file under
//! `snapshots/incoming/`, named by range and snapshot id. A transfer cut off
//! by a dropped connection resumes where the partial file ends when the same
//! snapshot is offered again; an offer of another snapshot discards the
//! partial files of that range first. A complete file is fsynced and its
//! digest checked before it is installed. Neither side holds more than one
//! chunk in memory.

use std::io;
use std::path::Path;
use std::time::Duration;

use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
use tokio::io::AsyncWriteExt;

use super::snapshot::{SnapshotFile, SnapshotHeader, SNAPSHOT_ID_BYTES};
use super::types::{RangeId, RangeTypes};
use crate::peer::{
    self, PeerRequestV1, PeerResponseV1, MAX_RAFT_REPLY_BYTES, PEER_READ_TIMEOUT_MS,
    SNAPSHOT_CHUNK_BYTES,
};
use crate::transport;

/// Longest the sender waits for the receiver to install a fully sent
/// snapshot (it replaces the range in bounded batches, then fsyncs).
pub const SNAPSHOT_INSTALL_TIMEOUT_MS: u64 = 600_000;

/// Why sending a snapshot failed; the receiver keeps what arrived, so the
/// next offer of the same file resumes.
#[derive(Debug, thiserror::Error)]
#[error("snapshot transfer: {0}")]
pub struct SendError(String);

fn net(what: &str, e: impl std::fmt::Display) -> SendError {
    SendError(format!("{what}: {e}"))
}

/// Sends the snapshot `file` of `range` (with its `meta`) on a new stream
/// of `conn` and returns the receiver's install result (postcard of
/// openraft's result).
pub async fn send_snapshot(
    conn: &quinn::Connection,
    range: RangeId,
    vote: &VoteOf<RangeTypes>,
    meta: &SnapshotMetaOf<RangeTypes>,
    file: &SnapshotFile,
) -> Result<Vec<u8>, SendError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| net("open stream", e))?;
    let offer = PeerRequestV1::SnapshotOffer {
        range,
        snapshot_id: file.id().to_vec(),
        total_bytes: file.len(),
        vote: postcard::to_allocvec(vote).map_err(|e| net("encode vote", e))?,
        meta: postcard::to_allocvec(meta).map_err(|e| net("encode meta", e))?,
    };
    transport::write_frame(&mut send, &peer::encode(&offer))
        .await
        .map_err(|e| net("send offer", e))?;
    let mut offset = match read_reply(&mut recv, PEER_READ_TIMEOUT_MS).await? {
        PeerResponseV1::SnapshotResumeAt { offset } if offset <= file.len() => offset,
        other => return Err(net("offer refused", format!("{other:?}"))),
    };
    if offset > 0 {
        tracing::info!(
            range,
            offset,
            total = file.len(),
            "resuming a snapshot transfer"
        );
    }
    let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
    while offset < file.len() {
        let want = usize::try_from(file.len() - offset)
            .unwrap_or(usize::MAX)
            .min(SNAPSHOT_CHUNK_BYTES);
        let n = file
            .read_at(&mut buf[..want], offset)
            .map_err(|e| net("read snapshot file", e))?;
        if n == 0 {
            return Err(net("read snapshot file", "ended before its length"));
        }
        transport::write_frame(&mut send, &buf[..n])
            .await
            .map_err(|e| net("send chunk", e))?;
        offset += n as u64;
        metrics::counter!("meridian_raft_snapshot_sent_bytes_total").increment(n as u64);
    }
    let _ = send.finish();
    match read_reply(&mut recv, SNAPSHOT_INSTALL_TIMEOUT_MS).await? {
        PeerResponseV1::SnapshotInstalled(bytes) => {
            metrics::counter!("meridian_raft_snapshots_sent_total").increment(1);
            Ok(bytes)
        }
        PeerResponseV1::Err { code, message } => Err(net("refused", format!("{code} {message}"))),
        other => Err(net("unexpected reply", format!("{other:?}"))),
    }
}

async fn read_reply(
    recv: &mut quinn::RecvStream,
    timeout_ms: u64,
) -> Result<PeerResponseV1, SendError> {
    let frame = tokio::time::timeout(
        Duration::from_millis(timeout_ms),
        transport::read_frame(recv, MAX_RAFT_REPLY_BYTES),
    )
    .await
    .map_err(|_| net("reply", "timed out"))?
    .map_err(|e| net("reply", e))?;
    peer::decode(&frame).map_err(|e| net("decode reply", e))
}

/// What a receiver got: the verified file and the offer's vote and meta.
pub struct ReceivedSnapshot {
    /// The verified snapshot file, moved into the snapshot directory.
    pub file: SnapshotFile,
    /// The file's header.
    pub header: SnapshotHeader,
    /// The sender's vote.
    pub vote: VoteOf<RangeTypes>,
    /// The snapshot's meta.
    pub meta: SnapshotMetaOf<RangeTypes>,
}

/// An offer, as the receiver validated it.
pub struct Offer {
    /// Range.
    pub range: RangeId,
    /// Snapshot id.
    pub id: [u8; SNAPSHOT_ID_BYTES],
    /// File size.
    pub total_bytes: u64,
    /// Sender's vote.
    pub vote: VoteOf<RangeTypes>,
    /// Snapshot meta.
    pub meta: SnapshotMetaOf<RangeTypes>,
}

impl Offer {
    /// Decodes the fields of a `SnapshotOffer`.
    pub fn decode(
        range: RangeId,
        snapshot_id: &[u8],
        total_bytes: u64,
        vote: &[u8],
        meta: &[u8],
    ) -> io::Result<Offer> {
        let bad = |what: &str, e: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot offer: {what}: {e}"),
            )
        };
        let id = <[u8; SNAPSHOT_ID_BYTES]>::try_from(snapshot_id)
            .map_err(|_| bad("id", format!("{} bytes", snapshot_id.len())))?;
        Ok(Offer {
            range,
            id,
            total_bytes,
            vote: postcard::from_bytes(vote).map_err(|e| bad("vote", e.to_string()))?,
            meta: postcard::from_bytes(meta).map_err(|e| bad("meta", e.to_string()))?,
        })
    }
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Receives the chunks of `offer` after answering where to resume, into
/// `dir/incoming`, and returns the verified file moved into `dir`.
pub async fn receive_snapshot(
    offer: Offer,
    dir: &Path,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> io::Result<ReceivedSnapshot> {
    let incoming = dir.join("incoming");
    tokio::fs::create_dir_all(&incoming).await?;
    let prefix = format!("range-{}-", offer.range);
    let part = incoming.join(format!("{prefix}{}.part", hex(&offer.id)));
    discard_other_parts(&incoming, &prefix, &part).await;
    let mut offset = match tokio::fs::metadata(&part).await {
        Ok(m) if m.len() <= offer.total_bytes => m.len(),
        _ => 0,
    };
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&part)
        .await?;
    file.set_len(offset).await?;
    let mut file = tokio::io::BufWriter::new(file);
    tokio::io::AsyncSeekExt::seek(&mut file, io::SeekFrom::Start(offset)).await?;
    let resume = peer::encode(&PeerResponseV1::SnapshotResumeAt { offset });
    transport::write_frame(send, &resume)
        .await
        .map_err(io::Error::other)?;
    while offset < offer.total_bytes {
        let chunk = tokio::time::timeout(
            Duration::from_millis(PEER_READ_TIMEOUT_MS),
            transport::read_frame(recv, SNAPSHOT_CHUNK_BYTES),
        )
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "snapshot chunk not received in time",
            )
        })?
        .map_err(io::Error::other);
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                // Keep what arrived: the next offer of this snapshot resumes here.
                file.flush().await?;
                return Err(e);
            }
        };
        if chunk.is_empty() || chunk.len() as u64 > offer.total_bytes - offset {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot chunk of {} bytes at offset {offset}", chunk.len()),
            ));
        }
        file.write_all(&chunk).await?;
        offset += chunk.len() as u64;
        metrics::counter!("meridian_raft_snapshot_received_bytes_total")
            .increment(chunk.len() as u64);
    }
    file.flush().await?;
    file.get_ref().sync_all().await?;
    drop(file);
    let target = dir.join(format!("{prefix}{}.snap", hex(&offer.id)));
    let verified = {
        let (part, target) = (part.clone(), target.clone());
        tokio::task::spawn_blocking(move || verify_and_move(&part, &target))
            .await
            .map_err(io::Error::other)?
    };
    let (file, header) = match verified {
        Ok(v) => v,
        Err(e) => {
            // A corrupt file must not be resumed: start over next time.
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    if file.id() != offer.id || header.range != offer.range {
        file.remove();
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot file does not match its offer",
        ));
    }
    Ok(ReceivedSnapshot {
        file,
        header,
        vote: offer.vote,
        meta: offer.meta,
    })
}

fn verify_and_move(part: &Path, target: &Path) -> io::Result<(SnapshotFile, SnapshotHeader)> {
    let (file, header) = SnapshotFile::open_verified(part)?;
    std::fs::rename(part, target)?;
    if let Some(dir) = target.parent() {
        super::snapshot::sync_dir(dir)?;
    }
    Ok((file.renamed(target.to_path_buf()), header))
}

async fn discard_other_parts(incoming: &Path, prefix: &str, keep: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(incoming).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix));
        if ours && path != keep {
            let _ = tokio::fs::remove_file(&path).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_with_a_malformed_id_vote_or_meta_is_refused() {
        let vote: VoteOf<RangeTypes> = openraft::Vote::new_committed(1, 1);
        let vote = postcard::to_allocvec(&vote).unwrap();
        let meta = SnapshotMetaOf::<RangeTypes> {
            last_log_id: None,
            last_membership: Default::default(),
        };
        let meta = postcard::to_allocvec(&meta).unwrap();
        let id = [7u8; SNAPSHOT_ID_BYTES];
        let offer = Offer::decode(3, &id, 10, &vote, &meta).unwrap();
        assert_eq!((offer.range, offer.id, offer.total_bytes), (3, id, 10));
        let short = Offer::decode(3, &id[..4], 10, &vote, &meta).err().unwrap();
        assert!(short.to_string().contains("id: 4 bytes"), "{short}");
        assert!(Offer::decode(3, &id, 10, &[], &meta).is_err());
        assert!(Offer::decode(3, &id, 10, &vote, &[0xff]).is_err());
    }
}
