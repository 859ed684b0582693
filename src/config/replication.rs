//! `[replication]`: the cluster's regions and the consistency policy of each
//! key prefix (../shared/design.md, "Consistency, per key prefix and per
//! call").
//!
//! `regions` lists every region of the cluster, this node's included, and
//! must be identical on every node, as must the policies. Empty (the
//! default) means this node's region alone: nothing replicates, every key
//! is strong with this region as its home, and the node behaves as before
//! the section existed. With two or more regions, each range's leader
//! streams the range's local changes to the other regions (gossip must be
//! on: it is how a leader finds the other regions' nodes).
//!
//! ```toml
//! [replication]
//! regions = ["us-east", "eu-west", "ap-south"]
//! default = { consistency = "strong", home = "us-east" }
//! [[replication.policies]]
//! prefix = "ads/"
//! consistency = "eventual"
//! home = "us-east"
//! max_staleness_ms = 2000
//! ```

use serde::{Deserialize, Serialize};

use super::{check_name, invalid, ConfigError};
use crate::replication::policy::{Policy, PolicyTable, Replication, MAX_POLICIES};

/// Default staleness bound of a bounded read that names none, ms.
pub const DEFAULT_MAX_STALENESS_MS: u64 = 5_000;
/// Most regions a cluster may have.
pub const MAX_REGIONS: usize = 16;

/// A policy as written (the default policy, or a prefix's without its prefix).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPolicy {
    /// `strong` (default), `causal` or `eventual`.
    pub consistency: String,
    /// The region that accepts strong writes and serves linearizable reads.
    /// Empty: the first of `regions` (or this node's region when `regions`
    /// is empty).
    pub home: String,
    /// `async` (default) or `sync-N`.
    pub replication: String,
    /// Default bound of bounded-staleness reads, ms (default 5000).
    pub max_staleness_ms: u64,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            consistency: "strong".into(),
            home: String::new(),
            replication: "async".into(),
            max_staleness_ms: DEFAULT_MAX_STALENESS_MS,
        }
    }
}

/// One `[[replication.policies]]` entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPrefixPolicy {
    /// The key prefix (UTF-8; 1..=256 bytes; prefixes must not nest).
    pub prefix: String,
    /// The policy.
    #[serde(flatten)]
    pub policy: RawPolicy,
}

/// `[replication]` as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawReplication {
    /// Every region of the cluster (this node's included); empty = this
    /// node's region alone.
    pub regions: Vec<String>,
    /// The policy of keys under no prefix policy.
    pub default: RawPolicy,
    /// Prefix policies.
    pub policies: Vec<RawPrefixPolicy>,
}

/// `[replication]`, validated.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// This node's region.
    pub local_region: String,
    /// Every region of the cluster, this node's included, in configured order.
    pub regions: Vec<String>,
    /// The policy of every key.
    pub table: PolicyTable,
}

impl ReplicationConfig {
    /// One region alone: every key strong, homed here, nothing replicated.
    pub fn single_region(region: &str) -> ReplicationConfig {
        let table = PolicyTable::single_region(region, DEFAULT_MAX_STALENESS_MS);
        ReplicationConfig {
            local_region: region.to_string(),
            regions: vec![region.to_string()],
            table,
        }
    }

    /// Whether other regions exist (ranges stream to and from them).
    pub fn is_multi_region(&self) -> bool {
        self.regions.len() > 1
    }

    /// The regions other than this node's.
    pub fn other_regions(&self) -> impl Iterator<Item = &str> {
        self.regions
            .iter()
            .map(String::as_str)
            .filter(|r| *r != self.local_region)
    }
}

/// Where a policy is written: its fields' names in errors.
struct PolicyFields {
    policy: &'static str,
    replication: &'static str,
}

const DEFAULT_FIELDS: PolicyFields = PolicyFields {
    policy: "replication.default",
    replication: "replication.default.replication",
};
const PREFIX_FIELDS: PolicyFields = PolicyFields {
    policy: "replication.policies",
    replication: "replication.policies.replication",
};

/// Parses a policy. `sync-N` must leave N other regions to wait for
/// (`others`: the regions besides the home): a write could otherwise never
/// be confirmed, so it is refused here, naming the field, rather than
/// timing out on every write.
fn policy(
    fields: &PolicyFields,
    raw: &RawPolicy,
    default_home: &str,
    others: usize,
    prefix: &str,
) -> Result<Policy, ConfigError> {
    let bad =
        |e: crate::replication::policy::PolicyError| invalid(fields.policy, e.to_string(), prefix);
    let replication =
        raw.replication
            .parse()
            .map_err(|e: crate::replication::policy::PolicyError| {
                invalid(fields.replication, e.to_string(), &raw.replication)
            })?;
    if let Replication::Sync(n) = replication {
        if usize::from(n) > others {
            return Err(invalid(
                fields.replication,
                format!(
                    "sync-{n} waits for {n} other regions, and replication.regions has {others} \
                     besides the home region: use sync-1..=sync-{others}, or async"
                ),
                format!(
                    "{} on {}",
                    raw.replication,
                    if prefix.is_empty() {
                        "the default policy"
                    } else {
                        prefix
                    }
                ),
            ));
        }
    }
    Ok(Policy {
        consistency: raw.consistency.parse().map_err(bad)?,
        home: if raw.home.is_empty() {
            default_home.to_string()
        } else {
            raw.home.clone()
        },
        replication,
        max_staleness_ms: raw.max_staleness_ms,
    })
}

