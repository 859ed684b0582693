//! `meridian bench`: a closed-loop load generator with HDR histograms that
//! runs the same workload against Meridian (through [`crate::client`]) or
//! against etcd (through the etcd-client crate; build with `--features etcd`).
//!
//! Each of `--clients` workers issues one request at a time for
//! `--duration-secs`; latencies go into per-worker HDR histograms (merged at
//! the end). The get and serializable workloads first load `--keys` keys
//! (`--preload` skips that, or does only that). Keys are `--key-prefix`
//! followed by a number, so the prefix picks the policy a run exercises
//! (strong, causal, eventual); `--consistency` picks the read level of the
//! get workload. In a multi-region cluster the region is where the client
//! sends from (`--bind`, `MERIDIAN_BIND`) and which endpoints it is given;
//! `--region` records it. The `lag` workload ([`lag`]) measures how long a
//! write acknowledged here takes to show in other regions. Results print
//! as a table and, with `--json-out FILE`, as JSON lines appended to FILE.

mod coord;
mod lag;
mod lock;
mod target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;

pub use lag::{LagReaderSpec, LagResult};
pub use target::{Read, Target};

/// Upper bound on `--clients` (each is a task; more would only measure the scheduler).
pub const MAX_BENCH_CLIENTS: usize = 4096;
/// Upper bound on `--duration-secs`.
pub const MAX_BENCH_SECS: u64 = 3600;
/// Highest latency the histograms track (60 s, in microseconds).
const HIST_MAX_MICROS: u64 = 60_000_000;
/// Longest `--key-prefix`, bytes.
const MAX_KEY_PREFIX_BYTES: usize = 256;
/// Upper bound on `--lag-interval-ms` and `--lag-poll-ms`.
const MAX_LAG_PAUSE_MS: u64 = 10_000;

/// What to run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// A Meridian node (QUIC + mutual TLS).
    Meridian,
    /// An etcd server (gRPC).
    Etcd,
}

/// The operation mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Puts of random keys.
    Put,
    /// Gets of preloaded keys: linearizable (Meridian: the key prefix's
    /// own level) unless `--consistency` names another.
    Get,
    /// Serializable gets of preloaded keys: served by whichever node
    /// receives them from what it has applied (Meridian:
    /// `ReadConsistency::Serializable`; etcd: `serializable` range requests).
    Serializable,
    /// Replication lag: one paced writer here, a poller per `--lag-reader`
    /// region (see the `lag` module); `--clients` does not apply.
    Lag,
    /// Lock contention: every client acquires and releases one lock
    /// (`<key-prefix>lock`), each through its own connection and lease
    /// (see the `lock` module).
    Lock,
    /// Watch event delivery: `--clients` watchers of one prefix, one writer
    /// every `--lag-interval-ms`; latency from a put's start to each
    /// watcher's event (see the `coord` module).
    Watch,
    /// Lease keepalive throughput: `--leases` leases kept alive by
    /// `--clients` loops in rounds of `--keepalive-batch`; ops are
    /// keepalives, latency is per round (see the `coord` module).
    Keepalive,
}

/// Whether the get workloads load their keys first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preload {
    /// Load `--keys` keys before the first get or serializable run.
    Auto,
    /// Do not load (another run did, e.g. from the key's home region).
    Skip,
    /// Load the keys, then exit without running anything.
    Only,
}

