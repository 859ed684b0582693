//! The control range: the one Raft group whose voters span regions, holding
//! the cluster's prefix policies and range descriptors
//! (../shared/design.md, "Topology").
//!
//! It is an ordinary range group over a store of its own (so its keys never
//! mix with user keys), driven by an [`Engine`] of its own: writes are
//! transactions proposed to its leader, reads are linearizable there or
//! local at a replica's applied state. What is stored:
//!
//! | key | value |
//! |---|---|
//! | `policy/version` | the table's version, big-endian u64 (every change adds one) |
//! | `policy/default` | the default policy ([`StoredPolicyV1`]) |
//! | `policy/p/<prefix>` | a prefix's policy |
//! | `regions` | the cluster's regions, in configured order |
//! | `range/<id be64>` | a range descriptor |
//! | `handoff/default`, `handoff/p/<prefix>` | a handoff under way ([`StoredHandoffV1`]) |
//!
//! Every change is one transaction guarded by `policy/version`, computed
//! from a linearizable read at the leader, so concurrent changes serialize
//! (the loser retries on the new table) and a change is validated against
//! exactly the table it replaces.
//!
//! **Invariant:** a change that could loosen a guarantee already given for
//! an acknowledged write takes effect only through a handoff
//! ([`super::handoff`]): turning a prefix strong, or moving a strong
//! prefix's home, first stops the prefix's writes, fences the source
//! regions' ranges and waits until the new home holds what they wrote.
//! Invalid changes change nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::decide::WriteKind;
use crate::error_code::{ApiError, ErrorCode};
use crate::peer::{PeerRequestV1, PeerResponseV1, PolicyChangeV1};
use crate::raft::{RangeDescriptor, RangeGroup, RangeId};
use crate::replication::policy::{
    check_change, transition, Policy, PolicyChange, PolicyError, PolicyTable, Transition,
};
use crate::types::{prefix_end, Compare, CompareOp, CompareTarget, Op, Timestamp, Txn};
use crate::wire::{PolicyV1, SetPolicyV1};

/// The control range's id: range ids of the regions' groups start at 1.
pub const CONTROL_RANGE_ID: RangeId = 0;
/// How often a change is retried when another change won the race.
const CHANGE_ATTEMPTS: usize = 5;
/// Longest a forwarded change waits for the control leader's answer (a
/// WAN round trip, a commit across regions, and retries of its own).
pub const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

const VERSION_KEY: &[u8] = b"policy/version";
const DEFAULT_KEY: &[u8] = b"policy/default";
const PREFIX_KEYS: &[u8] = b"policy/p/";
const REGIONS_KEY: &[u8] = b"regions";
const RANGE_KEYS: &[u8] = b"range/";
const HANDOFF_DEFAULT_KEY: &[u8] = b"handoff/default";
const HANDOFF_KEYS: &[u8] = b"handoff/p/";
/// `(key, value)` pairs of a scan, in key order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Version byte of every stored control value.
const STORED_V1: u8 = 1;

/// A policy as the control range stores it, version 1 (postcard after the
/// version byte).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicyV1 {
    /// The policy.
    pub policy: PolicyV1,
    /// Changes of this policy so far (1 = as bootstrapped or first set).
    pub epoch: u64,
}

/// A handoff under way, as the control range stores it, version 1
/// (postcard after the version byte).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHandoffV1 {
    /// The policy the keys move to.
    pub to: PolicyV1,
    /// The table version that recorded it: the fences' table.
    pub table: u64,
}

/// The control range's span: all of its own store.
pub fn control_descriptor() -> RangeDescriptor {
    RangeDescriptor {
        id: CONTROL_RANGE_ID,
        start: Vec::new(),
        end: None,
    }
}

/// The policy table as the control range holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlTable {
    /// Version (every change adds one; 1 as bootstrapped).
    pub version: u64,
    /// The table.
    pub table: PolicyTable,
    /// Each policy's epoch: `None` is the default's.
    pub epochs: BTreeMap<Option<Vec<u8>>, u64>,
    /// Each handoff under way (`None`: the default's) and its fences'
    /// table version.
    pub handoffs: BTreeMap<Option<Vec<u8>>, u64>,
}

