//! The coordination workloads of `meridian bench`, the same for Meridian
//! and etcd:
//!
//! - **watch**: `--clients` watchers of one fresh prefix and one writer that
//!   puts every `--lag-interval-ms`; each watcher records, per event, the
//!   time from the start of the put to the event's arrival (write → event
//!   seen). Every watcher must see every write: one it has not seen
//!   [`WATCH_DRAIN`] after the last write counts as an error.
//! - **keepalive**: `--leases` leases granted first (TTL [`LEASE_TTL_SECS`]),
//!   split over `--clients` loops that keep them alive for the run, each
//!   sending rounds of `--keepalive-batch` leases: Meridian one
//!   `LeaseKeepAlive` request naming them all (one commit), etcd one
//!   keepalive on each lease's `LeaseKeepAlive` stream, sent together and
//!   then all answers read. Throughput counts keepalives (leases kept) per
//!   second; latency is per round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[cfg(feature = "etcd")]
use anyhow::Context;
use hdrhistogram::Histogram;

use super::target::Target;
use super::{new_histogram, BenchArgs, RunResult, System, Workload};
use crate::client::WatchOptions;

/// TTL of the keepalive workload's leases: longer than any run's rounds
/// can leave a lease unkept, so none expires under load.
pub const LEASE_TTL_SECS: u64 = 60;
/// How long watchers may take, after the last write, to report it.
pub const WATCH_DRAIN: Duration = Duration::from_secs(10);
/// Bound on the warm-up: every watcher sees a first write before timing.
const WATCH_WARMUP: Duration = Duration::from_secs(30);
/// Keys the watch workload's writer cycles through under its prefix.
const WATCH_KEYS: u64 = 16;
/// Lease grants in flight while preparing the keepalive workload.
const GRANT_WORKERS: usize = 32;
/// Upper bound on `--leases`.
pub const MAX_BENCH_LEASES: usize = 100_000;
/// Upper bound on `--keepalive-batch` (a Meridian keepalive names at most
/// this many leases).
pub const MAX_KEEPALIVE_BATCH: usize = crate::coord::MAX_LEASES_PER_COMMAND;

/// A watch stream of either system, yielding the values of put events.
enum Watcher {
    Meridian(crate::client::WatchStream),
    /// The stream, and the watcher that is held so that its request
    /// stream (whose end would cancel the watch) stays open.
    #[cfg(feature = "etcd")]
    Etcd(Box<(etcd_client::WatchStream, etcd_client::Watcher)>),
}

impl Watcher {
    #[cfg_attr(not(feature = "etcd"), allow(unused_variables))]
    async fn open(target: &Target, conn: &EtcdConn, prefix: &str) -> anyhow::Result<Watcher> {
        match target {
            Target::Meridian(c) => {
                let opts = WatchOptions {
                    prefix: true,
                    from: None,
                };
                Ok(Watcher::Meridian(c.watch(prefix, opts).await?))
            }
            #[cfg(feature = "etcd")]
            Target::Etcd(_) => {
                let mut client = etcd_of(conn)?;
                let opts = etcd_client::WatchOptions::new().with_prefix();
                let (watcher, stream) = client.watch(prefix, Some(opts)).await?;
                Ok(Watcher::Etcd(Box::new((stream, watcher))))
            }
        }
    }

    /// The values of the next put events (possibly none: a progress).
    async fn next(&mut self) -> anyhow::Result<Vec<Vec<u8>>> {
        match self {
            Watcher::Meridian(w) => match w.next().await {
                Some(Ok(crate::watch::WatchEvent::Put { value, .. })) => Ok(vec![value]),
                Some(Ok(_)) => Ok(Vec::new()),
                Some(Err(end)) => Err(anyhow::anyhow!("the watch ended: {end}")),
                None => Err(anyhow::anyhow!("the watch ended")),
            },
            #[cfg(feature = "etcd")]
            Watcher::Etcd(pair) => {
                let resp = pair.0.message().await?.context("the etcd watch ended")?;
                Ok(resp
                    .events()
                    .iter()
                    .filter_map(|e| e.kv().map(|kv| kv.value().to_vec()))
                    .collect())
            }
        }
    }
}

/// The one etcd client a run's tasks share (as Meridian's share the
/// `--conns` connections); nothing without the etcd feature.
#[cfg(feature = "etcd")]
type EtcdConn = Option<etcd_client::Client>;
#[cfg(not(feature = "etcd"))]
type EtcdConn = NoEtcd;

