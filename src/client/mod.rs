//! The Rust SDK: `meridian::Client`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meridian::client::ClientError> {
//! use meridian::client::{Client, ClientConfig};
//! let client = Client::connect(ClientConfig::from_env_or_dev()?).await?;
//! client.put("config/feature-x", "on").await?;
//! let got = client.get("config/feature-x").await?;
//! assert_eq!(got.kv.map(|kv| kv.value), Some(b"on".to_vec()));
//! # Ok(()) }
//! ```
//!
//! One QUIC connection per node the client talks to, one bidirectional
//! stream per request, so requests are multiplexed without head-of-line
//! blocking. Requests that need a range's leader go to the leader the client
//! has cached for that range (see [`routes`]): a `NotLeader` reply updates the
//! cache and the request is retried, so a stale cache heals itself. A
//! request is retried on another node only when it provably never reached
//! one (no connection, or the stream could not be opened) or was refused
//! with `NotLeader`; otherwise the error is returned, because a write may
//! have committed.

pub mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use routes::Routes;
pub use routes::{RouteRange, Target};

use crate::error_code::{ApiError, ErrorCode};
use crate::transport::{self, EndpointLimits, TlsFiles};
use crate::types::{KeyValue, ReadConsistency, Timestamp, Txn, VersionEntry};
use crate::wire::{self, RequestV1, ResponseBodyV1, ResponseV1, StatusV1};

/// Client-side QUIC idle timeout: a node silent this long is considered gone.
pub const CLIENT_IDLE_TIMEOUT_MS: u64 = 3_000;
/// Client keep-alive interval (keeps live connections from idling out).
pub const CLIENT_KEEP_ALIVE_MS: u64 = 1_000;

/// Default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default endpoint: the single-node `meridian serve` default.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7379";
/// Default certificate directory of `meridian serve` with no config.
pub const DEFAULT_CERT_DIR: &str = "meridian-data/certs";

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Nodes to try, in order.
    pub endpoints: Vec<SocketAddr>,
    /// CA, certificate and key (role client or admin).
    pub tls: TlsFiles,
    /// Per-request timeout (connect included).
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Builds a config from `MERIDIAN_ENDPOINTS`, `MERIDIAN_CA`, `MERIDIAN_CERT`,
    /// `MERIDIAN_KEY`, falling back to the single-node defaults of `meridian serve`
    /// (127.0.0.1:7379 and the certificates under ./meridian-data/certs).
    pub fn from_env_or_dev() -> Result<ClientConfig, ClientError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let endpoints = var("MERIDIAN_ENDPOINTS").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let dir = PathBuf::from(DEFAULT_CERT_DIR);
        Ok(ClientConfig {
            endpoints: parse_endpoints(&endpoints)?,
            tls: TlsFiles {
                ca: var("MERIDIAN_CA").map_or_else(|| dir.join("ca.pem"), PathBuf::from),
                cert: var("MERIDIAN_CERT").map_or_else(|| dir.join("client.pem"), PathBuf::from),
                key: var("MERIDIAN_KEY").map_or_else(|| dir.join("client.key"), PathBuf::from),
            },
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }
}

/// Parses `host:port,host:port` (hosts are IP addresses or `localhost`).
pub fn parse_endpoints(s: &str) -> Result<Vec<SocketAddr>, ClientError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addr = match part.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => part.to_string(),
        };
        let addr = addr
            .parse()
            .map_err(|_| ClientError::Config(format!("endpoint `{part}` is not IP:port")))?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(ClientError::Config("no endpoints given".into()));
    }
    Ok(out)
}