/// `meridian bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// System under test.
    #[arg(long, value_enum, default_value = "meridian")]
    pub system: System,
    /// Workloads to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "put,get")]
    pub workload: Vec<Workload>,
    /// Concurrent clients, comma-separated (one run each).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Key space size (keys are `<key-prefix><n>`).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Prefix of every key: with prefix policies it picks the consistency
    /// a run exercises (e.g. a strong, a causal and an eventual prefix).
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// Read level of the get workload and of the lag readers: linearizable,
    /// serializable, bounded:MS, causal (no token) or eventual for
    /// Meridian; linearizable or serializable for etcd. Default: the key
    /// prefix's own level for get (Meridian; etcd: linearizable); eventual
    /// (etcd: serializable) for lag readers.
    #[arg(long, value_name = "LEVEL")]
    pub consistency: Option<String>,
    /// Region the client is in, recorded with the results (a label: the
    /// source address, `--bind` or MERIDIAN_BIND, is what puts it there).
    #[arg(long, default_value = "")]
    pub region: String,
    /// Whether the get workloads load their keys first.
    #[arg(long, value_enum, default_value = "auto")]
    pub preload: Preload,
    /// A region whose reader polls for the lag workload's writes,
    /// NAME=[BIND@]ENDPOINTS: for Meridian the source address that puts the
    /// reader in that region and that region's endpoints; for etcd the
    /// member's URL. Repeatable.
    #[arg(long = "lag-reader", value_name = "NAME=[BIND@]ENDPOINTS")]
    pub lag_readers: Vec<String>,
    /// Milliseconds between two writes of the lag workload (a write that
    /// takes longer delays the next one).
    #[arg(long, default_value_t = 10)]
    pub lag_interval_ms: u64,
    /// Milliseconds a lag reader waits between polls (0: back to back).
    /// With the read's own latency this is the measurement's resolution,
    /// reported as `poll_mean_us`.
    #[arg(long, default_value_t = 1)]
    pub lag_poll_ms: u64,
    /// Connections shared by the clients (round-robin). With several
    /// `--endpoints`, connection i starts at the i-th endpoint (mod their
    /// number), so connections spread over the nodes; writes and
    /// linearizable reads still end up at each range's leader (redirects).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Leases the keepalive workload grants and keeps alive.
    #[arg(long, default_value_t = 1_000)]
    pub leases: usize,
    /// Leases per keepalive round: one Meridian request naming them all,
    /// or one keepalive on each of as many etcd lease streams.
    #[arg(long, default_value_t = 100)]
    pub keepalive_batch: usize,
    /// etcd endpoints (for --system etcd).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoints: String,
    /// Append one JSON object per run to this file. (Named `--json-out`
    /// because the connection flags already carry the global `--json` switch.)
    #[arg(long = "json-out", value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Free-form label recorded with the results (e.g. "fsync=always").
    #[arg(long, default_value = "")]
    pub label: String,
    /// Meridian connection flags.
    #[command(flatten)]
    pub conn: super::conn::ConnArgs,
}

/// One run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// System.
    pub system: System,
    /// Workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// Region of the client (`--region`).
    pub region: String,
    /// Key prefix.
    pub key_prefix: String,
    /// Read level asked with `--consistency` (get workload), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// Label.
    pub label: String,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall-clock seconds measured.
    pub seconds: f64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// 99.9th percentile latency, microseconds.
    pub p999_us: u64,
    /// Maximum latency, microseconds.
    pub max_us: u64,
    /// The first error a client saw, if any (so failed runs can be diagnosed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// A tiny xorshift generator: the load shape needs speed, not quality.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

pub(super) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HIST_MAX_MICROS, 3)?)
}

fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    if args
        .clients
        .iter()
        .any(|&c| c == 0 || c > MAX_BENCH_CLIENTS)
    {
        anyhow::bail!("--clients values must be 1..={MAX_BENCH_CLIENTS}");
    }
    if args.duration_secs == 0 || args.duration_secs > MAX_BENCH_SECS {
        anyhow::bail!("--duration-secs must be 1..={MAX_BENCH_SECS}");
    }
    if args.keys == 0 || args.conns == 0 || args.conns > 64 {
        anyhow::bail!("--keys must be >= 1 and --conns 1..=64");
    }
    if args.value_size > crate::limits::HARD_MAX_VALUE_BYTES {
        anyhow::bail!(
            "--value-size must be at most {}",
            crate::limits::HARD_MAX_VALUE_BYTES
        );
    }
    if args.key_prefix.len() > MAX_KEY_PREFIX_BYTES {
        anyhow::bail!("--key-prefix must be at most {MAX_KEY_PREFIX_BYTES} bytes");
    }
    check_lag_args(args)?;
    coord::check_args(args)?;
    for &w in &args.workload {
        read_of(args, w)?;
    }
    Ok(())
}

