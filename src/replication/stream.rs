//! The cross-region stream of one range from one origin region to one
//! destination region, as two sans-IO state machines (style.md 1):
//! [`Outbound`] on the origin range's leader and [`Inbound`], the cursor the
//! destination keeps in its replicated state.
//!
//! The origin's changes to a range form a sequence of records with strictly
//! increasing HLC timestamps (the range's apply timestamps). A [`Batch`]
//! carries the records in `(after, closed]` and the origin's promise that it
//! will never emit another record at or below `closed` (a closed timestamp).
//!
//! **Invariant (exactly once):** the destination applies a batch only if it
//! continues its cursor (`after <= cursor`); it skips records at or below
//! the cursor and then sets the cursor to `closed`. So a batch that is
//! duplicated, delayed past a later one, or resent after a stream restart
//! or a leader change on either side applies each record once, in order,
//! and a batch that would leave a hole is refused with the point to resend
//! from. The cursor is part of the destination's replicated state (it
//! changes only by applying a committed batch), so a new destination leader
//! continues from exactly what its group applied.
//!
//! **Invariant (bounded):** an outbound stream has at most
//! [`MAX_IN_FLIGHT_BATCHES`] batches and [`MAX_IN_FLIGHT_BYTES`] bytes sent
//! and not yet acknowledged; the origin reads no further until acks arrive,
//! so a slow or cut-off destination costs the origin memory for one window,
//! and catches up from the origin's change log when it returns.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::types::Timestamp;

/// Most batches sent and not yet acknowledged on one stream. The pacing
/// slot is the round trip divided by this (at least [`MIN_PACING`]), and a
/// write on a busy stream waits up to one slot for its batch: 32 keeps that
/// to about 6 ms at the longest round trip between regions (200 ms), where
/// 8 cost 25 ms of the lag target's 20 ms margin (docs/benchmarks.md,
/// "Replication lag: a finer pacing slot"). Each batch in flight is one stream of the peer
/// connection (limits.max_streams_per_connection, 256 by default) and the
/// bytes in flight stay bounded by [`MAX_IN_FLIGHT_BYTES`].
pub const MAX_IN_FLIGHT_BATCHES: usize = 32;
/// The least spacing between two batches, however short the round trip:
/// every batch costs the destination a Raft proposal, so on a busy range a
/// batch per write toward a near region cost puts at home a fifth of their
/// throughput on a shared machine (docs/benchmarks.md, "Replication lag: a
/// finer pacing slot"); a write waits at most this for its batch, well
/// inside the lag target's 20 ms.
pub const MIN_PACING: Duration = Duration::from_millis(5);
/// Most bytes of records sent and not yet acknowledged on one stream.
pub const MAX_IN_FLIGHT_BYTES: usize = 8 * 1024 * 1024;
/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 1_024;
/// Shortest spacing between a batch that carries no records (only a
/// closed timestamp) and the batch sent before it. Records go at once;
/// closes alone go at the idle close rate
/// ([`super::frontier::CLOSE_INTERVAL_MS`]). Without it every region's
/// applying of another region's close moved its own applied timestamp,
/// which it then sent on as a close of its own: closes ping-ponged between
/// regions as fast as the pacing allowed, each one a Raft entry.
pub const CLOSE_ONLY_EVERY: Duration = Duration::from_millis(super::frontier::CLOSE_INTERVAL_MS);
/// Most bytes of record payloads in one batch (at least one record is
/// always sent, however large, so a batch is at most one record over this).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// One change of the origin range: everything it wrote at `ts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<P> {
    /// The origin's apply timestamp of the change.
    pub ts: Timestamp,
    /// The change (opaque here).
    pub payload: P,
}

/// Records in `(after, closed]` and a closed timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<P> {
    /// The cursor this batch continues from.
    pub after: Timestamp,
    /// Records, strictly increasing, all in `(after, closed]`.
    pub records: Vec<Record<P>>,
    /// The origin emits no record at or below this again.
    pub closed: Timestamp,
}

/// Why a batch was refused. The destination's cursor did not move.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The batch starts after the cursor: records in between are missing.
    #[error("batch continues from {after}, but the cursor is at {cursor}: resend from {cursor}")]
    Gap {
        /// Where the batch starts.
        after: Timestamp,
        /// Where the destination is (resend from here).
        cursor: Timestamp,
    },
    /// Records not strictly increasing, outside `(after, closed]`, or a
    /// closed timestamp below `after`: a sender bug, never applied.
    #[error("malformed replication batch: {0}")]
    Malformed(String),
}

