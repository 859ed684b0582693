//! `meridian bench`: a closed-loop load generator with HDR histograms that
//! runs the same workload against Meridian (through [`crate::client`]) or
//! against etcd (through the etcd-client crate; build with `--features etcd`).
//!
//! Each of `--clients` workers issues one request at a time for
//! `--duration-secs`; latencies go into per-worker HDR histograms (merged at
//! the end). The get and serializable workloads first load `--keys` keys.
//! Results print as a table and, with `--json-out FILE`, as JSON lines
//! appended to FILE.

mod target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;

pub use target::Target;

/// Upper bound on `--clients` (each is a task; more would only measure the scheduler).
pub const MAX_BENCH_CLIENTS: usize = 4096;
/// Upper bound on `--duration-secs`.
pub const MAX_BENCH_SECS: u64 = 3600;
/// Highest latency the histograms track (60 s, in microseconds).
const HIST_MAX_MICROS: u64 = 60_000_000;

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
    /// Linearizable gets of preloaded keys.
    Get,
    /// Serializable gets of preloaded keys: served by whichever node
    /// receives them from what it has applied (Meridian:
    /// `ReadConsistency::Serializable`; etcd: `serializable` range requests).
    Serializable,
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
    /// Key space size (keys are `bench/<n>`).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Connections shared by the clients (round-robin). With several
    /// `--endpoints`, connection i starts at the i-th endpoint (mod their
    /// number), so connections spread over the nodes; writes and
    /// linearizable reads still end up at each range's leader (redirects).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
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

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
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
    Ok(())
}

/// Runs every (workload, clients) combination and prints the figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let targets = Arc::new(target::connect_all(&args).await?);
    let value = vec![b'x'; args.value_size];
    println!(
        "{:<9} {:<5} {:>7} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9}",
        "system", "op", "clients", "ops", "errors", "ops/s", "p50_us", "p99_us", "p999_us"
    );
    for &workload in &args.workload {
        for t in targets.iter() {
            t.settle(&key_name(0))
                .await
                .context("finding the leader before the run")?;
        }
        if matches!(workload, Workload::Get | Workload::Serializable) {
            preload(&targets, args.keys, &value).await?;
        }
        for &clients in &args.clients {
            let r = if workload == Workload::Serializable {
                // Fresh connections, spread over the endpoints and left where
                // they start (a serializable read is served by any node), not
                // the ones that followed redirects to the leader.
                let fresh = Arc::new(target::connect_all(&args).await?);
                let r = run_one(&args, &fresh, workload, clients, &value).await;
                for t in fresh.iter() {
                    t.close().await;
                }
                r?
            } else {
                run_one(&args, &targets, workload, clients, &value).await?
            };
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
            if let Some(path) = &args.json_out {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                writeln!(f, "{}", serde_json::to_string(&r)?)?;
            }
        }
    }
    for t in targets.iter() {
        t.close().await;
    }
    Ok(())
}

async fn preload(targets: &Arc<Vec<Target>>, keys: u64, value: &[u8]) -> anyhow::Result<()> {
    // Load with 32 concurrent writers so the preload is quick even at fsync=always.
    let workers = 32u64.min(keys);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let targets = targets.clone();
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            let t = &targets[usize::try_from(w).unwrap_or(0) % targets.len()];
            let mut k = w;
            while k < keys {
                t.put(&key_name(k), &value)
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

fn key_name(k: u64) -> Vec<u8> {
    format!("bench/{k:010}").into_bytes()
}

async fn run_one(
    args: &BenchArgs,
    targets: &Arc<Vec<Target>>,
    workload: Workload,
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
        tasks.push(tokio::spawn(async move {
            let target = &targets[c % targets.len()];
            let mut hist = new_histogram()?;
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
            let mut errors = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline {
                let key = key_name(rng.next() % keys);
                let t0 = Instant::now();
                let result = match workload {
                    Workload::Put => target.put(&key, &value).await,
                    Workload::Get => target.get(&key).await,
                    Workload::Serializable => target.get_serializable(&key).await,
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
    let mut hist = new_histogram()?;
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (h, e, first) = task.await??;
        hist.add(&h)?;
        errors += e;
        first_error = first_error.or(first);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RunResult {
        system: args.system,
        workload,
        clients,
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
    })
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

    #[test]
    fn key_names_sort_numerically() {
        assert!(key_name(9) < key_name(10));
    }
}
