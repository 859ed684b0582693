//! `sync-N` replication: when a write to a prefix whose policy is `sync-N`
//! may be acknowledged (../shared/design.md, "Consistency, per key prefix
//! and per call": "sync-N: ack only after N other regions have durably
//! applied").
//!
//! The rule, from the stream's invariant (`stream`, "exactly once"): a
//! destination's cursor for an origin is part of its replicated state and
//! every origin record at or below it is applied there, committed in that
//! region's Raft log. So a write the origin applied at `version` is durable
//! in a region as soon as that region acknowledged a cursor at or above
//! `version` — an ack of a later batch covers every earlier record, and a
//! cursor never moves backwards. A write is **confirmed** when `n`
//! *distinct* other regions have done so.
//!
//! Pure: the engine waits on the acknowledged cursors the range leader's
//! outbound streams publish (`engine::replicated::AckedCursors`) and asks
//! [`confirmed`] each time they move.

use std::collections::BTreeMap;

use crate::types::Timestamp;

/// Longest a `sync-N` write waits, after it committed in its own region,
/// for `N` other regions to acknowledge it. Past it the write is reported
/// with `MER-3005` (committed here, not confirmed elsewhere). Well below the
/// client's request timeout (10 s) so the client sees this answer, not its
/// own timeout.
pub const SYNC_CONFIRM_TIMEOUT_MS: u64 = 5_000;

/// How many regions in `acked` (region → the cursor it acknowledged for
/// this origin and range) have applied everything up to `version`.
pub fn regions_at(acked: &BTreeMap<String, Timestamp>, version: Timestamp) -> usize {
    acked.values().filter(|cursor| **cursor >= version).count()
}

/// Whether a write applied at `version` is durable in at least `n` other
/// regions.
pub fn confirmed(acked: &BTreeMap<String, Timestamp>, version: Timestamp, n: u8) -> bool {
    regions_at(acked, version) >= usize::from(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(pairs: &[(&str, u64)]) -> BTreeMap<String, Timestamp> {
        pairs
            .iter()
            .map(|(r, t)| ((*r).to_string(), Timestamp(*t)))
            .collect()
    }

    #[test]
    fn a_write_is_confirmed_by_n_distinct_regions_at_or_past_its_version() {
        let none = acks(&[]);
        assert!(!confirmed(&none, Timestamp(10), 1));
        let one = acks(&[("eu-west", 10), ("ap-south", 9)]);
        assert!(
            confirmed(&one, Timestamp(10), 1),
            "a cursor at the version covers it"
        );
        assert!(!confirmed(&one, Timestamp(10), 2), "ap-south is one short");
        assert!(!confirmed(&one, Timestamp(11), 1));
        let both = acks(&[("eu-west", 50), ("ap-south", 12)]);
        assert_eq!(regions_at(&both, Timestamp(11)), 2);
        assert!(
            confirmed(&both, Timestamp(11), 2),
            "later acks cover earlier writes"
        );
    }
}
