//! A Meridian node: assembles storage, clock, engine, the QUIC endpoint and
//! the HTTP gateway from a validated [`NodeConfig`], and serves until told to
//! stop.
//!
//! Request path (QUIC): accept connection (refused without a certificate
//! from the cluster CA; see [`crate::transport`]) → one task per connection →
//! one task per bidirectional stream → read one frame (bounded by
//! `limits.max_request_bytes`) → [`crate::wire`] decode → role check →
//! [`Engine`] → encode → write one frame.
//!
//! **Architecture Invariant:** a bad frame (too large, undecodable, unknown
//! version, over a limit) is answered with an error frame carrying a stable
//! code on that stream only; it never closes the connection, never reaches the
//! writer, and never writes anything.

mod context;
pub mod control;
mod dispatch;
mod gauges;
mod peer;
mod region;
pub mod streams;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::clock::{Hlc, OffsetClock, SystemClock};
use crate::config::NodeConfig;
use crate::engine::control::ControlRange;
use crate::engine::{Engine, EngineOptions};
use crate::storage::{MvccStore, StoreOptions};
use crate::transport::{self, EndpointLimits, TlsFiles};

pub use crate::types::NodeInfo;
pub use peer::serve_peers;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The clock could not resume above its high-water mark.
    #[error("clock: {0}")]
    Clock(#[from] crate::clock::ClockError),
    /// The engine could not start.
    #[error("engine: {0}")]
    Engine(#[from] crate::error_code::ApiError),
    /// TLS material or the QUIC socket could not be set up.
    #[error("transport: {0}")]
    Transport(#[from] crate::transport::TransportError),
    /// The node's Raft groups could not start.
    #[error("raft: {0}")]
    Raft(#[from] crate::raft::host::HostError),
    /// Gossip membership could not start.
    #[error("gossip: {0}")]
    Gossip(String),
    /// The HTTP gateway could not bind.
    #[error("http gateway on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running node. Dropping it does not stop it; call [`Node::shutdown`].
pub struct Node {
    engine: Arc<Engine>,
    membership: Option<crate::membership::Membership>,
    endpoint: quinn::Endpoint,
    quic_addr: SocketAddr,
    advertised: SocketAddr,
    http_addr: Option<SocketAddr>,
    accept_task: tokio::task::JoinHandle<()>,
    http_task: Option<tokio::task::JoinHandle<()>>,
    /// The cross-region replication streams (multi-region only).
    streams_task: Option<tokio::task::JoinHandle<()>>,
    /// The node-wide gauge sampler.
    gauges_task: tokio::task::JoinHandle<()>,
    /// The lease expiry driver (acts while this node leads the lease range).
    lease_task: tokio::task::JoinHandle<()>,
    /// This node's replica of the control range and its follower task.
    control: Option<(Arc<ControlRange>, tokio::task::JoinHandle<()>)>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("quic_addr", &self.quic_addr)
            .field("advertised", &self.advertised)
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

impl Node {
    /// Starts a node. Ports 0 in the config are replaced by the bound ports
    /// (see [`Node::quic_addr`], [`Node::http_addr`]).
    pub async fn start(cfg: NodeConfig) -> Result<Node, StartError> {
        let metrics = crate::telemetry::metrics_handle();
        let store = MvccStore::open(StoreOptions {
            path: cfg.data_dir.clone(),
            fsync: cfg.fsync,
            cache_bytes: cfg.cache_bytes,
        })?;
        let hlc = Arc::new(Hlc::open(
            OffsetClock::new(SystemClock, cfg.clock_offset_ms),
            store.clone(),
            cfg.max_offset_ms,
            cfg.persist_window_ms,
        )?);
        let tls = TlsFiles {
            ca: cfg.ca_cert.clone(),
            cert: cfg.cert.clone(),
            key: cfg.key.clone(),
        };
        let endpoint_limits = EndpointLimits {
            max_streams_per_connection: cfg.max_streams_per_connection,
            idle_timeout_ms: u64::try_from(cfg.idle_timeout.as_millis()).unwrap_or(u64::MAX),
            ..EndpointLimits::default()
        };
        let endpoint = transport::server_endpoint(cfg.listen_addr, &tls, &endpoint_limits)?;
        let quic_addr = endpoint
            .local_addr()
            .map_err(|e| StartError::Transport(crate::transport::TransportError::Io(e)))?;
        // What others dial: the configured advertise address (a proxy's
        // front, a NAT's outside) or the bound address itself.
        let advertised = cfg.advertised_quic_addr(quic_addr);
        let membership = match &cfg.gossip {
            None => None,
            Some(g) => Some(start_membership(&cfg, g, advertised, &store).await?),
        };
        let hints = membership.clone().map(|m| (m, cfg.node_id.clone()));
        // Peer connections are dialed from `endpoint`, so they leave from
        // the bound listen address, never from an unspecified one.
        let peer_config = transport::peer_client_config(&tls, &endpoint_limits)?;
        let rc = cfg.raft.clone().advertised_at(advertised);
        let scope = crate::raft::ReplicationScope {
            local: cfg.replication.local_region.clone(),
            others: cfg
                .replication
                .other_regions()
                .map(str::to_string)
                .collect(),
        };
        let control = match &cfg.control {
            None => None,
            Some(cc) => Some(control::start(cc, &cfg, &endpoint, peer_config.clone(), &hlc).await?),
        };
        let host =
            region::start_groups(&rc, &endpoint, peer_config, &store, &hlc, hints, scope).await?;
        let engine = Arc::new(Engine::start(
            store,
            hlc,
            EngineOptions {
                limits: cfg.limits,
                history_window: cfg.history_window,
                gc_interval: cfg.gc_interval,
                replication: cfg.replication.clone(),
            },
            region::routing(&host, &rc),
        )?);
        let info = Arc::new(NodeInfo {
            node_id: cfg.node_id.clone(),
            region: cfg.region.clone(),
            zone: cfg.zone.clone(),
            quic_addr: advertised,
            listen_addr: quic_addr,
        });
        let ctx = Arc::new(dispatch::Context {
            engine: engine.clone(),
            info: info.clone(),
            max_request_bytes: cfg.limits.max_request_bytes,
            rate_limit_rps: cfg.rate_limit_rps,
            raft: host.clone(),
            membership: membership.clone(),
            control: control.clone(),
        });
        let conn_limit = Arc::new(Semaphore::new(cfg.max_connections));
        let gauges_task = gauges::spawn(gauges::Sources {
            store: engine.store().clone(),
            hlc: engine.clock().clone(),
            conn_limit: conn_limit.clone(),
            max_connections: cfg.max_connections,
        });
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), ctx, conn_limit));
        let lease_task = crate::engine::lease::spawn_lease_driver(&engine);
        region::bootstrap(&host, &rc).await?;
        let control = match (control, &cfg.control) {
            (Some(c), Some(cc)) => {
                control::bootstrap(&c, cc).await?;
                let task = control::spawn_follower(c.clone(), cc.clone(), engine.clone());
                Some((c, task))
            }
            _ => None,
        };
        // validate() made gossip a requirement of a multi-region config.
        let streams_task = match (&membership, cfg.replication.is_multi_region()) {
            (Some(m), true) => Some(streams::spawn(streams::StreamContext {
                host: host.clone(),
                store: engine.store().clone(),
                hlc: engine.clock().clone(),
                membership: m.clone(),
                acked: engine.region().acked_cursors().clone(),
            })),
            _ => None,
        };
        let (http_addr, http_task) = match cfg.http_addr {
            None => (None, None),
            Some(addr) => {
                // Built before binding, so a bad certificate fails the start.
                let https = match cfg.http_tls {
                    true => Some(transport::https_server_config(&tls)?),
                    false => None,
                };
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Http { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| StartError::Http { addr, source })?;
                let state = crate::gateway::GatewayState {
                    engine: engine.clone(),
                    info: info.clone(),
                    metrics,
                    started: Instant::now(),
                    membership: membership.clone(),
                    control: control.as_ref().map(|(c, _)| c.clone()),
                    responses: crate::gateway::ResponseBudget::new(cfg.http_response_budget_bytes),
                };
                let task = tokio::spawn(crate::gateway::serve(listener, state, https));
                (Some(bound), Some(task))
            }
        };
        tracing::info!(node = %cfg.node_id, region = %cfg.region, %quic_addr, %advertised, ?http_addr, "node started");
        Ok(Node {
            engine,
            membership,
            endpoint,
            quic_addr,
            advertised,
            http_addr,
            accept_task,
            http_task,
            streams_task,
            gauges_task,
            lease_task,
            control,
        })
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The QUIC address the node advertises (`server.advertise_addr`, or
    /// the bound address when that is empty): what gossip, status and a
    /// single node's Raft membership show.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised
    }

    /// The bound gossip address, when gossip is on (a config's port 0 is
    /// replaced by the port the socket got).
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.membership.as_ref().map(|m| m.local_addr())
    }

    /// The bound HTTP gateway address, if enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The engine (for in-process tests and tools).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting, closes connections, and stops the writer after the
    /// writes it has already taken.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"node shutting down");
        self.accept_task.abort();
        self.gauges_task.abort();
        self.lease_task.abort();
        if let Some(t) = self.streams_task {
            t.abort();
        }
        if let Some(t) = self.http_task {
            t.abort();
        }
        if let Some(m) = self.membership {
            // Leave gracefully so peers see Left at once, not Down after a timeout.
            m.leave().await;
        }
        if let Some((c, task)) = self.control {
            task.abort();
            c.engine().region().host().shutdown().await;
            c.engine().shutdown().await;
        }
        self.engine.region().host().shutdown().await;
        self.engine.shutdown().await;
        // Give quinn a moment to send CONNECTION_CLOSE frames; bounded.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.endpoint.wait_idle())
            .await;
        tracing::info!("node stopped");
    }
}

/// Starts gossip: the identity carries a generation persisted (and bumped)
/// at every start, so a restarted node rejoins as itself with a higher one.
/// The identity holds the advertised addresses (`quic_addr` is the QUIC
/// address others dial); the socket binds `gossip.listen_addr` and every
/// datagram leaves from it.
async fn start_membership(
    cfg: &NodeConfig,
    g: &crate::config::gossip::GossipConfig,
    quic_addr: SocketAddr,
    store: &MvccStore,
) -> Result<crate::membership::Membership, StartError> {
    use crate::membership::{load_cluster_key, Membership, MembershipConfig, NodeIdentity};
    let gossip_err = |e: String| StartError::Gossip(e);
    let cluster_key = load_cluster_key(&g.cluster_key).map_err(|e| gossip_err(e.to_string()))?;
    let previous = store
        .meta_get(GENERATION_META_KEY)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes);
    let generation = previous + 1;
    store.meta_put_durable(GENERATION_META_KEY, &generation.to_be_bytes())?;
    let identity = NodeIdentity {
        node_id: cfg.node_id.clone(),
        region: cfg.region.clone(),
        zone: cfg.zone.clone(),
        peer_addr: quic_addr,
        client_addr: quic_addr,
        gossip_addr: g.advertise_addr.unwrap_or(g.listen_addr),
        generation,
    };
    let mcfg = MembershipConfig {
        identity,
        bind: g.listen_addr,
        seeds: g.seeds.clone(),
        cluster_key,
        timers: g.timers.clone(),
    };
    Membership::start(mcfg)
        .await
        .map_err(|e| gossip_err(e.to_string()))
}

