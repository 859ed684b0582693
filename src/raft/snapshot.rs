//! Range snapshot files: the form a snapshot point takes when it must cross
//! to a peer, and how it is written, shipped and installed without ever
//! holding the range in memory.
//!
//! A Raft snapshot of a range is a point in the range's history
//! ([`super::point`]); a file exists only while a leader sends that point to
//! a follower behind its log, and on the follower until the install
//! completes. A file holds **the state of the range visible at the point's
//! timestamp** `last_ts`: for each key its newest version at or below
//! `last_ts`, left out when that version is a tombstone. Not history, not
//! tombstones: the receiver raises the range's gc horizon to `last_ts`
//! before installing (docs/consistency.md G8), so no read it serves can see
//! below `last_ts`, and at and above `last_ts` an absent key and a tombstoned
//! one read the same. That is also what makes a file a function of the point
//! alone: gc may or may not have collected history and tombstones below the
//! horizon yet, but never changes what is visible at or above it, so
//! materialising the same point twice (after a restart, say) gives the same
//! bytes and the same id, and a cut-off transfer still resumes.
//!
//! A file lives under `<data dir>/snapshots/`, written once, renamed into
//! place, never changed after (fsynced by a receiver before it installs it; a
//! sender's file lives only as long as its process). Format v2 (v1 was an
//! in-memory postcard blob and is no longer read):
//!
//! ```text
//! magic "MRSN" | format u8 = 4 | header_len u32 LE | header (postcard SnapshotHeaderV3)
//! records:  len u32 LE (1..=MAX_SNAPSHOT_RECORD_BYTES) | postcard (key, version u64, Option<value>)
//! end:      u32 LE 0 | count u64 LE
//! coord:    len u32 LE (1..=MAX_SNAPSHOT_RECORD_BYTES) | postcard (key, value)
//! end:      u32 LE 0 | count u64 LE | SHA-256 of every byte before it (32 bytes)
//! ```
//!
//! The coord section (format 4) carries the range's coordination entries
//! (storage's `coord` keyspace under the range's prefix: lease records,
//! attached keys, dropped markers) as of the same view. Formats 2 and 3
//! end after the records' count and have none.
//!
//! Records are in key order, newest version first per key (the store's
//! order). Files written before snapshots became points carried every stored
//! version, tombstones and history included, in the same layout; a reader
//! installs whatever versions a file holds, so either node reads the other's
//! files. The digest makes a file self-verifying: a receiver checks it
//! before installing, so a torn transfer or a flipped bit is refused, never
//! installed. Its first 16 bytes are the snapshot's id in the peer protocol.
//!
//! **Invariant:** memory while writing, sending, receiving or installing a
//! snapshot is bounded by one record plus one install batch
//! ([`INSTALL_BATCH_BYTES`]), whatever the range's size.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use super::types::{RangeDescriptor, RangeId};
use crate::storage::{FrozenView, RawVersion, StorageError};
use crate::types::Timestamp;

/// File magic of a snapshot file.
const MAGIC: &[u8; 4] = b"MRSN";
/// The snapshot file format this build writes: v3 plus the coord section.
pub const SNAPSHOT_FORMAT_V4: u8 = 4;
/// The previous format, still read: no coord section.
pub const SNAPSHOT_FORMAT_V3: u8 = 3;
/// The previous format, still read: its header has no floor and no
/// cursors (a single region's snapshot: floor = last_ts).
pub const SNAPSHOT_FORMAT_V2: u8 = 2;
/// Bytes of the SHA-256 trailer.
const DIGEST_BYTES: usize = 32;
/// Bytes of a snapshot id (a prefix of the file's digest).
pub const SNAPSHOT_ID_BYTES: usize = 16;
/// Largest header a reader accepts.
const MAX_HEADER_BYTES: usize = 4 * 1024;
/// Largest record a reader accepts: a key and a value at their ceilings plus framing.
pub const MAX_SNAPSHOT_RECORD_BYTES: usize =
    crate::limits::HARD_MAX_KEY_BYTES + crate::limits::HARD_MAX_VALUE_BYTES + 64;
