//! Node configuration, in two stages (as openraft's `config.rs`).
//!
//! 1. [`RawConfig`]: the serde shape of the TOML file, every field with a
//!    default, merged with `MERIDIAN_<SECTION>__<FIELD>` environment overrides
//!    (double underscore between section and field, e.g.
//!    `MERIDIAN_STORAGE__FSYNC=never`) by the config crate.
//! 2. [`RawConfig::validate`] turns it into [`NodeConfig`], whose fields are
//!    typed and checked; every error names the field and the rule.
//!
//! Relative paths are resolved against the directory of the config file (or
//! the current directory when there is none), so a config directory can be
//! moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits;

pub mod control;
pub mod gossip;
pub mod raft;
pub mod replication;
pub mod telemetry;

use crate::storage::FsyncPolicy;
pub use raft::RaftConfig;

/// A configuration error; the message names the field and the rule it broke.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or an environment override could not be read or parsed.
    #[error("config: {0}")]
    Load(String),
    /// A field has a value outside its rule. Nothing was started.
    #[error("config field `{field}`: {rule} (got {got})")]
    Invalid {
        /// Dotted field name, e.g. `limits.max_value_bytes`.
        field: &'static str,
        /// The rule the value broke.
        rule: String,
        /// The offending value, as text.
        got: String,
    },
}

pub(crate) fn invalid(
    field: &'static str,
    rule: impl Into<String>,
    got: impl ToString,
) -> ConfigError {
    ConfigError::Invalid {
        field,
        rule: rule.into(),
        got: got.to_string(),
    }
}

/// `[node]`: who this node is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawNode {
    /// Node name, unique in the cluster; `[A-Za-z0-9._-]`, 1..=64 chars. Default `node1`.
    pub id: String,
    /// Region name, same character rules. Default `local`.
    pub region: String,
    /// Zone (failure domain inside the region). Default `zone1`.
    pub zone: String,
    /// Directory for all node state (fjall keyspaces). Default `./meridian-data/node`.
    pub data_dir: PathBuf,
}

impl Default for RawNode {
    fn default() -> Self {
        RawNode {
            id: "node1".into(),
            region: "local".into(),
            zone: "zone1".into(),
            data_dir: PathBuf::from("meridian-data/node"),
        }
    }
}

/// `[server]`: listeners and connection limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    /// QUIC (UDP) address for clients and peers: the socket the node binds,
    /// and the source address of every QUIC packet it sends (peer
    /// connections leave from this socket too). Default `127.0.0.1:7379`.
    pub listen_addr: String,
    /// The QUIC address other nodes and clients dial, as `IP:port`: this node's
    /// address in gossip (`peer_addr`, `client_addr`), a single node's Raft
    /// address, status and leader redirects. Empty (the default): the bound
    /// `listen_addr`. Set it when traffic reaches the node through a proxy
    /// or NAT (the WAN emulator's fronts in `meridian dev`), or when
    /// `listen_addr` is unspecified (`0.0.0.0`, `[::]`). A specific IP
    /// (not unspecified) and a port in 1..=65535.
    pub advertise_addr: String,
    /// HTTP/JSON gateway address (TCP); empty disables it. Default `127.0.0.1:7380`.
    pub http_addr: String,
    /// Serve the gateway over HTTPS with the `[tls]` node certificate, and
    /// require a client certificate from the cluster CA on every request; its
    /// role decides what the caller may do, as on the QUIC protocol. Default
    /// `false`: plain HTTP, which has no authentication (every caller may do
    /// what an admin may), so it is allowed only on a loopback `http_addr`
    /// unless `http_insecure` is set.
    pub http_tls: bool,
    /// Allow plain HTTP (`http_tls = false`) on an `http_addr` that is not
    /// loopback. Anyone who reaches that address gets admin access without a
    /// certificate; set it only behind a network boundary you trust.
    /// Default `false`.
    pub http_insecure: bool,
    /// Bytes of range pages the gateway reads and sends at once; each range
    /// request reserves its page's worst case (`limits.max_scan_page_bytes`,
    /// or one pair if larger, plus 128 B × `limits.max_scan_page`) and waits
    /// up to 10 s for it, then gets MER-3003 (503). At least one page's
    /// reservation, at most 64 GiB. Default 256 MiB.
    pub http_response_budget_bytes: usize,
    /// Maximum concurrent QUIC connections (1..=65536). Default 1024.
    pub max_connections: usize,
    /// Maximum concurrent requests (bidi streams) per connection (1..=10000). Default 256.
    pub max_streams_per_connection: u32,
    /// Requests per second allowed per connection; 0 means unlimited. Default 0.
    pub rate_limit_rps: u32,
    /// Idle QUIC connections are closed after this many milliseconds (1000..=600000). Default 30000.
    pub idle_timeout_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen_addr: "127.0.0.1:7379".into(),
            advertise_addr: String::new(),
            http_addr: "127.0.0.1:7380".into(),
            http_tls: false,
            http_insecure: false,
            http_response_budget_bytes: DEFAULT_HTTP_RESPONSE_BUDGET_BYTES,
            max_connections: limits::DEFAULT_MAX_CONNECTIONS,
            max_streams_per_connection: limits::DEFAULT_MAX_STREAMS_PER_CONNECTION,
            rate_limit_rps: 0,
            idle_timeout_ms: 30_000,
        }
    }
}