fn check_lag_args(args: &BenchArgs) -> anyhow::Result<()> {
    let lag = args.workload.contains(&Workload::Lag);
    if lag && args.lag_readers.is_empty() {
        anyhow::bail!("--workload lag needs at least one --lag-reader");
    }
    if !lag && !args.lag_readers.is_empty() {
        anyhow::bail!("--lag-reader applies to --workload lag only");
    }
    if args.lag_readers.len() > lag::MAX_LAG_READERS {
        anyhow::bail!("at most {} --lag-reader", lag::MAX_LAG_READERS);
    }
    for spec in &args.lag_readers {
        let spec: LagReaderSpec = spec
            .parse()
            .map_err(|e| anyhow::anyhow!("--lag-reader {e}"))?;
        if spec.bind.is_some() && args.system == System::Etcd {
            anyhow::bail!(
                "--lag-reader {}: an etcd client cannot bind (no BIND@)",
                spec.name
            );
        }
    }
    if args.lag_interval_ms == 0 || args.lag_interval_ms > MAX_LAG_PAUSE_MS {
        anyhow::bail!("--lag-interval-ms must be 1..={MAX_LAG_PAUSE_MS}");
    }
    if args.lag_poll_ms > MAX_LAG_PAUSE_MS {
        anyhow::bail!("--lag-poll-ms must be 0..={MAX_LAG_PAUSE_MS}");
    }
    Ok(())
}

/// How `workload` reads, from `--consistency`: the get workload reads at
/// the level asked (default: [`Read::Default`]), the serializable one
/// serializably (asking for a level too is a usage error), lag readers
/// eventually (etcd: serializably). Put takes none.
fn read_of(args: &BenchArgs, workload: Workload) -> anyhow::Result<Read> {
    let asked = args.consistency.as_deref();
    match (workload, asked) {
        (Workload::Put | Workload::Lock | Workload::Watch | Workload::Keepalive, _) => {
            Ok(Read::Default)
        }
        (Workload::Serializable, Some(_)) => {
            anyhow::bail!("--workload serializable reads serializably; use --workload get --consistency LEVEL")
        }
        (Workload::Serializable, None) => Ok(Read::Serializable),
        (Workload::Get, None) => Ok(Read::Default),
        (Workload::Lag, None) if args.system == System::Etcd => Ok(Read::Serializable),
        (Workload::Lag, None) => Ok(Read::Level(crate::replication::read::ReadLevel::Eventual)),
        (Workload::Get | Workload::Lag, Some(level)) => Read::parse(args.system, level),
    }
}

/// The read level `workload` runs at as recorded in the results.
fn read_name(args: &BenchArgs, workload: Workload) -> Option<String> {
    match (workload, args.system) {
        (Workload::Lag, System::Etcd) => Some(
            args.consistency
                .clone()
                .unwrap_or_else(|| "serializable".into()),
        ),
        (Workload::Lag, System::Meridian) => Some(
            args.consistency
                .clone()
                .unwrap_or_else(|| "eventual".into()),
        ),
        (Workload::Get, _) => args.consistency.clone(),
        _ => None,
    }
}

/// Runs every (workload, clients) combination and prints the figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let targets = Arc::new(target::connect_all(&args).await?);
    let result = run_all(&args, &targets).await;
    for t in targets.iter() {
        t.close().await;
    }
    result
}

