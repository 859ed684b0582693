//! The emulated network's state: the regions, the parameters of every
//! directed region pair, and the partitions in force.
//!
//! Pure data with no time and no IO. The engine task owns the master copy
//! (inside [`crate::core::Core`]) and publishes a clone after every change,
//! which the TCP proxies read.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ControlError;
use crate::limits::MAX_REGIONS;
use crate::link::LinkParams;

/// Name shown for traffic whose source matched no region (see
/// [`LinkId::from`]).
pub const UNCLASSIFIED: &str = "unclassified";

/// A region, by its position in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub(crate) u16);

impl RegionId {
    /// Position in the topology's region list (0-based).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// One direction of a region pair: the path a packet takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkId {
    /// The sender's region; `None` for an unclassified sender (no rule
    /// matched its source address and no default region is configured),
    /// whose traffic is never delayed, lost or cut.
    pub from: Option<RegionId>,
    /// The receiver's region; `None` for replies to an unclassified sender.
    pub to: Option<RegionId>,
}

impl LinkId {
    /// The other direction.
    pub fn reverse(self) -> LinkId {
        LinkId {
            from: self.to,
            to: self.from,
        }
    }
}

/// A partition: which traffic between regions is cut. Traffic inside a
/// region is never cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Partition {
    /// Cut both directions between two regions.
    Cut {
        /// One region.
        a: String,
        /// The other region.
        b: String,
    },
    /// Cut one direction only: `from` can no longer reach `to`, but `to`'s
    /// packets still reach `from` (an asymmetric partition).
    OneWay {
        /// The sending region whose packets are dropped.
        from: String,
        /// The receiving region.
        to: String,
    },
    /// Cut a region from every other region, both directions.
    Isolate {
        /// The region.
        region: String,
    },
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Cut { a, b } => write!(f, "{a} <-/-> {b}"),
            Partition::OneWay { from, to } => write!(f, "{from} -/-> {to}"),
            Partition::Isolate { region } => write!(f, "{region} isolated"),
        }
    }
}

/// The regions, link parameters and partitions.
#[derive(Clone, Debug)]
pub struct LinkTable {
    names: Vec<String>,
    /// `params[from * n + to]`, both regions known.
    params: Vec<LinkParams>,
    /// `cut[from * n + to]`, derived from `partitions`.
    cut: Vec<bool>,
    /// In the order they were applied, without duplicates.
    partitions: Vec<Partition>,
}