/// `[tls]`: the node's certificate (role `node`) and the cluster CA.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    /// Cluster CA certificate (PEM). Default `meridian-data/certs/ca.pem`.
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM, role node). Default `meridian-data/certs/node1.pem`.
    pub cert: PathBuf,
    /// This node's private key (PEM). Default `meridian-data/certs/node1.key`.
    pub key: PathBuf,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            ca_cert: PathBuf::from("meridian-data/certs/ca.pem"),
            cert: PathBuf::from("meridian-data/certs/node1.pem"),
            key: PathBuf::from("meridian-data/certs/node1.key"),
        }
    }
}

/// `[storage]`: durability and history.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawStorage {
    /// `always`: a write is acknowledged only after fsync of the journal (survives
    /// power loss); `never`: acknowledged after the OS has the bytes (survives a
    /// process crash, not a power loss). Default `always`.
    pub fsync: String,
    /// How long old versions are kept for snapshot reads and history, in seconds
    /// (0..=2592000). Default 3600.
    pub history_window_secs: u64,
    /// Interval between garbage-collection sweeps, in milliseconds (100..=3600000). Default 60000.
    pub gc_interval_ms: u64,
    /// Block cache size in MiB (1..=65536). Default 64.
    pub cache_mib: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            fsync: "always".into(),
            history_window_secs: 3600,
            gc_interval_ms: 60_000,
            cache_mib: 64,
        }
    }
}

/// `[clock]`: hybrid logical clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawClock {
    /// Largest tolerated offset of a remote clock ahead of ours, in milliseconds
    /// (1..=60000). Timestamps further ahead are refused. Default 500.
    pub max_offset_ms: u64,
    /// How far ahead of issued timestamps the persisted high-water mark is set,
    /// in milliseconds (10..=60000). Larger means fewer fsyncs, and a restarted
    /// node's clock starts up to this far ahead. Default 1000.
    pub persist_window_ms: u64,
    /// Fault injection for tests and drills: shifts this node's wall clock by
    /// this many milliseconds (negative = behind), -3600000..=3600000, as if
    /// NTP were off by that much. Leave 0 in production. Default 0.
    pub offset_ms: i64,
}

impl Default for RawClock {
    fn default() -> Self {
        RawClock {
            max_offset_ms: 500,
            persist_window_ms: 1000,
            offset_ms: 0,
        }
    }
}

/// `[limits]`: request bounds; anything over them is refused with a stable code.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    /// Maximum key length in bytes (1..=65536). Default 4096.
    pub max_key_bytes: usize,
    /// Maximum value length in bytes (0..=16 MiB). Default 1 MiB.
    pub max_value_bytes: usize,
    /// Maximum encoded request in bytes (1 KiB..=64 MiB, >= max_value_bytes + max_key_bytes). Default 2 MiB.
    pub max_request_bytes: usize,
    /// Maximum compares + operations in one transaction (1..=10000). Default 128.
    pub max_txn_ops: usize,
    /// Maximum keys per range page (1..=100000). Default 10000.
    pub max_scan_page: usize,
    /// Most bytes of keys and values in one range page (64 KiB..=64 MiB);
    /// a page ends before it would pass them and continues with its page
    /// token. Default 4 MiB.
    pub max_scan_page_bytes: usize,
    /// Most watches open on one client connection (1..=200). Default 64.
    pub max_watches_per_connection: usize,
    /// Response frames a watch buffers ahead of a slow consumer
    /// (1..=1024). Default 16.
    pub watch_buffer_frames: usize,
    /// Longest a watch stays stalled on a full buffer before it ends with
    /// MER-3008 and a resume point, ms (100..=600000). Default 10000.
    pub watch_stall_timeout_ms: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_key_bytes: limits::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: limits::DEFAULT_MAX_VALUE_BYTES,
            max_request_bytes: limits::DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: limits::DEFAULT_MAX_TXN_OPS,
            max_scan_page: limits::DEFAULT_MAX_SCAN_PAGE,
            max_scan_page_bytes: limits::DEFAULT_MAX_SCAN_PAGE_BYTES,
            max_watches_per_connection: limits::DEFAULT_MAX_WATCHES_PER_CONNECTION,
            watch_buffer_frames: limits::DEFAULT_WATCH_BUFFER_FRAMES,
            watch_stall_timeout_ms: limits::DEFAULT_WATCH_STALL_TIMEOUT_MS,
        }
    }
}

