//! Cross-region replication and the consistency levels, as sans-IO cores
//! (style.md 1): every rule is a pure function or a state machine with time
//! passed in, unit-tested without sockets, and driven later by the range
//! leaders' stream tasks over the peer protocol.
//!
//! - [`policy`]: prefix policies (strong / causal / eventual, home region,
//!   async or sync-N replication, default staleness bound) and the table
//!   that gives every key exactly one.
//! - [`read`]: where and at which timestamp a read of each level is served
//!   (leader, local at the frontier, wait for a token, redirect home, refuse),
//!   and how session tokens move.
//! - [`stream`]: one range's stream from an origin region to a destination:
//!   batches of HLC-stamped records with closed timestamps, the bounded and
//!   paced in-flight window on the origin, and the destination cursor that
//!   makes application exactly-once across duplicates, reordering and
//!   restarts.
//! - [`sync`]: when a `sync-N` write is confirmed (N other regions'
//!   acknowledged cursors at or past its version).
//! - [`catch_up`]: what a destination behind the origin's change log does
//!   with a chunk of the origin's state (which versions to merge, which
//!   keys the origin's collected tombstones deleted).
//! - [`frontier`]: a range's frontier in a region (the slowest writer's
//!   closed timestamp) and when an idle leader closes a new timestamp.
//!
//! The IO lives elsewhere: `server::streams` drives [`stream`], the range
//! state machines apply batches through [`stream::Inbound`], and the
//! engine drives [`read`] and waits on [`sync`] (docs/architecture.md,
//! "Cross-region replication"); the control range (`engine::control`)
//! stores the policy table.

pub mod catch_up;
pub mod frontier;
pub mod policy;
pub mod read;
pub mod stream;
pub mod sync;
