//! The lock workload: `--clients` clients contend for one lock
//! (`<key-prefix>lock`), each with its own connection and lease; one
//! operation is an acquire (waiting in line) followed by its release, and
//! its latency is the pair's. Meridian: `lock_acquire` / `lock_release`
//! (its fencing token included); etcd: its lock API (`Lock` with the
//! client's lease, then `Unlock` of the returned key), as `etcdctl lock`
//! uses it. Leases are granted for longer than the run, so neither system
//! spends keepalives during it.

use std::time::{Duration, Instant};

use super::{new_histogram, BenchArgs, RunResult, System, Workload};

/// TTL of each client's lease: longer than any run.
const LEASE_TTL: Duration = Duration::from_secs(600);
/// Longest one acquire waits in line before it counts as an error.
const ACQUIRE_WAIT: Duration = Duration::from_secs(30);

/// One client's connection, lease and lock (clients boxed: both are
/// large, and unequal).
enum Locker {
    Meridian {
        client: Box<crate::client::Client>,
        lease: u64,
    },
    #[cfg(feature = "etcd")]
    Etcd {
        client: Box<etcd_client::Client>,
        lease: i64,
    },
}

impl Locker {
    async fn open(args: &BenchArgs, i: usize) -> anyhow::Result<Locker> {
        match args.system {
            System::Meridian => {
                let mut conn = args.conn.clone();
                conn.endpoints = super::target::rotate_endpoints(&conn.endpoints, i);
                let client = Box::new(conn.connect().await?);
                let lease = client.lease_grant(LEASE_TTL).await?.id;
                Ok(Locker::Meridian { client, lease })
            }
            System::Etcd => Self::open_etcd(args).await,
        }
    }

    #[cfg(feature = "etcd")]
    async fn open_etcd(args: &BenchArgs) -> anyhow::Result<Locker> {
        let eps: Vec<&str> = args.etcd_endpoints.split(',').map(str::trim).collect();
        let client = etcd_client::Client::connect(eps, None).await?;
        let ttl = i64::try_from(LEASE_TTL.as_secs())?;
        let lease = client.lease_client().grant(ttl, None).await?.id();
        Ok(Locker::Etcd {
            client: Box::new(client),
            lease,
        })
    }

    #[cfg(not(feature = "etcd"))]
    async fn open_etcd(_args: &BenchArgs) -> anyhow::Result<Locker> {
        anyhow::bail!("this build has no etcd support; rebuild with `cargo build --release --features etcd` (needs protoc)")
    }

    /// One acquire and its release.
    async fn cycle(&self, name: &str) -> anyhow::Result<()> {
        match self {
            Locker::Meridian { client, lease } => {
                let token = client
                    .lock_acquire(name, *lease, Some(ACQUIRE_WAIT))
                    .await?;
                client.lock_release(name, token).await?;
            }
            #[cfg(feature = "etcd")]
            Locker::Etcd { client, lease } => {
                let mut locks = client.lock_client();
                let opts = etcd_client::LockOptions::new().with_lease(*lease);
                let held = tokio::time::timeout(ACQUIRE_WAIT, locks.lock(name, Some(opts)))
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("etcd lock not granted within {ACQUIRE_WAIT:?}")
                    })??;
                locks.unlock(held.key().to_vec()).await?;
            }
        }
        Ok(())
    }

    async fn close(self) {
        match self {
            Locker::Meridian { client, lease } => {
                let _ = client.lease_revoke(lease).await;
                client.close().await;
            }
            #[cfg(feature = "etcd")]
            Locker::Etcd { client, lease } => {
                let _ = client.lease_client().revoke(lease).await;
            }
        }
    }
}

/// Runs the lock workload with `clients` contending clients.
pub async fn run(args: &BenchArgs, clients: usize) -> anyhow::Result<RunResult> {
    let name = format!("{}lock", args.key_prefix);
    let mut lockers = Vec::with_capacity(clients);
    for i in 0..clients {
        lockers.push(Locker::open(args, i).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for locker in lockers {
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram()?;
            let (mut errors, mut first_error) = (0u64, None);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match locker.cycle(&name).await {
                    Ok(()) => {
                        let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        hist.saturating_record(micros.max(1));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            locker.close().await;
            anyhow::Ok((hist, errors, first_error))
        }));
    }
    let (hist, errors, first_error) = super::join_clients(tasks).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RunResult::of(
        args,
        Workload::Lock,
        clients,
        &hist,
        seconds,
        errors,
        first_error,
    ))
}
