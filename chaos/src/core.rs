//! The sans-IO datagram core: admits datagrams onto directed links (cut,
//! lost, over the queue bound, or scheduled after the link's delay) and
//! hands them back when due. Time comes in as an argument and randomness
//! from one seeded generator per link, so a test drives it exactly; the
//! engine task (`engine.rs`) is its only owner in the running emulator.
//!
//! The payload `T` is opaque here: the engine stores the socket and address
//! to send from and to; tests store numbers.
//!
//! Rules, in the order applied to each datagram:
//! 1. a link cut by a partition drops it (`dropped_partition`);
//! 2. a link whose queue already holds its bound of datagrams or bytes
//!    drops it (`dropped_overflow`);
//! 3. the link's loss drops it (`dropped_loss`);
//! 4. otherwise it is due at `now + delay` (half the RTT plus jitter),
//!    but never before the datagram ahead of it on the same link.
//!
//! Jitter does not reorder a link's datagrams (unlike netem's jitter
//! without a rate): QUIC takes a datagram three places late for lost, so
//! reordering would turn jitter into spurious loss and shrunken congestion
//! windows, which is not what a WAN's queueing delay does. Sparse traffic
//! (gossip) sees the full jitter spread; dense traffic sees delays near the
//! top of it, as behind a queue.
//!
//! When it is due, a link cut in the meantime drops it too (packets in
//! flight when a cable is cut are lost), so a partition takes effect at
//! once in both directions.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::link::InOrder;
use crate::table::{LinkId, LinkTable};

/// Bounds of one directed link's delay queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Datagrams (see [`crate::limits::DEFAULT_LINK_QUEUE_PACKETS`]).
    pub max_packets: usize,
    /// Payload bytes (see [`crate::limits::DEFAULT_LINK_QUEUE_BYTES`]).
    pub max_bytes: usize,
}

/// What happened to datagrams on one directed link, since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatagramCounters {
    /// Datagrams handed to the socket after their delay.
    pub packets_forwarded: u64,
    /// Their payload bytes.
    pub bytes_forwarded: u64,
    /// Datagrams dropped by the link's loss.
    pub dropped_loss: u64,
    /// Datagrams dropped because a partition cut the link (on arrival or
    /// while they were in flight).
    pub dropped_partition: u64,
    /// Datagrams dropped because the link's queue was full.
    pub dropped_overflow: u64,
    /// Datagrams the socket refused to send (buffer full, peer gone).
    pub send_errors: u64,
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A partition cuts the link.
    Partition,
    /// The link's queue is at its bound.
    Overflow,
    /// The link's loss.
    Loss,
}

/// What [`Core::handle_datagram`] did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Scheduled; [`Core::poll_transmit`] returns it at or after `at`.
    Queued {
        /// When it is due.
        at: Instant,
    },
    /// Dropped (and counted).
    Dropped(DropReason),
}

/// A datagram that is due.
#[derive(Debug)]
pub struct Transmit<T> {
    /// The link it crossed.
    pub link: LinkId,
    /// Its payload length, bytes.
    pub len: usize,
    /// What the caller queued.
    pub payload: T,
}

struct Scheduled<T> {
    at: Instant,
    seq: u64,
    link: LinkId,
    len: usize,
    payload: T,
}

// Ordered by due time, then arrival, so datagrams due together leave in the
// order they came.
impl<T> PartialEq for Scheduled<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Scheduled<T> {}
impl<T> PartialOrd for Scheduled<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Scheduled<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Clone, Copy, Default)]
struct QueueUse {
    packets: usize,
    bytes: usize,
}

/// The datagram core. See the module docs for the rules.
pub struct Core<T> {
    table: LinkTable,
    limits: QueueLimits,
    /// One generator per directed link (`LinkTable::link_slot`), so a
    /// link's loss and jitter depend only on the seed and that link's own
    /// datagrams, not on how traffic on other links interleaves with it:
    /// the same seed loses the same datagrams of a flow run after run.
    rngs: Vec<StdRng>,
    queue: BinaryHeap<Reverse<Scheduled<T>>>,
    seq: u64,
    /// Per directed link, `LinkTable::link_slot`.
    used: Vec<QueueUse>,
    /// Per directed link: when its last admitted datagram is due.
    order: Vec<InOrder>,
    counters: Vec<DatagramCounters>,
}