async fn run_all(args: &BenchArgs, targets: &Arc<Vec<Target>>) -> anyhow::Result<()> {
    let value = vec![b'x'; args.value_size];
    if args.preload == Preload::Only {
        return preload(targets, &args.key_prefix, args.keys, &value).await;
    }
    println!(
        "{:<9} {:<5} {:>7} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9}",
        "system", "op", "clients", "ops", "errors", "ops/s", "p50_us", "p99_us", "p999_us"
    );
    let mut loaded = args.preload == Preload::Skip;
    for &workload in &args.workload {
        for t in targets.iter() {
            t.settle(&key_name(&args.key_prefix, 0))
                .await
                .context("finding the leader before the run")?;
        }
        if !loaded && matches!(workload, Workload::Get | Workload::Serializable) {
            preload(targets, &args.key_prefix, args.keys, &value).await?;
            loaded = true;
        }
        let read = read_of(args, workload)?;
        if workload == Workload::Lag {
            let name = read_name(args, workload).unwrap_or_default();
            for r in lag::run(args, &targets[0], read, &name).await? {
                print_lag(&r);
                append_json(args, &r)?;
            }
            continue;
        }
        if matches!(workload, Workload::Watch | Workload::Keepalive) {
            run_coord(args, targets, workload).await?;
            continue;
        }
        for &clients in &args.clients {
            let r = if workload == Workload::Lock {
                lock::run(args, clients).await?
            } else if workload == Workload::Serializable {
                // Fresh connections, spread over the endpoints and left where
                // they start (a serializable read is served by any node), not
                // the ones that followed redirects to the leader.
                let fresh = Arc::new(target::connect_all(args).await?);
                let r = run_one(args, &fresh, workload, read, clients, &value).await;
                for t in fresh.iter() {
                    t.close().await;
                }
                r?
            } else {
                run_one(args, targets, workload, read, clients, &value).await?
            };
            print_row(&r);
            append_json(args, &r)?;
        }
    }
    Ok(())
}

/// The watch and keepalive workloads, one run per `--clients` value (the
/// keepalive workload's leases are granted once, before its first run).
async fn run_coord(
    args: &BenchArgs,
    targets: &Arc<Vec<Target>>,
    workload: Workload,
) -> anyhow::Result<()> {
    let leases = match workload {
        Workload::Keepalive => Some(coord::grant_leases(args, targets).await?),
        _ => None,
    };
    for &clients in &args.clients {
        let r = match &leases {
            Some(leases) => coord::keepalive(args, targets, leases, clients).await?,
            None => coord::watch(args, targets, clients).await?,
        };
        print_row(&r);
        append_json(args, &r)?;
    }
    Ok(())
}

fn print_row(r: &RunResult) {
    println!(
        "{:<9} {:<5} {:>7} {:>10} {:>8} {:>12.0} {:>9} {:>9} {:>9}",
        format!("{:?}", r.system).to_lowercase(),
        format!("{:?}", r.workload).to_lowercase(),
        r.clients,
        r.ops,
        r.errors,
        r.ops_per_sec,
        r.p50_us,
        r.p99_us,
        r.p999_us
    );
    if let Some(e) = &r.first_error {
        eprintln!("  {} error(s); the first: {e}", r.errors);
    }
}

fn print_lag(r: &LagResult) {
    println!(
        "{:<9} lag {} -> {}: {} writes (p50 {} us, p99 {} us), seen {}, lost {}; \
         lag after ack p50 {} us, p99 {} us, max {} us; poll every {} us",
        format!("{:?}", r.system).to_lowercase(),
        r.region,
        r.reader,
        r.writes,
        r.write_p50_us,
        r.write_p99_us,
        r.seen,
        r.lost,
        r.p50_us,
        r.p99_us,
        r.max_us,
        r.poll_mean_us
    );
    if let Some(e) = &r.first_error {
        eprintln!(
            "  {} write and {} read error(s); the first: {e}",
            r.write_errors, r.read_errors
        );
    }
}

fn append_json(args: &BenchArgs, r: &impl Serialize) -> anyhow::Result<()> {
    if let Some(path) = &args.json_out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{}", serde_json::to_string(r)?)?;
    }
    Ok(())
}

