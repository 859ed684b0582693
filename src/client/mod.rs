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
//! blocking. [`Client::connect`] dials every endpoint at once and starts
//! with the first completed handshake: a dead endpoint costs no timeout.
//! An endpoint listed earlier whose handshake completes soon after (within
//! the dial grace) becomes home then, so listed order still decides where
//! requests without a leader go when the nodes answer alike.
//! Requests that need a range's leader go to the leader the client has
//! cached for that range (see [`routes`]): a `NotLeader` reply updates the
//! cache and the request is retried, so a stale cache heals itself.
//!
//! A node that stops answering is noticed from silence measured against the
//! connection's round trip, with keep-alives (see [`liveness`]), not from
//! QUIC's idle timeout: a request in flight to it fails at once with
//! [`ClientError::OutcomeUnknown`] and the next goes elsewhere.
//!
//! A request is retried on another node only when it provably never reached
//! one (no connection, or the stream could not be opened), was refused with
//! `NotLeader`, or only reads and its node died under it; otherwise the
//! error is returned. Errors say what they
//! mean for the data: [`ClientError::Api`] is a refusal (nothing written),
//! [`ClientError::OutcomeUnknown`] (`MER-3005`) means a write may or may not
//! have been applied.

mod error;
mod lease;
mod level;
pub mod liveness;
mod lock;
pub mod routes;
mod service;
mod watch_stream;
pub use watch_stream::{WatchEnd, WatchOptions, WatchStream};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use error::{ClientError, OutcomeUnknown};
pub use lease::{KeptLease, Lease, LeaseKeeper, KEEPER_RETRY};
pub use level::{
    policy_for, LevelGetResponse, LevelRangeResponse, Session, SessionToken, TokenError,
};
use liveness::{Liveness, Verdict};
pub use lock::LockHolder;
use routes::Routes;
pub use routes::{RouteRange, Target};
pub use service::{ServiceChange, ServiceRegistration, ServiceWatch};
use tokio::sync::watch;
use tracing::Instrument;

use crate::error_code::{ApiError, ErrorCode};
use crate::transport::{self, EndpointLimits, FrameError, TlsFiles};
pub use crate::types::prefix_end;
use crate::types::{KeyValue, ReadConsistency, Timestamp, Txn, VersionEntry};
use crate::wire::{self, RequestV1, ResponseBodyV1, ResponseV1, StatusV1};

/// Client-side QUIC idle timeout: the backstop that frees a connection
/// nobody uses any more. Dead nodes are noticed sooner, by [`liveness`].
pub const CLIENT_IDLE_TIMEOUT_MS: u64 = 3_000;
/// Client keep-alive interval ([`liveness::KEEP_ALIVE`]): a quiet
/// connection pings its node this often, so silence means a dead node.
pub const CLIENT_KEEP_ALIVE_MS: u64 = liveness::KEEP_ALIVE.as_millis() as u64;

/// Default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default endpoint: the single-node `meridian serve` default.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7379";
/// Default certificate directory of `meridian serve` with no config.
pub const DEFAULT_CERT_DIR: &str = "meridian-data/certs";

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Nodes to try; all are dialled at once, the first to answer is home
    /// until one listed before it answers within the dial grace.
    pub endpoints: Vec<SocketAddr>,
    /// CA, certificate and key (role client or admin).
    pub tls: TlsFiles,
    /// Per-request timeout (connect included).
    pub request_timeout: Duration,
    /// Local address every connection leaves from (`IP:port`, port 0 for
    /// any free port; see [`parse_bind`]); `None`: the unspecified address,
    /// so the OS picks the source (127.0.0.1 for loopback nodes). Bind an
    /// address when the source matters: the WAN emulator of `meridian dev`
    /// tells a sender's region from its source IP, so a client bound to
    /// `127.0.2.200` is a client in the second region.
    pub bind: Option<SocketAddr>,
}

impl ClientConfig {
    /// Builds a config from `MERIDIAN_ENDPOINTS`, `MERIDIAN_CA`, `MERIDIAN_CERT`,
    /// `MERIDIAN_KEY` and `MERIDIAN_BIND`, falling back to the single-node
    /// defaults of `meridian serve` (127.0.0.1:7379 and the certificates under
    /// ./meridian-data/certs, no bound address).
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
            bind: var("MERIDIAN_BIND")
                .as_deref()
                .map(parse_bind)
                .transpose()?,
        })
    }
}

/// Parses a local address to bind: an IP (`127.0.2.200`, `::1`; any free
/// port) or an `IP:port` (`127.0.2.200:0`, `[::1]:9000`).
pub fn parse_bind(s: &str) -> Result<SocketAddr, ClientError> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    s.parse().map_err(|_| {
        ClientError::Config(format!(
            "bind address `{s}` is neither an IP address nor IP:port"
        ))
    })
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

