//! Integration tests of the HTTP/JSON gateway against a real in-process node
//! on loopback, through a deliberately tiny HTTP/1.1 client (one request per
//! connection, `Connection: close`), so the tests see exactly the bytes a
//! curl user would.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use common::http::{parse_reply, request, Https, Reply};
use common::TestNode;

/// Bound on one HTTP exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on starting or stopping a node.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the pages a listing test follows.
const MAX_PAGES: usize = 100;

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, b"").await
}

async fn put(addr: SocketAddr, key: &str, value: &[u8]) -> Value {
    let r = request(addr, "PUT", &format!("/v1/kv/{key}"), value).await;
    assert_eq!(r.status, 200, "PUT {key}: {}", r.text());
    r.json()
}

async fn post_txn(addr: SocketAddr, body: &Value) -> Reply {
    request(addr, "POST", "/v1/txn", body.to_string().as_bytes()).await
}

async fn start() -> TestNode {
    timeout(NODE_TIMEOUT, TestNode::start())
        .await
        .expect("node start timed out")
}

/// A node with small limits, so the size tests send kilobytes, not megabytes.
async fn start_small_limits() -> TestNode {
    let node = TestNode::start_with(|cfg| {
        cfg.limits.max_value_bytes = 1024;
        cfg.limits.max_request_bytes = 4096;
    });
    timeout(NODE_TIMEOUT, node)
        .await
        .expect("node start timed out")
}

async fn stop(node: TestNode) {
    timeout(NODE_TIMEOUT, node.stop())
        .await
        .expect("node stop timed out");
}

fn u64_field(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a u64 in {v}"))
}

fn assert_served_at(v: &Value) {
    assert!(u64_field(v, "served_at") > 0, "{v}");
    assert!(
        v["served_at_str"].as_str().is_some_and(|s| s.contains('.')),
        "{v}"
    );
}

#[tokio::test]
async fn kv_put_get_delete_round_trip_with_slash_in_key() {
    let node = start().await;
    let addr = node.http_addr();

    let written = put(addr, "app/config/db", b"postgres://x").await;
    let version = u64_field(&written, "version");
    assert_eq!(u64_field(&written, "served_at"), version);
    assert_served_at(&written);

    let r = get(addr, "/v1/kv/app/config/db").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["key"], "app/config/db");
    assert_eq!(v["value"], "postgres://x");
    assert_eq!(
        v["value_b64"],
        base64::engine::general_purpose::STANDARD.encode("postgres://x")
    );
    assert_eq!(u64_field(&v, "version"), version);
    assert!(
        u64_field(&v, "served_at") >= version,
        "a read after the write must see it: {v}"
    );
    assert_served_at(&v);

    // Percent-encoded keys are decoded: "a b/c" and "a%20b%2Fc" name one key.
    put(addr, "a%20b%2Fc", b"spaced").await;
    assert_eq!(get(addr, "/v1/kv/a%20b/c").await.json()["value"], "spaced");

    let r = request(addr, "DELETE", "/v1/kv/app/config/db", b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let d = r.json();
    assert_eq!(d["existed"], true);
    assert!(u64_field(&d, "version") > version);
    assert_served_at(&d);

    get(addr, "/v1/kv/app/config/db")
        .await
        .assert_error(404, "not_found");
    let again = request(addr, "DELETE", "/v1/kv/app/config/db", b"")
        .await
        .json();
    assert_eq!(again["existed"], false);
    stop(node).await;
}

#[tokio::test]
async fn kv_binary_values_and_snapshot_reads() {
    let node = start().await;
    let addr = node.http_addr();

    let first = u64_field(&put(addr, "bin", &[0xff, 0x00, 0x80]).await, "version");
    let v = get(addr, "/v1/kv/bin").await.json();
    assert_eq!(
        v["value"],
        Value::Null,
        "non-UTF-8 values are null as strings"
    );
    assert_eq!(v["value_b64"], "/wCA");

    put(addr, "bin", b"second").await;
    assert_eq!(get(addr, "/v1/kv/bin").await.json()["value"], "second");
    // A snapshot read at the first version sees the first value, in both timestamp forms.
    let old = get(addr, &format!("/v1/kv/bin?at={first}")).await.json();
    assert_eq!(old["value_b64"], "/wCA");
    assert_eq!(u64_field(&old, "served_at"), first);
    let first_str = old["served_at_str"]
        .as_str()
        .expect("served_at_str")
        .to_owned();
    assert_eq!(
        get(addr, &format!("/v1/kv/bin?at={first_str}"))
            .await
            .json()["value_b64"],
        "/wCA"
    );

    get(addr, "/v1/kv/bin?at=yesterday")
        .await
        .assert_error(400, "MER-1007");
    get(addr, "/v1/kv/bin?bogus=1")
        .await
        .assert_error(400, "MER-1007");
    stop(node).await;
}

#[tokio::test]
async fn kv_empty_key_unknown_route_and_wrong_method() {
    let node = start().await;
    let addr = node.http_addr();
    request(addr, "PUT", "/v1/kv/", b"v")
        .await
        .assert_error(413, "MER-1001");
    get(addr, "/v1/kv/").await.assert_error(413, "MER-1001");
    get(addr, "/v1/history/")
        .await
        .assert_error(413, "MER-1001");
    get(addr, "/v2/nothing")
        .await
        .assert_error(404, "not_found");
    request(addr, "POST", "/v1/kv/k", b"v")
        .await
        .assert_error(405, "method_not_allowed");
    stop(node).await;
}

