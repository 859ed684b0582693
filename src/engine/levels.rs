//! Per-call read levels and the home-region rule for writes
//! (../shared/design.md, "Consistency, per key prefix and per call";
//! docs/consistency.md, "Read levels").
//!
//! The rules are not here: [`crate::replication::read::decide`] says where
//! and at which timestamp a read of a level is served. This module *drives*
//! it: it gathers the decision's inputs (the key's policy, this node's
//! region, the range's frontier on this replica, the clock), runs it, waits
//! (bounded by [`CAUSAL_WAIT`]) when it says `WaitFor`, and turns every
//! other answer into a read or a user-facing error with a stable code.
//!
//! The driving loop, [`resolve`], takes the frontier and the clock through
//! the small [`LevelEnv`] trait so every decision path is unit-tested
//! without a cluster (tests below).

use std::time::Duration;

use crate::error_code::{ApiError, ErrorCode};
use crate::metric_handles::Handles;
use crate::replication::policy::{Consistency, Policy, MAX_STALENESS_MS};
use crate::replication::read::{self, OnStale, ReadDecision, ReadInput, ReadLevel};
use crate::types::Timestamp;

/// Longest a causal read waits for this region's frontier to reach its
/// session token before it is redirected home (or served by the home
/// leader, when this is the home region). Every wait is bounded by it.
pub const CAUSAL_WAIT: Duration = Duration::from_secs(2);

/// How often a waiting causal read looks at the frontier again. The
/// frontier is an atomic the state machine raises on apply; there is no
/// notification to await, and 5 ms keeps a wait's extra latency small
/// against a cross-region round trip while costing one atomic load.
pub const FRONTIER_POLL: Duration = Duration::from_millis(5);

/// Metric: level reads by level and outcome (`leader`, `local`,
/// `redirect`, `too_stale`, `not_allowed`).
pub const METRIC_LEVEL_READS: &str = "meridian_level_reads_total";

/// [`METRIC_LEVEL_READS`] by level and outcome.
static LEVEL_READS: std::sync::LazyLock<Handles<metrics::Counter, 2>> = std::sync::LazyLock::new(
    || {
        Handles::new(
            |[level, outcome]| metrics::counter!(METRIC_LEVEL_READS, "level" => *level, "outcome" => *outcome),
        )
    },
);
/// Metric: time causal reads spent waiting for the frontier, seconds.
pub const METRIC_CAUSAL_WAIT: &str = "meridian_causal_wait_seconds";

/// A read served at a level: the result, the snapshot it was read at, how
/// stale that snapshot was and the session token to bring next time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelRead<T> {
    /// The result.
    pub value: T,
    /// HLC timestamp of the snapshot.
    pub served_at: Timestamp,
    /// How far `served_at` was behind this node's clock, ms (0 when served
    /// by the home leader: it has every acknowledged write).
    pub staleness_ms: u64,
    /// The new session token: the highest of the brought token and
    /// `served_at` ([`read::next_token`]).
    pub token: Timestamp,
}

/// Where a read is served, once [`resolve`] has decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// At this node as the range leader's linearizable read.
    Leader,
    /// From this replica's snapshot at `at`.
    Local {
        /// Snapshot timestamp (the range's frontier here).
        at: Timestamp,
        /// How far `at` is behind the clock, ms.
        staleness_ms: u64,
    },
}

/// What [`resolve`] reads from the node: the range's frontier on this
/// replica and the clock. The engine implements it over its range groups
/// and its HLC; tests implement it over plain values.
pub trait LevelEnv {
    /// The frontier of the key's range on this replica.
    fn frontier(&self) -> Result<Timestamp, ApiError>;
    /// The applied timestamp of the key's range on this replica.
    fn applied(&self) -> Result<Timestamp, ApiError>;
    /// The clock now.
    fn now(&self) -> Result<Timestamp, ApiError>;
}

/// The key's policy as [`resolve`] needs it.
#[derive(Clone, Copy, Debug)]
pub struct KeyPolicy<'a> {
    /// The prefix the policy is set on (`None`: the default policy).
    pub prefix: Option<&'a [u8]>,
    /// The policy.
    pub policy: &'a Policy,
    /// This node's region.
    pub local_region: &'a str,
    /// Whether this node's region is the cluster's only region.
    pub only_region: bool,
}

impl KeyPolicy<'_> {
    fn name(&self) -> String {
        match self.prefix {
            Some(p) => format!("prefix {:?}", String::from_utf8_lossy(p)),
            None => "the default policy".to_string(),
        }
    }
}

