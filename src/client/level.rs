//! Reads at a per-call level and sessions (docs/consistency.md, "Read
//! levels").
//!
//! ```no_run
//! # async fn demo() -> Result<(), meridian::client::ClientError> {
//! use meridian::client::{Client, ClientConfig, Session};
//! use meridian::replication::read::ReadLevel;
//! let client = Client::connect(ClientConfig::from_env_or_dev()?).await?;
//! // One read, fresh within two seconds, served by this region if it can.
//! let bounded = ReadLevel::Bounded {
//!     max_staleness_ms: 2_000,
//!     on_stale: meridian::replication::read::OnStale::Redirect,
//! };
//! let r = client.get_at_level("ads/budget", bounded).await?;
//! println!("{:?} served at {} ({} ms stale)", r.kv, r.served_at, r.staleness_ms);
//! // A session: causal reads that see its own writes, in any region and
//! // across processes (hand `session.token()` to the next process).
//! let session = Session::new(&client);
//! session.put("cfg/flag", "on").await?;
//! let seen = session.get("cfg/flag").await?;
//! let portable = session.token().map(|t| t.to_string());
//! # let _ = (seen, portable);
//! # Ok(()) }
//! ```

use std::sync::Mutex;

use super::{Client, ClientError, WriteResponse};
use crate::replication::read::{next_token, ReadLevel};
use crate::types::{KeyValue, Timestamp};
use crate::wire::{PoliciesV1, PolicyV1, RequestV1, ResponseBodyV1};

/// The policy `table` gives `key`: its prefix's, or the default (prefixes
/// never nest, so at most one matches).
pub fn policy_for<'t>(table: &'t PoliciesV1, key: &[u8]) -> &'t PolicyV1 {
    table
        .prefixes
        .iter()
        .find(|p| key.starts_with(&p.prefix))
        .map_or(&table.default, |p| &p.policy)
}

/// A session token: the HLC timestamp a causal read must see at least.
/// Portable: it prints and parses as a decimal number, so it can cross
/// processes, shells and regions (`meridian kv get --token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionToken(pub Timestamp);

/// A token that is not a decimal HLC timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed session token `{0}`: expected a decimal number as printed by a reply's `token`")]
pub struct TokenError(pub String);

impl std::fmt::Display for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0 .0)
    }
}

impl std::str::FromStr for SessionToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        // Digits only: `u64::from_str` would also take a leading `+`.
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError(s.to_string()));
        }
        t.parse::<u64>()
            .map(|n| SessionToken(Timestamp(n)))
            .map_err(|_| TokenError(s.to_string()))
    }
}

/// A get at a level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelGetResponse {
    /// The pair, if the key exists at the snapshot.
    pub kv: Option<KeyValue>,
    /// HLC timestamp of the snapshot.
    pub served_at: Timestamp,
    /// How far the snapshot was behind the serving node's clock, ms.
    pub staleness_ms: u64,
    /// The session token to bring to the next causal read.
    pub token: SessionToken,
}

/// A range page at a level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelRangeResponse {
    /// Live pairs in key order.
    pub kvs: Vec<KeyValue>,
    /// Start key of the next page, if there may be more.
    pub next: Option<Vec<u8>>,
    /// HLC timestamp of the snapshot.
    pub served_at: Timestamp,
    /// How far the snapshot was behind the serving node's clock, ms.
    pub staleness_ms: u64,
    /// The session token to bring to the next causal read.
    pub token: SessionToken,
}

/// `(staleness_ms, token)` of an answer: a level reply carries both; a
/// linearizable one (`Ok`) is not stale and its token is its snapshot, or
/// the brought token if higher.
fn level_meta(
    answer_level: Option<(u64, Timestamp)>,
    level: &ReadLevel,
    served_at: Timestamp,
) -> (u64, SessionToken) {
    let brought = match level {
        ReadLevel::Causal { token } => Some(*token),
        _ => None,
    };
    let (staleness_ms, token) = answer_level.unwrap_or((0, served_at));
    (staleness_ms, SessionToken(next_token(brought, token)))
}

