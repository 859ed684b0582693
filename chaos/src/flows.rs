//! The UDP flow table of one front address, sans-IO: which client
//! addresses have an upstream socket, a bound on how many, and idle expiry.
//!
//! A flow is one client address (`ip:port`) talking to one front address.
//! Each gets its own upstream socket, so the real node's replies arrive on
//! a socket that knows which client to send them back to (the NAT
//! technique). Time comes in as an argument; the listener task owns the
//! table and the sockets in it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A new flow was refused: the table is at its bound and no flow is idle.
#[derive(Debug)]
pub struct TableFull<F>(pub F);

struct Entry<F> {
    flow: F,
    last_seen: Instant,
}

/// Flows by client address, at most `max`, each closed after `idle`
/// without traffic.
pub struct FlowTable<F> {
    max: usize,
    idle: Duration,
    flows: HashMap<SocketAddr, Entry<F>>,
}

impl<F> FlowTable<F> {
    /// An empty table for at most `max` flows, expiring after `idle`.
    pub fn new(max: usize, idle: Duration) -> FlowTable<F> {
        FlowTable {
            max,
            idle,
            flows: HashMap::new(),
        }
    }

    /// The flow of `client`, marked as seen at `now`.
    pub fn get(&mut self, client: SocketAddr, now: Instant) -> Option<&F> {
        let e = self.flows.get_mut(&client)?;
        e.last_seen = now;
        Some(&e.flow)
    }

    /// Whether a new flow would fit (after [`Self::expire`]).
    pub fn has_room(&self) -> bool {
        self.flows.len() < self.max
    }

    /// Adds the flow of `client`, seen at `now`; refused when the table is
    /// full (call [`Self::expire`] first to make room from idle flows).
    pub fn insert(
        &mut self,
        client: SocketAddr,
        flow: F,
        now: Instant,
    ) -> Result<&F, TableFull<F>> {
        if !self.flows.contains_key(&client) && !self.has_room() {
            return Err(TableFull(flow));
        }
        let e = self.flows.entry(client).or_insert(Entry {
            flow,
            last_seen: now,
        });
        e.last_seen = now;
        Ok(&e.flow)
    }

    /// Removes and returns the flows idle at `now`. A flow is idle when
    /// neither its last datagram from the client nor `reply_seen(flow)`
    /// (the last datagram from upstream, tracked by the caller) is within
    /// `idle`.
    pub fn expire(
        &mut self,
        now: Instant,
        reply_seen: impl Fn(&F) -> Option<Instant>,
    ) -> Vec<(SocketAddr, F)> {
        let idle = self.idle;
        let expired: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(_, e)| {
                let last = reply_seen(&e.flow).map_or(e.last_seen, |r| r.max(e.last_seen));
                now.saturating_duration_since(last) >= idle
            })
            .map(|(a, _)| *a)
            .collect();
        expired
            .into_iter()
            .filter_map(|a| self.flows.remove(&a).map(|e| (a, e.flow)))
            .collect()
    }

    /// Removes the flow of `client` (its upstream socket failed).
    pub fn remove(&mut self, client: SocketAddr) -> Option<F> {
        self.flows.remove(&client).map(|e| e.flow)
    }

    /// Flows open now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is open.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 1, 1], port))
    }

    const IDLE: Duration = Duration::from_secs(10);

    #[test]
    fn a_flow_is_found_by_its_client() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(4, IDLE);
        t.insert(addr(1), "a", t0).unwrap();
        t.insert(addr(2), "b", t0).unwrap();
        assert_eq!(t.get(addr(1), t0), Some(&"a"));
        assert_eq!(t.get(addr(2), t0), Some(&"b"));
        assert_eq!(t.get(addr(3), t0), None);
    }

    #[test]
    fn the_bound_refuses_new_clients_until_one_expires() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(2, IDLE);
        t.insert(addr(1), 1, t0).unwrap();
        t.insert(addr(2), 2, t0 + Duration::from_secs(5)).unwrap();
        let TableFull(back) = t.insert(addr(3), 3, t0).unwrap_err();
        assert_eq!(back, 3);
        // An existing client is not refused.
        assert!(t.insert(addr(1), 1, t0).is_ok());
        let gone = t.expire(t0 + IDLE, |_| None);
        assert_eq!(gone, [(addr(1), 1)]);
        assert!(t.insert(addr(3), 3, t0 + IDLE).is_ok());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn traffic_either_way_keeps_a_flow_alive() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(4, IDLE);
        t.insert(addr(1), 1, t0).unwrap();
        t.insert(addr(2), 2, t0).unwrap();
        t.insert(addr(3), 3, t0).unwrap();
        // Client 1 sends again at 8 s; client 2's upstream replied at 9 s.
        t.get(addr(1), t0 + Duration::from_secs(8));
        let reply = |f: &i32| (*f == 2).then(|| t0 + Duration::from_secs(9));
        let gone = t.expire(t0 + Duration::from_secs(12), reply);
        assert_eq!(gone, [(addr(3), 3)]);
        let mut gone = t.expire(t0 + Duration::from_secs(19), reply);
        gone.sort();
        assert_eq!(gone, [(addr(1), 1), (addr(2), 2)]);
        assert!(t.is_empty());
    }
}
