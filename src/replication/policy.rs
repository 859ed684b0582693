//! Prefix policies: what consistency a key prefix promises, which region
//! is its home, and how its writes replicate (../shared/design.md,
//! "Consistency, per key prefix and per call").
//!
//! A [`PolicyTable`] maps every key to exactly one policy: the policy of the
//! longest configured prefix that the key starts with, or the table's
//! default. Prefixes never nest (a policy on `a/` and another on `a/b/` is
//! refused), so a key's policy never depends on the order policies were
//! set in and a range cut at policy prefixes has one policy.
//!
//! Pure data and validation: no clock, no IO. The control range stores the
//! table and hands every node the same one.

use std::collections::BTreeMap;

use thiserror::Error;

/// Most prefix policies a table holds.
pub const MAX_POLICIES: usize = 1_024;
/// Longest policy prefix, in bytes.
pub const MAX_POLICY_PREFIX_BYTES: usize = 256;
/// Longest region name, in bytes.
pub const MAX_REGION_NAME_BYTES: usize = 64;
/// Largest `max_staleness_ms` a policy or a call may name: one day.
pub const MAX_STALENESS_MS: u64 = 86_400_000;
/// Most other regions a `sync-N` policy may wait for.
pub const MAX_SYNC_REGIONS: u8 = 8;

/// What a prefix promises (design.md: strong | causal | eventual).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Consistency {
    /// Any region accepts writes; last writer wins on (HLC, origin region).
    Eventual,
    /// Any region accepts writes, each stamped above the writer's session
    /// token; reads respect session order.
    Causal,
    /// Only the home region accepts writes; linearizable there.
    Strong,
}

impl Consistency {
    /// The name used in config, CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Strong => "strong",
            Consistency::Causal => "causal",
            Consistency::Eventual => "eventual",
        }
    }

    /// Whether writes of this level are accepted only at the home region.
    pub fn home_only_writes(self) -> bool {
        self == Consistency::Strong
    }
}

impl std::str::FromStr for Consistency {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strong" => Ok(Consistency::Strong),
            "causal" => Ok(Consistency::Causal),
            "eventual" => Ok(Consistency::Eventual),
            other => Err(PolicyError::UnknownConsistency(other.to_string())),
        }
    }
}

/// How a prefix's writes reach the other regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// Acknowledged once committed in the accepting region; shipped after.
    Async,
    /// Acknowledged only after this many other regions applied it durably.
    Sync(u8),
}

impl std::str::FromStr for Replication {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "async" {
            return Ok(Replication::Async);
        }
        let bad = || PolicyError::UnknownReplication(s.to_string());
        let n: u8 = s
            .strip_prefix("sync-")
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        if n == 0 || n > MAX_SYNC_REGIONS {
            return Err(bad());
        }
        Ok(Replication::Sync(n))
    }
}

impl std::fmt::Display for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replication::Async => f.write_str("async"),
            Replication::Sync(n) => write!(f, "sync-{n}"),
        }
    }
}

/// The policy of one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// What the prefix promises.
    pub consistency: Consistency,
    /// The region that accepts strong writes and serves linearizable reads.
    pub home: String,
    /// How writes replicate.
    pub replication: Replication,
    /// Default staleness bound of bounded reads that name none, ms.
    pub max_staleness_ms: u64,
}

