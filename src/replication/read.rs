//! Where and at which timestamp a read of a given level is served
//! (../shared/design.md, "Reads"): a pure decision from the key's policy,
//! the region the read arrived in, the range's local frontier and the
//! clock, so every rule is unit-tested without a cluster.
//!
//! Levels a call may ask for, by prefix consistency ("any level at or below
//! the prefix's"):
//!
//! | prefix   | linearizable | causal | bounded | eventual |
//! |----------|--------------|--------|---------|----------|
//! | strong   | yes          | yes    | yes     | yes      |
//! | causal   | no           | yes    | yes     | yes      |
//! | eventual | no           | no     | yes     | yes      |
//!
//! A causal or eventual prefix accepts writes in every region, so no single
//! leader can order them all: a linearizable read of one is refused, not
//! silently weakened. An eventual prefix's writes are not stamped above the
//! writer's token, so a causal read there would promise more than its
//! writes keep.

use super::policy::{Consistency, Policy};
use crate::types::Timestamp;

/// The level a call asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadLevel {
    /// At the home region's leader.
    Linearizable,
    /// Locally, if the local frontier is at most this many ms behind the
    /// clock; otherwise as [`OnStale`] says.
    Bounded {
        /// Staleness bound, ms.
        max_staleness_ms: u64,
        /// What to do when the local frontier is older.
        on_stale: OnStale,
    },
    /// Locally, once the local frontier has reached the session token.
    Causal {
        /// The caller's session token (an HLC timestamp).
        token: Timestamp,
    },
    /// Locally, at whatever this region has applied.
    Eventual,
}

/// What a bounded read does when the local frontier is too old.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStale {
    /// Send the caller to the home region.
    Redirect,
    /// Fail with a clear error saying how stale the region is.
    Fail,
}

/// What the node knows when it decides.
#[derive(Clone, Copy, Debug)]
pub struct ReadInput<'a> {
    /// The key's policy.
    pub policy: &'a Policy,
    /// The region this node is in.
    pub local_region: &'a str,
    /// The range's frontier in this region: every change at or below it,
    /// from every region that writes the range, is applied here.
    pub frontier: Timestamp,
    /// This replica's applied timestamp of the range: its latest state,
    /// this region's writes and whatever other regions' changes arrived
    /// (at or above `frontier`).
    pub applied: Timestamp,
    /// The node's clock now.
    pub now: Timestamp,
    /// Whether a causal read's wait deadline has passed.
    pub wait_expired: bool,
    /// Whether this node's region is the cluster's only region (then it
    /// has every write of every prefix).
    pub only_region: bool,
}

/// The decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadDecision {
    /// Serve as the range leader's linearizable read (ReadIndex or lease).
    Leader,
    /// Serve from this region's replica at `at`, reporting `staleness_ms`.
    Local {
        /// Snapshot timestamp.
        at: Timestamp,
        /// How far `at` is behind the clock, ms.
        staleness_ms: u64,
    },
    /// Wait until the local frontier reaches this timestamp, then decide again.
    WaitFor(Timestamp),
    /// Send the caller to the home region.
    Redirect,
    /// The local frontier is too old for the bound and the call asked to fail.
    TooStale {
        /// How far the frontier is behind the clock, ms.
        staleness_ms: u64,
    },
    /// The prefix does not allow this level.
    NotAllowed,
    /// A causal read whose wait expired in a region that cannot serve it
    /// elsewhere: this region has not applied everything up to the token.
    Behind {
        /// The session token.
        token: Timestamp,
        /// Where this region's frontier is.
        frontier: Timestamp,
    },
}

/// Whether `level` is at or below what a prefix of `consistency` allows.
pub fn allowed(consistency: Consistency, level: &ReadLevel) -> bool {
    match level {
        ReadLevel::Bounded { .. } | ReadLevel::Eventual => true,
        ReadLevel::Causal { .. } => consistency >= Consistency::Causal,
        ReadLevel::Linearizable => consistency == Consistency::Strong,
    }
}

/// How far `older` is behind `newer`, in whole milliseconds (0 if ahead).
pub fn staleness_ms(newer: Timestamp, older: Timestamp) -> u64 {
    let d = newer.physical_unix_ms() - older.physical_unix_ms();
    u64::try_from(d).unwrap_or(0)
}

