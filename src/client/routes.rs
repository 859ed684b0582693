//! Where the SDK sends a request: the sans-IO leader cache.
//!
//! A region's keyspace is cut into ranges, each led by one node (which may
//! differ per range). The cache holds the range table (learned once from a
//! node's region status, the first time a node answers `NotLeader`) and,
//! per range, the leader a node last named. Requests for a range with a
//! cached leader go straight to it; others go to the *home* endpoint (one of
//! the configured endpoints). A stale entry heals itself: a `NotLeader`
//! reply names the new leader (or clears the entry), and an unreachable
//! address is forgotten and avoided for [`DOWN_FOR`].
//!
//! Everything here is synchronous and deterministic (time is passed in), so
//! it is tested without a cluster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::{OpV1, ReadConsistencyV1, RequestV1};

/// How long an address that could not be reached is avoided.
pub const DOWN_FOR: Duration = Duration::from_secs(2);

/// What a request must reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The leader of the range owning this key.
    Key(Vec<u8>),
    /// The leader of the range with this id.
    Range(u64),
    /// Any node (serializable reads, status, membership views).
    Any,
}

impl Target {
    /// The target of `req`.
    pub fn of(req: &RequestV1) -> Target {
        let linear = |c: &ReadConsistencyV1| matches!(c, ReadConsistencyV1::Linearizable);
        match req {
            RequestV1::Get { key, .. }
            | RequestV1::Put { key, .. }
            | RequestV1::PutAfter { key, .. }
            | RequestV1::DeleteAfter { key, .. }
            | RequestV1::Delete { key }
            | RequestV1::PutLeased { key, .. }
            | RequestV1::History { key, .. }
            | RequestV1::HistoryPage { key, .. } => Target::Key(key.clone()),
            // Leases live in the region's lease range: the one holding the
            // empty key.
            RequestV1::LeaseGrant { .. }
            | RequestV1::LeaseKeepAlive { .. }
            | RequestV1::LeaseRevoke { .. }
            | RequestV1::LeaseTtl { .. }
            | RequestV1::LeaseList { .. }
            | RequestV1::LockAcquire { .. }
            | RequestV1::LockRelease { .. }
            | RequestV1::LockCancel { .. }
            | RequestV1::LockHolder { .. } => Target::Key(Vec::new()),
            RequestV1::Fenced { write, .. } => match write {
                crate::wire::FencedWriteV1::Put { key, .. }
                | crate::wire::FencedWriteV1::Delete { key } => Target::Key(key.clone()),
                crate::wire::FencedWriteV1::Txn(t) => Target::of(&RequestV1::Txn(t.clone())),
            },
            RequestV1::GetWith {
                key, consistency, ..
            } if linear(consistency) => Target::Key(key.clone()),
            RequestV1::Range { start, .. } => Target::Key(start.clone()),
            RequestV1::RangeWith {
                start, consistency, ..
            } if linear(consistency) => Target::Key(start.clone()),
            RequestV1::Txn(t) => {
                let op_key = |op: &OpV1| match op {
                    OpV1::Put { key, .. } | OpV1::Delete { key } => key.clone(),
                };
                let first = t
                    .compares
                    .first()
                    .map(|c| c.key.clone())
                    .or_else(|| t.success.iter().chain(&t.failure).next().map(op_key));
                first.map_or(Target::Any, Target::Key)
            }
            RequestV1::RegionChange(c) => Target::Range(c.range),
            _ => Target::Any,
        }
    }
}

