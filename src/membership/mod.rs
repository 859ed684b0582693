//! Cluster membership: SWIM gossip (foca) across every node of every region,
//! authenticated and WAN-aware. See `docs/membership.md`.
//!
//! - [`Membership`] is the handle: start a node, read members, leader hints,
//!   region health and RTTs, subscribe to events, leave or stop.
//! - One owner task drives a sans-IO core (foca + seal + RTT probes +
//!   broadcasts); handles read an immutable snapshot it publishes.
//! - Every datagram is sealed with a key derived from the 32-byte cluster
//!   key ([`seal`]); anything else is dropped and counted before the
//!   protocol sees it, so an outsider can neither join nor get a member
//!   declared Down.
//! - Timers are sized from the worst cross-region RTT
//!   ([`GossipTimers::for_max_rtt`]).
//!
//! Code map: `identity.rs` (who a node is, and the wire identity),
//! `seal.rs` (packet format v1), `wire.rs` (frames and broadcast items
//! inside a packet), `machine.rs` (the sans-IO core: `handle_*(now, ..)` in,
//! `poll_*()` out), `runtime.rs` (the owner task and [`PacketIo`]),
//! `broadcast.rs` (custom broadcasts and their versions), `view.rs` (the
//! types consumers read), `timers.rs`, `key.rs` (cluster key files),
//! `stats.rs` (counters and metric names), `fault.rs` ([`FaultyIo`] for
//! tests and chaos).
//!
//! **Architecture Invariant: consumers never see foca types.** Everything
//! public here is a Meridian type; foca is an implementation detail that can
//! be replaced without touching callers.
//!
//! **Architecture Invariant: nothing unauthenticated reaches foca.** The
//! seal is checked (then the replay cache) before a byte is decoded.

mod broadcast;
mod fault;
mod identity;
mod key;
mod machine;
mod runtime;
pub mod seal;
mod stats;
mod timers;
mod view;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast as tokio_broadcast, mpsc, oneshot, watch};

pub use broadcast::{MAX_LEADER_HINTS, MAX_REPORT_ORIGINS};
pub use fault::{DelayFn, FaultPlan, FaultyIo, MAX_DELAYED_IN_FLIGHT};
pub use identity::{NodeIdentity, MAX_NODE_ID_BYTES, MAX_REGION_BYTES, MAX_ZONE_BYTES};
pub use key::{
    generate_cluster_key, load_cluster_key, ClusterKeyError, CLUSTER_KEY_LEN, KEY_FILE_MODE,
    MAX_KEY_FILE_BYTES,
};
pub use machine::{
    MAX_BROADCAST_BACKLOG, MAX_OUTSTANDING_PINGS, MAX_PENDING_TIMERS, MAX_PENDING_TRANSMITS,
    REPLAY_CACHE_ENTRIES,
};
pub use runtime::{
    PacketIo, UdpIo, COMMAND_QUEUE_CAPACITY, DATAGRAM_QUEUE_CAPACITY, EVENT_CHANNEL_CAPACITY,
    MAX_DATAGRAMS_PER_TURN, RECV_ERROR_BACKOFF,
};
pub use stats::{
    describe_metrics, GossipStatsSnapshot, AUTH_DROP_REASONS, METRIC_AUTH_DROPPED, METRIC_DOWNS,
    METRIC_DROPPED, METRIC_MEMBERS, METRIC_PACKETS_RECEIVED, METRIC_PACKETS_SENT,
    METRIC_PROTOCOL_ERRORS, METRIC_REFUTED, METRIC_REJOINS, METRIC_SUSPICIONS,
};
pub use timers::{
    GossipTimers, TimersError, DEFAULT_MAX_RTT_MS, MAX_PACKET_BYTES, MIN_PACKET_BYTES,
    MIN_PROBE_PERIOD_MS, MIN_PROBE_RTT_MS, SUSPICION_PERIODS,
};
pub use view::{
    HealthReport, Incarnation, LeaderHint, MemberState, MemberView, MembershipEvent, RangeGroup,
    RegionHealth,
};
pub use wire::{WireError, MAX_BROADCAST_ITEM_BYTES, MAX_PEERS_PER_REPORT, MAX_REGIONS_PER_REPORT};

