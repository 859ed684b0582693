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
//! One QUIC connection per client, one bidirectional stream per request, so
//! requests are multiplexed without head-of-line blocking. On a broken
//! connection the client reconnects to the next endpoint. A request is retried
//! on another endpoint only when it provably never reached a node (the stream
//! could not be opened); otherwise the error is returned, because a write may
//! have committed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::RwLock;

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
    /// The current connection and the address it goes to.
    conn: RwLock<Option<(SocketAddr, quinn::Connection)>>,
}

/// Most times one request follows a `NotLeader` reply before giving up
/// (the request timeout bounds the whole attempt as well).
const MAX_REDIRECTS: usize = 50;
/// Pause before retrying when the reply named no leader (an election is on).
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(100);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.cfg.endpoints)
            .finish()
    }
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
            cfg,
            conn: RwLock::new(None),
        };
        client.connection().await?;
        Ok(client)
    }

    async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        if let Some((_, c)) = self.conn.read().await.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let mut guard = self.conn.write().await;
        if let Some((_, c)) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        // Start after the endpoint that failed, so a dead node is skipped.
        let eps = &self.cfg.endpoints;
        let failed = guard
            .as_ref()
            .and_then(|(a, _)| eps.iter().position(|e| e == a));
        let start = failed.map_or(0, |i| i + 1);
        let mut last = String::new();
        for k in 0..eps.len() {
            let addr = eps[(start + k) % eps.len()];
            match self.dial(addr).await {
                Ok(c) => {
                    *guard = Some((addr, c.clone()));
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(ClientError::Connect {
            endpoints: eps
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            last,
        })
    }

    async fn dial(&self, addr: SocketAddr) -> Result<quinn::Connection, String> {
        let attempt = transport::connect(&self.endpoint, addr, None);
        match tokio::time::timeout(self.cfg.request_timeout, attempt).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("{addr}: {e}")),
            Err(_) => Err(format!("{addr}: timed out")),
        }
    }

    /// Points the client at the leader a node named (or, with no name, at the
    /// next endpoint after a short pause while the election settles).
    async fn follow_redirect(&self, leader: Option<String>) {
        let addr = leader.and_then(|l| l.parse::<SocketAddr>().ok());
        if let Some(addr) = addr {
            if let Ok(conn) = self.dial(addr).await {
                let mut guard = self.conn.write().await;
                if let Some((_, old)) = guard.replace((addr, conn)) {
                    old.close(0u32.into(), b"redirected to the leader");
                }
                return;
            }
            // The named leader is unreachable (a stale hint while an election
            // runs): fall through and try the next endpoint after a pause.
        }
        tokio::time::sleep(NO_LEADER_BACKOFF).await;
        let guard = self.conn.write().await;
        if let Some((_, c)) = guard.as_ref() {
            // Closing makes `connection()` move on to the next endpoint.
            c.close(0u32.into(), b"looking for the leader");
        }
    }

    /// Sends one request and returns `(served_at, body)`, following
    /// `NotLeader` replies (nothing was written when a node sends one, so
    /// retrying elsewhere is safe) up to [`MAX_REDIRECTS`] times.
    async fn call(&self, req: &RequestV1) -> Result<(Timestamp, ResponseBodyV1), ClientError> {
        let frame = wire::encode_request(req);
        let timeout = self.cfg.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        for _ in 0..MAX_REDIRECTS {
            let raw = tokio::time::timeout_at(deadline, self.exchange(&frame))
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
                    self.follow_redirect(leader).await;
                }
            }
        }
        Err(ClientError::Api(ApiError::not_leader(
            format!("no leader found after {MAX_REDIRECTS} redirects"),
            None,
        )))
    }

    /// Sends a raw frame payload and returns the raw reply payload. Retries on
    /// another endpoint only if the stream could not even be opened.
    pub async fn exchange(&self, frame: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut attempts = 0;
        let (mut send, mut recv) = loop {
            let conn = self.connection().await?;
            match conn.open_bi().await {
                Ok(s) => break s,
                Err(e) if attempts + 1 < self.cfg.endpoints.len().max(2) => {
                    attempts += 1;
                    tracing::debug!(error = %e, "stream open failed; reconnecting");
                }
                Err(e) => return Err(ClientError::Transport(e.to_string())),
            }
        };
        transport::write_frame(&mut send, frame)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let _ = send.finish();
        transport::read_frame(&mut recv, crate::limits::HARD_MAX_REQUEST_BYTES)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))
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
        let mut at = None;
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

    /// Closes the connection gracefully.
    pub async fn close(&self) {
        if let Some((_, c)) = self.conn.write().await.take() {
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