#[tokio::test]
async fn range_prefix_listing_pages_with_page_token() {
    let node = start().await;
    let addr = node.http_addr();
    let keys: Vec<String> = (0..5).map(|i| format!("list/{i}")).collect();
    for k in &keys {
        put(addr, k, k.as_bytes()).await;
    }
    put(addr, "lisu", b"outside, just after the prefix").await;
    put(addr, "lisa", b"outside, just before the prefix").await;

    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    let mut snapshot: Option<u64> = None;
    for _ in 0..MAX_PAGES {
        let mut path = "/v1/kv?prefix=list/&limit=2".to_owned();
        if let Some(at) = snapshot {
            path.push_str(&format!("&at={at}"));
        }
        if let Some(t) = &token {
            path.push_str(&format!("&page_token={t}"));
        }
        let r = get(addr, &path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        assert_served_at(&page);
        snapshot = Some(u64_field(&page, "served_at"));
        let kvs = page["kvs"].as_array().expect("kvs");
        assert!(kvs.len() <= 2, "limit honoured: {page}");
        for kv in kvs {
            let key = kv["key"].as_str().expect("key").to_owned();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(kv["key_b64"].as_str().expect("key_b64"));
            assert_eq!(raw.expect("key_b64 decodes"), key.as_bytes());
            assert_eq!(kv["value"], key.as_str());
            listed.push(key);
        }
        token = page["next_page_token"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert!(
        token.is_none(),
        "listing did not finish within {MAX_PAGES} pages"
    );
    assert_eq!(listed, keys, "every key under the prefix, in order, once");

    // start/end is half-open.
    let page = get(addr, "/v1/kv?start=list/1&end=list/3").await.json();
    let got: Vec<&str> = page["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .filter_map(|kv| kv["key"].as_str())
        .collect();
    assert_eq!(got, ["list/1", "list/2"]);

    get(addr, "/v1/kv?prefix=a&start=b")
        .await
        .assert_error(400, "MER-1007");
    get(addr, "/v1/kv?prefix=list/&page_token=***")
        .await
        .assert_error(400, "MER-1007");
    stop(node).await;
}

#[tokio::test]
async fn txn_runs_success_then_failure_branch() {
    let node = start().await;
    let addr = node.http_addr();
    let v1 = u64_field(&put(addr, "cfg", b"v1").await, "version");

    let cas = json!({
        "compares": [{"key": "cfg", "op": "equal", "value": "v1"},
                     {"key": "cfg", "op": "equal", "version": v1},
                     {"key": "cfg", "op": "equal", "exists": true}],
        "success": [{"put": {"key": "cfg", "value": "v2"}}, {"put": {"key": "audit", "value": "changed"}}],
        "failure": [{"put": {"key": "conflict", "value": "yes"}}]
    });
    let r = post_txn(addr, &cas).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["succeeded"], true, "{out}");
    assert!(u64_field(&out, "version") > v1);
    assert_served_at(&out);
    assert_eq!(get(addr, "/v1/kv/cfg").await.json()["value"], "v2");
    assert_eq!(get(addr, "/v1/kv/audit").await.json()["value"], "changed");
    get(addr, "/v1/kv/conflict")
        .await
        .assert_error(404, "not_found");

    // The same guards now fail: the failure branch runs, the success branch does not.
    let cas = json!({
        "compares": [{"key": "cfg", "op": "equal", "value": "v1"}],
        "success": [{"delete": {"key": "cfg"}}],
        "failure": [{"put": {"key": "conflict", "value": "yes"}}]
    });
    let out = post_txn(addr, &cas).await.json();
    assert_eq!(out["succeeded"], false, "{out}");
    assert_eq!(get(addr, "/v1/kv/conflict").await.json()["value"], "yes");
    assert_eq!(get(addr, "/v1/kv/cfg").await.json()["value"], "v2");
    stop(node).await;
}

#[tokio::test]
async fn txn_rejects_malformed_json_and_ambiguous_compares() {
    let node = start().await;
    let addr = node.http_addr();
    let syntax = request(addr, "POST", "/v1/txn", br#"{"compares": [ "#).await;
    syntax.assert_error(400, "MER-1005");
    assert!(syntax
        .header("content-type")
        .is_some_and(|c| c.contains("application/json")));

    let unknown = json!({"compares": [], "sucess": []});
    post_txn(addr, &unknown).await.assert_error(400, "MER-1005");

    let none = json!({"compares": [{"key": "k", "op": "equal"}], "success": [{"put": {"key": "k", "value": "x"}}]});
    let v = post_txn(addr, &none).await.assert_error(400, "MER-1007");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("compares[0]"),
        "{v}"
    );

    let several = json!({"compares": [{"key": "k", "op": "equal", "value": "x", "version": 1}],
                         "success": [{"put": {"key": "k", "value": "x"}}]});
    post_txn(addr, &several).await.assert_error(400, "MER-1007");

    // None of the refused transactions wrote anything.
    get(addr, "/v1/kv/k").await.assert_error(404, "not_found");
    stop(node).await;
}

#[tokio::test]
async fn history_lists_versions_newest_first_with_delete() {
    let node = start().await;
    let addr = node.http_addr();
    let a = u64_field(&put(addr, "h/k", b"one").await, "version");
    let b = u64_field(&put(addr, "h/k", b"two").await, "version");
    let d = request(addr, "DELETE", "/v1/kv/h/k", b"").await.json();
    let c = u64_field(&d, "version");

    let r = get(addr, "/v1/history/h/k").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = r.json();
    assert_served_at(&h);
    let entries = h["entries"].as_array().expect("entries");
    let versions: Vec<u64> = entries.iter().map(|e| u64_field(e, "version")).collect();
    assert_eq!(versions, [c, b, a], "newest first: {h}");
    assert_eq!(entries[0]["deleted"], true);
    assert_eq!(entries[0]["value"], Value::Null);
    assert_eq!(
        (&entries[1]["value"], &entries[1]["deleted"]),
        (&json!("two"), &json!(false))
    );
    assert_eq!(entries[2]["value_b64"], "b25l");

    let one = get(addr, "/v1/history/h/k?limit=1").await.json();
    assert_eq!(one["entries"].as_array().map(Vec::len), Some(1));
    stop(node).await;
}

#[tokio::test]
async fn oversized_value_is_refused_and_not_written() {
    let node = start_small_limits().await;
    let addr = node.http_addr();
    // Under the 4096-byte body limit, over the 1024-byte value limit.
    let r = request(addr, "PUT", "/v1/kv/big", &[b'x'; 1025]).await;
    r.assert_error(413, "MER-1002");
    get(addr, "/v1/kv/big").await.assert_error(404, "not_found");

    let v = json!({"success": [{"put": {"key": "big", "value": "x".repeat(1025)}}]});
    post_txn(addr, &v).await.assert_error(413, "MER-1002");
    get(addr, "/v1/kv/big").await.assert_error(404, "not_found");

    // Exactly at the limit is fine.
    put(addr, "big", &[b'x'; 1024]).await;
    stop(node).await;
}

#[tokio::test]
async fn oversized_body_is_refused_with_mer_1003() {
    let node = start_small_limits().await;
    let addr = node.http_addr();
    let r = request(addr, "PUT", "/v1/kv/huge", &[b'x'; 5000]).await;
    let v = r.assert_error(413, "MER-1003");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("4096"),
        "{v}"
    );
    get(addr, "/v1/kv/huge")
        .await
        .assert_error(404, "not_found");

    let huge_txn = json!({"success": [{"put": {"key": "huge", "value": "x".repeat(5000)}}]});
    post_txn(addr, &huge_txn)
        .await
        .assert_error(413, "MER-1003");
    get(addr, "/v1/kv/huge")
        .await
        .assert_error(404, "not_found");
    stop(node).await;
}

#[tokio::test]
async fn health_ready_status_and_metrics() {
    let node = start().await;
    let addr = node.http_addr();

    let h = get(addr, "/health").await;
    assert_eq!(h.status, 200, "{}", h.text());
    assert_eq!(h.json()["status"], "ok");
    let r = get(addr, "/ready").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ready");

    put(addr, "m", b"1").await;
    get(addr, "/v1/kv/m").await;
    get(addr, "/v1/kv/missing").await;

    let s = get(addr, "/v1/status").await.json();
    assert_eq!(s["region"].as_str().map(str::is_empty), Some(false), "{s}");
    assert!(s["node_id"].is_string() && s["zone"].is_string(), "{s}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    for field in ["approximate_keys", "gc_horizon", "closed_ts", "uptime_secs"] {
        assert!(s[field].is_u64(), "{field} in {s}");
    }
    assert!(u64_field(&s, "closed_ts") > 0);
    assert_served_at(&s);

    let m = get(addr, "/metrics").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.header("content-type"), Some("text/plain; version=0.0.4"));
    let text = m.text();
    assert!(text.contains("meridian_http_requests_total"), "{text}");
    assert!(
        text.contains(r#"op="get""#) && text.contains(r#"status="404""#),
        "{text}"
    );
    assert!(
        text.contains("meridian_http_request_duration_seconds"),
        "{text}"
    );
    stop(node).await;
}

#[tokio::test]
async fn openapi_document_lists_kv_paths() {
    let node = start().await;
    let addr = node.http_addr();
    let r = get(addr, "/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/v1/kv",
        "/v1/kv/{key}",
        "/v1/txn",
        "/v1/history/{key}",
        "/v1/status",
        "/v1/policies",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(p),
            "missing {p} in {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    assert!(paths["/v1/kv/{key}"]["put"].is_object());
    assert!(paths["/v1/kv/{key}"]["delete"].is_object());
    stop(node).await;
}

/// `[replication]` over `regions` as seen from `local`: the default and
/// `ca/` (causal) homed in the first region, `ev/` eventual there too.
fn level_policies(
    cfg: &mut meridian::config::NodeConfig,
    local: &str,
    regions: &[&str],
    key: Option<&std::path::Path>,
) {
    use meridian::replication::policy::{Consistency, Policy, PolicyTable, Replication};
    let all: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
    let policy = |consistency| Policy {
        consistency,
        home: regions[0].to_string(),
        replication: Replication::Async,
        max_staleness_ms: 5_000,
    };
    let mut table = PolicyTable::new(all.clone(), policy(Consistency::Strong)).unwrap();
    table.set(b"ev/", policy(Consistency::Eventual)).unwrap();
    table.set(b"ca/", policy(Consistency::Causal)).unwrap();
    cfg.region = local.to_string();
    cfg.replication = meridian::config::replication::ReplicationConfig {
        local_region: local.to_string(),
        regions: all,
        table,
    };
    if let Some(key) = key {
        cfg.gossip = Some(meridian::config::gossip::GossipConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            advertise_addr: None,
            seeds: vec![],
            cluster_key: key.to_path_buf(),
            timers: meridian::membership::GossipTimers::for_max_rtt(Duration::from_millis(10)),
        });
    }
}

#[tokio::test]
async fn reads_take_a_level_per_call_and_policies_are_listed() {
    let node = TestNode::start_with(|cfg| level_policies(cfg, "r1", &["r1"], None));
    let node = timeout(NODE_TIMEOUT, node).await.expect("node start");
    let addr = node.http_addr();
    put(addr, "ev/x", b"1").await;
    // Linearizable is more than an eventual prefix allows; a read that
    // names no level gets the prefix's own (eventual).
    let v = get(addr, "/v1/kv/ev/x?consistency=linearizable")
        .await
        .assert_error(400, "MER-1009");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("allowed levels: bounded, eventual"), "{m}");
    let r = get(addr, "/v1/kv/ev/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["value"], "1");
    let r = get(addr, "/v1/kv/ev/x?consistency=eventual").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["value"], "1");
    let token = v["token"].as_str().expect("token is a string").to_owned();
    assert!(token.parse::<u64>().unwrap() >= u64_field(&v, "version"));
    assert!(v["staleness_ms"].is_u64(), "{v}");
    let r = get(addr, "/v1/kv/ev/x?consistency=bounded:60000&on_stale=fail").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Without a bound: the prefix's max_staleness_ms (5000), the frontier
    // fresh from a write just before.
    put(addr, "ev/x", b"1").await;
    let r = get(addr, "/v1/kv/ev/x?consistency=bounded&on_stale=fail").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(u64_field(&r.json(), "staleness_ms") <= 5_000);
    // A session token carried between calls: read-your-writes.
    let w = put(addr, "ca/k", b"2").await;
    let path = format!(
        "/v1/kv/ca/k?consistency=causal&token={}",
        u64_field(&w, "version")
    );
    let r = get(addr, &path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["value"], "2");
    let r = get(addr, "/v1/kv?prefix=ev/&consistency=eventual").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["kvs"].as_array().unwrap().len(), 1);
    assert!(v["token"].is_string() && v["staleness_ms"].is_u64(), "{v}");
    // Bad level arguments are refused before anything is read.
    for bad in [
        "/v1/kv/ev/x?consistency=bounded:abc",
        "/v1/kv/ev/x?consistency=strong",
        "/v1/kv/ca/k?consistency=causal&token=12x",
        "/v1/kv/ev/x?token=5",
        "/v1/kv/ev/x?consistency=eventual&at=5",
    ] {
        get(addr, bad).await.assert_error(400, "MER-1007");
    }
    let r = get(addr, "/v1/policies").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["local_region"], "r1");
    assert_eq!(v["default"]["consistency"], "strong");
    assert_eq!(v["default"]["prefix"], Value::Null);
    let prefixes: Vec<&str> = v["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["ca/", "ev/"]);
    assert_eq!(v["prefixes"][1]["consistency"], "eventual");
    stop(node).await;
}