/// The level's name as the CLI, the gateway and docs spell it.
pub fn level_name(level: &ReadLevel) -> &'static str {
    match level {
        ReadLevel::Linearizable => "linearizable",
        ReadLevel::Bounded { .. } => "bounded",
        ReadLevel::Causal { .. } => "causal",
        ReadLevel::Eventual => "eventual",
    }
}

/// The levels a prefix of `consistency` allows, by name.
pub fn allowed_levels(consistency: Consistency) -> Vec<&'static str> {
    let every = [
        ReadLevel::Linearizable,
        ReadLevel::Causal {
            token: Timestamp::ZERO,
        },
        ReadLevel::Bounded {
            max_staleness_ms: 0,
            on_stale: OnStale::Fail,
        },
        ReadLevel::Eventual,
    ];
    every
        .iter()
        .filter(|l| read::allowed(consistency, l))
        .map(level_name)
        .collect()
}

/// Refuses a level whose arguments are out of range, before anything is
/// decided: a staleness bound over [`MAX_STALENESS_MS`].
pub fn check_level(level: &ReadLevel) -> Result<(), ApiError> {
    if let ReadLevel::Bounded {
        max_staleness_ms, ..
    } = level
    {
        if *max_staleness_ms > MAX_STALENESS_MS {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "max_staleness_ms {max_staleness_ms} is over the limit of {MAX_STALENESS_MS} ms"
                ),
            ));
        }
    }
    Ok(())
}

/// Decides how to serve a read of `level` under `key`'s policy, waiting at
/// most `wait` (poll every [`FRONTIER_POLL`]) while a causal read's token
/// is above the frontier. Returns where to serve it, or the error the
/// decision means: `WrongRegion` (redirect home), `TooStale`, or
/// `LevelNotAllowed`.
pub async fn resolve(
    env: &impl LevelEnv,
    key: KeyPolicy<'_>,
    level: &ReadLevel,
    wait: Duration,
) -> Result<Serve, ApiError> {
    let started = tokio::time::Instant::now();
    let deadline = started + wait;
    // A linearizable read is decided by the policy and the region alone:
    // it reads no replica state and ticks no clock (every strong read
    // passes here).
    let needs_state = !matches!(level, ReadLevel::Linearizable);
    loop {
        let (frontier, applied, now) = if needs_state {
            (env.frontier()?, env.applied()?, env.now()?)
        } else {
            (Timestamp::ZERO, Timestamp::ZERO, Timestamp::ZERO)
        };
        let input = ReadInput {
            policy: key.policy,
            local_region: key.local_region,
            frontier,
            applied,
            now,
            wait_expired: tokio::time::Instant::now() >= deadline,
            only_region: key.only_region,
        };
        let decision = read::decide(&input, level);
        if let ReadDecision::WaitFor(_) = decision {
            let next = (tokio::time::Instant::now() + FRONTIER_POLL).min(deadline);
            tokio::time::sleep_until(next).await;
            continue;
        }
        if let ReadLevel::Causal { .. } = level {
            metrics::histogram!(METRIC_CAUSAL_WAIT).record(started.elapsed().as_secs_f64());
        }
        let outcome = outcome(decision, &input, key, level);
        let label = match &outcome {
            Ok(Serve::Leader) => "leader",
            Ok(Serve::Local { .. }) => "local",
            Err(e) if e.code == ErrorCode::WrongRegion => "redirect",
            Err(e) if e.code == ErrorCode::TooStale => "too_stale",
            Err(_) => "not_allowed",
        };
        LEVEL_READS.get([level_name(level), label]).increment(1);
        return outcome;
    }
}