/// An install writes versions in batches of about this many bytes.
pub const INSTALL_BATCH_BYTES: usize = 1024 * 1024;
/// ... and at most this many versions per batch.
pub const INSTALL_BATCH_VERSIONS: usize = 10_000;
/// Write buffer of a snapshot file being built.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

fn corrupt(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot file {}: {what}", path.display()),
    )
}

/// The header of a snapshot file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The range dumped.
    pub range: RangeId,
    /// The range's last applied timestamp at the snapshot.
    pub last_ts: u64,
    /// The range's frontier at the snapshot (`last_ts` in a single region):
    /// the file holds every version in `(floor, last_ts]`, tombstones
    /// included, and below that each key's state at `floor`, so the
    /// receiver serves reads from `floor` on and merges other regions'
    /// changes above it exactly as the sender does.
    pub floor: u64,
    /// The range's stream cursor per origin region at the snapshot.
    pub cursors: Vec<(String, u64)>,
}

impl SnapshotHeader {
    /// A single region's header: no history below `last_ts`, no cursors.
    pub fn single(range: RangeId, last_ts: u64) -> SnapshotHeader {
        SnapshotHeader {
            range,
            last_ts,
            floor: last_ts,
            cursors: Vec::new(),
        }
    }
}

/// Format v2's header.
#[derive(Serialize, Deserialize)]
struct SnapshotHeaderV2 {
    range: RangeId,
    last_ts: u64,
}

/// Format v3's header.
#[derive(Serialize, Deserialize)]
struct SnapshotHeaderV3 {
    range: RangeId,
    last_ts: u64,
    floor: u64,
    cursors: Vec<(String, u64)>,
}

/// A finished snapshot file. Cheap to clone: clones share one open handle,
/// so a sender keeps reading a file even after a newer snapshot replaced
/// (and unlinked) it.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    id: [u8; SNAPSHOT_ID_BYTES],
}

impl SnapshotFile {
    /// Opens a finished snapshot file and checks its digest (reads it whole,
    /// in bounded chunks). Returns the file and its header.
    pub fn open_verified(path: &Path) -> io::Result<(SnapshotFile, SnapshotHeader)> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let body_len = len
            .checked_sub(DIGEST_BYTES as u64)
            .ok_or_else(|| corrupt(path, "shorter than its digest"))?;
        let mut reader = BufReader::new(&file);
        let mut ctx = Context::new(&SHA256);
        let mut remaining = body_len;
        let mut buf = vec![0u8; 64 * 1024];
        while remaining > 0 {
            let want = usize::try_from(remaining.min(buf.len() as u64)).unwrap_or(buf.len());
            reader.read_exact(&mut buf[..want])?;
            ctx.update(&buf[..want]);
            remaining -= want as u64;
        }
        let mut trailer = [0u8; DIGEST_BYTES];
        reader.read_exact(&mut trailer)?;
        let digest = ctx.finish();
        if digest.as_ref() != trailer {
            return Err(corrupt(path, "digest mismatch"));
        }
        let mut id = [0u8; SNAPSHOT_ID_BYTES];
        id.copy_from_slice(&trailer[..SNAPSHOT_ID_BYTES]);
        let snap = SnapshotFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            len,
            id,
        };
        let header = snap.reader()?.header;
        Ok((snap, header))
    }

    /// The same file after it was renamed to `path` (the open handle follows it).
    pub fn renamed(mut self, path: PathBuf) -> SnapshotFile {
        self.path = path;
        self
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty (never, for a valid file).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its id: a prefix of its digest.
    pub fn id(&self) -> [u8; SNAPSHOT_ID_BYTES] {
        self.id
    }

    /// Reads up to `buf.len()` bytes at `offset` (positional: clones may
    /// read concurrently).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        self.file.read_at(buf, offset)
    }

    /// A reader over its records, from the start.
    pub fn reader(&self) -> io::Result<SnapshotReader> {
        let file = self.file.try_clone()?;
        SnapshotReader::new(BufReader::new(ReadFrom { file, pos: 0 }), &self.path)
    }

    /// Deletes the file (open handles keep working until dropped).
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove an old snapshot file");
            }
        }
    }
}

/// A `Read` over a shared file from a position of its own.
struct ReadFrom {
    file: File,
    pos: u64,
}

