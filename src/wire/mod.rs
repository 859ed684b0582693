//! The client protocol's wire format, version 1.
//!
//! A request or response travels as one length-prefixed frame on its own QUIC
//! bidirectional stream (framing: [`crate::transport`]). The frame payload is
//!
//! ```text
//! +----------------+---------------------------------------+
//! | version: u16 BE| postcard(RequestV1) / postcard(ResponseV1) |
//! +----------------+---------------------------------------+
//! ```
//!
//! A request frame may end in a trailer after the postcard body carrying
//! the W3C trace context of a sampled request
//! ([`encode_request_traced`], [`decode_request_traced`]); its layout, and
//! why a trailer rather than a new field, are in [`crate::trace_context`].
//! A frame without one is exactly the v1 frame of earlier builds.
//!
//! These types are the wire's own: domain types ([`crate::types`]) convert to
//! and from them explicitly, so refactoring the domain never changes bytes.
//! Frozen-bytes tests below pin the encoding; a change that breaks them breaks
//! compatibility with deployed nodes and clients and needs a new version.
//! **Architecture Invariant:** variants and fields are only ever appended.
//!
//! A node answers a frame it cannot use with an error response (never by
//! closing the connection): an unknown version gets `MER-1006`, undecodable
//! bytes get `MER-1005`, and an oversized frame gets `MER-1003` without the
//! frame being read.

use serde::{Deserialize, Serialize};

pub mod watch;
pub use watch::{WatchEventV1, WatchFrameV1, WatchRequestV1};

use crate::error_code::{ApiError, ErrorCode};
use crate::replication::policy::{Consistency, Policy, PolicyTable, Replication};
use crate::replication::read::{OnStale, ReadLevel};
use crate::trace_context::{self, TraceContext};
use crate::types::{Compare, CompareOp, CompareTarget, KeyValue, Op, Timestamp, Txn, VersionEntry};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// A request, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestV1 {
    /// Read one key.
    Get {
        /// The key.
        key: Vec<u8>,
        /// Snapshot timestamp; `None` reads the latest committed state.
        at: Option<u64>,
    },
    /// Write one key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Scan live keys in `[start, end)` in key order.
    Range {
        /// First key (inclusive).
        start: Vec<u8>,
        /// End key (exclusive); `None` means to the end of the keyspace.
        end: Option<Vec<u8>>,
        /// Page size; 0 means the server default.
        limit: u32,
        /// Snapshot timestamp; `None` reads the latest committed state. Pass a
        /// previous page's `served_at` to page through one consistent snapshot.
        at: Option<u64>,
    },
    /// An atomic compare / then / else transaction.
    Txn(TxnV1),
    /// Version history of one key, newest first.
    History {
        /// The key.
        key: Vec<u8>,
        /// Maximum entries; 0 means the server default.
        limit: u32,
    },
    /// Node identity and state (any role).
    Status,
    /// A peer liveness probe: accepted only from `node` certificates.
    PeerPing,
    /// A Raft RPC for one range group: accepted only from `node` certificates.
    Raft(RaftRpcV1),
    /// Every range group on the node: leader, term, indexes, members (any role).
    RegionStatus,
    /// Change a range group's voters (admin certificates only); sent to the
    /// range's leader (others answer NotLeader).
    RegionChange(RegionChangeV1),
    /// `Get` with a chosen read consistency.
    GetWith {
        /// The key.
        key: Vec<u8>,
        /// Snapshot timestamp; `None` = latest.
        at: Option<u64>,
        /// Read consistency.
        consistency: ReadConsistencyV1,
    },
    /// The cluster's members as this node's gossip sees them (any role).
    Members,
    /// Range-leader hints this node has heard through gossip (any role).
    LeaderHints,
    /// `Range` with a chosen read consistency.
    RangeWith {
        /// First key (inclusive).
        start: Vec<u8>,
        /// End key (exclusive).
        end: Option<Vec<u8>>,
        /// Page size; 0 = default.
        limit: u32,
        /// Snapshot timestamp; `None` = latest.
        at: Option<u64>,
        /// Read consistency.
        consistency: ReadConsistencyV1,
    },
    /// Every prefix policy and the default (any role).
    Policies,
    /// `Put` by a session holding `token` (writes follow reads): the node
    /// merges the token into its clock first (refusing one more than
    /// `clock.max_offset_ms` ahead), so the write is stamped above it.
    PutAfter {
        /// The key.
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The session token.
        token: u64,
    },
    /// `Delete` by a session holding `token` (see `PutAfter`).
    DeleteAfter {
        /// The key.
        key: Vec<u8>,
        /// The session token.
        token: u64,
    },
    /// Sets a prefix's policy (or the default's) in the control range
    /// (admin role). Fields left `None` keep their current value.
    SetPolicy(SetPolicyV1),
    /// Removes a prefix's policy; its keys fall back to the default (admin
    /// role).
    RemovePolicy {
        /// The prefix.
        prefix: Vec<u8>,
    },
    /// Each range's applied timestamp and frontier on the answering node
    /// (any role).
    Frontiers,
    /// Opens a watch: the stream then carries many response frames
    /// ([`watch`]; data role).
    Watch(WatchRequestV1),
    /// Grants a lease of `ttl_ms` in the answering node's region (at its
    /// lease range's leader; others answer `NotLeader`).
    LeaseGrant {
        /// TTL in ms.
        ttl_ms: u64,
    },
    /// Keeps leases alive (many per request); answered with each one's
    /// state after it (`remaining_ms = 0`: gone).
    LeaseKeepAlive {
        /// The leases.
        ids: Vec<u64>,
    },
    /// Revokes a lease: its keys are deleted before the answer.
    LeaseRevoke {
        /// The lease.
        id: u64,
    },
    /// A lease's TTL and time left (linearizable).
    LeaseTtl {
        /// The lease.
        id: u64,
    },
    /// Live leases by id, after `after`, at most `limit` (linearizable).
    LeaseList {
        /// List ids above this (0: from the start).
        after: u64,
        /// Most leases in the answer.
        limit: u32,
    },
    /// `Put` attached to a lease: the key is deleted when the lease
    /// expires. Only on strong prefixes.
    PutLeased {
        /// The key.
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The lease.
        lease: u64,
    },
    /// `lease` asks for lock `name` (at the lease range's leader). With
    /// `wait`, a held lock queues the lease in arrival order and the node
    /// waits a little (`Lock { granted: false }` when still queued: ask
    /// again to keep the place); without, a held lock is `MER-1016`.
    LockAcquire {
        /// The lock (a key under a strong prefix).
        name: Vec<u8>,
        /// The asking lease.
        lease: u64,
        /// The value the holder carries (an election's leader value).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Queue when held.
        wait: bool,
    },
    /// Ends the grant of `token`; the next waiter is granted.
    LockRelease {
        /// The lock.
        name: Vec<u8>,
        /// The grant's token.
        token: u64,
    },
    /// Takes `lease` off the lock (leave the queue, or release).
    LockCancel {
        /// The lock.
        name: Vec<u8>,
        /// The lease.
        lease: u64,
    },
    /// The lock's holder (an election's leader), linearizable.
    LockHolder {
        /// The lock.
        name: Vec<u8>,
    },
    /// A write applied only if `token` is the newest token granted for
    /// lock `name` (`MER-1017` otherwise, nothing written).
    Fenced {
        /// The lock.
        name: Vec<u8>,
        /// The fencing token.
        token: u64,
        /// The write.
        write: FencedWriteV1,
    },
    /// Registers a service instance in the serving node's region, attached
    /// to `lease` (its record goes when the lease does).
    ServiceRegister {
        /// The instance (its `region` is set by the node).
        instance: ServiceInstanceV1,
        /// The lease.
        lease: u64,
    },
    /// A service's instances in every region, the serving node's region
    /// first, then the others by measured round trip (read locally).
    ServiceLookup {
        /// The service.
        name: String,
        /// The caller's zone, preferred within a region ("" when unknown).
        zone: String,
    },
    /// One page of a key's version history, newest first: at most `limit`
    /// versions (0: the server's maximum, 1000) and about
    /// `limits.max_scan_page_bytes` of values (always at least one).
    HistoryPage {
        /// The key.
        key: Vec<u8>,
        /// Most versions in the page.
        limit: u32,
        /// Only versions older than this (a previous page's `next_before`).
        before: Option<u64>,
    },
}