/// `[log]`: logging.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    /// `human` or `json` (one JSON object per line). Default `human`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `meridian=debug,info`. Default `info`.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "human".into(),
            level: "info".into(),
        }
    }
}

/// The whole file, before validation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `[node]`
    pub node: RawNode,
    /// `[server]`
    pub server: RawServer,
    /// `[tls]`
    pub tls: RawTls,
    /// `[storage]`
    pub storage: RawStorage,
    /// `[clock]`
    pub clock: RawClock,
    /// `[limits]`
    pub limits: RawLimits,
    /// `[log]`
    pub log: RawLog,
    /// `[raft]`
    pub raft: raft::RawRaft,
    /// `[gossip]`
    pub gossip: gossip::RawGossip,
    /// `[replication]`
    pub replication: replication::RawReplication,
    /// `[control]`
    pub control: control::RawControl,
    /// `[telemetry]`
    pub telemetry: telemetry::RawTelemetry,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Validated request limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum key length in bytes.
    pub max_key_bytes: usize,
    /// Maximum value length in bytes.
    pub max_value_bytes: usize,
    /// Maximum encoded request size in bytes.
    pub max_request_bytes: usize,
    /// Maximum compares + operations per transaction.
    pub max_txn_ops: usize,
    /// Maximum keys per range page.
    pub max_scan_page: usize,
    /// Most key and value bytes per range page.
    pub max_scan_page_bytes: usize,
    /// Most watches open on one client connection.
    pub max_watches_per_connection: usize,
    /// Response frames a watch buffers ahead of its consumer.
    pub watch_buffer_frames: usize,
    /// Longest a watch stays stalled before it ends, ms.
    pub watch_stall_timeout_ms: u64,
}

/// Memory one pair of a range page costs beyond its key and value bytes
/// (the `KeyValue` and its two vectors' headers, rounded up).
pub const PAGE_ENTRY_OVERHEAD_BYTES: usize = 128;

impl Limits {
    /// The most memory one range page holds: its byte bound, or one pair
    /// that is larger on its own (a page always takes its first pair), plus
    /// the per-pair overhead of a full page. The gateway reserves this much
    /// of `server.http_response_budget_bytes` per range request.
    pub fn page_reservation_bytes(&self) -> usize {
        let pair = self.max_key_bytes + self.max_value_bytes;
        self.max_scan_page_bytes
            .max(pair)
            .saturating_add(PAGE_ENTRY_OVERHEAD_BYTES.saturating_mul(self.max_scan_page))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: limits::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: limits::DEFAULT_MAX_VALUE_BYTES,
            max_request_bytes: limits::DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: limits::DEFAULT_MAX_TXN_OPS,
            max_scan_page: limits::DEFAULT_MAX_SCAN_PAGE,
            max_scan_page_bytes: limits::DEFAULT_MAX_SCAN_PAGE_BYTES,
            max_watches_per_connection: limits::DEFAULT_MAX_WATCHES_PER_CONNECTION,
            watch_buffer_frames: limits::DEFAULT_WATCH_BUFFER_FRAMES,
            watch_stall_timeout_ms: limits::DEFAULT_WATCH_STALL_TIMEOUT_MS,
        }
    }
}

