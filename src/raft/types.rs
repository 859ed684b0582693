//! Raft type configuration and the replicated command format.
//!
//! The command and reply are a disk format (they sit in the Raft log) and a
//! wire format (they travel in AppendEntries): versioned, postcard-encoded,
//! append-only, pinned by frozen-bytes tests. openraft's own types (entries,
//! votes, log ids) are encoded with postcard too; their layout is openraft's,
//! which is why the openraft version is pinned exactly on every node.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::decide::WriteKind;
use crate::types::{Compare, CompareOp, CompareTarget, Op, Timestamp, Txn};

/// Identifies a range (and its Raft group) cluster-wide.
pub type RangeId = u64;

/// Per origin region, the closed timestamp a range applied from it: every
/// change that region made to the range at or below it is applied.
pub type Cursors = std::collections::BTreeMap<String, u64>;

/// A Raft node id: unique per node in the cluster, never reused.
pub type NodeId = u64;

/// A node as Raft membership records it. Only stable identity and the peer
/// address live here; liveness comes from gossip.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftNode {
    /// Node name (as in `node.id`).
    pub name: String,
    /// QUIC address for peer traffic.
    pub addr: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
}

/// A replicated write, as proposed by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeCommand {
    /// The proposer's HLC when it proposed (the floor of the applied version).
    pub proposed_at: u64,
    /// What to do.
    pub op: CommandV1,
}

/// The operation of a [`RangeCommand`], version 1 (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandV1 {
    /// Put.
    Put {
        /// Key.
        key: Vec<u8>,
        /// Value. (`serde_bytes`: same postcard layout as a `Vec<u8>`, a
        /// length then the bytes, but decoded in one copy, not per byte.)
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Delete.
    Delete {
        /// Key.
        key: Vec<u8>,
    },
    /// Transaction (the log's own type; its layout happens to equal the
    /// client protocol's `TxnV1` of the same era, and is pinned separately).
    Txn(LogTxnV1),
    /// Writes nothing; advances the range's applied timestamp to at least
    /// `proposed_at`, so a snapshot read at that time can be served.
    Barrier,
    /// A batch of another region's changes to this range (cross-region
    /// replication): applied exactly once through the range's cursor for
    /// its origin (`replication::stream::Inbound`).
    Replicate(ReplicateV1),
    /// One chunk of another region's state of this range, sent when this
    /// region's cursor for it is below where its change log is complete
    /// (cross-region catch-up, `replication::catch_up`).
    CatchUp(CatchUpV1),
    /// A lease operation (`crate::coord`): grant, keepalive, expiry and
    /// forgetting at the region's lease range; dropping a lease's keys in
    /// any range.
    Lease(LeaseCommandV1),
    /// Put attached to a lease that the lease range found live at
    /// `checked_at`; refused when the range dropped the lease or the check
    /// is too old (`coord::attach_allowed`).
    PutLeased {
        /// Key.
        key: Vec<u8>,
        /// Value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The lease.
        lease: u64,
        /// When the lease range last found the lease live (HLC).
        checked_at: u64,
    },
    /// A lock operation (`crate::coord::lock`): at the lease range, or a
    /// fence update in a dependent range.
    Lock(LockCommandV1),
    /// A write guarded by a fencing token: applied (`op`: a put, delete or
    /// transaction) only when `token` is the newest granted for lock
    /// `name` as this range knows it. A refusal writes nothing; its reply
    /// has `succeeded = false` and `value` the reason (`fence_refused`).
    Fenced {
        /// The lock.
        name: Vec<u8>,
        /// The fencing token.
        token: u64,
        /// The write.
        op: Box<CommandV1>,
    },
    /// Raises the range's policy floor to `table` (kept if higher): from
    /// this entry on, the range applies only client writes decided under a
    /// policy table at or above that version ([`CommandV1::Policed`]). The
    /// control range's handoff proposes it in every region whose writes to
    /// a prefix must stop before another region takes the prefix over
    /// (`engine::control`, docs/consistency.md P3).
    PolicyFence {
        /// The policy table version of the handoff.
        table: u64,
    },
    /// A client write (a put, delete, transaction, leased put or guarded
    /// write) its node decided under policy table version `table`: applied
    /// only when `table` is at or above the range's policy floor, else
    /// refused with nothing written (`succeeded = false`, `value =`
    /// [`POLICY_OUTDATED`]). An unwrapped client write counts as table 0.
    Policed {
        /// The policy table version the write was decided under.
        table: u64,
        /// The write.
        op: Box<CommandV1>,
    },
}