#[tokio::test]
async fn the_wrong_region_and_a_stale_region_answer_421_and_503() {
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("cluster.key");
    meridian::membership::generate_cluster_key(&key, false).unwrap();
    // A node of r2; the default policy is strong and homed in r1.
    let node = TestNode::start_with(|cfg| level_policies(cfg, "r2", &["r1", "r2"], Some(&key)));
    let node = timeout(NODE_TIMEOUT, node).await.expect("node start");
    let addr = node.http_addr();
    let r = request(addr, "PUT", "/v1/kv/s/k", b"v").await;
    let v = r.assert_error(421, "MER-3006");
    assert_eq!(v["error"]["home_region"], "r1", "{v}");
    // No node of r1 is in this node's gossip: no address to give.
    assert!(v["error"].get("address").is_none(), "{v}");
    get(addr, "/v1/kv/s/k").await.assert_error(421, "MER-3006");
    // No other region sends closed timestamps yet, so r2's frontier stays
    // at 0: a bounded read is too stale here.
    get(addr, "/v1/kv/s/k?consistency=bounded:10&on_stale=fail")
        .await
        .assert_error(503, "MER-3007");
    get(addr, "/v1/kv/s/k?consistency=bounded:10")
        .await
        .assert_error(421, "MER-3006");
    // Eventual prefixes take writes here.
    put(addr, "ev/x", b"1").await;
    stop(node).await;
}

/// Reads one response with a Content-Length body from a keep-alive connection.
async fn read_one_response(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let reply = parse_reply(&raw);
            let len: usize = reply
                .header("content-length")
                .and_then(|l| l.parse().ok())
                .expect("content-length");
            if raw.len() >= split + 4 + len {
                return reply;
            }
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed mid-response");
        raw.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn stopping_the_node_closes_keep_alive_connections() {
    let node = start().await;
    let addr = node.http_addr();
    let mut stream = timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    for _ in 0..2 {
        let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let reply = timeout(REQUEST_TIMEOUT, read_one_response(&mut stream))
            .await
            .expect("reply timed out");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    stop(node).await;
    // The idle keep-alive connection is closed by the server, not left serving.
    let mut buf = [0u8; 64];
    let read = timeout(REQUEST_TIMEOUT, stream.read(&mut buf))
        .await
        .expect("connection still open after stop");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "unexpected bytes after stop: {read:?}"
    );
}

/// Sends raw bytes (a request no HTTP library would write) and reads the
/// whole reply.
async fn raw_exchange(addr: SocketAddr, raw: Vec<u8>) -> Reply {
    timeout(REQUEST_TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&raw).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        parse_reply(&out)
    })
    .await
    .expect("reply within REQUEST_TIMEOUT")
}

/// Asserts that `key` has no live value and no history: a refused request
/// wrote nothing.
async fn assert_never_written(addr: SocketAddr, key_path: &str) {
    get(addr, &format!("/v1/kv/{key_path}"))
        .await
        .assert_error(404, "not_found");
    let history = get(addr, &format!("/v1/history/{key_path}")).await;
    assert_eq!(history.status, 200, "{}", history.text());
    assert_eq!(history.json()["entries"], json!([]), "{}", history.text());
}

/// Issue 12: positional (array) forms of a transaction, its operations or
/// its compares bypassed the named-field rule and were executed.
#[tokio::test]
async fn txn_bodies_are_objects_with_named_fields_only() {
    let node = start().await;
    let addr = node.http_addr();
    for body in [
        r#"[[],[{"put":{"key":"probe/positional","value":"x"}}],[]]"#,
        r#"{"success":[{"put":["probe/positional","x"]}]}"#,
        r#"{"compares":[["probe/positional","equal",null,null,false]],"success":[{"put":{"key":"probe/positional","value":"x"}}]}"#,
        r#"{"success":[["probe/positional","x"]]}"#,
    ] {
        let r = request(addr, "POST", "/v1/txn", body.as_bytes()).await;
        let v = r.assert_error(400, "MER-1005");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("JSON object"), "{body}: {v}");
        assert!(
            !v["error"]["remedy"].as_str().unwrap().contains("SDK"),
            "the remedy fits a JSON body: {v}"
        );
    }
    assert_never_written(addr, "probe/positional").await;
    stop(node).await;
}

/// Issue 12: an exists compare with an ordering operator ran.
#[tokio::test]
async fn exists_compares_take_equal_or_not_equal_only() {
    let node = start().await;
    let addr = node.http_addr();
    for op in ["less", "greater"] {
        let body = json!({
            "compares": [{"key": "probe/exists", "op": op, "exists": true}],
            "failure": [{"put": {"key": "probe/exists", "value": "x"}}],
        });
        let v = post_txn(addr, &body).await.assert_error(400, "MER-1007");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("equal or not_equal"),
            "{v}"
        );
    }
    let over = json!({
        "compares": [{"key": "probe/exists", "op": "equal", "version": 9_223_372_036_854_775_808u64}],
        "failure": [{"put": {"key": "probe/exists", "value": "x"}}],
    });
    post_txn(addr, &over).await.assert_error(400, "MER-1007");
    assert_never_written(addr, "probe/exists").await;
    stop(node).await;
}

