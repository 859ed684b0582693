//! A range's frontier in one region (../shared/design.md, "Topology"): the
//! minimum closed timestamp over every region that writes the range, the
//! local region included. Reads at or below it are consistent snapshots of
//! everything every writer did up to it.
//!
//! - The local region's closed timestamp is the range's applied timestamp:
//!   every entry applied later is stamped above it
//!   (`max(proposed_at, last_applied + 1)`, docs/architecture.md).
//! - Another region's closed timestamp is this region's cursor for it
//!   ([`super::stream::Inbound`]).
//! - Which regions write a range follows its policy: only the home region
//!   for a strong prefix, every region hosting it otherwise.
//!
//! An idle range's applied timestamp does not move by itself; its leader
//! commits a close (a barrier entry) when [`needs_close`] says so, so idle
//! ranges keep a fresh frontier in every region.

use std::collections::BTreeMap;

use crate::types::Timestamp;

/// How often an idle range's leader closes a new timestamp, ms. Bounds the
/// staleness an idle range shows in remote regions (plus one-way latency).
pub const CLOSE_INTERVAL_MS: u64 = 200;

/// Closed timestamps of one range in one region, per writing region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    closed: BTreeMap<String, Timestamp>,
}

impl Frontier {
    /// A frontier over `writers`, none of which has closed anything yet.
    pub fn new<'a>(writers: impl IntoIterator<Item = &'a str>) -> Self {
        Frontier {
            closed: writers
                .into_iter()
                .map(|r| (r.to_string(), Timestamp::ZERO))
                .collect(),
        }
    }

    /// Records that `region` closed `ts` (never moves backwards; a region
    /// that does not write the range is ignored).
    pub fn close(&mut self, region: &str, ts: Timestamp) {
        if let Some(c) = self.closed.get_mut(region) {
            *c = (*c).max(ts);
        }
    }

    /// The frontier: the lowest closed timestamp over the writers.
    pub fn frontier(&self) -> Timestamp {
        self.closed
            .values()
            .copied()
            .min()
            .unwrap_or(Timestamp::ZERO)
    }

    /// The writer holding the frontier back, with its closed timestamp.
    pub fn laggard(&self) -> Option<(&str, Timestamp)> {
        self.closed
            .iter()
            .min_by_key(|(_, ts)| **ts)
            .map(|(r, ts)| (r.as_str(), *ts))
    }
}

/// Whether a range leader whose applied timestamp is `applied` should
/// commit a close now: when the applied timestamp is `CLOSE_INTERVAL_MS`
/// or more behind the clock (an active range advances by its own writes).
pub fn needs_close(now: Timestamp, applied: Timestamp) -> bool {
    super::read::staleness_ms(now, applied) >= CLOSE_INTERVAL_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_parts(1_790_000_000_000 + ms, 0).unwrap()
    }

    #[test]
    fn the_frontier_is_the_slowest_writer() {
        let mut f = Frontier::new(["us-east", "eu-west", "ap-south"]);
        assert_eq!(f.frontier(), Timestamp::ZERO);
        f.close("us-east", ts(100));
        f.close("eu-west", ts(90));
        f.close("ap-south", ts(120));
        assert_eq!(f.frontier(), ts(90));
        assert_eq!(f.laggard(), Some(("eu-west", ts(90))));
        f.close("eu-west", ts(50));
        assert_eq!(f.frontier(), ts(90), "closed timestamps never move back");
        f.close("mars", ts(1));
        assert_eq!(
            f.frontier(),
            ts(90),
            "a region that does not write is ignored"
        );
        let strong = Frontier::new(["us-east"]);
        assert_eq!(strong.laggard().map(|(r, _)| r), Some("us-east"));
    }

    #[test]
    fn idle_ranges_are_closed_every_interval() {
        assert!(!needs_close(ts(1_000), ts(900)));
        assert!(needs_close(ts(1_000), ts(1_000 - CLOSE_INTERVAL_MS as i64)));
        assert!(
            !needs_close(ts(1_000), ts(1_100)),
            "applied ahead of the clock"
        );
    }
}