/// The serve target or error of a final (non-waiting) decision.
fn outcome(
    decision: ReadDecision,
    input: &ReadInput<'_>,
    key: KeyPolicy<'_>,
    level: &ReadLevel,
) -> Result<Serve, ApiError> {
    let lag = read::staleness_ms(input.now, input.frontier);
    match decision {
        ReadDecision::Leader => Ok(Serve::Leader),
        ReadDecision::Local { at, staleness_ms } => Ok(Serve::Local { at, staleness_ms }),
        ReadDecision::Redirect => {
            let why = match level {
                ReadLevel::Linearizable => "a linearizable read is served by the home region's leader".to_string(),
                ReadLevel::Bounded { max_staleness_ms, .. } => format!(
                    "this region's frontier is {lag} ms behind the clock, over the bound of {max_staleness_ms} ms"
                ),
                ReadLevel::Causal { token } => format!(
                    "this region's frontier {} did not reach the session token {token} within {} ms",
                    input.frontier,
                    CAUSAL_WAIT.as_millis()
                ),
                ReadLevel::Eventual => "the read needs the home region".to_string(),
            };
            Err(wrong_region(key, &why))
        }
        ReadDecision::TooStale { staleness_ms } => {
            let bound = match level {
                ReadLevel::Bounded {
                    max_staleness_ms, ..
                } => *max_staleness_ms,
                _ => 0,
            };
            Err(ApiError::new(
                ErrorCode::TooStale,
                format!(
                    "{}: this region's frontier (region {}) is {staleness_ms} ms behind the clock, over the bound of {bound} ms",
                    key.name(),
                    key.local_region
                ),
            ))
        }
        ReadDecision::Behind { token, frontier } => Err(ApiError::new(
            ErrorCode::TooStale,
            format!(
                "{}: region {} has applied every region's writes only up to {frontier}, below the session token {token}, after waiting {} ms; retry later (the region catches up as replication arrives)",
                key.name(),
                key.local_region,
                CAUSAL_WAIT.as_millis()
            ),
        )),
        ReadDecision::NotAllowed => Err(ApiError::new(
            ErrorCode::LevelNotAllowed,
            format!(
                "{} is {}: a {} read asks for more than it allows; allowed levels: {}",
                key.name(),
                key.policy.consistency.as_str(),
                level_name(level),
                allowed_levels(key.policy.consistency).join(", ")
            ),
        )),
        // `resolve` loops on WaitFor and never passes it here.
        ReadDecision::WaitFor(ts) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("a causal read's wait for {ts} was not driven"),
        )),
    }
}

/// The `WrongRegion` error for `key` (the address of a node there is
/// filled in by the server, which knows gossip).
pub fn wrong_region(key: KeyPolicy<'_>, why: &str) -> ApiError {
    ApiError::wrong_region(
        format!(
            "{} is homed in region {} and this node is in region {}: {why}",
            key.name(),
            key.policy.home,
            key.local_region
        ),
        key.policy.home.clone(),
        None,
    )
}

/// Refuses a write of a key whose policy accepts writes only at its home
/// region (strong) at a node of another region; causal and eventual
/// prefixes accept writes in every region (design.md, "Writes").
pub fn check_write(key: KeyPolicy<'_>) -> Result<(), ApiError> {
    if key.policy.consistency.home_only_writes() && key.policy.home != key.local_region {
        return Err(wrong_region(
            key,
            "strong prefixes accept writes only in their home region (nothing was written)",
        ));
    }
    Ok(())
}

/// How a call asks to read: this replica's applied state, or a per-call
/// level of the key's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadChoice {
    /// Whatever this replica has applied, whatever the prefix.
    Serializable,
    /// A level decided by [`crate::replication::read::decide`].
    Level(ReadLevel),
    /// A bounded read without a bound: the key prefix's
    /// `max_staleness_ms` is the bound ([`ReadChoice::level`]).
    BoundedByPolicy(OnStale),
}

impl ReadChoice {
    /// The level to read at, or `None` for a serializable read.
    /// `policy_bound_ms` is the key's policy's `max_staleness_ms`; only a
    /// bounded read without a bound ([`ReadChoice::BoundedByPolicy`]) uses
    /// it.
    pub fn level(self, policy_bound_ms: u64) -> Option<ReadLevel> {
        match self {
            ReadChoice::Serializable => None,
            ReadChoice::Level(level) => Some(level),
            ReadChoice::BoundedByPolicy(on_stale) => Some(ReadLevel::Bounded {
                max_staleness_ms: policy_bound_ms,
                on_stale,
            }),
        }
    }
}

/// Longest `consistency` argument looked at.
const MAX_CONSISTENCY_ARG_BYTES: usize = 64;