/// Issue 12: `%ZZ` was stored literally (so `%ZZ` and `%25ZZ` named one
/// key), invalid UTF-8 in a query was replaced with U+FFFD, and dot
/// segments were stored though no ordinary client can name them.
#[tokio::test]
async fn percent_escapes_are_strict_and_dot_segments_refused() {
    let node = start().await;
    let addr = node.http_addr();
    for (method, path) in [
        ("PUT", "/v1/kv/probe/%ZZ"),
        ("PUT", "/v1/kv/probe/%2"),
        ("PUT", "/v1/kv/probe/%FF"),
        ("GET", "/v1/kv?prefix=probe%2F%FF"),
        ("GET", "/v1/kv/probe/x?consistency=%C3"),
    ] {
        let v = request(addr, method, path, b"x")
            .await
            .assert_error(400, "MER-1007");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("percent")
                || v["error"]["message"].as_str().unwrap().contains("UTF-8"),
            "{path}: {v}"
        );
    }
    for path in [
        "/v1/kv/probe/../x",
        "/v1/kv/probe/./x",
        "/v1/kv/probe/%2E%2E/x",
        "/v1/kv/probe/..",
    ] {
        let v = request(addr, "PUT", path, b"x")
            .await
            .assert_error(400, "MER-1007");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("segment"),
            "{path}: {v}"
        );
    }
    let dotted = json!({"success": [{"put": {"key": "probe/../x", "value": "x"}}]});
    post_txn(addr, &dotted).await.assert_error(400, "MER-1007");
    // Nothing under probe/ was written by any of them.
    let listed = get(addr, "/v1/kv?prefix=probe/").await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["kvs"], json!([]), "{}", listed.text());
    // A literal '%' is written %25 and round-trips.
    put(addr, "pct%25ZZ", b"v").await;
    assert_eq!(get(addr, "/v1/kv/pct%25ZZ").await.json()["key"], "pct%ZZ");
    stop(node).await;
}

/// Issue 12: a gzip body was stored compressed as the value.
#[tokio::test]
async fn content_encoding_is_refused_with_415() {
    let node = start().await;
    let addr = node.http_addr();
    let head = "PUT /v1/kv/probe/gz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc";
    let reply = raw_exchange(addr, head.as_bytes().to_vec()).await;
    reply.assert_error(415, "MER-1011");
    assert_never_written(addr, "probe/gz").await;
    stop(node).await;
}

/// Issue 12: hyper's own 414 and header-level 400 had empty bodies.
#[tokio::test]
async fn unparsable_requests_get_the_json_error_body() {
    let node = start().await;
    let addr = node.http_addr();
    let exchange = |raw: Vec<u8>| raw_exchange(addr, raw);
    let long = format!(
        "PUT /v1/kv/probe/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
        "a".repeat(70_000)
    );
    exchange(long.into_bytes())
        .await
        .assert_error(414, "MER-1012");
    let bad_header =
        b"PUT /v1/kv/probe/h HTTP/1.1\r\nHost: x\r\nBad Header\r\nContent-Length: 1\r\n\r\nx"
            .to_vec();
    exchange(bad_header).await.assert_error(400, "MER-1005");
    assert_never_written(addr, "probe/h").await;
    stop(node).await;
}

/// Issue 12: `at=` in milliseconds without `.logical` was read as a packed
/// value; a timestamp ahead of the clock answered 500 (MER-3002).
#[tokio::test]
async fn at_and_token_are_refused_clearly() {
    let node = start().await;
    let addr = node.http_addr();
    put(addr, "probe/at", b"v").await;
    let v = get(addr, "/v1/kv/probe/at?at=1795639112708")
        .await
        .assert_error(400, "MER-1007");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(".0"),
        "{v}"
    );
    get(addr, "/v1/kv?prefix=probe/&at=10051549251499544616")
        .await
        .assert_error(400, "MER-1007");
    get(
        addr,
        "/v1/kv/probe/at?consistency=causal&token=18446744073709551615",
    )
    .await
    .assert_error(400, "MER-1007");
    // Members answer an empty view without gossip, not an error.
    let members = get(addr, "/v1/members").await;
    assert_eq!(members.status, 200, "{}", members.text());
    assert_eq!(members.json()["members"], json!([]));
    stop(node).await;
}

