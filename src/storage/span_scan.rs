//! The versions of a key span written in a timestamp interval `(after,
//! upto]`, tombstones included: what a watch replays from storage
//! (`crate::watch`, docs/consistency.md W1-W4).
//!
//! The data keyspace is ordered by key, then newest version first, so the
//! scan visits each key of the span once: it seeks to the key's version at
//! `upto`, takes versions down to `after` and seeks past the key. Its cost
//! is O(keys in the span + versions in the interval); a page is bounded in
//! versions, bytes and visited entries, and continues from
//! [`SpanVersions::next_key`].
//!
//! **Invariant:** the interval must not reach below the gc horizon of any
//! range the span touches (`after >= horizon`): gc keeps every version
//! above the horizon, so then every version in `(after, upto]` is still
//! stored, tombstones included. Below it a collected tombstone would make a
//! delete vanish silently, so the scan refuses with
//! [`StorageError::Compacted`] naming the horizon instead.

use std::ops::Bound;

use super::mvcc::VersionSource;
use super::{encoding, MvccStore, RawVersion, StorageError};
use crate::types::Timestamp;

/// Most versions one [`MvccStore::versions_between`] page returns, whatever
/// the caller asks.
pub const MAX_SPAN_PAGE_VERSIONS: usize = 10_000;
/// Entries one page may visit (versions outside the interval included)
/// before it returns a short page with a continuation; as
/// `mvcc::SCAN_VISIT_BUDGET`, it bounds the work of one call.
pub const SPAN_VISIT_BUDGET: usize = 100_000;

/// One page of [`MvccStore::versions_between`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanVersions {
    /// Versions in key order, newest first per key.
    pub versions: Vec<RawVersion>,
    /// Where the next page starts (pass it back as `resume`): `Some` iff
    /// versions of the span may remain unvisited.
    pub next: Option<SpanResume>,
}

/// Where a [`MvccStore::versions_between`] page stopped: the next page
/// starts at `key`'s versions at or below `at`, then the keys after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanResume {
    /// The user key to resume in.
    pub key: Vec<u8>,
    /// Its newest version still to visit.
    pub at: Timestamp,
}

/// Bounds of one page.
#[derive(Clone, Copy, Debug)]
pub struct SpanPageLimits {
    /// Most versions (at least one is always taken when there is one).
    pub max_versions: usize,
    /// Most value bytes (plus key bytes); a page always takes its first version.
    pub max_bytes: usize,
}

impl MvccStore {
    /// Versions of the keys in `[start, end)` with timestamps in `(after,
    /// upto]`, tombstones as `value: None`, in key order (newest first per
    /// key), one bounded page at a time: pass the previous page's
    /// [`SpanVersions::next`] as `resume` (`None` for the first page).
    ///
    /// Fails with [`StorageError::Compacted`] when `after` is below the gc
    /// horizon of a range the span touches: versions the interval needs may
    /// be gone (module docs). The snapshot is taken before the horizon is
    /// checked, as for every read.
    pub fn versions_between(
        &self,
        (start, end): (&[u8], Option<&[u8]>),
        (after, upto): (Timestamp, Timestamp),
        resume: Option<&SpanResume>,
        limits: SpanPageLimits,
    ) -> Result<SpanVersions, StorageError> {
        if limits.max_versions == 0 {
            return Err(StorageError::invalid("a span page must allow a version"));
        }
        let src = self.read_view(after, || self.horizon_over(start, end))?;
        if end.is_some_and(|e| e <= start) || upto <= after {
            return Ok(SpanVersions::default());
        }
        let limits = SpanPageLimits {
            max_versions: limits.max_versions.min(MAX_SPAN_PAGE_VERSIONS),
            ..limits
        };
        let lower = match resume {
            None => Bound::Included(encoding::key_prefix(start)),
            Some(r) => Bound::Included(encoding::encode_version_key(&r.key, r.at.min(upto))),
        };
        scan_span(&src, (lower, end), (after, upto), limits, SPAN_VISIT_BUDGET)
    }