/// A service instance, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstanceV1 {
    /// The service.
    pub name: String,
    /// The instance id.
    pub id: String,
    /// Its addresses.
    pub addrs: Vec<String>,
    /// Its metadata, by key.
    pub meta: Vec<(String, String)>,
    /// The region it registered in.
    pub region: String,
    /// Its zone.
    pub zone: String,
}

impl From<ServiceInstanceV1> for crate::discovery::ServiceInstance {
    fn from(i: ServiceInstanceV1) -> Self {
        crate::discovery::ServiceInstance {
            v: 1,
            name: i.name,
            id: i.id,
            addrs: i.addrs,
            meta: i.meta.into_iter().collect(),
            region: i.region,
            zone: i.zone,
        }
    }
}

impl From<crate::discovery::ServiceInstance> for ServiceInstanceV1 {
    fn from(i: crate::discovery::ServiceInstance) -> Self {
        ServiceInstanceV1 {
            name: i.name,
            id: i.id,
            addrs: i.addrs,
            meta: i.meta.into_iter().collect(),
            region: i.region,
            zone: i.zone,
        }
    }
}

/// The write of a [`RequestV1::Fenced`], version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FencedWriteV1 {
    /// Put.
    Put {
        /// Key.
        key: Vec<u8>,
        /// Value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Delete.
    Delete {
        /// Key.
        key: Vec<u8>,
    },
    /// Transaction.
    Txn(TxnV1),
}

/// A lock grant or holder, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockV1 {
    /// Whether the asking lease holds the lock (an acquire's answer; always
    /// true for a holder).
    pub granted: bool,
    /// The holder's lease.
    pub lease: u64,
    /// The holder's fencing token (0 when not granted).
    pub token: u64,
    /// The holder's value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A lease, version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseV1 {
    /// Its id.
    pub id: u64,
    /// The TTL it was granted, ms.
    pub ttl_ms: u64,
    /// Time left when answered, ms (0: expired or unknown).
    pub remaining_ms: u64,
    /// When it was granted (HLC).
    pub granted_at: u64,
}

/// A range's timestamps on one replica, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeFrontierV1 {
    /// Range id.
    pub range: u64,
    /// Everything at or below it is applied here.
    pub applied: u64,
    /// Every region's writes at or below it are applied here (equals
    /// `applied` in a single region).
    pub frontier: u64,
}

/// A policy change, version 1.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPolicyV1 {
    /// The prefix; `None` = the default policy.
    pub prefix: Option<Vec<u8>>,
    /// New consistency.
    pub consistency: Option<ConsistencyV1>,
    /// New home region.
    pub home: Option<String>,
    /// New replication mode.
    pub replication: Option<ReplicationV1>,
    /// New default staleness bound, ms.
    pub max_staleness_ms: Option<u64>,
}

/// A cluster member as gossip sees it, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberV1 {
    /// Node name.
    pub node_id: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// QUIC address.
    pub peer_addr: String,
    /// Liveness: alive, suspect, down or left.
    pub state: String,
    /// Process generation (grows with every restart).
    pub generation: u64,
    /// Rejoins of this generation after a false Down.
    pub rejoin: u32,
    /// SWIM incarnation (refuted suspicions).
    pub refutation: u16,
    /// Smoothed RTT measured by the answering node, in microseconds.
    pub rtt_us: Option<u64>,
}

/// A range-leader hint heard through gossip, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHintV1 {
    /// Range id.
    pub range: u64,
    /// Region whose group it is.
    pub region: String,
    /// Leader's node name.
    pub leader: String,
    /// Raft term of that leadership.
    pub term: u64,
}

/// Read consistency, version 1 (append-only). `Linearizable` and
/// `Serializable` are answered with [`ResponseV1::Ok`]; the levels appended
/// after them (`Bounded`, `Causal`, `Eventual`) with [`ResponseV1::OkLevel`],
/// which also carries the staleness and the new session token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadConsistencyV1 {
    /// At the home region's range leader, after confirming leadership.
    Linearizable,
    /// At whichever replica receives it, from what it has applied.
    Serializable,
    /// Locally if this region's frontier is at most `max_staleness_ms`
    /// behind the clock, otherwise as `on_stale` says.
    Bounded {
        /// Staleness bound, ms (at most `MAX_STALENESS_MS`).
        max_staleness_ms: u64,
        /// What to do when the frontier is older.
        on_stale: OnStaleV1,
    },
    /// Locally once this region's frontier has reached `token` (an HLC
    /// timestamp from an earlier reply), waiting a bounded time.
    Causal {
        /// The session token.
        token: u64,
    },
    /// Locally, at this region's frontier, without waiting.
    Eventual,
}

/// What a bounded read does when the frontier is too old, version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnStaleV1 {
    /// Answer `WrongRegion` naming the home region.
    Redirect,
    /// Answer `TooStale` (`MER-3007`).
    Fail,
}

impl From<crate::types::ReadConsistency> for ReadConsistencyV1 {
    fn from(c: crate::types::ReadConsistency) -> Self {
        match c {
            crate::types::ReadConsistency::Linearizable => ReadConsistencyV1::Linearizable,
            crate::types::ReadConsistency::Serializable => ReadConsistencyV1::Serializable,
        }
    }
}

