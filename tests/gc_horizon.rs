//! The garbage-collection horizon is per range and follows that range's
//! applied timestamp, not the clock (docs/consistency.md G8), seen from
//! outside: `meridian dev` runs three `meridian serve` processes with a
//! two-second history window, and reads are made after the window passed.

mod common;

use std::time::{Duration, Instant};

use common::dev::DevCluster;
use meridian::client::Client;
use meridian::error_code::ErrorCode;
use meridian::types::Timestamp;

/// The history window the nodes run with.
const WINDOW: Duration = Duration::from_secs(2);
/// How often they collect.
const GC_INTERVAL: Duration = Duration::from_millis(200);
/// Bound on every wait for the region.
const BOUND: Duration = Duration::from_secs(30);

/// Retries `put` until the region has elected leaders (bounded); returns the version.
async fn put_eventually(c: &Client, key: &str, value: &str) -> Timestamp {
    let deadline = Instant::now() + BOUND;
    loop {
        match c.put(key, value).await {
            Ok(w) => return w.version,
            Err(e) => assert!(Instant::now() < deadline, "no write accepted: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ranges_stay_readable_after_the_history_window() {
    let window = WINDOW.as_secs().to_string();
    let gc = GC_INTERVAL.as_millis().to_string();
    let cluster = DevCluster::start_with_env(&[
        ("MERIDIAN_STORAGE__HISTORY_WINDOW_SECS", &window),
        ("MERIDIAN_STORAGE__GC_INTERVAL_MS", &gc),
    ]);
    let c = Client::connect(cluster.client_config(Duration::from_secs(10)))
        .await
        .unwrap();
    let version = put_eventually(&c, "config/idle", "kept").await;
    // Longer than the window plus several collection passes: a horizon that
    // followed the clock would now be above the write.
    tokio::time::sleep(WINDOW + 5 * GC_INTERVAL).await;

    let got = c.get("config/idle").await.unwrap();
    let kv = got.kv.expect("the latest value of an idle range");
    assert_eq!(kv.value, b"kept");
    assert_eq!(kv.version, version);
    assert!(got.served_at >= version);

    // `locks/` was never written: its key is simply absent.
    let never = c.get("locks/never-written").await.unwrap();
    assert!(never.kv.is_none());

    // A snapshot older than the window, measured from the range's latest
    // write, still gets the clear error.
    let old_ms = version.physical_unix_ms() - WINDOW.as_millis() as i64 - 1_000;
    let old = Timestamp::from_parts(old_ms, 0).unwrap();
    let e = c.get_at("config/idle", old).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Compacted), "{e}");
    c.close().await;
    drop(cluster);
}