/// Why a policy or a table change was refused. Nothing was changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not one of strong, causal, eventual.
    #[error("unknown consistency `{0}`: use strong, causal or eventual")]
    UnknownConsistency(String),
    /// Not `async` or `sync-N` with N in 1..=MAX_SYNC_REGIONS.
    #[error("unknown replication `{0}`: use async or sync-N (N = 1..={MAX_SYNC_REGIONS})")]
    UnknownReplication(String),
    /// The home region is not one of the cluster's regions.
    #[error("unknown region `{region}`: the regions are {known}")]
    UnknownRegion {
        /// The name given.
        region: String,
        /// The cluster's regions, comma-separated.
        known: String,
    },
    /// `sync-N` asks for more regions than there are besides the home.
    #[error("replication sync-{n} needs {n} other regions; the cluster has {others}")]
    NotEnoughRegions {
        /// N.
        n: u8,
        /// Regions besides the home.
        others: usize,
    },
    /// The prefix is empty, too long, or nests with another policy's.
    #[error("invalid prefix {prefix:?}: {why}")]
    InvalidPrefix {
        /// The prefix (lossy UTF-8).
        prefix: String,
        /// The rule it breaks.
        why: String,
    },
    /// Staleness bound out of range.
    #[error("max_staleness_ms {0} is out of range (0..={MAX_STALENESS_MS})")]
    Staleness(u64),
    /// The table is full.
    #[error("at most {MAX_POLICIES} prefix policies")]
    TooMany,
    /// The change could let a region serve a guarantee that writes already
    /// acknowledged elsewhere do not meet (see [`check_change`]).
    #[error("{0}")]
    Unsafe(String),
}

/// How a prefix's policy may change from `old` to `new` at run time
/// without loosening a guarantee given for a write already acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// At once: the change keeps a strong prefix strong at the same home
    /// (its replication mode and staleness bound may change: `sync-N`
    /// acknowledgements already given stay true, and `async` ones never
    /// promised more), keeps a causal or eventual prefix below strong, or
    /// loosens strong to causal or eventual (acknowledged strong writes
    /// stay committed at the home and replicate like any other).
    Direct,
    /// Through a handoff: the new home may not hold yet every write
    /// acknowledged under the old policy (turning a causal or eventual
    /// prefix strong: any region's; moving a strong prefix's home: the old
    /// home's, and an earlier home's, which streams carry straight from
    /// that region, not through the old home). Writes to the prefix stop,
    /// each of `sources` fences its ranges and waits until the new home
    /// applied everything it wrote, and only then does the new policy take
    /// effect (docs/consistency.md P3, `engine::handoff`).
    Handoff {
        /// The regions whose acknowledged writes must reach the new home:
        /// every region.
        sources: Vec<String>,
    },
}

/// The [`Transition`] from `old` to `new` in a cluster of `regions`.
pub fn transition(old: &Policy, new: &Policy, regions: &[String]) -> Transition {
    if new.consistency != Consistency::Strong {
        return Transition::Direct;
    }
    if old.consistency != Consistency::Strong {
        return Transition::Handoff {
            sources: regions.to_vec(),
        };
    }
    if old.home != new.home {
        return Transition::Handoff {
            sources: regions.to_vec(),
        };
    }
    Transition::Direct
}

/// Refuses a change that needs a handoff ([`transition`]) where none can
/// run (removing a prefix policy: set the prefix to the default's values
/// first, which hands off, then remove it).
pub fn check_change(old: &Policy, new: &Policy, regions: &[String]) -> Result<(), PolicyError> {
    match transition(old, new, regions) {
        Transition::Direct => Ok(()),
        Transition::Handoff { .. } => Err(PolicyError::Unsafe(format!(
            "falling back to the default ({} at {}) needs a handoff from {} at {}: set the \
             prefix to the default's values first (`meridian policy set`, which hands off), \
             then remove it",
            new.consistency.as_str(),
            new.home,
            old.consistency.as_str(),
            old.home
        ))),
    }
}

/// A change to one policy: the fields to set; `None` keeps the current
/// value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyChange {
    /// New consistency.
    pub consistency: Option<Consistency>,
    /// New home region.
    pub home: Option<String>,
    /// New replication mode.
    pub replication: Option<Replication>,
    /// New default staleness bound, ms.
    pub max_staleness_ms: Option<u64>,
}

impl PolicyChange {
    /// `base` with this change's fields set.
    pub fn apply_to(&self, base: &Policy) -> Policy {
        Policy {
            consistency: self.consistency.unwrap_or(base.consistency),
            home: self.home.clone().unwrap_or_else(|| base.home.clone()),
            replication: self.replication.unwrap_or(base.replication),
            max_staleness_ms: self.max_staleness_ms.unwrap_or(base.max_staleness_ms),
        }
    }