/// The destination's cursor for one (range, origin): every origin record at
/// or below `cursor` is applied, and the origin emits nothing new at or
/// below it, so it is also this origin's contribution to the range's frontier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    /// Everything from the origin at or below this is applied.
    pub cursor: Timestamp,
}

/// What applying a batch does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted<P> {
    /// The records to apply, in order (those at or below the cursor dropped).
    pub apply: Vec<Record<P>>,
    /// The cursor after the batch.
    pub cursor: Timestamp,
}

impl Inbound {
    /// Checks `batch` against the cursor and returns what to apply. The
    /// caller applies `apply` and stores the new cursor atomically with it.
    pub fn accept<P>(&self, batch: Batch<P>) -> Result<Accepted<P>, StreamError> {
        check_shape(&batch)?;
        if batch.after > self.cursor {
            return Err(StreamError::Gap {
                after: batch.after,
                cursor: self.cursor,
            });
        }
        let cursor = self.cursor.max(batch.closed);
        let apply = batch
            .records
            .into_iter()
            .filter(|r| r.ts > self.cursor)
            .collect();
        Ok(Accepted { apply, cursor })
    }
}

fn check_shape<P>(batch: &Batch<P>) -> Result<(), StreamError> {
    if batch.closed < batch.after {
        return Err(StreamError::Malformed(format!(
            "closed {} is below after {}",
            batch.closed, batch.after
        )));
    }
    let mut prev = batch.after;
    for r in &batch.records {
        if r.ts <= prev || r.ts > batch.closed {
            return Err(StreamError::Malformed(format!(
                "record at {} is not in ({prev}, {}]",
                r.ts, batch.closed
            )));
        }
        prev = r.ts;
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    closed: Timestamp,
    bytes: usize,
    sent_at: Instant,
}

/// The origin side of one stream: what was sent, what is acknowledged,
/// whether the window has room for another batch, and when the pacing
/// lets the next one go.
///
/// **Pacing.** Batches are spaced at least `srtt / MAX_IN_FLIGHT_BATCHES`
/// (and at least [`MIN_PACING`]) apart (`srtt`: the smoothed time from sending a batch to its ack, as in
/// TCP, RFC 6298 2.3 with alpha = 1/8), so a full window spans about one
/// round trip. Without it a busy range fills the window within a few
/// milliseconds, every later write waits a whole round trip for a slot,
/// and the acks come back in one burst that refills it the same way: the
/// lag of one-batch-in-flight again. With it a write waits at most one
/// pacing interval for its batch. An idle stream (nothing sent for a
/// pacing interval) sends at once.
#[derive(Clone, Debug, Default)]
pub struct Outbound {
    acked: Timestamp,
    sent: Timestamp,
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: usize,
    srtt: Option<Duration>,
    last_sent_at: Option<Instant>,
}

impl Outbound {
    /// A stream that resumes from the destination's cursor.
    pub fn resume_from(cursor: Timestamp) -> Self {
        Outbound {
            acked: cursor,
            sent: cursor,
            ..Outbound::default()
        }
    }

    /// Whether the window (batches and bytes) has room for another batch.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT_BATCHES && self.in_flight_bytes < MAX_IN_FLIGHT_BYTES
    }

    /// The smallest spacing between two batches (zero until a round trip
    /// was measured).
    pub fn pacing_interval(&self) -> Duration {
        self.srtt.map_or(Duration::ZERO, |rtt| {
            (rtt / u32::try_from(MAX_IN_FLIGHT_BATCHES).unwrap_or(u32::MAX)).max(MIN_PACING)
        })
    }

    /// Where the next batch starts (its `after`), if the window has room
    /// and the pacing lets a batch go at `now`.
    pub fn next_after(&self, now: Instant) -> Option<Timestamp> {
        let paced = self
            .last_sent_at
            .is_none_or(|t| now >= t + self.pacing_interval());
        (self.has_room() && paced).then_some(self.sent)
    }

    /// When the pacing lets the next batch go, if only the pacing (not the
    /// window) holds it back; `None` otherwise.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.has_room() {
            return None;
        }
        self.last_sent_at.map(|t| t + self.pacing_interval())
    }

    /// Whether a batch with no records (a close only) may go at `now`:
    /// [`CLOSE_ONLY_EVERY`] after the last batch of any kind.
    pub fn close_only_due(&self, now: Instant) -> bool {
        self.close_only_at().is_none_or(|t| now >= t)
    }

    /// When a close-only batch may go next (`None`: at once).
    pub fn close_only_at(&self) -> Option<Instant> {
        self.last_sent_at.map(|t| t + CLOSE_ONLY_EVERY)
    }

    /// Records that a batch continuing from [`Outbound::next_after`] and
    /// closed at `closed`, of `bytes` payload bytes, was sent at `now`.
    pub fn on_sent(&mut self, now: Instant, closed: Timestamp, bytes: usize) {
        debug_assert!(closed >= self.sent, "batches are sent in order");
        debug_assert!(self.has_room(), "sent only when the window had room");
        self.sent = self.sent.max(closed);
        self.in_flight.push_back(InFlight {
            closed,
            bytes,
            sent_at: now,
        });
        self.in_flight_bytes += bytes;
        self.last_sent_at = Some(now);
    }

    /// The destination applied everything up to `cursor` (an ack received
    /// at `now`).
    pub fn on_ack(&mut self, now: Instant, cursor: Timestamp) {
        self.acked = self.acked.max(cursor);
        let mut newest_sent_at = None;
        while let Some(f) = self.in_flight.front() {
            if f.closed > self.acked {
                break;
            }
            newest_sent_at = Some(f.sent_at);
            self.in_flight_bytes -= f.bytes;
            self.in_flight.pop_front();
        }
        if let Some(sent_at) = newest_sent_at {
            let sample = now.saturating_duration_since(sent_at);
            self.srtt = Some(match self.srtt {
                None => sample,
                Some(srtt) => (srtt * 7 + sample) / 8,
            });
        }
        // An ack past what we sent (another origin leader sent it before a
        // leader change) moves our start forward: never resend below it.
        self.sent = self.sent.max(self.acked);
    }

    /// The destination refused a batch with a gap, or the connection broke:
    /// forget what is in flight and continue from `cursor` (the measured
    /// round trip is kept).
    pub fn restart_from(&mut self, cursor: Timestamp) {
        let srtt = self.srtt;
        *self = Outbound::resume_from(cursor.max(self.acked));
        self.srtt = srtt;
    }

    /// Everything the destination acknowledged.
    pub fn acked(&self) -> Timestamp {
        self.acked
    }

    /// Batches sent and not acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// Cuts the origin's records after `after` into one batch: at most
