//! The `coord` keyspace: each range's coordination state (lease records, the
//! index of keys attached to leases, dropped markers; layout in
//! [`crate::coord::keys`]). Unlike the MVCC data it has no history: entries
//! are overwritten in place, written by the range state machines in the
//! same atomic batch as the versions and the applied state they go with
//! ([`MvccStore::apply_range_batch`]), and carried by the range's snapshots.
//! Storage interprets none of it.

use std::ops::Bound;

use fjall::Readable;

use super::{FrozenView, MvccStore, StorageError};

/// Name of the coordination keyspace.
pub const COORD_KEYSPACE: &str = "coord";
/// Largest coordination key (a range prefix, a tag, a lease id and a user key).
pub const MAX_COORD_KEY_BYTES: usize = crate::limits::HARD_MAX_KEY_BYTES + 32;
/// Largest coordination value.
pub const MAX_COORD_VALUE_BYTES: usize = 64 * 1024;
/// Most coordination writes in one batch.
pub const MAX_COORD_WRITES: usize = 20_000;

/// Coordination entries `(key, value)` in key order.
pub type CoordEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// One write to the `coord` keyspace: set (`Some`) or remove (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordWrite {
    /// The entry's key.
    pub key: Vec<u8>,
    /// Its new value, or `None` to remove it.
    pub value: Option<Vec<u8>>,
}

/// Checks a batch's coordination writes against the bounds above.
pub(super) fn validate(writes: &[CoordWrite]) -> Result<(), StorageError> {
    if writes.len() > MAX_COORD_WRITES {
        return Err(StorageError::invalid(format!(
            "{} coordination writes in one batch exceed {MAX_COORD_WRITES}",
            writes.len()
        )));
    }
    for w in writes {
        if w.key.is_empty() || w.key.len() > MAX_COORD_KEY_BYTES {
            return Err(StorageError::invalid(format!(
                "coordination key of {} bytes outside 1..={MAX_COORD_KEY_BYTES}",
                w.key.len()
            )));
        }
        if w.value
            .as_ref()
            .is_some_and(|v| v.len() > MAX_COORD_VALUE_BYTES)
        {
            return Err(StorageError::invalid(format!(
                "coordination value over {MAX_COORD_VALUE_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// The bounds of the keys starting with `prefix`, from after `after` when given.
fn prefix_bounds(prefix: &[u8], after: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = match after {
        Some(a) => Bound::Excluded(a.to_vec()),
        None => Bound::Included(prefix.to_vec()),
    };
    let upper = match crate::types::prefix_end(prefix) {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    (lower, upper)
}

impl MvccStore {
    /// A coordination entry's value.
    pub fn coord_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.check_poisoned()?;
        Ok(self
            .inner
            .coord
            .get(key)
            .map_err(StorageError::fjall)?
            .map(|v| v.to_vec()))
    }

    /// Up to `limit` coordination entries whose keys start with `prefix`, in
    /// key order, after `after` when given (a continuation).
    pub fn coord_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<CoordEntries, StorageError> {
        self.check_poisoned()?;
        let (lower, upper) = prefix_bounds(prefix, after);
        if super::bounds_are_empty(&lower, &upper) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for guard in self.inner.coord.range((lower, upper)).take(limit) {
            let (k, v) = guard.into_inner().map_err(StorageError::fjall)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Removes every coordination entry starting with `prefix`, in batches
    /// of at most [`MAX_COORD_WRITES`]: how a snapshot install starts
    /// replacing a range's state (not atomic across batches; the install's
    /// redo marker covers a crash).
    pub fn coord_clear(&self, prefix: &[u8]) -> Result<(), StorageError> {
        loop {
            let old = self.coord_scan(prefix, None, MAX_COORD_WRITES)?;
            if old.is_empty() {
                return Ok(());
            }
            let removals: Vec<CoordWrite> = old
                .into_iter()
                .map(|(key, _)| CoordWrite { key, value: None })
                .collect();
            self.coord_write(&removals)?;
        }
    }

    /// Sets `entries`, every one of which must start with `prefix`, in
    /// batches of at most [`MAX_COORD_WRITES`].
    pub fn coord_insert(
        &self,
        prefix: &[u8],
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), StorageError> {
        if let Some((k, _)) = entries.iter().find(|(k, _)| !k.starts_with(prefix)) {
            return Err(StorageError::invalid(format!(
                "coordination entry {k:?} outside the range's prefix"
            )));
        }
        for chunk in entries.chunks(MAX_COORD_WRITES) {
            let sets: Vec<CoordWrite> = chunk
                .iter()
                .map(|(k, v)| CoordWrite {
                    key: k.clone(),
                    value: Some(v.clone()),
                })
                .collect();
            self.coord_write(&sets)?;
        }
        Ok(())
    }

    /// Commits coordination writes alone (one atomic batch, not fsynced).
    fn coord_write(&self, writes: &[CoordWrite]) -> Result<(), StorageError> {
        self.apply_batch_inner(&[], &[], &[], writes)
    }
}

impl FrozenView {
    /// Calls `visit` with every coordination entry starting with `prefix`
    /// as of the view, in key order; stops at the first error of `visit`.
    pub fn for_each_coord(
        &self,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<usize, StorageError> {
        let (lower, upper) = prefix_bounds(prefix, None);
        let mut n = 0;
        for guard in self.snapshot.range(&self.coord, (lower, upper)) {
            let (k, v) = guard.into_inner().map_err(StorageError::fjall)?;
            visit(&k, &v)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(k: &[u8], v: &[u8]) -> CoordWrite {
        CoordWrite {
            key: k.to_vec(),
            value: Some(v.to_vec()),
        }
    }

    #[test]
    fn coordination_entries_commit_with_the_batch_scan_by_prefix_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::open_for_tests(dir.path());
        store
            .apply_range_batch(
                &[],
                &[],
                None,
                &[set(b"\0a1", b"x"), set(b"\0a2", b"y"), set(b"\0b1", b"z")],
            )
            .unwrap();
        assert_eq!(store.coord_get(b"\0a1").unwrap(), Some(b"x".to_vec()));
        let page = store.coord_scan(b"\0a", None, 10).unwrap();
        assert_eq!(page.len(), 2);
        let after = store.coord_scan(b"\0a", Some(b"\0a1"), 10).unwrap();
        assert_eq!(after, vec![(b"\0a2".to_vec(), b"y".to_vec())]);
        store
            .apply_range_batch(
                &[],
                &[],
                None,
                &[CoordWrite {
                    key: b"\0a1".to_vec(),
                    value: None,
                }],
            )
            .unwrap();
        assert_eq!(store.coord_get(b"\0a1").unwrap(), None);

        let view = store.frozen_view().unwrap();
        store.coord_clear(b"\0b").unwrap();
        store
            .coord_insert(b"\0b", &[(b"\0b9".to_vec(), b"new".to_vec())])
            .unwrap();
        assert_eq!(store.coord_get(b"\0b1").unwrap(), None);
        assert_eq!(store.coord_get(b"\0b9").unwrap(), Some(b"new".to_vec()));
        // The view still shows the state it was taken at.
        let mut seen = Vec::new();
        view.for_each_coord(b"\0", |k, _| {
            seen.push(k.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"\0a2".to_vec(), b"\0b1".to_vec()]);
        assert!(store
            .coord_insert(b"\0b", &[(b"\0c".to_vec(), b"out".to_vec())])
            .is_err());
    }
}