/// Errors of the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node refused the request with a stable code; nothing was written.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Bad client settings (endpoints, certificate files).
    #[error("client config: {0}")]
    Config(String),
    /// No endpoint could be reached; the request was not sent.
    #[error("cannot connect to any of {endpoints}: {last}")]
    Connect {
        /// Endpoints tried.
        endpoints: String,
        /// The last error.
        last: String,
    },
    /// The connection broke mid-request: the request may or may not have been applied.
    #[error("connection lost during request (outcome unknown): {0}")]
    Transport(String),
    /// No answer within the request timeout: the outcome is unknown.
    #[error("request timed out after {0:?} (outcome unknown)")]
    Timeout(Duration),
    /// The node answered something this SDK does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The stable code, if the node refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

/// A get result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    /// The pair, if the key exists at the snapshot.
    pub kv: Option<KeyValue>,
    /// HLC timestamp the read was served at.
    pub served_at: Timestamp,
}

/// A put or delete result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteResponse {
    /// HLC version of the write (also the time it was served at).
    pub version: Timestamp,
    /// Whether the key existed before (always true for put).
    pub existed: bool,
}

/// One range page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// Live pairs in key order.
    pub kvs: Vec<KeyValue>,
    /// Start key of the next page, if there may be more.
    pub next: Option<Vec<u8>>,
    /// HLC timestamp of the snapshot; pass it as `at` to read later pages consistently.
    pub served_at: Timestamp,
}

/// A transaction result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every guard held (the success branch ran).
    pub succeeded: bool,
    /// Commit version.
    pub version: Timestamp,
}

/// A history result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryResponse {
    /// Versions, newest first; `value: None` is a delete.
    pub entries: Vec<VersionEntry>,
    /// HLC timestamp it was served at.
    pub served_at: Timestamp,
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when there is none (empty prefix or all 0xFF bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// An async Meridian client. Clone-free: share it behind an `Arc`.
pub struct Client {
    endpoint: quinn::Endpoint,
    cfg: ClientConfig,
    /// One QUIC connection per node address, shared by every request to it.
    pool: Mutex<HashMap<SocketAddr, quinn::Connection>>,
    /// The leader cache (see [`routes`]).
    routes: Mutex<Routes>,
    /// Serialises learning the range table (one region-status call at a time).
    learning: tokio::sync::Mutex<()>,
}

/// Most times one request is retried (after `NotLeader` or an unreachable
/// node) before giving up; the request timeout bounds the whole attempt too.
const MAX_ATTEMPTS: usize = 50;
/// Pause before retrying when no leader is known (an election is on).
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(50);
/// Longest a connection attempt to one node may take.
const DIAL_TIMEOUT: Duration = Duration::from_millis(CLIENT_IDLE_TIMEOUT_MS);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.cfg.endpoints)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a request could not be exchanged with one node.
enum SendFailure {
    /// The node could not be reached; the request provably was not sent.
    NotSent(String),
    /// The request was sent and then the connection broke (outcome unknown).
    Lost(ClientError),
}

