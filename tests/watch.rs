//! Watch on real `meridian serve` processes (`meridian dev`): the etcd
//! watch bugs as regressions, and a watch resumed in another region
//! (docs/consistency.md, "Watch", W1-W6).
//!
//! Two clusters, each started once and used by one test function whose
//! scenarios run in sequence (nine debug-build nodes twice over would
//! crowd a 2-core machine): the three-region `meridian dev` behind the WAN
//! emulator (port offset 29000) for cross-region resume and the partition,
//! and the one-region `meridian dev` (offset 29500) with a 40 s history
//! window and a 500 ms watch stall timeout for the starved consumer,
//! compaction, the future timestamp and bad input. Every wait is bounded;
//! the harness stops every process, also on failure.

mod common;

use std::time::{Duration, Instant};

use common::wan_dev::WanDev;
use meridian::client::{Client, WatchEnd, WatchOptions, WatchStream};
use meridian::error_code::ErrorCode;
use meridian::types::Timestamp;
use meridian::watch::WatchEvent;

/// Port offset of the three-region cluster (tests/wan.rs uses
/// 20000-22000, wan_acceptance 23000-25000, catch_up 28000).
const WAN_OFFSET: u16 = 29000;
/// Port offset of the one-region cluster.
const LOCAL_OFFSET: u16 = 29500;
/// Client request timeout: generous, as nine debug-build nodes share two
/// busy cores; a write that still gets no answer is read back before it is
/// retried ([`put`]).
const REQUEST: Duration = Duration::from_secs(20);
/// Most attempts of one write whose outcome stays unknown.
const WRITE_ATTEMPTS: u32 = 3;
/// How long a write with an unknown outcome is looked for in the key's
/// history before it is taken as not applied and retried: the Raft entry
/// either commits or is discarded well within it.
const SETTLE: Duration = Duration::from_secs(10);
/// Versions of a key read back when looking for a write.
const HISTORY_LIMIT: u32 = 50;
/// Bound of every wait for events.
const BOUND: Duration = Duration::from_secs(60);
/// History window of the one-region cluster: the starved scenario's writes
/// and its resume must fit in it on a loaded CI host (the full suite runs
/// beside it), and the compaction scenario waits it out.
const HISTORY_WINDOW_SECS: u64 = 40;

/// A change as a watch reports it: key, HLC, value (`None`: a delete).
type Change = (String, u64, Option<String>);

fn change(e: &WatchEvent) -> Option<Change> {
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    match e {
        WatchEvent::Put { key, value, ts } => Some((s(key), ts.0, Some(s(value)))),
        WatchEvent::Delete { key, ts } => Some((s(key), ts.0, None)),
        WatchEvent::Progress { .. } => None,
    }
}

/// Reads changes until `n` arrived, the watch ends, or `bound` passes.
async fn read_changes(
    w: &mut WatchStream,
    n: usize,
    bound: Duration,
) -> (Vec<Change>, Option<WatchEnd>) {
    let deadline = Instant::now() + bound;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(Ok(e))) => out.extend(change(&e)),
            Ok(Some(Err(end))) => return (out, Some(end)),
            Ok(None) | Err(_) => break,
        }
    }
    (out, None)
}

/// Reads until a progress event at or above `ts` (bounded), returning
/// the changes seen meanwhile.
async fn read_until_progress(w: &mut WatchStream, ts: u64) -> Vec<Change> {
    let deadline = Instant::now() + BOUND;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(Ok(WatchEvent::Progress { frontier }))) if frontier.0 >= ts => return out,
            Ok(Some(Ok(e))) => out.extend(change(&e)),
            other => panic!("no progress past {ts}: {other:?}"),
        }
    }
}

