//! The `lag` workload: how long after a write is acknowledged in one region
//! a reader in another region sees it, measured from outside the cluster.
//!
//! One writer (in the region the bench runs in) puts one key every
//! `--lag-interval-ms`, each value carrying a sequence number; one reader
//! per `--lag-reader` region polls the same key in its own region (an
//! eventual read for Meridian, a serializable one for etcd) and notes when
//! each sequence number first shows. All clocks are this process's
//! monotonic clock, so no clock skew between machines enters the figures.
//!
//! What a sample is: `seen - acked`, where `acked` is when the writer got
//! the acknowledgement and `seen` is when the first poll that returned the
//! value (or a later one) came back. The write became visible somewhere
//! between the previous poll and `seen`, so a sample overstates the lag by
//! at most one poll period (reported as `poll_mean_us`, the resolution);
//! and since the write committed before it was acknowledged, measuring from
//! `acked` rather than from the commit understates it by at most the local
//! write's latency. Replication applies a range's changes in commit order,
//! so seeing sequence number `n` means every earlier one is visible too: a
//! value overwritten before a poll caught it counts as seen at the poll
//! that saw a later one.
//!
//! The bookkeeping ([`Visibility`], [`lag_micros`], [`LagReaderSpec`]) is
//! pure, so it is tested without a cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::target::{self, Read, Target};
use super::{new_histogram, BenchArgs, System, Workload};

/// How long readers keep polling after the last write before giving up on
/// the writes they have not seen (those count as `lost`).
pub const LAG_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a value that carry its sequence number (zero-padded decimal).
pub const SEQ_BYTES: usize = 20;
/// Upper bound on `--lag-reader` (one task and connection each).
pub const MAX_LAG_READERS: usize = 16;

/// A `--lag-reader NAME=[BIND@]ENDPOINTS`: the region's name (a label),
/// the address a Meridian client sends from to be in that region, and the
/// endpoints it reads from (an etcd member's client URL for etcd).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LagReaderSpec {
    /// Region name, recorded with the result.
    pub name: String,
    /// Source address (Meridian only).
    pub bind: Option<String>,
    /// Comma-separated endpoints.
    pub endpoints: String,
}

impl std::str::FromStr for LagReaderSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME=[BIND@]ENDPOINTS"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{s}`: the region name is empty"));
        }
        // An etcd URL has no '@' before its host; a Meridian endpoint list
        // never has one at all, so the first '@' separates the bind address.
        let (bind, endpoints) = match rest.split_once('@') {
            Some((b, e)) => (Some(b.trim().to_string()), e.trim()),
            None => (None, rest.trim()),
        };
        if bind.as_deref() == Some("") {
            return Err(format!("`{s}`: empty bind address before '@'"));
        }
        if endpoints.is_empty() {
            return Err(format!("`{s}`: no endpoints"));
        }
        Ok(LagReaderSpec {
            name: name.to_string(),
            bind,
            endpoints: endpoints.to_string(),
        })
    }
}

/// The value of write `seq`: the sequence number, then padding to `size`.
pub fn encode_value(seq: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{seq:0width$}", width = SEQ_BYTES).into_bytes();
    v.resize(size.max(SEQ_BYTES), b'x');
    v
}

/// The sequence number a value carries, if it is one of ours.
pub fn decode_value(v: &[u8]) -> Option<u64> {
    let digits = v.get(..SEQ_BYTES)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// When one reader first saw each sequence number (1-based).
#[derive(Debug, Default)]
pub struct Visibility {
    seen: Vec<Instant>,
}

impl Visibility {
    /// The highest sequence number seen so far (0: none).
    pub fn last(&self) -> u64 {
        self.seen.len() as u64
    }

    /// A poll returned sequence number `seq` at `at`: every number up to
    /// `seq` not seen before is visible from `at` (changes apply in commit
    /// order). Lower or repeated numbers change nothing.
    pub fn observe(&mut self, seq: u64, at: Instant) {
        while self.last() < seq {
            self.seen.push(at);
        }
    }

    /// When `seq` was first seen, if it was.
    pub fn seen_at(&self, seq: u64) -> Option<Instant> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.seen.get(i).copied()
    }
}