/// Whether `req` only reads: it changes nothing wherever and however often
/// it runs, so the SDK may resend it to another node when its outcome is
/// unknown. Exhaustive on purpose: a new request kind must be classified.
pub fn is_read_only(req: &RequestV1) -> bool {
    match req {
        RequestV1::Get { .. }
        | RequestV1::GetWith { .. }
        | RequestV1::Range { .. }
        | RequestV1::RangeWith { .. }
        | RequestV1::History { .. }
        | RequestV1::HistoryPage { .. }
        | RequestV1::Status
        | RequestV1::PeerPing
        | RequestV1::RegionStatus
        | RequestV1::Members
        | RequestV1::LeaderHints
        | RequestV1::Policies
        | RequestV1::LeaseTtl { .. }
        | RequestV1::LeaseList { .. }
        | RequestV1::LockHolder { .. }
        | RequestV1::ServiceLookup { .. }
        | RequestV1::Frontiers
        | RequestV1::Watch(_) => true,
        RequestV1::Put { .. }
        | RequestV1::PutAfter { .. }
        | RequestV1::DeleteAfter { .. }
        | RequestV1::Delete { .. }
        | RequestV1::Txn(_)
        | RequestV1::RegionChange(_)
        | RequestV1::SetPolicy(_)
        | RequestV1::RemovePolicy { .. }
        | RequestV1::LeaseGrant { .. }
        | RequestV1::LeaseKeepAlive { .. }
        | RequestV1::LeaseRevoke { .. }
        | RequestV1::PutLeased { .. }
        | RequestV1::LockAcquire { .. }
        | RequestV1::LockRelease { .. }
        | RequestV1::LockCancel { .. }
        | RequestV1::Fenced { .. }
        | RequestV1::ServiceRegister { .. }
        | RequestV1::Raft(_) => false,
    }
}

/// One range of the table, with its cached leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRange {
    /// Range id.
    pub id: u64,
    /// First key.
    pub start: Vec<u8>,
    /// End key (exclusive), or none.
    pub end: Option<Vec<u8>>,
    /// Cached leader address.
    pub leader: Option<SocketAddr>,
}

impl RouteRange {
    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }
}

/// The leader cache of one client.
#[derive(Debug)]
pub struct Routes {
    endpoints: Vec<SocketAddr>,
    home: usize,
    /// `None` until learned; empty when the node runs no region.
    ranges: Option<Vec<RouteRange>>,
    /// A leader named for a target no known range matches.
    fallback_leader: Option<SocketAddr>,
    down_until: HashMap<SocketAddr, Instant>,
}

impl Routes {
    /// A cache over `endpoints` (not empty), starting at `endpoints[home]`.
    pub fn new(endpoints: Vec<SocketAddr>, home: usize) -> Routes {
        assert!(!endpoints.is_empty(), "a client has at least one endpoint");
        let home = home % endpoints.len();
        Routes {
            endpoints,
            home,
            ranges: None,
            fallback_leader: None,
            down_until: HashMap::new(),
        }
    }

    /// The endpoint requests without a cached leader go to.
    pub fn home(&self) -> SocketAddr {
        self.endpoints[self.home]
    }

    /// Makes `addr` home if it is one of the endpoints (the client reached
    /// it first).
    pub fn prefer(&mut self, addr: SocketAddr) {
        if let Some(i) = self.endpoints.iter().position(|e| *e == addr) {
            self.home = i;
        }
    }

    /// A handshake with `addr` completed after the first one (that one went
    /// to [`Routes::prefer`]): `addr` is no longer avoided, and if it
    /// completed `within_grace` (see [`super::liveness::dial_grace`]) and
    /// is listed before the current home, it becomes home. Endpoint order
    /// then decides home whenever the listed endpoints answer about as
    /// fast, so clients given the same endpoints in different orders (as
    /// `meridian bench --conns` rotates them) spread over the nodes
    /// instead of all starting at whichever answered first; a slow or dead
    /// endpoint still costs nothing.
    pub fn handshake_completed(&mut self, addr: SocketAddr, within_grace: bool) {
        self.reachable(addr);
        if !within_grace {
            return;
        }
        if let Some(i) = self.endpoints.iter().position(|e| *e == addr) {
            if i < self.home {
                self.home = i;
            }
        }
    }

    /// `addr` completed a handshake: stop avoiding it.
    pub fn reachable(&mut self, addr: SocketAddr) {
        self.down_until.remove(&addr);
    }