/// A range reply's `value` when a client write was refused because it was
/// decided under a policy table older than the range's policy floor
/// ([`CommandV1::Policed`]); no other refusal uses it.
pub const POLICY_OUTDATED: u64 = 1_000;

/// A lock operation in the log, version 1 (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommandV1 {
    /// `lease` asks for lock `name` (queued when held and `wait`); the
    /// reply's `value` is the token when `succeeded`.
    Acquire {
        /// The lock.
        name: Vec<u8>,
        /// The asking lease.
        lease: u64,
        /// The value its holder carries (an election's leader value).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Queue behind the holder instead of failing.
        wait: bool,
    },
    /// Ends the grant of `token`.
    Release {
        /// The lock.
        name: Vec<u8>,
        /// The grant's token.
        token: u64,
    },
    /// Takes `lease` off the lock (a waiter leaves; a holder releases).
    Cancel {
        /// The lock.
        name: Vec<u8>,
        /// The lease.
        lease: u64,
    },
    /// Records `range` as a dependent of lock `name` (guarded writes go
    /// there); the reply's `value` is the newest token granted.
    Attach {
        /// The lock.
        name: Vec<u8>,
        /// The dependent range.
        range: u64,
    },
    /// In a dependent range: the newest token of lock `name` is at least
    /// `token`.
    SetFence {
        /// The lock.
        name: Vec<u8>,
        /// The token.
        token: u64,
    },
}

/// A lease operation in the log, version 1 (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseCommandV1 {
    /// Grant a lease of `ttl_ms`; the reply's `value` is its id.
    Grant {
        /// TTL in ms.
        ttl_ms: u64,
    },
    /// Move each live lease's deadline to the apply time plus its TTL.
    KeepAlive {
        /// The leases.
        ids: Vec<u64>,
    },
    /// Expire the leases whose deadline passed at the apply time (or, with
    /// `revoke`, at once).
    Expire {
        /// The leases.
        ids: Vec<u64>,
        /// Expire even before the deadline (an explicit revoke).
        revoke: bool,
    },
    /// Delete this range's keys attached to the leases and mark them
    /// dropped here. The reply's `succeeded` is false when keys remain
    /// (more than `coord::MAX_DROP_KEYS`): propose it again.
    Drop {
        /// The leases.
        ids: Vec<u64>,
    },
    /// Remove the records of expired leases (every range dropped them).
    Forget {
        /// The leases.
        ids: Vec<u64>,
    },
}

/// A chunk of a cross-region catch-up in the log, version 1: the origin's
/// stored versions of the keys in `[from, to)` as of its applied timestamp
/// `at`, read from one frozen view of its store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpV1 {
    /// The region whose state this is.
    pub origin: String,
    /// The origin's applied timestamp when its view was frozen: the view
    /// holds every version at or below it (versions above are left out).
    pub at: u64,
    /// The origin's gc horizon for the range, read after the view was
    /// frozen: the view holds every version above it, and below it only
    /// each key's newest (a key whose newest was a tombstone may be gone).
    pub horizon: u64,
    /// The origin's frontier for the range when the view was frozen: every
    /// region's writes at or below it had been applied there.
    pub origin_frontier: u64,
    /// First key the chunk covers.
    pub from: Vec<u8>,
    /// First key after the chunk (`None`: to the range's end).
    pub to: Option<Vec<u8>>,
    /// Every version of the view in `[from, to)`, at or below `at`.
    pub versions: Vec<CatchUpVersionV1>,
    /// The last chunk: once applied, the destination's cursor for the
    /// origin is `at`.
    pub last: bool,
}

/// One version of a [`CatchUpV1`] chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpVersionV1 {
    /// The key.
    pub key: Vec<u8>,
    /// Its HLC version.
    pub ts: u64,
    /// The value; `None` for a tombstone.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