impl From<ReadLevel> for ReadConsistencyV1 {
    fn from(l: ReadLevel) -> Self {
        match l {
            ReadLevel::Linearizable => ReadConsistencyV1::Linearizable,
            ReadLevel::Bounded {
                max_staleness_ms,
                on_stale,
            } => ReadConsistencyV1::Bounded {
                max_staleness_ms,
                on_stale: match on_stale {
                    OnStale::Redirect => OnStaleV1::Redirect,
                    OnStale::Fail => OnStaleV1::Fail,
                },
            },
            ReadLevel::Causal { token } => ReadConsistencyV1::Causal { token: token.0 },
            ReadLevel::Eventual => ReadConsistencyV1::Eventual,
        }
    }
}

impl ReadConsistencyV1 {
    /// The per-call level asked for, or `None` for `Serializable` (which
    /// is not a level of a prefix policy: it reads this replica's applied
    /// state whatever the prefix).
    pub fn level(self) -> Option<ReadLevel> {
        Some(match self {
            ReadConsistencyV1::Serializable => return None,
            ReadConsistencyV1::Linearizable => ReadLevel::Linearizable,
            ReadConsistencyV1::Bounded {
                max_staleness_ms,
                on_stale,
            } => ReadLevel::Bounded {
                max_staleness_ms,
                on_stale: match on_stale {
                    OnStaleV1::Redirect => OnStale::Redirect,
                    OnStaleV1::Fail => OnStale::Fail,
                },
            },
            ReadConsistencyV1::Causal { token } => ReadLevel::Causal {
                token: Timestamp(token),
            },
            ReadConsistencyV1::Eventual => ReadLevel::Eventual,
        })
    }

    /// Whether the reply is [`ResponseV1::OkLevel`] (the levels appended
    /// after the first two) rather than [`ResponseV1::Ok`].
    pub fn answers_with_level(self) -> bool {
        !matches!(
            self,
            ReadConsistencyV1::Linearizable | ReadConsistencyV1::Serializable
        )
    }
}

/// A prefix's consistency, version 1 (append-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsistencyV1 {
    /// Writes only at the home region; linearizable there.
    Strong,
    /// Writes anywhere, stamped above the writer's session token.
    Causal,
    /// Writes anywhere; last writer wins.
    Eventual,
}

/// How a prefix's writes replicate, version 1 (append-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationV1 {
    /// Acknowledged once committed in the accepting region.
    Async,
    /// Acknowledged once this many other regions applied it durably.
    Sync(u8),
}

/// One policy, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyV1 {
    /// What the prefix promises.
    pub consistency: ConsistencyV1,
    /// The home region.
    pub home: String,
    /// How writes replicate.
    pub replication: ReplicationV1,
    /// Default bound of bounded reads, ms.
    pub max_staleness_ms: u64,
}

/// A prefix and its policy, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixPolicyV1 {
    /// The key prefix.
    pub prefix: Vec<u8>,
    /// Its policy.
    pub policy: PolicyV1,
}

/// The policy table as a node holds it, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoliciesV1 {
    /// The answering node's region.
    pub local_region: String,
    /// Every region of the cluster.
    pub regions: Vec<String>,
    /// The policy of keys under no prefix policy.
    pub default: PolicyV1,
    /// Prefix policies, in key order.
    pub prefixes: Vec<PrefixPolicyV1>,
}

impl From<&Policy> for PolicyV1 {
    fn from(p: &Policy) -> Self {
        PolicyV1 {
            consistency: p.consistency.into(),
            home: p.home.clone(),
            replication: p.replication.into(),
            max_staleness_ms: p.max_staleness_ms,
        }
    }
}

impl From<&PolicyV1> for Policy {
    fn from(p: &PolicyV1) -> Self {
        Policy {
            consistency: p.consistency.into(),
            home: p.home.clone(),
            replication: p.replication.into(),
            max_staleness_ms: p.max_staleness_ms,
        }
    }
}

impl From<ConsistencyV1> for Consistency {
    fn from(c: ConsistencyV1) -> Self {
        match c {
            ConsistencyV1::Strong => Consistency::Strong,
            ConsistencyV1::Causal => Consistency::Causal,
            ConsistencyV1::Eventual => Consistency::Eventual,
        }
    }
}

impl From<ReplicationV1> for Replication {
    fn from(r: ReplicationV1) -> Self {
        match r {
            ReplicationV1::Async => Replication::Async,
            ReplicationV1::Sync(n) => Replication::Sync(n),
        }
    }
}

impl From<Consistency> for ConsistencyV1 {
    fn from(c: Consistency) -> Self {
        match c {
            Consistency::Strong => ConsistencyV1::Strong,
            Consistency::Causal => ConsistencyV1::Causal,
            Consistency::Eventual => ConsistencyV1::Eventual,
        }
    }
}

impl From<Replication> for ReplicationV1 {
    fn from(r: Replication) -> Self {
        match r {
            Replication::Async => ReplicationV1::Async,
            Replication::Sync(n) => ReplicationV1::Sync(n),
        }
    }
}

impl ConsistencyV1 {
    /// The name used in config, CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsistencyV1::Strong => "strong",
            ConsistencyV1::Causal => "causal",
            ConsistencyV1::Eventual => "eventual",
        }
    }
}

impl std::fmt::Display for ReplicationV1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicationV1::Async => f.write_str("async"),
            ReplicationV1::Sync(n) => write!(f, "sync-{n}"),
        }
    }
}

/// The wire form of `table` as held by a node of `local_region`.
pub fn policies_v1(local_region: &str, table: &PolicyTable) -> PoliciesV1 {
    PoliciesV1 {
        local_region: local_region.to_string(),
        regions: table.regions().to_vec(),
        default: table.default_policy().into(),
        prefixes: table
            .prefixes()
            .map(|(prefix, p)| PrefixPolicyV1 {
                prefix: prefix.to_vec(),
                policy: p.into(),
            })
            .collect(),
    }
}

/// A membership change of one range group, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionChangeV1 {
    /// The range.
    pub range: u64,
    /// What to change.
    pub change: MembershipChangeV1,
}

/// Changes of a range group, version 1 (append-only). Adding and removing
/// voters go through openraft's joint consensus; moving the leader changes
/// no membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChangeV1 {
    /// Add a voter: it joins as a learner, catches up, then becomes a voter.
    AddNode {
        /// Raft id (new, never used before).
        id: u64,
        /// Node name.
        name: String,
        /// QUIC address.
        addr: String,
        /// Zone.
        zone: String,
    },
    /// Remove a voter (it stops receiving the range).
    RemoveNode {
        /// Raft id.
        id: u64,
    },
    /// Not a membership change: the voters stay. The range's leader hands
    /// its leadership to voter `to` (Raft's leadership transfer: `to` is
    /// told to campaign at once) and answers when it sees `to` lead, as
    /// `etcdctl move-leader` does; for draining a node before maintenance.
    MoveLeader {
        /// Raft id of the voter to lead.
        to: u64,
    },
}