/// A validated node configuration. Constructed only by [`RawConfig::validate`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Node name.
    pub node_id: String,
    /// Region name.
    pub region: String,
    /// Zone name.
    pub zone: String,
    /// State directory (absolute or relative to the process's directory).
    pub data_dir: PathBuf,
    /// QUIC listen address (bound; peer and client packets leave from it).
    pub listen_addr: SocketAddr,
    /// `server.advertise_addr`: the QUIC address others dial; `None` = the
    /// bound listen address (see [`NodeConfig::advertised_quic_addr`]).
    pub advertise_addr: Option<SocketAddr>,
    /// HTTP gateway address, if enabled.
    pub http_addr: Option<SocketAddr>,
    /// `server.http_tls`: the gateway speaks HTTPS and requires client
    /// certificates. When false, [`NodeConfig::http_addr`] is loopback or
    /// `server.http_insecure` was set.
    pub http_tls: bool,
    /// `server.http_response_budget_bytes`: range pages the gateway holds at
    /// once, in bytes.
    pub http_response_budget_bytes: usize,
    /// Maximum concurrent connections.
    pub max_connections: usize,
    /// Maximum in-flight requests per connection.
    pub max_streams_per_connection: u32,
    /// Per-connection request rate, if limited.
    pub rate_limit_rps: Option<u32>,
    /// Idle connection timeout.
    pub idle_timeout: Duration,
    /// CA certificate path.
    pub ca_cert: PathBuf,
    /// Node certificate path.
    pub cert: PathBuf,
    /// Node key path.
    pub key: PathBuf,
    /// Fsync policy of the write path.
    pub fsync: FsyncPolicy,
    /// How long history is kept.
    pub history_window: Duration,
    /// GC pass interval.
    pub gc_interval: Duration,
    /// Block cache bytes.
    pub cache_bytes: u64,
    /// Max remote clock offset in milliseconds.
    pub max_offset_ms: u64,
    /// HLC persistence window in milliseconds.
    pub persist_window_ms: u64,
    /// Injected wall-clock offset in milliseconds (fault injection; 0 in production).
    pub clock_offset_ms: i64,
    /// Request limits.
    pub limits: Limits,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// The node's Raft groups: its region's voters, or itself alone.
    pub raft: RaftConfig,
    /// Gossip membership; `None` = off.
    pub gossip: Option<gossip::GossipConfig>,
    /// The cluster's regions and every key prefix's policy.
    pub replication: replication::ReplicationConfig,
    /// This node's replica of the control range; `None` = no control
    /// range (policies fixed by `[replication]`).
    pub control: Option<control::ControlConfig>,
    /// OpenTelemetry trace export; `None` = off.
    pub telemetry: Option<telemetry::TelemetryConfig>,
}

impl NodeConfig {
    /// The QUIC address this node advertises: `server.advertise_addr`, or
    /// `bound` (the listen address with its port resolved) when it is empty.
    pub fn advertised_quic_addr(&self, bound: SocketAddr) -> SocketAddr {
        self.advertise_addr.unwrap_or(bound)
    }
}

/// Largest injected clock offset (`clock.offset_ms`), either way: an hour.
pub const MAX_INJECTED_CLOCK_OFFSET_MS: i64 = 3_600_000;

/// Loads `path` (if given) plus `MERIDIAN_<SECTION>__<FIELD>` overrides, without validating.
pub fn load(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError::Load(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(env_overrides());
    let merged = builder
        .build()
        .map_err(|e| ConfigError::Load(e.to_string()))?;
    merged
        .try_deserialize::<RawConfig>()
        .map_err(|e| ConfigError::Load(e.to_string()))
}

/// Only `MERIDIAN_<SECTION>__<FIELD>` variables are config overrides; the
/// CLI's own variables (`MERIDIAN_ENDPOINTS`, `MERIDIAN_CA`, ...) have no `__`
/// and are left alone, so unknown-field checking stays strict for real overrides.
fn env_overrides() -> config::Environment {
    let vars: config::Map<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k.strip_prefix("MERIDIAN_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect();
    config::Environment::with_prefix("MERIDIAN")
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(vars))
}

pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if value.is_empty() || value.len() > 64 || !ok_chars {
        return Err(invalid(
            field,
            "1..=64 characters from [A-Za-z0-9._-]",
            value,
        ));
    }
    Ok(())
}

pub(crate) fn check_range<T: PartialOrd + ToString>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        let rule = format!(
            "must be between {} and {}",
            min.to_string(),
            max.to_string()
        );
        return Err(invalid(field, rule, value.to_string()));
    }
    Ok(value)
}