/// A committed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// The table after it (as read back at the leader).
    pub table: ControlTable,
    /// The changed policy's epoch (0 for a removal).
    pub epoch: u64,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    let mut out = vec![STORED_V1];
    let bytes = postcard::to_allocvec(v)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("encode a control value: {e}")))?;
    out.extend(bytes);
    Ok(out)
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, ApiError> {
    let corrupt = |why: String| {
        ApiError::new(
            ErrorCode::Internal,
            format!("control range value {what} is unreadable: {why}"),
        )
    };
    match bytes.split_first() {
        Some((&STORED_V1, rest)) => postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string())),
        Some((v, _)) => Err(corrupt(format!("unknown version {v}"))),
        None => Err(corrupt("empty".into())),
    }
}

fn refused(e: PolicyError) -> ApiError {
    match e {
        PolicyError::Unsafe(msg) => ApiError::new(ErrorCode::PolicyRefused, msg),
        other => ApiError::new(ErrorCode::InvalidArgument, other.to_string()),
    }
}

fn prefix_key(prefix: &[u8]) -> Vec<u8> {
    [PREFIX_KEYS, prefix].concat()
}

fn handoff_key(prefix: Option<&[u8]>) -> Vec<u8> {
    prefix.map_or(HANDOFF_DEFAULT_KEY.to_vec(), |p| [HANDOFF_KEYS, p].concat())
}

fn range_key(id: RangeId) -> Vec<u8> {
    [RANGE_KEYS, &id.to_be_bytes()].concat()
}

fn put(key: Vec<u8>, value: Vec<u8>) -> Op {
    Op::Put { key, value }
}

/// This node's replica of the control range.
pub struct ControlRange {
    engine: Engine,
    /// What the range is bootstrapped with (`[replication]`'s table and
    /// the configured ranges), written once by whichever node first finds
    /// the range empty.
    seed: (PolicyTable, Vec<RangeDescriptor>),
}

impl std::fmt::Debug for ControlRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlRange").finish_non_exhaustive()
    }
}

impl ControlRange {
    /// The control range served by `engine` (an engine over the control
    /// store whose one range is [`control_descriptor`]), bootstrapped with
    /// `table` and `ranges` when empty.
    pub fn new(engine: Engine, table: PolicyTable, ranges: Vec<RangeDescriptor>) -> ControlRange {
        ControlRange {
            engine,
            seed: (table, ranges),
        }
    }

    /// The engine over the control store.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// This node's group of the control range.
    pub fn group(&self) -> Result<Arc<RangeGroup>, ApiError> {
        self.engine.region().group(&control_descriptor())
    }

    /// The table as this replica has applied it (`None` until bootstrapped).
    pub fn load_local(&self) -> Result<Option<ControlTable>, ApiError> {
        let at = self.group()?.applied_ts();
        self.load_at(at)
    }

    /// The table as the leader holds it now (redirects with `NotLeader`
    /// elsewhere).
    async fn load_linearizable(&self) -> Result<Option<ControlTable>, ApiError> {
        let at = self
            .engine
            .region()
            .read_ts(self.engine.clock(), &control_descriptor(), None)
            .await?;
        self.load_at(at)
    }