/// The seed of link slot `slot`'s generator: `seed` mixed with the slot
/// (SplitMix64's finalizer), so neighbouring slots get unrelated streams.
fn link_seed(seed: u64, slot: usize) -> u64 {
    let mut z = seed
        ^ (slot as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<T> Core<T> {
    /// A core over `table` whose loss and jitter draws follow `seed`.
    pub fn seeded(table: LinkTable, limits: QueueLimits, seed: u64) -> Self {
        let slots = table.link_slots();
        Core {
            table,
            limits,
            rngs: (0..slots)
                .map(|slot| StdRng::seed_from_u64(link_seed(seed, slot)))
                .collect(),
            queue: BinaryHeap::new(),
            seq: 0,
            used: vec![QueueUse::default(); slots],
            order: vec![InOrder::default(); slots],
            counters: vec![DatagramCounters::default(); slots],
        }
    }

    /// The regions, links and partitions.
    pub fn table(&self) -> &LinkTable {
        &self.table
    }

    /// Changes to links and partitions go through here; datagrams already
    /// queued keep their due time but are checked against partitions again
    /// when due.
    pub fn table_mut(&mut self) -> &mut LinkTable {
        &mut self.table
    }

    fn slot(&self, link: LinkId) -> usize {
        self.table.link_slot(link)
    }

    /// A datagram of `len` bytes arrives at `now` to cross `link`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        link: LinkId,
        len: usize,
        payload: T,
    ) -> Verdict {
        let slot = self.slot(link);
        let verdict = self.judge(now, link, slot, len);
        match verdict {
            Verdict::Dropped(reason) => {
                let c = &mut self.counters[slot];
                match reason {
                    DropReason::Partition => c.dropped_partition += 1,
                    DropReason::Overflow => c.dropped_overflow += 1,
                    DropReason::Loss => c.dropped_loss += 1,
                }
            }
            Verdict::Queued { at } => {
                let used = &mut self.used[slot];
                used.packets += 1;
                used.bytes += len;
                self.seq += 1;
                self.queue.push(Reverse(Scheduled {
                    at,
                    seq: self.seq,
                    link,
                    len,
                    payload,
                }));
            }
        }
        verdict
    }

    fn judge(&mut self, now: Instant, link: LinkId, slot: usize, len: usize) -> Verdict {
        if self.table.is_cut(link) {
            return Verdict::Dropped(DropReason::Partition);
        }
        let used = self.used[slot];
        if used.packets >= self.limits.max_packets
            || used.bytes.saturating_add(len) > self.limits.max_bytes
        {
            return Verdict::Dropped(DropReason::Overflow);
        }
        let params = self.table.params(link);
        let rng = &mut self.rngs[slot];
        if params.sample_loss(rng) {
            return Verdict::Dropped(DropReason::Loss);
        }
        let delay = params.sample_delay(rng);
        Verdict::Queued {
            at: self.order[slot].stamp(now, delay),
        }
    }

    /// The next datagram due at or before `now`, counted as forwarded.
    /// Datagrams whose link was cut while they waited are dropped on the
    /// way (counted).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<T>> {
        loop {
            if self.queue.peek()?.0.at > now {
                return None;
            }
            let Reverse(due) = self.queue.pop()?;
            let slot = self.slot(due.link);
            let used = &mut self.used[slot];
            // Paired with the increment in `handle_datagram`.
            debug_assert!(used.packets >= 1 && used.bytes >= due.len);
            used.packets = used.packets.saturating_sub(1);
            used.bytes = used.bytes.saturating_sub(due.len);
            let c = &mut self.counters[slot];
            if self.table.is_cut(due.link) {
                c.dropped_partition += 1;
                continue;
            }
            c.packets_forwarded += 1;
            c.bytes_forwarded += due.len as u64;
            return Some(Transmit {
                link: due.link,
                len: due.len,
                payload: due.payload,
            });
        }
    }

    /// When the next datagram is due, if any is queued.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.peek().map(|s| s.0.at)
    }

    /// The socket refused a datagram [`Self::poll_transmit`] returned: it
    /// counts as a send error instead of forwarded.
    pub fn send_failed(&mut self, link: LinkId, len: usize) {
        let slot = self.slot(link);
        let c = &mut self.counters[slot];
        c.packets_forwarded = c.packets_forwarded.saturating_sub(1);
        c.bytes_forwarded = c.bytes_forwarded.saturating_sub(len as u64);
        c.send_errors += 1;
    }

    /// Datagrams and bytes queued now, over all links.
    pub fn queued(&self) -> (usize, usize) {
        self.used
            .iter()
            .fold((0, 0), |(p, b), u| (p + u.packets, b + u.bytes))
    }

    /// Counters of one link.
    pub fn counters(&self, link: LinkId) -> DatagramCounters {
        self.counters[self.slot(link)]
    }

    /// Datagrams and bytes in one link's queue now.
    pub fn queue_use(&self, link: LinkId) -> (usize, usize) {
        let used = self.used[self.slot(link)];
        (used.packets, used.bytes)
    }

    /// The links a status shows: every pair of regions (both directions,
    /// a region's own traffic included), then the links to and from
    /// unclassified senders that saw traffic.
    pub fn reported_links(&self) -> Vec<LinkId> {
        let ids: Vec<_> = self.table.ids().map(Some).collect();
        let mut links = Vec::new();
        for &from in &ids {
            for &to in &ids {
                links.push(LinkId { from, to });
            }
        }
        for &r in &ids {
            for link in [LinkId { from: None, to: r }, LinkId { from: r, to: None }] {
                if self.counters(link) != DatagramCounters::default() || self.queue_use(link).0 > 0
                {
                    links.push(link);
                }
            }
        }
        links
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
