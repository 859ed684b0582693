//! Cross-region replication in the store: the per-range **change log** of
//! writes that originated in this region, and the **merge** of writes that
//! originated in another.
//!
//! Disk format, version 1 (pinned by `frozen_change_log_bytes`): keyspace
//! `changes`, key `be64(range) ++ be64(ts)` → `[format=1] ++
//! postcard(ChangeV1)`. One entry per local write of the range (every op the
//! write applied, at its apply timestamp). Big-endian keys sort by range,
//! then timestamp, so a range's log is one contiguous span read in
//! timestamp order.
//!
//! **Invariant: the change log and the data never disagree.** A local write
//! and its change-log entry are written in the same atomic batch
//! ([`MvccStore::apply_range_batch`]), as is the range's applied state, so
//! every replica holds exactly the log of what it applied.
//!
//! **Invariant: merging commutes.** A version from another region is
//! written at its origin timestamp. If a version of the key already exists
//! at exactly that timestamp (two regions' clocks gave the same HLC), the
//! one whose stored bytes are greater wins, whichever arrived first. Every
//! replica of every region therefore ends with the same version at every
//! `(key, ts)`, in any arrival order, and a resent change changes nothing.
//! (The tie-break needs no per-version origin, so it survives snapshots,
//! which copy versions, not their origin.)

use std::collections::HashMap;
use std::ops::Bound;

use fjall::Readable;
use serde::{Deserialize, Serialize};

use super::{encoding, lock, validate_meta, validate_record, MvccStore, StorageError, WriteRecord};
use crate::types::{Op, Timestamp};

/// fjall keyspace of the per-range change logs.
pub(super) const CHANGES_KEYSPACE: &str = "changes";
/// Format byte of a change-log value.
const CHANGE_FORMAT_V1: u8 = 1;
/// Most change-log entries one read returns.
pub const MAX_CHANGE_READ_RECORDS: usize = 1_024;
/// Most change-log entries one truncation step removes.
pub const MAX_CHANGE_REMOVE_RECORDS: usize = 10_000;

/// One op of a change, version 1 (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum ChangeOpV1 {
    Put {
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
}

/// A change-log entry, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ChangeV1 {
    ops: Vec<ChangeOpV1>,
}

fn change_key(range: u64, ts: Timestamp) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&range.to_be_bytes());
    k[8..].copy_from_slice(&ts.0.to_be_bytes());
    k
}

fn ts_of(range: u64, key: &[u8]) -> Result<Timestamp, StorageError> {
    match <[u8; 16]>::try_from(key) {
        Ok(k) if k[..8] == range.to_be_bytes() => {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&k[8..]);
            Ok(Timestamp(u64::from_be_bytes(ts)))
        }
        _ => Err(StorageError::Corrupt {
            what: format!("change log key {key:02x?} outside range {range}"),
        }),
    }
}

fn encode_change(ops: &[Op]) -> Result<Vec<u8>, StorageError> {
    let change = ChangeV1 {
        ops: ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => ChangeOpV1::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
                Op::Delete { key } => ChangeOpV1::Delete { key: key.clone() },
            })
            .collect(),
    };
    postcard::to_extend(&change, vec![CHANGE_FORMAT_V1])
        .map_err(|e| StorageError::invalid(format!("encode change: {e}")))
}

fn decode_change(bytes: &[u8]) -> Result<Vec<Op>, StorageError> {
    let corrupt = |what: String| StorageError::Corrupt { what };
    let Some((&CHANGE_FORMAT_V1, body)) = bytes.split_first() else {
        return Err(corrupt(format!(
            "change log value of unknown format {:?}",
            bytes.first()
        )));
    };
    let change: ChangeV1 =
        postcard::from_bytes(body).map_err(|e| corrupt(format!("change log value: {e}")))?;
    Ok(change
        .ops
        .into_iter()
        .map(|op| match op {
            ChangeOpV1::Put { key, value } => Op::Put { key, value },
            ChangeOpV1::Delete { key } => Op::Delete { key },
        })
        .collect())
}

/// The meta entry naming where `range`'s change log is complete from.
fn start_name(range: u64) -> String {
    format!("changes/{range}/from")
}

/// The meta entry recording that `range`'s change log is complete only
/// above `from` (after a truncation, or a snapshot install that skipped
/// the entries in between), to write in the caller's batch.
pub fn log_start_meta(range: u64, from: Timestamp) -> (String, Vec<u8>) {
    (start_name(range), from.0.to_be_bytes().to_vec())
}

fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Put { key, value } => key.len() + value.len(),
        Op::Delete { key } => key.len(),
    }
}

impl MvccStore {
    /// [`MvccStore::apply_batch_with_meta`], and when `log_range` names a
    /// range, every record also as an entry of that range's change log, in
    /// the same atomic batch (see the module invariant).
    pub fn apply_range_batch(
        &self,
        records: &[WriteRecord],
        meta: &[(&str, Vec<u8>)],
        log_range: Option<u64>,
        coord: &[super::coord::CoordWrite],
    ) -> Result<(), StorageError> {
        let extra = match log_range {
            None => Vec::new(),
            Some(range) => records
                .iter()
                .map(|r| Ok((change_key(range, r.ts).to_vec(), encode_change(&r.ops)?)))
                .collect::<Result<Vec<_>, StorageError>>()?,
        };
        self.apply_batch_inner(records, meta, &extra, coord)
    }

    /// Writes versions that originated in another region, each at its
    /// origin timestamp, with `meta` (the range's applied state and stream
    /// cursor) in one atomic batch. A version already stored at exactly the
    /// same `(key, ts)` is kept when its bytes are greater or equal (see the
    /// module invariant). Records need not be in timestamp order across
    /// origins; each must lie above its key's gc horizon. Not fsynced.
    pub fn merge_versions(
        &self,
        records: &[WriteRecord],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StorageError> {
        self.check_poisoned()?;
        for (name, value) in meta {
            validate_meta(name, value)?;
        }
        if records.len() > super::MAX_BATCH_RECORDS {
            return Err(StorageError::invalid(format!(
                "{} records in one batch exceed {}",
                records.len(),
                super::MAX_BATCH_RECORDS
            )));
        }
        records.iter().try_for_each(validate_record)?;
        let _write = lock(&self.inner.write_lock);
        self.check_above_horizons(records)?;
        let snapshot = self.inner.db.snapshot();
        // Versions this batch writes, so two records of one batch at one
        // (key, ts) merge with each other too.
        let mut written: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for record in records {
            for op in &record.ops {
                let (key, value) = match op {
                    Op::Put { key, value } => (key, Some(value.as_slice())),
                    Op::Delete { key } => (key, None),
                };
                let encoded_key = encoding::encode_version_key(key, record.ts);
                let incoming = encoding::encode_record(value);
                let existing = match written.get(&encoded_key) {
                    Some(v) => Some(v.clone()),
                    None => snapshot
                        .get(&self.inner.data, &encoded_key)
                        .map_err(StorageError::fjall)?
                        .map(|v| v.to_vec()),
                };
                if existing.is_none_or(|e| incoming > e) {
                    written.insert(encoded_key, incoming);
                }
            }
        }
        let mut batch = self.inner.db.batch();
        self.insert_meta(&mut batch, meta);
        for (key, value) in written {
            batch.insert(&self.inner.data, key, value);
        }
        // Every merged version raises its key's index entry, whether or not
        // its bytes won a tie: an older version leaves it where it is.
        let mut raised = super::LatestRaise::default();
        for record in records {
            for op in &record.ops {
                raised.note(op.key(), record.ts);
            }
        }
        self.raise_latest(&mut batch, raised)?;
        self.commit("merge_versions", batch)
    }

    /// The change-log entries of `range` in `(after, upto]`, oldest first:
    /// at most [`MAX_CHANGE_READ_RECORDS`] and about `max_bytes` (at least
    /// one entry when any is there).
    pub fn read_changes(
        &self,
        range: u64,
        after: Timestamp,
        upto: Timestamp,
        max_bytes: usize,
    ) -> Result<Vec<WriteRecord>, StorageError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let lower = Bound::Excluded(change_key(range, after));
        let upper = Bound::Included(change_key(range, upto));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for guard in self.inner.changes.range((lower, upper)) {
            let (key, value) = guard.into_inner().map_err(StorageError::fjall)?;
            let ts = ts_of(range, &key)?;
            let ops = decode_change(&value)?;
            let size: usize = ops.iter().map(op_bytes).sum();
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(WriteRecord { ts, ops });
            if out.len() >= MAX_CHANGE_READ_RECORDS {
                break;
            }
        }
        Ok(out)
    }

    /// Where `range`'s change log is complete from: every local change
    /// above it is in the log (`0`: since the range began). A destination
    /// whose cursor is below it cannot be caught up from this replica's log.
    pub fn change_log_start(&self, range: u64) -> Result<Timestamp, StorageError> {
        match self.meta_get(&start_name(range))? {
            None => Ok(Timestamp::ZERO),
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(|a| Timestamp(u64::from_be_bytes(a)))
                .map_err(|_| StorageError::Corrupt {
                    what: format!("change log start of range {range}: {} bytes", b.len()),
                }),
        }
    }