pub(crate) fn parse_addr(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(field, "must be an IP:port socket address", value))
}

/// An address other machines dial: `IP:port` with a specific IP (not
/// `0.0.0.0` or `[::]`, which mean "every interface" only to a listener)
/// and a non-zero port (port 0 means "any free port" only to a listener).
pub(crate) fn parse_advertise_addr(
    field: &'static str,
    value: &str,
) -> Result<SocketAddr, ConfigError> {
    let addr = parse_addr(field, value)?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(invalid(
            field,
            "must be an address others can dial: a specific IP (not 0.0.0.0 or [::]) and a non-zero port",
            value,
        ));
    }
    Ok(addr)
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Default of `server.http_response_budget_bytes`: 256 MiB.
pub const DEFAULT_HTTP_RESPONSE_BUDGET_BYTES: usize = 256 * 1024 * 1024;
/// Ceiling of `server.http_response_budget_bytes`: 64 GiB.
pub const MAX_HTTP_RESPONSE_BUDGET_BYTES: usize = 64 * 1024 * 1024 * 1024;

/// Plain HTTP has no authentication, so it may listen only where nobody but
/// this host reaches it, unless the operator says explicitly that it is
/// insecure (issue 12; docs/operations.md, "HTTP gateway").
fn check_http_security(
    http_addr: Option<SocketAddr>,
    tls: bool,
    insecure: bool,
) -> Result<(), ConfigError> {
    if tls && insecure {
        return Err(invalid(
            "server.http_insecure",
            "applies only to plain HTTP (server.http_tls = false); remove it",
            "true",
        ));
    }
    match http_addr {
        Some(addr) if !tls && !insecure && !addr.ip().is_loopback() => Err(invalid(
            "server.http_tls",
            "is false, but server.http_addr is not a loopback address: plain HTTP has no \
             authentication, so anyone reaching it could change data and policies. Set \
             server.http_tls = true (HTTPS with client certificates), bind a loopback \
             address, or set server.http_insecure = true to accept the risk",
            "false",
        )),
        _ => Ok(()),
    }
}