/// Decides how to serve a read of `level`.
pub fn decide(input: &ReadInput<'_>, level: &ReadLevel) -> ReadDecision {
    if !allowed(input.policy.consistency, level) {
        return ReadDecision::NotAllowed;
    }
    let at_home = input.policy.home == input.local_region;
    let lag = staleness_ms(input.now, input.frontier);
    let local = ReadDecision::Local {
        at: input.frontier,
        staleness_ms: lag,
    };
    match *level {
        ReadLevel::Linearizable if at_home => ReadDecision::Leader,
        ReadLevel::Linearizable => ReadDecision::Redirect,
        // Eventual: the latest local state, not the consistent snapshot at
        // the frontier (a region cut off from another still reads its own
        // latest writes); the staleness reported is the frontier's.
        ReadLevel::Eventual => ReadDecision::Local {
            at: input.applied.max(input.frontier),
            staleness_ms: lag,
        },
        ReadLevel::Bounded {
            max_staleness_ms,
            on_stale,
        } => {
            if lag <= max_staleness_ms {
                local
            } else if at_home
                && (input.policy.consistency == Consistency::Strong || input.only_region)
            {
                // Only the home region writes a strong prefix (and a lone
                // region writes everything): its leader's linearizable read
                // is as fresh as any read can be, whatever the bound, and
                // never leaves the region.
                ReadDecision::Leader
            } else {
                match on_stale {
                    OnStale::Redirect if !at_home => ReadDecision::Redirect,
                    // At the home of a prefix other regions write too, no
                    // node has their writes past the frontier: nowhere is
                    // fresher.
                    OnStale::Redirect | OnStale::Fail => {
                        ReadDecision::TooStale { staleness_ms: lag }
                    }
                }
            }
        }
        ReadLevel::Causal { token } => {
            if input.frontier >= token {
                local
            } else if !input.wait_expired {
                ReadDecision::WaitFor(token)
            } else if at_home
                && (input.policy.consistency == Consistency::Strong || input.only_region)
            {
                // Only the home region writes a strong prefix (and a lone
                // region writes everything): its leader has every write the
                // token can name.
                ReadDecision::Leader
            } else if at_home {
                // A causal prefix is written in every region: the token may
                // name a write the home region has not received either, so
                // no replica here can promise to show it yet.
                ReadDecision::Behind {
                    token,
                    frontier: input.frontier,
                }
            } else {
                ReadDecision::Redirect
            }
        }
    }
}