impl CatchUpV1 {
    /// About how many bytes the chunk's keys and values take.
    pub fn payload_bytes(&self) -> usize {
        self.versions
            .iter()
            .map(|v| v.key.len() + v.value.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

/// A replication batch in the log, version 1: the origin region's changes
/// to the range in `(after, closed]`, and its promise to emit nothing at or
/// below `closed` again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateV1 {
    /// The region the changes were written in.
    pub origin: String,
    /// The cursor the batch continues from.
    pub after: u64,
    /// The origin's closed timestamp.
    pub closed: u64,
    /// The changes, strictly increasing in `ts`, all in `(after, closed]`.
    pub records: Vec<ReplicatedChangeV1>,
}

/// One change of a [`ReplicateV1`] batch: everything the origin wrote at `ts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedChangeV1 {
    /// The origin's apply timestamp (the version written here too).
    pub ts: u64,
    /// The mutations.
    pub ops: Vec<LogOpV1>,
}

impl ReplicateV1 {
    /// About how many bytes the batch's keys and values take.
    pub fn payload_bytes(&self) -> usize {
        self.records
            .iter()
            .flat_map(|r| &r.ops)
            .map(|op| match op {
                LogOpV1::Put { key, value } => key.len() + value.len(),
                LogOpV1::Delete { key } => key.len(),
            })
            .sum()
    }
}

impl From<WriteKind> for CommandV1 {
    fn from(k: WriteKind) -> Self {
        match k {
            WriteKind::Put { key, value } => CommandV1::Put { key, value },
            WriteKind::Delete { key } => CommandV1::Delete { key },
            WriteKind::Txn(t) => CommandV1::Txn(LogTxnV1::from(t)),
        }
    }
}

impl CommandV1 {
    /// The write this command performs; `None` for a barrier.
    pub fn into_write(self) -> Option<WriteKind> {
        match self {
            CommandV1::Put { key, value } => Some(WriteKind::Put { key, value }),
            CommandV1::Delete { key } => Some(WriteKind::Delete { key }),
            CommandV1::Txn(t) => Some(WriteKind::Txn(Txn::from(t))),
            CommandV1::PutLeased { key, value, .. } => Some(WriteKind::Put { key, value }),
            CommandV1::Barrier
            | CommandV1::Replicate(_)
            | CommandV1::CatchUp(_)
            | CommandV1::Lease(_)
            | CommandV1::Lock(_)
            | CommandV1::Fenced { .. }
            | CommandV1::PolicyFence { .. }
            | CommandV1::Policed { .. } => None,
        }
    }
}

impl RangeCommand {
    /// About how many bytes this command occupies in a log entry or an
    /// AppendEntries frame: its keys and values plus a fixed allowance for
    /// framing. Used to cap AppendEntries batches in bytes.
    pub fn approx_bytes(&self) -> usize {
        const OVERHEAD: usize = 32;
        OVERHEAD + self.op.payload_bytes()
    }
}

impl CommandV1 {
    /// About how many bytes of keys, values and operands the operation carries.
    fn payload_bytes(&self) -> usize {
        match self {
            CommandV1::Put { key, value } => key.len() + value.len(),
            CommandV1::Delete { key } => key.len(),
            // Transactions mix keys, values and compare operands: size
            // them exactly (they are small and rare next to puts).
            CommandV1::Txn(t) => postcard::to_allocvec(t).map_or(0, |b| b.len()),
            CommandV1::Barrier => 0,
            CommandV1::Replicate(r) => r.payload_bytes() + 16 * r.records.len(),
            CommandV1::CatchUp(c) => c.payload_bytes() + 16 * c.versions.len(),
            CommandV1::PutLeased { key, value, .. } => key.len() + value.len() + 16,
            CommandV1::Lease(l) => postcard::to_allocvec(l).map_or(0, |b| b.len()),
            CommandV1::Lock(l) => postcard::to_allocvec(l).map_or(0, |b| b.len()),
            CommandV1::Fenced { name, op, .. } => name.len() + 16 + op.payload_bytes(),
            CommandV1::PolicyFence { .. } => 8,
            CommandV1::Policed { op, .. } => 8 + op.payload_bytes(),
        }
    }