/// One range group as a node sees it, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeStatusV1 {
    /// Range id.
    pub range: u64,
    /// First key.
    pub start: Vec<u8>,
    /// End key (exclusive), or none.
    pub end: Option<Vec<u8>>,
    /// The reporting node's Raft id.
    pub node: u64,
    /// Current leader, if known.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Last log index on this node.
    pub last_log_index: Option<u64>,
    /// Last applied index on this node.
    pub applied_index: Option<u64>,
    /// Voter ids.
    pub voters: Vec<u64>,
    /// Learner ids.
    pub learners: Vec<u64>,
}

/// A Raft RPC between nodes, version 1. The payload is the postcard encoding
/// of the openraft request type named by `kind` (openraft is pinned exactly,
/// so both ends agree on that layout); the reply body is
/// [`ResponseBodyV1::Raft`] holding the postcard encoding of the result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftRpcV1 {
    /// The range (Raft group) addressed.
    pub range: u64,
    /// Which RPC.
    pub kind: RaftRpcKindV1,
    /// postcard of the request.
    pub payload: Vec<u8>,
}

/// Raft RPC kinds, version 1 (append-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRpcKindV1 {
    /// AppendEntries (also heartbeats).
    AppendEntries,
    /// RequestVote.
    Vote,
    /// Pre-vote.
    PreVote,
    /// A whole snapshot: payload is postcard of (vote, snapshot meta, data).
    FullSnapshot,
    /// Leadership transfer.
    TransferLeader,
}

/// A transaction, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnV1 {
    /// Guards.
    pub compares: Vec<CompareV1>,
    /// Ops when every guard holds.
    pub success: Vec<OpV1>,
    /// Ops otherwise.
    pub failure: Vec<OpV1>,
}

/// A transaction guard, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompareV1 {
    /// The key.
    pub key: Vec<u8>,
    /// 0 equal, 1 not equal, 2 less, 3 greater.
    pub op: CompareOpV1,
    /// What is compared.
    pub target: CompareTargetV1,
}

/// Comparison operator, version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOpV1 {
    /// ==
    Equal,
    /// !=
    NotEqual,
    /// <
    Less,
    /// >
    Greater,
}

/// Compare target, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTargetV1 {
    /// The value.
    Value(Vec<u8>),
    /// The version (HLC of the last write; 0 when absent).
    Version(u64),
    /// Existence.
    Exists(bool),
}

/// A mutation, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpV1 {
    /// Put.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Delete.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// A key-value pair, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValueV1 {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// HLC of the write that produced it.
    pub version: u64,
}

/// A history entry, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntryV1 {
    /// HLC of the write.
    pub version: u64,
    /// Value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// A response, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseV1 {
    /// Success: `served_at` is the HLC timestamp the request was served at.
    Ok {
        /// HLC at which the read snapshot was taken or the write committed.
        served_at: u64,
        /// The result.
        body: ResponseBodyV1,
    },
    /// Failure; nothing was written.
    Err {
        /// Stable numeric code (see [`ErrorCode::as_u16`]).
        code: u16,
        /// Human-readable message.
        message: String,
    },
    /// This node does not lead the range (`MER-3004`); nothing was written.
    /// `leader` is the leader's QUIC address when known: send it there.
    NotLeader {
        /// Leader address, if known.
        leader: Option<String>,
        /// Human-readable message.
        message: String,
    },
    /// Success of a read at a level appended after `Serializable`
    /// ([`ReadConsistencyV1::answers_with_level`]).
    OkLevel {
        /// HLC timestamp of the snapshot the read was served at.
        served_at: u64,
        /// How far `served_at` was behind the serving node's clock, ms.
        staleness_ms: u64,
        /// The new session token: the highest of the token the call
        /// brought and `served_at`. Bring it to the next causal read.
        token: u64,
        /// The result.
        body: ResponseBodyV1,
    },
    /// This node's region is not the key prefix's home and the request
    /// needs it (`MER-3006`); nothing was written. Send it to `addr`, a
    /// node of region `home`, when known.
    WrongRegion {
        /// The prefix's home region.
        home: String,
        /// A client QUIC address of a node in `home`, if gossip knows one.
        addr: Option<String>,
        /// Human-readable message.
        message: String,
    },
    /// The node ended a watch (the last frame of its stream): `code` says
    /// why, and watching again from `resume_from` continues exactly after
    /// the last event delivered ([`watch`]).
    WatchEnded {
        /// Stable numeric code (see [`ErrorCode::as_u16`]).
        code: u16,
        /// Human-readable message, naming the resume point.
        message: String,
        /// The timestamp to watch again from.
        resume_from: u64,
    },
}

/// Successful results, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBodyV1 {
    /// Get result.
    Value(Option<KeyValueV1>),
    /// Put or delete result: the commit version and, for delete, whether the key existed.
    Written {
        /// HLC version of the write.
        version: u64,
        /// Whether the key existed before (always true for put).
        existed: bool,
    },
    /// Range page.
    Page {
        /// Live pairs in key order.
        kvs: Vec<KeyValueV1>,
        /// Where the next page starts, if there may be more.
        next: Option<Vec<u8>>,
    },
    /// Transaction result.
    Txn {
        /// Whether the success branch ran.
        succeeded: bool,
        /// HLC of the commit (the read timestamp when the branch wrote nothing).
        version: u64,
    },
    /// History, newest first.
    History(Vec<VersionEntryV1>),
    /// Node status.
    Status(StatusV1),
    /// Peer ping answer.
    Pong,
    /// A Raft RPC result (postcard of openraft's result type).
    Raft(Vec<u8>),
    /// Region status.
    RegionStatus(Vec<RangeStatusV1>),
    /// Cluster members.
    Members(Vec<MemberV1>),
    /// Range-leader hints.
    LeaderHints(Vec<LeaderHintV1>),
    /// A membership change committed; the range's voters now.
    RegionChanged {
        /// Range id.
        range: u64,
        /// Voter ids after the change.
        voters: Vec<u64>,
    },
    /// The policy table.
    Policies(PoliciesV1),
    /// A policy change committed in the control range.
    PolicyChanged {
        /// The table's version after the change (every change adds one).
        version: u64,
        /// The changed policy's epoch (every change of it adds one; 0 for a
        /// removal).
        epoch: u64,
        /// The table after the change, as the control leader holds it.
        policies: PoliciesV1,
    },
    /// Each range's timestamps on the answering node (`served_at` is its
    /// clock, so `served_at - frontier` is the range's staleness there).
    Frontiers(Vec<RangeFrontierV1>),
    /// One frame of a watch stream.
    Watch(WatchFrameV1),
    /// One lease.
    Lease(LeaseV1),
    /// Several leases (a keepalive's, a listing's).
    Leases(Vec<LeaseV1>),
    /// A lock acquire's answer, or a lock's holder (`None`: free).
    Lock(Option<LockV1>),
    /// A service lookup's instances, in preference order.
    Services(Vec<ServiceInstanceV1>),
    /// One page of history, newest first, and where the next page starts
    /// (`None`: no older versions).
    HistoryPage {
        /// The versions.
        entries: Vec<VersionEntryV1>,
        /// Pass as `before` for the next page.
        next_before: Option<u64>,
    },
}

