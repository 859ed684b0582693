//! What consumers read: Meridian types only, never foca's. The owner task
//! publishes an immutable [`Snapshot`] after every change; handles read it
//! without talking to the owner.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::identity::NodeIdentity;

/// A member's liveness as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Failed a probe; treated as alive until it refutes or the suspicion
    /// timeout declares it Down.
    Suspect,
    /// Declared Down by the failure detector.
    Down,
    /// Left gracefully (`Membership::leave`).
    Left,
}

impl MemberState {
    /// Alive or Suspect: SWIM treats a suspect as alive.
    pub fn is_active(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }

    /// The `state` label of `meridian_gossip_members`.
    pub fn label(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
        }
    }
}

/// A member's incarnation, totally ordered (field order = significance):
/// a restart raises `generation`, a rejoin after a false Down raises
/// `rejoin`, a refuted suspicion raises `refutation`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Incarnation {
    /// Process generation ([`NodeIdentity::generation`]).
    pub generation: u64,
    /// Rejoins of this generation after being declared Down.
    pub rejoin: u32,
    /// SWIM incarnation inside this identity (refuted suspicions).
    pub refutation: u16,
}

/// One member, as this node sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberView {
    /// Who it is.
    pub identity: NodeIdentity,
    /// Its liveness.
    pub state: MemberState,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Smoothed RTT this node measured to it, in milliseconds (`None` for
    /// ourselves and before the first measurement).
    pub rtt_ms: Option<f64>,
}

/// Member counts of one region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionHealth {
    /// Members Alive.
    pub alive: u32,
    /// Members Suspect.
    pub suspect: u32,
    /// Members Down or Left.
    pub down: u32,
}

/// The Raft group of one range in one region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeGroup {
    /// Range id.
    pub range: u64,
    /// Region whose group this is.
    pub region: String,
}

/// Who leads a range's group, as last published. A hint: check the
/// leader's liveness and be ready for a redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    /// Range id.
    pub range: u64,
    /// Region of the group.
    pub region: String,
    /// Leader's node id.
    pub leader_node: String,
    /// Raft term of that leadership. Higher terms replace lower ones; on
    /// equal terms the greater node id wins, so all nodes converge.
    pub term: u64,
}

/// One node's published view of region health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// The reporting node.
    pub reporter: String,
    /// Its region.
    pub reporter_region: String,
    /// Counts per region, as it saw them.
    pub regions: BTreeMap<String, RegionHealth>,
}

/// Events, in the order this node observed them. Delivered through a
/// bounded broadcast channel: a slow receiver gets `Lagged` and should
/// re-read [`crate::membership::Membership::members`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MembershipEvent {
    /// A member (or a new identity of a node id: restart or rejoin) is alive.
    Joined(MemberView),
    /// A member failed a probe.
    Suspected(MemberView),
    /// A suspect refuted the suspicion (a false suspicion).
    Refuted(MemberView),
    /// A member was declared Down.
    Down(MemberView),
    /// A member left gracefully.
    Left(MemberView),
    /// This node was declared Down while alive and rejoined with a higher
    /// incarnation (a false positive or a partition: see docs/membership.md).
    Rejoined(MemberView),
}

/// Everything handles read, published whole by the owner task.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// Self first, then by node id.
    pub(crate) members: Arc<Vec<MemberView>>,
    pub(crate) leader_hints: Arc<BTreeMap<RangeGroup, LeaderHint>>,
    pub(crate) health_reports: Arc<BTreeMap<String, HealthReport>>,
    /// Reporter node id → peer node id → RTT in ms.
    pub(crate) rtt_reports: Arc<BTreeMap<String, BTreeMap<String, f64>>>,
}

/// Counts members per region (self included).
pub(crate) fn region_counts<'a>(
    members: impl Iterator<Item = (&'a str, MemberState)>,
) -> BTreeMap<String, RegionHealth> {
    let mut out: BTreeMap<String, RegionHealth> = BTreeMap::new();
    for (region, state) in members {
        let entry = out.entry(region.to_owned()).or_default();
        match state {
            MemberState::Alive => entry.alive += 1,
            MemberState::Suspect => entry.suspect += 1,
            MemberState::Down | MemberState::Left => entry.down += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnation_orders_generation_first() {
        let a = Incarnation {
            generation: 1,
            rejoin: 9,
            refutation: 9,
        };
        let b = Incarnation {
            generation: 2,
            rejoin: 0,
            refutation: 0,
        };
        assert!(b > a);
        let c = Incarnation {
            refutation: 10,
            ..a
        };
        assert!(c > a && c < b);
    }

    #[test]
    fn counts_per_region() {
        let counts = region_counts(
            [
                ("eu", MemberState::Alive),
                ("eu", MemberState::Suspect),
                ("us", MemberState::Left),
                ("us", MemberState::Alive),
            ]
            .into_iter(),
        );
        assert_eq!(
            counts["eu"],
            RegionHealth {
                alive: 1,
                suspect: 1,
                down: 0
            }
        );
        assert_eq!(counts["us"].down, 1);
    }
}