impl RawReplication {
    /// Validates against this node's region.
    pub fn validate(&self, local_region: &str) -> Result<ReplicationConfig, ConfigError> {
        if self.regions.len() > MAX_REGIONS {
            return Err(invalid(
                "replication.regions",
                format!("at most {MAX_REGIONS} regions"),
                self.regions.len(),
            ));
        }
        for r in &self.regions {
            check_name("replication.regions", r)?;
        }
        let mut sorted = self.regions.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.regions.len() {
            return Err(invalid(
                "replication.regions",
                "each region is listed once",
                self.regions.join(","),
            ));
        }
        let regions = if self.regions.is_empty() {
            vec![local_region.to_string()]
        } else if !self.regions.iter().any(|r| r == local_region) {
            return Err(invalid(
                "replication.regions",
                format!("must include this node's region `{local_region}` (node.region)"),
                self.regions.join(","),
            ));
        } else {
            self.regions.clone()
        };
        if self.policies.len() > MAX_POLICIES {
            return Err(invalid(
                "replication.policies",
                format!("at most {MAX_POLICIES} prefix policies"),
                self.policies.len(),
            ));
        }
        let others = regions.len() - 1;
        let default = policy(&DEFAULT_FIELDS, &self.default, &regions[0], others, "")?;
        let mut table = PolicyTable::new(regions.clone(), default)
            .map_err(|e| invalid("replication.default", e.to_string(), ""))?;
        for p in &self.policies {
            let pol = policy(&PREFIX_FIELDS, &p.policy, &regions[0], others, &p.prefix)?;
            table
                .set(p.prefix.as_bytes(), pol)
                .map_err(|e| invalid("replication.policies", e.to_string(), &p.prefix))?;
        }
        Ok(ReplicationConfig {
            local_region: local_region.to_string(),
            regions,
            table,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::policy::Consistency;

    fn raw(toml_text: &str) -> RawReplication {
        ::config::Config::builder()
            .add_source(::config::File::from_str(
                toml_text,
                ::config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("parses")
    }

    #[test]
    fn empty_is_this_region_alone_and_strong() {
        let c = RawReplication::default().validate("us-east").unwrap();
        assert!(!c.is_multi_region());
        assert_eq!(c.regions, vec!["us-east"]);
        let (_, p) = c.table.policy_of(b"anything");
        assert_eq!(p.consistency, Consistency::Strong);
        assert_eq!(p.home, "us-east");
    }

    #[test]
    fn prefix_policies_apply_and_the_home_defaults_to_the_first_region() {
        let c = raw(r#"
            regions = ["us-east", "eu-west"]
            [[policies]]
            prefix = "ads/"
            consistency = "eventual"
        "#)
        .validate("eu-west")
        .unwrap();
        assert!(c.is_multi_region());
        assert_eq!(c.other_regions().collect::<Vec<_>>(), vec!["us-east"]);
        let (prefix, p) = c.table.policy_of(b"ads/x");
        assert_eq!(prefix, Some(&b"ads/"[..]));
        assert_eq!(p.consistency, Consistency::Eventual);
        assert_eq!(p.home, "us-east");
        assert_eq!(c.table.policy_of(b"cfg").1.consistency, Consistency::Strong);
    }

    #[test]
    fn sync_n_up_to_the_other_regions_is_accepted() {
        let c = raw(r#"
            regions = ["us-east", "eu-west", "ap-south"]
            [[policies]]
            prefix = "ledger/"
            replication = "sync-2"
        "#)
        .validate("eu-west")
        .unwrap();
        assert_eq!(
            c.table.policy_of(b"ledger/1").1.replication,
            Replication::Sync(2)
        );
        assert_eq!(
            c.table.policy_of(b"other").1.replication,
            Replication::Async
        );
    }

    #[test]
    fn bad_input_names_the_field_and_the_rule() {
        let cases = [
            (r#"regions = ["a", "a"]"#, "a", "listed once"),
            (r#"regions = ["a", "b"]"#, "c", "this node's region"),
            (
                "regions = [\"a\", \"b\"]\n[[policies]]\nprefix = \"x/\"\nhome = \"z\"",
                "a",
                "unknown region",
            ),
            (
                "regions = [\"a\", \"b\"]\n[[policies]]\nprefix = \"x/\"\n[[policies]]\nprefix = \"x/y\"",
                "a",
                "nest",
            ),
            (
                "regions = [\"a\", \"b\"]\ndefault = { consistency = \"linear\" }",
                "a",
                "unknown consistency",
            ),
            (
                "regions = [\"a\", \"b\", \"c\"]\n[[policies]]\nprefix = \"x/\"\nreplication = \"sync-3\"",
                "a",
                "`replication.policies.replication`: sync-3 waits for 3 other regions, and replication.regions has 2",
            ),
            (
                "default = { replication = \"sync-1\" }",
                "a",
                "`replication.default.replication`: sync-1 waits for 1 other regions, and replication.regions has 0",
            ),
            (
                "regions = [\"a\", \"b\"]\n[[policies]]\nprefix = \"x/\"\nreplication = \"sync\"",
                "a",
                "`replication.policies.replication`: unknown replication `sync`",
            ),
        ];
        for (text, region, want) in cases {
            let err = raw(text).validate(region).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("replication."), "{text}: {err}");
        }
    }
}