impl Read for ReadFrom {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Hashes everything written through it.
struct HashingWriter<W> {
    inner: W,
    ctx: Context,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the state of `range` at `header.last_ts` in `view` into a new
/// file in `dir` (written as `*.tmp`, then renamed): every version in
/// `(floor, last_ts]`, and for each key its newest version at or below
/// `floor` unless that is a tombstone (see the module header). One record
/// at a time, so memory does not grow with the range.
///
/// The caller guarantees that `view` still holds that state: the range's gc
/// horizon was at or below `header.floor` when the view was taken.
pub fn write_snapshot(
    view: &FrozenView,
    range: &RangeDescriptor,
    header: &SnapshotHeader,
    dir: &Path,
) -> io::Result<SnapshotFile> {
    let last_ts = header.last_ts;
    std::fs::create_dir_all(dir)?;
    let unique = format!(
        "range-{}-{}-{}",
        range.id,
        last_ts,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let tmp = dir.join(format!("{unique}.tmp"));
    let written = write_visible_state(view, range, header, &tmp);
    let (digest, count) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let path = dir.join(format!("{unique}.snap"));
    std::fs::rename(&tmp, &path)?;
    let file = File::open(&path)?;
    let len = file.metadata()?.len();
    let mut id = [0u8; SNAPSHOT_ID_BYTES];
    id.copy_from_slice(&digest.as_ref()[..SNAPSHOT_ID_BYTES]);
    tracing::debug!(
        range = range.id,
        last_ts,
        count,
        len,
        "wrote a snapshot file"
    );
    Ok(SnapshotFile {
        path,
        file: Arc::new(file),
        len,
        id,
    })
}

/// The body of [`write_snapshot`]: writes the file at `tmp` and returns its
/// digest and record count.
fn write_visible_state(
    view: &FrozenView,
    range: &RangeDescriptor,
    header: &SnapshotHeader,
    tmp: &Path,
) -> io::Result<(ring::digest::Digest, u64)> {
    let file = File::create(tmp)?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
        ctx: Context::new(&SHA256),
    };
    debug_assert_eq!(header.range, range.id);
    write_header(&mut w, header)?;
    let mut record = Vec::new();
    let mut visible = VisibleAt::new(Timestamp(header.floor), Timestamp(header.last_ts));
    let mut count = 0u64;
    view.for_each_version(
        &range.start,
        range.end.as_deref(),
        usize::MAX,
        |key, version, value| {
            let Some(value) = visible.take(key, version, value) else {
                return Ok(());
            };
            record.clear();
            record = postcard::to_extend(&(key, version.0, value), std::mem::take(&mut record))
                .map_err(|e| StorageError::InvalidArgument {
                    reason: format!("encode snapshot record: {e}"),
                })?;
            count += 1;
            write_record(&mut w, &record).map_err(|e| StorageError::InvalidArgument {
                reason: e.to_string(),
            })
        },
    )
    .map_err(|e| io::Error::other(format!("dump range {}: {e}", range.id)))?;
    w.write_all(&0u32.to_le_bytes())?;
    w.write_all(&count.to_le_bytes())?;
    let coord = view
        .for_each_coord(&crate::coord::keys::range_prefix(range.id), |key, value| {
            record.clear();
            record =
                postcard::to_extend(&(key, value), std::mem::take(&mut record)).map_err(|e| {
                    StorageError::InvalidArgument {
                        reason: format!("encode snapshot coord entry: {e}"),
                    }
                })?;
            write_record(&mut w, &record).map_err(|e| StorageError::InvalidArgument {
                reason: e.to_string(),
            })
        })
        .map_err(|e| io::Error::other(format!("dump coord of range {}: {e}", range.id)))?;
    w.write_all(&0u32.to_le_bytes())?;
    w.write_all(&(coord as u64).to_le_bytes())?;
    let HashingWriter { mut inner, ctx } = w;
    let digest = ctx.finish();
    inner.write_all(digest.as_ref())?;
    // Not fsynced: a sender's file only serves transfers while this process
    // runs (a restart deletes it, and the point it came from can be
    // materialised again), and an fsync of a whole range would compete with
    // the Raft log's fsyncs on the same disk. A *received* snapshot is
    // fsynced before it is installed (transfer::receive_snapshot).
    drop(inner.into_inner().map_err(|e| e.into_error())?);
    Ok((digest, count))
}

/// Picks, from versions in the store's order (key order, newest first per
/// key), every version in `(floor, at]` as it is (tombstones included), and
/// then the newest version of each key at or below `floor`, passed on only
/// if it is a value: the history a read at any timestamp in `[floor, at]`
/// needs, and nothing below it. With `floor = at`: the state a read at `at`
/// sees.
struct VisibleAt {
    floor: Timestamp,
    at: Timestamp,
    /// The key whose versions are being visited (`None` before the first).
    key: Option<Vec<u8>>,
    /// Whether that key's visible version was already seen.
    decided: bool,
}

impl VisibleAt {
    fn new(floor: Timestamp, at: Timestamp) -> VisibleAt {
        VisibleAt {
            floor: floor.min(at),
            at,
            key: None,
            decided: false,
        }
    }