impl LinkTable {
    /// Regions by name (unique, non-empty, at most [`MAX_REGIONS`]), every
    /// link at [`LinkParams::ZERO`] and nothing cut.
    pub fn new(names: Vec<String>) -> Result<LinkTable, ControlError> {
        if names.is_empty() || names.len() > MAX_REGIONS {
            return Err(ControlError::Invalid(format!(
                "a topology needs 1..={MAX_REGIONS} regions, got {}",
                names.len()
            )));
        }
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || name == UNCLASSIFIED || names[..i].contains(name) {
                return Err(ControlError::Invalid(format!(
                    "region names must be unique, non-empty and not \"{UNCLASSIFIED}\": {name:?}"
                )));
            }
        }
        let n = names.len();
        Ok(LinkTable {
            names,
            params: vec![LinkParams::ZERO; n * n],
            cut: vec![false; n * n],
            partitions: Vec::new(),
        })
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a table has at least one region.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Region names in topology order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> Result<RegionId, ControlError> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(RegionId)
            .ok_or_else(|| ControlError::UnknownRegion(name.to_string()))
    }

    /// The name of `id`, or [`UNCLASSIFIED`] for `None`.
    pub fn name(&self, id: Option<RegionId>) -> &str {
        id.and_then(|r| self.names.get(r.index()))
            .map_or(UNCLASSIFIED, String::as_str)
    }

    /// Every region id, in order.
    pub fn ids(&self) -> impl Iterator<Item = RegionId> + '_ {
        (0..self.names.len()).filter_map(|i| u16::try_from(i).ok().map(RegionId))
    }

    /// Size of an array with one entry per directed link, links to and
    /// from unclassified senders included (see [`Self::link_slot`]).
    pub fn link_slots(&self) -> usize {
        (self.names.len() + 1) * (self.names.len() + 1)
    }

    /// Index of `link` in an array of [`Self::link_slots`] entries.
    pub fn link_slot(&self, link: LinkId) -> usize {
        let n = self.names.len();
        let end = |r: Option<RegionId>| r.map_or(n, |r| r.index().min(n));
        end(link.from) * (n + 1) + end(link.to)
    }

    fn slot(&self, from: RegionId, to: RegionId) -> usize {
        from.index() * self.names.len() + to.index()
    }

    /// Sets both directions between `a` and `b` (the same region: its own
    /// traffic).
    pub fn set_link(&mut self, a: &str, b: &str, params: LinkParams) -> Result<(), ControlError> {
        params.validate().map_err(ControlError::Invalid)?;
        let (a, b) = (self.region(a)?, self.region(b)?);
        let (ab, ba) = (self.slot(a, b), self.slot(b, a));
        self.params[ab] = params;
        self.params[ba] = params;
        Ok(())
    }

    /// What `link` does to packets; unclassified ends get [`LinkParams::ZERO`].
    pub fn params(&self, link: LinkId) -> LinkParams {
        match (link.from, link.to) {
            (Some(f), Some(t)) => self.params[self.slot(f, t)],
            _ => LinkParams::ZERO,
        }
    }

    /// Whether a partition cuts `link` now. Never for a region's own
    /// traffic or an unclassified end.
    pub fn is_cut(&self, link: LinkId) -> bool {
        match (link.from, link.to) {
            (Some(f), Some(t)) if f != t => self.cut[self.slot(f, t)],
            _ => false,
        }
    }

    /// The partitions in force, in the order applied.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// Adds a partition (a no-op if the same one is already in force).
    pub fn partition(&mut self, p: Partition) -> Result<(), ControlError> {
        self.check(&p)?;
        if !self.partitions.contains(&p) {
            self.partitions.push(p);
        }
        self.recompute();
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.partitions.clear();
        self.recompute();
    }

    fn check(&self, p: &Partition) -> Result<(), ControlError> {
        let (a, b) = match p {
            Partition::Isolate { region } => return self.region(region).map(|_| ()),
            Partition::Cut { a, b } => (a, b),
            Partition::OneWay { from, to } => (from, to),
        };
        if self.region(a)? == self.region(b)? {
            return Err(ControlError::Invalid(format!(
                "a partition needs two different regions, got {a} twice"
            )));
        }
        Ok(())
    }

    fn recompute(&mut self) {
        self.cut.iter_mut().for_each(|c| *c = false);
        let n = self.names.len();
        let mut cuts = Vec::new();
        for p in &self.partitions {
            // Names were checked when the partition was added.
            match p {
                Partition::Cut { a, b } => {
                    if let (Ok(a), Ok(b)) = (self.region(a), self.region(b)) {
                        cuts.push((a.index(), b.index()));
                        cuts.push((b.index(), a.index()));
                    }
                }
                Partition::OneWay { from, to } => {
                    if let (Ok(f), Ok(t)) = (self.region(from), self.region(to)) {
                        cuts.push((f.index(), t.index()));
                    }
                }
                Partition::Isolate { region } => {
                    if let Ok(r) = self.region(region) {
                        for other in (0..n).filter(|&o| o != r.index()) {
                            cuts.push((r.index(), other));
                            cuts.push((other, r.index()));
                        }
                    }
                }
            }
        }
        for (f, t) in cuts {
            self.cut[f * n + t] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> LinkTable {
        let mut t =
            LinkTable::new(vec!["us-east".into(), "eu-west".into(), "ap-south".into()]).unwrap();
        t.set_link("us-east", "eu-west", LinkParams::rtt(70))
            .unwrap();
        t.set_link("eu-west", "ap-south", LinkParams::rtt(140))
            .unwrap();
        t.set_link("us-east", "ap-south", LinkParams::rtt(200))
            .unwrap();
        t
    }

    fn link(t: &LinkTable, from: &str, to: &str) -> LinkId {
        LinkId {
            from: Some(t.region(from).unwrap()),
            to: Some(t.region(to).unwrap()),
        }
    }

    const ALL: [&str; 3] = ["us-east", "eu-west", "ap-south"];

    fn cut_pairs(t: &LinkTable) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        for f in ALL {
            for to in ALL {
                if t.is_cut(link(t, f, to)) {
                    out.push((f, to));
                }
            }
        }
        out
    }

    #[test]
    fn links_are_symmetric_and_unclassified_is_free() {
        let t = table();
        assert_eq!(t.params(link(&t, "eu-west", "us-east")).rtt_ms, 70);
        assert_eq!(t.params(link(&t, "ap-south", "eu-west")).rtt_ms, 140);
        assert_eq!(t.params(link(&t, "us-east", "us-east")), LinkParams::ZERO);
        let from_cli = LinkId {
            from: None,
            to: Some(t.region("ap-south").unwrap()),
        };
        assert_eq!(t.params(from_cli), LinkParams::ZERO);
        assert_eq!(t.name(None), UNCLASSIFIED);
    }

    #[test]
    fn cut_is_both_ways_one_way_is_one() {
        let mut t = table();
        t.partition(Partition::Cut {
            a: "us-east".into(),
            b: "eu-west".into(),
        })
        .unwrap();
        assert_eq!(
            cut_pairs(&t),
            [("us-east", "eu-west"), ("eu-west", "us-east")]
        );
        t.heal();
        t.partition(Partition::OneWay {
            from: "ap-south".into(),
            to: "us-east".into(),
        })
        .unwrap();
        assert_eq!(cut_pairs(&t), [("ap-south", "us-east")]);
    }

    #[test]
    fn isolate_cuts_every_other_region_but_not_its_own_traffic() {
        let mut t = table();
        t.partition(Partition::Isolate {
            region: "eu-west".into(),
        })
        .unwrap();
        assert_eq!(
            cut_pairs(&t),
            [
                ("us-east", "eu-west"),
                ("eu-west", "us-east"),
                ("eu-west", "ap-south"),
                ("ap-south", "eu-west"),
            ]
        );
        assert!(!t.is_cut(link(&t, "eu-west", "eu-west")));
        let unclassified = LinkId {
            from: None,
            to: Some(t.region("eu-west").unwrap()),
        };
        assert!(!t.is_cut(unclassified));
    }

    #[test]
    fn partitions_stack_dedupe_and_heal_all() {
        let mut t = table();
        let p = Partition::Cut {
            a: "us-east".into(),
            b: "ap-south".into(),
        };
        t.partition(p.clone()).unwrap();
        t.partition(p.clone()).unwrap();
        t.partition(Partition::OneWay {
            from: "eu-west".into(),
            to: "us-east".into(),
        })
        .unwrap();
        assert_eq!(t.partitions().len(), 2);
        assert_eq!(cut_pairs(&t).len(), 3);
        t.heal();
        assert!(t.partitions().is_empty());
        assert!(cut_pairs(&t).is_empty());
    }

    #[test]
    fn bad_partitions_and_links_are_refused_without_change() {
        let mut t = table();
        let e = t
            .partition(Partition::Isolate {
                region: "mars".into(),
            })
            .unwrap_err();
        assert!(matches!(e, ControlError::UnknownRegion(ref r) if r == "mars"));
        let e = t
            .partition(Partition::Cut {
                a: "us-east".into(),
                b: "us-east".into(),
            })
            .unwrap_err();
        assert!(matches!(e, ControlError::Invalid(_)));
        assert!(t.partitions().is_empty());
        let bad = LinkParams {
            loss: 2.0,
            ..LinkParams::ZERO
        };
        assert!(t.set_link("us-east", "eu-west", bad).is_err());
        assert_eq!(t.params(link(&t, "us-east", "eu-west")).rtt_ms, 70);
    }

    #[test]
    fn region_names_must_be_unique_and_not_reserved() {
        assert!(LinkTable::new(vec![]).is_err());
        assert!(LinkTable::new(vec!["a".into(), "a".into()]).is_err());
        assert!(LinkTable::new(vec![UNCLASSIFIED.into()]).is_err());
        assert!(LinkTable::new(vec![String::new()]).is_err());
    }
}