/// One write of the lag workload: when it was sent and, if it succeeded,
/// acknowledged.
#[derive(Clone, Copy, Debug)]
pub struct WriteTimes {
    /// When the put was sent.
    pub sent: Instant,
    /// When its acknowledgement came back (`None`: it failed).
    pub acked: Option<Instant>,
}

/// Lag samples of one reader: for every acknowledged write (`writes[i]` is
/// sequence number `i + 1`) it saw, microseconds from the acknowledgement
/// and from the send to when it was seen (0 if seen before the
/// acknowledgement arrived); and how many acknowledged writes it never saw.
pub fn lag_micros(writes: &[WriteTimes], vis: &Visibility) -> (Vec<u64>, Vec<u64>, u64) {
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let (mut from_ack, mut from_send, mut lost) = (Vec::new(), Vec::new(), 0);
    for (i, w) in writes.iter().enumerate() {
        let Some(acked) = w.acked else { continue };
        match vis.seen_at(i as u64 + 1) {
            Some(seen) => {
                from_ack.push(micros(seen.saturating_duration_since(acked)));
                from_send.push(micros(seen.saturating_duration_since(w.sent)));
            }
            None => lost += 1,
        }
    }
    (from_ack, from_send, lost)
}

/// One (origin, destination) pair's figures, one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct LagResult {
    /// System.
    pub system: System,
    /// Always `lag`.
    pub workload: Workload,
    /// Region of the writer (`--region`).
    pub region: String,
    /// Region of the reader (its `--lag-reader` name).
    pub reader: String,
    /// Key prefix written (it picks the policy).
    pub key_prefix: String,
    /// The reader's read level.
    pub consistency: String,
    /// Label.
    pub label: String,
    /// Acknowledged writes.
    pub writes: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Acknowledged writes this reader saw.
    pub seen: u64,
    /// Acknowledged writes this reader had not seen `LAG_DRAIN_TIMEOUT`
    /// after the last write.
    pub lost: u64,
    /// Reads that failed.
    pub read_errors: u64,
    /// Write latency (send to acknowledgement) p50, microseconds.
    pub write_p50_us: u64,
    /// Write latency p99, microseconds.
    pub write_p99_us: u64,
    /// Lag from acknowledgement to seen: p50, microseconds.
    pub p50_us: u64,
    /// p99, microseconds.
    pub p99_us: u64,
    /// p99.9, microseconds.
    pub p999_us: u64,
    /// Maximum, microseconds.
    pub max_us: u64,
    /// Lag from send to seen (an upper bound of the lag from commit): p50.
    pub from_send_p50_us: u64,
    /// p99 from send to seen.
    pub from_send_p99_us: u64,
    /// Mean time between two polls of this reader: the resolution.
    pub poll_mean_us: u64,
    /// The first error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// What a reader task returns: its visibility record, the mean time
/// between its polls, its failed reads and the first error.
type ReaderOutcome = (Visibility, Duration, u64, Option<String>);