/// Issue 12: a range page was bounded in entries only (10,000 entries of
/// large values made one 32 MB page). Pages end at limits.max_scan_page_bytes.
#[tokio::test]
async fn range_pages_are_bounded_in_bytes() {
    let node = TestNode::start_with(|cfg| {
        cfg.limits.max_scan_page_bytes = 64 * 1024;
    });
    let node = timeout(NODE_TIMEOUT, node).await.expect("node start");
    let addr = node.http_addr();
    let value = vec![b'v'; 20 * 1024];
    for i in 0..10 {
        put(addr, &format!("big/{i}"), &value).await;
    }
    let mut token: Option<String> = None;
    let mut seen = 0;
    for _ in 0..MAX_PAGES {
        let path = match &token {
            None => "/v1/kv?prefix=big/&limit=100".to_owned(),
            Some(t) => format!("/v1/kv?prefix=big/&limit=100&page_token={t}"),
        };
        let r = get(addr, &path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let kvs = v["kvs"].as_array().unwrap().len();
        // 64 KiB of keys and values hold three 20 KiB pairs.
        assert!(kvs <= 3, "{kvs} pairs in one page");
        seen += kvs;
        token = v["next_page_token"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, 10, "every pair is listed across pages");
    stop(node).await;
}

// ---- HTTPS and roles (issue 12, Build 4) ----

/// A node whose gateway speaks HTTPS (`server.http_tls`), and HTTPS clients
/// presenting its test CA's `client` and `admin` certificates.
async fn https_node() -> (TestNode, Https, Https) {
    let node = timeout(
        NODE_TIMEOUT,
        TestNode::start_with(|cfg| cfg.http_tls = true),
    )
    .await
    .expect("node start");
    let client = Https::with_cert(&node.certs.dir, "client");
    let admin = Https::with_cert(&node.certs.dir, "admin");
    (node, client, admin)
}

/// The key was never written: an admin reading it over HTTPS gets 404.
async fn assert_absent(admin: &Https, addr: SocketAddr, key: &str) {
    let r = admin
        .request(addr, "GET", &format!("/v1/kv/{key}"), b"")
        .await;
    assert_eq!(r.status, 404, "{key} must not exist: {}", r.text());
}

#[tokio::test]
async fn https_refuses_a_request_without_a_client_certificate() {
    let (node, client, admin) = https_node().await;
    let addr = node.http_addr();
    let anonymous = Https::new(&node.certs.dir.join("ca.pem"), None);
    for (method, path, body) in [
        ("PUT", "/v1/kv/tls/anonymous", &b"x"[..]),
        ("GET", "/v1/kv/tls/anonymous", b""),
        ("GET", "/metrics", b""),
        ("PUT", "/v1/policies/tls/", br#"{"consistency":"eventual"}"#),
    ] {
        anonymous
            .request(addr, method, path, body)
            .await
            .assert_error(401, "MER-2003");
    }
    assert_absent(&admin, addr, "tls/anonymous").await;
    // The same request with the client certificate is served.
    let r = client
        .request(addr, "PUT", "/v1/kv/tls/anonymous", b"x")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Plain HTTP to an HTTPS gateway is no request at all.
    let plain = timeout(REQUEST_TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PUT /v1/kv/tls/plain HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply).await;
        reply
    })
    .await
    .expect("the server closes a connection that does not speak TLS");
    assert!(!plain.starts_with(b"HTTP/1.1 200"), "plain HTTP was served");
    assert_absent(&admin, addr, "tls/plain").await;
    node.stop().await;
}

#[tokio::test]
async fn https_refuses_a_certificate_from_another_ca() {
    let (node, _client, admin) = https_node().await;
    let addr = node.http_addr();
    let other = tempfile::tempdir().unwrap();
    let other_certs = common::TestCerts::new(other.path());
    // Trusts the node's CA (so the server is accepted) but presents a
    // client certificate that another CA signed.
    let foreign = Https::new(
        &node.certs.dir.join("ca.pem"),
        Some((
            &other_certs.dir.join("admin.pem"),
            &other_certs.dir.join("admin.key"),
        )),
    );
    let refused = foreign
        .try_request(addr, "PUT", "/v1/kv/tls/foreign", b"x")
        .await;
    let err = match refused {
        Ok(reply) => panic!(
            "a foreign certificate was answered: {} {}",
            reply.status,
            reply.text()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("alert") || err.contains("reset") || err.contains("closed"),
        "the handshake is refused: {err}"
    );
    assert_absent(&admin, addr, "tls/foreign").await;
    node.stop().await;
}

#[tokio::test]
async fn https_client_role_is_refused_admin_routes_which_admin_passes() {
    let (node, client, admin) = https_node().await;
    let addr = node.http_addr();
    // The data API is open to a client certificate, as on QUIC.
    let r = client.request(addr, "PUT", "/v1/kv/tls/data", b"v").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = client.request(addr, "GET", "/v1/policies", b"").await;
    assert_eq!(before.status, 200, "{}", before.text());
    for (method, path, body) in [
        ("PUT", "/v1/policies", &br#"{"consistency":"eventual"}"#[..]),
        ("PUT", "/v1/policies/tls/", br#"{"consistency":"eventual"}"#),
        ("DELETE", "/v1/policies/tls/", b""),
    ] {
        let v = client
            .request(addr, method, path, body)
            .await
            .assert_error(403, "MER-2001");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("role client"), "{message}");
        // An admin certificate passes the role check: this single node has
        // no control range, so the change itself is refused with MER-1010
        // (tests/control.rs shows an admin change committing over HTTPS).
        admin
            .request(addr, method, path, body)
            .await
            .assert_error(409, "MER-1010");
    }
    let after = client.request(addr, "GET", "/v1/policies", b"").await;
    assert_eq!(after.json(), before.json(), "refusals change nothing");
    node.stop().await;
}

#[test]
fn plain_http_beyond_loopback_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[node]\ndata_dir = \"data\"\n[server]\nlisten_addr = \"127.0.0.1:0\"\nhttp_addr = \"0.0.0.0:0\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a plain gateway on 0.0.0.0 started");
    assert!(stderr.contains("server.http_tls"), "{stderr}");
    assert!(stderr.contains("server.http_insecure"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the config is valid"
    );
}

/// Issue 12: history had no byte bound (1,000 versions of 1 MiB in one
/// reply). A page now ends before its values pass
/// `limits.max_scan_page_bytes` (4 MiB), and `next_before` continues.
#[tokio::test]
async fn history_pages_are_bounded_in_bytes_and_continue_with_next_before() {
    const MIB: usize = 1024 * 1024;
    let node = timeout(NODE_TIMEOUT, TestNode::start())
        .await
        .expect("node start");
    let addr = node.http_addr();
    let mut versions = Vec::new();
    for i in 0..6u8 {
        let v = put(addr, "hist/big", &vec![b'a' + i; MIB]).await;
        versions.push(v["version"].as_u64().unwrap());
    }
    versions.reverse(); // newest first, as history lists them
    let first = get(addr, "/v1/history/hist/big").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    let page: Vec<u64> = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(page, versions[..4], "4 MiB of values: four versions");
    let next = first["next_before"].as_u64().expect("a continuation");
    assert_eq!(next, versions[3]);
    let second = get(addr, &format!("/v1/history/hist/big?before={next}")).await;
    assert_eq!(second.status, 200, "{}", second.text());
    let second = second.json();
    let rest: Vec<u64> = second["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(rest, versions[4..], "the older two");
    assert!(second["next_before"].is_null(), "{}", second["next_before"]);
    assert_eq!(second["entries"][1]["value"].as_str().unwrap().len(), MIB);
    // A malformed `before` is a 400 that names it.
    let bad = get(addr, "/v1/history/hist/big?before=soon")
        .await
        .assert_error(400, "MER-1007");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before="),
        "{bad}"
    );
    node.stop().await;
}

// ---- Leases ----------------------------------------------------------------

async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(addr, "POST", path, body.to_string().as_bytes()).await
}

/// Grants a lease of `ttl_ms` and returns its id.
async fn grant(addr: SocketAddr, ttl_ms: u64) -> u64 {
    let r = post_json(addr, "/v1/leases", &json!({ "ttl_ms": ttl_ms })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["lease"]["ttl_ms"], ttl_ms, "{v}");
    assert_served_at(&v);
    u64_field(&v["lease"], "id")
}

#[tokio::test]
async fn leases_grant_list_ttl_keepalive_attach_and_revoke() {
    let node = TestNode::start_with(|cfg| level_policies(cfg, "r1", &["r1"], None));
    let node = timeout(NODE_TIMEOUT, node).await.expect("node start");
    let addr = node.http_addr();
    let id = grant(addr, 30_000).await;
    let other = grant(addr, 30_000).await;
    assert!(other > id, "ids grow: {id} then {other}");

    let r = get(addr, &format!("/v1/leases/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let remaining = u64_field(&r.json()["lease"], "remaining_ms");
    assert!(remaining > 0 && remaining <= 30_000, "{remaining}");

    // Listing pages by id: one per page, then the rest.
    let r = get(addr, "/v1/leases?limit=1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["leases"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["leases"][0]["id"], id, "{v}");
    assert_eq!(v["next_after"], id, "{v}");
    let v = get(addr, &format!("/v1/leases?after={id}")).await.json();
    assert_eq!(v["leases"][0]["id"], other, "{v}");
    assert_eq!(v["next_after"], Value::Null, "{v}");

    // Keepalive: one, and a batch with an id that does not exist.
    let r = request(addr, "POST", &format!("/v1/leases/{id}/keepalive"), b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["lease"]["remaining_ms"], 30_000);
    let r = post_json(
        addr,
        "/v1/leases/keepalive",
        &json!({ "ids": [id, 999_999] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["leases"][0]["id"], id, "{v}");
    assert_eq!(v["leases"][0]["remaining_ms"], 30_000, "{v}");
    assert_eq!(v["leases"][1]["remaining_ms"], 0, "{v}");
    assert!(v.get("next_after").is_none(), "{v}");

    // A key attached to the lease goes with it.
    let r = request(
        addr,
        "PUT",
        &format!("/v1/kv/svc/a?lease={id}"),
        b"10.0.0.1",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(addr, "/v1/kv/svc/a").await.status, 200);
    let r = request(addr, "DELETE", &format!("/v1/leases/{id}"), b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revoked"], true);
    assert_eq!(
        get(addr, "/v1/kv/svc/a").await.status,
        404,
        "deleted with its lease"
    );
    get(addr, &format!("/v1/leases/{id}"))
        .await
        .assert_error(404, "MER-1014");
    request(addr, "POST", &format!("/v1/leases/{id}/keepalive"), b"")
        .await
        .assert_error(404, "MER-1014");
    request(addr, "DELETE", &format!("/v1/leases/{id}"), b"")
        .await
        .assert_error(404, "MER-1014");
    let listed = get(addr, "/v1/leases").await.json();
    assert_eq!(listed["leases"].as_array().unwrap().len(), 1, "{listed}");
    stop(node).await;
}

#[tokio::test]
async fn lease_bad_input_is_refused_and_changes_nothing() {
    let node = TestNode::start_with(|cfg| level_policies(cfg, "r1", &["r1"], None));
    let node = timeout(NODE_TIMEOUT, node).await.expect("node start");
    let addr = node.http_addr();
    for body in [
        json!({ "ttl_ms": 10 }),
        json!({ "ttl_ms": 2 * 86_400_000_u64 }),
    ] {
        post_json(addr, "/v1/leases", &body)
            .await
            .assert_error(400, "MER-1007");
    }
    for body in [
        &b"[5000]"[..],
        b"{\"ttl_ms\":5000,\"ttl\":1}",
        b"{}",
        b"{\"ttl_ms\":",
    ] {
        request(addr, "POST", "/v1/leases", body)
            .await
            .assert_error(400, "MER-1005");
    }
    for path in [
        "/v1/leases/0",
        "/v1/leases/abc",
        "/v1/leases/-1",
        "/v1/leases/9223372036854775808",
    ] {
        get(addr, path).await.assert_error(400, "MER-1007");
    }
    get(addr, "/v1/leases?limit=10001")
        .await
        .assert_error(400, "MER-1007");
    get(addr, "/v1/leases?page=2")
        .await
        .assert_error(400, "MER-1007");
    let ids: Vec<u64> = (1..=1_001).collect();
    for body in [
        json!({ "ids": [] }),
        json!({ "ids": ids }),
        json!({ "ids": [0] }),
    ] {
        post_json(addr, "/v1/leases/keepalive", &body)
            .await
            .assert_error(400, "MER-1007");
    }
    // Nothing was granted by any of that.
    let listed = get(addr, "/v1/leases").await.json();
    assert_eq!(listed["leases"], json!([]), "{listed}");
    // Attaching to a lease that does not exist, or on a key whose prefix is
    // not strong (ev/ is eventual here), writes nothing.
    request(addr, "PUT", "/v1/kv/cfg/x?lease=999999", b"v")
        .await
        .assert_error(404, "MER-1014");
    assert_never_written(addr, "cfg/x").await;
    let id = grant(addr, 30_000).await;
    request(addr, "PUT", &format!("/v1/kv/ev/x?lease={id}"), b"v")
        .await
        .assert_error(400, "MER-1015");
    assert_never_written(addr, "ev/x").await;
    request(addr, "PUT", "/v1/kv/cfg/x?lease=0", b"v")
        .await
        .assert_error(400, "MER-1007");
    request(addr, "PUT", "/v1/kv/cfg/x?ttl=5", b"v")
        .await
        .assert_error(400, "MER-1007");
    assert_never_written(addr, "cfg/x").await;
    stop(node).await;
}

#[tokio::test]
async fn a_key_attached_to_a_lease_that_is_not_kept_alive_expires() {
    let node = start().await;
    let addr = node.http_addr();
    let id = grant(addr, 1_000).await;
    let r = request(addr, "PUT", &format!("/v1/kv/eph/k?lease={id}"), b"v").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Bounded wait, no timing assertion: the key and the lease go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while get(addr, "/v1/kv/eph/k").await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    get(addr, &format!("/v1/leases/{id}"))
        .await
        .assert_error(404, "MER-1014");
    stop(node).await;
}

// ---- Watch -----------------------------------------------------------------

/// A watch stream being read line by line (chunked transfer decoded).
struct WatchLines {
    reader: tokio::io::BufReader<TcpStream>,
    /// Bytes of the current chunk not yet read.
    chunk_left: usize,
    pending: Vec<u8>,
}

impl WatchLines {
    /// Opens `GET path`; panics unless it answers 200 with NDJSON.
    async fn open(addr: SocketAddr, path: &str) -> WatchLines {
        use tokio::io::AsyncBufReadExt;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reader = tokio::io::BufReader::new(stream);
        let mut status = String::new();
        timeout(REQUEST_TIMEOUT, reader.read_line(&mut status))
            .await
            .unwrap()
            .unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut chunked = false;
        let mut ndjson = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            let lower = line.to_ascii_lowercase();
            chunked |= lower.starts_with("transfer-encoding: chunked");
            ndjson |= lower.starts_with("content-type: application/x-ndjson");
            if line == "\r\n" {
                break;
            }
        }
        assert!(chunked && ndjson, "a chunked NDJSON stream");
        WatchLines {
            reader,
            chunk_left: 0,
            pending: Vec::new(),
        }
    }

    /// The next line as JSON; `None` when the stream ended or `bound` passed.
    async fn next(&mut self, bound: Duration) -> Option<Value> {
        timeout(bound, self.next_line()).await.ok().flatten()
    }

    async fn next_line(&mut self) -> Option<Value> {
        use tokio::io::AsyncBufReadExt;
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("a JSON line"));
            }
            if self.chunk_left == 0 {
                let mut size = String::new();
                if self.reader.read_line(&mut size).await.ok()? == 0 {
                    return None;
                }
                if size == "\r\n" {
                    continue;
                }
                self.chunk_left = usize::from_str_radix(size.trim(), 16).ok()?;
                if self.chunk_left == 0 {
                    return None;
                }
            }
            let mut buf = vec![0u8; self.chunk_left.min(64 * 1024)];
            let n = self.reader.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            self.chunk_left -= n;
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads until `n` put/delete lines arrived (progress skipped), or an
    /// error line, or the bound; returns them and the error line if any.
    async fn changes(&mut self, n: usize, bound: Duration) -> (Vec<Value>, Option<Value>) {
        let deadline = tokio::time::Instant::now() + bound;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(v) if v["type"] == "error" => return (out, Some(v)),
                Some(v) if v["type"] == "progress" => {}
                Some(v) => out.push(v),
                None => break,
            }
        }
        (out, None)
    }
}

/// Bound of every wait for watch lines.
const WATCH_BOUND: Duration = Duration::from_secs(30);

fn change(v: &Value) -> (String, String, u64) {
    (
        v["type"].as_str().unwrap().to_owned(),
        v["key"]
            .as_str()
            .unwrap_or_else(|| panic!("no key in {v}"))
            .to_owned(),
        u64_field(v, "ts"),
    )
}

#[tokio::test]
async fn watch_streams_created_then_changes_in_order_then_progress() {
    let node = start().await;
    let addr = node.http_addr();
    put(addr, "w-other", b"x").await;
    let mut w = WatchLines::open(addr, "/v1/watch/w/?prefix=true").await;
    let created = w.next(WATCH_BOUND).await.expect("a created line");
    assert_eq!(created["type"], "created", "{created}");
    let after = u64_field(&created, "after");
    let a = u64_field(&put(addr, "w/a", b"1").await, "version");
    let b = u64_field(&put(addr, "w/b", &[0xff]).await, "version");
    put(addr, "w-other", b"not watched").await;
    let r = request(addr, "DELETE", "/v1/kv/w/a", b"").await;
    let d = u64_field(&r.json(), "version");
    assert!(after < a && a < b && b < d);
    let (got, end) = w.changes(3, WATCH_BOUND).await;
    assert!(end.is_none(), "{end:?}");
    let got: Vec<_> = got.iter().map(change).collect();
    let want = vec![
        ("put".to_owned(), "w/a".to_owned(), a),
        ("put".to_owned(), "w/b".to_owned(), b),
        ("delete".to_owned(), "w/a".to_owned(), d),
    ];
    assert_eq!(
        got, want,
        "every change under the prefix once, in HLC order"
    );
    // A value that is not UTF-8 arrives as base64 only. A progress line
    // follows the changes (every second at least).
    let mut w2 = WatchLines::open(addr, &format!("/v1/watch/w/b?from={after}")).await;
    w2.next(WATCH_BOUND).await.expect("created");
    let line = w2.next(WATCH_BOUND).await.expect("the put of w/b");
    assert_eq!(line["value"], Value::Null, "{line}");
    assert_eq!(line["value_b64"], "/w==", "{line}");
    let progress = w2.next(WATCH_BOUND).await.expect("a progress line");
    assert_eq!(progress["type"], "progress", "{progress}");
    assert!(u64_field(&progress, "frontier") >= b);
    stop(node).await;
}

#[tokio::test]
async fn a_starved_watch_ends_with_a_resume_point_and_resuming_loses_nothing() {
    let node = TestNode::start_with(|cfg| {
        cfg.limits.watch_buffer_frames = 1;
        cfg.limits.watch_stall_timeout_ms = 500;
    });
    let node = timeout(NODE_TIMEOUT, node).await.expect("node start");
    let addr = node.http_addr();
    let mut w = WatchLines::open(addr, "/v1/watch/big/?prefix=true").await;
    w.next(WATCH_BOUND).await.expect("created");
    // Far more than the kernel's socket buffers hold: 32 MiB of values,
    // about 80 MiB of JSON lines, none read meanwhile.
    let value = vec![b'x'; 512 * 1024];
    let mut written = Vec::new();
    for i in 0..64 {
        let key = format!("big/k{i:03}");
        let v = put(addr, &key, &value).await;
        written.push(("put".to_owned(), key, u64_field(&v, "version")));
    }
    // Past the 500 ms stall timeout, not reading.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (first, end) = w.changes(written.len(), Duration::from_secs(60)).await;
    let end = end.expect("a starved watch ends with an error line");
    assert_eq!(end["code"], "MER-3008", "{end}");
    let first: Vec<_> = first.iter().map(change).collect();
    assert!(first.len() < written.len(), "the consumer was not starved");
    assert_eq!(first, written[..first.len()], "what arrived is a prefix");
    let resume = u64_field(&end, "resume_from");
    assert_eq!(Some(resume), first.last().map(|c| c.2), "{end}");
    assert!(
        w.next(Duration::from_secs(2)).await.is_none(),
        "the error line is the last"
    );
    let mut again =
        WatchLines::open(addr, &format!("/v1/watch/big/?prefix=true&from={resume}")).await;
    let created = again.next(WATCH_BOUND).await.expect("created");
    assert_eq!(u64_field(&created, "after"), resume, "{created}");
    let (rest, end) = again
        .changes(written.len() - first.len(), Duration::from_secs(60))
        .await;
    assert!(end.is_none(), "{end:?}");
    let joined: Vec<_> = first.into_iter().chain(rest.iter().map(change)).collect();
    assert_eq!(
        joined, written,
        "every event exactly once across the resume"
    );
    stop(node).await;
}

#[tokio::test]
async fn stopping_the_node_ends_its_watch_streams_with_a_resume_point() {
    let node = start().await;
    let addr = node.http_addr();
    let mut w = WatchLines::open(addr, "/v1/watch/s/k").await;
    w.next(WATCH_BOUND).await.expect("created");
    let v = u64_field(&put(addr, "s/k", b"1").await, "version");
    let (got, _) = w.changes(1, WATCH_BOUND).await;
    assert_eq!(
        got.iter().map(change).collect::<Vec<_>>(),
        vec![("put".to_owned(), "s/k".to_owned(), v)]
    );
    stop(node).await;
    let deadline = tokio::time::Instant::now() + WATCH_BOUND;
    let end = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match w.next(left).await {
            Some(line) if line["type"] == "error" => break line,
            Some(_) => {}
            None => panic!("the stream ended without an error line"),
        }
    };
    assert_eq!(end["code"], "MER-3003", "{end}");
    assert!(u64_field(&end, "resume_from") >= v, "{end}");
    assert!(
        w.next(WATCH_BOUND).await.is_none(),
        "the stream ends after it"
    );
}

#[tokio::test]
async fn watch_bad_input_is_refused_before_the_stream_starts() {
    let node = start().await;
    let addr = node.http_addr();
    for bad in [
        "/v1/watch/k?from=12x.3",
        "/v1/watch/k?from=18446744073709551614",
        "/v1/watch/k?prefix=maybe",
        "/v1/watch/k?limit=1",
        "/v1/watch/a/../b",
    ] {
        get(addr, bad).await.assert_error(400, "MER-1007");
    }
    get(addr, "/v1/watch/").await.assert_error(413, "MER-1001");
    let long = "k".repeat(5_000);
    get(addr, &format!("/v1/watch/{long}"))
        .await
        .assert_error(413, "MER-1001");
    let text = get(addr, "/metrics").await.text();
    assert!(
        text.contains("meridian_watch_ended_total{reason=\"refused\"}"),
        "refusals are counted"
    );
    stop(node).await;
}

/// A JSON string field holding a decimal u64 (tokens and terms).
fn token_field(v: &Value, field: &str) -> u64 {
    v[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{field} is not a decimal string in {v}"))
}

async fn acquire(addr: SocketAddr, name: &str, body: &Value) -> Reply {
    post_json(addr, &format!("/v1/locks/{name}"), body).await
}

/// Issue 10 over HTTP: a lock's grant and queue, guarded puts, deletes and
/// transactions that only the newest token passes, and release by token or
/// by lease.
#[tokio::test]
async fn locks_grant_queue_and_fence_writes_over_http() {
    let node = start().await;
    let addr = node.http_addr();
    let (a, b) = (grant(addr, 30_000).await, grant(addr, 30_000).await);

    let r = acquire(addr, "jobs/lock", &json!({ "lease": a, "value": "a" })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["granted"], true, "{v}");
    assert_served_at(&v);
    let ta = token_field(&v, "token");
    // Held: a try is refused, a wait queues (granted false after the slice).
    acquire(addr, "jobs/lock", &json!({ "lease": b }))
        .await
        .assert_error(409, "MER-1016");
    let r = acquire(addr, "jobs/lock", &json!({ "lease": b, "wait": true })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["granted"], false, "{}", r.text());
    let holder = get(addr, "/v1/locks/jobs/lock").await.json();
    assert_eq!(holder["holder"]["lease"], a, "{holder}");
    assert_eq!(token_field(&holder["holder"], "token"), ta, "{holder}");
    assert_eq!(holder["holder"]["value"], "a", "{holder}");

    // The holder's guarded writes pass.
    let fence_a = format!("fence=jobs/lock:{ta}");
    let r = request(
        addr,
        "PUT",
        &format!("/v1/kv/jobs/reg?{fence_a}"),
        b"from-a",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Released: the waiter is next, with a larger token.
    let r = request(
        addr,
        "DELETE",
        &format!("/v1/locks/jobs/lock?token={ta}"),
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["released"], true);
    let r = acquire(addr, "jobs/lock", &json!({ "lease": b, "wait": true })).await;
    let v = r.json();
    assert_eq!(v["granted"], true, "{v}");
    let tb = token_field(&v, "token");
    assert!(tb > ta, "tokens grow: {ta} then {tb}");

    // A's token is stale now: put, delete and txn refused, nothing written.
    request(addr, "PUT", &format!("/v1/kv/jobs/reg?{fence_a}"), b"stale")
        .await
        .assert_error(409, "MER-1017");
    request(addr, "DELETE", &format!("/v1/kv/jobs/reg?{fence_a}"), b"")
        .await
        .assert_error(409, "MER-1017");
    let stale_txn = json!({
        "success": [{ "put": { "key": "jobs/reg", "value": "stale" } }],
        "fence": { "lock": "jobs/lock", "token": ta.to_string() },
    });
    post_txn(addr, &stale_txn)
        .await
        .assert_error(409, "MER-1017");
    let history = get(addr, "/v1/history/jobs/reg").await.json();
    assert_eq!(
        history["entries"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
    assert_eq!(get(addr, "/v1/kv/jobs/reg").await.json()["value"], "from-a");

    // B's token passes: txn, then a guarded delete.
    let txn = json!({
        "success": [{ "put": { "key": "jobs/reg", "value": "from-b" } }],
        "fence": { "lock": "jobs/lock", "token": tb.to_string() },
    });
    let r = post_txn(addr, &txn).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["succeeded"], true);
    assert_eq!(get(addr, "/v1/kv/jobs/reg").await.json()["value"], "from-b");
    let r = request(
        addr,
        "DELETE",
        &format!("/v1/kv/jobs/reg?fence=jobs/lock:{tb}"),
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["existed"], true);

    // Cancel by lease: B held it, so the lock is free afterwards.
    let r = request(
        addr,
        "DELETE",
        &format!("/v1/locks/jobs/lock?lease={b}"),
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["released"], true);
    let holder = get(addr, "/v1/locks/jobs/lock").await.json();
    assert_eq!(holder["holder"], Value::Null, "{holder}");
    stop(node).await;
}

/// Issue 10 over HTTP: campaign, observe the leader and its term, resign,
/// and the next candidate takes over with a larger term.
#[tokio::test]
async fn elections_campaign_observe_and_resign_over_http() {
    let node = start().await;
    let addr = node.http_addr();
    let (a, b) = (grant(addr, 30_000).await, grant(addr, 30_000).await);
    let campaign = |lease: u64, value: &str, wait: bool| json!({ "lease": lease, "value": value, "wait": wait });
    let r = post_json(
        addr,
        "/v1/elections/svc/leader",
        &campaign(a, "10.0.0.1:80", true),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["elected"], true, "{v}");
    let term_a = token_field(&v, "term");
    let leader = get(addr, "/v1/elections/svc/leader").await.json();
    assert_eq!(leader["leader"]["value"], "10.0.0.1:80", "{leader}");
    assert_eq!(token_field(&leader["leader"], "token"), term_a, "{leader}");
    post_json(
        addr,
        "/v1/elections/svc/leader",
        &campaign(b, "10.0.0.2:80", false),
    )
    .await
    .assert_error(409, "MER-1016");
    // Resigning a term that is not current changes nothing.
    request(
        addr,
        "DELETE",
        &format!("/v1/elections/svc/leader?term={}", term_a + 1),
        b"",
    )
    .await
    .assert_error(409, "MER-1017");
    let r = request(
        addr,
        "DELETE",
        &format!("/v1/elections/svc/leader?term={term_a}"),
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let leader = get(addr, "/v1/elections/svc/leader").await.json();
    assert_eq!(leader["leader"], Value::Null, "{leader}");
    let v = post_json(
        addr,
        "/v1/elections/svc/leader",
        &campaign(b, "10.0.0.2:80", true),
    )
    .await
    .json();
    assert_eq!(v["elected"], true, "{v}");
    assert!(token_field(&v, "term") > term_a, "{v}");
    stop(node).await;
}

/// Issue 10's bad input over HTTP: a lock on a non-strong prefix, an
/// unknown lease, a token from another lock, malformed bodies and fences,
/// a value over the limit: each a clear error, and nothing changed.
#[tokio::test]
async fn lock_and_fence_bad_input_is_refused_and_changes_nothing() {
    let node = TestNode::start_with(|cfg| level_policies(cfg, "r1", &["r1"], None));
    let node = timeout(NODE_TIMEOUT, node).await.expect("node start");
    let addr = node.http_addr();
    let lease = grant(addr, 30_000).await;
    acquire(addr, "ev/lock", &json!({ "lease": lease }))
        .await
        .assert_error(400, "MER-1015");
    acquire(addr, "cfg/lock", &json!({ "lease": 999_999 }))
        .await
        .assert_error(404, "MER-1014");
    acquire(addr, "cfg/lock", &json!({ "lease": 0 }))
        .await
        .assert_error(400, "MER-1007");
    let big = "x".repeat(4097);
    acquire(addr, "cfg/lock", &json!({ "lease": lease, "value": big }))
        .await
        .assert_error(413, "MER-1002");
    for body in [
        &br#"[1, true]"#[..],
        br#"{"lease": 1, "ttl": 5}"#,
        br#"{"wait": true}"#,
        br#"{"lease": "1"}"#,
    ] {
        request(addr, "POST", "/v1/locks/cfg/lock", body)
            .await
            .assert_error(400, "MER-1005");
    }
    let holder = get(addr, "/v1/locks/cfg/lock").await.json();
    assert_eq!(holder["holder"], Value::Null, "nothing acquired: {holder}");

    // A token of another lock does not pass this one.
    let v = acquire(addr, "cfg/other", &json!({ "lease": lease }))
        .await
        .json();
    let other = token_field(&v, "token");
    request(
        addr,
        "PUT",
        &format!("/v1/kv/cfg/reg?fence=cfg/lock:{other}"),
        b"v",
    )
    .await
    .assert_error(409, "MER-1017");
    for query in [
        "fence=cfg/lock".to_string(),
        "fence=cfg/lock:0".into(),
        "fence=cfg/lock:abc".into(),
        "fence=:5".into(),
        format!("fence=cfg/other:{other}&lease={lease}"),
    ] {
        request(addr, "PUT", &format!("/v1/kv/cfg/reg?{query}"), b"v")
            .await
            .assert_error(400, "MER-1007");
    }
    request(addr, "DELETE", "/v1/kv/cfg/reg?fence=cfg/lock", b"")
        .await
        .assert_error(400, "MER-1007");
    request(addr, "DELETE", "/v1/kv/cfg/reg?lease=5", b"")
        .await
        .assert_error(400, "MER-1007");
    // A fenced write outside a strong prefix.
    request(
        addr,
        "PUT",
        &format!("/v1/kv/ev/reg?fence=cfg/other:{other}"),
        b"v",
    )
    .await
    .assert_error(400, "MER-1015");
    for txn in [
        json!({ "success": [{ "put": { "key": "cfg/reg", "value": "v" } }], "fence": ["cfg/other", other.to_string()] }),
        json!({ "success": [{ "put": { "key": "cfg/reg", "value": "v" } }], "fence": { "lock": "cfg/other", "token": other } }),
        json!({ "success": [{ "put": { "key": "cfg/reg", "value": "v" } }], "fence": { "lock": "cfg/other", "token": other.to_string(), "x": 1 } }),
    ] {
        post_txn(addr, &txn).await.assert_error(400, "MER-1005");
    }
    post_txn(
        addr,
        &json!({ "success": [{ "put": { "key": "cfg/reg", "value": "v" } }], "fence": { "lock": "cfg/other", "token": "0" } }),
    )
    .await
    .assert_error(400, "MER-1007");
    assert_never_written(addr, "cfg/reg").await;
    assert_never_written(addr, "ev/reg").await;

    // Release: neither or both selectors, a bad token, a stale token.
    for query in ["", "?token=1&lease=1", "?token=x", "?token=0", "?owner=1"] {
        request(addr, "DELETE", &format!("/v1/locks/cfg/other{query}"), b"")
            .await
            .assert_error(400, "MER-1007");
    }
    request(
        addr,
        "DELETE",
        &format!("/v1/locks/cfg/other?token={}", other + 1),
        b"",
    )
    .await
    .assert_error(409, "MER-1017");
    let holder = get(addr, "/v1/locks/cfg/other").await.json();
    assert_eq!(
        token_field(&holder["holder"], "token"),
        other,
        "still held: {holder}"
    );
    request(addr, "DELETE", "/v1/elections/cfg/other", b"")
        .await
        .assert_error(400, "MER-1007");
    stop(node).await;
}

/// Issue 10 over HTTP: an instance registered under a lease is found by
/// name (zone first), and is gone once its lease is revoked; a record over
/// the limits is refused and writes nothing.
#[tokio::test]
async fn services_register_look_up_and_go_with_their_lease_over_http() {
    let node = start().await;
    let addr = node.http_addr();
    let lease = grant(addr, 30_000).await;
    let register = |id: &str, zone: &str| {
        let body = json!({
            "lease": lease,
            "addrs": [format!("10.0.0.{}:8080", id.len())],
            "meta": { "version": "1.4.2" },
            "zone": zone,
        });
        let path = format!("/v1/services/billing/{id}");
        async move { request(addr, "PUT", &path, body.to_string().as_bytes()).await }
    };
    let r = register("i-1", "z1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["key"], "services/local/billing/i-1", "{v}");
    assert_served_at(&v);
    assert_eq!(register("i-22", "z2").await.status, 200);

    let found = get(addr, "/v1/services/billing?zone=z2").await;
    assert_eq!(found.status, 200, "{}", found.text());
    let v = found.json();
    let ids: Vec<&str> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, ["i-22", "i-1"], "the caller's zone first: {v}");
    assert_eq!(v["instances"][1]["meta"]["version"], "1.4.2", "{v}");
    assert_eq!(v["instances"][1]["region"], "local", "{v}");

    // Over the limits, a bad name, an unknown lease: nothing registered.
    let addrs: Vec<String> = (0..17).map(|i| format!("h{i}:1")).collect();
    let over = json!({ "lease": lease, "addrs": addrs });
    request(
        addr,
        "PUT",
        "/v1/services/billing/i-3",
        over.to_string().as_bytes(),
    )
    .await
    .assert_error(400, "MER-1007");
    let none = json!({ "lease": lease, "addrs": [] });
    request(
        addr,
        "PUT",
        "/v1/services/billing/i-3",
        none.to_string().as_bytes(),
    )
    .await
    .assert_error(400, "MER-1007");
    let long = "n".repeat(129);
    let ok_body = json!({ "lease": lease, "addrs": ["h:1"] }).to_string();
    request(
        addr,
        "PUT",
        &format!("/v1/services/{long}/i-3"),
        ok_body.as_bytes(),
    )
    .await
    .assert_error(400, "MER-1007");
    let unknown = json!({ "lease": 999_999, "addrs": ["h:1"] }).to_string();
    request(addr, "PUT", "/v1/services/billing/i-3", unknown.as_bytes())
        .await
        .assert_error(404, "MER-1014");
    request(
        addr,
        "PUT",
        "/v1/services/billing/i-3",
        br#"{"lease":1,"addrs":["h:1"],"port":1}"#,
    )
    .await
    .assert_error(400, "MER-1005");
    get(addr, "/v1/services/billing?region=x")
        .await
        .assert_error(400, "MER-1007");
    assert_never_written(addr, "services/local/billing/i-3").await;

    // Health by lease: revoked, the instances are gone.
    let r = request(addr, "DELETE", &format!("/v1/leases/{lease}"), b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = get(addr, "/v1/services/billing").await.json();
    assert_eq!(v["instances"], json!([]), "{v}");
    stop(node).await;
}