/// Parses a read level as the CLI (`--consistency`, `--token`,
/// `--on-stale`) and the gateway (`consistency=`, `token=`, `on_stale=`)
/// spell it: `linearizable`, `serializable`, `bounded:MS` (or `bounded`:
/// the key prefix's `max_staleness_ms`), `causal` (with a decimal `token`,
/// default 0) or `eventual`; `on_stale` is `redirect` (the default) or
/// `fail`, for bounded reads only. Errors name the bad argument
/// (`MER-1007`).
pub fn parse_read_choice(
    consistency: &str,
    token: Option<&str>,
    on_stale: Option<&str>,
) -> Result<ReadChoice, ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::InvalidArgument, m);
    if consistency.len() > MAX_CONSISTENCY_ARG_BYTES {
        return Err(bad(format!(
            "consistency is longer than {MAX_CONSISTENCY_ARG_BYTES} bytes"
        )));
    }
    let (name, arg) = match consistency.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (consistency, None),
    };
    if token.is_some() && name != "causal" {
        return Err(bad(format!(
            "a token applies only to causal reads, not to {name}"
        )));
    }
    if on_stale.is_some() && name != "bounded" {
        return Err(bad(format!(
            "on_stale applies only to bounded reads, not to {name}"
        )));
    }
    if arg.is_some() && name != "bounded" {
        return Err(bad(format!(
            "consistency `{consistency}`: only bounded takes an argument (bounded:MS)"
        )));
    }
    let level = match name {
        "serializable" => return Ok(ReadChoice::Serializable),
        "linearizable" => ReadLevel::Linearizable,
        "eventual" => ReadLevel::Eventual,
        "causal" => ReadLevel::Causal {
            token: parse_token(token.unwrap_or("0")).map_err(bad)?,
        },
        "bounded" => {
            let on_stale = match on_stale.unwrap_or("redirect") {
                "redirect" => OnStale::Redirect,
                "fail" => OnStale::Fail,
                other => {
                    return Err(bad(format!(
                        "on_stale `{other}` is not redirect or fail"
                    )))
                }
            };
            let Some(ms) = arg else {
                return Ok(ReadChoice::BoundedByPolicy(on_stale));
            };
            let max_staleness_ms = ms
                .parse::<u64>()
                .ok()
                .filter(|_| ms.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    bad(format!(
                        "bounded:{ms}: the bound is not a whole number of ms"
                    ))
                })?;
            ReadLevel::Bounded {
                max_staleness_ms,
                on_stale,
            }
        }
        other => {
            return Err(bad(format!(
                "unknown consistency `{other}`: use linearizable, serializable, bounded:MS, causal or eventual"
            )))
        }
    };
    check_level(&level)?;
    Ok(ReadChoice::Level(level))
}

