//! Cross-region catch-up: how a destination whose cursor for an origin is
//! below where the origin's change log is complete (the origin collected
//! the log while the destination was cut off) is brought up to the
//! origin's state from chunks of it, as pure rules (style.md 1).
//!
//! The origin freezes a view of its store and sends, key span by key span
//! in key order, every version in the view at or below `at` (its applied
//! timestamp when frozen). Above the origin's gc horizon `H` the view holds
//! the whole history; at or below it, each key's newest version only, and
//! none at all for a key whose newest was a tombstone that gc collected.
//!
//! The destination, for each chunk `[from, to)`:
//! - merges the versions above its cursor for the origin
//!   ([`versions_to_merge`]); those at or below were applied already, and
//!   merging is idempotent and commutative, so a chunk applied twice (a
//!   restarted catch-up) changes nothing more;
//! - deletes, with a tombstone at `H`, every key it holds live in the span
//!   that the view lacks entirely, when its newest version is at or below
//!   the origin's frontier and below `H` ([`collected_deletions`]): every
//!   region's writes up to the origin's frontier had been applied at the
//!   origin, so the origin held that version, and it could only vanish
//!   under a newer tombstone at or below `H` that gc collected. A newer
//!   version (above the frontier) may not have reached the origin, and is
//!   kept.
//! - on the last chunk, sets its cursor to `at` and raises its gc horizon
//!   for the range to `min(H, its frontier)`: below `H` it cannot know the
//!   history the origin collected, so reads there are refused rather than
//!   answered from an incomplete one, but never above its frontier, where
//!   other regions' batches still apply.
//!
//! A chunk whose `at` is not above the cursor is refused (the destination
//! already has that state): the stream resumes from the cursor instead.

use std::collections::HashSet;

use crate::types::Timestamp;

/// Most bytes of keys and values in one chunk (whole keys only: a key's
/// versions are never split, so a chunk exceeds this by at most one key).
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Whether a chunk's version at `ts` is merged, given the destination's
/// cursor for the origin: only those above it (the rest were applied).
pub fn versions_to_merge(ts: Timestamp, cursor: Timestamp) -> bool {
    ts > cursor
}

/// The keys the destination must delete at `horizon` for one chunk: those
/// it holds live (`local`: key and newest version, in the chunk's span)
/// that the origin's view lacks (`origin_keys`), whose newest version is at
/// or below `origin_frontier` and below `horizon`. None when the
/// destination's `cursor` is at or above the horizon: it then applied every
/// origin tombstone gc could have collected.
pub fn collected_deletions<'a>(
    origin_keys: &HashSet<&[u8]>,
    local: impl IntoIterator<Item = (&'a [u8], Timestamp)>,
    horizon: Timestamp,
    origin_frontier: Timestamp,
    cursor: Timestamp,
) -> Vec<Vec<u8>> {
    if horizon <= cursor {
        return Vec::new();
    }
    local
        .into_iter()
        .filter(|(key, newest)| {
            !origin_keys.contains(key) && *newest <= origin_frontier && *newest < horizon
        })
        .map(|(key, _)| key.to_vec())
        .collect()
}

/// The gc horizon the destination raises the range to after the last
/// chunk: the origin's horizon, but never above the destination's frontier.
pub fn raised_horizon(origin_horizon: Timestamp, frontier: Timestamp) -> Timestamp {
    origin_horizon.min(frontier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(n: u64) -> Timestamp {
        Timestamp(n)
    }

    #[test]
    fn only_versions_above_the_cursor_are_merged() {
        assert!(!versions_to_merge(ts(5), ts(5)));
        assert!(!versions_to_merge(ts(4), ts(5)));
        assert!(versions_to_merge(ts(6), ts(5)));
    }

    #[test]
    fn a_key_the_origin_lost_to_a_collected_tombstone_is_deleted() {
        let origin: HashSet<&[u8]> = [b"kept".as_slice()].into_iter().collect();
        let local = [
            // Present at the origin: merged, never deleted here.
            (b"kept".as_slice(), ts(10)),
            // Absent there, old enough, seen there: its tombstone was collected.
            (b"gone".as_slice(), ts(10)),
            // Newer than the origin's frontier: it may not have reached the origin.
            (b"unseen".as_slice(), ts(60)),
            // At the horizon or above: the origin would still hold it (or a
            // tombstone above it) had it been seen there.
            (b"recent".as_slice(), ts(40)),
        ];
        let gone = collected_deletions(&origin, local, ts(40), ts(50), ts(5));
        assert_eq!(gone, vec![b"gone".to_vec()]);
        // A cursor at the horizon already holds every collected tombstone.
        assert!(collected_deletions(&origin, local, ts(40), ts(50), ts(40)).is_empty());
    }

    #[test]
    fn nothing_is_deleted_when_the_origin_holds_every_key() {
        let origin: HashSet<&[u8]> = [b"a".as_slice(), b"b".as_slice()].into_iter().collect();
        let local = [(b"a".as_slice(), ts(1)), (b"b".as_slice(), ts(2))];
        assert!(collected_deletions(&origin, local, ts(40), ts(50), ts(5)).is_empty());
    }

    #[test]
    fn the_horizon_is_raised_no_further_than_the_frontier() {
        assert_eq!(raised_horizon(ts(40), ts(100)), ts(40));
        assert_eq!(raised_horizon(ts(40), ts(30)), ts(30));
    }
}
