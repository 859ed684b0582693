//! Domain types shared by every layer: timestamps, key-values, operations.
//!
//! These are *not* wire types (see [`crate::wire`]) and *not* disk types (see
//! [`crate::storage`]); each boundary converts explicitly so that a change here
//! never silently changes bytes on the network or on disk.

use std::fmt;

/// A hybrid logical clock timestamp.
///
/// The packing is hlc-gen's: the upper 42 bits are milliseconds since hlc-gen's
/// custom epoch (2024-01-01T00:00:00Z) and the lower 22 bits are the logical
/// counter. The packing is monotone: `a < b` as integers iff `a` happened
/// before `b` in HLC order, so timestamps compare and sort as plain `u64`s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

/// Number of low bits that hold the logical counter (hlc-gen's layout).
pub const LOGICAL_BITS: u32 = 22;

/// hlc-gen's custom epoch in Unix milliseconds (2024-01-01T00:00:00Z).
pub const HLC_EPOCH_UNIX_MS: i64 = 1_704_067_200_000;

impl Timestamp {
    /// The smallest timestamp; no write is ever stamped with it.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest timestamp; reading at it means "latest".
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// Physical part in Unix milliseconds.
    pub fn physical_unix_ms(self) -> i64 {
        // Lossless: 42 bits always fit in i64.
        HLC_EPOCH_UNIX_MS + (self.0 >> LOGICAL_BITS) as i64
    }

    /// Logical counter part.
    pub fn logical(self) -> u64 {
        self.0 & ((1 << LOGICAL_BITS) - 1)
    }

    /// Builds a timestamp from Unix milliseconds and a logical counter.
    /// Returns `None` when the time is before hlc-gen's epoch or does not fit.
    pub fn from_parts(physical_unix_ms: i64, logical: u64) -> Option<Timestamp> {
        let rel = physical_unix_ms.checked_sub(HLC_EPOCH_UNIX_MS)?;
        let rel = u64::try_from(rel).ok()?;
        if rel >= (1 << (64 - LOGICAL_BITS)) || logical >= (1 << LOGICAL_BITS) {
            return None;
        }
        Some(Timestamp((rel << LOGICAL_BITS) | logical))
    }

    /// The timestamp immediately before this one (saturating at zero).
    pub fn prev(self) -> Timestamp {
        Timestamp(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_unix_ms(), self.logical())
    }
}

/// A live key-value pair as seen at some snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// HLC timestamp of the write that produced this value (the "version").
    pub version: Timestamp,
}

/// One entry of a key's version history, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionEntry {
    /// HLC timestamp of the write.
    pub version: Timestamp,
    /// The value written, or `None` for a delete (tombstone).
    pub value: Option<Vec<u8>>,
}

/// A single mutation inside a write or a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete `key` (writes a tombstone; history keeps older versions).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// The key this operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// How a compare relates the stored state to the operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// Stored == operand.
    Equal,
    /// Stored != operand.
    NotEqual,
    /// Stored < operand.
    Less,
    /// Stored > operand.
    Greater,
}

/// What a compare looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The current value. A missing key never satisfies a value compare.
    Value(Vec<u8>),
    /// The current version (HLC of the last write); a missing key has
    /// version [`Timestamp::ZERO`], so `Version(Equal, ZERO)` means "absent".
    Version(Timestamp),
    /// Whether the key exists (only `Equal` / `NotEqual` are meaningful).
    Exists(bool),
}

/// One guard of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: Vec<u8>,
    /// The relation.
    pub op: CompareOp,
    /// The operand.
    pub target: CompareTarget,
}

/// An atomic compare-then-else transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// All must hold for `success` to run; otherwise `failure` runs.
    pub compares: Vec<Compare>,
    /// Operations applied when every compare holds.
    pub success: Vec<Op>,
    /// Operations applied when any compare fails.
    pub failure: Vec<Op>,
}

/// How fresh a read must be (chosen per call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Sees every write acknowledged before the read began: served by the
    /// range's leader after it confirms its leadership.
    #[default]
    Linearizable,
    /// Served by whichever replica receives it, from what that replica has
    /// applied: consistent (a snapshot of the range), possibly stale; the
    /// reply's `served_at` says how stale.
    Serializable,
}

/// Identity of this node, shown by status and the gateway (shared by the
/// server and the gateway, so it lives below both).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Node name.
    pub node_id: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// The QUIC address others dial (`server.advertise_addr`, or the bound
    /// address when that is empty).
    pub quic_addr: std::net::SocketAddr,
    /// The bound QUIC address (where packets arrive and leave from).
    pub listen_addr: std::net::SocketAddr,
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when there is none (empty prefix or all 0xFF bytes): the end of
/// a prefix scan, and of a prefix policy's span.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