/// One page of a key's history ([`Client::history_page`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// Versions, newest first; `value: None` is a delete.
    pub entries: Vec<VersionEntry>,
    /// Pass as `before` for the next page; `None` when no older version
    /// remains.
    pub next_before: Option<Timestamp>,
    /// HLC timestamp it was served at.
    pub served_at: Timestamp,
}

/// A pooled connection and the task that watches its node's liveness.
struct Pooled {
    conn: quinn::Connection,
    /// Becomes `Some(silent_for)` when the watcher gives the node up.
    dead: watch::Receiver<Option<Duration>>,
    watcher: tokio::task::AbortHandle,
}

impl Drop for Pooled {
    /// A connection no longer pooled needs no watching.
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

type Pool = Arc<Mutex<HashMap<SocketAddr, Pooled>>>;
/// A usable connection and its watcher's verdict.
type Connected = (quinn::Connection, watch::Receiver<Option<Duration>>);

/// A committed policy change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyChanged {
    /// The policy table's version after it.
    pub version: u64,
    /// The changed policy's epoch (0 for a removal).
    pub epoch: u64,
    /// The table after it, as the control range's leader holds it.
    pub policies: crate::wire::PoliciesV1,
}

/// An async Meridian client. Clone-free: share it behind an `Arc`.
pub struct Client {
    endpoint: quinn::Endpoint,
    cfg: ClientConfig,
    /// One QUIC connection per node address, shared by every request to it.
    pool: Pool,
    /// The leader cache (see [`routes`]).
    routes: Arc<Mutex<Routes>>,
    /// Serialises learning the range table (one region-status call at a time).
    learning: tokio::sync::Mutex<()>,
    /// The task finishing the handshakes [`Client::connect`] did not wait for.
    dialing: Mutex<Option<tokio::task::AbortHandle>>,
}

/// Most sends one request makes after a `WrongRegion` refusal: to the node
/// of the home region it names, then to that region's leader (a
/// `NotLeader` there), and once more if the home moved meanwhile.
pub const MAX_REGION_HOPS: usize = 4;

/// A successful reply: its snapshot timestamp, for a level read its
/// staleness and session token, and the body.
struct Answer {
    served_at: Timestamp,
    /// `(staleness_ms, token)` of a level read ([`ResponseV1::OkLevel`]).
    level: Option<(u64, Timestamp)>,
    body: ResponseBodyV1,
}

/// What a reply means for [`Client::call_answer`].
enum Reply {
    /// A result.
    Done(Answer),
    /// Not the range's leader; nothing was written.
    NotLeader {
        leader: Option<String>,
        message: String,
    },
    /// Not the prefix's home region; nothing was written.
    WrongRegion(ApiError),
}

impl Answer {
    /// Sorts a decoded reply; a node's error is returned as the error.
    fn of(reply: ResponseV1) -> Result<Reply, ClientError> {
        Ok(match reply {
            ResponseV1::Ok { served_at, body } => Reply::Done(Answer {
                served_at: Timestamp(served_at),
                level: None,
                body,
            }),
            ResponseV1::OkLevel {
                served_at,
                staleness_ms,
                token,
                body,
            } => Reply::Done(Answer {
                served_at: Timestamp(served_at),
                level: Some((staleness_ms, Timestamp(token))),
                body,
            }),
            ResponseV1::Err { code, message } => return Err(wire::api_error(code, message).into()),
            ResponseV1::NotLeader { leader, message } => Reply::NotLeader { leader, message },
            ResponseV1::WrongRegion {
                home,
                addr,
                message,
            } => Reply::WrongRegion(ApiError::wrong_region(message, home, addr)),
            // Only a watch stream ends so (`client::watch` reads those).
            ResponseV1::WatchEnded { code, message, .. } => {
                return Err(wire::api_error(code, message).into())
            }
        })
    }
}

/// Most times one request is retried (after `NotLeader` or an unreachable
/// node) before giving up; the request timeout bounds the whole attempt too.
const MAX_ATTEMPTS: usize = 50;
/// Pause before retrying when no leader is known (an election is on).
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(50);
/// Longest a connection attempt to one node may take.
const DIAL_TIMEOUT: Duration = Duration::from_millis(CLIENT_IDLE_TIMEOUT_MS);
/// Longest [`Client::close`] waits for its connections to drain.
const CLOSE_DRAIN_MAX: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.cfg.endpoints)
            .finish()
    }
}

