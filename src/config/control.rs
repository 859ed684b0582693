//! `[control]`: this node's replica of the control range, the one Raft
//! group that spans regions (../shared/design.md, "Topology").
//!
//! The control range holds the cluster's prefix policies (and the range
//! descriptors). Its voters sit in a majority of the regions, so a cut-off
//! minority can never change them; every other member is a learner, which
//! receives every change and applies it, so a policy change reaches every
//! node without a restart. `members` must be identical on every node.
//! Empty (the default) means no control range: the `[replication]` policies
//! are fixed for the life of the process and `meridian policy set` is
//! refused with a clear error.
//!
//! Its timers are separate from `[raft]`'s: its heartbeats cross the WAN.
//! openraft times an AppendEntries out at 3/4 of the heartbeat interval,
//! so the interval must be well above 4/3 of the worst round trip from any
//! voter to any member (twice it is a safe choice), or the farthest
//! members never receive a change.
//!
//! ```toml
//! [control]
//! node_id = 1
//! bootstrap = true        # on one voter only
//! [[control.members]]
//! id = 1
//! name = "us-east-1"
//! addr = "10.0.1.1:7379"
//! region = "us-east"
//! [[control.members]]
//! id = 2
//! name = "us-east-2"
//! addr = "10.0.1.2:7379"
//! region = "us-east"
//! voter = false
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::raft::{validate_election_timing, Peer};
use super::{check_name, invalid, parse_addr, ConfigError};
use crate::raft::reads::DEFAULT_DIRECT_CONFIRMATIONS;
use crate::raft::{RaftNode, RaftTiming};

/// Most members (voters and learners) of the control range.
pub const MAX_CONTROL_MEMBERS: usize = 64;
/// Most voters of the control range.
pub const MAX_CONTROL_VOTERS: usize = 7;
/// The control range snapshots after this many log entries (policy
/// changes are rare; a small log keeps restarts quick).
pub const CONTROL_SNAPSHOT_AFTER_LOGS: u64 = 1_000;
/// Log entries kept behind a control range snapshot.
pub const CONTROL_LOGS_KEPT: u64 = 100;

/// One member of the control range, as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawControlMember {
    /// Control-range id (1.., unique across the cluster; its own id space,
    /// separate from `[raft]`'s per-region ids).
    pub id: u64,
    /// Node name (its `node.id`).
    pub name: String,
    /// QUIC address others dial (as in `[raft] peers`).
    pub addr: String,
    /// The member's region.
    pub region: String,
    /// The member's zone (default `zone1`).
    pub zone: String,
    /// A voter (default) or a learner (receives and applies every change,
    /// never votes).
    pub voter: bool,
}

impl Default for RawControlMember {
    fn default() -> Self {
        RawControlMember {
            id: 0,
            name: String::new(),
            addr: String::new(),
            region: String::new(),
            zone: String::new(),
            voter: true,
        }
    }
}

/// `[control]` as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawControl {
    /// This node's control-range id (one of `members`). 0 with no members
    /// (the default): no control range.
    pub node_id: u64,
    /// Initialise the control range with its voters on first start (set on
    /// one voter; harmless once it exists). Default false.
    pub bootstrap: bool,
    /// Every member, this node included (1..=64; 1..=7 voters).
    pub members: Vec<RawControlMember>,
    /// Leader heartbeat, ms; must be well above 4/3 of the worst RTT from
    /// a voter to any member (an AppendEntries times out at 3/4 of it).
    /// Default 250 (round trips up to about 150 ms).
    pub heartbeat_interval_ms: u64,
    /// Minimum election timeout, ms (> heartbeat). Default 1500.
    pub election_timeout_min_ms: u64,
    /// Maximum election timeout and leader lease, ms (> min). Default 3000.
    pub election_timeout_max_ms: u64,
}

impl Default for RawControl {
    fn default() -> Self {
        RawControl {
            node_id: 0,
            bootstrap: false,
            members: Vec::new(),
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1_500,
            election_timeout_max_ms: 3_000,
        }
    }
}

/// `[control]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    /// This node's control-range id.
    pub node_id: u64,
    /// Whether this node initialises the range (with `voters`).
    pub bootstrap: bool,
    /// The voters.
    pub voters: Vec<Peer>,
    /// The learners (the leader adds them).
    pub learners: Vec<Peer>,
    /// Timers.
    pub timing: RaftTiming,
}

impl ControlConfig {
    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = &Peer> {
        self.voters.iter().chain(&self.learners)
    }
}