    /// Whether the range table has been learned.
    pub fn knows_ranges(&self) -> bool {
        self.ranges.is_some()
    }

    /// The learned range table (for inspection).
    pub fn ranges(&self) -> Option<&[RouteRange]> {
        self.ranges.as_deref()
    }

    fn is_down(&self, addr: SocketAddr, now: Instant) -> bool {
        self.down_until.get(&addr).is_some_and(|t| now < *t)
    }

    /// The index of the range `target` names, if the table is known and
    /// has it.
    fn range_of(&self, target: &Target) -> Option<usize> {
        let ranges = self.ranges.as_ref()?;
        match target {
            Target::Key(k) => ranges.iter().position(|r| r.contains(k)),
            Target::Range(id) => ranges.iter().position(|r| r.id == *id),
            Target::Any => None,
        }
    }

    /// The cached-leader entry of `target`: its range's, or the fallback.
    fn slot(&mut self, target: &Target) -> &mut Option<SocketAddr> {
        match (self.range_of(target), self.ranges.as_mut()) {
            (Some(i), Some(ranges)) => &mut ranges[i].leader,
            _ => &mut self.fallback_leader,
        }
    }

    fn cached(&self, target: &Target) -> Option<SocketAddr> {
        if *target == Target::Any {
            return None;
        }
        match (self.range_of(target), self.ranges.as_ref()) {
            (Some(i), Some(ranges)) => ranges[i].leader,
            _ => self.fallback_leader,
        }
    }

    /// Where to send a request for `target` now.
    pub fn pick(&self, target: &Target, now: Instant) -> SocketAddr {
        match self.cached(target) {
            Some(addr) if !self.is_down(addr, now) => addr,
            _ => self.home(),
        }
    }

    /// Installs the range table `(id, start, end)`, keeping cached leaders
    /// of ranges that are still there unchanged.
    pub fn set_ranges(&mut self, table: Vec<(u64, Vec<u8>, Option<Vec<u8>>)>) {
        let old = self.ranges.take().unwrap_or_default();
        let mut ranges: Vec<RouteRange> = table
            .into_iter()
            .map(|(id, start, end)| {
                let leader = old
                    .iter()
                    .find(|o| o.id == id && o.start == start && o.end == end)
                    .and_then(|o| o.leader);
                RouteRange {
                    id,
                    start,
                    end,
                    leader,
                }
            })
            .collect();
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        self.ranges = Some(ranges);
    }

    /// `asked` answered `NotLeader` for `target`, naming `leader`. Caches a
    /// usable leader; otherwise (no name, the node named itself, or the named
    /// node is known to be down) clears the entry and moves home past
    /// `asked`, so the next attempt asks another node. Returns whether a
    /// leader was cached (the caller may retry at once; otherwise it should
    /// pause while an election settles).
    pub fn not_leader(
        &mut self,
        target: &Target,
        asked: SocketAddr,
        leader: Option<SocketAddr>,
        now: Instant,
    ) -> bool {
        let usable = leader.filter(|l| *l != asked && !self.is_down(*l, now));
        *self.slot(target) = usable;
        if usable.is_none() {
            self.move_home_past(asked, now);
        }
        usable.is_some()
    }

    /// `addr` could not be reached: forget it as a leader, avoid it for
    /// [`DOWN_FOR`], and move home past it if it was home.
    pub fn unreachable(&mut self, addr: SocketAddr, now: Instant) {
        self.down_until.insert(addr, now + DOWN_FOR);
        self.down_until.retain(|_, t| now < *t);
        for r in self.ranges.iter_mut().flatten() {
            if r.leader == Some(addr) {
                r.leader = None;
            }
        }
        if self.fallback_leader == Some(addr) {
            self.fallback_leader = None;
        }
        self.move_home_past(addr, now);
    }