/// The [`EtcdConn`] of a build without etcd support.
#[cfg(not(feature = "etcd"))]
#[derive(Clone, Debug)]
struct NoEtcd;

/// Connects the run's etcd client when the system is etcd.
async fn etcd_conn(args: &BenchArgs) -> anyhow::Result<EtcdConn> {
    #[cfg(feature = "etcd")]
    if args.system == System::Etcd {
        let eps: Vec<&str> = args.etcd_endpoints.split(',').map(str::trim).collect();
        return Ok(Some(etcd_client::Client::connect(eps, None).await?));
    }
    #[cfg(feature = "etcd")]
    return Ok(None);
    #[cfg(not(feature = "etcd"))]
    {
        let _ = args;
        Ok(NoEtcd)
    }
}

#[cfg(feature = "etcd")]
fn etcd_of(conn: &EtcdConn) -> anyhow::Result<etcd_client::Client> {
    conn.clone().context("the run has no etcd connection")
}

/// A value carrying `seq`, padded to `size` bytes.
fn watch_value(seq: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{seq:020}").into_bytes();
    v.resize(size.max(v.len()), b'x');
    v
}

fn seq_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.get(..20)?).ok()?.parse().ok()
}

/// One watch run with `clients` watchers.
pub(super) async fn watch(
    args: &BenchArgs,
    targets: &Arc<Vec<Target>>,
    clients: usize,
) -> anyhow::Result<RunResult> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let prefix = format!("{}watch-{nonce}/", args.key_prefix);
    let shared = Shared::default();
    let conn = etcd_conn(args).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let watcher = Watcher::open(&targets[c % targets.len()], &conn, &prefix).await?;
        tasks.push(tokio::spawn(watch_loop(
            watcher,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    let writer = &targets[0];
    warm_up(writer, &prefix, &shared, clients, args.value_size).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let interval = Duration::from_millis(args.lag_interval_ms);
    let (mut seq, mut acked, mut write_errors, mut first_error) = (0u64, 0u64, 0u64, None);
    while Instant::now() < deadline {
        seq += 1;
        let key = format!("{prefix}k{}", seq % WATCH_KEYS);
        let t0 = Instant::now();
        shared.sent_at(seq, t0);
        match writer
            .put(key.as_bytes(), &watch_value(seq, args.value_size))
            .await
        {
            Ok(()) => acked += 1,
            Err(e) => {
                // Its event, should the write have applied, is not timed.
                write_errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
                shared.forget(seq);
            }
        }
        tokio::time::sleep(interval.saturating_sub(t0.elapsed())).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Every watcher should see every acknowledged write; wait a bounded
    // time for the last ones.
    let want = acked.saturating_mul(clients as u64);
    let drain_until = Instant::now() + WATCH_DRAIN;
    while Instant::now() < drain_until && shared.seen.load(Ordering::Acquire) < want {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut hist = new_histogram()?;
    let mut missed = 0u64;
    for task in tasks {
        let (h, err) = task.await??;
        missed += acked.saturating_sub(h.len());
        hist.add(&h)?;
        if let Some(e) = err {
            first_error.get_or_insert(e);
        }
    }
    let errors = write_errors + missed;
    Ok(RunResult::of(
        args,
        Workload::Watch,
        clients,
        &hist,
        seconds,
        errors,
        first_error,
    ))
}

/// What the watch workload's writer and watchers share.
#[derive(Clone, Default)]
struct Shared {
    /// Start of each write in flight or awaited, by sequence number.
    sent: Arc<Mutex<HashMap<u64, Instant>>>,
    /// Watchers that saw a warm-up write.
    ready: Arc<AtomicUsize>,
    /// Timed events seen, over all watchers.
    seen: Arc<AtomicU64>,
}

impl Shared {
    fn sent_at(&self, seq: u64, at: Instant) {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(seq, at);
    }

    fn forget(&self, seq: u64) {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&seq);
    }

    fn started(&self, seq: u64) -> Option<Instant> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&seq)
            .copied()
    }
}

/// Writes a warm-up value until every watcher has seen one.
async fn warm_up(
    writer: &Target,
    prefix: &str,
    shared: &Shared,
    clients: usize,
    size: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WATCH_WARMUP;
    while shared.ready.load(Ordering::Acquire) < clients {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {clients} watchers saw a write within {WATCH_WARMUP:?}",
            shared.ready.load(Ordering::Acquire)
        );
        writer
            .put(format!("{prefix}warm").as_bytes(), &watch_value(0, size))
            .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One watcher: records each event's delay after its write started, until
/// told to stop. Returns its histogram and the error that ended it, if any.
async fn watch_loop(
    mut watcher: Watcher,
    shared: Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Histogram<u64>, Option<String>)> {
    let mut hist = new_histogram()?;
    let mut warm = false;
    loop {
        let values = tokio::select! {
            v = watcher.next() => v,
            _ = stop.changed() => return Ok((hist, None)),
        };
        let values = match values {
            Ok(v) => v,
            Err(e) => return Ok((hist, Some(format!("{e:#}")))),
        };
        let now = Instant::now();
        for seq in values.iter().filter_map(|v| seq_of(v)) {
            if seq == 0 {
                if !std::mem::replace(&mut warm, true) {
                    shared.ready.fetch_add(1, Ordering::AcqRel);
                }
            } else if let Some(t0) = shared.started(seq) {
                let us = u64::try_from(now.duration_since(t0).as_micros()).unwrap_or(u64::MAX);
                hist.saturating_record(us.max(1));
                shared.seen.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// Leases to keep alive, granted before the keepalive runs.
pub(super) struct Leases(Vec<i64>);

/// Grants `args.leases` leases of [`LEASE_TTL_SECS`].
pub(super) async fn grant_leases(
    args: &BenchArgs,
    targets: &Arc<Vec<Target>>,
) -> anyhow::Result<Leases> {
    let conn = etcd_conn(args).await?;
    let per = args.leases.div_ceil(GRANT_WORKERS);
    let mut tasks = Vec::new();
    for w in 0..GRANT_WORKERS.min(args.leases) {
        let n = per.min(args.leases.saturating_sub(w * per));
        let targets = targets.clone();
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(n);
            let target = &targets[w % targets.len()];
            for _ in 0..n {
                ids.push(grant_one(target, &conn).await?);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(args.leases);
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok(Leases(ids))
}

#[cfg_attr(not(feature = "etcd"), allow(unused_variables))]
async fn grant_one(target: &Target, conn: &EtcdConn) -> anyhow::Result<i64> {
    match target {
        Target::Meridian(c) => {
            let lease = c.lease_grant(Duration::from_secs(LEASE_TTL_SECS)).await?;
            Ok(i64::try_from(lease.id)?)
        }
        #[cfg(feature = "etcd")]
        Target::Etcd(_) => {
            let mut client = etcd_of(conn)?;
            let ttl = i64::try_from(LEASE_TTL_SECS)?;
            Ok(client.lease_grant(ttl, None).await?.id())
        }
    }
}

/// One keepalive run with `clients` loops over `leases`.
pub(super) async fn keepalive(
    args: &BenchArgs,
    targets: &Arc<Vec<Target>>,
    leases: &Leases,
    clients: usize,
) -> anyhow::Result<RunResult> {
    let clients = clients.min(leases.0.len()).max(1);
    let share = leases.0.len().div_ceil(clients);
    let conn = etcd_conn(args).await?;
    // Opened before the clock starts (etcd: one stream per lease).
    let mut keepers = Vec::with_capacity(clients);
    for (c, ids) in leases.0.chunks(share).enumerate() {
        keepers.push(Keeper::open(targets, c % targets.len(), &conn, ids).await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let tasks: Vec<_> = keepers
        .into_iter()
        .map(|k| tokio::spawn(keep_loop(k, args.keepalive_batch, deadline)))
        .collect();
    let mut hist = new_histogram()?;
    let (mut kept, mut errors, mut first_error) = (0u64, 0u64, None);
    for task in tasks {
        let (h, k, e, first) = task.await??;
        hist.add(&h)?;
        kept += k;
        errors += e;
        first_error = first_error.or(first);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut r = RunResult::of(
        args,
        Workload::Keepalive,
        clients,
        &hist,
        seconds,
        errors,
        first_error,
    );
    r.ops = kept;
    r.ops_per_sec = kept as f64 / seconds;
    Ok(r)
}

/// One loop's way of keeping its leases alive.
enum Keeper {
    /// The targets, which one this loop uses, and its leases.
    Meridian(Arc<Vec<Target>>, usize, Vec<u64>),
    #[cfg(feature = "etcd")]
    Etcd(Vec<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>),
}

impl Keeper {
    #[cfg_attr(not(feature = "etcd"), allow(unused_variables))]
    async fn open(
        targets: &Arc<Vec<Target>>,
        c: usize,
        conn: &EtcdConn,
        ids: &[i64],
    ) -> anyhow::Result<Keeper> {
        match &targets[c] {
            Target::Meridian(_) => {
                let ids = ids
                    .iter()
                    .map(|&i| u64::try_from(i))
                    .collect::<Result<_, _>>()?;
                Ok(Keeper::Meridian(targets.clone(), c, ids))
            }
            #[cfg(feature = "etcd")]
            Target::Etcd(_) => {
                let mut lease = etcd_of(conn)?.lease_client();
                let mut streams = Vec::with_capacity(ids.len());
                for &id in ids {
                    streams.push(lease.keep_alive(id).await?);
                }
                Ok(Keeper::Etcd(streams))
            }
        }
    }

    /// Keeps leases `range` alive once; returns how many were kept.
    async fn round(&mut self, range: std::ops::Range<usize>) -> anyhow::Result<u64> {
        match self {
            Keeper::Meridian(targets, c, ids) => {
                #[allow(irrefutable_let_patterns)] // only Meridian without the etcd feature
                let Target::Meridian(client) = &targets[*c] else {
                    anyhow::bail!("a Meridian keeper on another system's connection");
                };
                let kept = client.lease_keep_alive(&ids[range]).await?;
                let live = kept.iter().filter(|l| !l.remaining.is_zero()).count();
                anyhow::ensure!(live == kept.len(), "{} leases expired", kept.len() - live);
                Ok(live as u64)
            }
            #[cfg(feature = "etcd")]
            Keeper::Etcd(streams) => {
                let streams = &mut streams[range];
                for (keeper, _) in streams.iter_mut() {
                    keeper.keep_alive().await?;
                }
                let mut live = 0u64;
                for (_, stream) in streams.iter_mut() {
                    let resp = stream.message().await?.context("keepalive stream ended")?;
                    anyhow::ensure!(resp.ttl() > 0, "lease {} expired", resp.id());
                    live += 1;
                }
                Ok(live)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Keeper::Meridian(_, _, ids) => ids.len(),
            #[cfg(feature = "etcd")]
            Keeper::Etcd(s) => s.len(),
        }
    }
}

/// Rounds of `batch` keepalives over the keeper's leases until `deadline`.
async fn keep_loop(
    mut keeper: Keeper,
    batch: usize,
    deadline: Instant,
) -> anyhow::Result<(Histogram<u64>, u64, u64, Option<String>)> {
    let mut hist = new_histogram()?;
    let (mut kept, mut errors, mut first_error) = (0u64, 0u64, None);
    let n = keeper.len();
    let mut at = 0usize;
    while Instant::now() < deadline && n > 0 {
        let end = (at + batch).min(n);
        let t0 = Instant::now();
        match keeper.round(at..end).await {
            Ok(k) => {
                kept += k;
                let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                hist.saturating_record(us.max(1));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        at = if end == n { 0 } else { end };
    }
    Ok((hist, kept, errors, first_error))
}

/// Checks the coordination workloads' arguments.
pub(super) fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    if args.leases == 0 || args.leases > MAX_BENCH_LEASES {
        anyhow::bail!("--leases must be 1..={MAX_BENCH_LEASES}");
    }
    if args.keepalive_batch == 0 || args.keepalive_batch > MAX_KEEPALIVE_BATCH {
        anyhow::bail!("--keepalive-batch must be 1..={MAX_KEEPALIVE_BATCH}");
    }
    if args.system == System::Etcd && args.workload.contains(&Workload::Watch) && args.conns > 1 {
        // Each etcd watcher opens its own client; --conns would not apply.
        anyhow::bail!("--workload watch against etcd takes --conns 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_values_carry_their_sequence_at_any_size() {
        for size in [0, 8, 20, 256] {
            let v = watch_value(42, size);
            assert!(v.len() >= 20 && v.len() >= size);
            assert_eq!(seq_of(&v), Some(42));
        }
        assert_eq!(seq_of(b"short"), None);
        assert_eq!(seq_of(&watch_value(0, 256)), Some(0));
    }
}