use identity::GossipId;
use machine::{CoreConfig, GossipCore};
use runtime::{Command, Outputs};
use stats::GossipStats;
use view::Snapshot;

/// Most seed addresses a node is configured with.
pub const MAX_SEEDS: usize = 16;
/// Longest a graceful `leave` or `shutdown` waits for the owner task.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why membership could not start or a request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// A config field breaks its rule; nothing was started. Fix the field.
    #[error("invalid membership config: {field}: {reason}")]
    InvalidConfig {
        /// The field, e.g. `timers.probe_period_ms` or `identity.node_id`.
        field: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The gossip socket could not be bound; nothing was started. Check the
    /// address and that no other process holds the port.
    #[error("cannot bind the gossip socket on {addr}: {source}")]
    Bind {
        /// The bind address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bound socket's address could not be read; nothing was started.
    #[error("cannot read the gossip socket's address: {0}")]
    Socket(std::io::Error),
    /// The packet seal could not be set up; nothing was started.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// The node's membership is stopped; the request did nothing.
    #[error("membership is stopped")]
    Stopped,
    /// The command queue is full; the request did nothing. Retry shortly.
    #[error("membership command queue is full ({COMMAND_QUEUE_CAPACITY} commands); retry")]
    Overloaded,
}

impl From<TimersError> for MembershipError {
    fn from(e: TimersError) -> Self {
        MembershipError::InvalidConfig {
            field: format!("timers.{}", e.field),
            reason: e.reason,
        }
    }
}

/// How to start a node's membership.
#[derive(Clone)]
pub struct MembershipConfig {
    /// Who this node is.
    pub identity: NodeIdentity,
    /// Local address of the gossip UDP socket.
    pub bind: SocketAddr,
    /// Gossip addresses to join through (at most [`MAX_SEEDS`]); one live
    /// node is enough, the rest is learned. Empty for the first node.
    pub seeds: Vec<SocketAddr>,
    /// The cluster key ([`load_cluster_key`]); nodes with another key can
    /// neither join nor be heard.
    pub cluster_key: [u8; 32],
    /// Timers and sizes.
    pub timers: GossipTimers,
}

impl std::fmt::Debug for MembershipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipConfig")
            .field("identity", &self.identity)
            .field("bind", &self.bind)
            .field("seeds", &self.seeds)
            .field("cluster_key", &"<redacted>")
            .field("timers", &self.timers)
            .finish()
    }
}

impl MembershipConfig {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<(), MembershipError> {
        self.identity.validate()?;
        if self.seeds.len() > MAX_SEEDS {
            return Err(MembershipError::InvalidConfig {
                field: "seeds".into(),
                reason: format!("{} seeds, at most {MAX_SEEDS}", self.seeds.len()),
            });
        }
        if self.cluster_key == [0u8; 32] {
            return Err(MembershipError::InvalidConfig {
                field: "cluster_key".into(),
                reason: "is all zeros; generate one with `meridian certs init`".into(),
            });
        }
        self.timers.validate()?;
        Ok(())
    }
}

/// A running node's membership. Cheap to clone; the node stops when
/// [`Membership::leave`] or [`Membership::shutdown`] is called on any clone,
/// or when every clone is dropped (like a crash: no leave message).
#[derive(Clone)]
pub struct Membership {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Snapshot>,
    events: tokio_broadcast::Sender<MembershipEvent>,
    local_addr: SocketAddr,
    stats: Arc<GossipStats>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Binds the gossip socket at `cfg.bind`, spawns the owner task and
    /// starts contacting the seeds.
    pub async fn start(cfg: MembershipConfig) -> Result<Membership, MembershipError> {
        cfg.validate()?;
        let io = UdpIo::bind(cfg.bind)
            .await
            .map_err(|source| MembershipError::Bind {
                addr: cfg.bind,
                source,
            })?;
        Membership::start_with_io(cfg, Arc::new(io), None)
    }