async fn preload(
    targets: &Arc<Vec<Target>>,
    prefix: &str,
    keys: u64,
    value: &[u8],
) -> anyhow::Result<()> {
    // Load with 32 concurrent writers so the preload is quick even at fsync=always.
    let workers = 32u64.min(keys);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let targets = targets.clone();
        let value = value.to_vec();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let t = &targets[usize::try_from(w).unwrap_or(0) % targets.len()];
            let mut k = w;
            while k < keys {
                t.put(&key_name(&prefix, k), &value)
                    .await
                    .with_context(|| format!("preloading key {k} of {keys}"))?;
                k += workers;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// What one closed-loop client task reports: its latencies, its failed
/// operations and the first failure's text.
pub(super) type ClientRun = (Histogram<u64>, u64, Option<String>);

/// Waits for every client task and merges their reports.
pub(super) async fn join_clients(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<ClientRun>>>,
) -> anyhow::Result<ClientRun> {
    let mut hist = new_histogram()?;
    let (mut errors, mut first_error) = (0, None);
    for task in tasks {
        let (h, e, first) = task.await??;
        hist.add(&h)?;
        errors += e;
        first_error = first_error.or(first);
    }
    Ok((hist, errors, first_error))
}

fn key_name(prefix: &str, k: u64) -> Vec<u8> {
    format!("{prefix}{k:010}").into_bytes()
}

async fn run_one(
    args: &BenchArgs,
    targets: &Arc<Vec<Target>>,
    workload: Workload,
    read: Read,
    clients: usize,
    value: &[u8],
) -> anyhow::Result<RunResult> {
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let targets = targets.clone();
        let value = value.to_vec();
        let keys = args.keys;
        let prefix = args.key_prefix.clone();
        tasks.push(tokio::spawn(async move {
            let target = &targets[c % targets.len()];
            let mut hist = new_histogram()?;
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
            let mut errors = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline {
                let key = key_name(&prefix, rng.next() % keys);
                let t0 = Instant::now();
                let result = match workload {
                    Workload::Put => target.put(&key, &value).await,
                    // Lag, watch and keepalive are run by `run_all` itself.
                    _ => target.read(&key, read).await.map(drop),
                };
                let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                match result {
                    Ok(()) => hist.saturating_record(micros.max(1)),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            anyhow::Ok((hist, errors, first_error))
        }));
    }
    let (hist, errors, first_error) = join_clients(tasks).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RunResult::of(
        args,
        workload,
        clients,
        &hist,
        seconds,
        errors,
        first_error,
    ))
}

impl RunResult {
    /// One run's figures from its latency histogram (one entry per
    /// successful operation), wall-clock seconds and errors.
    pub(super) fn of(
        args: &BenchArgs,
        workload: Workload,
        clients: usize,
        hist: &Histogram<u64>,
        seconds: f64,
        errors: u64,
        first_error: Option<String>,
    ) -> RunResult {
        RunResult {
            system: args.system,
            workload,
            clients,
            region: args.region.clone(),
            key_prefix: args.key_prefix.clone(),
            consistency: read_name(args, workload),
            label: args.label.clone(),
            ops: hist.len(),
            errors,
            seconds,
            ops_per_sec: hist.len() as f64 / seconds,
            p50_us: hist.value_at_quantile(0.50),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
            first_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_deterministic_and_spreads() {
        let mut a = XorShift(1);
        let mut b = XorShift(1);
        let xs: Vec<u64> = (0..100).map(|_| a.next() % 10).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next() % 10).collect();
        assert_eq!(xs, ys);
        let distinct: std::collections::HashSet<_> = xs.iter().collect();
        assert!(distinct.len() >= 8);
    }

    /// `meridian bench` as the CLI mounts it (a flattened `BenchArgs`).
    #[derive(Debug, clap::Parser)]
    struct BenchCli {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn json_file_flag_parses_next_to_connection_flags() {
        use clap::CommandFactory;
        BenchCli::command().debug_assert();
        let cli = <BenchCli as clap::Parser>::try_parse_from([
            "bench",
            "--json-out",
            "out.jsonl",
            "--clients",
            "1,16",
            "--endpoints",
            "127.0.0.1:1",
        ])
        .expect("bench flags parse");
        assert_eq!(cli.args.json_out, Some(PathBuf::from("out.jsonl")));
        assert_eq!(cli.args.clients, vec![1, 16]);
        assert_eq!(cli.args.conn.endpoints, "127.0.0.1:1");
    }

    #[test]
    fn serializable_workload_parses() {
        let cli = <BenchCli as clap::Parser>::try_parse_from([
            "bench",
            "--workload",
            "put,get,serializable",
        ])
        .expect("workloads parse");
        assert_eq!(
            cli.args.workload,
            vec![Workload::Put, Workload::Get, Workload::Serializable]
        );
        assert_eq!(
            serde_json::to_string(&Workload::Serializable).unwrap(),
            "\"serializable\""
        );
    }

    fn parse(args: &[&str]) -> BenchArgs {
        let argv = std::iter::once("bench").chain(args.iter().copied());
        <BenchCli as clap::Parser>::try_parse_from(argv)
            .expect("bench flags parse")
            .args
    }

    #[test]
    fn read_levels_follow_the_workload_and_the_system() {
        use crate::replication::read::ReadLevel;
        let a = parse(&[
            "--workload",
            "get,lag",
            "--lag-reader",
            "eu-west=http://x:1",
        ]);
        assert_eq!(read_of(&a, Workload::Get).unwrap(), Read::Default);
        assert_eq!(
            read_of(&a, Workload::Lag).unwrap(),
            Read::Level(ReadLevel::Eventual)
        );
        assert_eq!(read_name(&a, Workload::Lag).as_deref(), Some("eventual"));
        assert_eq!(read_name(&a, Workload::Get), None);
        let e = parse(&[
            "--system",
            "etcd",
            "--workload",
            "lag",
            "--lag-reader",
            "a=http://x:1",
        ]);
        assert_eq!(read_of(&e, Workload::Lag).unwrap(), Read::Serializable);
        assert_eq!(
            read_name(&e, Workload::Lag).as_deref(),
            Some("serializable")
        );
        let b = parse(&["--workload", "get", "--consistency", "bounded:1000"]);
        assert!(matches!(
            read_of(&b, Workload::Get).unwrap(),
            Read::Level(ReadLevel::Bounded {
                max_staleness_ms: 1000,
                ..
            })
        ));
        assert_eq!(
            read_name(&b, Workload::Get).as_deref(),
            Some("bounded:1000")
        );
        check_args(&b).unwrap();
        // The serializable workload has its own level.
        let s = parse(&["--workload", "serializable", "--consistency", "eventual"]);
        assert!(check_args(&s).is_err());
    }

    #[test]
    fn lag_flags_are_checked_before_anything_connects() {
        let ok = [
            "--workload",
            "lag",
            "--lag-reader",
            "eu-west=127.0.2.200@127.1.2.1:1",
        ];
        check_args(&parse(&ok)).unwrap();
        let err = |args: &[&str]| check_args(&parse(args)).unwrap_err().to_string();
        assert!(err(&["--workload", "lag"]).contains("--lag-reader"));
        assert!(err(&["--workload", "put", "--lag-reader", "a=b:1"]).contains("lag only"));
        assert!(err(&["--workload", "lag", "--lag-reader", "nameless"]).contains("NAME="));
        let etcd_bind = [
            "--system",
            "etcd",
            "--workload",
            "lag",
            "--lag-reader",
            "a=1.2.3.4@http://b:1",
        ];
        assert!(err(&etcd_bind).contains("cannot bind"));
        let mut zero = ok.to_vec();
        zero.extend(["--lag-interval-ms", "0"]);
        assert!(err(&zero).contains("--lag-interval-ms"));
        assert_eq!(parse(&["--preload", "only"]).preload, Preload::Only);
    }

    #[test]
    fn key_names_sort_numerically() {
        assert!(key_name("bench/", 9) < key_name("bench/", 10));
        assert_eq!(key_name("ads/b/", 7), b"ads/b/0000000007".to_vec());
    }
}
