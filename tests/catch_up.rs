//! Cross-region catch-up on the three-region `meridian dev` (nine real
//! `meridian serve` processes behind the WAN emulator): a region whose
//! nodes lost their range data comes back empty, with a cursor of zero, while
//! the other regions' change logs were collected long ago (a history
//! window of 2 s here): it is brought up to their state by a catch-up in
//! chunks (`replication::catch_up`), not left with a stream that cannot
//! continue.
//!
//! The rules of one chunk (merge above the cursor, deletions whose
//! tombstones the origin collected, the cursor and gc horizon after the
//! last chunk) are tested on the state machine
//! (`a_catch_up_brings_the_origins_state_and_its_collected_deletions`).

mod common;

use std::time::{Duration, Instant};

use common::wan_dev::WanDev;
use meridian::client::{Client, ClientError};
use meridian::replication::read::ReadLevel;

/// Port offset of this file's cluster (tests/wan.rs uses 20000-22000,
/// tests/wan_acceptance.rs and tests/sync.rs 23000-25000).
const OFFSET: u16 = 28000;
/// Keys under the strong prefix `payments/` (home us-east).
const PREFIX: &str = "payments/catch-up/";
/// Bound of every wait for replication.
const BOUND: Duration = Duration::from_secs(90);
/// Client request timeout.
const REQUEST: Duration = Duration::from_secs(10);

/// Every live key under [`PREFIX`] with its value, read at `level`.
async fn content(client: &Client, level: ReadLevel) -> Result<Vec<(String, String)>, ClientError> {
    let end = meridian::client::prefix_end(PREFIX.as_bytes());
    let mut start = PREFIX.as_bytes().to_vec();
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = client
            .range_at_level(&start, end.as_deref(), 500, level)
            .await?;
        out.extend(page.kvs.into_iter().map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        }));
        match page.next {
            Some(next) => start = next,
            None => return Ok(out),
        }
    }
    panic!("more than 100 pages under {PREFIX}");
}

/// Polls `region` with eventual reads until its content under [`PREFIX`]
/// is `want` (bounded); returns how long it took.
async fn wait_for_content(dev: &WanDev, region: &str, want: &[(String, String)]) -> Duration {
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    while started.elapsed() < BOUND {
        // A fresh client each round: the region's nodes restart under it.
        if let Ok(Ok(client)) =
            tokio::time::timeout(REQUEST, Client::connect(dev.client_config(region, REQUEST))).await
        {
            match content(&client, ReadLevel::Eventual).await {
                Ok(got) if got == want => {
                    client.close().await;
                    return started.elapsed();
                }
                Ok(got) => last = format!("{} keys: {got:?}", got.len()),
                Err(e) => last = e.to_string(),
            }
            client.close().await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{region} did not reach the home region's content within {BOUND:?}: want {want:?}, \
         last saw {last}\n{}",
        dev.log_tail("us-east-1", 30)
    );
}

/// A put or (`value: None`) delete at home, retried (bounded) while its
/// outcome is unknown (the nodes are busy starting; both are idempotent).
async fn write(client: &Client, key: &str, value: Option<&str>) {
    let mut last = None;
    for _ in 0..10 {
        let r = match value {
            Some(v) => client.put(key, v).await,
            None => client.delete(key).await,
        };
        match r {
            Ok(_) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("write of {key} failed 10 times: {last:?}");
}

/// Sum of a counter over the /metrics of `nodes` (0 where absent).
async fn counter(dev: &WanDev, nodes: &[&str], name: &str) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        let toml = std::fs::read_to_string(dev.dev_dir().join(format!("{node}.toml"))).unwrap();
        let http: std::net::SocketAddr = toml
            .lines()
            .find_map(|l| l.strip_prefix("http_addr = "))
            .map(|v| v.trim_matches('"').parse().unwrap())
            .expect("http_addr in the node's config");
        let reply = common::http::Https::with_cert(&dev.dev_dir().join("certs"), "client")
            .request(http, "GET", "/metrics", b"")
            .await;
        sum += String::from_utf8_lossy(&reply.body)
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_lost_its_range_data_catches_up_from_the_other_regions_state() {
    let dev = WanDev::start_with_env(
        OFFSET,
        None,
        &[
            ("MERIDIAN_STORAGE__HISTORY_WINDOW_SECS", "2"),
            ("MERIDIAN_STORAGE__GC_INTERVAL_MS", "200"),
        ],
    );
    let home = dev.client("us-east", REQUEST).await;
    // Written, some deleted and some rewritten: the deletions' tombstones
    // and the overwritten versions are collected at the origin, and so is
    // its change log, once the history window has passed.
    for i in 0..20 {
        write(&home, &format!("{PREFIX}k{i:02}"), Some("first")).await;
    }
    for i in 0..5 {
        write(&home, &format!("{PREFIX}k{i:02}"), None).await;
    }
    for i in 5..10 {
        home.put(format!("{PREFIX}k{i:02}"), "second")
            .await
            .unwrap();
    }
    let want = content(&home, ReadLevel::Linearizable).await.unwrap();
    assert_eq!(want.len(), 15);
    wait_for_content(&dev, "ap-south", &want).await;
    // Well past the history window and several gc passes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = counter(
        &dev,
        &["us-east-1", "us-east-2", "us-east-3"],
        "meridian_replication_catch_ups_total",
    )
    .await;

    for node in ["ap-south-1", "ap-south-2", "ap-south-3"] {
        dev.wipe(node);
    }
    for node in ["ap-south-1", "ap-south-2", "ap-south-3"] {
        dev.restart(node);
    }
    println!(
        "ap-south restarted empty at {:?}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    );
    let took = wait_for_content(&dev, "ap-south", &want).await;
    println!(
        "ap-south caught up {:.1} s after its nodes restarted empty",
        took.as_secs_f64()
    );
    // When the home region's leaders began each catch-up (their warnings).
    for node in ["us-east-1", "us-east-2", "us-east-3"] {
        for line in dev
            .log_tail(node, usize::MAX)
            .lines()
            .filter(|l| l.contains("catching it up"))
        {
            println!("{node}: {line}");
        }
    }
    let after = counter(
        &dev,
        &["us-east-1", "us-east-2", "us-east-3"],
        "meridian_replication_catch_ups_total",
    )
    .await;
    assert!(
        after > before,
        "the home region's streams to ap-south caught it up from the range's state \
         (catch-ups before {before}, after {after})"
    );
    // Replication continues from the catch-up's cursor as usual.
    write(&home, &format!("{PREFIX}k99"), Some("after")).await;
    let want = content(&home, ReadLevel::Linearizable).await.unwrap();
    wait_for_content(&dev, "ap-south", &want).await;
    home.close().await;
}