    /// Like [`Membership::start`] over a given socket (`cfg.bind` is
    /// ignored). `rng_seed` fixes foca's member choices (tests); nonces are
    /// always from the OS. Must be called inside a tokio runtime.
    pub fn start_with_io<I: PacketIo>(
        mut cfg: MembershipConfig,
        io: Arc<I>,
        rng_seed: Option<u64>,
    ) -> Result<Membership, MembershipError> {
        cfg.validate()?;
        let local_addr = io.local_addr().map_err(MembershipError::Socket)?;
        cfg.identity.gossip_addr = advertised_addr(cfg.identity.gossip_addr, local_addr)?;
        let stats = Arc::new(GossipStats::default());
        let max_packet_bytes = cfg.timers.max_packet_bytes as usize;
        let mut core = GossipCore::new(
            CoreConfig {
                identity: GossipId::new(&cfg.identity),
                seeds: cfg.seeds,
                timers: cfg.timers,
                cluster_key: cfg.cluster_key,
                rng_seed: rng_seed.unwrap_or_else(rand::random),
            },
            Instant::now(),
            stats.clone(),
        )?;
        let initial = core.poll_snapshot().unwrap_or_default();
        let (view_tx, view_rx) = watch::channel(initial);
        let (events_tx, _) = tokio_broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let outputs = Outputs {
            view: view_tx,
            events: events_tx.clone(),
        };
        runtime::spawn(core, io, cmd_rx, outputs, stats.clone(), max_packet_bytes);
        Ok(Membership {
            commands: cmd_tx,
            view: view_rx,
            events: events_tx,
            local_addr,
            stats,
        })
    }

    /// The gossip socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's current identity (its gossip address filled in).
    pub fn identity(&self) -> NodeIdentity {
        self.local_view().identity
    }

    /// This node as it presents itself (state, incarnation).
    pub fn local_view(&self) -> MemberView {
        // The core always puts self first; the fallback is unreachable.
        self.view
            .borrow()
            .members
            .first()
            .cloned()
            .unwrap_or(MemberView {
                identity: NodeIdentity {
                    node_id: String::new(),
                    region: String::new(),
                    zone: String::new(),
                    peer_addr: self.local_addr,
                    client_addr: self.local_addr,
                    gossip_addr: self.local_addr,
                    generation: 0,
                },
                state: MemberState::Down,
                incarnation: Incarnation::default(),
                rtt_ms: None,
            })
    }

    /// Every member this node knows, self first, then by node id. Down and
    /// Left members stay listed for `timers.remove_down_after_ms`.
    pub fn members(&self) -> Vec<MemberView> {
        self.view.borrow().members.as_ref().clone()
    }

    /// This node's measured round trip to each other region: the lowest
    /// smoothed RTT to a live member there, in ms (regions without a live
    /// member with a measured RTT are absent). Service lookups order
    /// regions by it.
    pub fn region_rtts(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for member in self.view.borrow().members.iter() {
            let (Some(rtt), MemberState::Alive) = (member.rtt_ms, member.state) else {
                continue;
            };
            let best = out.entry(member.identity.region.clone()).or_insert(rtt);
            *best = best.min(rtt);
        }
        out
    }

    /// One member by node id.
    pub fn member(&self, node_id: &str) -> Option<MemberView> {
        let view = self.view.borrow();
        view.members
            .iter()
            .find(|m| m.identity.node_id == node_id)
            .cloned()
    }