    fn get(&self, key: &[u8], at: Timestamp) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self
            .engine
            .store()
            .get(key, at)
            .map_err(|e| ApiError::new(ErrorCode::StorageFailure, e.to_string()))?
            .map(|kv| kv.value))
    }

    fn load_at(&self, at: Timestamp) -> Result<Option<ControlTable>, ApiError> {
        let Some(version) = self.get(VERSION_KEY, at)? else {
            return Ok(None);
        };
        let version = <[u8; 8]>::try_from(version.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| {
                ApiError::new(ErrorCode::Internal, "control range version is unreadable")
            })?;
        let regions: Vec<String> = match self.get(REGIONS_KEY, at)? {
            Some(b) => decode("regions", &b)?,
            None => return Ok(None),
        };
        let default: StoredPolicyV1 = match self.get(DEFAULT_KEY, at)? {
            Some(b) => decode("policy/default", &b)?,
            None => return Ok(None),
        };
        let mut table = PolicyTable::new(regions, Policy::from(&default.policy)).map_err(|e| {
            ApiError::new(ErrorCode::Internal, format!("stored default policy: {e}"))
        })?;
        let mut epochs = BTreeMap::from([(None, default.epoch)]);
        for (prefix, value) in self.scan_at(PREFIX_KEYS, at)? {
            let stored: StoredPolicyV1 = decode("policy/p/", &value)?;
            table
                .set(&prefix, Policy::from(&stored.policy))
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored policy: {e}")))?;
            epochs.insert(Some(prefix), stored.epoch);
        }
        let mut handoffs = BTreeMap::new();
        let of_prefixes = self.scan_at(HANDOFF_KEYS, at)?.into_iter();
        let of_default = self.get(HANDOFF_DEFAULT_KEY, at)?.map(|v| (None, v));
        for (prefix, value) in of_prefixes.map(|(p, v)| (Some(p), v)).chain(of_default) {
            let stored: StoredHandoffV1 = decode("handoff", &value)?;
            table
                .set_handoff(prefix.as_deref(), Policy::from(&stored.to))
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored handoff: {e}")))?;
            handoffs.insert(prefix, stored.table);
        }
        let table = table.with_version(version);
        Ok(Some(ControlTable {
            version,
            table,
            epochs,
            handoffs,
        }))
    }

    /// Every `(key without `keys`, value)` under `keys` at `at`.
    fn scan_at(&self, keys: &[u8], at: Timestamp) -> Result<Entries, ApiError> {
        let end = prefix_end(keys);
        let mut start = keys.to_vec();
        let mut out = Vec::new();
        // Bounded: one page per MAX_POLICIES entries at most, plus pages the
        // scan's work budget cut short (each makes progress).
        loop {
            let page = self
                .engine
                .store()
                .scan(
                    &start,
                    end.as_deref(),
                    at,
                    crate::replication::policy::MAX_POLICIES + 1,
                )
                .map_err(|e| ApiError::new(ErrorCode::StorageFailure, e.to_string()))?;
            out.extend(
                page.items
                    .into_iter()
                    .map(|kv| (kv.key[keys.len()..].to_vec(), kv.value)),
            );
            match page.next_key {
                Some(next) => start = next,
                None => return Ok(out),
            }
        }
    }

    /// Writes the seed table and ranges as version 1 if the control range
    /// holds no table yet (the bootstrap from config; idempotent, and a
    /// no-op once any table exists). Returns whether this call wrote it.
    pub async fn seed(&self) -> Result<bool, ApiError> {
        let (table, ranges) = (&self.seed.0, &self.seed.1);
        let mut success = vec![
            put(VERSION_KEY.to_vec(), 1u64.to_be_bytes().to_vec()),
            put(REGIONS_KEY.to_vec(), encode(&table.regions().to_vec())?),
            put(
                DEFAULT_KEY.to_vec(),
                encode(&StoredPolicyV1 {
                    policy: table.default_policy().into(),
                    epoch: 1,
                })?,
            ),
        ];
        for (prefix, policy) in table.prefixes() {
            let stored = StoredPolicyV1 {
                policy: policy.into(),
                epoch: 1,
            };
            success.push(put(prefix_key(prefix), encode(&stored)?));
        }
        for r in ranges {
            success.push(put(range_key(r.id), encode(r)?));
        }
        let out = self.guarded(CompareTarget::Exists(false), success).await?;
        Ok(out.succeeded)
    }

    /// Sets the policy of `prefix` (`None`: the default) to the current one
    /// with `change`'s fields. Refused, with nothing changed, when the
    /// result is invalid (MER-1007). A change that could loosen a
    /// guarantee already given ([`transition`]) runs through a handoff
    /// ([`super::handoff`]); one that does not takes effect at once (and
    /// cancels a handoff of the same policy under way).
    async fn set(&self, prefix: Option<&[u8]>, change: &PolicyChange) -> Result<Changed, ApiError> {
        if change.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "a policy change must set at least one of consistency, home, replication, max_staleness_ms",
            ));
        }
        // What step 1 of a handoff recorded, as the last attempt built it.
        let mut plan = None;
        let changed = self
            .change(|current| {
                let (old, new) = changed_policy(current, prefix, change)?;
                let regions = current.table.regions();
                let epoch = current
                    .epochs
                    .get(&prefix.map(<[u8]>::to_vec))
                    .map_or(1, |e| e + 1);
                match transition(&old, &new, regions) {
                    Transition::Direct => {
                        plan = None;
                        let key = prefix.map_or(DEFAULT_KEY.to_vec(), prefix_key);
                        let stored = StoredPolicyV1 {
                            policy: (&new).into(),
                            epoch,
                        };
                        let mut ops = vec![put(key, encode(&stored)?)];
                        if current.handoffs.contains_key(&prefix.map(<[u8]>::to_vec)) {
                            ops.push(Op::Delete {
                                key: handoff_key(prefix),
                            });
                        }
                        Ok((ops, epoch))
                    }
                    Transition::Handoff { sources } => {
                        // Step 1: the prefix stops taking writes. Recorded
                        // anew on a repeat (fences under a newer table are
                        // as good, and a repeat resumes).
                        let table = current.version + 1;
                        plan = Some((new.clone(), sources, table));
                        let stored = StoredHandoffV1 {
                            to: (&new).into(),
                            table,
                        };
                        Ok((vec![put(handoff_key(prefix), encode(&stored)?)], 0))
                    }
                }
            })
            .await?;
        let Some((to, sources, table)) = plan else {
            return Ok(changed);
        };
        // Step 2: every source region's ranges under the prefix fenced and
        // passed to the new home.
        let ranges = super::handoff::ranges_under(&self.seed.1, prefix);
        let nodes = self.nodes_by_region()?;
        let router = self.engine.region().host().router();
        tracing::info!(prefix = ?prefix.map(String::from_utf8_lossy), to = %to.home, table, ranges = ranges.len(), "policy handoff: fencing");
        super::handoff::fence_everywhere(router, &nodes, &ranges, &sources, &to.home, table)
            .await?;
        // Step 3: the new policy, if the handoff is still this one.
        self.change(|current| {
            let key = prefix.map(<[u8]>::to_vec);
            if current.handoffs.get(&key) != Some(&table) {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "another change replaced this handoff while it ran; `meridian policy ls` shows the policy now",
                ));
            }
            let mut next = current.table.clone();
            match prefix {
                None => next.set_default(to.clone()),
                Some(p) => next.set(p, to.clone()),
            }
            .map_err(refused)?;
            let epoch = current.epochs.get(&key).map_or(1, |e| e + 1);
            let stored = StoredPolicyV1 {
                policy: (&to).into(),
                epoch,
            };
            let policy_key = prefix.map_or(DEFAULT_KEY.to_vec(), prefix_key);
            Ok((
                vec![
                    put(policy_key, encode(&stored)?),
                    Op::Delete {
                        key: handoff_key(prefix),
                    },
                ],
                epoch,
            ))
        })
        .await
    }

    /// Every node of the cluster (the control range's voters and
    /// learners), by region: where the handoff's fences are sent.
    fn nodes_by_region(&self) -> Result<BTreeMap<String, Vec<std::net::SocketAddr>>, ApiError> {
        use openraft::async_runtime::WatchReceiver;
        let group = self.group()?;
        let metrics = group.raft.metrics().borrow_watched().clone();
        let mut out: BTreeMap<String, Vec<std::net::SocketAddr>> = BTreeMap::new();
        for (_, node) in metrics.membership_config.membership().nodes() {
            if let Ok(addr) = node.addr.parse() {
                out.entry(node.region.clone()).or_default().push(addr);
            }
        }
        Ok(out)
    }

    /// Removes the policy of `prefix`: its keys fall back to the default
    /// policy, under the same rule as a change ([`check_change`]).
    async fn remove(&self, prefix: &[u8]) -> Result<Changed, ApiError> {
        self.change(|current| {
            let Some(old) = current.table.get(prefix) else {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "no policy is set on prefix {:?} (`meridian policy ls` lists them)",
                        String::from_utf8_lossy(prefix)
                    ),
                ));
            };
            check_change(old, current.table.default_policy(), current.table.regions())
                .map_err(refused)?;
            let mut ops = vec![Op::Delete {
                key: prefix_key(prefix),
            }];
            // A removal needs no handoff: it cancels one under way.
            if current.handoffs.contains_key(&Some(prefix.to_vec())) {
                ops.push(Op::Delete {
                    key: handoff_key(Some(prefix)),
                });
            }
            Ok((ops, 0))
        })
        .await
    }

    /// Commits `ops` if `policy/version` equals `target` (one transaction
    /// at the control leader).
    async fn guarded(
        &self,
        target: CompareTarget,
        ops: Vec<Op>,
    ) -> Result<super::TxnOutcome, ApiError> {
        let txn = Txn {
            compares: vec![Compare {
                key: VERSION_KEY.to_vec(),
                op: CompareOp::Equal,
                target,
            }],
            success: ops,
            failure: Vec::new(),
        };
        self.engine
            .region()
            .write(self.engine.clock(), WriteKind::Txn(txn), 0)
            .await
    }

    /// This node's region.
    pub fn local_region(&self) -> String {
        self.engine.regions().local.clone()
    }

    /// Applies `change` at the control range's leader: here if this node
    /// leads it, else forwarded once over the peer protocol to the leader
    /// (which runs [`ControlRange::apply_here`]). The caller's role was
    /// checked by whoever received the request.
    pub async fn apply(&self, change: PolicyChangeV1) -> Result<Changed, ApiError> {
        let refusal = match self.apply_here(change.clone()).await {
            Err(e) if e.code == ErrorCode::NotLeader => e,
            other => return other,
        };
        let Some(addr) = refusal
            .leader_hint
            .as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        else {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "the control range has no leader right now (an election is under way); retry",
            ));
        };
        let router = self.engine.region().host().router();
        let req = PeerRequestV1::Policy(change);
        let reply = tokio::time::timeout(
            FORWARD_TIMEOUT,
            router.exchange(addr, &req, crate::peer::PEER_MAX_FRAME_BYTES),
        )
        .await;
        match reply {
            Ok(Ok(PeerResponseV1::PolicyChanged {
                version,
                epoch,
                policies,
            })) => {
                let mut table = PolicyTable::new(policies.regions.clone(), Policy::from(&policies.default))
                    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("leader's table: {e}")))?;
                for p in &policies.prefixes {
                    table
                        .set(&p.prefix, Policy::from(&p.policy))
                        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("leader's table: {e}")))?;
                }
                Ok(Changed {
                    table: ControlTable {
                        version,
                        table: table.with_version(version),
                        epochs: BTreeMap::new(),
                        handoffs: BTreeMap::new(),
                    },
                    epoch,
                })
            }
            Ok(Ok(PeerResponseV1::Err { code, message })) => {
                let code = code
                    .strip_prefix("MER-")
                    .and_then(|n| n.parse().ok())
                    .and_then(ErrorCode::from_u16)
                    .unwrap_or(ErrorCode::Internal);
                Err(ApiError::new(code, format!("control leader {addr}: {message}")))
            }
            Ok(Ok(PeerResponseV1::NotLeader { .. })) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the control range's leader moved while the change was forwarded (nothing was changed); retry",
            )),
            Ok(Ok(other)) => Err(ApiError::new(
                ErrorCode::Internal,
                format!("unexpected reply from the control leader: {other:?}"),
            )),
            // Sent, but no answer: the change may have committed.
            Ok(Err(e)) => Err(ApiError::new(
                ErrorCode::OutcomeUnknown,
                format!("forwarding the policy change to {addr} failed: {e}; `meridian policy ls` shows whether it applied"),
            )),
            Err(_) => Err(ApiError::new(
                ErrorCode::OutcomeUnknown,
                format!("the control leader {addr} did not answer within {FORWARD_TIMEOUT:?}; `meridian policy ls` shows whether the change applied"),
            )),
        }
    }

    /// Applies `change` if this node leads the control range (`NotLeader`
    /// naming the leader otherwise; nothing changed).
    pub async fn apply_here(&self, change: PolicyChangeV1) -> Result<Changed, ApiError> {
        match change {
            PolicyChangeV1::Set(set) => {
                let (prefix, change) = change_of(&set)?;
                self.set(prefix, &change).await
            }
            PolicyChangeV1::Remove { prefix } => self.remove(&prefix).await,
        }
    }

    /// Reads the table at the leader, builds the change's operations from
    /// it, and commits them guarded by the table's version; retried (a
    /// bounded number of times) when another change committed in between.
    async fn change(
        &self,
        mut build: impl FnMut(&ControlTable) -> Result<(Vec<Op>, u64), ApiError>,
    ) -> Result<Changed, ApiError> {
        for _ in 0..CHANGE_ATTEMPTS {
            let current = match self.load_linearizable().await? {
                Some(t) => t,
                None => {
                    // Not bootstrapped yet: write the seed (a no-op if
                    // another node just did), then change that table.
                    self.seed().await?;
                    continue;
                }
            };
            let (mut ops, epoch) = build(&current)?;
            ops.push(put(
                VERSION_KEY.to_vec(),
                (current.version + 1).to_be_bytes().to_vec(),
            ));
            let at = CompareTarget::Value(current.version.to_be_bytes().to_vec());
            let out = self.guarded(at, ops).await?;
            if out.succeeded {
                let table = self.load_at(out.version)?.ok_or_else(|| {
                    ApiError::new(ErrorCode::Internal, "the committed policy table is missing")
                })?;
                return Ok(Changed { table, epoch });
            }
        }
        Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("the policy table changed concurrently {CHANGE_ATTEMPTS} times; retry"),
        ))
    }
}