/// Runs the lag workload: `writer` writes from this region for
/// `--duration-secs`, each `--lag-reader` polls in its own. Returns one
/// result per reader.
pub async fn run(
    args: &BenchArgs,
    writer: &Target,
    read: Read,
    read_name: &str,
) -> anyhow::Result<Vec<LagResult>> {
    let specs: Vec<LagReaderSpec> = args
        .lag_readers
        .iter()
        .map(|s| s.parse().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!("{}lag/{}/{nonce}", args.key_prefix, args.region).into_bytes();
    let last_acked = Arc::new(AtomicU64::new(u64::MAX));
    let mut readers = Vec::with_capacity(specs.len());
    for spec in &specs {
        let target = target::connect_to(args, &spec.endpoints, spec.bind.as_deref())
            .await
            .with_context(|| format!("connecting lag reader {}", spec.name))?;
        let (key, last_acked) = (key.clone(), last_acked.clone());
        let poll = Duration::from_millis(args.lag_poll_ms);
        readers.push(tokio::spawn(async move {
            let outcome = poll_until_seen(&target, &key, read, poll, &last_acked).await;
            target.close().await;
            outcome
        }));
    }
    let (writes, write_errors, write_error) = write_paced(args, writer, &key).await;
    let acked = writes.iter().rposition(|w| w.acked.is_some());
    last_acked.store(acked.map_or(0, |i| i as u64 + 1), Ordering::SeqCst);
    let mut write_hist = new_histogram()?;
    for w in &writes {
        if let Some(a) = w.acked {
            let micros = u64::try_from((a - w.sent).as_micros()).unwrap_or(u64::MAX);
            write_hist.saturating_record(micros.max(1));
        }
    }
    let mut out = Vec::with_capacity(specs.len());
    for (spec, reader) in specs.iter().zip(readers) {
        let (vis, poll_mean, read_errors, read_error) = reader.await??;
        let (from_ack, from_send, lost) = lag_micros(&writes, &vis);
        let (ack_hist, send_hist) = (histogram_of(&from_ack)?, histogram_of(&from_send)?);
        out.push(LagResult {
            system: args.system,
            workload: Workload::Lag,
            region: args.region.clone(),
            reader: spec.name.clone(),
            key_prefix: args.key_prefix.clone(),
            consistency: read_name.to_string(),
            label: args.label.clone(),
            writes: write_hist.len(),
            write_errors,
            seen: ack_hist.len(),
            lost,
            read_errors,
            write_p50_us: write_hist.value_at_quantile(0.50),
            write_p99_us: write_hist.value_at_quantile(0.99),
            p50_us: ack_hist.value_at_quantile(0.50),
            p99_us: ack_hist.value_at_quantile(0.99),
            p999_us: ack_hist.value_at_quantile(0.999),
            max_us: ack_hist.max(),
            from_send_p50_us: send_hist.value_at_quantile(0.50),
            from_send_p99_us: send_hist.value_at_quantile(0.99),
            poll_mean_us: u64::try_from(poll_mean.as_micros()).unwrap_or(u64::MAX),
            first_error: write_error.clone().or(read_error),
        });
    }
    Ok(out)
}

fn histogram_of(samples: &[u64]) -> anyhow::Result<Histogram<u64>> {
    let mut h = new_histogram()?;
    for &s in samples {
        h.saturating_record(s.max(1));
    }
    Ok(h)
}

/// Puts sequence numbers 1, 2, ... to `key`, one every
/// `--lag-interval-ms` (sooner when a put took longer), for
/// `--duration-secs`. Returns each write's times, the failures and the
/// first error.
async fn write_paced(
    args: &BenchArgs,
    writer: &Target,
    key: &[u8],
) -> (Vec<WriteTimes>, u64, Option<String>) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let interval = Duration::from_millis(args.lag_interval_ms);
    let mut writes = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    let mut next = started;
    while Instant::now() < deadline {
        tokio::time::sleep_until(next.into()).await;
        let seq = writes.len() as u64 + 1;
        let sent = Instant::now();
        let result = writer.put(key, &encode_value(seq, args.value_size)).await;
        let acked = Instant::now();
        writes.push(WriteTimes {
            sent,
            acked: result.is_ok().then_some(acked),
        });
        if let Err(e) = result {
            errors += 1;
            first_error.get_or_insert_with(|| format!("{e:#}"));
        }
        next += interval;
    }
    (writes, errors, first_error)
}