    /// Gossips that `leader_node` leads `range`'s group in this node's
    /// region at `term`. A hint with a lower term than one already known is
    /// ignored. Fire and forget: it reaches all nodes within a few gossip
    /// rounds.
    pub fn publish_leader_hint(
        &self,
        range: u64,
        leader_node: &str,
        term: u64,
    ) -> Result<(), MembershipError> {
        if leader_node.is_empty() || leader_node.len() > MAX_NODE_ID_BYTES {
            return Err(MembershipError::InvalidConfig {
                field: "leader_node".into(),
                reason: format!("must be 1..={MAX_NODE_ID_BYTES} bytes"),
            });
        }
        let command = Command::PublishLeaderHint {
            range,
            leader: leader_node.to_owned(),
            term,
        };
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => MembershipError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => MembershipError::Stopped,
        })
    }

    /// All known leader hints, per range group.
    pub fn leader_hints(&self) -> BTreeMap<RangeGroup, LeaderHint> {
        self.view.borrow().leader_hints.as_ref().clone()
    }

    /// The leader hint of one range group.
    pub fn leader_hint(&self, range: u64, region: &str) -> Option<LeaderHint> {
        let group = RangeGroup {
            range,
            region: region.to_owned(),
        };
        self.view.borrow().leader_hints.get(&group).cloned()
    }

    /// Member counts per region as this node sees them (self included).
    pub fn region_health(&self) -> BTreeMap<String, RegionHealth> {
        let view = self.view.borrow();
        view::region_counts(
            view.members
                .iter()
                .map(|m| (m.identity.region.as_str(), m.state)),
        )
    }

    /// The region-health summaries live members published, by reporter.
    pub fn region_health_reports(&self) -> BTreeMap<String, HealthReport> {
        self.view.borrow().health_reports.as_ref().clone()
    }

    /// This node's smoothed RTT to `node_id`, in milliseconds.
    pub fn rtt_ms(&self, node_id: &str) -> Option<f64> {
        self.member(node_id).and_then(|m| m.rtt_ms)
    }

    /// Measured RTTs in milliseconds: reporter node id → peer → RTT. This
    /// node's own row is current; other rows are as last published.
    pub fn rtt_matrix(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
        self.view.borrow().rtt_reports.as_ref().clone()
    }

    /// Membership events from now on.
    pub fn subscribe(&self) -> tokio_broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    /// This node's gossip counters.
    pub fn stats(&self) -> GossipStatsSnapshot {
        self.stats.snapshot()
    }

    /// Leaves gracefully: peers mark this node Left at once instead of
    /// detecting a failure. Then stops and closes the socket.
    pub async fn leave(self) {
        self.stop(true).await;
    }

    /// Stops abruptly, like a crash: no leave message; peers detect the
    /// node as Down. Closes the socket.
    pub async fn shutdown(self) {
        self.stop(false).await;
    }

    async fn stop(self, leave: bool) {
        let (done_tx, done_rx) = oneshot::channel();
        let sent = tokio::time::timeout(
            STOP_TIMEOUT,
            self.commands.send(Command::Stop {
                leave,
                done: done_tx,
            }),
        )
        .await;
        if matches!(sent, Ok(Ok(()))) {
            // Err: the owner already stopped, which is what we wanted.
            let _ = tokio::time::timeout(STOP_TIMEOUT, done_rx).await;
        }
    }
}

/// The gossip address to advertise: the configured one, or the bound one
/// when the configured port is 0.
fn advertised_addr(
    configured: SocketAddr,
    bound: SocketAddr,
) -> Result<SocketAddr, MembershipError> {
    let addr = if configured.port() == 0 {
        bound
    } else {
        configured
    };
    if addr.ip().is_unspecified() {
        return Err(MembershipError::InvalidConfig {
            field: "identity.gossip_addr".into(),
            reason: format!(
                "{addr} is not an address peers can send to; set the node's reachable address"
            ),
        });
    }
    Ok(addr)
}