    /// The oldest timestamp still in `range`'s change log, if any.
    pub fn first_change(&self, range: u64) -> Result<Option<Timestamp>, StorageError> {
        let lower = Bound::Included(change_key(range, Timestamp::ZERO));
        let upper = Bound::Included(change_key(range, Timestamp::MAX));
        match self.inner.changes.range((lower, upper)).next() {
            None => Ok(None),
            Some(guard) => {
                let key = guard.key().map_err(StorageError::fjall)?;
                Ok(Some(ts_of(range, &key)?))
            }
        }
    }

    /// Removes at most [`MAX_CHANGE_REMOVE_RECORDS`] of `range`'s oldest
    /// change-log entries at or below `below`, in one batch; returns whether
    /// more remain. Not fsynced (a crash may bring back entries no
    /// destination needs; they are skipped by its cursor).
    pub fn truncate_changes(&self, range: u64, below: Timestamp) -> Result<bool, StorageError> {
        self.check_poisoned()?;
        let lower = Bound::Included(change_key(range, Timestamp::ZERO));
        let upper = Bound::Included(change_key(range, below));
        let snapshot = self.inner.db.snapshot();
        let mut batch = self.inner.db.batch();
        let mut last = None;
        let mut more = false;
        for (n, guard) in snapshot
            .range(&self.inner.changes, (lower, upper))
            .enumerate()
        {
            if n == MAX_CHANGE_REMOVE_RECORDS {
                more = true;
                break;
            }
            let key = guard.key().map_err(StorageError::fjall)?;
            last = Some(ts_of(range, &key)?);
            batch.remove(&self.inner.changes, super::owned_key(&key));
        }
        let Some(last) = last else { return Ok(false) };
        // The log is complete only above the last entry removed.
        if last > self.change_log_start(range)? {
            let (name, value) = log_start_meta(range, last);
            batch.insert(
                &self.inner.meta,
                encoding::meta_user_key(&name),
                encoding::encode_meta(&value),
            );
        }
        self.commit("truncate_changes", batch)?;
        Ok(more)
    }
}

/// One chunk of a cross-region catch-up read from a [`super::FrozenView`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatchUpChunk {
    /// The versions, in key order, newest first per key.
    pub versions: Vec<super::RawVersion>,
    /// Where the next chunk starts (`None`: the span is done).
    pub next: Option<CatchUpResume>,
}

/// Where a catch-up chunk starts: at `key`, and (when the previous chunk
/// ended inside that key's versions) only with its versions below `below`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUpResume {
    /// The first key of the chunk.
    pub key: Vec<u8>,
    /// Versions of `key` at or above this were in the previous chunk.
    pub below: Option<Timestamp>,
}