    /// Whether the change sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == PolicyChange::default()
    }
}

/// Every prefix's policy, and the default for keys under none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyTable {
    regions: Vec<String>,
    default: Policy,
    by_prefix: BTreeMap<Vec<u8>, Policy>,
    /// The control range's version of this table (0: a table from config).
    version: u64,
    /// Policies in a handoff (`None`: the default), with the policy each
    /// moves to: their keys take no writes and no linearizable reads until
    /// it completes ([`Transition::Handoff`]).
    handoffs: BTreeMap<Option<Vec<u8>>, Policy>,
}

impl PolicyTable {
    /// A table over `regions` whose every key has `default`.
    pub fn new(regions: Vec<String>, default: Policy) -> Result<Self, PolicyError> {
        let table = PolicyTable {
            regions,
            default: default.clone(),
            by_prefix: BTreeMap::new(),
            version: 0,
            handoffs: BTreeMap::new(),
        };
        table.check_policy(&default)?;
        Ok(table)
    }

    /// One region alone: every key strong, homed in `region`, replicated
    /// nowhere (valid by construction).
    pub fn single_region(region: &str, max_staleness_ms: u64) -> Self {
        PolicyTable {
            regions: vec![region.to_string()],
            default: Policy {
                consistency: Consistency::Strong,
                home: region.to_string(),
                replication: Replication::Async,
                max_staleness_ms: max_staleness_ms.min(MAX_STALENESS_MS),
            },
            by_prefix: BTreeMap::new(),
            version: 0,
            handoffs: BTreeMap::new(),
        }
    }

    /// The control range's version of this table (0: from config).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// This table as the control range's version `version`.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// The policy `prefix`'s keys (`None`: the default's) move to in a
    /// handoff under way, if any.
    pub fn handoff_of(&self, prefix: Option<&[u8]>) -> Option<&Policy> {
        self.handoffs.get(&prefix.map(<[u8]>::to_vec))
    }

    /// The handoff under way that covers `key`, if any, as the prefix it
    /// is of (`None`: the default's) and the policy it moves to: a handoff
    /// of the prefix covering the key (a prefix policy being set on it, or
    /// changed), else of the default when the default governs the key.
    pub fn handoff_for(&self, key: &[u8]) -> Option<(Option<&[u8]>, &Policy)> {
        // Every write and linearizable read asks: no lookup when none runs.
        if self.handoffs.is_empty() {
            return None;
        }
        let of_prefix = self
            .handoffs
            .iter()
            .find(|(p, _)| p.as_deref().is_some_and(|p| key.starts_with(p)));
        match of_prefix {
            Some((p, to)) => Some((p.as_deref(), to)),
            None if self.policy_of(key).0.is_none() => {
                self.handoffs.get(&None).map(|to| (None, to))
            }
            None => None,
        }
    }

    /// Every handoff under way (`None`: the default).
    pub fn handoffs(&self) -> impl Iterator<Item = (Option<&[u8]>, &Policy)> {
        self.handoffs.iter().map(|(p, to)| (p.as_deref(), to))
    }

    /// Records that `prefix`'s keys (`None`: the default's) are handed off
    /// to `to` (validated like any policy).
    pub fn set_handoff(&mut self, prefix: Option<&[u8]>, to: Policy) -> Result<(), PolicyError> {
        self.check_policy(&to)?;
        self.handoffs.insert(prefix.map(<[u8]>::to_vec), to);
        Ok(())
    }

    /// The cluster's regions.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// The policy of keys under no prefix policy.
    pub fn default_policy(&self) -> &Policy {
        &self.default
    }

    /// The policies set on prefixes, in key order.
    pub fn prefixes(&self) -> impl Iterator<Item = (&[u8], &Policy)> {
        self.by_prefix.iter().map(|(k, v)| (k.as_slice(), v))
    }