impl RawConfig {
    /// Validates every field; `base` is the directory relative paths are resolved against.
    pub fn validate(self, base: &Path) -> Result<NodeConfig, ConfigError> {
        check_name("node.id", &self.node.id)?;
        check_name("node.region", &self.node.region)?;
        check_name("node.zone", &self.node.zone)?;
        let s = &self.server;
        let listen_addr = parse_addr("server.listen_addr", &s.listen_addr)?;
        let advertise_addr = match s.advertise_addr.trim() {
            "" => None,
            a => Some(parse_advertise_addr("server.advertise_addr", a)?),
        };
        let http_addr = match s.http_addr.trim() {
            "" => None,
            a => Some(parse_addr("server.http_addr", a)?),
        };
        check_http_security(http_addr, s.http_tls, s.http_insecure)?;
        let max_connections = check_range("server.max_connections", s.max_connections, 1, 65_536)?;
        let max_streams = check_range(
            "server.max_streams_per_connection",
            s.max_streams_per_connection,
            1,
            10_000,
        )?;
        let idle_ms = check_range("server.idle_timeout_ms", s.idle_timeout_ms, 1_000, 600_000)?;
        let fsync = match self.storage.fsync.as_str() {
            "always" => FsyncPolicy::Always,
            "never" => FsyncPolicy::Never,
            other => {
                return Err(invalid(
                    "storage.fsync",
                    "must be `always` or `never`",
                    other,
                ))
            }
        };
        let st = &self.storage;
        let history = check_range(
            "storage.history_window_secs",
            st.history_window_secs,
            0,
            2_592_000,
        )?;
        let gc_ms = check_range("storage.gc_interval_ms", st.gc_interval_ms, 100, 3_600_000)?;
        let cache_mib = check_range("storage.cache_mib", st.cache_mib, 1, 65_536)?;
        let c = &self.clock;
        let max_offset_ms = check_range(
            "clock.max_offset_ms",
            c.max_offset_ms,
            1,
            crate::limits::HARD_MAX_CLOCK_OFFSET_MS,
        )?;
        let persist_window_ms =
            check_range("clock.persist_window_ms", c.persist_window_ms, 10, 60_000)?;
        let clock_offset_ms = check_range(
            "clock.offset_ms",
            c.offset_ms,
            -MAX_INJECTED_CLOCK_OFFSET_MS,
            MAX_INJECTED_CLOCK_OFFSET_MS,
        )?;
        let limits = self.limits.validate()?;
        let page = limits.page_reservation_bytes();
        let http_response_budget_bytes = check_range(
            "server.http_response_budget_bytes",
            s.http_response_budget_bytes,
            page,
            MAX_HTTP_RESPONSE_BUDGET_BYTES,
        )?;
        let raft = self.raft.validate(&raft::SelfNode {
            name: &self.node.id,
            region: &self.node.region,
            zone: &self.node.zone,
            addr: advertise_addr.unwrap_or(listen_addr),
        })?;
        let gossip = self.gossip.validate(base)?;
        let replication = self.replication.validate(&self.node.region)?;
        let control = self.control.validate(&self.node.id, &replication.regions)?;
        if replication.is_multi_region() && gossip.is_none() {
            return Err(invalid(
                "replication.regions",
                "lists other regions, so gossip must be on ([gossip] listen_addr): \
                 range leaders find the other regions' nodes through it",
                replication.regions.join(","),
            ));
        }
        if gossip.is_some() && advertise_addr.is_none() && listen_addr.ip().is_unspecified() {
            // Gossip tells every node this address; "every interface" is not
            // one anybody can dial.
            return Err(invalid(
                "server.advertise_addr",
                "is required when server.listen_addr is unspecified and gossip is on \
                 (gossip advertises the node's QUIC address to its peers)",
                "\"\"",
            ));
        }
        let log_format = match self.log.format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => return Err(invalid("log.format", "must be `human` or `json`", other)),
        };
        let telemetry = self.telemetry.validate()?;
        Ok(NodeConfig {
            node_id: self.node.id,
            region: self.node.region,
            zone: self.node.zone,
            data_dir: resolve(base, &self.node.data_dir),
            listen_addr,
            advertise_addr,
            http_addr,
            http_tls: s.http_tls,
            http_response_budget_bytes,
            max_connections,
            max_streams_per_connection: max_streams,
            rate_limit_rps: (s.rate_limit_rps > 0).then_some(s.rate_limit_rps),
            idle_timeout: Duration::from_millis(idle_ms),
            ca_cert: resolve(base, &self.tls.ca_cert),
            cert: resolve(base, &self.tls.cert),
            key: resolve(base, &self.tls.key),
            fsync,
            history_window: Duration::from_secs(history),
            gc_interval: Duration::from_millis(gc_ms),
            cache_bytes: cache_mib * 1024 * 1024,
            max_offset_ms,
            persist_window_ms,
            clock_offset_ms,
            limits,
            log_format,
            log_level: self.log.level,
            raft,
            gossip,
            replication,
            control,
            telemetry,
        })
    }
}

impl RawLimits {
    fn validate(&self) -> Result<Limits, ConfigError> {
        let key = check_range(
            "limits.max_key_bytes",
            self.max_key_bytes,
            1,
            limits::HARD_MAX_KEY_BYTES,
        )?;
        let value = check_range(
            "limits.max_value_bytes",
            self.max_value_bytes,
            0,
            limits::HARD_MAX_VALUE_BYTES,
        )?;
        let request = check_range(
            "limits.max_request_bytes",
            self.max_request_bytes,
            1024,
            limits::HARD_MAX_REQUEST_BYTES,
        )?;
        if request < key + value {
            return Err(invalid(
                "limits.max_request_bytes",
                format!(
                    "must be at least max_key_bytes + max_value_bytes ({})",
                    key + value
                ),
                request,
            ));
        }
        let ops = check_range(
            "limits.max_txn_ops",
            self.max_txn_ops,
            1,
            limits::HARD_MAX_TXN_OPS,
        )?;
        let page = check_range(
            "limits.max_scan_page",
            self.max_scan_page,
            1,
            limits::HARD_MAX_SCAN_PAGE,
        )?;
        let page_bytes = check_range(
            "limits.max_scan_page_bytes",
            self.max_scan_page_bytes,
            limits::MIN_SCAN_PAGE_BYTES,
            limits::HARD_MAX_SCAN_PAGE_BYTES,
        )?;
        Ok(Limits {
            max_key_bytes: key,
            max_value_bytes: value,
            max_request_bytes: request,
            max_txn_ops: ops,
            max_scan_page: page,
            max_scan_page_bytes: page_bytes,
            max_watches_per_connection: check_range(
                "limits.max_watches_per_connection",
                self.max_watches_per_connection,
                1,
                limits::HARD_MAX_WATCHES_PER_CONNECTION,
            )?,
            watch_buffer_frames: check_range(
                "limits.watch_buffer_frames",
                self.watch_buffer_frames,
                1,
                limits::HARD_MAX_WATCH_BUFFER_FRAMES,
            )?,
            watch_stall_timeout_ms: check_range(
                "limits.watch_stall_timeout_ms",
                self.watch_stall_timeout_ms,
                limits::MIN_WATCH_STALL_TIMEOUT_MS,
                limits::HARD_MAX_WATCH_STALL_TIMEOUT_MS,
            )?,
        })
    }
}

