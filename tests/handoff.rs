//! A policy handoff that cannot finish, on a three-region `meridian dev`
//! of its own (nine real `meridian serve` processes behind the WAN
//! emulator): with ap-south cut off, turning a prefix strong fails with
//! `MER-3003` naming the unfinished fences and leaves the prefix taking no
//! writes (eventual reads go on); after the cut heals, repeating the same
//! change resumes the handoff, and a change back to the old policy cancels
//! another one (docs/operations.md, "handoff"; docs/consistency.md P3).

mod common;

use std::time::{Duration, Instant};

use common::wan_dev::WanDev;
use meridian::client::{Client, ClientError};
use meridian::error_code::ErrorCode;
use meridian::replication::read::ReadLevel;
use meridian::wire::{ConsistencyV1, SetPolicyV1};

/// Port offset of this file's cluster (see tests/wan_acceptance.rs for
/// the others).
const OFFSET: u16 = 18000;
/// Every wait is bounded by this.
const BOUND: Duration = Duration::from_secs(60);

fn set(prefix: &str, consistency: ConsistencyV1) -> SetPolicyV1 {
    SetPolicyV1 {
        prefix: Some(prefix.as_bytes().to_vec()),
        consistency: Some(consistency),
        home: Some("us-east".into()),
        ..SetPolicyV1::default()
    }
}

/// Sets `change` until it fails with the handoff's own error (the first
/// tries may meet a control range electing a leader after the cut).
async fn set_until_the_handoff_fails(admin: &Client, change: SetPolicyV1) -> String {
    let deadline = Instant::now() + BOUND;
    loop {
        let e = admin
            .set_policy(change.clone())
            .await
            .expect_err("a handoff with ap-south cut off cannot finish");
        let msg = e.to_string();
        if msg.contains("the handoff is not complete") {
            assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{msg}");
            return msg;
        }
        assert!(Instant::now() < deadline, "no handoff error, last: {msg}");
        println!("not the handoff's error yet: {msg}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Retries `op` (bounded) until it returns `Ok`.
async fn until_ok<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + BOUND;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                println!("{what}: {e}; again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Waits (bounded) until a put of `key` is refused as being handed off.
async fn until_writes_stop(writer: &Client, key: &str) {
    let deadline = Instant::now() + BOUND;
    loop {
        match writer.put(key, "refused").await {
            Err(e) if e.to_string().contains("being handed off") => {
                assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
                return;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "writes to {key} never stopped: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_that_cannot_finish_holds_writes_until_it_is_resumed_or_cancelled() {
    let dev = WanDev::start(OFFSET);
    let admin = dev.admin_client("us-east", Duration::from_secs(40)).await;
    let writer = dev.client("us-east", Duration::from_secs(10)).await;
    for prefix in ["stuck/", "cancel/"] {
        until_ok("eventual policy", || {
            admin.set_policy(set(prefix, ConsistencyV1::Eventual))
        })
        .await;
    }
    let key = "stuck/a";
    until_ok("eventual put", || writer.put(key, "1")).await;

    // ap-south cut off: its ranges cannot be fenced.
    dev.isolate("ap-south").await;
    let started = Instant::now();
    let msg = set_until_the_handoff_fails(&admin, set("stuck/", ConsistencyV1::Strong)).await;
    println!("handoff failed after {:?}: {msg}", started.elapsed());
    assert!(msg.contains("ap-south"), "names the region: {msg}");
    until_writes_stop(&writer, "stuck/b").await;
    // Reads below strong go on.
    let r = writer
        .get_at_level(key, ReadLevel::Eventual)
        .await
        .expect("an eventual read during the handoff");
    assert_eq!(r.kv.map(|kv| kv.value), Some(b"1".to_vec()));
    let lin = writer.get_at_level(key, ReadLevel::Linearizable).await;
    assert!(lin.is_err(), "no linearizable read yet: {lin:?}");

    // A second prefix stuck the same way, then cancelled by a change back.
    let msg = set_until_the_handoff_fails(&admin, set("cancel/", ConsistencyV1::Strong)).await;
    assert!(msg.contains("ap-south"), "{msg}");
    until_writes_stop(&writer, "cancel/x").await;
    until_ok("the change back", || {
        admin.set_policy(set("cancel/", ConsistencyV1::Eventual))
    })
    .await;
    until_ok("a put after the cancel", || writer.put("cancel/x", "2")).await;
    // Still cut off: stuck/ is still in its handoff.
    until_writes_stop(&writer, "stuck/b").await;

    // Healed: the same change resumes and completes.
    dev.heal().await;
    let changed = until_ok("the repeated change", || {
        admin.set_policy(set("stuck/", ConsistencyV1::Strong))
    })
    .await;
    let p = changed
        .policies
        .prefixes
        .iter()
        .find(|p| p.prefix == b"stuck/")
        .map(|p| p.policy.consistency);
    assert_eq!(p, Some(ConsistencyV1::Strong));
    until_ok("a strong put after the handoff", || {
        writer.put("stuck/b", "3")
    })
    .await;
    let r = until_ok("a linearizable read", || {
        writer.get_at_level(key, ReadLevel::Linearizable)
    })
    .await;
    assert_eq!(r.kv.map(|kv| kv.value), Some(b"1".to_vec()));
    writer.close().await;
    admin.close().await;
}