/// Store metadata holding the gossip generation of the last start.
const GENERATION_META_KEY: &str = "gossip_generation";

async fn accept_loop(
    endpoint: quinn::Endpoint,
    ctx: Arc<dispatch::Context>,
    conn_limit: Arc<Semaphore>,
) {
    let handshakes = Arc::new(Semaphore::new(crate::limits::MAX_PENDING_HANDSHAKES));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            // Too many handshakes in flight: refuse before they cost anything.
            incoming.refuse();
            metrics::counter!("meridian_connections_refused_total", "reason" => "handshakes")
                .increment(1);
            continue;
        };
        let ctx = ctx.clone();
        let conn_limit = conn_limit.clone();
        tokio::spawn(async move {
            let Some((conn, identity)) = accept(incoming).await else {
                return;
            };
            drop(handshake);
            if transport::protocol_of(&conn) == Some(transport::Protocol::Peer) {
                // Peer traffic: its own dispatcher, never counted against
                // the client connection limit.
                let hosts = peer::PeerHosts {
                    region: ctx.raft.clone(),
                    control: ctx.control.clone(),
                    engine: Some(ctx.engine.clone()),
                };
                peer::serve_peer_connection(conn, identity, hosts).await;
                return;
            }
            let Ok(_permit) = conn_limit.try_acquire_owned() else {
                // Over max_connections: refuse the client connection.
                conn.close(CLOSE_TOO_MANY_CONNECTIONS.into(), b"too many connections");
                metrics::counter!("meridian_connections_refused_total", "reason" => "limit")
                    .increment(1);
                return;
            };
            dispatch::serve_connection(conn, identity, ctx).await;
        });
    }
}