/// Loads and validates in one step. Relative paths resolve against the file's directory.
pub fn load_and_validate(path: Option<&Path>) -> Result<NodeConfig, ConfigError> {
    let raw = load(path)?;
    let base = match path.and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    raw.validate(&base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, toml).unwrap();
        load_and_validate(Some(&path))
    }

    #[test]
    fn defaults_validate() {
        let cfg = RawConfig::default().validate(Path::new(".")).unwrap();
        assert_eq!(cfg.limits.max_value_bytes, 1024 * 1024);
        assert_eq!(cfg.fsync, FsyncPolicy::Always);
        assert_eq!(cfg.listen_addr.port(), 7379);
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../config/example.toml");
        let cfg = parse(text).unwrap();
        assert_eq!(cfg.node_id, "node1");
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse("[limits]\nmax_value_bytes = 999999999\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("limits.max_value_bytes"), "{msg}");
        let err = parse("[storage]\nfsync = \"sometimes\"\n").unwrap_err();
        assert!(err.to_string().contains("storage.fsync"), "{err}");
        let err = parse("[node]\nid = \"bad id\"\n").unwrap_err();
        assert!(err.to_string().contains("node.id"), "{err}");
        let err = parse("[server]\nlisten_addr = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("server.listen_addr"), "{err}");
    }

    #[test]
    fn the_response_budget_holds_at_least_one_page() {
        let limits = Limits::default();
        assert_eq!(
            limits.page_reservation_bytes(),
            4 * 1024 * 1024 + PAGE_ENTRY_OVERHEAD_BYTES * 10_000
        );
        let cfg = parse("").unwrap();
        assert_eq!(cfg.http_response_budget_bytes, 256 * 1024 * 1024);
        let err = parse("[server]\nhttp_response_budget_bytes = 1048576\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("`server.http_response_budget_bytes`"),
            "{err}"
        );
    }

    /// Issue 12: plain HTTP only on loopback unless explicitly insecure.
    #[test]
    fn plain_http_is_refused_beyond_loopback_unless_insecure() {
        for addr in ["0.0.0.0:7380", "[::]:7380", "10.1.2.3:7380"] {
            let err = parse(&format!("[server]\nhttp_addr = \"{addr}\"\n")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("`server.http_tls`"), "{msg}");
            assert!(msg.contains("server.http_insecure = true"), "{msg}");
        }
        for ok in [
            "[server]\nhttp_addr = \"127.0.3.4:7380\"\n",
            "[server]\nhttp_addr = \"[::1]:7380\"\n",
            "[server]\nhttp_addr = \"0.0.0.0:7380\"\nhttp_tls = true\n",
            "[server]\nhttp_addr = \"0.0.0.0:7380\"\nhttp_insecure = true\n",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = parse("[server]\nhttp_tls = true\nhttp_insecure = true\n").unwrap_err();
        assert!(err.to_string().contains("`server.http_insecure`"), "{err}");
    }

    #[test]
    fn advertise_addrs_default_to_the_listen_addrs() {
        let cfg = parse("[server]\nlisten_addr = \"127.0.1.1:7379\"\n").unwrap();
        assert_eq!(cfg.advertise_addr, None);
        assert_eq!(cfg.advertised_quic_addr(cfg.listen_addr), cfg.listen_addr);
        assert_eq!(cfg.raft.peers[0].addr, cfg.listen_addr);
        let cfg = parse(
            "[server]\nlisten_addr = \"127.0.1.1:7379\"\nadvertise_addr = \"127.1.1.1:7379\"\n\
             [gossip]\nlisten_addr = \"127.0.1.1:7385\"\nadvertise_addr = \"127.1.1.1:7385\"\n",
        )
        .unwrap();
        let front: SocketAddr = "127.1.1.1:7379".parse().unwrap();
        assert_eq!(cfg.advertised_quic_addr(cfg.listen_addr), front);
        // A single node's Raft membership names the address others dial.
        assert_eq!(cfg.raft.peers[0].addr, front);
        assert_eq!(cfg.raft.peers[0].node.addr, "127.1.1.1:7379");
        let g = cfg.gossip.unwrap();
        assert_eq!(g.listen_addr, "127.0.1.1:7385".parse().unwrap());
        assert_eq!(g.advertise_addr, Some("127.1.1.1:7385".parse().unwrap()));
    }

    #[test]
    fn advertise_addrs_must_be_dialable_and_errors_name_the_field() {
        let gossip = "[gossip]\nlisten_addr = \"127.0.0.1:7385\"\n";
        let cases = [
            (
                "[server]\nadvertise_addr = \"nowhere\"\n".to_string(),
                "server.advertise_addr",
            ),
            (
                "[server]\nadvertise_addr = \"0.0.0.0:7379\"\n".into(),
                "server.advertise_addr",
            ),
            (
                "[server]\nadvertise_addr = \"[::]:7379\"\n".into(),
                "server.advertise_addr",
            ),
            (
                "[server]\nadvertise_addr = \"127.1.1.1:0\"\n".into(),
                "server.advertise_addr",
            ),
            // Gossip would tell every peer "0.0.0.0": refused at start-up.
            (
                format!("[server]\nlisten_addr = \"0.0.0.0:7379\"\n{gossip}"),
                "server.advertise_addr",
            ),
            (
                "[gossip]\nlisten_addr = \"127.0.0.1:7385\"\nadvertise_addr = \"127.1.1.1\"\n"
                    .into(),
                "gossip.advertise_addr",
            ),
            (
                "[gossip]\nlisten_addr = \"127.0.0.1:7385\"\nadvertise_addr = \"0.0.0.0:7385\"\n"
                    .into(),
                "gossip.advertise_addr",
            ),
            (
                "[gossip]\nlisten_addr = \"0.0.0.0:7385\"\n".into(),
                "gossip.advertise_addr",
            ),
        ];
        for (toml, field) in cases {
            let err = parse(&toml).expect_err(&toml).to_string();
            assert!(err.contains(field), "{toml}: {err}");
        }
        // Unspecified listen addresses are fine once the advertised ones are set.
        let cfg = parse(
            "[server]\nlisten_addr = \"0.0.0.0:7379\"\nadvertise_addr = \"10.0.0.5:7379\"\n\
             [gossip]\nlisten_addr = \"0.0.0.0:7385\"\nadvertise_addr = \"10.0.0.5:7385\"\n",
        )
        .unwrap();
        assert_eq!(cfg.raft.peers[0].addr, "10.0.0.5:7379".parse().unwrap());
        // Without gossip nobody is told the address, so none is needed.
        parse("[server]\nlisten_addr = \"0.0.0.0:7379\"\n").unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse("[storage]\nfsyncc = \"always\"\n").unwrap_err();
        assert!(err.to_string().contains("fsyncc"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "[node]\ndata_dir = \"d\"\n").unwrap();
        let cfg = load_and_validate(Some(&path)).unwrap();
        assert_eq!(cfg.data_dir, dir.path().join("d"));
    }

    #[test]
    fn environment_overrides_the_file_and_cli_variables_are_ignored() {
        // Only this test sets these variables; other tests do not read log.level
        // or server.rate_limit_rps, so running in parallel is safe.
        std::env::set_var("MERIDIAN_LOG__LEVEL", "debug");
        std::env::set_var("MERIDIAN_SERVER__RATE_LIMIT_RPS", "77");
        std::env::set_var("MERIDIAN_ENDPOINTS", "127.0.0.1:1"); // a CLI variable, not config
        let cfg = parse("[log]\nlevel = \"warn\"\n");
        std::env::remove_var("MERIDIAN_LOG__LEVEL");
        std::env::remove_var("MERIDIAN_SERVER__RATE_LIMIT_RPS");
        std::env::remove_var("MERIDIAN_ENDPOINTS");
        let cfg = cfg.unwrap();
        assert_eq!(cfg.log_level, "debug");
        assert_eq!(cfg.rate_limit_rps, Some(77));
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load_and_validate(Some(Path::new("/nonexistent/meridian.toml"))).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