    /// A log line's description (sizes, never user bytes).
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandV1::Put { key, value } => write!(f, "put({}B, {}B)", key.len(), value.len()),
            CommandV1::Delete { key } => write!(f, "delete({}B)", key.len()),
            CommandV1::Txn(t) => write!(f, "txn({} compares)", t.compares.len()),
            CommandV1::Barrier => write!(f, "barrier"),
            CommandV1::Replicate(r) => write!(
                f,
                "replicate(from {}, {} changes, closed {})",
                r.origin,
                r.records.len(),
                r.closed
            ),
            CommandV1::CatchUp(c) => write!(
                f,
                "catch-up(from {}, {} versions, at {}{})",
                c.origin,
                c.versions.len(),
                c.at,
                if c.last { ", last" } else { "" }
            ),
            CommandV1::PutLeased {
                key, value, lease, ..
            } => write!(f, "put({}B, {}B, lease {lease})", key.len(), value.len()),
            CommandV1::Lease(l) => write!(f, "lease({l:?})"),
            CommandV1::Lock(_) => write!(f, "lock"),
            CommandV1::Fenced { token, op, .. } => {
                write!(f, "fenced(token {token}, ")?;
                op.describe(f)?;
                write!(f, ")")
            }
            CommandV1::PolicyFence { table } => write!(f, "policy-fence(table {table})"),
            CommandV1::Policed { table, op } => {
                write!(f, "policed(table {table}, ")?;
                op.describe(f)?;
                write!(f, ")")
            }
        }
    }
}

impl fmt::Display for RangeCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys and values are user data: log their sizes, not their bytes.
        self.op.describe(f)
    }
}

/// A transaction in the Raft log, version 1 (append-only): the log's disk
/// format, independent of the client protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTxnV1 {
    /// Guards.
    pub compares: Vec<LogCompareV1>,
    /// Ops when every guard holds.
    pub success: Vec<LogOpV1>,
    /// Ops otherwise.
    pub failure: Vec<LogOpV1>,
}

/// A transaction guard in the log, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCompareV1 {
    /// The key.
    pub key: Vec<u8>,
    /// The relation.
    pub op: LogCompareOpV1,
    /// The operand.
    pub target: LogCompareTargetV1,
}

/// A comparison operator in the log, version 1 (append-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogCompareOpV1 {
    /// ==
    Equal,
    /// !=
    NotEqual,
    /// <
    Less,
    /// >
    Greater,
}

/// A compare operand in the log, version 1 (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogCompareTargetV1 {
    /// The value.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The version (HLC; 0 when absent).
    Version(u64),
    /// Existence.
    Exists(bool),
}

/// A mutation in the log, version 1 (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogOpV1 {
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
}

impl From<Op> for LogOpV1 {
    fn from(op: Op) -> Self {
        match op {
            Op::Put { key, value } => LogOpV1::Put { key, value },
            Op::Delete { key } => LogOpV1::Delete { key },
        }
    }
}

impl From<LogOpV1> for Op {
    fn from(op: LogOpV1) -> Self {
        match op {
            LogOpV1::Put { key, value } => Op::Put { key, value },
            LogOpV1::Delete { key } => Op::Delete { key },
        }
    }
}

impl From<Txn> for LogTxnV1 {
    fn from(t: Txn) -> Self {
        let compares = t
            .compares
            .into_iter()
            .map(|c| LogCompareV1 {
                key: c.key,
                op: match c.op {
                    CompareOp::Equal => LogCompareOpV1::Equal,
                    CompareOp::NotEqual => LogCompareOpV1::NotEqual,
                    CompareOp::Less => LogCompareOpV1::Less,
                    CompareOp::Greater => LogCompareOpV1::Greater,
                },
                target: match c.target {
                    CompareTarget::Value(v) => LogCompareTargetV1::Value(v),
                    CompareTarget::Version(v) => LogCompareTargetV1::Version(v.0),
                    CompareTarget::Exists(b) => LogCompareTargetV1::Exists(b),
                },
            })
            .collect();
        LogTxnV1 {
            compares,
            success: t.success.into_iter().map(LogOpV1::from).collect(),
            failure: t.failure.into_iter().map(LogOpV1::from).collect(),
        }
    }
}