    /// The policy of `key`, with the prefix it comes from (`None`: default).
    pub fn policy_of(&self, key: &[u8]) -> (Option<&[u8]>, &Policy) {
        // Prefixes never nest, so at most one configured prefix matches and
        // it is the greatest one at or below `key`.
        use std::ops::Bound;
        match self
            .by_prefix
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
        {
            Some((p, policy)) if key.starts_with(p) => (Some(p.as_slice()), policy),
            _ => (None, &self.default),
        }
    }

    /// The smallest `max_staleness_ms` of the policies that govern some
    /// key in `[start, end)` (`end` `None`: to the end of the keyspace):
    /// the policy of `start`, of every configured prefix inside the span,
    /// and the default unless the span lies inside one prefix. It is never
    /// looser than the bound of any key in the span.
    pub fn min_staleness_ms_in(&self, start: &[u8], end: Option<&[u8]>) -> u64 {
        let (prefix, first) = self.policy_of(start);
        let inside_one_prefix = prefix.zip(end).is_some_and(|(p, e)| {
            e.starts_with(p) || crate::types::prefix_end(p).is_some_and(|s| e <= s.as_slice())
        });
        let default = (!inside_one_prefix).then_some(self.default.max_staleness_ms);
        self.by_prefix
            .range(start.to_vec()..)
            .take_while(|(p, _)| end.is_none_or(|e| p.as_slice() < e))
            .map(|(_, policy)| policy.max_staleness_ms)
            .chain([first.max_staleness_ms])
            .chain(default)
            .min()
            .unwrap_or(first.max_staleness_ms)
    }

    /// Sets (or replaces) the policy of `prefix`. Refused, with nothing
    /// changed, when the policy names an unknown region or the prefix nests
    /// with another policy's prefix.
    pub fn set(&mut self, prefix: &[u8], policy: Policy) -> Result<(), PolicyError> {
        self.check_prefix(prefix)?;
        self.check_policy(&policy)?;
        if !self.by_prefix.contains_key(prefix) && self.by_prefix.len() >= MAX_POLICIES {
            return Err(PolicyError::TooMany);
        }
        self.by_prefix.insert(prefix.to_vec(), policy);
        Ok(())
    }

    /// Replaces the default policy (validated like any other).
    pub fn set_default(&mut self, policy: Policy) -> Result<(), PolicyError> {
        self.check_policy(&policy)?;
        self.default = policy;
        Ok(())
    }

    /// The policy set on exactly `prefix`, if any.
    pub fn get(&self, prefix: &[u8]) -> Option<&Policy> {
        self.by_prefix.get(prefix)
    }

    /// Removes the policy of `prefix`; its keys fall back to the default.
    /// Returns whether there was one.
    pub fn remove(&mut self, prefix: &[u8]) -> bool {
        self.by_prefix.remove(prefix).is_some()
    }

    fn check_prefix(&self, prefix: &[u8]) -> Result<(), PolicyError> {
        let invalid = |why: String| PolicyError::InvalidPrefix {
            prefix: String::from_utf8_lossy(prefix).into_owned(),
            why,
        };
        if prefix.is_empty() || prefix.len() > MAX_POLICY_PREFIX_BYTES {
            return Err(invalid(format!(
                "a prefix is 1..={MAX_POLICY_PREFIX_BYTES} bytes (the default policy covers the rest)"
            )));
        }
        let nested = self
            .by_prefix
            .keys()
            .find(|p| p.as_slice() != prefix && (p.starts_with(prefix) || prefix.starts_with(p)));
        if let Some(other) = nested {
            return Err(invalid(format!(
                "it nests with the policy on {:?}; policies on nested prefixes are refused",
                String::from_utf8_lossy(other)
            )));
        }
        Ok(())
    }

