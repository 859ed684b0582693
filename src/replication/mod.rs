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
//!   batches of HLC-stamped records with closed timestamps, the bounded
//!   in-flight window on the origin, and the destination cursor that makes
//!   application exactly-once across duplicates, reordering and restarts.
//! - [`frontier`]: a range's frontier in a region (the slowest writer's
//!   closed timestamp) and when an idle leader closes a new timestamp.
//!
//! Not wired yet: the stream tasks, the control range that stores the
//! policy table, and the per-call levels in the SDK, CLI and gateway are
//! the next steps of this work (docs/architecture.md, "Cross-region
//! replication"). Nothing here is reachable from a request today.

pub mod frontier;
pub mod policy;
pub mod read;
pub mod stream;