/// QUIC close code when `server.max_connections` client connections are open.
const CLOSE_TOO_MANY_CONNECTIONS: u32 = 3;

/// Completes the handshake and reads the peer's identity; `None` (logged and
/// counted) when either fails.
async fn accept(incoming: quinn::Incoming) -> Option<(quinn::Connection, transport::PeerIdentity)> {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Handshake failures include clients without a valid certificate.
            tracing::debug!(%remote, error = %e, "handshake failed");
            metrics::counter!("meridian_connections_refused_total", "reason" => "handshake")
                .increment(1);
            return None;
        }
    };
    match transport::peer_identity(&conn) {
        Ok(p) => Some((conn, p)),
        Err(e) => {
            tracing::warn!(%remote, error = %e, "refusing connection without a usable identity");
            conn.close(1u32.into(), b"no usable certificate identity");
            None
        }
    }
}

/// Runs a node until Ctrl-C / SIGTERM; used by `meridian serve`.
pub async fn run_until_signal(cfg: NodeConfig) -> anyhow::Result<()> {
    let node = Node::start(cfg).await?;
    let advertised = if node.advertised_addr() == node.quic_addr() {
        String::new()
    } else {
        format!(" (advertised as {})", node.advertised_addr())
    };
    eprintln!(
        "meridian node listening: quic {}{advertised} http {}",
        node.quic_addr(),
        node.http_addr()
            .map_or("disabled".to_string(), |a| a.to_string())
    );
    wait_for_signal().await;
    tracing::info!("signal received, shutting down");
    node.shutdown().await;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM (used by `serve` and `dev`).
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