/// Parses a session token: a decimal HLC timestamp, digits only.
fn parse_token(t: &str) -> Result<Timestamp, String> {
    let malformed = || {
        format!("malformed token `{t}`: expected a decimal number as printed in a reply's token")
    };
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    t.parse::<u64>().map(Timestamp).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::replication::policy::Replication;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_parts(1_790_000_000_000 + ms, 0).unwrap()
    }

    /// A frontier a test raises at will, and a fixed clock.
    #[derive(Clone)]
    struct Env {
        frontier: Arc<AtomicU64>,
        now: Timestamp,
    }

    impl LevelEnv for Env {
        fn frontier(&self) -> Result<Timestamp, ApiError> {
            Ok(Timestamp(self.frontier.load(Ordering::Acquire)))
        }
        fn applied(&self) -> Result<Timestamp, ApiError> {
            self.frontier()
        }
        fn now(&self) -> Result<Timestamp, ApiError> {
            Ok(self.now)
        }
    }

    fn env(frontier: i64, now: i64) -> Env {
        Env {
            frontier: Arc::new(AtomicU64::new(ts(frontier).0)),
            now: ts(now),
        }
    }

    fn policy(c: Consistency) -> Policy {
        Policy {
            consistency: c,
            home: "us-east".into(),
            replication: Replication::Async,
            max_staleness_ms: 5_000,
        }
    }

    fn key<'a>(p: &'a Policy, region: &'a str) -> KeyPolicy<'a> {
        KeyPolicy {
            prefix: Some(b"ads/"),
            policy: p,
            local_region: region,
            only_region: false,
        }
    }

    const SHORT: Duration = Duration::from_millis(60);

    /// An environment that counts what it is asked.
    #[derive(Default)]
    struct Counting(AtomicU64);

    impl LevelEnv for Counting {
        fn frontier(&self) -> Result<Timestamp, ApiError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(ts(0))
        }
        fn applied(&self) -> Result<Timestamp, ApiError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(ts(0))
        }
        fn now(&self) -> Result<Timestamp, ApiError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(ts(1))
        }
    }

    /// A linearizable read is decided without the replica's state or the
    /// clock (no HLC tick per strong read); other levels read them.
    #[tokio::test]
    async fn a_linearizable_read_asks_for_no_replica_state_and_no_clock() {
        let p = policy(Consistency::Strong);
        let e = Counting::default();
        for region in ["us-east", "eu-west"] {
            let _ = resolve(&e, key(&p, region), &ReadLevel::Linearizable, SHORT).await;
        }
        assert_eq!(e.0.load(Ordering::Relaxed), 0);
        let eventual = resolve(&e, key(&p, "us-east"), &ReadLevel::Eventual, SHORT).await;
        assert!(eventual.is_ok());
        assert_eq!(e.0.load(Ordering::Relaxed), 3, "frontier, applied, now");
    }

    #[tokio::test]
    async fn linearizable_is_the_leader_at_home_and_wrong_region_elsewhere() {
        let p = policy(Consistency::Strong);
        let e = env(0, 10);
        let home = resolve(&e, key(&p, "us-east"), &ReadLevel::Linearizable, SHORT).await;
        assert_eq!(home.unwrap(), Serve::Leader);
        let away = resolve(&e, key(&p, "eu-west"), &ReadLevel::Linearizable, SHORT)
            .await
            .unwrap_err();
        assert_eq!(away.code, ErrorCode::WrongRegion);
        assert_eq!(away.home_region.as_deref(), Some("us-east"));
        assert!(away.message.contains("\"ads/\""), "{}", away.message);
        assert!(away.message.contains("eu-west"), "{}", away.message);
    }

    #[tokio::test]
    async fn a_level_above_the_prefix_names_the_allowed_levels() {
        let p = policy(Consistency::Eventual);
        let e = env(0, 10);
        let err = resolve(&e, key(&p, "us-east"), &ReadLevel::Linearizable, SHORT)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::LevelNotAllowed);
        assert!(
            err.message.contains("is eventual")
                && err.message.contains("allowed levels: bounded, eventual"),
            "{}",
            err.message
        );
        let causal = ReadLevel::Causal { token: ts(1) };
        let err = resolve(&e, key(&p, "us-east"), &causal, SHORT)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::LevelNotAllowed);
        assert_eq!(
            allowed_levels(Consistency::Causal),
            ["causal", "bounded", "eventual"]
        );
    }

    #[tokio::test]
    async fn bounded_is_local_when_fresh_else_too_stale_or_redirected() {
        let p = policy(Consistency::Strong);
        let e = env(9_000, 10_000);
        let fresh = ReadLevel::Bounded {
            max_staleness_ms: 2_000,
            on_stale: OnStale::Fail,
        };
        assert_eq!(
            resolve(&e, key(&p, "eu-west"), &fresh, SHORT)
                .await
                .unwrap(),
            Serve::Local {
                at: ts(9_000),
                staleness_ms: 1_000
            }
        );
        let tight = ReadLevel::Bounded {
            max_staleness_ms: 10,
            on_stale: OnStale::Fail,
        };
        let err = resolve(&e, key(&p, "eu-west"), &tight, SHORT)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooStale);
        assert!(
            err.message.contains("1000 ms behind") && err.message.contains("bound of 10 ms"),
            "{}",
            err.message
        );
        let redirect = ReadLevel::Bounded {
            max_staleness_ms: 10,
            on_stale: OnStale::Redirect,
        };
        let err = resolve(&e, key(&p, "eu-west"), &redirect, SHORT)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongRegion);
        assert!(err.message.contains("bound of 10 ms"), "{}", err.message);
    }

    #[tokio::test]
    async fn eventual_is_local_at_the_frontier_without_waiting() {
        let p = policy(Consistency::Eventual);
        let e = env(3, 10);
        let started = std::time::Instant::now();
        let served = resolve(&e, key(&p, "eu-west"), &ReadLevel::Eventual, CAUSAL_WAIT)
            .await
            .unwrap();
        assert_eq!(
            served,
            Serve::Local {
                at: ts(3),
                staleness_ms: 7
            }
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn causal_waits_for_the_frontier_to_reach_the_token() {
        let p = policy(Consistency::Causal);
        let e = env(50, 200);
        let raise = e.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            raise.frontier.store(ts(120).0, Ordering::Release);
        });
        let level = ReadLevel::Causal { token: ts(100) };
        let served = resolve(&e, key(&p, "eu-west"), &level, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(
            served,
            Serve::Local {
                at: ts(120),
                staleness_ms: 80
            }
        );
    }

    #[tokio::test]
    async fn causal_past_its_wait_is_redirected_away_from_home_and_refused_at_home() {
        let p = policy(Consistency::Causal);
        let e = env(50, 200);
        let level = ReadLevel::Causal { token: ts(100) };
        let started = std::time::Instant::now();
        let err = resolve(&e, key(&p, "eu-west"), &level, SHORT)
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= SHORT && waited < SHORT * 10, "{waited:?}");
        assert_eq!(err.code, ErrorCode::WrongRegion);
        assert!(err.message.contains("session token"), "{}", err.message);
        // At home a causal prefix's token may name a write from another
        // region that has not arrived: refused, not served without it.
        let err = resolve(&e, key(&p, "us-east"), &level, SHORT)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooStale);
        assert!(
            err.message.contains("below the session token"),
            "{}",
            err.message
        );
        // A strong prefix is written only at home: its leader serves it.
        let strong = policy(Consistency::Strong);
        let home = resolve(&e, key(&strong, "us-east"), &level, SHORT).await;
        assert_eq!(home.unwrap(), Serve::Leader);
    }

    #[test]
    fn strong_writes_only_at_home_others_anywhere() {
        let strong = policy(Consistency::Strong);
        assert!(check_write(key(&strong, "us-east")).is_ok());
        let err = check_write(key(&strong, "eu-west")).unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongRegion);
        assert_eq!(err.home_region.as_deref(), Some("us-east"));
        assert!(err.message.contains("nothing was written"));
        for c in [Consistency::Causal, Consistency::Eventual] {
            assert!(check_write(key(&policy(c), "eu-west")).is_ok());
        }
    }

    #[test]
    fn read_levels_parse_from_cli_and_query_spelling() {
        let p = |c, t, o| parse_read_choice(c, t, o);
        assert_eq!(p("serializable", None, None), Ok(ReadChoice::Serializable));
        assert_eq!(
            p("linearizable", None, None),
            Ok(ReadChoice::Level(ReadLevel::Linearizable))
        );
        assert_eq!(
            p("eventual", None, None),
            Ok(ReadChoice::Level(ReadLevel::Eventual))
        );
        assert_eq!(
            p("bounded:250", None, None),
            Ok(ReadChoice::Level(ReadLevel::Bounded {
                max_staleness_ms: 250,
                on_stale: OnStale::Redirect
            }))
        );
        assert_eq!(
            p("bounded:0", None, Some("fail")),
            Ok(ReadChoice::Level(ReadLevel::Bounded {
                max_staleness_ms: 0,
                on_stale: OnStale::Fail
            }))
        );
        let by_policy = p("bounded", None, Some("fail")).unwrap();
        assert_eq!(by_policy, ReadChoice::BoundedByPolicy(OnStale::Fail));
        assert_eq!(
            by_policy.level(700),
            Some(ReadLevel::Bounded {
                max_staleness_ms: 700,
                on_stale: OnStale::Fail
            })
        );
        assert_eq!(ReadChoice::Serializable.level(700), None);
        assert_eq!(
            ReadChoice::Level(ReadLevel::Eventual).level(700),
            Some(ReadLevel::Eventual)
        );
        assert_eq!(
            p("causal", Some("99"), None),
            Ok(ReadChoice::Level(ReadLevel::Causal {
                token: Timestamp(99)
            }))
        );
        assert_eq!(
            p("causal", None, None),
            Ok(ReadChoice::Level(ReadLevel::Causal {
                token: Timestamp::ZERO
            }))
        );
        let refused = [
            ("bounded:abc", None, None, "not a whole number"),
            ("bounded:-5", None, None, "not a whole number"),
            ("bounded:", None, None, "not a whole number"),
            ("bounded:99999999999", None, None, "over the limit"),
            ("strong", None, None, "unknown consistency"),
            ("causal", Some("12x"), None, "malformed token"),
            ("causal", Some("+1"), None, "malformed token"),
            ("eventual", Some("5"), None, "only to causal"),
            ("causal", None, Some("fail"), "only to bounded"),
            ("bounded:5", None, Some("maybe"), "redirect or fail"),
            ("eventual:5", None, None, "only bounded takes"),
        ];
        for (c, t, o, says) in refused {
            let e = p(c, t, o).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{c}");
            assert!(e.message.contains(says), "{c}: {}", e.message);
        }
    }

    #[test]
    fn staleness_bounds_are_limited() {
        let over = ReadLevel::Bounded {
            max_staleness_ms: MAX_STALENESS_MS + 1,
            on_stale: OnStale::Fail,
        };
        assert_eq!(
            check_level(&over).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert!(check_level(&ReadLevel::Eventual).is_ok());
    }
}