impl Client {
    /// Loads the certificates and connects to the first reachable endpoint.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints given".into()));
        }
        // A short idle timeout with frequent keep-alives lets the client
        // notice a dead node (kill -9, lost host) within seconds and move on
        // to the next endpoint, instead of waiting out a 30 s idle timeout.
        let limits = EndpointLimits {
            idle_timeout_ms: CLIENT_IDLE_TIMEOUT_MS,
            keep_alive_ms: CLIENT_KEEP_ALIVE_MS,
            ..EndpointLimits::default()
        };
        let endpoint = transport::client_endpoint(&cfg.tls, &limits)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let client = Client {
            endpoint,
            routes: Mutex::new(Routes::new(cfg.endpoints.clone(), 0)),
            cfg,
            pool: Mutex::new(HashMap::new()),
            learning: tokio::sync::Mutex::new(()),
        };
        // Fail fast on bad certificates or no reachable node: find a home.
        let mut last = String::new();
        for _ in 0..client.cfg.endpoints.len() {
            let home = lock(&client.routes).home();
            match client.connection(home).await {
                Ok(_) => return Ok(client),
                Err(e) => {
                    last = e;
                    lock(&client.routes).unreachable(home, Instant::now());
                }
            }
        }
        Err(client.connect_error(last))
    }

    fn connect_error(&self, last: String) -> ClientError {
        ClientError::Connect {
            endpoints: self
                .cfg
                .endpoints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            last,
        }
    }

    /// The pooled connection to `addr`, dialled if there is none alive.
    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, String> {
        if let Some(c) = lock(&self.pool).get(&addr) {
            match c.close_reason() {
                None => return Ok(c.clone()),
                // Keep-alives went unanswered: the node is gone (or cut
                // off); do not wait for a dial to time out as well.
                Some(e @ (quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset)) => {
                    return Err(format!("{addr}: connection lost: {e}"))
                }
                Some(_) => {} // closed on purpose (e.g. a restart): dial again
            }
        }
        let timeout = DIAL_TIMEOUT.min(self.cfg.request_timeout);
        let conn =
            match tokio::time::timeout(timeout, transport::connect(&self.endpoint, addr, None))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(format!("{addr}: {e}")),
                Err(_) => return Err(format!("{addr}: timed out")),
            };
        let mut pool = lock(&self.pool);
        // Another request may have dialled meanwhile: keep one connection.
        if let Some(c) = pool.get(&addr) {
            if c.close_reason().is_none() {
                conn.close(0u32.into(), b"duplicate connection");
                return Ok(c.clone());
            }
        }
        pool.insert(addr, conn.clone());
        Ok(conn)
    }

    /// Sends `frame` to `addr` on a new stream and reads the reply.
    async fn exchange_at(&self, addr: SocketAddr, frame: &[u8]) -> Result<Vec<u8>, SendFailure> {
        let conn = self.connection(addr).await.map_err(SendFailure::NotSent)?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| SendFailure::NotSent(format!("{addr}: {e}")))?;
        let lost = |e: String| SendFailure::Lost(ClientError::Transport(e));
        transport::write_frame(&mut send, frame)
            .await
            .map_err(|e| lost(e.to_string()))?;
        let _ = send.finish();
        transport::read_frame(&mut recv, crate::limits::HARD_MAX_REQUEST_BYTES)
            .await
            .map_err(|e| lost(e.to_string()))
    }

    /// Sends `frame` to where `target` routes, moving on to other nodes while
    /// none can be reached (the request was then provably not sent).
    async fn send_routed(
        &self,
        target: &Target,
        frame: &[u8],
    ) -> Result<(SocketAddr, Vec<u8>), ClientError> {
        let mut last = String::new();
        // Every endpoint once, plus a cached leader that may not be one of them.
        for _ in 0..=self.cfg.endpoints.len() {
            let addr = lock(&self.routes).pick(target, Instant::now());
            match self.exchange_at(addr, frame).await {
                Ok(raw) => return Ok((addr, raw)),
                Err(SendFailure::Lost(e)) => return Err(e),
                Err(SendFailure::NotSent(e)) => {
                    tracing::debug!(error = %e, "node unreachable; trying another");
                    lock(&self.pool).remove(&addr);
                    lock(&self.routes).unreachable(addr, Instant::now());
                    last = e;
                }
            }
        }
        Err(self.connect_error(last))
    }

    /// Learns the range table from a node, once (a node without a region
    /// answers an error: then the table is empty and leaders are cached
    /// for the whole keyspace).
    async fn learn_ranges(&self) {
        let _one = self.learning.lock().await;
        if lock(&self.routes).knows_ranges() {
            return;
        }
        let frame = wire::encode_request(&RequestV1::RegionStatus);
        let table = match self.send_routed(&Target::Any, &frame).await {
            Ok((_, raw)) => match wire::decode_response(&raw) {
                Ok(ResponseV1::Ok {
                    body: ResponseBodyV1::RegionStatus(ranges),
                    ..
                }) => ranges
                    .into_iter()
                    .map(|r| (r.range, r.start, r.end))
                    .collect(),
                Ok(ResponseV1::Err { .. }) => Vec::new(),
                _ => return, // try again at the next NotLeader
            },
            Err(e) => {
                tracing::debug!(error = %e, "cannot learn the range table");
                return;
            }
        };
        lock(&self.routes).set_ranges(table);
    }

    /// Sends one request and returns `(served_at, body)`, following
    /// `NotLeader` replies (nothing was written when a node sends one, so
    /// retrying elsewhere is safe) up to [`MAX_ATTEMPTS`] times.
    async fn call(&self, req: &RequestV1) -> Result<(Timestamp, ResponseBodyV1), ClientError> {
        let frame = wire::encode_request(req);
        let target = Target::of(req);
        let timeout = self.cfg.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        for _ in 0..MAX_ATTEMPTS {
            let (asked, raw) = tokio::time::timeout_at(deadline, self.send_routed(&target, &frame))
                .await
                .map_err(|_| ClientError::Timeout(timeout))??;
            match wire::decode_response(&raw).map_err(|e| ClientError::Protocol(e.to_string()))? {
                ResponseV1::Ok { served_at, body } => return Ok((Timestamp(served_at), body)),
                ResponseV1::Err { code, message } => {
                    return Err(ClientError::Api(wire::api_error(code, message)))
                }
                ResponseV1::NotLeader { leader, message } => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ClientError::Api(ApiError::not_leader(message, leader)));
                    }
                    if !lock(&self.routes).knows_ranges() {
                        let _ = tokio::time::timeout_at(deadline, self.learn_ranges()).await;
                    }
                    let named = leader.as_deref().and_then(|l| l.parse::<SocketAddr>().ok());
                    let cached =
                        lock(&self.routes).not_leader(&target, asked, named, Instant::now());
                    if !cached {
                        tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    }
                }
            }
        }
        Err(ClientError::Api(ApiError::not_leader(
            format!("no leader found after {MAX_ATTEMPTS} attempts"),
            None,
        )))
    }

    /// Sends a raw frame payload to the home node and returns the raw reply
    /// payload. Moves on to another node only if the request could not be
    /// sent at all.
    pub async fn exchange(&self, frame: &[u8]) -> Result<Vec<u8>, ClientError> {
        tokio::time::timeout(
            self.cfg.request_timeout,
            self.send_routed(&Target::Any, frame),
        )
        .await
        .map_err(|_| ClientError::Timeout(self.cfg.request_timeout))?
        .map(|(_, raw)| raw)
    }

    /// The range table and cached leaders (empty until a node first
    /// answered `NotLeader`).
    pub fn cached_routes(&self) -> Vec<RouteRange> {
        lock(&self.routes)
            .ranges()
            .map(<[RouteRange]>::to_vec)
            .unwrap_or_default()
    }

    fn unexpected(body: ResponseBodyV1) -> ClientError {
        ClientError::Protocol(format!("unexpected response body {body:?}"))
    }

    /// Reads the latest value of `key` (linearizable on a single node).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<GetResponse, ClientError> {
        self.get_at_opt(key.as_ref(), None).await
    }

    /// Reads `key` at snapshot timestamp `at`.
    pub async fn get_at(
        &self,
        key: impl AsRef<[u8]>,
        at: Timestamp,
    ) -> Result<GetResponse, ClientError> {
        self.get_at_opt(key.as_ref(), Some(at)).await
    }

    async fn get_at_opt(
        &self,
        key: &[u8],
        at: Option<Timestamp>,
    ) -> Result<GetResponse, ClientError> {
        self.get_with(key, at, ReadConsistency::Linearizable).await
    }

    /// Reads `key` with a chosen consistency: `Serializable` is answered by
    /// whichever node receives it, from what it has applied (cheaper, maybe
    /// stale: `served_at` tells how stale); `Linearizable` is the default.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        at: Option<Timestamp>,
        consistency: ReadConsistency,
    ) -> Result<GetResponse, ClientError> {
        let req = RequestV1::GetWith {
            key: key.as_ref().to_vec(),
            at: at.map(|t| t.0),
            consistency: consistency.into(),
        };
        match self.call(&req).await? {
            (served_at, ResponseBodyV1::Value(kv)) => Ok(GetResponse {
                kv: kv.map(KeyValue::from),
                served_at,
            }),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// One range page with a chosen consistency (see [`Client::get_with`]).
    pub async fn range_with(
        &self,
        start: impl AsRef<[u8]>,
        end: Option<&[u8]>,
        limit: u32,
        at: Option<Timestamp>,
        consistency: ReadConsistency,
    ) -> Result<RangeResponse, ClientError> {
        let req = RequestV1::RangeWith {
            start: start.as_ref().to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
            at: at.map(|t| t.0),
            consistency: consistency.into(),
        };
        match self.call(&req).await? {
            (served_at, ResponseBodyV1::Page { kvs, next }) => Ok(RangeResponse {
                kvs: kvs.into_iter().map(KeyValue::from).collect(),
                next,
                served_at,
            }),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Writes `value` at `key`; returns once durable per the node's fsync policy.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<WriteResponse, ClientError> {
        let req = RequestV1::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        };
        self.write(&req).await
    }

    /// Deletes `key`; `existed` says whether there was a live value.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<WriteResponse, ClientError> {
        let req = RequestV1::Delete {
            key: key.as_ref().to_vec(),
        };
        self.write(&req).await
    }

    async fn write(&self, req: &RequestV1) -> Result<WriteResponse, ClientError> {
        match self.call(req).await? {
            (_, ResponseBodyV1::Written { version, existed }) => Ok(WriteResponse {
                version: Timestamp(version),
                existed,
            }),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// One page of live keys in `[start, end)`; `limit` 0 = server default;
    /// `at` = snapshot (use the first page's `served_at` for the rest).
    pub async fn range(
        &self,
        start: impl AsRef<[u8]>,
        end: Option<&[u8]>,
        limit: u32,
        at: Option<Timestamp>,
    ) -> Result<RangeResponse, ClientError> {
        self.range_with(start, end, limit, at, ReadConsistency::Linearizable)
            .await
    }

    /// Every live key starting with `prefix`, following pages on one snapshot,
    /// up to `max_keys` (an error is never silently truncated: `truncated` says so).
    pub async fn list_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        max_keys: usize,
    ) -> Result<(Vec<KeyValue>, bool), ClientError> {
        let end = prefix_end(prefix.as_ref());
        let mut start = prefix.as_ref().to_vec();
        let mut at = self.listing_ts(&start, end.as_deref()).await?;
        let mut out = Vec::new();
        loop {
            let page_limit =
                u32::try_from((max_keys - out.len()).min(crate::limits::DEFAULT_SCAN_PAGE))
                    .unwrap_or(1000);
            let page = self
                .range(&start, end.as_deref(), page_limit.max(1), at)
                .await?;
            at = Some(page.served_at);
            out.extend(page.kvs);
            match page.next {
                Some(next) if out.len() < max_keys => start = next,
                Some(_) => return Ok((out, true)),
                None => return Ok((out, false)),
            }
        }
    }

    /// The timestamp at which a listing of `[start, end)` reads every range,
    /// when it spans more than one (docs/consistency.md R3c): the highest of
    /// the ranges' own linearizable read timestamps, each taken after the
    /// listing began. So no write acknowledged before the listing began is
    /// missed, whatever the range leaders' clocks say. `None` (the first page
    /// picks it) when the span lies in one range or there is no range table.
    async fn listing_ts(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<Option<Timestamp>, ClientError> {
        self.learn_ranges().await;
        let spans: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
            let routes = lock(&self.routes);
            let Some(ranges) = routes.ranges() else {
                return Ok(None);
            };
            ranges
                .iter()
                .filter(|r| {
                    end.is_none_or(|e| r.start.as_slice() < e)
                        && r.end.as_deref().is_none_or(|re| start < re)
                })
                .map(|r| {
                    let s = r.start.as_slice().max(start).to_vec();
                    let e = match (r.end.as_deref(), end) {
                        (Some(a), Some(b)) => Some(a.min(b).to_vec()),
                        (a, b) => a.or(b).map(<[u8]>::to_vec),
                    };
                    (s, e)
                })
                .collect()
        };
        if spans.len() < 2 {
            return Ok(None);
        }
        let reads = spans
            .iter()
            .map(|(s, e)| self.range(s, e.as_deref(), 1, None));
        let pages = futures_util::future::try_join_all(reads).await?;
        Ok(pages.iter().map(|p| p.served_at).max())
    }

    /// Runs an atomic transaction.
    pub async fn txn(&self, txn: &Txn) -> Result<TxnResponse, ClientError> {
        match self.call(&RequestV1::Txn(txn.into())).await? {
            (_, ResponseBodyV1::Txn { succeeded, version }) => Ok(TxnResponse {
                succeeded,
                version: Timestamp(version),
            }),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Version history of `key`, newest first (within the history window).
    pub async fn history(
        &self,
        key: impl AsRef<[u8]>,
        limit: u32,
    ) -> Result<HistoryResponse, ClientError> {
        let req = RequestV1::History {
            key: key.as_ref().to_vec(),
            limit,
        };
        match self.call(&req).await? {
            (served_at, ResponseBodyV1::History(entries)) => Ok(HistoryResponse {
                entries: entries.into_iter().map(VersionEntry::from).collect(),
                served_at,
            }),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// The connected node's status.
    pub async fn status(&self) -> Result<StatusV1, ClientError> {
        match self.call(&RequestV1::Status).await? {
            (_, ResponseBodyV1::Status(s)) => Ok(s),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Every range group as the connected node sees it.
    pub async fn region_status(&self) -> Result<Vec<crate::wire::RangeStatusV1>, ClientError> {
        match self.call(&RequestV1::RegionStatus).await? {
            (_, ResponseBodyV1::RegionStatus(s)) => Ok(s),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Changes one range group's voters (admin certificate); follows the
    /// redirect to the range's leader. Returns the voters afterwards.
    pub async fn region_change(
        &self,
        range: u64,
        change: crate::wire::MembershipChangeV1,
    ) -> Result<Vec<u64>, ClientError> {
        let req = RequestV1::RegionChange(crate::wire::RegionChangeV1 { range, change });
        match self.call(&req).await? {
            (_, ResponseBodyV1::RegionChanged { voters, .. }) => Ok(voters),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// The cluster's members as the connected node's gossip sees them.
    pub async fn members(&self) -> Result<Vec<crate::wire::MemberV1>, ClientError> {
        match self.call(&RequestV1::Members).await? {
            (_, ResponseBodyV1::Members(m)) => Ok(m),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Range-leader hints the connected node heard through gossip.
    pub async fn leader_hints(&self) -> Result<Vec<crate::wire::LeaderHintV1>, ClientError> {
        match self.call(&RequestV1::LeaderHints).await? {
            (_, ResponseBodyV1::LeaderHints(h)) => Ok(h),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// A peer liveness probe; only node certificates may send it.
    pub async fn peer_ping(&self) -> Result<Timestamp, ClientError> {
        match self.call(&RequestV1::PeerPing).await? {
            (ts, ResponseBodyV1::Pong) => Ok(ts),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Closes every connection gracefully.
    pub async fn close(&self) {
        let conns: Vec<_> = lock(&self.pool).drain().map(|(_, c)| c).collect();
        for c in conns {
            c.close(0u32.into(), b"client closed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn endpoints_parse() {
        let e = parse_endpoints("127.0.0.1:1, localhost:2").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].port(), 2);
        assert!(parse_endpoints("nope").is_err());
        assert!(parse_endpoints("").is_err());
    }
}