    /// The version to keep (`Some(None)`: a tombstone), or `None` to skip it.
    fn take<'v>(
        &mut self,
        key: &[u8],
        version: Timestamp,
        value: Option<&'v [u8]>,
    ) -> Option<Option<&'v [u8]>> {
        if self.key.as_deref() != Some(key) {
            let mut buf = self.key.take().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(key);
            self.key = Some(buf);
            self.decided = false;
        }
        if self.decided || version > self.at {
            return None;
        }
        if version > self.floor {
            return Some(value);
        }
        self.decided = true;
        value.map(Some)
    }
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_header(w: &mut impl Write, header: &SnapshotHeader) -> io::Result<()> {
    let v3 = SnapshotHeaderV3 {
        range: header.range,
        last_ts: header.last_ts,
        floor: header.floor,
        cursors: header.cursors.clone(),
    };
    let bytes = postcard::to_allocvec(&v3).map_err(io::Error::other)?;
    w.write_all(MAGIC)?;
    w.write_all(&[SNAPSHOT_FORMAT_V4])?;
    w.write_all(
        &u32::try_from(bytes.len())
            .map_err(io::Error::other)?
            .to_le_bytes(),
    )?;
    w.write_all(&bytes)
}

fn write_record(w: &mut impl Write, record: &[u8]) -> io::Result<()> {
    // Positive and negative space: the reader refuses these, so never write them.
    if record.is_empty() || record.len() > MAX_SNAPSHOT_RECORD_BYTES {
        return Err(io::Error::other(format!(
            "snapshot record of {} bytes outside 1..={MAX_SNAPSHOT_RECORD_BYTES}",
            record.len()
        )));
    }
    let len = u32::try_from(record.len()).map_err(io::Error::other)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(record)
}

/// Reads the records of a snapshot file in order.
pub struct SnapshotReader {
    inner: BufReader<ReadFrom>,
    path: PathBuf,
    /// The file's header.
    pub header: SnapshotHeader,
    format: u8,
    read: u64,
    done: bool,
    coord_read: u64,
    coord_done: bool,
}

impl SnapshotReader {
    fn new(mut inner: BufReader<ReadFrom>, path: &Path) -> io::Result<SnapshotReader> {
        let mut head = [0u8; 9];
        inner.read_exact(&mut head)?;
        if &head[..4] != MAGIC {
            return Err(corrupt(path, "not a snapshot file"));
        }
        let format = head[4];
        if !(SNAPSHOT_FORMAT_V2..=SNAPSHOT_FORMAT_V4).contains(&format) {
            return Err(corrupt(
                path,
                format!(
                    "snapshot format {format} (this build reads {SNAPSHOT_FORMAT_V2} to {SNAPSHOT_FORMAT_V4})"
                ),
            ));
        }
        let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]) as usize;
        if len > MAX_HEADER_BYTES {
            return Err(corrupt(path, "header too large"));
        }
        let mut bytes = vec![0u8; len];
        inner.read_exact(&mut bytes)?;
        let header = if format == SNAPSHOT_FORMAT_V2 {
            let v2: SnapshotHeaderV2 =
                postcard::from_bytes(&bytes).map_err(|e| corrupt(path, e))?;
            SnapshotHeader {
                range: v2.range,
                last_ts: v2.last_ts,
                floor: v2.last_ts,
                cursors: Vec::new(),
            }
        } else {
            let v3: SnapshotHeaderV3 =
                postcard::from_bytes(&bytes).map_err(|e| corrupt(path, e))?;
            if v3.floor > v3.last_ts {
                return Err(corrupt(path, "floor above last_ts"));
            }
            SnapshotHeader {
                range: v3.range,
                last_ts: v3.last_ts,
                floor: v3.floor,
                cursors: v3.cursors,
            }
        };
        Ok(SnapshotReader {
            inner,
            path: path.to_path_buf(),
            header,
            format,
            read: 0,
            done: false,
            coord_read: 0,
            // Files before format 4 have no coord section.
            coord_done: format < SNAPSHOT_FORMAT_V4,
        })
    }

    /// The next record of a section: its bytes, or `None` at the
    /// section's end, whose count is checked against `read` (what the
    /// caller read of the section so far). `what` names the records.
    fn next_record(&mut self, read: u64, what: &str) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        self.inner.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            let mut count = [0u8; 8];
            self.inner.read_exact(&mut count)?;
            if u64::from_le_bytes(count) != read {
                return Err(corrupt(&self.path, format!("{what} count mismatch")));
            }
            return Ok(None);
        }
        if len > MAX_SNAPSHOT_RECORD_BYTES {
            return Err(corrupt(&self.path, format!("{what} of {len} bytes")));
        }
        let mut bytes = vec![0u8; len];
        self.inner.read_exact(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// The next version, or `None` after the last (whose count is checked).
    pub fn next_version(&mut self) -> io::Result<Option<RawVersion>> {
        if self.done {
            return Ok(None);
        }
        let Some(bytes) = self.next_record(self.read, "record")? else {
            self.done = true;
            return Ok(None);
        };
        let (key, version, value): (Vec<u8>, u64, Option<Vec<u8>>) =
            postcard::from_bytes(&bytes).map_err(|e| corrupt(&self.path, e))?;
        self.read += 1;
        Ok(Some(RawVersion {
            key,
            version: Timestamp(version),
            value,
        }))
    }

    /// The next coordination entry `(key, value)` of the coord section,
    /// read after the last version; `None` after the last entry (whose
    /// count is checked) and for files without the section.
    pub fn next_coord(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if !self.done {
            return Err(corrupt(
                &self.path,
                "coord entries read before the versions",
            ));
        }
        if self.coord_done {
            return Ok(None);
        }
        let Some(bytes) = self.next_record(self.coord_read, "coord entry")? else {
            self.coord_done = true;
            return Ok(None);
        };
        let entry: (Vec<u8>, Vec<u8>) =
            postcard::from_bytes(&bytes).map_err(|e| corrupt(&self.path, e))?;
        self.coord_read += 1;
        Ok(Some(entry))
    }

    /// The file's format byte.
    pub fn format(&self) -> u8 {
        self.format
    }

    /// The next batch of at most [`INSTALL_BATCH_VERSIONS`] versions and
    /// about [`INSTALL_BATCH_BYTES`]; empty after the last.
    pub fn next_batch(&mut self) -> io::Result<Vec<RawVersion>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < INSTALL_BATCH_VERSIONS && bytes < INSTALL_BATCH_BYTES {
            match self.next_version()? {
                Some(v) => {
                    bytes += v.key.len() + v.value.as_ref().map_or(0, Vec::len) + 16;
                    batch.push(v);
                }
                None => break,
            }
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MvccStore, WriteRecord};
    use crate::types::Op;

    fn store(dir: &Path) -> MvccStore {
        crate::storage::open_for_tests(dir)
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        }
    }

    /// The layout, pinned, of a file as this build writes it: only the
    /// state visible at `last_ts` (the older version of `a`, the tombstone
    /// of `b` and the version of `c` above `last_ts` are left out).
    #[test]
    fn frozen_snapshot_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir.path().join("db"));
        let records = vec![
            WriteRecord {
                ts: Timestamp(5),
                ops: vec![put("a", "old"), put("b", "gone")],
            },
            WriteRecord {
                ts: Timestamp(7),
                ops: vec![put("a", "v"), Op::Delete { key: b"b".to_vec() }],
            },
            WriteRecord {
                ts: Timestamp(9),
                ops: vec![put("c", "later")],
            },
        ];
        s.apply_batch_with_meta(&records, &[]).unwrap();
        // One coordination entry of range 2, one of another range.
        let mut entry = 2u64.to_be_bytes().to_vec();
        entry.push(b'N');
        let mut other = 3u64.to_be_bytes().to_vec();
        other.push(b'N');
        s.apply_range_batch(
            &[],
            &[],
            None,
            &[
                crate::storage::coord::CoordWrite {
                    key: entry,
                    value: Some(vec![1]),
                },
                crate::storage::coord::CoordWrite {
                    key: other,
                    value: Some(vec![2]),
                },
            ],
        )
        .unwrap();
        let range = RangeDescriptor {
            id: 2,
            start: Vec::new(),
            end: None,
        };
        let header = SnapshotHeader::single(2, 7);
        let snap = write_snapshot(&s.frozen_view().unwrap(), &range, &header, dir.path()).unwrap();
        let bytes = std::fs::read(snap.path()).unwrap();
        let body: Vec<u8> = [
            b"MRSN".as_slice(),
            // format 4, header len 4, header (range 2, last_ts 7, floor 7, no cursors)
            &[4, 4, 0, 0, 0, 2, 7, 7, 0],
            &[6, 0, 0, 0, 1, b'a', 7, 1, 1, b'v'], // ("a", 7, Some("v"))
            &[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], // end, count 1
            // coord: (be64(2) ++ "N", [1]); range 3's entry is not there
            &[12, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, b'N', 1, 1],
            &[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], // end, count 1
        ]
        .concat();
        assert_eq!(&bytes[..body.len()], body.as_slice());
        let digest = ring::digest::digest(&SHA256, &body);
        assert_eq!(&bytes[body.len()..], digest.as_ref());
        assert_eq!(snap.id(), digest.as_ref()[..SNAPSHOT_ID_BYTES]);
        let mut reader = snap.reader().unwrap();
        assert_eq!(reader.next_batch().unwrap().len(), 1);
        let mut entry = 2u64.to_be_bytes().to_vec();
        entry.push(b'N');
        assert_eq!(reader.next_coord().unwrap(), Some((entry, vec![1])));
        assert_eq!(reader.next_coord().unwrap(), None);
    }

    /// A file as builds before snapshot points wrote it (every version,
    /// tombstones included) still reads: the layout is the same v2.
    #[test]
    fn a_file_with_history_and_tombstones_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes: Vec<u8> = [
            b"MRSN".as_slice(),
            &[2, 2, 0, 0, 0, 2, 7],
            &[6, 0, 0, 0, 1, b'a', 7, 1, 1, b'v'], // ("a", 7, Some("v"))
            &[6, 0, 0, 0, 1, b'a', 5, 1, 1, b'o'], // ("a", 5, Some("o"))
            &[4, 0, 0, 0, 1, b'b', 7, 0],          // ("b", 7, None)
            &[0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0], // end, count 3
        ]
        .concat();
        let digest = ring::digest::digest(&SHA256, &bytes);
        bytes.extend_from_slice(digest.as_ref());
        let path = dir.path().join("old.snap");
        std::fs::write(&path, &bytes).unwrap();
        let (file, header) = SnapshotFile::open_verified(&path).unwrap();
        assert_eq!(header, SnapshotHeader::single(2, 7), "v2: floor = last_ts");
        let got = file.reader().unwrap().next_batch().unwrap();
        let version = |k: &str, v: u64, value: Option<&str>| RawVersion {
            key: k.as_bytes().to_vec(),
            version: Timestamp(v),
            value: value.map(|v| v.as_bytes().to_vec()),
        };
        assert_eq!(
            got,
            vec![
                version("a", 7, Some("v")),
                version("a", 5, Some("o")),
                version("b", 7, None)
            ]
        );
    }

    #[test]
    fn visible_at_keeps_the_newest_value_at_or_below_its_timestamp() {
        let mut v = VisibleAt::new(Timestamp(10), Timestamp(10));
        // Store order: key order, newest first per key.
        let seen: Vec<_> = [
            (b"a".as_slice(), 12, Some(b"a12".as_slice())), // above: skipped
            (b"a", 10, Some(b"a10")),                       // kept
            (b"a", 3, Some(b"a3")),                         // history: skipped
            (b"b", 8, None),                                // tombstone: key absent
            (b"b", 2, Some(b"b2")),                         // below a tombstone: skipped
            (b"c", 11, None),                               // above: skipped
            (b"c", 1, Some(b"c1")),                         // kept
            (b"d", 20, Some(b"d20")),                       // only above: absent
        ]
        .into_iter()
        .filter_map(|(k, ts, value)| v.take(k, Timestamp(ts), value).map(|val| (k, val)))
        .collect();
        assert_eq!(
            seen,
            vec![
                (b"a".as_slice(), Some(b"a10".as_slice())),
                (b"c", Some(b"c1"))
            ]
        );
    }

    /// A multi-region snapshot keeps the history above its floor (the
    /// frontier), tombstones included, and each key's state at the floor.
    #[test]
    fn visible_at_keeps_the_history_above_the_floor() {
        let mut v = VisibleAt::new(Timestamp(5), Timestamp(10));
        let seen: Vec<_> = [
            (b"a".as_slice(), 12, Some(b"a12".as_slice())), // above: skipped
            (b"a", 10, Some(b"a10")),                       // history: kept
            (b"a", 7, None),                                // tombstone in history: kept
            (b"a", 4, Some(b"a4")),                         // state at the floor: kept
            (b"a", 2, Some(b"a2")),                         // below: skipped
            (b"b", 3, None),                                // deleted at the floor: absent
            (b"c", 6, Some(b"c6")),                         // history only
        ]
        .into_iter()
        .filter_map(|(k, ts, value)| v.take(k, Timestamp(ts), value).map(|val| (k, ts, val)))
        .collect();
        assert_eq!(
            seen,
            vec![
                (b"a".as_slice(), 10, Some(b"a10".as_slice())),
                (b"a", 7, None),
                (b"a", 4, Some(b"a4")),
                (b"c", 6, Some(b"c6")),
            ]
        );
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir.path().join("db"));
        let records: Vec<_> = (1..=50)
            .map(|i| WriteRecord {
                ts: Timestamp(i),
                ops: vec![put(&format!("k{:03}", i % 20), &"x".repeat(i as usize))],
            })
            .collect();
        s.apply_batch_with_meta(&records, &[]).unwrap();
        let range = RangeDescriptor {
            id: 9,
            start: b"k005".to_vec(),
            end: Some(b"k015".to_vec()),
        };
        let view = s.frozen_view().unwrap();
        let snap =
            write_snapshot(&view, &range, &SnapshotHeader::single(9, 30), dir.path()).unwrap();
        let (opened, header) = SnapshotFile::open_verified(snap.path()).unwrap();
        assert_eq!(header.range, 9);
        assert_eq!(header.last_ts, 30);
        let mut reader = opened.reader().unwrap();
        let mut got = Vec::new();
        loop {
            let batch = reader.next_batch().unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        // Keys k005..k014 were each written at two or three timestamps
        // (i % 20): the file holds the newest at or below 30 of each, and
        // only that.
        let expected: Vec<_> = (5..15u64)
            .map(|k| {
                let newest = (1..=30).filter(|i| i % 20 == k).max().unwrap();
                RawVersion {
                    key: format!("k{k:03}").into_bytes(),
                    version: Timestamp(newest),
                    value: Some("x".repeat(newest as usize).into_bytes()),
                }
            })
            .collect();
        assert_eq!(got, expected);

        let mut bytes = std::fs::read(snap.path()).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        let bad = dir.path().join("bad.snap");
        std::fs::write(&bad, &bytes).unwrap();
        let err = SnapshotFile::open_verified(&bad).unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        bytes.truncate(20);
        std::fs::write(&bad, &bytes).unwrap();
        assert!(SnapshotFile::open_verified(&bad).is_err());
    }
}