/// Polls `key` until the writer has finished (`last_acked` is no longer
/// `u64::MAX`) and this reader has seen the last acknowledged write, or
/// [`LAG_DRAIN_TIMEOUT`] after the writer finished.
async fn poll_until_seen(
    target: &Target,
    key: &[u8],
    read: Read,
    pause: Duration,
    last_acked: &AtomicU64,
) -> anyhow::Result<ReaderOutcome> {
    let started = Instant::now();
    let mut vis = Visibility::default();
    let (mut polls, mut errors, mut first_error) = (0u32, 0u64, None);
    let mut drain_deadline = None;
    loop {
        match target.read(key, read).await {
            Ok(value) => {
                if let Some(seq) = value.as_deref().and_then(decode_value) {
                    vis.observe(seq, Instant::now());
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        polls = polls.saturating_add(1);
        let last = last_acked.load(Ordering::SeqCst);
        if last != u64::MAX {
            if vis.last() >= last {
                break;
            }
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + LAG_DRAIN_TIMEOUT);
            if Instant::now() >= deadline {
                break;
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok((vis, started.elapsed() / polls.max(1), errors, first_error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_specs_parse_with_and_without_a_bind_address() {
        let m: LagReaderSpec = "eu-west=127.0.2.200@127.1.2.1:9479,127.1.2.2:9481"
            .parse()
            .unwrap();
        assert_eq!(m.name, "eu-west");
        assert_eq!(m.bind.as_deref(), Some("127.0.2.200"));
        assert_eq!(m.endpoints, "127.1.2.1:9479,127.1.2.2:9481");
        let e: LagReaderSpec = "ap-south=http://127.4.3.10:4379".parse().unwrap();
        assert_eq!(e.bind, None);
        assert_eq!(e.endpoints, "http://127.4.3.10:4379");
        for bad in [
            "eu-west",
            "=127.0.0.1:1",
            "x=",
            "x=@127.0.0.1:1",
            "x=1.2.3.4@",
        ] {
            assert!(bad.parse::<LagReaderSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn values_carry_their_sequence_number() {
        let v = encode_value(42, 256);
        assert_eq!(v.len(), 256);
        assert_eq!(decode_value(&v), Some(42));
        // Never shorter than the number itself.
        assert_eq!(encode_value(7, 4).len(), SEQ_BYTES);
        assert_eq!(decode_value(&encode_value(u64::MAX, 0)), Some(u64::MAX));
        assert_eq!(decode_value(b"xxxxxxxxxxxxxxxxxxxxxxxx"), None);
        assert_eq!(decode_value(b"123"), None);
    }

    #[test]
    fn seeing_a_later_write_makes_every_earlier_one_visible_then() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut vis = Visibility::default();
        vis.observe(2, at(50));
        vis.observe(1, at(60)); // older value from a lagging node: no effect
        vis.observe(2, at(70)); // seen again: keeps the first time
        vis.observe(4, at(90));
        assert_eq!(vis.last(), 4);
        assert_eq!(vis.seen_at(1), Some(at(50)));
        assert_eq!(vis.seen_at(2), Some(at(50)));
        assert_eq!(vis.seen_at(3), Some(at(90)));
        assert_eq!(vis.seen_at(5), None);
        assert_eq!(vis.seen_at(0), None);
    }

    #[test]
    fn lag_counts_from_the_ack_skips_failed_writes_and_counts_lost_ones() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let writes = [
            WriteTimes {
                sent: at(0),
                acked: Some(at(2)),
            },
            WriteTimes {
                sent: at(10),
                acked: None, // failed: neither a sample nor lost
            },
            WriteTimes {
                sent: at(20),
                acked: Some(at(23)),
            },
            WriteTimes {
                sent: at(30),
                acked: Some(at(31)), // never seen: lost
            },
        ];
        let mut vis = Visibility::default();
        vis.observe(1, at(40));
        vis.observe(3, at(60));
        let (from_ack, from_send, lost) = lag_micros(&writes, &vis);
        assert_eq!(from_ack, vec![38_000, 37_000]);
        assert_eq!(from_send, vec![40_000, 40_000]);
        assert_eq!(lost, 1);
        // Seen before the acknowledgement came back: 0, never negative.
        let mut early = Visibility::default();
        early.observe(1, at(1));
        assert_eq!(lag_micros(&writes[..1], &early).0, vec![0]);
    }
}