impl RawControl {
    /// Validates against this node's name and the cluster's `regions`.
    /// `Ok(None)`: no control range configured.
    pub fn validate(
        &self,
        me: &str,
        regions: &[String],
    ) -> Result<Option<ControlConfig>, ConfigError> {
        if self.members.is_empty() {
            if self.node_id != 0 || self.bootstrap {
                return Err(invalid(
                    "control.members",
                    "control.node_id or control.bootstrap is set but no members are listed",
                    0,
                ));
            }
            return Ok(None);
        }
        if self.members.len() > MAX_CONTROL_MEMBERS {
            let rule = format!("at most {MAX_CONTROL_MEMBERS} members");
            return Err(invalid("control.members", rule, self.members.len()));
        }
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        let (mut voters, mut learners) = (Vec::new(), Vec::new());
        for m in &self.members {
            if m.id == 0 || !ids.insert(m.id) {
                return Err(invalid(
                    "control.members.id",
                    "must be non-zero and unique",
                    m.id,
                ));
            }
            check_name("control.members.name", &m.name)?;
            if !names.insert(m.name.as_str()) {
                return Err(invalid("control.members.name", "must be unique", &m.name));
            }
            if !regions.contains(&m.region) {
                let rule = format!("must be one of the regions ({})", regions.join(", "));
                return Err(invalid("control.members.region", rule, &m.region));
            }
            let zone = if m.zone.is_empty() {
                "zone1".to_string()
            } else {
                m.zone.clone()
            };
            check_name("control.members.zone", &zone)?;
            let addr = parse_addr("control.members.addr", &m.addr)?;
            let peer = Peer {
                id: m.id,
                node: RaftNode {
                    name: m.name.clone(),
                    addr: addr.to_string(),
                    region: m.region.clone(),
                    zone,
                },
                addr,
            };
            if m.voter {
                voters.push(peer);
            } else {
                learners.push(peer);
            }
        }
        if voters.is_empty() || voters.len() > MAX_CONTROL_VOTERS {
            let rule = format!("1..={MAX_CONTROL_VOTERS} members must be voters");
            return Err(invalid("control.members.voter", rule, voters.len()));
        }
        // A majority of the regions must hold voters: then no single
        // region (nor any minority of regions) cut off from the rest can
        // commit a change on its own, and losing one region of three keeps
        // a quorum when its voters are spread.
        let voter_regions: BTreeSet<&str> = voters.iter().map(|v| v.node.region.as_str()).collect();
        if voter_regions.len() * 2 <= regions.len() {
            let rule = format!(
                "voters must sit in a majority of the {} regions; they sit in {}",
                regions.len(),
                voter_regions.into_iter().collect::<Vec<_>>().join(", ")
            );
            return Err(invalid("control.members.voter", rule, voters.len()));
        }
        let own = voters
            .iter()
            .chain(&learners)
            .find(|p| p.id == self.node_id);
        match own {
            None => {
                return Err(invalid(
                    "control.node_id",
                    "must be one of control.members' ids",
                    self.node_id,
                ))
            }
            Some(p) if p.node.name != me => {
                let rule = format!(
                    "member {} is named {:?}, not this node ({me:?})",
                    p.id, p.node.name
                );
                return Err(invalid("control.node_id", rule, self.node_id));
            }
            Some(_) => {}
        }
        if self.bootstrap && !voters.iter().any(|v| v.id == self.node_id) {
            return Err(invalid(
                "control.bootstrap",
                "only a voter may initialise the control range",
                self.node_id,
            ));
        }
        let (hb, min, max) = validate_election_timing(
            [
                "control.heartbeat_interval_ms",
                "control.election_timeout_min_ms",
                "control.election_timeout_max_ms",
            ],
            self.heartbeat_interval_ms,
            self.election_timeout_min_ms,
            self.election_timeout_max_ms,
        )?;
        Ok(Some(ControlConfig {
            node_id: self.node_id,
            bootstrap: self.bootstrap,
            voters,
            learners,
            timing: RaftTiming {
                heartbeat_interval_ms: hb,
                election_timeout_min_ms: min,
                election_timeout_max_ms: max,
                snapshot_after_logs: CONTROL_SNAPSHOT_AFTER_LOGS,
                logs_kept_after_snapshot: CONTROL_LOGS_KEPT,
                direct_read_confirmations: DEFAULT_DIRECT_CONFIRMATIONS,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, region: &str, voter: bool) -> RawControlMember {
        RawControlMember {
            id,
            name: format!("n{id}"),
            addr: format!("127.0.0.1:{}", 7000 + id),
            region: region.into(),
            zone: String::new(),
            voter,
        }
    }

    fn regions() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn raw(members: Vec<RawControlMember>) -> RawControl {
        RawControl {
            node_id: 1,
            members,
            ..RawControl::default()
        }
    }

    #[test]
    fn voters_in_a_majority_of_regions_and_learners_elsewhere_validate() {
        let c = raw(vec![
            member(1, "a", true),
            member(2, "b", true),
            member(3, "c", true),
            member(4, "a", false),
        ])
        .validate("n1", &regions())
        .unwrap()
        .unwrap();
        assert_eq!(c.voters.len(), 3);
        assert_eq!(c.learners.len(), 1);
        assert_eq!(c.members().count(), 4);
        assert_eq!(c.timing.heartbeat_interval_ms, 250);
        assert!(RawControl::default()
            .validate("n1", &regions())
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_control_configs_name_their_field() {
        let err = |r: RawControl| r.validate("n1", &regions()).unwrap_err().to_string();
        let one_region = raw(vec![member(1, "a", true), member(2, "a", true)]);
        assert!(err(one_region).contains("majority"));
        let unknown = raw(vec![member(1, "mars", true)]);
        assert!(err(unknown).contains("control.members.region"));
        let dup = raw(vec![member(1, "a", true), member(1, "b", true)]);
        assert!(err(dup).contains("control.members.id"));
        let mut not_me = raw(vec![member(1, "a", true), member(2, "b", true)]);
        not_me.node_id = 9;
        assert!(err(not_me).contains("control.node_id"));
        let mut learner_boot = raw(vec![
            member(1, "a", false),
            member(2, "b", true),
            member(3, "c", true),
        ]);
        learner_boot.bootstrap = true;
        assert!(err(learner_boot).contains("control.bootstrap"));
        let mut timing = raw(vec![member(1, "a", true), member(2, "b", true)]);
        timing.election_timeout_min_ms = 100;
        assert!(err(timing).contains("control.election_timeout_min_ms"));
        let orphan = RawControl {
            node_id: 3,
            ..RawControl::default()
        };
        assert!(err(orphan).contains("control.members"));
    }
}
