//! The sans-IO membership core: foca plus the seal, RTT probes, broadcasts
//! and the member-state diff that produces events. Time comes in as an
//! argument; packets and timers go out through `poll_*` (the quinn-proto
//! shape), so the core runs the same under the tokio owner task and under a
//! test's simulated network.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::mem;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{Foca, OwnedNotification, PostcardCodec, Runtime, Timer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::broadcast::{self, BroadcastStore, Handler};
use super::identity::GossipId;
use super::seal::{Sealer, NONCE_LEN};
use super::stats::{GossipStats, METRIC_MEMBERS, METRIC_RTT};
use super::timers::GossipTimers;
use super::view::{
    region_counts, HealthReport, Incarnation, MemberState, MemberView, MembershipEvent, Snapshot,
};
use super::wire::{
    self, Frame, HealthV1, LeaderHintV1, LeaveV1, PingV1, PongV1, RegionCountsV1, RttV1,
    MAX_BROADCAST_ITEM_BYTES, MAX_PEERS_PER_REPORT, MAX_REGIONS_PER_REPORT,
};
use super::MembershipError;

/// Nonces remembered to drop replayed packets (a few minutes of traffic).
pub const REPLAY_CACHE_ENTRIES: usize = 8_192;
/// RTT and seed pings awaiting a pong.
pub const MAX_OUTSTANDING_PINGS: usize = 256;
/// Custom broadcasts foca may hold for dissemination; new ones beyond it
/// are dropped (counted as `backlog`).
pub const MAX_BROADCAST_BACKLOG: usize = 4_096;
/// Timers pending in the core. foca needs every timer delivered, so this is
/// a sanity bound (warned about), not a drop point: foca keeps at most a few
/// per member.
pub const MAX_PENDING_TIMERS: usize = 65_536;
/// Datagrams the core may queue before the driver drains them.
pub const MAX_PENDING_TRANSMITS: usize = 4_096;
/// Smoothing of measured RTTs (RFC 6298 §2: alpha = 1/8).
const RTT_ALPHA: f64 = 1.0 / 8.0;

/// A datagram to send.
#[derive(Debug)]
pub(crate) struct Transmit {
    pub(crate) to: SocketAddr,
    pub(crate) bytes: Vec<u8>,
}

#[derive(Debug)]
enum CoreTimer {
    Foca(Timer<GossipId>),
    Join,
    RttProbe,
    Report,
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    timer: CoreTimer,
}

// Ordered by deadline, then submission order, so timers due together fire
// in the order foca asked for them (foca issue #26).
impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// foca's runtime: collects what one foca call asks for, drained right after.
#[derive(Default)]
struct Outbox {
    sends: Vec<(GossipId, Vec<u8>)>,
    timers: Vec<(Duration, Timer<GossipId>)>,
    notes: Vec<OwnedNotification<GossipId>>,
}