    /// If `addr` is home, makes the next endpoint not known to be down home.
    fn move_home_past(&mut self, addr: SocketAddr, now: Instant) {
        if self.home() != addr {
            return;
        }
        let n = self.endpoints.len();
        let next = (1..=n)
            .map(|k| (self.home + k) % n)
            .find(|&i| !self.is_down(self.endpoints[i], now))
            .unwrap_or((self.home + 1) % n);
        self.home = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn table() -> Vec<(u64, Vec<u8>, Option<Vec<u8>>)> {
        vec![
            (1, b"".to_vec(), Some(b"config/".to_vec())),
            (2, b"config/".to_vec(), Some(b"config0".to_vec())),
            (3, b"config0".to_vec(), None),
        ]
    }

    fn key(k: &str) -> Target {
        Target::Key(k.as_bytes().to_vec())
    }

    #[test]
    fn targets_of_requests() {
        let get = RequestV1::GetWith {
            key: b"k".to_vec(),
            at: None,
            consistency: ReadConsistencyV1::Linearizable,
        };
        assert_eq!(Target::of(&get), key("k"));
        let stale = RequestV1::GetWith {
            key: b"k".to_vec(),
            at: None,
            consistency: ReadConsistencyV1::Serializable,
        };
        assert_eq!(Target::of(&stale), Target::Any);
        let txn = RequestV1::Txn(crate::wire::TxnV1 {
            compares: vec![],
            success: vec![],
            failure: vec![OpV1::Delete { key: b"d".to_vec() }],
        });
        assert_eq!(Target::of(&txn), key("d"));
        assert_eq!(Target::of(&RequestV1::Status), Target::Any);
    }

    #[test]
    fn only_reads_are_read_only() {
        let get = RequestV1::GetWith {
            key: b"k".to_vec(),
            at: None,
            consistency: ReadConsistencyV1::Linearizable,
        };
        assert!(is_read_only(&get));
        assert!(is_read_only(&RequestV1::RegionStatus));
        let put = RequestV1::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        assert!(!is_read_only(&put));
        let txn = RequestV1::Txn(crate::wire::TxnV1 {
            compares: vec![],
            success: vec![],
            failure: vec![],
        });
        assert!(!is_read_only(&txn), "a transaction may write");
    }

    #[test]
    fn leaders_are_cached_per_range() {
        let now = Instant::now();
        let mut r = Routes::new(vec![addr(1), addr(2), addr(3)], 0);
        r.set_ranges(table());
        assert!(r.not_leader(&key("config/a"), addr(1), Some(addr(2)), now));
        assert!(r.not_leader(&key("zzz"), addr(1), Some(addr(3)), now));
        assert_eq!(r.pick(&key("config/b"), now), addr(2));
        assert_eq!(r.pick(&key("zebra"), now), addr(3));
        // Range 1 has no cached leader: home.
        assert_eq!(r.pick(&key("a"), now), addr(1));
        assert_eq!(r.pick(&Target::Range(2), now), addr(2));
        assert_eq!(r.pick(&Target::Any, now), addr(1));
    }

    #[test]
    fn a_stale_leader_is_replaced_or_cleared() {
        let now = Instant::now();
        let mut r = Routes::new(vec![addr(1), addr(2), addr(3)], 0);
        r.set_ranges(table());
        r.not_leader(&key("config/a"), addr(1), Some(addr(2)), now);
        // The cached leader lost leadership and names the new one.
        assert!(r.not_leader(&key("config/a"), addr(2), Some(addr(3)), now));
        assert_eq!(r.pick(&key("config/a"), now), addr(3));
        // An election is on: no name. The entry clears; home stays (it was not asked).
        assert!(!r.not_leader(&key("config/a"), addr(3), None, now));
        assert_eq!(r.pick(&key("config/a"), now), addr(1));
        // Home itself knows no leader: home moves on.
        assert!(!r.not_leader(&key("config/a"), addr(1), None, now));
        assert_eq!(r.home(), addr(2));
        // A node naming itself is not believed.
        assert!(!r.not_leader(&key("config/a"), addr(2), Some(addr(2)), now));
        assert_eq!(r.home(), addr(3));
    }

    #[test]
    fn unreachable_nodes_are_avoided_then_retried() {
        let now = Instant::now();
        let mut r = Routes::new(vec![addr(1), addr(2), addr(3)], 0);
        r.set_ranges(table());
        r.not_leader(&key("a"), addr(1), Some(addr(2)), now);
        r.unreachable(addr(2), now);
        assert_eq!(r.pick(&key("a"), now), addr(1));
        // A hint naming the dead node is not cached while it is avoided.
        assert!(!r.not_leader(&key("a"), addr(1), Some(addr(2)), now));
        assert_eq!(r.home(), addr(3), "home skips the down node");
        let later = now + DOWN_FOR + Duration::from_millis(1);
        assert!(r.not_leader(&key("a"), addr(3), Some(addr(2)), later));
        assert_eq!(r.pick(&key("a"), later), addr(2));
    }

    #[test]
    fn the_first_endpoint_to_answer_becomes_home() {
        let now = Instant::now();
        let mut r = Routes::new(vec![addr(1), addr(2), addr(3)], 0);
        r.prefer(addr(3));
        assert_eq!(r.pick(&key("a"), now), addr(3));
        r.prefer(addr(9)); // not an endpoint: ignored
        assert_eq!(r.home(), addr(3));
        // Avoided while its handshake was pending, then reachable again.
        r.unreachable(addr(1), now);
        assert!(!r.not_leader(&key("a"), addr(3), Some(addr(1)), now));
        r.reachable(addr(1));
        assert!(r.not_leader(&key("a"), addr(2), Some(addr(1)), now));
        assert_eq!(r.pick(&key("a"), now), addr(1));
    }

    #[test]
    fn an_endpoint_listed_earlier_that_answers_within_the_grace_becomes_home() {
        let now = Instant::now();
        let mut r = Routes::new(vec![addr(1), addr(2), addr(3)], 0);
        r.prefer(addr(3)); // the first handshake
        r.handshake_completed(addr(2), true);
        assert_eq!(r.home(), addr(2));
        r.handshake_completed(addr(3), true); // listed later: no change
        assert_eq!(r.home(), addr(2));
        r.handshake_completed(addr(9), true); // not an endpoint: ignored
        assert_eq!(r.home(), addr(2));
        // After the grace: reachable again, but home stays.
        r.unreachable(addr(1), now);
        r.handshake_completed(addr(1), false);
        assert_eq!(r.home(), addr(2));
        assert!(r.not_leader(&key("a"), addr(2), Some(addr(1)), now));
        r.handshake_completed(addr(1), true);
        assert_eq!(r.home(), addr(1));
    }

    #[test]
    fn without_a_range_table_the_named_leader_is_used() {
        let now = Instant::now();
        let mut r = Routes::new(vec![addr(1), addr(2)], 1);
        assert_eq!(r.home(), addr(2));
        r.set_ranges(Vec::new());
        assert!(r.knows_ranges());
        assert!(r.not_leader(&key("k"), addr(2), Some(addr(9)), now));
        assert_eq!(r.pick(&key("k"), now), addr(9));
    }

    #[test]
    fn relearning_the_table_keeps_leaders_of_unchanged_ranges() {
        let now = Instant::now();
        let mut r = Routes::new(vec![addr(1)], 0);
        r.set_ranges(table());
        r.not_leader(&key("config/a"), addr(1), Some(addr(2)), now);
        r.not_leader(&key("zzz"), addr(1), Some(addr(3)), now);
        let mut changed = table();
        changed[2].2 = Some(b"m".to_vec());
        changed.push((4, b"m".to_vec(), None));
        r.set_ranges(changed);
        assert_eq!(r.pick(&key("config/a"), now), addr(2));
        assert_eq!(
            r.pick(&key("zzz"), now),
            addr(1),
            "range 3 changed: its entry is gone"
        );
    }
}