    /// The highest gc horizon over the ranges holding keys of `[start,
    /// end)`: a watch of that span can replay history from it, not below.
    pub fn gc_horizon_over(&self, start: &[u8], end: Option<&[u8]>) -> Timestamp {
        self.horizon_over(start, end)
    }
}

/// [`MvccStore::versions_between`] over any ordered source, from the
/// encoded lower bound `lower`.
pub(crate) fn scan_span(
    src: &impl VersionSource,
    (mut lower, end): (Bound<Vec<u8>>, Option<&[u8]>),
    (after, upto): (Timestamp, Timestamp),
    limits: SpanPageLimits,
    budget: usize,
) -> Result<SpanVersions, StorageError> {
    let upper = end.map_or(Bound::Unbounded, |e| {
        Bound::Excluded(encoding::key_prefix(e))
    });
    let mut out = SpanVersions::default();
    let mut bytes = 0usize;
    let mut visits = 0usize;
    'seek: loop {
        for entry in src.range(lower.clone(), upper.clone()) {
            let (raw_key, raw_value) = entry?;
            let (prefix, version) = encoding::split_version_key(&raw_key)?;
            visits += 1;
            if version > upto {
                // Newer than the interval: jump to this key's version at `upto`.
                let (key, _) = encoding::decode_version_key(&raw_key)?;
                if visits > budget {
                    out.next = Some(SpanResume { key, at: upto });
                    return Ok(out);
                }
                lower = Bound::Included(encoding::encode_version_key(&key, upto));
                continue 'seek;
            }
            if version <= after {
                // Older than the interval: this key is done; go to the next.
                let past_key = Bound::Excluded(raw_key_last(prefix));
                if visits > budget {
                    let (key, _) = encoding::decode_version_key(&raw_key)?;
                    // Its version zero is at or below `after`: nothing left of it.
                    out.next = Some(SpanResume {
                        key,
                        at: Timestamp::ZERO,
                    });
                    return Ok(out);
                }
                lower = past_key;
                continue 'seek;
            }
            let (key, _) = encoding::decode_version_key(&raw_key)?;
            let value = encoding::decode_record(&raw_value)?.map(<[u8]>::to_vec);
            let size = key.len() + value.as_ref().map_or(0, Vec::len);
            let full = out.versions.len() >= limits.max_versions
                || (!out.versions.is_empty() && bytes.saturating_add(size) > limits.max_bytes);
            if full {
                out.next = Some(SpanResume { key, at: version });
                return Ok(out);
            }
            bytes += size;
            out.versions.push(RawVersion {
                key,
                version,
                value,
            });
        }
        return Ok(out);
    }
}

