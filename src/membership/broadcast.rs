//! Custom broadcasts (range-leader hints, region health, RTT reports,
//! graceful leaves): the foca [`foca::BroadcastHandler`] and the store it
//! keeps.
//!
//! foca disseminates an item only while it is news: `receive_item` says
//! whether an item is newer than what the store holds (SWIM's infection-style
//! dissemination, Das et al. §4.1, applied to our own data). Every kind has
//! a total version order, so all nodes converge on the same value:
//! leader hints by `(term, leader node id)`, reports by the origin's
//! `(generation, seq)`, leaves by `(generation, rejoin)`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::identity::GossipId;
use super::view::{LeaderHint, RangeGroup};
use super::wire::{self, HealthV1, Item, LeaderHintV1, LeaveV1, RttV1, WireError};

/// Most leader hints kept (one per range group); hints for new groups are
/// ignored (and counted) beyond it.
pub const MAX_LEADER_HINTS: usize = 65_536;
/// Most nodes whose reports or leaves are kept.
pub const MAX_REPORT_ORIGINS: usize = 4_096;

/// The report an origin last published, with its version.
#[derive(Clone, Debug)]
pub(crate) struct Versioned<T> {
    pub(crate) version: (u64, u64),
    pub(crate) value: T,
}

/// Broadcast state. Owned by the owner task; shared with foca's handler
/// only because foca owns the handler and offers no accessor to it (the
/// lock is never contended: both sides run on the owner task).
#[derive(Debug, Default)]
pub(crate) struct BroadcastStore {
    pub(crate) hints: BTreeMap<RangeGroup, LeaderHint>,
    pub(crate) health: BTreeMap<String, Versioned<HealthV1>>,
    pub(crate) rtt: BTreeMap<String, Versioned<RttV1>>,
    /// Node id → (generation, rejoin) of the identity that left.
    pub(crate) leaves: HashMap<String, (u64, u32)>,
    pub(crate) hints_changed: bool,
    pub(crate) reports_changed: bool,
    /// Items refused because a map was at its limit.
    pub(crate) refused_full: u64,
    /// Items of a kind this build does not know.
    pub(crate) unknown_kinds: u64,
}

/// What identifies a broadcast for replacement in foca's backlog: a newer
/// item with the same key replaces a queued older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BroadcastKey {
    Hint(RangeGroup),
    Health(String),
    Rtt(String),
    Leave(String),
}

impl foca::Invalidates for BroadcastKey {
    // `receive_item` only yields keys for strictly newer items, so any
    // queued item with the same key is older.
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

impl BroadcastStore {
    pub(crate) fn apply(&mut self, item: Item) -> Option<BroadcastKey> {
        match item {
            Item::LeaderHint(h) => self.apply_hint(h),
            Item::RegionHealth(h) => {
                let origin = h.origin.clone();
                let outcome =
                    insert_newer(&mut self.health, origin.clone(), (h.generation, h.seq), h);
                self.report_outcome(outcome, BroadcastKey::Health(origin))
            }
            Item::Rtt(r) => {
                let origin = r.origin.clone();
                let outcome = insert_newer(&mut self.rtt, origin.clone(), (r.generation, r.seq), r);
                self.report_outcome(outcome, BroadcastKey::Rtt(origin))
            }
            Item::Leave(l) => self.apply_leave(l),
            Item::Unknown(_) => {
                self.unknown_kinds += 1;
                None
            }
        }
    }

    fn report_outcome(&mut self, outcome: Insert, key: BroadcastKey) -> Option<BroadcastKey> {
        match outcome {
            Insert::New => {
                self.reports_changed = true;
                Some(key)
            }
            Insert::Stale => None,
            Insert::Full => {
                self.refused_full += 1;
                None
            }
        }
    }

    fn apply_hint(&mut self, h: LeaderHintV1) -> Option<BroadcastKey> {
        let group = RangeGroup {
            range: h.range,
            region: h.region,
        };
        match self.hints.get(&group) {
            Some(old) if (h.term, h.leader.as_str()) <= (old.term, old.leader_node.as_str()) => {
                return None
            }
            None if self.hints.len() >= MAX_LEADER_HINTS => {
                self.refused_full += 1;
                return None;
            }
            _ => {}
        }
        let hint = LeaderHint {
            range: group.range,
            region: group.region.clone(),
            leader_node: h.leader,
            term: h.term,
        };
        self.hints.insert(group.clone(), hint);
        self.hints_changed = true;
        Some(BroadcastKey::Hint(group))
    }

    fn apply_leave(&mut self, l: LeaveV1) -> Option<BroadcastKey> {
        let version = (l.generation, l.rejoin);
        match self.leaves.get(&l.node_id) {
            Some(old) if version <= *old => return None,
            None if self.leaves.len() >= MAX_REPORT_ORIGINS => {
                self.refused_full += 1;
                return None;
            }
            _ => {}
        }
        self.leaves.insert(l.node_id.clone(), version);
        Some(BroadcastKey::Leave(l.node_id))
    }

    /// Whether `id` is the identity that announced its leave.
    pub(crate) fn has_left(&self, id: &GossipId) -> bool {
        self.leaves.get(&id.node_id) == Some(&id.version())
    }

