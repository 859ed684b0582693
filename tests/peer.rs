//! The peer protocol under real `meridian serve` processes (a `meridian dev`
//! region): large values never wedge a range (issue 8 item 1), a client rate
//! limit never throttles Raft (item 10), and a follower that missed a range's
//! growth past log compaction rejoins through a streamed snapshot with the
//! leader's visible state (the acceptance run; long with MERIDIAN_LONG_TESTS=1).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dev::DevCluster;
use meridian::client::Client;
use meridian::storage::{FsyncPolicy, MvccStore, StoreOptions};

const BOUND: Duration = Duration::from_secs(120);

/// The tests here each run a three-node region moving megabytes; run side
/// by side on two cores they starve each other's nodes into timeouts that
/// say nothing about the code. One at a time (the other test binaries still
/// run in parallel with them).
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn long() -> bool {
    std::env::var_os("MERIDIAN_LONG_TESTS").is_some()
}

/// Issue 8 item 1: eight concurrent 1,000,000-byte puts into one range used
/// to leave five timed out and the range wedged (AppendEntries batches over
/// the client frame limit were refused by every follower, forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_megabyte_values_commit_and_the_range_keeps_serving() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = DevCluster::start();
    let client = Arc::new(
        Client::connect(cluster.client_config(Duration::from_secs(30)))
            .await
            .unwrap(),
    );
    let value = vec![b'v'; 1_000_000];
    let mut puts = Vec::new();
    for i in 0..8 {
        let (client, value) = (client.clone(), value.clone());
        puts.push(tokio::spawn(async move {
            // On a loaded machine (debug build, 8 MB through three nodes on
            // two cores) a put may outlast the server's 10 s commit wait and
            // come back outcome-unknown; putting the same value again is
            // idempotent. The bug this guards against wedged the range for
            // ever, so the retries would fail too.
            let mut last = None;
            for _attempt in 0..3 {
                match client.put(format!("config/big/{i}"), value.clone()).await {
                    Ok(w) => return Ok(w),
                    Err(e) if e.is_outcome_unknown() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            Err(last.expect("three attempts failed"))
        }));
    }
    for (i, p) in puts.into_iter().enumerate() {
        let r = p.await.unwrap();
        assert!(r.is_ok(), "put {i} of 1,000,000 bytes: {r:?}");
    }
    // The range still takes writes, and every replica has the values.
    client.put("config/after", "small").await.unwrap();
    for i in 0..8 {
        let got = client.get(format!("config/big/{i}")).await.unwrap();
        assert_eq!(got.kv.map(|kv| kv.value.len()), Some(1_000_000));
    }
    let deadline = Instant::now() + BOUND;
    loop {
        let applied = applied_on_each(&cluster).await;
        if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `config/` range's applied index as each node reports it (`None`
/// where a node does not answer).
async fn applied_on_each(cluster: &DevCluster) -> Vec<Option<u64>> {
    let all = cluster.client_config(Duration::from_secs(5));
    let mut out = Vec::new();
    for endpoint in &all.endpoints {
        let mut one = all.clone();
        one.endpoints = vec![*endpoint];
        let applied = match Client::connect(one).await {
            Ok(c) => {
                let status = c.region_status().await.unwrap_or_default();
                c.close().await;
                status
                    .iter()
                    .find(|s| s.start == b"config/")
                    .and_then(|s| s.applied_index)
            }
            Err(_) => None,
        };
        out.push(applied);
    }
    out
}

/// Issue 8 item 10: `server.rate_limit_rps` is a client limit. With it at
/// 20 requests per second per connection, Raft traffic (heartbeats alone
/// are 10 per second per peer and range: 50 per second per peer connection
/// here) must still flow: the region elects a leader and commits writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_rate_limit_does_not_throttle_raft() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = DevCluster::start_with_env(&[("MERIDIAN_SERVER__RATE_LIMIT_RPS", "20")]);
    let client = Client::connect(cluster.client_config(Duration::from_secs(20)))
        .await
        .unwrap();
    // Each put is a new request on the client's connection: stay under the
    // client limit, so only the peers' traffic could be throttled.
    for i in 0..4 {
        client.put(format!("config/rl/{i}"), "v").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = client.get("config/rl/3").await.unwrap();
    assert_eq!(got.kv.map(|kv| kv.value), Some(b"v".to_vec()));
}

fn node_file(cluster: &DevCluster, name: &str, field: &str) -> String {
    let toml =
        std::fs::read_to_string(cluster.dir.path().join(format!("meridian-dev/{name}.toml")))
            .unwrap();
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{field} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_string()
}

/// A snapshot-install counter from a node's /metrics (0 when absent or
/// unreachable), over the dev cluster's HTTPS gateway.
async fn metric(https: &common::http::Https, http: &str, name: &str) -> f64 {
    let Ok(addr) = http.parse() else {
        return 0.0;
    };
    let Ok(reply) = https.try_request(addr, "GET", "/metrics", b"").await else {
        return 0.0;
    };
    reply
        .text()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A stored version: key, version, value (`None`: a tombstone).
type Version = (Vec<u8>, u64, Option<Vec<u8>>);
/// A key's latest value: key, version, value.
type Latest = (Vec<u8>, u64, Vec<u8>);

fn dump(dir: &Path) -> Vec<Version> {
    let store = MvccStore::open(StoreOptions {
        path: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        cache_bytes: 8 << 20,
    })
    .unwrap();
    let mut end = b"config/".to_vec();
    *end.last_mut().unwrap() += 1;
    store
        .dump_range(b"config/", Some(&end), 10_000_000)
        .unwrap()
        .into_iter()
        .map(|v| (v.key, v.version.0, v.value))
        .collect()
}

/// The latest state in a [`dump`] (newest first per key): each key's
/// newest version, unless it is a tombstone.
fn latest(dump: &[Version]) -> Vec<Latest> {
    let mut out: Vec<Latest> = Vec::new();
    let mut last_key: Option<&[u8]> = None;
    for (key, version, value) in dump {
        if last_key == Some(key.as_slice()) {
            continue;
        }
        last_key = Some(key);
        if let Some(value) = value {
            out.push((key.clone(), *version, value.clone()));
        }
    }
    out
}

/// Acceptance (issue 8): a follower stopped while its range grows past log
/// compaction rejoins through a snapshot streamed over the real server: the
/// leader materialises its snapshot point, and the follower ends with the
/// leader's state (every key's latest version, identical), holding only
/// versions the leader holds (history below the snapshot's timestamp is not
/// shipped; docs/consistency.md R2). The CI variant grows the range by
/// about 24 MB; MERIDIAN_LONG_TESTS=1 grows it past 200 MB and prints the
/// sender's and receiver's resident memory (idle and peak while streaming).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_rejoins_by_streamed_snapshot_with_the_leaders_state() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = DevCluster::start_with_env(&[
        ("MERIDIAN_RAFT__SNAPSHOT_AFTER_LOGS", "20"),
        ("MERIDIAN_RAFT__LOGS_KEPT_AFTER_SNAPSHOT", "0"),
    ]);
    let client = Arc::new(
        Client::connect(cluster.client_config(Duration::from_secs(30)))
            .await
            .unwrap(),
    );
    client.put("config/seed", "x").await.unwrap();
    let status = client.region_status().await.unwrap();
    let leader = status
        .iter()
        .find(|s| s.start == b"config/")
        .and_then(|s| s.leader)
        .expect("config/ has a leader");
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let (leader_name, follower_name) = (format!("node{leader}"), format!("node{follower}"));
    // The follower's idle size: its resident memory while serving, before it stops.
    let follower_idle = common::rss_bytes(cluster.pids[&follower_name]).unwrap_or(0);
    cluster.kill9(&follower_name);

    // Values up to 1 MiB, sizes varying, some keys overwritten (history).
    let (count, max_value) = if long() {
        (420, 1 << 20)
    } else {
        (48, 1 << 20)
    };
    let mut written = 0usize;
    for i in 0..count {
        let len = max_value / 2 + (i * 7919) % (max_value / 2);
        written += len;
        let key = format!("config/grow/{}", i % (count * 3 / 4));
        let value = vec![b'a' + (i % 26) as u8; len];
        // Outcome unknown (a busy node looked silent to the SDK): the same
        // put again is idempotent. Three tries, then fail the test.
        let mut tries = 0;
        while let Err(e) = client.put(&key, &value).await {
            tries += 1;
            assert!(e.is_outcome_unknown() && tries < 3, "put {i}: {e:?}");
        }
    }
    let leader_pid = cluster.pids[&leader_name];
    let leader_idle = common::rss_bytes(leader_pid).unwrap_or(0);

    let follower_http = node_file(&cluster, &follower_name, "http_addr");
    let https = cluster.https("client");
    cluster.restart(&follower_name);
    let follower_pid = cluster.pids[&follower_name];
    let started = Instant::now();
    let (mut leader_peak, mut follower_peak) = (leader_idle, 0u64);
    let deadline = Instant::now()
        + if long() {
            Duration::from_secs(900)
        } else {
            BOUND
        };
    loop {
        follower_peak = follower_peak.max(common::rss_bytes(follower_pid).unwrap_or(0));
        leader_peak = leader_peak.max(common::rss_bytes(leader_pid).unwrap_or(0));
        let installed = metric(
            &https,
            &follower_http,
            "meridian_raft_snapshots_installed_total",
        )
        .await;
        if installed >= 1.0 {
            let applied = applied_on_each(&cluster).await;
            if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "follower {follower_name} did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = started.elapsed();
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "snapshot rejoin: {:.0} MB written; caught up in {:.1} s; leader RSS idle {:.0} MB peak {:.0} MB (+{:.0}); follower RSS idle {:.0} MB peak {:.0} MB (+{:.0})",
        written as f64 / 1e6,
        caught_up.as_secs_f64(),
        mb(leader_idle),
        mb(leader_peak),
        mb(leader_peak.saturating_sub(leader_idle)),
        mb(follower_idle),
        mb(follower_peak),
        mb(follower_peak.saturating_sub(follower_idle)),
    );

    cluster.stop_all();
    let base = cluster.dir.path().join("meridian-dev");
    let leader_copy = dump(&base.join(&leader_name));
    let follower_copy = dump(&base.join(&follower_name));
    assert!(leader_copy.len() >= count, "{} versions", leader_copy.len());
    let (leader_state, follower_state) = (latest(&leader_copy), latest(&follower_copy));
    assert!(
        leader_state.len() >= count * 3 / 4,
        "{} keys",
        leader_state.len()
    );
    let first_difference = leader_state
        .iter()
        .zip(&follower_state)
        .find(|(l, f)| l != f)
        .map(|(l, f)| {
            format!(
                "leader {}@{} ({} bytes), follower {}@{} ({} bytes)",
                String::from_utf8_lossy(&l.0),
                l.1,
                l.2.len(),
                String::from_utf8_lossy(&f.0),
                f.1,
                f.2.len()
            )
        });
    assert!(
        leader_state == follower_state,
        "follower state differs: {} vs {} keys; first difference: {first_difference:?}",
        leader_state.len(),
        follower_state.len()
    );
    let held: std::collections::HashSet<_> = leader_copy.iter().collect();
    let foreign = follower_copy.iter().filter(|v| !held.contains(v)).count();
    assert_eq!(
        foreign, 0,
        "the follower holds versions the leader never wrote"
    );
    println!(
        "snapshot rejoin: leader holds {} versions, follower {} (history below the snapshot is not shipped)",
        leader_copy.len(),
        follower_copy.len()
    );
}

/// A clean stop leaves everything a node applied on disk. Batches wait in
/// the journal's buffer until a sync (storage), and nothing synced after
/// the last log append: a `meridian serve` stopped by SIGTERM left a store
/// without its last applies (the Raft log still held them, so a restart
/// re-applied them, but the directory was behind what the node had
/// served; seen as a flaky digest mismatch in the snapshot rejoin test
/// above, 3 of 9 long runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_every_applied_write_on_disk() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = DevCluster::start();
    // Each node restarted by the test: its own `meridian serve` process.
    let mut names: Vec<String> = cluster.pids.keys().cloned().collect();
    names.sort();
    for name in &names {
        cluster.restart(name);
    }
    let client = Client::connect(cluster.client_config(Duration::from_secs(20)))
        .await
        .unwrap();
    for i in 0..20 {
        client
            .put(format!("config/stop/{i:02}"), format!("v{i}"))
            .await
            .unwrap();
    }
    client.close().await;
    // Every node has applied the last write (the leader applied it before
    // it answered).
    let deadline = Instant::now() + BOUND;
    loop {
        let applied = applied_on_each(&cluster).await;
        if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "nodes never agreed: {applied:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.stop_all();
    let base = cluster.dir.path().join("meridian-dev");
    for name in names {
        let state = latest(&dump(&base.join(&name)));
        let last = state.iter().find(|(k, _, _)| k == b"config/stop/19");
        assert_eq!(
            last.map(|(_, _, v)| v.as_slice()),
            Some(&b"v19"[..]),
            "{name} stopped without its last applied write on disk"
        );
    }
}