impl From<LogTxnV1> for Txn {
    fn from(t: LogTxnV1) -> Self {
        let compares = t
            .compares
            .into_iter()
            .map(|c| Compare {
                key: c.key,
                op: match c.op {
                    LogCompareOpV1::Equal => CompareOp::Equal,
                    LogCompareOpV1::NotEqual => CompareOp::NotEqual,
                    LogCompareOpV1::Less => CompareOp::Less,
                    LogCompareOpV1::Greater => CompareOp::Greater,
                },
                target: match c.target {
                    LogCompareTargetV1::Value(v) => CompareTarget::Value(v),
                    LogCompareTargetV1::Version(v) => CompareTarget::Version(Timestamp(v)),
                    LogCompareTargetV1::Exists(b) => CompareTarget::Exists(b),
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

/// What applying a command produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeReply {
    /// Put: true; delete: whether the key existed; txn: whether the guards held.
    pub succeeded: bool,
    /// The HLC version the command was applied at.
    pub version: u64,
    /// A command's own result: a granted lease's id.
    pub value: u64,
}

openraft::declare_raft_types!(
    /// Raft types of a range group.
    pub RangeTypes:
        D = RangeCommand,
        R = RangeReply,
        NodeId = NodeId,
        Node = RaftNode,
);

/// A range: a contiguous key span `[start, end)` with its own Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDescriptor {
    /// Range id.
    pub id: RangeId,
    /// First key (inclusive).
    pub start: Vec<u8>,
    /// End key (exclusive); `None` = end of the keyspace.
    pub end: Option<Vec<u8>>,
}

impl RangeDescriptor {
    /// Whether `key` belongs to this range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_command_bytes() {
        let cmd = RangeCommand {
            proposed_at: 300,
            op: CommandV1::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        };
        let bytes = postcard::to_allocvec(&cmd).unwrap();
        assert_eq!(bytes, vec![0xac, 0x02, 0, 1, b'k', 1, b'v']);
        let back: RangeCommand = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, cmd);
        // The reply never leaves the node that applied the entry (openraft
        // hands it to the proposer in memory); pinned all the same.
        let reply = RangeReply {
            succeeded: true,
            version: 5,
            value: 7,
        };
        assert_eq!(postcard::to_allocvec(&reply).unwrap(), vec![1, 5, 7]);
    }

    /// The policy handoff's commands in the log, pinned.
    #[test]
    fn frozen_policy_command_bytes() {
        let fence = RangeCommand {
            proposed_at: 2,
            op: CommandV1::PolicyFence { table: 300 },
        };
        let bytes = postcard::to_allocvec(&fence).unwrap();
        assert_eq!(bytes, vec![2, 10, 0xac, 0x02]);
        assert_eq!(postcard::from_bytes::<RangeCommand>(&bytes).unwrap(), fence);
        let policed = RangeCommand {
            proposed_at: 2,
            op: CommandV1::Policed {
                table: 7,
                op: Box::new(CommandV1::Delete { key: b"k".to_vec() }),
            },
        };
        let bytes = postcard::to_allocvec(&policed).unwrap();
        assert_eq!(bytes, vec![2, 11, 7, 1, 1, b'k']);
        assert_eq!(
            postcard::from_bytes::<RangeCommand>(&bytes).unwrap(),
            policed
        );
    }

    /// Lease commands in the log, pinned.
    #[test]
    fn frozen_lease_command_bytes() {
        let cases = [
            (
                CommandV1::Lease(LeaseCommandV1::Grant { ttl_ms: 300 }),
                vec![0x0a, 6, 0, 0xac, 0x02],
            ),
            (
                CommandV1::Lease(LeaseCommandV1::KeepAlive { ids: vec![1, 2] }),
                vec![0x0a, 6, 1, 2, 1, 2],
            ),
            (
                CommandV1::Lease(LeaseCommandV1::Expire {
                    ids: vec![3],
                    revoke: true,
                }),
                vec![0x0a, 6, 2, 1, 3, 1],
            ),
            (
                CommandV1::Lease(LeaseCommandV1::Drop { ids: vec![4] }),
                vec![0x0a, 6, 3, 1, 4],
            ),
            (
                CommandV1::Lease(LeaseCommandV1::Forget { ids: vec![5] }),
                vec![0x0a, 6, 4, 1, 5],
            ),
            (
                CommandV1::PutLeased {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    lease: 9,
                    checked_at: 8,
                },
                vec![0x0a, 7, 1, b'k', 1, b'v', 9, 8],
            ),
        ];
        for (op, bytes) in cases {
            let cmd = RangeCommand {
                proposed_at: 10,
                op,
            };
            assert_eq!(postcard::to_allocvec(&cmd).unwrap(), bytes, "{cmd}");
            let back: RangeCommand = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, cmd);
        }
    }