impl Drop for Client {
    /// Stops the background handshakes (they would end by their own
    /// timeout, but need not outlive the client).
    fn drop(&mut self) {
        if let Some(dialing) = lock(&self.dialing).take() {
            dialing.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a request could not be exchanged with one node.
enum SendFailure {
    /// The node could not be reached; the request provably was not sent,
    /// so another node may be tried.
    NotSent(String),
    /// A final answer for the caller (a refusal before sending, or an
    /// unknown outcome after); not retried.
    Final(ClientError),
}

/// One handshake, bounded by `timeout`.
async fn dial(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<quinn::Connection, String> {
    match tokio::time::timeout(timeout, transport::connect(endpoint, addr, None)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: no handshake within {timeout:?}")),
    }
}

/// Pools `conn` for `addr` unless a live one is there already, with a task
/// watching its liveness; returns the pooled connection and its verdict.
fn pool_insert(
    pool: &Pool,
    routes: &Arc<Mutex<Routes>>,
    addr: SocketAddr,
    conn: quinn::Connection,
) -> (quinn::Connection, watch::Receiver<Option<Duration>>) {
    let mut pooled = lock(pool);
    if let Some(p) = pooled.get(&addr) {
        if p.conn.close_reason().is_none() {
            conn.close(0u32.into(), b"duplicate connection");
            return (p.conn.clone(), p.dead.clone());
        }
    }
    let (tell, dead) = watch::channel(None);
    let watcher = tokio::spawn(watch_liveness(
        addr,
        conn.clone(),
        tell,
        Arc::downgrade(pool),
        Arc::downgrade(routes),
    ));
    let entry = Pooled {
        conn: conn.clone(),
        dead: dead.clone(),
        watcher: watcher.abort_handle(),
    };
    pooled.insert(addr, entry);
    (conn, dead)
}

/// Owns one connection's [`Liveness`]: looks at quinn's count of received
/// datagrams when the rule asks, and when the node has been silent past its
/// bound says so on `tell`, avoids the node and forgets the connection.
/// Holds the pool and routes weakly, so a dropped client drops its pool and
/// with it (see [`Pooled`]'s `Drop`) this task.
async fn watch_liveness(
    addr: SocketAddr,
    conn: quinn::Connection,
    tell: watch::Sender<Option<Duration>>,
    pool: Weak<Mutex<HashMap<SocketAddr, Pooled>>>,
    routes: Weak<Mutex<Routes>>,
) {
    let mut live = Liveness::new(Instant::now(), conn.stats().udp_rx.datagrams);
    let silent_for = loop {
        if conn.close_reason().is_some() {
            return; // requests on it fail by themselves
        }
        let rx = conn.stats().udp_rx.datagrams;
        match live.observe(Instant::now(), rx, conn.rtt()) {
            Verdict::Alive { check_at } | Verdict::Suspect { check_at } => {
                tokio::time::sleep_until(check_at.into()).await;
            }
            Verdict::Dead { silent_for } => break silent_for,
        }
    };
    tracing::info!(%addr, ?silent_for, "node stopped answering; avoiding it");
    let _ = tell.send(Some(silent_for));
    if let Some(routes) = routes.upgrade() {
        lock(&routes).unreachable(addr, Instant::now());
    }
    // Forgotten, not closed: requests still on it end with their own
    // "unresponsive" verdict, and it closes when the last lets go of it.
    // (Removing the entry aborts this task, which ends here anyway.)
    if let Some(pool) = pool.upgrade() {
        let mut pool = lock(&pool);
        if pool
            .get(&addr)
            .is_some_and(|p| p.conn.stable_id() == conn.stable_id())
        {
            pool.remove(&addr);
        }
    }
}

/// Resolves with how long the node was silent once its watcher gives it up;
/// never resolves while it answers (or once the watcher is gone).
async fn until_dead(mut dead: watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(silent_for) = *dead.borrow_and_update() {
            return silent_for;
        }
        if dead.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

type Dials = tokio::task::JoinSet<(SocketAddr, Result<quinn::Connection, String>)>;

/// Completes the handshakes [`Client::connect`] did not wait for, pooling
/// the connections. Endpoints still handshaking `grace` from now are avoided
/// until their handshake completes (a dead endpoint never completes).
async fn finish_dials(
    mut dials: Dials,
    mut pending: Vec<SocketAddr>,
    grace: Duration,
    pool: Pool,
    routes: Arc<Mutex<Routes>>,
) {
    let grace_end = tokio::time::Instant::now() + grace;
    let mut in_grace = true;
    loop {
        let joined = if in_grace {
            match tokio::time::timeout_at(grace_end, dials.join_next()).await {
                Ok(joined) => joined,
                Err(_) => {
                    in_grace = false;
                    let mut routes = lock(&routes);
                    for addr in &pending {
                        tracing::debug!(%addr, ?grace, "no handshake yet; avoiding the endpoint");
                        routes.unreachable(*addr, Instant::now());
                    }
                    continue;
                }
            }
        } else {
            dials.join_next().await
        };
        let Some(joined) = joined else { return };
        let Ok((addr, result)) = joined else { continue };
        pending.retain(|a| *a != addr);
        match result {
            Ok(conn) => {
                pool_insert(&pool, &routes, addr, conn);
                lock(&routes).handshake_completed(addr, in_grace);
            }
            Err(e) => {
                tracing::debug!(error = %e, "endpoint unreachable");
                lock(&routes).unreachable(addr, Instant::now());
            }
        }
    }
}

impl Client {
    /// Loads the certificates, dials every endpoint at once and returns as
    /// soon as one handshake completes (that endpoint becomes home); the
    /// other handshakes finish in the background, and one listed earlier
    /// that completes within the dial grace becomes home instead.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints given".into()));
        }
        // Frequent keep-alives make a dead node's silence visible within a
        // few round trips (see `liveness`); the idle timeout only frees
        // connections nobody uses.
        let limits = EndpointLimits {
            idle_timeout_ms: CLIENT_IDLE_TIMEOUT_MS,
            keep_alive_ms: CLIENT_KEEP_ALIVE_MS,
            ..EndpointLimits::default()
        };
        let endpoint = match cfg.bind {
            Some(bind) => transport::client_endpoint_on(bind, &cfg.tls, &limits),
            None => transport::client_endpoint(&cfg.tls, &limits),
        }
        .map_err(|e| ClientError::Config(e.to_string()))?;
        let client = Client {
            endpoint,
            routes: Arc::new(Mutex::new(Routes::new(cfg.endpoints.clone(), 0))),
            cfg,
            pool: Arc::new(Mutex::new(HashMap::new())),
            learning: tokio::sync::Mutex::new(()),
            dialing: Mutex::new(None),
        };
        // Fail fast on bad certificates or no reachable node: find a home.
        client
            .dial_all()
            .await
            .map_err(|last| client.connect_error(last))?;
        Ok(client)
    }

    /// Dials every endpoint concurrently; returns when the first handshake
    /// completes, or with the last error when none does.
    async fn dial_all(&self) -> Result<(), String> {
        let timeout = DIAL_TIMEOUT.min(self.cfg.request_timeout);
        let started = Instant::now();
        let mut dials = Dials::new();
        for &addr in &self.cfg.endpoints {
            let endpoint = self.endpoint.clone();
            dials.spawn(async move { (addr, dial(&endpoint, addr, timeout).await) });
        }
        let mut pending = self.cfg.endpoints.clone();
        let mut last = String::from("no endpoint answered");
        while let Some(joined) = dials.join_next().await {
            let (addr, result) = match joined {
                Ok(done) => done,
                Err(e) => {
                    last = format!("dial task failed: {e}");
                    continue;
                }
            };
            pending.retain(|a| *a != addr);
            match result {
                Ok(conn) => {
                    pool_insert(&self.pool, &self.routes, addr, conn);
                    lock(&self.routes).prefer(addr);
                    let grace = liveness::dial_grace(started.elapsed(), timeout);
                    let (pool, routes) = (self.pool.clone(), self.routes.clone());
                    let rest = tokio::spawn(finish_dials(dials, pending, grace, pool, routes));
                    *lock(&self.dialing) = Some(rest.abort_handle());
                    return Ok(());
                }
                Err(e) => {
                    lock(&self.routes).unreachable(addr, Instant::now());
                    last = e;
                }
            }
        }
        Err(last)
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

    /// `addr`'s pooled connection if it is usable; `Ok(None)` if there is
    /// none (or it was closed on purpose), an error if its node is gone.
    fn pooled(&self, addr: SocketAddr) -> Result<Option<Connected>, String> {
        let mut pool = lock(&self.pool);
        let Some(p) = pool.get(&addr) else {
            return Ok(None);
        };
        match p.conn.close_reason() {
            None => {}
            // Keep-alives went unanswered: the node is gone (or cut off).
            Some(e @ (quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset)) => {
                pool.remove(&addr);
                return Err(format!("{addr}: connection lost: {e}"));
            }
            // Closed on purpose (e.g. a restart): dial again.
            Some(_) => {
                pool.remove(&addr);
                return Ok(None);
            }
        }
        let verdict = *p.dead.borrow();
        if let Some(silent_for) = verdict {
            pool.remove(&addr);
            return Err(format!("{addr}: silent for {silent_for:?}"));
        }
        Ok(Some((p.conn.clone(), p.dead.clone())))
    }

    /// The pooled connection to `addr`, dialled if there is none alive.
    async fn connection(&self, addr: SocketAddr) -> Result<Connected, String> {
        if let Some(connected) = self.pooled(addr)? {
            return Ok(connected);
        }
        let timeout = DIAL_TIMEOUT.min(self.cfg.request_timeout);
        let conn = dial(&self.endpoint, addr, timeout).await?;
        let connected = pool_insert(&self.pool, &self.routes, addr, conn);
        lock(&self.routes).reachable(addr);
        Ok(connected)
    }

    /// Sends `frame` to `addr` on a new stream and reads the reply, while
    /// watching that the node still answers. Sets `sent` once the request
    /// may have reached the node.
    async fn exchange_at(
        &self,
        addr: SocketAddr,
        frame: &[u8],
        sent: &AtomicBool,
    ) -> Result<Vec<u8>, SendFailure> {
        let (conn, dead) = self.connection(addr).await.map_err(SendFailure::NotSent)?;
        let exchange = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| SendFailure::NotSent(format!("{addr}: {e}")))?;
            sent.store(true, Ordering::Relaxed);
            write_and_read(&mut send, &mut recv, frame).await
        };
        tokio::select! {
            result = exchange => result,
            silent_for = until_dead(dead) => {
                if sent.load(Ordering::Relaxed) {
                    Err(SendFailure::Final(
                        OutcomeUnknown::Unresponsive { addr, silent_for }.into(),
                    ))
                } else {
                    Err(SendFailure::NotSent(format!("{addr}: silent for {silent_for:?}")))
                }
            }
        }
    }

    /// Sends `frame` to where `target` routes, moving on to other nodes while
    /// none can be reached (the request was then provably not sent) or, for
    /// a `read_only` request, while the node it reached died under it.
    async fn send_routed(
        &self,
        target: &Target,
        frame: &[u8],
        read_only: bool,
        sent: &AtomicBool,
    ) -> Result<(SocketAddr, Vec<u8>), ClientError> {
        let mut last = String::new();
        // Every endpoint once, plus a cached leader that may not be one of them.
        for _ in 0..=self.cfg.endpoints.len() {
            let addr = lock(&self.routes).pick(target, Instant::now());
            match self.exchange_at(addr, frame, sent).await {
                Ok(raw) => return Ok((addr, raw)),
                // A read changes nothing: send it to another node instead.
                Err(SendFailure::Final(ClientError::OutcomeUnknown(
                    e @ (OutcomeUnknown::Unresponsive { .. } | OutcomeUnknown::ConnectionLost(_)),
                ))) if read_only => {
                    tracing::debug!(error = %e, "read cut off; sending it to another node");
                    lock(&self.routes).unreachable(addr, Instant::now());
                    last = e.to_string();
                }
                Err(SendFailure::Final(e)) => return Err(e),
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

    /// [`Client::send_routed`] within the request timeout, which ends as
    /// [`OutcomeUnknown::Timeout`] if a request that may write was in flight
    /// then, and as [`ClientError::Timeout`] (nothing written) otherwise.
    async fn send_routed_by(
        &self,
        deadline: tokio::time::Instant,
        target: &Target,
        frame: &[u8],
        read_only: bool,
    ) -> Result<(SocketAddr, Vec<u8>), ClientError> {
        let sent = AtomicBool::new(false);
        let timeout = self.cfg.request_timeout;
        let routed = self.send_routed(target, frame, read_only, &sent);
        match tokio::time::timeout_at(deadline, routed).await {
            Ok(result) => result,
            Err(_) if sent.load(Ordering::Relaxed) && !read_only => {
                Err(OutcomeUnknown::Timeout(timeout).into())
            }
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// Learns the range table from a node, once (a node without a region
    /// answers an error: then the table is empty and leaders are cached
    /// for the whole keyspace).
    async fn learn_ranges(&self, deadline: tokio::time::Instant) {
        let _one = self.learning.lock().await;
        if lock(&self.routes).knows_ranges() {
            return;
        }
        let frame = wire::encode_request(&RequestV1::RegionStatus);
        let table = match self
            .send_routed_by(deadline, &Target::Any, &frame, true)
            .await
        {
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
    /// retrying elsewhere is safe) up to [`MAX_ATTEMPTS`] times, and
    /// `WrongRegion` replies that name a node of the home region up to
    /// [`MAX_REGION_HOPS`] times.
    async fn call(&self, req: &RequestV1) -> Result<(Timestamp, ResponseBodyV1), ClientError> {
        let answer = self.call_answer(req).await?;
        Ok((answer.served_at, answer.body))
    }

    /// [`Client::call`], keeping a level read's staleness and token.
    async fn call_answer(&self, req: &RequestV1) -> Result<Answer, ClientError> {
        let span = crate::trace_context::call_span(|| tracing::debug_span!("client_request"));
        self.call_answer_in(req).instrument(span).await
    }

    /// [`Client::call_answer`] inside its span: every attempt's frame
    /// carries the span's trace context when it is sampled, so each node
    /// the request reaches joins one trace.
    async fn call_answer_in(&self, req: &RequestV1) -> Result<Answer, ClientError> {
        let frame = wire::encode_request_traced(req, crate::trace_context::current().as_ref());
        let target = Target::of(req);
        let read_only = routes::is_read_only(req);
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout;
        for _ in 0..MAX_ATTEMPTS {
            let (asked, raw) = self
                .send_routed_by(deadline, &target, &frame, read_only)
                .await?;
            let reply =
                wire::decode_response(&raw).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let (leader, message) = match Answer::of(reply)? {
                Reply::Done(answer) => return Ok(answer),
                Reply::WrongRegion(e) => return self.follow(&frame, read_only, deadline, e).await,
                // A level read goes to any node, so the leader cache (by
                // range) does not route it; when the node it reached needs
                // the leader (a causal read past its wait at the home
                // region), send it to the leader named.
                Reply::NotLeader { leader, message }
                    if target == Target::Any && leader.is_some() =>
                {
                    let e = ApiError::not_leader(message, leader);
                    return self.follow(&frame, read_only, deadline, e).await;
                }
                Reply::NotLeader { leader, message } => (leader, message),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Api(ApiError::not_leader(message, leader)));
            }
            if !lock(&self.routes).knows_ranges() {
                self.learn_ranges(deadline).await;
            }
            let named = leader.as_deref().and_then(|l| l.parse::<SocketAddr>().ok());
            let cached = lock(&self.routes).not_leader(&target, asked, named, Instant::now());
            if !cached {
                tokio::time::sleep(NO_LEADER_BACKOFF).await;
            }
        }
        Err(ClientError::Api(ApiError::not_leader(
            format!("no leader found after {MAX_ATTEMPTS} attempts"),
            None,
        )))
    }

    /// Follows a refusal that names where to go (nothing was written): a
    /// `WrongRegion` to the node of the home region it names, or a
    /// `NotLeader` to the leader, then further `NotLeader` redirects, at
    /// most [`MAX_REGION_HOPS`] sends in all. Returns the latest refusal
    /// when it names no node, or when the hops or the deadline run out.
    /// Leaders found here are not cached: the leader cache is by range of
    /// this client's own region.
    async fn follow(
        &self,
        frame: &[u8],
        read_only: bool,
        deadline: tokio::time::Instant,
        mut refusal: ApiError,
    ) -> Result<Answer, ClientError> {
        for _ in 0..MAX_REGION_HOPS {
            let Some(addr) = refusal
                .leader_hint
                .as_deref()
                .and_then(|a| a.parse::<SocketAddr>().ok())
            else {
                return Err(ClientError::Api(refusal));
            };
            let sent = AtomicBool::new(false);
            let raw = match tokio::time::timeout_at(deadline, self.exchange_at(addr, frame, &sent))
                .await
            {
                Ok(Ok(raw)) => raw,
                Ok(Err(SendFailure::Final(e))) => return Err(e),
                Ok(Err(SendFailure::NotSent(last))) => {
                    return Err(ClientError::Connect {
                        endpoints: addr.to_string(),
                        last,
                    })
                }
                Err(_) if sent.load(Ordering::Relaxed) && !read_only => {
                    return Err(OutcomeUnknown::Timeout(self.cfg.request_timeout).into())
                }
                Err(_) => return Err(ClientError::Timeout(self.cfg.request_timeout)),
            };
            let reply =
                wire::decode_response(&raw).map_err(|e| ClientError::Protocol(e.to_string()))?;
            match Answer::of(reply)? {
                Reply::Done(answer) => return Ok(answer),
                Reply::WrongRegion(e) => refusal = e,
                Reply::NotLeader { leader, message } => {
                    if leader.is_none() {
                        tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    }
                    // Same kind of refusal (and home region), new target.
                    refusal = ApiError {
                        message,
                        leader_hint: leader.or_else(|| Some(addr.to_string())),
                        ..refusal
                    };
                }
            }
        }
        Err(ClientError::Api(refusal))
    }

    /// Sends a raw frame payload to the home node and returns the raw reply
    /// payload. Moves on to another node only if the request could not be
    /// sent at all.
    pub async fn exchange(&self, frame: &[u8]) -> Result<Vec<u8>, ClientError> {
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout;
        // Raw frames may write: never resent after they may have arrived.
        self.send_routed_by(deadline, &Target::Any, frame, false)
            .await
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

    /// Reads the latest value of `key`, at the level its prefix promises:
    /// linearizable for a strong prefix (every key of a single region).
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

    /// A read that names no level: served at the level the key's prefix
    /// promises (linearizable for a strong prefix, at the home region's
    /// leader; the region's frontier for a causal one; the latest local
    /// state for an eventual one). Use [`Client::get_with`] or
    /// [`Client::get_at_level`] to ask for a level.
    async fn get_at_opt(
        &self,
        key: &[u8],
        at: Option<Timestamp>,
    ) -> Result<GetResponse, ClientError> {
        let req = RequestV1::Get {
            key: key.to_vec(),
            at: at.map(|t| t.0),
        };
        match self.call(&req).await? {
            (served_at, ResponseBodyV1::Value(kv)) => Ok(GetResponse {
                kv: kv.map(KeyValue::from),
                served_at,
            }),
            (_, other) => Err(Self::unexpected(other)),
        }
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

    /// [`Client::put`] stamped above a session token (writes follow reads):
    /// the node merges `token` into its clock first.
    pub async fn put_after(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        token: Timestamp,
    ) -> Result<WriteResponse, ClientError> {
        let req = RequestV1::PutAfter {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            token: token.0,
        };
        self.write(&req).await
    }

    /// [`Client::delete`] stamped above a session token.
    pub async fn delete_after(
        &self,
        key: impl AsRef<[u8]>,
        token: Timestamp,
    ) -> Result<WriteResponse, ClientError> {
        let req = RequestV1::DeleteAfter {
            key: key.as_ref().to_vec(),
            token: token.0,
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
    /// Served at the level the prefix of `start` promises (see
    /// [`Client::get`]).
    pub async fn range(
        &self,
        start: impl AsRef<[u8]>,
        end: Option<&[u8]>,
        limit: u32,
        at: Option<Timestamp>,
    ) -> Result<RangeResponse, ClientError> {
        let req = RequestV1::Range {
            start: start.as_ref().to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
            at: at.map(|t| t.0),
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
        self.learn_ranges(tokio::time::Instant::now() + self.cfg.request_timeout)
            .await;
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

    /// Version history of `key`, newest first (within the history window):
    /// at most `limit` versions (0: 1000), asked for a page at a time
    /// ([`Client::history_page`]), so a history larger than one reply's byte
    /// bound comes whole.
    pub async fn history(
        &self,
        key: impl AsRef<[u8]>,
        limit: u32,
    ) -> Result<HistoryResponse, ClientError> {
        let key = key.as_ref();
        let wanted = if limit == 0 {
            crate::limits::MAX_HISTORY_PAGE
        } else {
            usize::try_from(limit).unwrap_or(usize::MAX)
        };
        let page_limit = |left: usize| {
            u32::try_from(left.min(crate::limits::MAX_HISTORY_PAGE)).unwrap_or(u32::MAX)
        };
        let mut first = self.history_page(key, None, page_limit(wanted)).await?;
        let mut next = first.next_before;
        // Each page holds at least one version, so this ends within
        // `wanted` pages.
        while let Some(before) = next.filter(|_| first.entries.len() < wanted) {
            let left = page_limit(wanted - first.entries.len());
            let page = self.history_page(key, Some(before), left).await?;
            first.entries.extend(page.entries);
            next = page.next_before;
        }
        Ok(HistoryResponse {
            entries: first.entries,
            served_at: first.served_at,
        })
    }

    /// One page of `key`'s versions older than `before` (all, when `None`),
    /// newest first: at most `limit` (0: the server's maximum, 1000) and
    /// about the server's `limits.max_scan_page_bytes` of values.
    pub async fn history_page(
        &self,
        key: impl AsRef<[u8]>,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        let req = RequestV1::HistoryPage {
            key: key.as_ref().to_vec(),
            limit,
            before: before.map(|t| t.0),
        };
        match self.call(&req).await? {
            (
                served_at,
                ResponseBodyV1::HistoryPage {
                    entries,
                    next_before,
                },
            ) => Ok(HistoryPage {
                entries: entries.into_iter().map(VersionEntry::from).collect(),
                next_before: next_before.map(Timestamp),
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

    /// Every prefix policy and the default, as the connected node holds them.
    pub async fn policies(&self) -> Result<crate::wire::PoliciesV1, ClientError> {
        match self.call(&RequestV1::Policies).await? {
            (_, ResponseBodyV1::Policies(p)) => Ok(p),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Changes a policy in the control range (admin certificate): the
    /// prefix's (or, with `prefix: None`, the default's) fields that `set`
    /// names; the rest keep their value. The node forwards the client to
    /// the control range's leader. Refused with nothing changed when the
    /// result is invalid (`MER-1007`) or there is no control range
    /// (`MER-1010`). Turning a prefix strong or moving a strong prefix's
    /// home answers once its handoff is done (docs/consistency.md P3); a
    /// handoff that could not finish is `MER-3003`, and repeating the same
    /// change resumes it.
    pub async fn set_policy(
        &self,
        set: crate::wire::SetPolicyV1,
    ) -> Result<PolicyChanged, ClientError> {
        Self::policy_changed(self.call(&RequestV1::SetPolicy(set)).await?)
    }

    /// Removes `prefix`'s policy (admin certificate): its keys fall back to
    /// the default policy, under the same rules as [`Client::set_policy`].
    pub async fn remove_policy(&self, prefix: &[u8]) -> Result<PolicyChanged, ClientError> {
        let req = RequestV1::RemovePolicy {
            prefix: prefix.to_vec(),
        };
        Self::policy_changed(self.call(&req).await?)
    }

    fn policy_changed(reply: (Timestamp, ResponseBodyV1)) -> Result<PolicyChanged, ClientError> {
        match reply {
            (
                _,
                ResponseBodyV1::PolicyChanged {
                    version,
                    epoch,
                    policies,
                },
            ) => Ok(PolicyChanged {
                version,
                epoch,
                policies,
            }),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Each range's applied timestamp and frontier on the connected node,
    /// with the node's clock when it answered.
    pub async fn frontiers(
        &self,
    ) -> Result<(Timestamp, Vec<crate::wire::RangeFrontierV1>), ClientError> {
        match self.call(&RequestV1::Frontiers).await? {
            (at, ResponseBodyV1::Frontiers(f)) => Ok((at, f)),
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

    /// Closes every connection gracefully and stops dialling.
    pub async fn close(&self) {
        if let Some(dialing) = lock(&self.dialing).take() {
            dialing.abort();
        }
        let conns: Vec<_> = lock(&self.pool)
            .drain()
            .map(|(_, p)| p.conn.clone())
            .collect();
        let max_rtt = conns.iter().map(quinn::Connection::rtt).max();
        for c in &conns {
            c.close(0u32.into(), b"client closed");
        }
        // Wait while established connections drain, not for handshakes to
        // dead endpoints that were abandoned (they would hold the endpoint
        // for seconds without anything to deliver).
        let drain = max_rtt.map_or(Duration::ZERO, |rtt| {
            liveness::close_drain_bound(rtt).min(CLOSE_DRAIN_MAX)
        });
        let _ = tokio::time::timeout(drain, self.endpoint.wait_idle()).await;
    }
}

/// Writes one request frame and reads the reply frame.
///
/// A node that will not read a request (its frame is over the node's
/// `max_request_bytes`) stops our send side and still answers on the
/// receive side, so a stopped send is not a lost connection: the reply,
/// usually `MER-1003`, is read and returned.
async fn write_and_read(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    frame: &[u8],
) -> Result<Vec<u8>, SendFailure> {
    let lost =
        |e: FrameError| SendFailure::Final(OutcomeUnknown::ConnectionLost(e.to_string()).into());
    match transport::write_frame(send, frame).await {
        Ok(()) => {
            let _ = send.finish();
        }
        // Over the largest frame any node accepts: nothing was sent.
        Err(FrameError::TooLarge { len, max }) => {
            let e = ApiError::new(
                ErrorCode::RequestTooLarge,
                format!("request is {len} bytes; no node accepts more than {max}"),
            );
            return Err(SendFailure::Final(ClientError::Api(e)));
        }
        Err(FrameError::Write(quinn::WriteError::Stopped(code))) => {
            tracing::debug!(%code, "node stopped reading the request; reading its answer");
        }
        Err(e) => return Err(lost(e)),
    }
    transport::read_frame(recv, crate::limits::HARD_MAX_REQUEST_BYTES)
        .await
        .map_err(lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
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

    #[test]
    fn bind_addresses_parse_with_or_without_a_port() {
        let v4 = |s: &str| parse_bind(s).unwrap().to_string();
        assert_eq!(v4("127.0.2.200"), "127.0.2.200:0");
        assert_eq!(v4(" 127.0.2.200:9000 "), "127.0.2.200:9000");
        assert_eq!(v4("::1"), "[::1]:0");
        assert_eq!(v4("[::1]:9000"), "[::1]:9000");
        let err = parse_bind("region-2").unwrap_err().to_string();
        assert!(err.contains("region-2"), "{err}");
    }
}