impl Runtime<GossipId> for Outbox {
    fn notify(&mut self, notification: foca::Notification<'_, GossipId>) {
        self.notes.push(notification.to_owned());
    }
    fn send_to(&mut self, to: GossipId, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }
    fn submit_after(&mut self, event: Timer<GossipId>, after: Duration) {
        self.timers.push((after, event));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PingPurpose {
    /// Find out a seed's identity so we can announce to it.
    Seed,
    /// Measure RTT to a member.
    Rtt,
}

struct Outstanding {
    sent_at: Instant,
    target: Option<String>,
    purpose: PingPurpose,
}

/// RTT probes in flight and smoothed RTTs per node id.
struct RttTracker {
    next_seq: u64,
    outstanding: HashMap<u64, Outstanding>,
    srtt_ms: HashMap<String, f64>,
    cursor: usize,
}

impl RttTracker {
    fn start(&mut self, now: Instant, target: Option<String>, purpose: PingPurpose) -> Option<u64> {
        if self.outstanding.len() >= MAX_OUTSTANDING_PINGS {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let sent_at = now;
        self.outstanding.insert(
            seq,
            Outstanding {
                sent_at,
                target,
                purpose,
            },
        );
        Some(seq)
    }

    /// Records the sample of a matching pong; `None` if none was expected.
    fn on_pong(&mut self, now: Instant, seq: u64, responder: &str) -> Option<PingPurpose> {
        let ping = self.outstanding.remove(&seq)?;
        if ping.target.as_deref().is_some_and(|t| t != responder) {
            return None;
        }
        let sample = now.saturating_duration_since(ping.sent_at).as_secs_f64() * 1e3;
        let srtt = self.srtt_ms.entry(responder.to_owned()).or_insert(sample);
        *srtt += RTT_ALPHA * (sample - *srtt);
        Some(ping.purpose)
    }

    fn expire(&mut self, now: Instant, max_age: Duration) {
        self.outstanding
            .retain(|_, p| now.saturating_duration_since(p.sent_at) < max_age);
    }

    fn srtt(&self, node_id: &str) -> Option<f64> {
        self.srtt_ms.get(node_id).copied()
    }
}

/// Nonces of recently accepted packets.
#[derive(Default)]
struct ReplayCache {
    seen: HashSet<[u8; NONCE_LEN]>,
    order: VecDeque<[u8; NONCE_LEN]>,
}

impl ReplayCache {
    /// `false` if `nonce` was seen recently (a replay).
    fn insert(&mut self, nonce: [u8; NONCE_LEN]) -> bool {
        if !self.seen.insert(nonce) {
            return false;
        }
        self.order.push_back(nonce);
        if self.order.len() > REPLAY_CACHE_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

struct Tracked {
    id: GossipId,
    refutation: u16,
    state: MemberState,
    mark: u64,
}

/// What the core is started with.
pub(crate) struct CoreConfig {
    pub(crate) identity: GossipId,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) timers: GossipTimers,
    pub(crate) cluster_key: [u8; 32],
    pub(crate) rng_seed: u64,
}

/// One node's membership state machine.
pub(crate) struct GossipCore {
    foca: Foca<GossipId, PostcardCodec, StdRng, Handler>,
    outbox: Outbox,
    sealer: Sealer,
    store: Arc<Mutex<BroadcastStore>>,
    timers: BinaryHeap<Reverse<Scheduled>>,
    timer_seq: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MembershipEvent>,
    tracked: BTreeMap<String, Tracked>,
    mark: u64,
    rtt: RttTracker,
    replay: ReplayCache,
    seeds: Vec<SocketAddr>,
    cfg: GossipTimers,
    joined: bool,
    left: bool,
    report_seq: u64,
    self_refutation: u16,
    stats: Arc<GossipStats>,
    snapshot: Snapshot,
    members_dirty: bool,
}

impl GossipCore {
    pub(crate) fn new(
        cfg: CoreConfig,
        now: Instant,
        stats: Arc<GossipStats>,
    ) -> Result<GossipCore, MembershipError> {
        let foca_config = cfg.timers.to_foca()?;
        let sealer = Sealer::new(&cfg.cluster_key)?;
        let mut rng = StdRng::seed_from_u64(cfg.rng_seed);
        let next_seq = rng.random();
        let store = Arc::new(Mutex::new(BroadcastStore::default()));
        let foca = Foca::with_custom_broadcast(
            cfg.identity,
            foca_config,
            rng,
            PostcardCodec,
            Handler::new(store.clone()),
        );
        let mut core = GossipCore {
            foca,
            outbox: Outbox::default(),
            sealer,
            store,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            tracked: BTreeMap::new(),
            mark: 0,
            rtt: RttTracker {
                next_seq,
                outstanding: HashMap::new(),
                srtt_ms: HashMap::new(),
                cursor: 0,
            },
            replay: ReplayCache::default(),
            seeds: cfg.seeds,
            cfg: cfg.timers,
            joined: false,
            left: false,
            report_seq: 0,
            self_refutation: 0,
            stats,
            snapshot: Snapshot::default(),
            members_dirty: true,
        };
        core.schedule(now, CoreTimer::Join);
        core.schedule(
            now + core.ms(core.cfg.rtt_probe_interval_ms),
            CoreTimer::RttProbe,
        );
        core.schedule(
            now + core.ms(core.cfg.report_interval_ms),
            CoreTimer::Report,
        );
        Ok(core)
    }

    fn ms(&self, ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    pub(crate) fn identity(&self) -> &GossipId {
        self.foca.identity()
    }

    // ---- inputs -------------------------------------------------------

    /// A datagram from `from`. Opened in place.
    pub(crate) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, packet: &mut [u8]) {
        self.stats.received();
        if packet.len() > self.cfg.max_packet_bytes as usize {
            self.stats.dropped("oversize");
            return;
        }
        let opened = match self.sealer.open(packet) {
            Ok(opened) => opened,
            Err(e) => {
                self.stats.auth_dropped(e.reason());
                tracing::debug!(%from, error = %e, "dropped unauthenticated gossip packet");
                return;
            }
        };
        // Only after the tag verified, so forged nonces cannot evict real ones.
        if !self.replay.insert(opened.nonce) {
            self.stats.auth_dropped("replay");
            tracing::debug!(%from, "dropped replayed gossip packet");
            return;
        }
        match wire::decode_frame(opened.plaintext) {
            Err(e) => {
                self.stats.dropped("frame");
                tracing::debug!(%from, error = %e, "dropped undecodable gossip frame");
            }
            Ok(Frame::Foca(bytes)) => {
                if let Err(e) = self.foca.handle_data(bytes, &mut self.outbox) {
                    self.stats.protocol_error();
                    tracing::debug!(%from, error = %e, "foca refused a message");
                }
            }
            Ok(Frame::Ping(ping)) => self.send_pong(from, ping.seq),
            Ok(Frame::Pong(pong)) => self.on_pong(now, pong),
        }
        self.after(now);
    }

    /// Fires every timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse(top)) = self.timers.peek() {
            if top.at > now {
                break;
            }
            let Some(Reverse(due)) = self.timers.pop() else {
                break;
            };
            match due.timer {
                CoreTimer::Foca(timer) => {
                    if let Err(e) = self.foca.handle_timer(timer, &mut self.outbox) {
                        self.stats.protocol_error();
                        tracing::debug!(error = %e, "foca timer error");
                    }
                }
                CoreTimer::Join => self.join_tick(now),
                CoreTimer::RttProbe => self.rtt_tick(now),
                CoreTimer::Report => self.report_tick(now),
            }
            self.after(now);
        }
    }

    /// Publishes a leader hint for `range`'s group in this node's region.
    pub(crate) fn publish_leader_hint(
        &mut self,
        now: Instant,
        range: u64,
        leader: String,
        term: u64,
    ) {
        let hint = LeaderHintV1 {
            range,
            region: self.identity().region.clone(),
            leader,
            term,
        };
        self.add_broadcast(wire::ITEM_LEADER_HINT, "leader hint", &hint);
        self.after(now);
    }

    /// Graceful leave: tell a few members we are Down (and that we left).
    pub(crate) fn leave(&mut self, now: Instant) {
        let me = self.identity().clone();
        let leave = LeaveV1 {
            node_id: me.node_id,
            generation: me.generation,
            rejoin: me.rejoin,
        };
        self.add_broadcast(wire::ITEM_LEAVE, "leave", &leave);
        // Set first: foca notifies the leave as `Defunct`.
        self.left = true;
        if let Err(e) = self.foca.leave_cluster(&mut self.outbox) {
            tracing::warn!(error = %e, "leaving the cluster failed; peers will detect us as down");
        }
        self.members_dirty = true;
        self.after(now);
    }

    // ---- outputs ------------------------------------------------------

    /// When [`Self::handle_timeout`] should next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(s)| s.at)
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// A new snapshot if anything consumers see changed since the last call.
    pub(crate) fn poll_snapshot(&mut self) -> Option<Snapshot> {
        let mut store = broadcast::lock(&self.store);
        let hints_changed = mem::take(&mut store.hints_changed);
        let reports_changed = mem::take(&mut store.reports_changed);
        if !(self.members_dirty || hints_changed || reports_changed) {
            return None;
        }
        if hints_changed {
            self.snapshot.leader_hints = Arc::new(store.hints.clone());
        }
        if self.members_dirty {
            self.snapshot.members = Arc::new(self.member_views());
        }
        if self.members_dirty || reports_changed {
            self.snapshot.health_reports = Arc::new(self.health_reports(&store));
            self.snapshot.rtt_reports = Arc::new(self.rtt_reports(&store));
        }
        self.members_dirty = false;
        Some(self.snapshot.clone())
    }

    /// A snapshot rebuilt from scratch (tests).
    #[cfg(test)]
    pub(crate) fn poll_snapshot_force(&mut self) -> Snapshot {
        self.members_dirty = true;
        broadcast::lock(&self.store).hints_changed = true;
        self.poll_snapshot().unwrap_or_default()
    }

    // ---- internals ----------------------------------------------------

    fn schedule(&mut self, at: Instant, timer: CoreTimer) {
        if self.timers.len() == MAX_PENDING_TIMERS {
            tracing::warn!(
                pending = self.timers.len(),
                "gossip timer queue above its expected bound"
            );
        }
        self.timer_seq += 1;
        self.timers.push(Reverse(Scheduled {
            at,
            seq: self.timer_seq,
            timer,
        }));
    }

    fn send_frame(&mut self, to: SocketAddr, frame: &[u8]) {
        if self.transmits.len() >= MAX_PENDING_TRANSMITS {
            self.stats.dropped("overload");
            return;
        }
        match self.sealer.seal(frame) {
            Ok(bytes) => self.transmits.push_back(Transmit { to, bytes }),
            Err(e) => {
                self.stats.dropped("send_error");
                tracing::error!(error = %e, "cannot seal a gossip packet");
            }
        }
    }

    fn send_tagged<T: serde::Serialize>(
        &mut self,
        to: SocketAddr,
        kind: u8,
        what: &'static str,
        v: &T,
    ) {
        match wire::encode_tagged(kind, what, v) {
            Ok(frame) => self.send_frame(to, &frame),
            Err(e) => {
                self.stats.dropped("send_error");
                tracing::error!(error = %e, "cannot encode a gossip frame");
            }
        }
    }

    fn send_pong(&mut self, to: SocketAddr, seq: u64) {
        let pong = PongV1 {
            seq,
            responder: self.identity().clone(),
        };
        self.send_tagged(to, wire::FRAME_PONG, "pong", &pong);
    }

    fn send_ping(
        &mut self,
        now: Instant,
        to: SocketAddr,
        target: Option<String>,
        purpose: PingPurpose,
    ) {
        if let Some(seq) = self.rtt.start(now, target, purpose) {
            self.send_tagged(to, wire::FRAME_PING, "ping", &PingV1 { seq });
        }
    }

    /// Sets `meridian_gossip_rtt_seconds{peer_region}`: the mean smoothed
    /// RTT over the live members of `region` this node has measured.
    fn publish_region_rtt(&self, region: &str) {
        let (sum_ms, n) = self
            .tracked
            .values()
            .filter(|t| t.id.region == region && t.state.is_active())
            .filter_map(|t| self.rtt.srtt(&t.id.node_id))
            .fold((0.0, 0u32), |(sum, n), ms| (sum + ms, n + 1));
        if n > 0 {
            metrics::gauge!(METRIC_RTT, "peer_region" => region.to_owned())
                .set(sum_ms / f64::from(n) / 1e3);
        }
    }

    fn on_pong(&mut self, now: Instant, pong: PongV1) {
        if pong.responder.node_id == self.identity().node_id {
            return;
        }
        let Some(purpose) = self.rtt.on_pong(now, pong.seq, &pong.responder.node_id) else {
            return;
        };
        self.members_dirty = true;
        self.publish_region_rtt(&pong.responder.region);
        // Announce to a seed that answered while we are not in a cluster,
        // or that is not a live member of ours: a cluster that split at
        // start-up (each part joined through the seeds that answered first)
        // merges when a seed of the other part answers.
        let stranger = !self.is_live_member(&pong.responder.node_id);
        if purpose == PingPurpose::Seed && !self.left && (!self.joined || stranger) {
            // foca accepts an Announce addressed to any identity with its
            // node id; the pong told us the seed's.
            if let Err(e) = self.foca.announce(pong.responder, &mut self.outbox) {
                tracing::debug!(error = %e, "announce to seed failed");
            }
        }
    }

    /// Whether `node_id` is a member this node sees alive or suspect.
    fn is_live_member(&self, node_id: &str) -> bool {
        self.tracked
            .get(node_id)
            .is_some_and(|t| t.state.is_active())
    }

    /// Pings the seeds: all of them until this node is in a cluster, and
    /// afterwards those that are not live members (at most the configured
    /// seeds, once per `join_retry_ms`), so split clusters find each other.
    fn join_tick(&mut self, now: Instant) {
        if !self.left {
            let own = self.identity().gossip_addr;
            let members: Vec<SocketAddr> = self
                .tracked
                .values()
                .filter(|t| t.state.is_active())
                .map(|t| t.id.gossip_addr)
                .collect();
            let joined = self.joined;
            let seeds: Vec<SocketAddr> = self
                .seeds
                .iter()
                .copied()
                .filter(|s| *s != own && (!joined || !members.contains(s)))
                .collect();
            for seed in seeds {
                self.send_ping(now, seed, None, PingPurpose::Seed);
            }
        }
        self.schedule(now + self.ms(self.cfg.join_retry_ms), CoreTimer::Join);
    }

    fn rtt_tick(&mut self, now: Instant) {
        self.rtt.expire(now, self.ms(self.cfg.suspect_to_down_ms));
        let active: Vec<(String, SocketAddr)> = self
            .tracked
            .values()
            .filter(|t| t.state.is_active())
            .map(|t| (t.id.node_id.clone(), t.id.gossip_addr))
            .collect();
        if !active.is_empty() && !self.left {
            self.rtt.cursor = self.rtt.cursor.wrapping_add(1);
            let (node, addr) = active[self.rtt.cursor % active.len()].clone();
            self.send_ping(now, addr, Some(node), PingPurpose::Rtt);
        }
        self.schedule(
            now + self.ms(self.cfg.rtt_probe_interval_ms),
            CoreTimer::RttProbe,
        );
    }

    fn report_tick(&mut self, now: Instant) {
        if self.joined && !self.left {
            self.report_seq += 1;
            let health = self.health_item();
            self.add_broadcast(wire::ITEM_REGION_HEALTH, "region health", &health);
            let rtt = self.rtt_item();
            self.add_broadcast(wire::ITEM_RTT, "rtt report", &rtt);
        }
        self.schedule(
            now + self.ms(self.cfg.report_interval_ms),
            CoreTimer::Report,
        );
    }

    fn health_item(&self) -> HealthV1 {
        let me = self.identity();
        let counts = region_counts(self.states());
        let regions = counts
            .into_iter()
            .take(MAX_REGIONS_PER_REPORT)
            .map(|(region, c)| RegionCountsV1 {
                region,
                alive: c.alive,
                suspect: c.suspect,
                down: c.down,
            })
            .collect();
        let mut item = HealthV1 {
            origin: me.node_id.clone(),
            generation: me.generation,
            seq: self.report_seq,
            regions,
        };
        while encoded_len(&item) > MAX_BROADCAST_ITEM_BYTES && item.regions.pop().is_some() {}
        item
    }

    fn rtt_item(&self) -> RttV1 {
        let me = self.identity();
        let peers = self
            .tracked
            .values()
            .filter(|t| t.state.is_active())
            .filter_map(|t| {
                let ms = self.rtt.srtt(&t.id.node_id)?;
                let us = (ms * 1e3).clamp(0.0, f64::from(u32::MAX)) as u32;
                Some((t.id.node_id.clone(), us))
            })
            .take(MAX_PEERS_PER_REPORT)
            .collect();
        let mut item = RttV1 {
            origin: me.node_id.clone(),
            generation: me.generation,
            seq: self.report_seq,
            peers,
        };
        while encoded_len(&item) > MAX_BROADCAST_ITEM_BYTES && item.peers.pop().is_some() {}
        item
    }

    fn add_broadcast<T: serde::Serialize>(&mut self, kind: u8, what: &'static str, v: &T) {
        if self.foca.custom_broadcast_backlog() >= MAX_BROADCAST_BACKLOG {
            self.stats.dropped("backlog");
            tracing::warn!(what, "gossip broadcast backlog full; dropped");
            return;
        }
        let result = wire::encode_tagged(kind, what, v)
            .map_err(|e| e.to_string())
            .and_then(|bytes| self.foca.add_broadcast(&bytes).map_err(|e| e.to_string()));
        if let Err(e) = result {
            self.stats.dropped("send_error");
            tracing::error!(what, error = %e, "cannot add a gossip broadcast");
        }
    }

    /// Drains what the last foca call asked for, then updates member state.
    fn after(&mut self, now: Instant) {
        let sends = mem::take(&mut self.outbox.sends);
        if let Some((_, first)) = sends.first() {
            self.note_own_incarnation(first);
        }
        for (dst, data) in sends {
            self.send_frame(
                dst.gossip_addr,
                &wire::encode_frame(wire::FRAME_FOCA, &data),
            );
        }
        for (after, timer) in mem::take(&mut self.outbox.timers) {
            self.schedule(now + after, CoreTimer::Foca(timer));
        }
        let notes = mem::take(&mut self.outbox.notes);
        let mut rejoined = false;
        for note in notes {
            rejoined |= self.on_notification(note);
        }
        self.refresh_members();
        if rejoined {
            self.events
                .push_back(MembershipEvent::Rejoined(self.self_view()));
        }
    }

    /// foca does not expose our SWIM incarnation; every message header
    /// carries it, so read it back from what we send.
    fn note_own_incarnation(&mut self, foca_bytes: &[u8]) {
        if let Ok((header, _)) = postcard::take_from_bytes::<foca::Header<GossipId>>(foca_bytes) {
            if header.src_incarnation != self.self_refutation {
                self.self_refutation = header.src_incarnation;
                self.members_dirty = true;
            }
        }
    }

    /// Returns whether this node rejoined under a renewed identity.
    fn on_notification(&mut self, note: OwnedNotification<GossipId>) -> bool {
        match note {
            OwnedNotification::Active => {
                self.joined = true;
                tracing::info!(node = %self.identity().node_id, "joined the gossip cluster");
            }
            OwnedNotification::Idle => {
                self.joined = false;
                tracing::warn!("no live gossip peers left; contacting seeds");
            }
            OwnedNotification::Defunct if self.left => {
                // foca reports our own graceful leave this way too.
                self.joined = false;
                tracing::info!("left the gossip cluster");
            }
            OwnedNotification::Defunct => {
                self.joined = false;
                tracing::error!("this node was declared down and cannot renew its identity");
            }
            OwnedNotification::Rejoin(id) => {
                self.stats.rejoin();
                self.self_refutation = 0;
                self.members_dirty = true;
                tracing::warn!(identity = ?id, "declared down while alive; rejoined");
                return true;
            }
            _ => {}
        }
        false
    }

    /// Diffs foca's member list against the last one seen, emitting events
    /// and updating metrics.
    fn refresh_members(&mut self) {
        self.mark += 1;
        let mark = self.mark;
        let store = broadcast::lock(&self.store);
        let mut changed = false;
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let state = match m.state() {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down if store.has_left(id) => MemberState::Left,
                foca::State::Down => MemberState::Down,
            };
            let refutation = m.incarnation();
            let event = match self.tracked.get_mut(&id.node_id) {
                Some(t) if t.id == *id && t.state == state && t.refutation == refutation => {
                    t.mark = mark;
                    continue;
                }
                Some(t) if t.id == *id => transition(t.state, state),
                // A new identity of a known node id (restart, rejoin).
                Some(_) if state.is_active() => Some(Change::Joined),
                Some(t) => transition(t.state, state),
                None => state.is_active().then_some(Change::Joined),
            };
            self.tracked.insert(
                id.node_id.clone(),
                Tracked {
                    id: id.clone(),
                    refutation,
                    state,
                    mark,
                },
            );
            changed = true;
            if let Some(change) = event {
                let view = view_of(id, state, refutation, self.rtt.srtt(&id.node_id));
                self.events.push_back(change.event(view, &self.stats));
            }
        }
        let before = self.tracked.len();
        self.tracked.retain(|_, t| t.mark == mark);
        changed |= self.tracked.len() != before;
        drop(store);
        if changed {
            self.after_member_change();
        }
    }

    fn after_member_change(&mut self) {
        self.members_dirty = true;
        let own = self.identity().node_id.clone();
        let tracked = &self.tracked;
        broadcast::lock(&self.store).prune(|n| n == own || tracked.contains_key(n));
        self.rtt
            .srtt_ms
            .retain(|n, _| tracked.get(n).is_some_and(|t| t.state.is_active()));
        let mut counts: BTreeMap<&'static str, f64> = [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Down,
            MemberState::Left,
        ]
        .iter()
        .map(|s| (s.label(), 0.0))
        .collect();
        for (_, state) in self.states() {
            *counts.entry(state.label()).or_default() += 1.0;
        }
        for (label, n) in counts {
            metrics::gauge!(METRIC_MEMBERS, "state" => label).set(n);
        }
    }