impl super::FrozenView {
    /// Every version (tombstones included) of the user keys from `from` up
    /// to `end` (exclusive) at or below `at`, in key order and newest first
    /// per key, until the chunk holds `max_bytes` of keys and values (at
    /// least one version; a chunk exceeds `max_bytes` by at most one
    /// version). `next` says where the next chunk starts; a key whose
    /// versions do not fit is split between chunks.
    pub fn catch_up_chunk(
        &self,
        from: &CatchUpResume,
        end: Option<&[u8]>,
        at: Timestamp,
        max_bytes: usize,
    ) -> Result<CatchUpChunk, StorageError> {
        let mut out = CatchUpChunk::default();
        if end.is_some_and(|e| e <= from.key.as_slice()) {
            return Ok(out);
        }
        let mut bytes = 0usize;
        // The key being read, and whether this chunk holds any of its versions.
        let mut current: Option<(Vec<u8>, bool)> = None;
        for guard in self
            .snapshot
            .range(&self.data, super::encoded_bounds(&from.key, end))
        {
            let (key, value) = guard.into_inner().map_err(StorageError::fjall)?;
            let (user_key, version) = encoding::decode_version_key(&key)?;
            if version > at || (user_key == from.key && from.below.is_some_and(|b| version >= b)) {
                continue;
            }
            let started = match &current {
                Some((k, started)) if *k == user_key => *started,
                _ => false,
            };
            if bytes >= max_bytes && !out.versions.is_empty() {
                out.next = Some(CatchUpResume {
                    below: started.then(|| Timestamp(version.0.saturating_add(1))),
                    key: user_key,
                });
                return Ok(out);
            }
            let value = encoding::decode_record(&value)?.map(<[u8]>::to_vec);
            bytes += user_key.len() + value.as_ref().map_or(0, Vec::len);
            current = Some((user_key.clone(), true));
            out.versions.push(super::RawVersion {
                key: user_key,
                version,
                value,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::open_for_tests;

    fn open() -> (tempfile::TempDir, MvccStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_for_tests(dir.path());
        (dir, store)
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        }
    }

    fn rec(ts: u64, ops: Vec<Op>) -> WriteRecord {
        WriteRecord {
            ts: Timestamp(ts),
            ops,
        }
    }

    #[test]
    fn catch_up_chunks_cover_the_span_at_their_timestamp() {
        let (_d, store) = open();
        store
            .apply_batch(&[
                rec(10, vec![put("a", "1"), put("b", "1"), put("c", "1")]),
                rec(20, vec![put("a", "2"), Op::Delete { key: b"b".to_vec() }]),
                rec(30, vec![put("c", "3"), put("d", "3")]),
            ])
            .unwrap();
        let view = store.frozen_view().unwrap();
        // At 25: every version at or below it, newest first per key; "d"
        // (only above 25) contributes nothing. Two bytes per chunk: a chunk
        // stops once it holds two, so "a" is split between chunks.
        let mut seen = Vec::new();
        let mut from = CatchUpResume {
            key: b"a".to_vec(),
            below: None,
        };
        let mut chunks = Vec::new();
        loop {
            let c = view
                .catch_up_chunk(&from, Some(b"e"), Timestamp(25), 2)
                .unwrap();
            assert!(!c.versions.is_empty() || c.next.is_none());
            seen.extend(
                c.versions
                    .iter()
                    .map(|v| (v.key.clone(), v.version.0, v.value.clone())),
            );
            chunks.push(c.next.clone());
            match c.next {
                Some(n) => from = n,
                None => break,
            }
            assert!(chunks.len() < 10, "the chunks must end");
        }
        let v = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), 20, v("2")),
                (b"a".to_vec(), 10, v("1")),
                (b"b".to_vec(), 20, None),
                (b"b".to_vec(), 10, v("1")),
                (b"c".to_vec(), 10, v("1")),
            ]
        );
        assert_eq!(
            chunks,
            vec![
                // a@20 (2 bytes) fills it: "a" is split, resumes below 11.
                Some(CatchUpResume {
                    key: b"a".to_vec(),
                    below: Some(Timestamp(11)),
                }),
                // a@10 (2 bytes).
                Some(CatchUpResume {
                    key: b"b".to_vec(),
                    below: None,
                }),
                // b@20 (a tombstone: 1 byte), b@10 (3).
                Some(CatchUpResume {
                    key: b"c".to_vec(),
                    below: None,
                }),
                // c@10.
                None,
            ]
        );
        // A large budget takes the whole span at once; the end bound holds.
        let all = view
            .catch_up_chunk(
                &CatchUpResume {
                    key: Vec::new(),
                    below: None,
                },
                Some(b"c"),
                Timestamp(u64::MAX),
                1 << 20,
            )
            .unwrap();
        assert_eq!(all.versions.len(), 4);
        assert_eq!(all.next, None);
    }

    #[test]
    fn frozen_change_log_bytes() {
        assert_eq!(
            change_key(2, Timestamp(0x0102)),
            [0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        let bytes = encode_change(&[put("k", "v"), Op::Delete { key: b"d".to_vec() }]).unwrap();
        assert_eq!(bytes, vec![1, 2, 0, 1, b'k', 1, b'v', 1, 1, b'd']);
        assert_eq!(
            decode_change(&bytes).unwrap(),
            vec![put("k", "v"), Op::Delete { key: b"d".to_vec() }]
        );
        assert!(decode_change(&[2, 0]).is_err(), "unknown format refused");
    }

    #[test]
    fn logged_writes_read_back_in_order_per_range_and_truncate() {
        let (_dir, store) = open();
        let records = [rec(10, vec![put("a", "1")]), rec(20, vec![put("b", "2")])];
        store
            .apply_range_batch(&records, &[], Some(1), &[])
            .unwrap();
        store
            .apply_range_batch(&[rec(30, vec![put("c", "3")])], &[], Some(2), &[])
            .unwrap();
        store
            .apply_range_batch(&[rec(40, vec![put("a", "4")])], &[], None, &[])
            .unwrap();
        let got = store
            .read_changes(1, Timestamp::ZERO, Timestamp::MAX, usize::MAX)
            .unwrap();
        assert_eq!(got, records.to_vec(), "range 1 only, unlogged write absent");
        let got = store
            .read_changes(1, Timestamp(10), Timestamp(20), usize::MAX)
            .unwrap();
        assert_eq!(got, vec![records[1].clone()], "(after, upto]");
        let got = store
            .read_changes(1, Timestamp::ZERO, Timestamp::MAX, 1)
            .unwrap();
        assert_eq!(got.len(), 1, "byte budget, but at least one entry");
        assert_eq!(store.first_change(1).unwrap(), Some(Timestamp(10)));
        assert_eq!(store.change_log_start(1).unwrap(), Timestamp::ZERO);
        assert!(!store.truncate_changes(1, Timestamp(10)).unwrap());
        assert_eq!(store.first_change(1).unwrap(), Some(Timestamp(20)));
        assert_eq!(store.change_log_start(1).unwrap(), Timestamp(10));
        assert_eq!(store.change_log_start(2).unwrap(), Timestamp::ZERO);
        assert_eq!(store.first_change(2).unwrap(), Some(Timestamp(30)));
        // The data itself was written.
        let kv = store.get(b"a", Timestamp::MAX).unwrap().unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.version),
            (&b"4"[..], Timestamp(40))
        );
    }

    /// The bounds: one read returns at most MAX_CHANGE_READ_RECORDS
    /// entries, and one truncation step removes at most
    /// MAX_CHANGE_REMOVE_RECORDS and says that more remain.
    #[test]
    fn reads_and_truncations_are_bounded() {
        let (_dir, store) = open();
        let total = MAX_CHANGE_REMOVE_RECORDS + 5;
        let records: Vec<WriteRecord> = (1..=total as u64)
            .map(|i| rec(i, vec![put(&format!("k{i}"), "v")]))
            .collect();
        for chunk in records.chunks(crate::storage::MAX_BATCH_RECORDS) {
            store.apply_range_batch(chunk, &[], Some(7), &[]).unwrap();
        }
        let read = store
            .read_changes(7, Timestamp::ZERO, Timestamp::MAX, usize::MAX)
            .unwrap();
        assert_eq!(read.len(), MAX_CHANGE_READ_RECORDS);
        assert!(
            store.truncate_changes(7, Timestamp::MAX).unwrap(),
            "more remain"
        );
        assert_eq!(
            store.first_change(7).unwrap(),
            Some(Timestamp(MAX_CHANGE_REMOVE_RECORDS as u64 + 1))
        );
        assert!(!store.truncate_changes(7, Timestamp::MAX).unwrap());
        assert_eq!(store.first_change(7).unwrap(), None);
    }

    #[test]
    fn merging_is_order_independent_and_idempotent() {
        let a = rec(50, vec![put("k", "from-a")]);
        let b = rec(50, vec![put("k", "from-b")]);
        let older = rec(20, vec![put("k", "old")]);
        let mut finals = Vec::new();
        for order in [[&a, &b, &older], [&b, &older, &a], [&older, &a, &b]] {
            let (_dir, store) = open();
            for r in order {
                store.merge_versions(&[(*r).clone()], &[]).unwrap();
                store.merge_versions(&[(*r).clone()], &[]).unwrap(); // resent
            }
            let kv = store.get(b"k", Timestamp::MAX).unwrap().unwrap();
            let hist = store.history(b"k", 10).unwrap();
            finals.push((kv.value, kv.version, hist.len()));
        }
        assert!(finals.windows(2).all(|w| w[0] == w[1]), "{finals:?}");
        assert_eq!(finals[0], (b"from-b".to_vec(), Timestamp(50), 2));
    }

    #[test]
    fn a_merge_ties_with_a_local_version_and_respects_the_horizon() {
        let (_dir, store) = open();
        store
            .apply_range_batch(&[rec(50, vec![put("k", "zzz-local")])], &[], Some(1), &[])
            .unwrap();
        store
            .merge_versions(&[rec(50, vec![put("k", "aaa-remote")])], &[])
            .unwrap();
        let kv = store.get(b"k", Timestamp::MAX).unwrap().unwrap();
        assert_eq!(kv.value, b"zzz-local", "greater bytes win the tie");
        store.raise_gc_horizon(b"", None, Timestamp(60)).unwrap();
        let err = store
            .merge_versions(&[rec(55, vec![put("k", "late")])], &[("m", vec![1])])
            .unwrap_err();
        assert!(err.to_string().contains("horizon"), "{err}");
        assert_eq!(store.meta_get("m").unwrap(), None, "nothing written");
    }
}