/// [`MAX_BATCH_RECORDS`] records and about [`MAX_BATCH_BYTES`] bytes (always
/// at least one record). `closed` is the origin's closed timestamp; when
/// the batch does not take every record up to it, the batch closes at its
/// last record instead, so the promise is never ahead of what was sent.
pub fn cut_batch<P>(
    after: Timestamp,
    available: impl IntoIterator<Item = Record<P>>,
    closed: Timestamp,
    size_of: impl Fn(&P) -> usize,
) -> (Batch<P>, usize) {
    let mut records = Vec::new();
    let mut bytes = 0;
    let mut complete = true;
    for r in available {
        if r.ts <= after || r.ts > closed {
            continue;
        }
        let size = size_of(&r.payload);
        if !records.is_empty()
            && (records.len() >= MAX_BATCH_RECORDS || bytes + size > MAX_BATCH_BYTES)
        {
            complete = false;
            break;
        }
        bytes += size;
        records.push(r);
    }
    let closed = match (complete, records.last()) {
        (false, Some(last)) => last.ts,
        _ => closed.max(after),
    };
    (
        Batch {
            after,
            records,
            closed,
        },
        bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(n: u64) -> Timestamp {
        Timestamp(1_000_000 + n)
    }

    fn rec(n: u64) -> Record<u64> {
        Record {
            ts: ts(n),
            payload: n,
        }
    }

    #[test]
    fn duplicates_are_skipped_and_gaps_refused() {
        let inbound = Inbound { cursor: ts(10) };
        let dup = Batch {
            after: ts(5),
            records: vec![rec(8), rec(12)],
            closed: ts(15),
        };
        let ok = inbound.accept(dup).unwrap();
        assert_eq!(ok.apply, vec![rec(12)], "8 was applied already");
        assert_eq!(ok.cursor, ts(15));
        let gap = Batch {
            after: ts(11),
            records: vec![rec(13)],
            closed: ts(13),
        };
        assert_eq!(
            inbound.accept(gap),
            Err(StreamError::Gap {
                after: ts(11),
                cursor: ts(10)
            })
        );
        // A closed timestamp alone (no records) moves the cursor: the frontier advances.
        let idle = Batch::<u64> {
            after: ts(10),
            records: vec![],
            closed: ts(40),
        };
        assert_eq!(inbound.accept(idle).unwrap().cursor, ts(40));
    }

    #[test]
    fn malformed_batches_are_refused() {
        let inbound = Inbound::default();
        let unordered = Batch {
            after: ts(0),
            records: vec![rec(3), rec(2)],
            closed: ts(5),
        };
        assert!(matches!(
            inbound.accept(unordered),
            Err(StreamError::Malformed(_))
        ));
        let beyond = Batch {
            after: ts(0),
            records: vec![rec(9)],
            closed: ts(5),
        };
        assert!(matches!(
            inbound.accept(beyond),
            Err(StreamError::Malformed(_))
        ));
        let backwards = Batch::<u64> {
            after: ts(5),
            records: vec![],
            closed: ts(4),
        };
        assert!(matches!(
            inbound.accept(backwards),
            Err(StreamError::Malformed(_))
        ));
    }

    #[test]
    fn the_window_bounds_what_is_in_flight() {
        let now = Instant::now();
        let mut out = Outbound::resume_from(ts(0));
        for i in 1..=MAX_IN_FLIGHT_BATCHES as u64 {
            let after = out
                .next_after(now)
                .expect("room, and no round trip measured yet");
            assert_eq!(after, ts(i - 1));
            out.on_sent(now, ts(i), 10);
        }
        assert_eq!(out.next_after(now), None, "window full");
        assert_eq!(
            out.poll_timeout(),
            None,
            "the window, not the pacing, holds it"
        );
        out.on_ack(now, ts(2));
        assert_eq!(out.in_flight(), MAX_IN_FLIGHT_BATCHES - 2);
        assert_eq!(
            out.next_after(now + MIN_PACING),
            Some(ts(MAX_IN_FLIGHT_BATCHES as u64)),
            "room again once the slot has passed"
        );
        let mut big = Outbound::resume_from(ts(0));
        big.on_sent(now, ts(1), MAX_IN_FLIGHT_BYTES);
        assert_eq!(big.next_after(now), None, "bytes bound too");
        out.restart_from(ts(1));
        assert_eq!(
            out.next_after(now),
            Some(ts(2)),
            "never below what was acked"
        );
        assert_eq!(out.in_flight(), 0, "a restart forgets what was in flight");
    }

    #[test]
    fn batches_are_paced_over_the_measured_round_trip() {
        let t0 = Instant::now();
        // Long enough that a 32nd of it is above the minimum slot.
        let rtt = Duration::from_millis(320);
        let mut out = Outbound::resume_from(ts(0));
        out.on_sent(t0, ts(1), 1);
        assert_eq!(
            out.next_after(t0),
            Some(ts(1)),
            "no round trip measured: no pacing"
        );
        out.on_ack(t0 + rtt, ts(1));
        assert_eq!(out.pacing_interval(), rtt / MAX_IN_FLIGHT_BATCHES as u32);
        let t1 = t0 + rtt;
        assert!(
            out.next_after(t1).is_some(),
            "idle for a whole interval: sends at once"
        );
        out.on_sent(t1, ts(2), 1);
        assert_eq!(out.next_after(t1), None, "too soon after the last batch");
        let due = out.poll_timeout().expect("only the pacing holds it");
        assert_eq!(due, t1 + out.pacing_interval());
        assert_eq!(out.next_after(due), Some(ts(2)));
        // Later samples move the estimate by an eighth (RFC 6298).
        out.on_ack(t1 + 2 * rtt, ts(2));
        assert_eq!(
            out.pacing_interval(),
            (rtt * 7 + 2 * rtt) / 8 / MAX_IN_FLIGHT_BATCHES as u32
        );
        out.restart_from(ts(2));
        assert!(
            out.pacing_interval() > Duration::ZERO,
            "a restart keeps the estimate"
        );
        // A near region's round trip: the slot is never below the minimum.
        let mut near = Outbound::resume_from(ts(0));
        near.on_sent(t0, ts(1), 1);
        near.on_ack(t0 + Duration::from_millis(2), ts(1));
        assert_eq!(near.pacing_interval(), MIN_PACING);
    }

    /// Simulates one stream over a link with `one_way` delay each way and a
    /// destination that commits a batch in `commit`, while the origin
    /// writes one record every `write_every`, for `secs` simulated
    /// seconds, a millisecond per step (the driver's loop in
    /// `server::streams`: send while `next_after` allows, else wait for an
    /// ack or the pacing). Returns the longest any record waited at the
    /// origin between its write and the send of the batch that carried it,
    /// after the first round trip (before it nothing is paced), and checks
    /// that every record was sent once, in order.
    fn longest_wait_for_a_batch(
        one_way: Duration,
        commit: Duration,
        write_every: Duration,
        secs: u64,
    ) -> Duration {
        let step = Duration::from_millis(1);
        let t0 = Instant::now();
        let mut out = Outbound::resume_from(ts(0));
        // Records by write time (as ts(ms since t0)), acks in transit.
        let mut written: Vec<Record<u64>> = Vec::new();
        let mut acks: VecDeque<(Instant, Timestamp)> = VecDeque::new();
        let mut sent = Vec::new();
        let mut longest = Duration::ZERO;
        let mut next_write = t0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(secs) {
            while next_write <= now {
                let ms = u64::try_from((next_write - t0).as_millis()).unwrap() + 1;
                written.push(rec(ms));
                next_write += write_every;
            }
            while acks.front().is_some_and(|(at, _)| *at <= now) {
                let (_, cursor) = acks.pop_front().unwrap();
                out.on_ack(now, cursor);
            }
            let closed = written.last().map_or(ts(0), |r| r.ts);
            while let Some(after) = out.next_after(now) {
                if closed <= after {
                    break;
                }
                let (batch, bytes) = cut_batch(after, written.iter().cloned(), closed, |_| 64);
                for r in &batch.records {
                    let waited = now - (t0 + Duration::from_millis(r.payload - 1));
                    if now > t0 + 2 * one_way + commit {
                        longest = longest.max(waited);
                    }
                    sent.push(r.payload);
                }
                out.on_sent(now, batch.closed, bytes);
                acks.push_back((now + 2 * one_way + commit, batch.closed));
            }
            now += step;
        }
        let expected: Vec<u64> = written.iter().map(|r| r.payload).collect();
        assert_eq!(sent, expected[..sent.len()], "each record once, in order");
        assert!(
            expected.len() - sent.len() <= 2,
            "the stream keeps up with the writes"
        );
        longest
    }

    /// The pacing slot is what a write waits for its batch when the stream
    /// is busy, so it must stay small at the longest round trip between
    /// regions (regions/wan-3.toml: 200 ms, us-east to ap-south): the
    /// replication lag target is the one-way delay plus 20 ms, of which the
    /// destination's Raft commit and the reader take most. At the window
    /// of 8 batches a write waited up to 25 ms (lag p99 one-way + 33 ms).
    #[test]
    fn a_write_waits_at_most_a_few_milliseconds_for_its_batch_at_the_longest_round_trip() {
        let one_way = Duration::from_millis(100);
        let commit = Duration::from_millis(5);
        // The lag bench's rate (one write every 10 ms) and a busy range
        // (one every millisecond: batches carry several records).
        for write_every in [Duration::from_millis(10), Duration::from_millis(1)] {
            let longest = longest_wait_for_a_batch(one_way, commit, write_every, 10);
            assert!(
                longest <= Duration::from_millis(8),
                "one write per {write_every:?}: a write waited {longest:?} for its batch"
            );
        }
    }

    #[test]
    fn closes_without_records_wait_for_the_close_interval() {
        let t0 = Instant::now();
        let mut out = Outbound::resume_from(ts(0));
        assert!(out.close_only_due(t0), "a fresh stream closes at once");
        out.on_sent(t0, ts(5), 10);
        let soon = t0 + CLOSE_ONLY_EVERY / 2;
        assert!(
            !out.close_only_due(soon),
            "a close alone right after a batch is held"
        );
        assert_eq!(
            out.next_after(soon),
            Some(ts(5)),
            "records are not held by the close interval"
        );
        assert_eq!(out.close_only_at(), Some(t0 + CLOSE_ONLY_EVERY));
        assert!(out.close_only_due(t0 + CLOSE_ONLY_EVERY));
    }

    #[test]
    fn a_batch_that_stops_early_closes_at_its_last_record() {
        let records = (1..=(MAX_BATCH_RECORDS as u64 + 5)).map(rec);
        let (batch, bytes) = cut_batch(ts(0), records, ts(5_000), |_| 1);
        assert_eq!(batch.records.len(), MAX_BATCH_RECORDS);
        assert_eq!(batch.closed, ts(MAX_BATCH_RECORDS as u64));
        assert_eq!(bytes, MAX_BATCH_RECORDS);
        let (all, _) = cut_batch(ts(0), (1..=3).map(rec), ts(50), |_| 1);
        assert_eq!(
            all.closed,
            ts(50),
            "complete: closes at the origin's closed timestamp"
        );
        let (huge, _) = cut_batch(ts(0), (1..=3).map(rec), ts(50), |_| MAX_BATCH_BYTES * 2);
        assert_eq!(huge.records.len(), 1, "one oversized record still goes");
        assert_eq!(huge.closed, ts(1));
    }

    /// What the network may do to a sent batch.
    #[derive(Clone, Copy, Debug)]
    enum Fate {
        Deliver,
        Drop,
        Duplicate,
        Delay,
        Restart,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            6 => Just(Fate::Deliver),
            1 => Just(Fate::Drop),
            1 => Just(Fate::Duplicate),
            1 => Just(Fate::Delay),
            1 => Just(Fate::Restart),
        ]
    }

    /// The destination side of the simulation: applies or refuses a
    /// delivered batch and acknowledges (or asks for a resend).
    fn deliver(
        batch: Batch<u64>,
        inbound: &mut Inbound,
        out: &mut Outbound,
        applied: &mut Vec<Record<u64>>,
        now: Instant,
    ) {
        match inbound.accept(batch) {
            Ok(acc) => {
                applied.extend(acc.apply);
                inbound.cursor = acc.cursor;
                out.on_ack(now, inbound.cursor);
            }
            Err(StreamError::Gap { cursor, .. }) => out.restart_from(cursor),
            Err(e) => panic!("{e}"),
        }
    }

    proptest! {
        /// Exactly once over a lossy, duplicating, reordering link with
        /// stream restarts: the destination applies every origin record
        /// once, in order, and its cursor ends at the origin's closed
        /// timestamp. The random phase is followed by a fair network
        /// (delayed batches arrive, then every batch is delivered): safety
        /// holds throughout, liveness needs eventual delivery.
        #[test]
        fn every_record_applies_exactly_once(
            gaps in proptest::collection::vec(1u64..5, 1..300),
            fates in proptest::collection::vec(fate(), 1..2_000),
        ) {
            let mut t = 0;
            let origin: Vec<Record<u64>> = gaps.iter().map(|g| { t += g; rec(t) }).collect();
            let closed = ts(t + 3);
            let mut out = Outbound::resume_from(Timestamp(0));
            let mut inbound = Inbound { cursor: Timestamp(0) };
            let mut applied = Vec::new();
            let mut delayed: Vec<Batch<u64>> = Vec::new();
            // Time moves a millisecond per step; the pacing holds a batch
            // back now and then, as it would on a real link.
            let mut now = Instant::now();
            let random = fates.into_iter().cycle().take(20_000).map(Some);
            let fair = std::iter::once(None).chain(std::iter::repeat_n(Some(Fate::Deliver), 10_000));
            for fate in random.chain(fair) {
                now += Duration::from_millis(1);
                if inbound.cursor >= closed {
                    break;
                }
                let Some(fate) = fate else {
                    // The network heals: everything held back arrives.
                    for b in std::mem::take(&mut delayed) {
                        deliver(b, &mut inbound, &mut out, &mut applied, now);
                    }
                    continue;
                };
                let Some(after) = out.next_after(now) else {
                    if out.poll_timeout().is_some() {
                        // Paced: the driver waits for the interval.
                        continue;
                    }
                    // Window full and nothing acked: the driver times out and restarts.
                    out.restart_from(inbound.cursor);
                    continue;
                };
                let (batch, bytes) = cut_batch(after, origin.iter().cloned(), closed, |_| 64);
                out.on_sent(now, batch.closed, bytes);
                match fate {
                    Fate::Deliver => deliver(batch, &mut inbound, &mut out, &mut applied, now),
                    Fate::Drop => {}
                    Fate::Duplicate => {
                        deliver(batch.clone(), &mut inbound, &mut out, &mut applied, now);
                        deliver(batch, &mut inbound, &mut out, &mut applied, now);
                    }
                    Fate::Delay => delayed.push(batch),
                    Fate::Restart => {
                        for b in delayed.drain(..) {
                            deliver(b, &mut inbound, &mut out, &mut applied, now);
                        }
                        out.restart_from(inbound.cursor);
                    }
                }
            }
            prop_assert_eq!(inbound.cursor, closed);
            prop_assert_eq!(applied, origin);
        }
    }
}