impl Client {
    /// The policy of `key`, from the connected node's policy table (every
    /// node holds the same one): for example its `max_staleness_ms`, the
    /// default bound of a bounded read.
    pub async fn policy_of(&self, key: impl AsRef<[u8]>) -> Result<PolicyV1, ClientError> {
        let table = self.policies().await?;
        Ok(policy_for(&table, key.as_ref()).clone())
    }

    /// Reads `key` at a per-call `level`: linearizable (at the prefix's home
    /// leader), bounded staleness, causal (after a session token) or
    /// eventual. A level above the prefix's consistency is refused
    /// (`MER-1009`); a `WrongRegion` refusal (`MER-3006`) is followed to
    /// the home region when the node names a node there.
    pub async fn get_at_level(
        &self,
        key: impl AsRef<[u8]>,
        level: ReadLevel,
    ) -> Result<LevelGetResponse, ClientError> {
        let req = RequestV1::GetWith {
            key: key.as_ref().to_vec(),
            at: None,
            consistency: level.into(),
        };
        let answer = self.call_answer(&req).await?;
        let (staleness_ms, token) = level_meta(answer.level, &level, answer.served_at);
        match answer.body {
            ResponseBodyV1::Value(kv) => Ok(LevelGetResponse {
                kv: kv.map(KeyValue::from),
                served_at: answer.served_at,
                staleness_ms,
                token,
            }),
            other => Err(Self::unexpected(other)),
        }
    }

    /// One page of `[start, end)` at a per-call `level` (see
    /// [`Client::get_at_level`]). A page stops at a policy boundary;
    /// `next` continues there.
    pub async fn range_at_level(
        &self,
        start: impl AsRef<[u8]>,
        end: Option<&[u8]>,
        limit: u32,
        level: ReadLevel,
    ) -> Result<LevelRangeResponse, ClientError> {
        let req = RequestV1::RangeWith {
            start: start.as_ref().to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
            at: None,
            consistency: level.into(),
        };
        let answer = self.call_answer(&req).await?;
        let (staleness_ms, token) = level_meta(answer.level, &level, answer.served_at);
        match answer.body {
            ResponseBodyV1::Page { kvs, next } => Ok(LevelRangeResponse {
                kvs: kvs.into_iter().map(KeyValue::from).collect(),
                next,
                served_at: answer.served_at,
                staleness_ms,
                token,
            }),
            other => Err(Self::unexpected(other)),
        }
    }
}

/// A causal session over a client: every read brings the session's token
/// and every reply or write raises it, so the session reads its own
/// writes and never reads backwards, in any region (design.md, "Reads:
/// causal"). The token is portable: [`Session::token`] in one process,
/// [`Session::resume`] in another.
#[derive(Debug)]
pub struct Session<'c> {
    client: &'c Client,
    token: Mutex<Option<Timestamp>>,
}

impl<'c> Session<'c> {
    /// A new session with no token yet.
    pub fn new(client: &'c Client) -> Self {
        Session {
            client,
            token: Mutex::new(None),
        }
    }

    /// A session continuing from `token` (from another process or region).
    pub fn resume(client: &'c Client, token: SessionToken) -> Self {
        Session {
            client,
            token: Mutex::new(Some(token.0)),
        }
    }

    /// The session's token, if any call has set one.
    pub fn token(&self) -> Option<SessionToken> {
        self.current().map(SessionToken)
    }

    fn current(&self) -> Option<Timestamp> {
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Raises the token to `seen` (never lowers it).
    pub fn observe(&self, seen: Timestamp) {
        let mut t = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *t = Some(next_token(*t, seen));
    }

    /// The causal level for the session's token now.
    pub fn causal(&self) -> ReadLevel {
        ReadLevel::Causal {
            token: self.current().unwrap_or(Timestamp::ZERO),
        }
    }

    /// A causal read of `key` at the session's token.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<LevelGetResponse, ClientError> {
        self.get_at_level(key, self.causal()).await
    }