/// The last encoded key with this encoded prefix (its version at zero).
fn raw_key_last(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 8);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&(u64::MAX - Timestamp::ZERO.0).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::WriteRecord;
    use crate::types::Op;

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn del(key: &str) -> Op {
        Op::Delete {
            key: key.as_bytes().to_vec(),
        }
    }

    /// `p/a`: puts at 10, 20 and a delete at 30; `p/b`: a put at 15 and
    /// 40; `q/x` (outside the span) at 25.
    fn store_with_history(dir: &std::path::Path) -> MvccStore {
        let store = crate::storage::open_for_tests(dir);
        let records = [
            (10, put("p/a", "a1")),
            (15, put("p/b", "b1")),
            (20, put("p/a", "a2")),
            (25, put("q/x", "x1")),
            (30, del("p/a")),
            (40, put("p/b", "b2")),
        ];
        for (ts, op) in records {
            let rec = WriteRecord {
                ts: Timestamp(ts),
                ops: vec![op],
            };
            store.apply_batch(&[rec]).unwrap();
        }
        store
    }

    fn all_pages(
        store: &MvccStore,
        after: u64,
        upto: u64,
        max_versions: usize,
    ) -> Vec<(String, u64, Option<String>)> {
        let limits = SpanPageLimits {
            max_versions,
            max_bytes: usize::MAX,
        };
        let mut out = Vec::new();
        let mut resume = None;
        for _ in 0..100 {
            let page = store
                .versions_between(
                    (b"p/", Some(b"p0")),
                    (Timestamp(after), Timestamp(upto)),
                    resume.as_ref(),
                    limits,
                )
                .unwrap();
            assert!(page.versions.len() <= max_versions, "page over its bound");
            out.extend(page.versions.into_iter().map(|v| {
                (
                    String::from_utf8(v.key).unwrap(),
                    v.version.0,
                    v.value.map(|b| String::from_utf8(b).unwrap()),
                )
            }));
            resume = page.next;
            if resume.is_none() {
                return out;
            }
        }
        panic!("the scan did not finish in 100 pages");
    }

    #[test]
    fn the_interval_is_open_below_closed_above_with_tombstones_and_only_the_span() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(dir.path());
        let got = all_pages(&store, 10, 30, 100);
        assert_eq!(
            got,
            vec![
                ("p/a".into(), 30, None),
                ("p/a".into(), 20, Some("a2".into())),
                ("p/b".into(), 15, Some("b1".into())),
            ]
        );
        assert!(all_pages(&store, 40, 50, 100).is_empty());
        assert!(all_pages(&store, 30, 30, 100).is_empty(), "empty interval");
    }

    #[test]
    fn pages_of_one_version_concatenate_to_the_whole_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(dir.path());
        assert_eq!(all_pages(&store, 0, 100, 1), all_pages(&store, 0, 100, 100));
        assert_eq!(all_pages(&store, 0, 100, 100).len(), 5);
    }

    #[test]
    fn a_tiny_visit_budget_resumes_without_losing_or_repeating_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(dir.path());
        let limits = SpanPageLimits {
            max_versions: 100,
            max_bytes: usize::MAX,
        };
        let mut lower = Bound::Included(encoding::key_prefix(b"p/"));
        let mut got = Vec::new();
        for _ in 0..100 {
            let page = scan_span(
                &store.source(),
                (lower, Some(b"p0")),
                (Timestamp(12), Timestamp(35)),
                limits,
                1,
            )
            .unwrap();
            got.extend(page.versions.into_iter().map(|v| (v.key, v.version.0)));
            match page.next {
                None => break,
                Some(r) => lower = Bound::Included(encoding::encode_version_key(&r.key, r.at)),
            }
        }
        assert_eq!(
            got,
            vec![
                (b"p/a".to_vec(), 30),
                (b"p/a".to_vec(), 20),
                (b"p/b".to_vec(), 15)
            ]
        );
    }

    #[test]
    fn below_the_gc_horizon_the_scan_is_refused_naming_the_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(dir.path());
        // At 35 gc drops p/a entirely (its newest version is a tombstone)
        // and b1's predecessor nothing: a scan from 10 would miss the delete.
        while store.gc(Timestamp(35), 1000).unwrap().more {}
        let err = store
            .versions_between(
                (b"p/", Some(b"p0")),
                (Timestamp(10), Timestamp(50)),
                None,
                SpanPageLimits {
                    max_versions: 10,
                    max_bytes: 1 << 20,
                },
            )
            .unwrap_err();
        match err {
            StorageError::Compacted { requested, horizon } => {
                assert_eq!(requested, Timestamp(10));
                assert_eq!(horizon, Timestamp(35));
            }
            other => panic!("expected Compacted, got {other:?}"),
        }
        assert_eq!(store.gc_horizon_over(b"p/", Some(b"p0")), Timestamp(35));
        // From the horizon on, the interval is intact.
        assert_eq!(
            all_pages(&store, 35, 50, 10),
            vec![("p/b".into(), 40, Some("b2".into()))]
        );
    }
}