    fn check_policy(&self, policy: &Policy) -> Result<(), PolicyError> {
        if !self.regions.contains(&policy.home) {
            return Err(PolicyError::UnknownRegion {
                region: policy.home.clone(),
                known: self.regions.join(", "),
            });
        }
        if policy.max_staleness_ms > MAX_STALENESS_MS {
            return Err(PolicyError::Staleness(policy.max_staleness_ms));
        }
        if let Replication::Sync(n) = policy.replication {
            let others = self.regions.len().saturating_sub(1);
            if usize::from(n) > others {
                return Err(PolicyError::NotEnoughRegions { n, others });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(c: Consistency, home: &str) -> Policy {
        Policy {
            consistency: c,
            home: home.to_string(),
            replication: Replication::Async,
            max_staleness_ms: 5_000,
        }
    }

    fn table() -> PolicyTable {
        let regions = vec!["us-east".into(), "eu-west".into(), "ap-south".into()];
        PolicyTable::new(regions, policy(Consistency::Strong, "us-east")).unwrap()
    }

    #[test]
    fn min_staleness_in_a_span_counts_its_start_and_the_prefixes_inside() {
        let mut t = table(); // default bound 5 s
        let bound = |ms| Policy {
            max_staleness_ms: ms,
            ..policy(Consistency::Eventual, "us-east")
        };
        t.set(b"a/", bound(2_000)).unwrap();
        t.set(b"c/", bound(9_000)).unwrap();
        // Only the default governs a span without prefixes.
        assert_eq!(t.min_staleness_ms_in(b"x", Some(b"z")), 5_000);
        // A prefix inside the span tightens it; one past its end does not.
        assert_eq!(t.min_staleness_ms_in(b"", Some(b"b")), 2_000);
        assert_eq!(t.min_staleness_ms_in(b"b", Some(b"c/")), 5_000);
        // A span starting inside a looser prefix still has default keys after it.
        assert_eq!(t.min_staleness_ms_in(b"c/", None), 5_000);
        assert_eq!(t.min_staleness_ms_in(b"c/", Some(b"c0")), 9_000);
    }

    #[test]
    fn a_key_takes_its_prefix_policy_or_the_default() {
        let mut t = table();
        t.set(b"ads/", policy(Consistency::Eventual, "eu-west"))
            .unwrap();
        t.set(b"cfg/", policy(Consistency::Causal, "ap-south"))
            .unwrap();
        assert_eq!(
            t.policy_of(b"ads/budget").1.consistency,
            Consistency::Eventual
        );
        assert_eq!(t.policy_of(b"ads/").0, Some(&b"ads/"[..]));
        assert_eq!(t.policy_of(b"cfg/x").1.home, "ap-south");
        assert_eq!(t.policy_of(b"ads").0, None, "not under `ads/`");
        assert_eq!(t.policy_of(b"b").1.consistency, Consistency::Strong);
        assert_eq!(t.policy_of(b"zzz").0, None);
        assert!(t.remove(b"ads/"));
        assert_eq!(t.policy_of(b"ads/budget").0, None);
    }

    #[test]
    fn bad_policies_are_refused_and_change_nothing() {
        let mut t = table();
        t.set(b"a/", policy(Consistency::Causal, "eu-west"))
            .unwrap();
        let before = t.clone();
        let nested = t.set(b"a/b/", policy(Consistency::Strong, "us-east"));
        assert!(
            matches!(nested, Err(PolicyError::InvalidPrefix { .. })),
            "{nested:?}"
        );
        let outer = t.set(b"a", policy(Consistency::Strong, "us-east"));
        assert!(matches!(outer, Err(PolicyError::InvalidPrefix { .. })));
        let unknown = t.set(b"x/", policy(Consistency::Strong, "mars"));
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("us-east, eu-west, ap-south"));
        let mut sync3 = policy(Consistency::Strong, "us-east");
        sync3.replication = Replication::Sync(3);
        assert!(matches!(
            t.set(b"x/", sync3),
            Err(PolicyError::NotEnoughRegions { n: 3, others: 2 })
        ));
        assert!(t.set(b"", policy(Consistency::Strong, "us-east")).is_err());
        assert_eq!(t, before, "refusals change nothing");
        // Replacing a prefix's own policy is not nesting.
        t.set(b"a/", policy(Consistency::Eventual, "eu-west"))
            .unwrap();
    }

    #[test]
    fn run_time_changes_never_loosen_an_acknowledged_guarantee() {
        let strong = policy(Consistency::Strong, "us-east");
        let mut sync1 = strong.clone();
        sync1.replication = Replication::Sync(1);
        sync1.max_staleness_ms = 100;
        let regions: Vec<String> = ["us-east", "eu-west", "ap-south"].map(String::from).into();
        let direct =
            |old: &Policy, new: &Policy| transition(old, new, &regions) == Transition::Direct;
        assert!(direct(&strong, &sync1));
        assert!(direct(&sync1, &strong));
        for looser in [Consistency::Causal, Consistency::Eventual] {
            assert!(direct(&strong, &policy(looser, "eu-west")));
            // Turning strong: every region may hold acknowledged writes.
            assert_eq!(
                transition(&policy(looser, "us-east"), &strong, &regions),
                Transition::Handoff {
                    sources: regions.clone()
                }
            );
            let err = check_change(&policy(looser, "us-east"), &strong, &regions).unwrap_err();
            assert!(matches!(err, PolicyError::Unsafe(_)));
            assert!(err.to_string().contains("needs a handoff"), "{err}");
        }
        assert!(direct(
            &policy(Consistency::Eventual, "us-east"),
            &policy(Consistency::Causal, "ap-south")
        ));
        // Moving a strong home: the old home's writes, and an earlier
        // home's (streamed from that region straight to each other), must
        // reach the new home.
        assert_eq!(
            transition(&strong, &policy(Consistency::Strong, "eu-west"), &regions),
            Transition::Handoff {
                sources: regions.clone()
            }
        );
        assert!(check_change(&strong, &sync1, &regions).is_ok());
    }

    #[test]
    fn a_handoff_covers_its_prefix_and_the_default_only_its_own_keys() {
        let mut t = table();
        t.set(b"a/", policy(Consistency::Eventual, "eu-west"))
            .unwrap();
        let to = policy(Consistency::Strong, "eu-west");
        // A new prefix being turned strong (no policy of its own yet).
        t.set_handoff(Some(b"n/"), to.clone()).unwrap();
        assert_eq!(t.handoff_for(b"n/x"), Some((Some(&b"n/"[..]), &to)));
        assert_eq!(t.handoff_for(b"a/x"), None);
        assert_eq!(t.handoff_for(b"z"), None);
        // The default's handoff: keys under no prefix policy only.
        t.set_handoff(None, to.clone()).unwrap();
        assert_eq!(t.handoff_for(b"z"), Some((None, &to)));
        assert_eq!(t.handoff_for(b"a/x"), None, "a/ has its own policy");
        assert!(t
            .set_handoff(Some(b"b/"), policy(Consistency::Strong, "mars"))
            .is_err());
        assert_eq!(t.handoffs().count(), 2);
        assert_eq!(t.clone().with_version(4).version(), 4);
    }

    #[test]
    fn a_change_sets_only_its_fields() {
        let base = policy(Consistency::Strong, "us-east");
        let change = PolicyChange {
            replication: Some(Replication::Sync(2)),
            ..PolicyChange::default()
        };
        let out = change.apply_to(&base);
        assert_eq!(out.replication, Replication::Sync(2));
        assert_eq!(
            (out.consistency, out.home.as_str()),
            (Consistency::Strong, "us-east")
        );
        assert!(PolicyChange::default().is_empty() && !change.is_empty());
    }

    #[test]
    fn names_parse_and_print() {
        assert_eq!(
            "causal".parse::<Consistency>().unwrap(),
            Consistency::Causal
        );
        assert!("linearizable".parse::<Consistency>().is_err());
        assert_eq!(
            "sync-2".parse::<Replication>().unwrap(),
            Replication::Sync(2)
        );
        assert_eq!("async".parse::<Replication>().unwrap(), Replication::Async);
        for bad in ["sync-0", "sync-", "sync-x", "sync-99", "SYNC-1"] {
            assert!(bad.parse::<Replication>().is_err(), "{bad}");
        }
        assert_eq!(Replication::Sync(1).to_string(), "sync-1");
    }
}