    /// A read of `key` at `level` whose reply raises the session's token.
    pub async fn get_at_level(
        &self,
        key: impl AsRef<[u8]>,
        level: ReadLevel,
    ) -> Result<LevelGetResponse, ClientError> {
        let r = self.client.get_at_level(key, level).await?;
        self.observe(r.token.0);
        Ok(r)
    }

    /// A causal page of `[start, end)` at the session's token.
    pub async fn range(
        &self,
        start: impl AsRef<[u8]>,
        end: Option<&[u8]>,
        limit: u32,
    ) -> Result<LevelRangeResponse, ClientError> {
        let r = self
            .client
            .range_at_level(start, end, limit, self.causal())
            .await?;
        self.observe(r.token.0);
        Ok(r)
    }

    /// Writes `value` at `key`, stamped above the session's token (writes
    /// follow reads); the token then rises to the write's version, so the
    /// session's next causal read sees it (read-your-writes).
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<WriteResponse, ClientError> {
        let w = match self.current() {
            Some(token) => self.client.put_after(key, value, token).await?,
            None => self.client.put(key, value).await?,
        };
        self.observe(w.version);
        Ok(w)
    }

    /// Deletes `key`, stamped above the session's token; the token rises
    /// to the delete's version.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<WriteResponse, ClientError> {
        let w = match self.current() {
            Some(token) => self.client.delete_after(key, token).await?,
            None => self.client.delete(key).await?,
        };
        self.observe(w.version);
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::read::OnStale;

    #[test]
    fn tokens_print_and_parse_as_decimal_numbers() {
        let t: SessionToken = "7531".parse().unwrap();
        assert_eq!(t, SessionToken(Timestamp(7531)));
        assert_eq!(t.to_string(), "7531");
        assert_eq!(" 42 ".parse::<SessionToken>().unwrap().0, Timestamp(42));
        for bad in ["", "abc", "-1", "+5", "1.5", "18446744073709551616"] {
            let e = bad.parse::<SessionToken>().unwrap_err();
            assert!(e.to_string().contains("malformed session token"), "{bad}");
        }
    }

    #[test]
    fn a_key_takes_its_prefix_policy_or_the_default() {
        use crate::wire::{ConsistencyV1, PrefixPolicyV1, ReplicationV1};
        let policy = |ms| PolicyV1 {
            consistency: ConsistencyV1::Strong,
            home: "r1".into(),
            replication: ReplicationV1::Async,
            max_staleness_ms: ms,
        };
        let table = PoliciesV1 {
            local_region: "r1".into(),
            regions: vec!["r1".into()],
            default: policy(1),
            prefixes: vec![
                PrefixPolicyV1 {
                    prefix: b"a/".to_vec(),
                    policy: policy(2),
                },
                PrefixPolicyV1 {
                    prefix: b"b/".to_vec(),
                    policy: policy(3),
                },
            ],
        };
        assert_eq!(policy_for(&table, b"b/x").max_staleness_ms, 3);
        assert_eq!(policy_for(&table, b"a/").max_staleness_ms, 2);
        assert_eq!(policy_for(&table, b"a").max_staleness_ms, 1);
        assert_eq!(policy_for(&table, b"c/x").max_staleness_ms, 1);
    }

    #[test]
    fn a_reply_token_never_goes_below_the_brought_token() {
        let causal = ReadLevel::Causal {
            token: Timestamp(90),
        };
        // A level reply carries its own token; the brought one still wins
        // when higher (a node answering an old token cannot lower it).
        let (s, t) = level_meta(Some((12, Timestamp(80))), &causal, Timestamp(80));
        assert_eq!((s, t), (12, SessionToken(Timestamp(90))));
        // A linearizable reply is not stale and its token is its snapshot.
        let (s, t) = level_meta(None, &ReadLevel::Linearizable, Timestamp(70));
        assert_eq!((s, t), (0, SessionToken(Timestamp(70))));
        let bounded = ReadLevel::Bounded {
            max_staleness_ms: 5,
            on_stale: OnStale::Fail,
        };
        let (_, t) = level_meta(Some((3, Timestamp(99))), &bounded, Timestamp(99));
        assert_eq!(t, SessionToken(Timestamp(99)));
    }
}