    /// The log's transaction layout, pinned: a log written by an earlier
    /// build (when the log reused the client's `TxnV1`) must read back.
    #[test]
    fn frozen_txn_command_bytes() {
        let txn = Txn {
            compares: vec![Compare {
                key: b"k".to_vec(),
                op: CompareOp::Greater,
                target: CompareTarget::Version(Timestamp(5)),
            }],
            success: vec![Op::Put {
                key: b"a".to_vec(),
                value: b"b".to_vec(),
            }],
            failure: vec![Op::Delete { key: b"c".to_vec() }],
        };
        let cmd = RangeCommand {
            proposed_at: 1,
            op: CommandV1::Txn(LogTxnV1::from(txn.clone())),
        };
        let bytes = postcard::to_allocvec(&cmd).unwrap();
        assert_eq!(
            bytes,
            vec![1, 2, 1, 1, b'k', 3, 1, 5, 1, 0, 1, b'a', 1, b'b', 1, 1, 1, b'c']
        );
        // The same bytes as the client protocol's TxnV1 produced before.
        let client = crate::wire::TxnV1::from(&txn);
        let mut expected = vec![1, 2];
        expected.extend(postcard::to_allocvec(&client).unwrap());
        assert_eq!(bytes, expected);
        let back: RangeCommand = postcard::from_bytes(&bytes).unwrap();
        match back.op {
            CommandV1::Txn(t) => assert_eq!(Txn::from(t), txn),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frozen_replicate_command_bytes() {
        let cmd = RangeCommand {
            proposed_at: 1,
            op: CommandV1::Replicate(ReplicateV1 {
                origin: "eu".into(),
                after: 2,
                closed: 9,
                records: vec![ReplicatedChangeV1 {
                    ts: 5,
                    ops: vec![
                        LogOpV1::Put {
                            key: b"k".to_vec(),
                            value: b"v".to_vec(),
                        },
                        LogOpV1::Delete { key: b"d".to_vec() },
                    ],
                }],
            }),
        };
        let bytes = postcard::to_allocvec(&cmd).unwrap();
        assert_eq!(
            bytes,
            vec![1, 4, 2, b'e', b'u', 2, 9, 1, 5, 2, 0, 1, b'k', 1, b'v', 1, 1, b'd']
        );
        let back: RangeCommand = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn frozen_catch_up_command_bytes() {
        let cmd = RangeCommand {
            proposed_at: 1,
            op: CommandV1::CatchUp(CatchUpV1 {
                origin: "eu".into(),
                at: 9,
                horizon: 3,
                origin_frontier: 8,
                from: b"a".to_vec(),
                to: Some(b"c".to_vec()),
                versions: vec![
                    CatchUpVersionV1 {
                        key: b"a".to_vec(),
                        ts: 5,
                        value: Some(b"v".to_vec()),
                    },
                    CatchUpVersionV1 {
                        key: b"b".to_vec(),
                        ts: 4,
                        value: None,
                    },
                ],
                last: true,
            }),
        };
        let bytes = postcard::to_allocvec(&cmd).unwrap();
        assert_eq!(
            bytes,
            vec![
                1, 5, 2, b'e', b'u', 9, 3, 8, 1, b'a', 1, 1, b'c', 2, 1, b'a', 5, 1, 1, b'v', 1,
                b'b', 4, 0, 1
            ]
        );
        let back: RangeCommand = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn ranges_contain_their_span() {
        let r = RangeDescriptor {
            id: 1,
            start: b"b".to_vec(),
            end: Some(b"d".to_vec()),
        };
        assert!(r.contains(b"b") && r.contains(b"c\xff") && !r.contains(b"d") && !r.contains(b"a"));
        let rest = RangeDescriptor {
            id: 2,
            start: b"d".to_vec(),
            end: None,
        };
        assert!(rest.contains(b"zzz"));
    }
}