    /// (region, state) of every member, self included.
    fn states(&self) -> impl Iterator<Item = (&str, MemberState)> {
        let me = self.identity();
        std::iter::once((me.region.as_str(), self.self_state())).chain(
            self.tracked
                .values()
                .map(|t| (t.id.region.as_str(), t.state)),
        )
    }

    fn self_state(&self) -> MemberState {
        if self.left {
            MemberState::Left
        } else {
            MemberState::Alive
        }
    }

    fn self_view(&self) -> MemberView {
        view_of(
            self.identity(),
            self.self_state(),
            self.self_refutation,
            None,
        )
    }

    fn member_views(&self) -> Vec<MemberView> {
        let mut out = Vec::with_capacity(self.tracked.len() + 1);
        out.push(self.self_view());
        out.extend(
            self.tracked
                .values()
                .map(|t| view_of(&t.id, t.state, t.refutation, self.rtt.srtt(&t.id.node_id))),
        );
        out
    }

    /// Reports of members currently active (and our own).
    fn is_live_reporter(&self, node: &str) -> Option<String> {
        let me = self.identity();
        if node == me.node_id {
            return (!self.left).then(|| me.region.clone());
        }
        let t = self.tracked.get(node)?;
        t.state.is_active().then(|| t.id.region.clone())
    }