/// The policy `prefix` (`None`: the default) has in `current` and the one
/// `change` makes of it, validated as part of the table.
fn changed_policy(
    current: &ControlTable,
    prefix: Option<&[u8]>,
    change: &PolicyChange,
) -> Result<(Policy, Policy), ApiError> {
    let mut next = current.table.clone();
    match prefix {
        None => {
            let old = current.table.default_policy().clone();
            let new = change.apply_to(&old);
            next.set_default(new.clone()).map_err(refused)?;
            Ok((old, new))
        }
        Some(p) => {
            // A new prefix policy changes its keys from whatever governs
            // them now (the default, or the policy whose prefix covers them
            // — which nesting refuses anyway).
            let old = current.table.policy_of(p).1.clone();
            let new = change.apply_to(&old);
            next.set(p, new.clone()).map_err(refused)?;
            Ok((old, new))
        }
    }
}

/// The control range, or the clear refusal a cluster without one gives.
pub fn required(control: Option<&ControlRange>) -> Result<&ControlRange, ApiError> {
    control.ok_or_else(|| {
        ApiError::new(
            ErrorCode::PolicyRefused,
            "this cluster has no control range ([control] members), so its policies are fixed by [replication] until the nodes restart with a new config",
        )
    })
}

/// The prefix (`None`: the default) and change a request names.
pub fn change_of(set: &SetPolicyV1) -> Result<(Option<&[u8]>, PolicyChange), ApiError> {
    if set.prefix.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "a policy prefix is 1..=256 bytes; change the default policy with no prefix",
        ));
    }
    Ok((
        set.prefix.as_deref(),
        PolicyChange {
            consistency: set.consistency.map(Into::into),
            home: set.home.clone(),
            replication: set.replication.map(Into::into),
            max_staleness_ms: set.max_staleness_ms,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ConsistencyV1, ReplicationV1};

    #[test]
    fn frozen_stored_policy_bytes() {
        let stored = StoredPolicyV1 {
            policy: PolicyV1 {
                consistency: ConsistencyV1::Causal,
                home: "eu".into(),
                replication: ReplicationV1::Sync(1),
                max_staleness_ms: 300,
            },
            epoch: 2,
        };
        let bytes = encode(&stored).unwrap();
        assert_eq!(
            bytes,
            vec![1, 1, 2, b'e', b'u', 1, 1, 0xac, 0x02, 2],
            "stored control values never change shape; add a version instead"
        );
        assert_eq!(decode::<StoredPolicyV1>("t", &bytes).unwrap(), stored);
        assert!(decode::<StoredPolicyV1>("t", &[2, 0]).is_err());
        assert!(decode::<StoredPolicyV1>("t", &[]).is_err());
    }

    #[test]
    fn frozen_stored_handoff_bytes() {
        let stored = StoredHandoffV1 {
            to: PolicyV1 {
                consistency: ConsistencyV1::Strong,
                home: "eu".into(),
                replication: ReplicationV1::Async,
                max_staleness_ms: 5,
            },
            table: 300,
        };
        let bytes = encode(&stored).unwrap();
        assert_eq!(
            bytes,
            vec![1, 0, 2, b'e', b'u', 0, 5, 0xac, 0x02],
            "stored control values never change shape; add a version instead"
        );
        assert_eq!(decode::<StoredHandoffV1>("t", &bytes).unwrap(), stored);
    }

    #[test]
    fn control_keys_stay_apart_from_each_other() {
        assert_eq!(handoff_key(Some(b"a/")), b"handoff/p/a/".to_vec());
        assert_eq!(handoff_key(None), HANDOFF_DEFAULT_KEY.to_vec());
        assert!(!HANDOFF_DEFAULT_KEY.starts_with(HANDOFF_KEYS));
        assert!(!handoff_key(Some(b"a/")).starts_with(PREFIX_KEYS));
        assert!(prefix_key(b"a/").starts_with(PREFIX_KEYS));
        assert!(!DEFAULT_KEY.starts_with(PREFIX_KEYS));
        assert!(!VERSION_KEY.starts_with(PREFIX_KEYS));
        assert_eq!(range_key(3), b"range/\0\0\0\0\0\0\0\x03".to_vec());
    }
}