/// Node status, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusV1 {
    /// Node name.
    pub node_id: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Software version.
    pub version: String,
    /// Approximate live + historical entries stored.
    pub approximate_keys: u64,
    /// Garbage-collection horizon (reads below fail with MER-1008).
    pub gc_horizon: u64,
}

/// Why a frame could not be decoded. Converts into a user-facing [`ApiError`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than two bytes: no version header.
    #[error("frame of {0} bytes has no version header")]
    Short(usize),
    /// A version this build does not speak.
    #[error("protocol version {0} is not supported (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    /// The body is not a valid postcard encoding of the expected type.
    #[error("malformed frame body: {0}")]
    Malformed(String),
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> ApiError {
        let code = match e {
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::Short(_) | DecodeError::Malformed(_) => ErrorCode::MalformedRequest,
        };
        ApiError::new(code, e.to_string())
    }
}

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Sized first (a walk that allocates nothing), so the frame is one
    // allocation rather than a doubling series from two bytes up (eight
    // reallocations for a 256-byte value).
    let body = postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
        msg,
        postcard::ser_flavors::Size::default(),
    )
    .unwrap_or(0);
    let mut out = Vec::with_capacity(PROTOCOL_VERSION.to_be_bytes().len() + body);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    // postcard only fails on writer errors, which a Vec never has; an
    // unencodable value is a programmer error, so fall back to an empty body
    // that the peer will refuse as malformed rather than panic in the server.
    match postcard::to_extend(msg, out) {
        Ok(v) => v,
        Err(_) => PROTOCOL_VERSION.to_be_bytes().to_vec(),
    }
}

fn decode<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, DecodeError> {
    decode_traced(frame).map(|(msg, _)| msg)
}

/// Decodes a frame and its trailer's trace context (the trailer is checked
/// even when the caller ignores the context).
fn decode_traced<'a, T: Deserialize<'a>>(
    frame: &'a [u8],
) -> Result<(T, Option<TraceContext>), DecodeError> {
    let (header, body) = frame
        .split_at_checked(2)
        .ok_or(DecodeError::Short(frame.len()))?;
    let version = u16::from_be_bytes([header[0], header[1]]);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let trailer =
        trace_context::read_trailer(rest).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    // A client request has no Raft entries: a traced-entry field is read
    // (and checked) but means nothing here.
    Ok((msg, trailer.context))
}

/// Encodes a request frame payload.
pub fn encode_request(req: &RequestV1) -> Vec<u8> {
    encode(req)
}

/// Encodes a request frame payload with the trace context of a sampled
/// request in its trailer (`None`: the plain v1 frame).
pub fn encode_request_traced(req: &RequestV1, ctx: Option<&TraceContext>) -> Vec<u8> {
    let mut frame = encode(req);
    if let Some(ctx) = ctx {
        trace_context::write_trailer(&mut frame, ctx);
    }
    frame
}

/// Decodes a request frame payload (a trailer is checked, its context dropped).
pub fn decode_request(frame: &[u8]) -> Result<RequestV1, DecodeError> {
    decode(frame)
}

/// Decodes a request frame payload and the trace context in its trailer.
pub fn decode_request_traced(
    frame: &[u8],
) -> Result<(RequestV1, Option<TraceContext>), DecodeError> {
    decode_traced(frame)
}

/// Encodes a response frame payload.
pub fn encode_response(resp: &ResponseV1) -> Vec<u8> {
    encode(resp)
}

/// Decodes a response frame payload.
pub fn decode_response(frame: &[u8]) -> Result<ResponseV1, DecodeError> {
    decode(frame)
}

/// The cluster's members as gossip sees them, in the wire form shared by the
/// client protocol and the gateway, ordered by region then node.
pub fn members_v1(m: &crate::membership::Membership) -> Vec<MemberV1> {
    use crate::membership::MemberState;
    let mut out: Vec<_> = m
        .members()
        .into_iter()
        .map(|v| MemberV1 {
            node_id: v.identity.node_id,
            region: v.identity.region,
            zone: v.identity.zone,
            peer_addr: v.identity.peer_addr.to_string(),
            state: match v.state {
                MemberState::Alive => "alive",
                MemberState::Suspect => "suspect",
                MemberState::Down => "down",
                MemberState::Left => "left",
            }
            .to_string(),
            generation: v.incarnation.generation,
            rejoin: v.incarnation.rejoin,
            refutation: v.incarnation.refutation,
            rtt_us: v.rtt_ms.map(|ms| (ms * 1000.0).round() as u64),
        })
        .collect();
    out.sort_by(|a, b| (&a.region, &a.node_id).cmp(&(&b.region, &b.node_id)));
    out
}

/// Most members looked at when choosing a node of a home region.
const MAX_HOME_CANDIDATES: usize = 1_024;

/// Fills a `WrongRegion` error's address, when it has none, with the client
/// address of a live node of its home region as gossip knows it: the home
/// region's leader of `range` when gossip has a hint for it (so a strong
/// request from afar costs one WAN round trip, not a second hop from a
/// follower), else the live home node with the lowest measured RTT. Shared
/// by the QUIC server and the gateway, like [`members_v1`].
pub fn with_home_address(
    mut e: ApiError,
    membership: Option<&crate::membership::Membership>,
    range: Option<u64>,
) -> ApiError {
    use crate::membership::{MemberState, MemberView};
    if e.code != ErrorCode::WrongRegion || e.leader_hint.is_some() {
        return e;
    }
    let (Some(home), Some(m)) = (e.home_region.as_deref(), membership) else {
        return e;
    };
    let rtt = |v: &MemberView| v.rtt_ms.unwrap_or(f64::MAX);
    let leader = range
        .and_then(|r| m.leader_hint(r, home))
        .map(|h| h.leader_node);
    let live: Vec<MemberView> = m
        .members()
        .into_iter()
        .take(MAX_HOME_CANDIDATES)
        .filter(|v| v.identity.region == home)
        .filter(|v| matches!(v.state, MemberState::Alive | MemberState::Suspect))
        .collect();
    let candidates: Vec<(&str, f64)> = live
        .iter()
        .map(|v| (v.identity.node_id.as_str(), rtt(v)))
        .collect();
    e.leader_hint = pick_home_node(&candidates, leader.as_deref())
        .map(|i| live[i].identity.client_addr.to_string());
    e
}

/// Which of a home region's live `candidates` (name, measured RTT) a
/// refusal names: the range's `leader` when it is one of them, else the
/// nearest. Returns its index.
fn pick_home_node(candidates: &[(&str, f64)], leader: Option<&str>) -> Option<usize> {
    candidates
        .iter()
        .position(|(name, _)| Some(*name) == leader)
        .or_else(|| {
            (0..candidates.len()).min_by(|&a, &b| candidates[a].1.total_cmp(&candidates[b].1))
        })
}