    fn health_reports(&self, store: &BroadcastStore) -> BTreeMap<String, HealthReport> {
        store
            .health
            .iter()
            .filter_map(|(origin, r)| {
                let region = self.is_live_reporter(origin)?;
                let regions = r
                    .value
                    .regions
                    .iter()
                    .map(|c| {
                        let h = super::view::RegionHealth {
                            alive: c.alive,
                            suspect: c.suspect,
                            down: c.down,
                        };
                        (c.region.clone(), h)
                    })
                    .collect();
                let report = HealthReport {
                    reporter: origin.clone(),
                    reporter_region: region,
                    regions,
                };
                Some((origin.clone(), report))
            })
            .collect()
    }

    fn rtt_reports(&self, store: &BroadcastStore) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut out: BTreeMap<String, BTreeMap<String, f64>> = store
            .rtt
            .iter()
            .filter(|(origin, _)| self.is_live_reporter(origin).is_some())
            .map(|(origin, r)| {
                let peers = r
                    .value
                    .peers
                    .iter()
                    .map(|(peer, us)| (peer.clone(), f64::from(*us) / 1e3))
                    .collect();
                (origin.clone(), peers)
            })
            .collect();
        // Our own row is always our freshest measurements.
        let own: BTreeMap<String, f64> = self
            .rtt
            .srtt_ms
            .iter()
            .map(|(n, ms)| (n.clone(), *ms))
            .collect();
        out.insert(self.identity().node_id.clone(), own);
        out
    }
}