/// The newest version of `key` newer than `since` whose value is `want`
/// (`None`: a tombstone), looked for until [`SETTLE`] passes.
async fn applied(c: &Client, key: &str, want: Option<&str>, since: u64) -> Option<u64> {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Ok(h) = c.history(key, HISTORY_LIMIT).await {
            let found = h
                .entries
                .iter()
                .find(|e| e.version.0 > since && e.value.as_deref() == want.map(str::as_bytes));
            if let Some(e) = found {
                return Some(e.version.0);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes `value` (unique in the test) at `key`. A write whose outcome is
/// unknown (a timeout on the loaded machine) is read back first and
/// retried only when it did not apply, so the watch sees each value once.
async fn put(c: &Client, key: &str, value: &str) -> Change {
    for attempt in 1..=WRITE_ATTEMPTS {
        match c.put(key, value).await {
            Ok(w) => return (key.to_string(), w.version.0, Some(value.to_string())),
            Err(e) if e.is_outcome_unknown() && attempt < WRITE_ATTEMPTS => {
                eprintln!("put {key}: {e}; reading before retrying");
                if let Some(v) = applied(c, key, Some(value), 0).await {
                    return (key.to_string(), v, Some(value.to_string()));
                }
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Deletes `key`; a change only if it existed (deleting a missing key
/// writes no tombstone, so a watch reports nothing). `since`: the key's
/// newest version the test knows of, so an unknown outcome is read back
/// as a tombstone above it (see [`put`]).
async fn del(c: &Client, key: &str, since: u64) -> Option<Change> {
    for attempt in 1..=WRITE_ATTEMPTS {
        match c.delete(key).await {
            Ok(w) => return w.existed.then(|| (key.to_string(), w.version.0, None)),
            Err(e) if e.is_outcome_unknown() && attempt < WRITE_ATTEMPTS => {
                eprintln!("delete {key}: {e}; reading before retrying");
                if let Some(v) = applied(c, key, None, since).await {
                    return Some((key.to_string(), v, None));
                }
            }
            Err(e) => panic!("delete {key}: {e}"),
        }
    }
    unreachable!("the last attempt returns or panics")
}

fn sorted(mut v: Vec<Change>) -> Vec<Change> {
    v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    v
}

fn opts(from: Option<Timestamp>) -> WatchOptions {
    WatchOptions { prefix: true, from }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_resume_in_another_region_and_never_go_back_in_time() {
    let dev = WanDev::start(WAN_OFFSET);
    let us = dev.client("us-east", REQUEST).await;
    let eu = dev.client("eu-west", REQUEST).await;
    let ap = dev.client("ap-south", REQUEST).await;
    resumed_in_another_region_sees_every_change_once(&us, &eu, &ap).await;
    partition_then_resume_never_goes_back_in_time(&dev, &us, &eu).await;
}

/// A known sequence of changes written from two regions on an eventual
/// prefix, watched in us-east, stopped midway, resumed in ap-south from the
/// last HLC: the concatenation is the whole sequence in HLC order, with no
/// duplicate and no gap.
async fn resumed_in_another_region_sees_every_change_once(us: &Client, eu: &Client, ap: &Client) {
    let prefix = "ads/watch-resume/";
    let mut a = us.watch(prefix, opts(None)).await.unwrap();
    let mut written = Vec::new();
    for i in 0..12 {
        let key = format!("{prefix}k{}", i % 4);
        let c = match i % 3 {
            0 => put(us, &key, &format!("us{i}")).await,
            1 => put(eu, &key, &format!("eu{i}")).await,
            _ => {
                let since = written
                    .iter()
                    .filter(|c: &&Change| c.0 == key)
                    .map(|c| c.1)
                    .max()
                    .unwrap_or(0);
                match del(eu, &key, since).await {
                    Some(c) => c,
                    None => continue,
                }
            }
        };
        written.push(c);
    }
    let want = sorted(written);
    let (first, end) = read_changes(&mut a, 6, BOUND).await;
    assert!(end.is_none(), "the watch ended: {end:?}");
    assert_eq!(first.len(), 6, "half the changes within the bound");
    let resume = a.resume_point();
    drop(a);
    let mut b = ap.watch(prefix, opts(Some(resume))).await.unwrap();
    let (rest, end) = read_changes(&mut b, want.len() - first.len(), BOUND).await;
    assert!(end.is_none(), "the resumed watch ended: {end:?}");
    let joined: Vec<Change> = first.into_iter().chain(rest).collect();
    assert_eq!(
        joined, want,
        "us-east then ap-south: every change once, in HLC order"
    );
    // Nothing more arrives for the prefix (no duplicate after the last).
    let (extra, _) = read_changes(&mut b, 1, Duration::from_secs(2)).await;
    assert!(extra.is_empty(), "a change repeated: {extra:?}");
}

/// etcd "watch travels back in time after a partition": a watch resumed
/// in a region cut off from the writer, whose frontier is behind the
/// resume point, must wait, and never emit an event at or below it.
///
/// The resume point is the writer's last acknowledged version. It cannot
/// come from a watch in the home region: a frontier is the lowest closed
/// timestamp over *every* region, so while eu-west is cut off no region's
/// watch gets past the partition's start (docs/consistency.md, "Watch",
/// known limits). That same watch then shows, once healed, every change
/// of the partition once and in order.
async fn partition_then_resume_never_goes_back_in_time(dev: &WanDev, us: &Client, eu: &Client) {
    // Strong (the default policy, home us-east): us-east alone writes it.
    let prefix = "watch-partition/";
    let mut home = us.watch(prefix, opts(None)).await.unwrap();
    dev.isolate("eu-west").await;
    let mut written = Vec::new();
    for i in 0..3 {
        written.push(put(us, &format!("{prefix}k{i}"), &format!("v{i}")).await);
    }
    let resume = Timestamp(written.last().unwrap().1);
    // eu-west has not seen these writes: its frontier is behind `resume`.
    let mut cut = eu.watch(prefix, opts(Some(resume))).await.unwrap();
    let (early, end) = read_changes(&mut cut, 1, Duration::from_secs(2)).await;
    assert!(end.is_none(), "{end:?}");
    assert!(
        early.is_empty(),
        "a cut-off region replayed old events: {early:?}"
    );
    let after = put(us, &format!("{prefix}k9"), "after").await;
    let last = after.1;
    written.push(after.clone());
    dev.heal().await;
    let (got, end) = read_changes(&mut cut, 1, BOUND).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(got, vec![after], "only the change after the resume point");
    assert!(got.iter().all(|c| c.1 > resume.0));
    let (seen, end) = read_changes(&mut home, written.len(), BOUND).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(seen, written, "the home watch: every change once, in order");
    read_until_progress(&mut home, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_region_starved_compacted_future_and_malformed_watches() {
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/regions/local-3.toml");
    let dev = WanDev::start_with_env(
        LOCAL_OFFSET,
        Some(std::path::Path::new(topology)),
        &[
            (
                "MERIDIAN_STORAGE__HISTORY_WINDOW_SECS",
                &HISTORY_WINDOW_SECS.to_string(),
            ),
            ("MERIDIAN_STORAGE__GC_INTERVAL_MS", "200"),
            ("MERIDIAN_LIMITS__WATCH_BUFFER_FRAMES", "1"),
            ("MERIDIAN_LIMITS__WATCH_STALL_TIMEOUT_MS", "500"),
        ],
    );
    let c = dev.client("local", REQUEST).await;
    starved_stream_ends_with_a_resume_point_and_loses_nothing(&c).await;
    delete_then_compaction_is_a_clear_error_never_a_silent_skip(&c).await;
    future_timestamp_gets_no_old_events(&c).await;
    malformed_timestamp_is_refused_and_changes_nothing(&dev, &c).await;
}

/// etcd "events lost to a starved stream": a consumer that does not read
/// gets an error naming where to resume, and resuming from it yields every
/// event exactly once.
async fn starved_stream_ends_with_a_resume_point_and_loses_nothing(c: &Client) {
    let prefix = "starved/";
    // A fresh frontier for the range (see docs/consistency.md, "Watch",
    // known limit: a frontier jump wider than the history window).
    put(c, "starved-warm", "w").await;
    let mut w = c.watch(prefix, opts(None)).await.unwrap();
    // Over three times what QUIC's stream window (1.25 MB), the one-frame
    // buffer and the frame being written hold: 8 MiB. Few enough writes
    // that the resume point stays inside the history window on a loaded
    // machine (else the resumed watch is rightly MER-1008).
    let value = "x".repeat(512 * 1024);
    let mut written = Vec::new();
    for i in 0..16 {
        written.push(put(c, &format!("{prefix}k{i:03}"), &value).await);
    }
    // Past the 500 ms stall timeout, not reading.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (first, end) = read_changes(&mut w, written.len(), BOUND).await;
    let end = end.expect("a starved watch ends with an error");
    assert_eq!(end.error.code, ErrorCode::WatchLagged, "{end}");
    assert!(end.error.message.contains("watch again from"), "{end}");
    assert!(first.len() < written.len(), "the consumer was not starved");
    assert_eq!(first, written[..first.len()], "what arrived is a prefix");
    assert_eq!(end.resume_from, w.resume_point());
    drop(w);
    let mut again = c.watch(prefix, end.resume(true)).await.unwrap();
    let (rest, end) = read_changes(&mut again, written.len() - first.len(), BOUND).await;
    assert!(end.is_none(), "{end:?}");
    let joined: Vec<Change> = first.into_iter().chain(rest).collect();
    assert_eq!(
        joined, written,
        "every event exactly once across the resume"
    );
}

/// etcd "events dropped on compaction": a watch from before the gc horizon
/// of a deleted key gets MER-1008 naming the oldest resumable timestamp,
/// never the history without the delete.
async fn delete_then_compaction_is_a_clear_error_never_a_silent_skip(c: &Client) {
    let prefix = "compacted/";
    let p = put(c, &format!("{prefix}a"), "v1").await;
    let d = del(c, &format!("{prefix}a"), p.1)
        .await
        .expect("the key existed");
    let from = Timestamp(p.1 - 1);
    let deadline = Instant::now() + Duration::from_secs(HISTORY_WINDOW_SECS) + BOUND;
    loop {
        // Moves the range's applied timestamp, so its horizon (the history
        // window below it) passes the delete; gc runs every 200 ms.
        put(c, "compacted-tick", "t").await;
        let mut w = c.watch(prefix, opts(Some(from))).await.unwrap();
        let (got, end) = read_changes(&mut w, 2, Duration::from_secs(3)).await;
        match end {
            Some(end) => {
                assert_eq!(end.error.code, ErrorCode::Compacted, "{end}");
                assert!(end.resume_from.0 > from.0, "{end}");
                assert!(
                    end.error.message.contains(&end.resume_from.to_string()),
                    "the message names where to resume: {end}"
                );
                assert!(got.is_empty(), "events before a compacted end: {got:?}");
                return;
            }
            // Not collected yet: then the history is whole, delete included.
            None => assert_eq!(got, vec![p.clone(), d.clone()], "a silent skip"),
        }
        assert!(
            Instant::now() < deadline,
            "the horizon never passed the delete"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// etcd "old events for a future revision": a watch from a future
/// timestamp emits nothing at or below it, then the changes after it.
async fn future_timestamp_gets_no_old_events(c: &Client) {
    let prefix = "future/";
    put(c, &format!("{prefix}a"), "old").await;
    put(c, "future-warm", "w").await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let future = Timestamp::from_parts(now_ms + 1500, 0).unwrap();
    let mut w = c.watch(prefix, opts(Some(future))).await.unwrap();
    assert_eq!(w.started_after(), future);
    put(c, &format!("{prefix}a"), "before-the-future").await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let later = put(c, &format!("{prefix}a"), "after").await;
    assert!(later.1 > future.0, "the clock passed the future timestamp");
    let (got, end) = read_changes(&mut w, 1, BOUND).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(got, vec![later]);
}

/// A watch from a malformed timestamp: a clear error, nothing changed;
/// and the CLI prints one JSON line per event.
async fn malformed_timestamp_is_refused_and_changes_nothing(dev: &WanDev, c: &Client) {
    let key = "future/a";
    let before = c.get(key).await.unwrap();
    let out = dev.cli("local", &["watch", key, "--from", "12x.3"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("malformed HLC timestamp"), "{stderr}");
    assert_eq!(c.get(key).await.unwrap().kv, before.kv, "nothing changed");
    // Far ahead of the clock (a unit mix-up): refused by the node.
    let err = c
        .watch(
            key,
            WatchOptions {
                prefix: false,
                from: Some(Timestamp(u64::MAX - 1)),
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ahead of this node's clock"),
        "{err}"
    );
    // The CLI from before the last write prints it as a JSON line.
    let version = before.kv.as_ref().unwrap().version.0;
    let from = (version - 1).to_string();
    let out = dev.cli(
        "local",
        &["watch", key, "--from", &from, "--count", "1", "--json"],
    );
    assert!(out.status.success(), "{out:?}");
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["type"], "put");
    assert_eq!(line["ts"], version);
    assert_eq!(line["value"], "after");
}