/// Builds the error response for `err`.
pub fn error_response(err: &ApiError) -> ResponseV1 {
    if err.code == ErrorCode::NotLeader {
        return ResponseV1::NotLeader {
            leader: err.leader_hint.clone(),
            message: err.message.clone(),
        };
    }
    if err.code == ErrorCode::WrongRegion {
        return ResponseV1::WrongRegion {
            home: err.home_region.clone().unwrap_or_default(),
            addr: err.leader_hint.clone(),
            message: err.message.clone(),
        };
    }
    ResponseV1::Err {
        code: err.code.as_u16(),
        message: err.message.clone(),
    }
}

/// Turns a wire error back into an [`ApiError`]; a code from a newer node maps to `Internal`.
pub fn api_error(code: u16, message: String) -> ApiError {
    let code = ErrorCode::from_u16(code).unwrap_or(ErrorCode::Internal);
    ApiError::new(code, message)
}

// ---- explicit conversions between wire and domain types ----

impl From<KeyValue> for KeyValueV1 {
    fn from(kv: KeyValue) -> Self {
        KeyValueV1 {
            key: kv.key,
            value: kv.value,
            version: kv.version.0,
        }
    }
}

impl From<KeyValueV1> for KeyValue {
    fn from(kv: KeyValueV1) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value,
            version: Timestamp(kv.version),
        }
    }
}

impl From<&VersionEntry> for VersionEntryV1 {
    fn from(v: &VersionEntry) -> Self {
        VersionEntryV1 {
            version: v.version.0,
            value: v.value.clone(),
        }
    }
}

impl From<VersionEntryV1> for VersionEntry {
    fn from(v: VersionEntryV1) -> Self {
        VersionEntry {
            version: Timestamp(v.version),
            value: v.value,
        }
    }
}

impl From<&Op> for OpV1 {
    fn from(op: &Op) -> Self {
        match op {
            Op::Put { key, value } => OpV1::Put {
                key: key.clone(),
                value: value.clone(),
            },
            Op::Delete { key } => OpV1::Delete { key: key.clone() },
        }
    }
}

impl From<OpV1> for Op {
    fn from(op: OpV1) -> Self {
        match op {
            OpV1::Put { key, value } => Op::Put { key, value },
            OpV1::Delete { key } => Op::Delete { key },
        }
    }
}

impl From<CompareOp> for CompareOpV1 {
    fn from(op: CompareOp) -> Self {
        match op {
            CompareOp::Equal => CompareOpV1::Equal,
            CompareOp::NotEqual => CompareOpV1::NotEqual,
            CompareOp::Less => CompareOpV1::Less,
            CompareOp::Greater => CompareOpV1::Greater,
        }
    }
}

impl From<CompareOpV1> for CompareOp {
    fn from(op: CompareOpV1) -> Self {
        match op {
            CompareOpV1::Equal => CompareOp::Equal,
            CompareOpV1::NotEqual => CompareOp::NotEqual,
            CompareOpV1::Less => CompareOp::Less,
            CompareOpV1::Greater => CompareOp::Greater,
        }
    }
}

impl From<&Txn> for TxnV1 {
    fn from(t: &Txn) -> Self {
        let compares = t
            .compares
            .iter()
            .map(|c| CompareV1 {
                key: c.key.clone(),
                op: c.op.into(),
                target: match &c.target {
                    CompareTarget::Value(v) => CompareTargetV1::Value(v.clone()),
                    CompareTarget::Version(v) => CompareTargetV1::Version(v.0),
                    CompareTarget::Exists(b) => CompareTargetV1::Exists(*b),
                },
            })
            .collect();
        TxnV1 {
            compares,
            success: t.success.iter().map(OpV1::from).collect(),
            failure: t.failure.iter().map(OpV1::from).collect(),
        }
    }
}