fn encoded_len<T: serde::Serialize>(v: &T) -> usize {
    postcard::to_allocvec(v).map_or(usize::MAX, |b| b.len() + 1)
}

fn view_of(id: &GossipId, state: MemberState, refutation: u16, rtt_ms: Option<f64>) -> MemberView {
    MemberView {
        identity: id.to_identity(),
        state,
        incarnation: Incarnation {
            generation: id.generation,
            rejoin: id.rejoin,
            refutation,
        },
        rtt_ms,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Joined,
    Suspected,
    Refuted,
    Down,
    Left,
}

impl Change {
    fn event(self, view: MemberView, stats: &GossipStats) -> MembershipEvent {
        match self {
            Change::Joined => MembershipEvent::Joined(view),
            Change::Suspected => {
                stats.suspicion();
                MembershipEvent::Suspected(view)
            }
            Change::Refuted => {
                stats.refuted();
                MembershipEvent::Refuted(view)
            }
            Change::Down => {
                stats.down();
                MembershipEvent::Down(view)
            }
            Change::Left => MembershipEvent::Left(view),
        }
    }
}

/// The event for a state change of one identity (SWIM §4.2 order:
/// Alive ⇄ Suspect → Down; Down is terminal for an identity).
fn transition(from: MemberState, to: MemberState) -> Option<Change> {
    use MemberState::*;
    match (from, to) {
        (Alive, Suspect) => Some(Change::Suspected),
        (Suspect, Alive) => Some(Change::Refuted),
        (Alive | Suspect, Down) => Some(Change::Down),
        (Alive | Suspect | Down, Left) => Some(Change::Left),
        _ => None,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