/// The session token a reply carries: never below the one the call brought,
/// so a client's token only moves forward (monotonic reads, read-your-writes).
pub fn next_token(brought: Option<Timestamp>, served_at: Timestamp) -> Timestamp {
    brought.map_or(served_at, |t| t.max(served_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::policy::Replication;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_parts(1_790_000_000_000 + ms, 0).unwrap()
    }

    fn policy(c: Consistency) -> Policy {
        Policy {
            consistency: c,
            home: "us-east".into(),
            replication: Replication::Async,
            max_staleness_ms: 5_000,
        }
    }

    fn input<'a>(p: &'a Policy, region: &'a str, frontier: i64, now: i64) -> ReadInput<'a> {
        ReadInput {
            policy: p,
            local_region: region,
            frontier: ts(frontier),
            applied: ts(frontier),
            now: ts(now),
            wait_expired: false,
            only_region: false,
        }
    }

    const BOUNDED_1S: ReadLevel = ReadLevel::Bounded {
        max_staleness_ms: 1_000,
        on_stale: OnStale::Redirect,
    };

    #[test]
    fn levels_above_the_prefix_are_refused() {
        let causal = policy(Consistency::Causal);
        let eventual = policy(Consistency::Eventual);
        let i = input(&causal, "us-east", 0, 10);
        assert_eq!(
            decide(&i, &ReadLevel::Linearizable),
            ReadDecision::NotAllowed
        );
        let i = input(&eventual, "eu-west", 0, 10);
        let token = ReadLevel::Causal { token: ts(0) };
        assert_eq!(decide(&i, &token), ReadDecision::NotAllowed);
        assert!(matches!(
            decide(&i, &ReadLevel::Eventual),
            ReadDecision::Local { .. }
        ));
        assert!(matches!(
            decide(&i, &BOUNDED_1S),
            ReadDecision::Local { .. }
        ));
    }

    #[test]
    fn linearizable_reads_go_to_the_home_leader() {
        let p = policy(Consistency::Strong);
        assert_eq!(
            decide(&input(&p, "us-east", 0, 0), &ReadLevel::Linearizable),
            ReadDecision::Leader
        );
        assert_eq!(
            decide(&input(&p, "ap-south", 0, 0), &ReadLevel::Linearizable),
            ReadDecision::Redirect
        );
    }

    #[test]
    fn bounded_reads_are_local_only_when_fresh_enough() {
        let p = policy(Consistency::Strong);
        let fresh = input(&p, "eu-west", 9_500, 10_000);
        assert_eq!(
            decide(&fresh, &BOUNDED_1S),
            ReadDecision::Local {
                at: ts(9_500),
                staleness_ms: 500
            }
        );
        let stale = input(&p, "eu-west", 8_000, 10_000);
        assert_eq!(decide(&stale, &BOUNDED_1S), ReadDecision::Redirect);
        let fail = ReadLevel::Bounded {
            max_staleness_ms: 1_000,
            on_stale: OnStale::Fail,
        };
        assert_eq!(
            decide(&stale, &fail),
            ReadDecision::TooStale {
                staleness_ms: 2_000
            }
        );
        let at_home = input(&p, "us-east", 8_000, 10_000);
        assert_eq!(
            decide(&at_home, &BOUNDED_1S),
            ReadDecision::Leader,
            "only the home region writes a strong prefix: its leader is fresher than any bound"
        );
        assert_eq!(decide(&at_home, &fail), ReadDecision::Leader);
        // A prefix every region writes: at its home no node has the other
        // regions' writes past the frontier.
        let causal = policy(Consistency::Causal);
        let causal_home = input(&causal, "us-east", 8_000, 10_000);
        assert_eq!(
            decide(&causal_home, &BOUNDED_1S),
            ReadDecision::TooStale {
                staleness_ms: 2_000
            },
            "no fresher region to redirect to"
        );
        // A lone region writes everything: its leader serves any prefix.
        let lone = ReadInput {
            only_region: true,
            ..causal_home
        };
        assert_eq!(decide(&lone, &BOUNDED_1S), ReadDecision::Leader);
    }

    #[test]
    fn causal_reads_wait_for_the_token_then_redirect() {
        let p = policy(Consistency::Causal);
        let level = ReadLevel::Causal { token: ts(100) };
        let behind = input(&p, "eu-west", 50, 200);
        assert_eq!(decide(&behind, &level), ReadDecision::WaitFor(ts(100)));
        let expired = ReadInput {
            wait_expired: true,
            ..behind
        };
        assert_eq!(decide(&expired, &level), ReadDecision::Redirect);
        let home_expired = ReadInput {
            local_region: "us-east",
            ..expired
        };
        assert_eq!(
            decide(&home_expired, &level),
            ReadDecision::Behind {
                token: ts(100),
                frontier: ts(50)
            },
            "a causal prefix is written everywhere: home may lack the token's write too"
        );
        let strong = policy(Consistency::Strong);
        let strong_home_expired = ReadInput {
            policy: &strong,
            ..home_expired
        };
        assert_eq!(
            decide(&strong_home_expired, &level),
            ReadDecision::Leader,
            "only home writes a strong prefix: its leader has the token's write"
        );
        let alone = ReadInput {
            only_region: true,
            ..home_expired
        };
        assert_eq!(
            decide(&alone, &level),
            ReadDecision::Leader,
            "a lone region has every write"
        );
        let caught_up = input(&p, "eu-west", 150, 200);
        assert_eq!(
            decide(&caught_up, &level),
            ReadDecision::Local {
                at: ts(150),
                staleness_ms: 50
            },
            "served at the frontier, which is at or above the token"
        );
    }

    #[test]
    fn tokens_only_move_forward() {
        assert_eq!(next_token(None, ts(5)), ts(5));
        assert_eq!(next_token(Some(ts(9)), ts(5)), ts(9));
        assert_eq!(next_token(Some(ts(3)), ts(5)), ts(5));
        assert_eq!(
            staleness_ms(ts(10), ts(20)),
            0,
            "a frontier ahead is not stale"
        );
    }
}