impl From<TxnV1> for Txn {
    fn from(t: TxnV1) -> Self {
        let compares = t
            .compares
            .into_iter()
            .map(|c| Compare {
                key: c.key,
                op: c.op.into(),
                target: match c.target {
                    CompareTargetV1::Value(v) => CompareTarget::Value(v),
                    CompareTargetV1::Version(v) => CompareTarget::Version(Timestamp(v)),
                    CompareTargetV1::Exists(b) => CompareTarget::Exists(b),
                },
            })
            .collect();
        Txn {
            compares,
            success: t.success.into_iter().map(Op::from).collect(),
            failure: t.failure.into_iter().map(Op::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_home_leader_when_gossip_knows_it() {
        let c = [("us-2", 3.0), ("us-1", 1.0), ("us-3", 9.0)];
        assert_eq!(pick_home_node(&c, Some("us-3")), Some(2), "the leader");
        assert_eq!(pick_home_node(&c, None), Some(1), "else the nearest");
        assert_eq!(pick_home_node(&c, Some("gone")), Some(1), "a dead leader");
        assert_eq!(pick_home_node(&[], Some("us-1")), None);
    }

    // Frozen bytes: these exact encodings are what deployed v1 peers send.
    // If one of these fails, you changed the wire format: add a new variant
    // (append-only) or a new protocol version instead.

    #[test]
    fn frozen_get_request() {
        let req = RequestV1::Get {
            key: b"k".to_vec(),
            at: Some(300),
        };
        let bytes = encode_request(&req);
        assert_eq!(bytes, vec![0, 1, 0, 1, b'k', 1, 0xac, 0x02]);
        assert_eq!(decode_request(&bytes).unwrap(), req);
    }

    /// Lease, lock and fenced-write requests and their answers, pinned.
    #[test]
    fn frozen_coordination_messages() {
        let cases = [
            (
                RequestV1::LeaseGrant { ttl_ms: 300 },
                vec![0, 1, 22, 0xac, 0x02],
            ),
            (
                RequestV1::LeaseKeepAlive { ids: vec![1, 2] },
                vec![0, 1, 23, 2, 1, 2],
            ),
            (RequestV1::LeaseRevoke { id: 5 }, vec![0, 1, 24, 5]),
            (RequestV1::LeaseTtl { id: 5 }, vec![0, 1, 25, 5]),
            (
                RequestV1::LeaseList { after: 1, limit: 2 },
                vec![0, 1, 26, 1, 2],
            ),
            (
                RequestV1::PutLeased {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    lease: 5,
                },
                vec![0, 1, 27, 1, b'k', 1, b'v', 5],
            ),
            (
                RequestV1::LockAcquire {
                    name: b"n".to_vec(),
                    lease: 5,
                    value: b"v".to_vec(),
                    wait: true,
                },
                vec![0, 1, 28, 1, b'n', 5, 1, b'v', 1],
            ),
            (
                RequestV1::LockRelease {
                    name: b"n".to_vec(),
                    token: 9,
                },
                vec![0, 1, 29, 1, b'n', 9],
            ),
            (
                RequestV1::LockCancel {
                    name: b"n".to_vec(),
                    lease: 5,
                },
                vec![0, 1, 30, 1, b'n', 5],
            ),
            (
                RequestV1::LockHolder {
                    name: b"n".to_vec(),
                },
                vec![0, 1, 31, 1, b'n'],
            ),
            (
                RequestV1::Fenced {
                    name: b"n".to_vec(),
                    token: 9,
                    write: FencedWriteV1::Delete { key: b"k".to_vec() },
                },
                vec![0, 1, 32, 1, b'n', 9, 1, 1, b'k'],
            ),
        ];
        for (req, bytes) in cases {
            assert_eq!(encode_request(&req), bytes, "{req:?}");
            assert_eq!(decode_request(&bytes).unwrap(), req);
        }
        let lease = LeaseV1 {
            id: 1,
            ttl_ms: 2,
            remaining_ms: 3,
            granted_at: 4,
        };
        let lock = LockV1 {
            granted: true,
            lease: 5,
            token: 6,
            value: b"v".to_vec(),
        };
        let bodies = [
            (ResponseBodyV1::Lease(lease), vec![16, 1, 2, 3, 4]),
            (ResponseBodyV1::Leases(vec![lease]), vec![17, 1, 1, 2, 3, 4]),
            (
                ResponseBodyV1::Lock(Some(lock)),
                vec![18, 1, 1, 5, 6, 1, b'v'],
            ),
            (ResponseBodyV1::Lock(None), vec![18, 0]),
        ];
        for (body, bytes) in bodies {
            assert_eq!(postcard::to_allocvec(&body).unwrap(), bytes, "{body:?}");
        }
    }

    /// The paged history request and its answer, pinned.
    #[test]
    fn frozen_history_page_messages() {
        let req = RequestV1::HistoryPage {
            key: b"k".to_vec(),
            limit: 10,
            before: Some(9),
        };
        let bytes = encode_request(&req);
        assert_eq!(bytes, vec![0, 1, 35, 1, b'k', 10, 1, 9]);
        assert_eq!(decode_request(&bytes).unwrap(), req);
        let body = ResponseBodyV1::HistoryPage {
            entries: vec![
                VersionEntryV1 {
                    version: 7,
                    value: Some(b"v".to_vec()),
                },
                VersionEntryV1 {
                    version: 5,
                    value: None,
                },
            ],
            next_before: Some(5),
        };
        assert_eq!(
            postcard::to_allocvec(&body).unwrap(),
            vec![20, 2, 7, 1, 1, b'v', 5, 0, 1, 5]
        );
    }

    /// Region changes: membership (voters) and the leader move, pinned.
    #[test]
    fn frozen_region_change_requests() {
        let cases = [
            (
                RequestV1::RegionChange(RegionChangeV1 {
                    range: 3,
                    change: MembershipChangeV1::RemoveNode { id: 2 },
                }),
                vec![0, 1, 10, 3, 1, 2],
            ),
            (
                RequestV1::RegionChange(RegionChangeV1 {
                    range: 3,
                    change: MembershipChangeV1::MoveLeader { to: 5 },
                }),
                vec![0, 1, 10, 3, 2, 5],
            ),
        ];
        for (req, bytes) in cases {
            assert_eq!(encode_request(&req), bytes, "{req:?}");
            assert_eq!(decode_request(&bytes).unwrap(), req);
        }
    }

    #[test]
    fn frozen_put_request() {
        let req = RequestV1::Put {
            key: b"ab".to_vec(),
            value: b"xyz".to_vec(),
        };
        assert_eq!(
            encode_request(&req),
            vec![0, 1, 1, 2, b'a', b'b', 3, b'x', b'y', b'z']
        );
    }

    #[test]
    fn frozen_txn_request() {
        let req = RequestV1::Txn(TxnV1 {
            compares: vec![CompareV1 {
                key: b"a".to_vec(),
                op: CompareOpV1::Equal,
                target: CompareTargetV1::Exists(false),
            }],
            success: vec![OpV1::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
            }],
            failure: vec![OpV1::Delete { key: b"a".to_vec() }],
        });
        assert_eq!(
            encode_request(&req),
            vec![0, 1, 4, 1, 1, b'a', 0, 2, 0, 1, 0, 1, b'a', 1, b'1', 1, 1, 1, b'a']
        );
    }

    #[test]
    fn frozen_ok_and_err_responses() {
        let ok = ResponseV1::Ok {
            served_at: 1,
            body: ResponseBodyV1::Written {
                version: 2,
                existed: true,
            },
        };
        assert_eq!(encode_response(&ok), vec![0, 1, 0, 1, 1, 2, 1]);
        let err = ResponseV1::Err {
            code: 1001,
            message: "k".into(),
        };
        // 1001 as a varint is 0xe9 0x07.
        assert_eq!(encode_response(&err), vec![0, 1, 1, 0xe9, 0x07, 1, b'k']);
    }

    #[test]
    fn frozen_raft_rpc_envelope() {
        let req = RequestV1::Raft(RaftRpcV1 {
            range: 7,
            kind: RaftRpcKindV1::Vote,
            payload: vec![9],
        });
        assert_eq!(encode_request(&req), vec![0, 1, 8, 7, 1, 1, 9]);
    }

    #[test]
    fn frozen_read_level_requests() {
        let get = |consistency| RequestV1::GetWith {
            key: b"k".to_vec(),
            at: None,
            consistency,
        };
        let bounded = get(ReadConsistencyV1::Bounded {
            max_staleness_ms: 300,
            on_stale: OnStaleV1::Fail,
        });
        // GetWith is variant 11; Bounded is variant 2 of the consistency.
        assert_eq!(
            encode_request(&bounded),
            vec![0, 1, 11, 1, b'k', 0, 2, 0xac, 0x02, 1]
        );
        let redirect = get(ReadConsistencyV1::Bounded {
            max_staleness_ms: 1,
            on_stale: OnStaleV1::Redirect,
        });
        assert_eq!(
            encode_request(&redirect),
            vec![0, 1, 11, 1, b'k', 0, 2, 1, 0]
        );
        let causal = get(ReadConsistencyV1::Causal { token: 5 });
        assert_eq!(encode_request(&causal), vec![0, 1, 11, 1, b'k', 0, 3, 5]);
        let eventual = get(ReadConsistencyV1::Eventual);
        assert_eq!(encode_request(&eventual), vec![0, 1, 11, 1, b'k', 0, 4]);
        for req in [bounded, redirect, causal, eventual] {
            assert_eq!(decode_request(&encode_request(&req)).unwrap(), req);
        }
        // The first two levels keep their v1 bytes.
        assert_eq!(
            encode_request(&get(ReadConsistencyV1::Serializable)),
            vec![0, 1, 11, 1, b'k', 0, 1]
        );
        let range = RequestV1::RangeWith {
            start: b"a".to_vec(),
            end: None,
            limit: 2,
            at: None,
            consistency: ReadConsistencyV1::Eventual,
        };
        assert_eq!(encode_request(&range), vec![0, 1, 14, 1, b'a', 0, 2, 0, 4]);
        assert_eq!(encode_request(&RequestV1::Policies), vec![0, 1, 15]);
        let put = RequestV1::PutAfter {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            token: 300,
        };
        assert_eq!(
            encode_request(&put),
            vec![0, 1, 16, 1, b'k', 1, b'v', 0xac, 0x02]
        );
        let del = RequestV1::DeleteAfter {
            key: b"k".to_vec(),
            token: 5,
        };
        assert_eq!(encode_request(&del), vec![0, 1, 17, 1, b'k', 5]);
        let set = RequestV1::SetPolicy(SetPolicyV1 {
            prefix: Some(b"a/".to_vec()),
            consistency: Some(ConsistencyV1::Eventual),
            home: None,
            replication: Some(ReplicationV1::Sync(1)),
            max_staleness_ms: Some(300),
        });
        assert_eq!(
            encode_request(&set),
            vec![0, 1, 18, 1, 2, b'a', b'/', 1, 2, 0, 1, 1, 1, 1, 0xac, 0x02]
        );
        let rm = RequestV1::RemovePolicy {
            prefix: b"a/".to_vec(),
        };
        assert_eq!(encode_request(&rm), vec![0, 1, 19, 2, b'a', b'/']);
        assert_eq!(encode_request(&RequestV1::Frontiers), vec![0, 1, 20]);
        for req in [set, rm] {
            assert_eq!(decode_request(&encode_request(&req)).unwrap(), req);
        }
        for req in [put, del] {
            assert_eq!(decode_request(&encode_request(&req)).unwrap(), req);
        }
    }

    #[test]
    fn frozen_level_and_wrong_region_responses() {
        let ok = ResponseV1::OkLevel {
            served_at: 1,
            staleness_ms: 2,
            token: 3,
            body: ResponseBodyV1::Value(None),
        };
        assert_eq!(encode_response(&ok), vec![0, 1, 3, 1, 2, 3, 0, 0]);
        let wrong = ResponseV1::WrongRegion {
            home: "eu".into(),
            addr: Some("a".into()),
            message: "m".into(),
        };
        assert_eq!(
            encode_response(&wrong),
            vec![0, 1, 4, 2, b'e', b'u', 1, 1, b'a', 1, b'm']
        );
        for r in [ok, wrong] {
            assert_eq!(decode_response(&encode_response(&r)).unwrap(), r);
        }
        let err = ApiError::wrong_region("m", "eu", Some("a".into()));
        assert_eq!(
            error_response(&err),
            ResponseV1::WrongRegion {
                home: "eu".into(),
                addr: Some("a".into()),
                message: "m".into(),
            }
        );
    }

    #[test]
    fn frozen_policies_response() {
        let body = ResponseBodyV1::Policies(PoliciesV1 {
            local_region: "a".into(),
            regions: vec!["a".into()],
            default: PolicyV1 {
                consistency: ConsistencyV1::Strong,
                home: "a".into(),
                replication: ReplicationV1::Async,
                max_staleness_ms: 5,
            },
            prefixes: vec![PrefixPolicyV1 {
                prefix: b"p/".to_vec(),
                policy: PolicyV1 {
                    consistency: ConsistencyV1::Eventual,
                    home: "a".into(),
                    replication: ReplicationV1::Sync(1),
                    max_staleness_ms: 300,
                },
            }],
        });
        let ok = ResponseV1::Ok { served_at: 1, body };
        assert_eq!(
            encode_response(&ok),
            vec![
                0, 1, 0, 1, 12, // Ok, served_at 1, body variant 12
                1, b'a', 1, 1, b'a', // local_region, regions
                0, 1, b'a', 0, 5, // default: strong, home, async, 5 ms
                1, 2, b'p', b'/', // one prefix
                2, 1, b'a', 1, 1, 0xac, 0x02, // eventual, home, sync-1, 300 ms
            ]
        );
        assert_eq!(decode_response(&encode_response(&ok)).unwrap(), ok);
    }

    #[test]
    fn levels_convert_both_ways() {
        let levels = [
            ReadLevel::Linearizable,
            ReadLevel::Bounded {
                max_staleness_ms: 9,
                on_stale: OnStale::Redirect,
            },
            ReadLevel::Causal {
                token: Timestamp(77),
            },
            ReadLevel::Eventual,
        ];
        for l in levels {
            let v1 = ReadConsistencyV1::from(l);
            assert_eq!(v1.level(), Some(l));
            assert_eq!(v1.answers_with_level(), l != ReadLevel::Linearizable);
        }
        assert_eq!(ReadConsistencyV1::Serializable.level(), None);
        assert!(!ReadConsistencyV1::Serializable.answers_with_level());
    }

    #[test]
    fn unknown_version_is_refused_clearly() {
        let mut bytes = encode_request(&RequestV1::Status);
        bytes[1] = 9;
        let err = decode_request(&bytes).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion(9));
        assert_eq!(ApiError::from(err).code, ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn malformed_and_short_frames_are_refused() {
        assert_eq!(decode_request(&[0]).unwrap_err(), DecodeError::Short(1));
        let err = decode_request(&[0, 1, 200]).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)));
        let mut trailing = encode_request(&RequestV1::Status);
        trailing.push(0);
        assert!(matches!(
            decode_request(&trailing),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// A traced put: the v1 frame of `frozen_put_request`'s kind, then the
    /// trace context trailer. Frames without it decode as before.
    #[test]
    fn frozen_traced_request() {
        let req = RequestV1::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let ctx = TraceContext {
            trace_id: [0x11; 16],
            span_id: [0x22; 8],
            flags: 1,
        };
        let bytes = encode_request_traced(&req, Some(&ctx));
        let mut expected = vec![0, 1, 1, 1, b'k', 1, b'v', 1, 25];
        expected.extend([0x11; 16]);
        expected.extend([0x22; 8]);
        expected.push(1);
        assert_eq!(bytes, expected);
        assert_eq!(decode_request_traced(&bytes), Ok((req.clone(), Some(ctx))));
        assert_eq!(decode_request(&bytes), Ok(req.clone()));
        let plain = encode_request_traced(&req, None);
        assert_eq!(plain, encode_request(&req));
        assert_eq!(decode_request_traced(&plain), Ok((req, None)));
        let mut cut = bytes.clone();
        cut.pop();
        assert!(matches!(
            decode_request_traced(&cut),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn txn_round_trips_through_domain() {
        let txn = Txn {
            compares: vec![Compare {
                key: b"k".to_vec(),
                op: CompareOp::Greater,
                target: CompareTarget::Version(Timestamp(7)),
            }],
            success: vec![Op::Delete { key: b"k".to_vec() }],
            failure: vec![],
        };
        assert_eq!(Txn::from(TxnV1::from(&txn)), txn);
    }
}
