//! Service discovery across the three regions of `meridian dev` (behind
//! the WAN emulator): instances register in their own region under a
//! lease; a lookup in any region lists its own region's instances first,
//! then the others by measured round trip (so it falls back to the nearest
//! region); a dead instance (no more keepalives) disappears everywhere
//! within its TTL plus a bound; a watch sees instances come and go; a
//! record over the limits is refused with nothing written. The time a dead
//! instance took to disappear is printed (docs/operations.md).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wan_dev::WanDev;
use meridian::client::{Client, ServiceChange};
use meridian::discovery::ServiceInstance;
use meridian::error_code::ErrorCode;

const OFFSET: u16 = 28500;
/// Every wait of this file ends by then.
const BOUND: Duration = Duration::from_secs(45);
/// A dead instance must be gone from a lookup in another region this long
/// after its TTL: the expiry pass, the delete's commit and its replication
/// across the emulated WAN, on a loaded 2-core host.
const GONE_BOUND: Duration = Duration::from_secs(5);

fn instance(name: &str, id: &str, zone: &str) -> ServiceInstance {
    ServiceInstance {
        v: 1,
        name: name.into(),
        id: id.into(),
        addrs: vec![format!("10.0.0.1:{}", 8000 + id.len())],
        meta: BTreeMap::from([("version".to_string(), "1".to_string())]),
        region: String::new(),
        zone: zone.into(),
    }
}

/// Waits (bounded) until a lookup of `name` from `client` satisfies `done`.
async fn wait_lookup(
    client: &Client,
    name: &str,
    done: impl Fn(&[ServiceInstance]) -> bool,
) -> Vec<ServiceInstance> {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Ok(found) = client.lookup_service(name, "").await {
            if done(&found) {
                return found;
            }
        }
        assert!(
            Instant::now() < deadline,
            "lookup of {name} never got there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the node `client` reaches (its home, which also serves its
/// lookups) has measured a round trip to a live member of every region:
/// lookups order regions by those measurements and put unmeasured regions
/// last, so an order asserted before gossip probed every region is a race.
async fn wait_rtts_measured(client: &Client) {
    let regions = ["us-east", "eu-west", "ap-south"];
    let deadline = Instant::now() + BOUND;
    loop {
        let members = client.members().await.unwrap_or_default();
        let unmeasured: Vec<&str> = regions
            .iter()
            .copied()
            .filter(|r| {
                !members
                    .iter()
                    .any(|m| m.region == *r && m.state == "alive" && m.rtt_us.is_some())
            })
            .collect();
        if unmeasured.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gossip never measured a round trip to {unmeasured:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(found: &[ServiceInstance]) -> Vec<String> {
    found
        .iter()
        .map(|i| format!("{}/{}", i.region, i.id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_prefer_the_local_region_then_the_nearest_and_dead_instances_disappear() {
    let dev = WanDev::start(OFFSET);
    let timeout = Duration::from_secs(15);
    let us = Arc::new(dev.client("us-east", timeout).await);
    let eu = Arc::new(dev.client("eu-west", timeout).await);
    let ap = Arc::new(dev.client("ap-south", timeout).await);
    let ttl = Duration::from_secs(3);

    // One instance of "api" per region, each kept alive by its own region.
    let _r_us = us
        .register_service(instance("api", "u1", "a"), ttl)
        .await
        .unwrap();
    let _r_eu = eu
        .register_service(instance("api", "e1", "b"), ttl)
        .await
        .unwrap();
    let r_ap = ap
        .register_service(instance("api", "p1", "c"), ttl)
        .await
        .unwrap();
    // A service that only ap-south runs: other regions fall back to it.
    let _solo = ap
        .register_service(instance("solo", "p2", "c"), ttl)
        .await
        .unwrap();

    // From eu-west: its own first, then us-east (70 ms), then ap-south (140 ms).
    wait_rtts_measured(&eu).await;
    let found = wait_lookup(&eu, "api", |f| f.len() == 3).await;
    assert_eq!(ids(&found), ["eu-west/e1", "us-east/u1", "ap-south/p1"]);
    assert_eq!(found[0].meta.get("version").map(String::as_str), Some("1"));
    // From ap-south: its own, then eu-west (140 ms), then us-east (200 ms).
    wait_rtts_measured(&ap).await;
    let found = wait_lookup(&ap, "api", |f| f.len() == 3).await;
    assert_eq!(ids(&found), ["ap-south/p1", "eu-west/e1", "us-east/u1"]);
    // From us-east, "solo" is only in ap-south: the fallback finds it.
    let found = wait_lookup(&us, "solo", |f| !f.is_empty()).await;
    assert_eq!(ids(&found), ["ap-south/p2"]);

    // A watch in us-east sees an instance arrive in eu-west and leave.
    let mut watch = us.watch_service("api", None).await.unwrap();
    let r_e2 = eu
        .register_service(instance("api", "e2", "b"), ttl)
        .await
        .unwrap();
    let up = tokio::time::timeout(BOUND, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&up, ServiceChange::Up(i) if i.id == "e2" && i.region == "eu-west"),
        "{up:?}"
    );
    r_e2.deregister().await.unwrap();
    let down = tokio::time::timeout(BOUND, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&down, ServiceChange::Down { id, region, .. } if id == "e2" && region == "eu-west"),
        "{down:?}"
    );

    // ap-south's instance dies (no more keepalives): gone from eu-west's
    // lookups within its TTL plus the bound.
    let died = Instant::now();
    r_ap.detach();
    let found = wait_lookup(&eu, "api", |f| !f.iter().any(|i| i.id == "p1")).await;
    let gone = died.elapsed();
    println!(
        "a dead instance left eu-west's lookups {gone:?} after its last keepalive (TTL {ttl:?})"
    );
    assert!(gone <= ttl + GONE_BOUND, "gone after {gone:?}");
    assert_eq!(ids(&found), ["eu-west/e1", "us-east/u1"]);

    // A record over the limits is refused; nothing is written.
    let lease = eu.lease_grant(ttl).await.unwrap();
    let mut bad = instance("api", "bad/id", "b");
    let e = eu
        .register_instance(bad.clone(), lease.id)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    bad.id = "many".into();
    bad.addrs = (0..17).map(|i| format!("10.0.0.{i}:1")).collect();
    let e = eu.register_instance(bad, lease.id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    let found = eu.lookup_service("api", "").await.unwrap();
    assert!(
        !found.iter().any(|i| i.id == "many" || i.id == "bad/id"),
        "{found:?}"
    );

    // The CLI: register in us-east (detached: its lease runs out later),
    // list from eu-west, where it shows after replication.
    let out = dev.cli(
        "us-east",
        &[
            "service",
            "register",
            "web",
            "w1",
            "10.0.0.9:80",
            "--meta",
            "v=2",
            "--ttl",
            "30",
            "--detach",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + BOUND;
    loop {
        let out = dev.cli("eu-west", &["service", "ls", "web", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            let listed: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
            let first = &listed["instances"][0];
            assert_eq!(first["region"], "us-east", "{listed}");
            assert_eq!(first["meta"]["v"], "2", "{listed}");
            break;
        }
        assert!(Instant::now() < deadline, "never listed: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = dev.cli("eu-west", &["service", "ls", "nothing-here"]);
    assert_eq!(out.status.code(), Some(1), "no instances: exit status 1");
}