    /// Forgets reports and leaves of node ids `known` no longer lists.
    pub(crate) fn prune(&mut self, known: impl Fn(&str) -> bool) {
        let before = self.health.len() + self.rtt.len();
        self.health.retain(|origin, _| known(origin));
        self.rtt.retain(|origin, _| known(origin));
        self.leaves.retain(|node, _| known(node));
        if self.health.len() + self.rtt.len() != before {
            self.reports_changed = true;
        }
    }
}

enum Insert {
    New,
    Stale,
    /// A new origin beyond [`MAX_REPORT_ORIGINS`].
    Full,
}

/// Inserts `value` if its version is newer than the stored one.
fn insert_newer<T>(
    map: &mut BTreeMap<String, Versioned<T>>,
    origin: String,
    version: (u64, u64),
    value: T,
) -> Insert {
    match map.get(&origin) {
        Some(old) if version <= old.version => Insert::Stale,
        None if map.len() >= MAX_REPORT_ORIGINS => Insert::Full,
        _ => {
            map.insert(origin, Versioned { version, value });
            Insert::New
        }
    }
}

/// foca's broadcast handler: decodes, versions and stores items.
pub(crate) struct Handler {
    store: Arc<Mutex<BroadcastStore>>,
}

impl Handler {
    pub(crate) fn new(store: Arc<Mutex<BroadcastStore>>) -> Handler {
        Handler { store }
    }
}

pub(crate) fn lock(store: &Mutex<BroadcastStore>) -> MutexGuard<'_, BroadcastStore> {
    // A panic while holding the lock cannot leave the maps half-updated in
    // a way that matters (each insert is one call), so keep going.
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

impl foca::BroadcastHandler<GossipId> for Handler {
    type Key = BroadcastKey;
    type Error = WireError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&GossipId>,
    ) -> Result<Option<BroadcastKey>, WireError> {
        let item = wire::decode_item(data)?;
        Ok(lock(&self.store).apply(item))
    }
}

#[cfg(test)]
mod tests {
    use foca::{BroadcastHandler, Invalidates};

    use super::*;
    use crate::membership::wire::{encode_tagged, ITEM_LEADER_HINT, ITEM_LEAVE, ITEM_RTT};

    fn hint(range: u64, leader: &str, term: u64) -> Vec<u8> {
        let h = LeaderHintV1 {
            range,
            region: "eu".into(),
            leader: leader.into(),
            term,
        };
        encode_tagged(ITEM_LEADER_HINT, "hint", &h).unwrap()
    }

    #[test]
    fn leader_hints_keep_the_highest_term() {
        let store = Arc::new(Mutex::new(BroadcastStore::default()));
        let mut h = Handler::new(store.clone());
        assert!(h.receive_item(&hint(1, "a", 2), None).unwrap().is_some());
        assert!(
            h.receive_item(&hint(1, "b", 1), None).unwrap().is_none(),
            "older term"
        );
        assert!(
            h.receive_item(&hint(1, "a", 2), None).unwrap().is_none(),
            "duplicate"
        );
        let key = h.receive_item(&hint(1, "c", 3), None).unwrap().unwrap();
        // Same term, different leader: the greater id wins everywhere.
        assert!(h.receive_item(&hint(1, "d", 3), None).unwrap().is_some());
        assert!(h.receive_item(&hint(1, "b", 3), None).unwrap().is_none());
        let s = lock(&store);
        let got = &s.hints[&RangeGroup {
            range: 1,
            region: "eu".into(),
        }];
        assert_eq!((got.leader_node.as_str(), got.term), ("d", 3));
        assert!(key.invalidates(&BroadcastKey::Hint(RangeGroup {
            range: 1,
            region: "eu".into()
        })));
        assert!(!key.invalidates(&BroadcastKey::Rtt("x".into())));
    }

    #[test]
    fn reports_are_versioned_by_generation_then_seq() {
        let store = Arc::new(Mutex::new(BroadcastStore::default()));
        let mut h = Handler::new(store.clone());
        let rtt = |generation, seq| {
            let r = RttV1 {
                origin: "n1".into(),
                generation,
                seq,
                peers: vec![],
            };
            encode_tagged(ITEM_RTT, "rtt", &r).unwrap()
        };
        assert!(h.receive_item(&rtt(1, 5), None).unwrap().is_some());
        assert!(h.receive_item(&rtt(1, 4), None).unwrap().is_none());
        assert!(
            h.receive_item(&rtt(2, 1), None).unwrap().is_some(),
            "restart"
        );
        assert!(h.receive_item(&rtt(1, 9), None).unwrap().is_none());
        assert!(h.receive_item(&[0x03, 0xff], None).is_err(), "garbage");
        assert!(
            h.receive_item(&[0x99], None).unwrap().is_none(),
            "unknown kind"
        );
        assert_eq!(lock(&store).unknown_kinds, 1);
    }

    #[test]
    fn leave_matches_one_identity() {
        let store = Arc::new(Mutex::new(BroadcastStore::default()));
        let mut h = Handler::new(store.clone());
        let leave = LeaveV1 {
            node_id: "n1".into(),
            generation: 3,
            rejoin: 0,
        };
        let bytes = encode_tagged(ITEM_LEAVE, "leave", &leave).unwrap();
        assert!(h.receive_item(&bytes, None).unwrap().is_some());
        let mut id = crate::membership::identity::GossipId::new(&crate::membership::NodeIdentity {
            node_id: "n1".into(),
            region: "eu".into(),
            zone: "a".into(),
            peer_addr: "127.0.0.1:1".parse().unwrap(),
            client_addr: "127.0.0.1:2".parse().unwrap(),
            gossip_addr: "127.0.0.1:3".parse().unwrap(),
            generation: 3,
        });
        assert!(lock(&store).has_left(&id));
        id.generation = 4;
        assert!(!lock(&store).has_left(&id));
        lock(&store).prune(|_| false);
        assert!(lock(&store).leaves.is_empty());
    }
}
