//! Integration tests against real nodes on loopback: the client API, bad
//! input, certificate roles, and crash durability of a `meridian serve`
//! child process killed with SIGKILL.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestNode;
use meridian::client::{Client, ClientConfig, ClientError};
use meridian::error_code::ErrorCode;
use meridian::types::{Compare, CompareOp, CompareTarget, Op, Timestamp, Txn};
use meridian::wire::{self, RequestV1, ResponseV1};

const T: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f)
        .await
        .expect("test step timed out")
}

#[tokio::test]
async fn put_get_delete_and_history_carry_timestamps() {
    let node = TestNode::start().await;
    let c = node.client().await;
    bounded(async {
        let w1 = c.put("a", "1").await.unwrap();
        let w2 = c.put("a", "2").await.unwrap();
        assert!(w2.version > w1.version, "versions must increase");
        let g = c.get("a").await.unwrap();
        let kv = g.kv.unwrap();
        assert_eq!(kv.value, b"2");
        assert_eq!(kv.version, w2.version);
        assert!(
            g.served_at >= w2.version,
            "a read after an ack is served at or after it"
        );
        // Snapshot read at the first version sees the old value.
        let old = c.get_at("a", w1.version).await.unwrap();
        assert_eq!(old.kv.unwrap().value, b"1");
        assert_eq!(old.served_at, w1.version);
        let d = c.delete("a").await.unwrap();
        assert!(d.existed);
        assert!(c.get("a").await.unwrap().kv.is_none());
        assert!(!c.delete("a").await.unwrap().existed);
        let h = c.history("a", 10).await.unwrap();
        let versions: Vec<Timestamp> = h.entries.iter().map(|e| e.version).collect();
        assert_eq!(versions, vec![d.version, w2.version, w1.version]);
        assert!(h.entries[0].value.is_none());
    })
    .await;
    c.close().await;
    node.stop().await;
}

/// One write path: a single node is a region of one voter. Its range group
/// is bootstrapped and led by itself, and every acknowledged write is an
/// entry of that group's log, applied by the state machine (the engine has
/// no writer of its own that could bypass the log).
#[tokio::test]
async fn a_single_node_is_a_one_voter_region() {
    let node = TestNode::start().await;
    let c = node.client().await;
    bounded(async {
        let before = c.region_status().await.unwrap();
        assert_eq!(before.len(), 1, "one range covers the keyspace");
        let r = &before[0];
        assert_eq!(r.voters, vec![r.node], "the node is the only voter");
        assert_eq!(r.leader, Some(r.node), "and it leads: {r:?}");
        let applied_before = r.applied_index.unwrap_or(0);
        for i in 0..5 {
            c.put(format!("k{i}"), "v").await.unwrap();
        }
        let after = c.region_status().await.unwrap();
        let applied_after = after[0].applied_index.unwrap_or(0);
        assert!(
            applied_after >= applied_before + 5,
            "each write is a log entry: applied {applied_before} -> {applied_after}"
        );
        assert!(after[0].last_log_index >= after[0].applied_index);
    })
    .await;
    c.close().await;
    node.stop().await;
}

#[tokio::test]
async fn range_pages_through_one_snapshot() {
    let node = TestNode::start().await;
    let c = node.client().await;
    bounded(async {
        for i in 0..25 {
            c.put(format!("p/{i:02}"), format!("v{i}")).await.unwrap();
        }
        c.put("q", "outside").await.unwrap();
        let first = c.range("p/", Some(b"p0"), 10, None).await.unwrap();
        assert_eq!(first.kvs.len(), 10);
        // A write after the first page must not show up in later pages.
        c.put("p/99", "late").await.unwrap();
        let mut all = first.kvs.clone();
        let mut next = first.next.clone();
        let mut pages = 1;
        while let Some(start) = next {
            let page = c
                .range(&start, Some(b"p0"), 10, Some(first.served_at))
                .await
                .unwrap();
            all.extend(page.kvs);
            next = page.next;
            pages += 1;
            assert!(pages < 10, "paging must terminate");
        }
        let keys: Vec<String> = all
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect();
        let want: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
        assert_eq!(keys, want);
        let (listed, truncated) = c.list_prefix("p/", 1000).await.unwrap();
        assert_eq!(listed.len(), 26);
        assert!(!truncated);
        let err = c.range("p/", None, 1_000_000, None).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
    })
    .await;
    c.close().await;
    node.stop().await;
}

fn put(k: &str, v: &str) -> Op {
    Op::Put {
        key: k.into(),
        value: v.into(),
    }
}

#[tokio::test]
async fn txn_compares_value_version_and_existence_atomically() {
    let node = TestNode::start().await;
    let c = node.client().await;
    bounded(async {
        let create = Txn {
            compares: vec![Compare {
                key: b"lock".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Exists(false),
            }],
            success: vec![put("lock", "me"), put("owner", "me")],
            failure: vec![put("contended", "yes")],
        };
        let r1 = c.txn(&create).await.unwrap();
        assert!(r1.succeeded);
        let r2 = c.txn(&create).await.unwrap();
        assert!(!r2.succeeded);
        assert_eq!(c.get("contended").await.unwrap().kv.unwrap().value, b"yes");
        // Both success writes share the commit version: they were one atomic write.
        let lock = c.get("lock").await.unwrap().kv.unwrap();
        let owner = c.get("owner").await.unwrap().kv.unwrap();
        assert_eq!(lock.version, r1.version);
        assert_eq!(owner.version, r1.version);
        // Compare-and-swap on version.
        let cas = |ver: Timestamp| Txn {
            compares: vec![Compare {
                key: b"lock".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(ver),
            }],
            success: vec![put("lock", "you")],
            failure: vec![],
        };
        assert!(!c.txn(&cas(Timestamp(1))).await.unwrap().succeeded);
        assert!(c.txn(&cas(lock.version)).await.unwrap().succeeded);
        // Value compare.
        let by_value = Txn {
            compares: vec![Compare {
                key: b"lock".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Value(b"you".to_vec()),
            }],
            success: vec![Op::Delete {
                key: b"lock".to_vec(),
            }],
            failure: vec![],
        };
        assert!(c.txn(&by_value).await.unwrap().succeeded);
        assert!(c.get("lock").await.unwrap().kv.is_none());
    })
    .await;
    c.close().await;
    node.stop().await;
}

#[tokio::test]
async fn concurrent_cas_increments_are_never_lost() {
    // 8 tasks x 20 compare-and-swap increments of one counter: the final
    // value must equal the number of successful swaps.
    let node = TestNode::start().await;
    let c = Arc::new(node.client().await);
    c.put("counter", "0").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0u32;
            for _ in 0..20 {
                for _attempt in 0..200 {
                    let kv = c.get("counter").await.unwrap().kv.unwrap();
                    let n: u32 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    let txn = Txn {
                        compares: vec![Compare {
                            key: b"counter".to_vec(),
                            op: CompareOp::Equal,
                            target: CompareTarget::Version(kv.version),
                        }],
                        success: vec![put("counter", &(n + 1).to_string())],
                        failure: vec![],
                    };
                    if c.txn(&txn).await.unwrap().succeeded {
                        wins += 1;
                        break;
                    }
                }
            }
            wins
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += bounded(t).await.unwrap();
    }
    assert_eq!(total, 160);
    let v = c.get("counter").await.unwrap().kv.unwrap().value;
    assert_eq!(v, b"160");
    c.close().await;
    node.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_writes_nothing() {
    let node = TestNode::start_with(|cfg| {
        cfg.limits.max_value_bytes = 1024;
        cfg.limits.max_key_bytes = 64;
        cfg.limits.max_request_bytes = 4096;
        cfg.limits.max_txn_ops = 4;
    })
    .await;
    let c = node.client().await;
    bounded(async {
        let e = c.put("k".repeat(65), "v").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::KeyTooLarge), "{e}");
        let e = c.put("big", vec![0u8; 1025]).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::ValueTooLarge), "{e}");
        assert!(
            e.to_string().contains("1025"),
            "message names the size: {e}"
        );
        let e = c.put("", "v").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::KeyTooLarge));
        let too_many = Txn {
            compares: vec![],
            success: (0..5).map(|i| put(&format!("t{i}"), "x")).collect(),
            failure: vec![],
        };
        let e = c.txn(&too_many).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::TooManyOps));
        // A txn with one oversized value writes none of its other ops.
        let mixed = Txn {
            compares: vec![],
            success: vec![put("ok1", "x"), put("ok2", &"y".repeat(2000))],
            failure: vec![],
        };
        assert_eq!(
            c.txn(&mixed).await.unwrap_err().code(),
            Some(ErrorCode::ValueTooLarge)
        );

        // Raw frames: oversized request, malformed body, unknown version, short frame.
        let huge = wire::encode_request(&RequestV1::Put {
            key: b"huge".to_vec(),
            value: vec![1; 10_000],
        });
        assert_raw_error(&c, &huge, ErrorCode::RequestTooLarge).await;
        assert_raw_error(&c, &[0, 1, 0xff, 0xff, 0xff], ErrorCode::MalformedRequest).await;
        let mut v9 = wire::encode_request(&RequestV1::Put {
            key: b"v9".to_vec(),
            value: b"x".to_vec(),
        });
        v9[1] = 9;
        assert_raw_error(&c, &v9, ErrorCode::UnsupportedVersion).await;
        assert_raw_error(&c, &[7], ErrorCode::MalformedRequest).await;

        // Nothing was written, and the node (and this connection) still serve.
        for k in ["big", "ok1", "ok2", "huge", "v9", "t0"] {
            assert!(c.get(k).await.unwrap().kv.is_none(), "{k} must not exist");
        }
        c.put("after", "fine").await.unwrap();
        assert_eq!(c.get("after").await.unwrap().kv.unwrap().value, b"fine");
        // The v1 Get frame (no consistency field) is still served, linearizably.
        let v1_get = wire::encode_request(&RequestV1::Get {
            key: b"after".to_vec(),
            at: None,
        });
        match wire::decode_response(&c.exchange(&v1_get).await.unwrap()).unwrap() {
            ResponseV1::Ok {
                body: meridian::wire::ResponseBodyV1::Value(Some(kv)),
                ..
            } => assert_eq!(kv.value, b"fine"),
            other => panic!("v1 get answered {other:?}"),
        }
    })
    .await;
    c.close().await;
    node.stop().await;
}

async fn assert_raw_error(c: &Client, frame: &[u8], want: ErrorCode) {
    let raw = c.exchange(frame).await.unwrap();
    match wire::decode_response(&raw).unwrap() {
        ResponseV1::Err { code, message } => {
            assert_eq!(ErrorCode::from_u16(code), Some(want), "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected {want}, got {other:?}"),
    }
}

#[tokio::test]
async fn peer_rpcs_need_a_node_certificate() {
    let node = TestNode::start().await;
    bounded(async {
        let client = node.client().await;
        let e = client.peer_ping().await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::PermissionDenied), "{e}");
        let admin = Client::connect(node.client_config("admin")).await.unwrap();
        assert_eq!(
            admin.peer_ping().await.unwrap_err().code(),
            Some(ErrorCode::PermissionDenied)
        );
        let peer = Client::connect(node.client_config("node1")).await.unwrap();
        assert!(peer.peer_ping().await.is_ok());
        // Data operations are open to clients.
        client.put("x", "y").await.unwrap();
        client.close().await;
        admin.close().await;
        peer.close().await;
    })
    .await;
    node.stop().await;
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused() {
    let node = TestNode::start().await;
    let other = tempfile::tempdir().unwrap();
    let other_certs = common::TestCerts::new(other.path());
    let cfg = ClientConfig {
        endpoints: vec![node.quic_addr()],
        tls: meridian::transport::TlsFiles {
            // Trust the real node's CA, but present a client cert from another CA.
            ca: node.certs.dir.join("ca.pem"),
            ..other_certs.files("client")
        },
        request_timeout: Duration::from_secs(3),
        bind: None,
    };
    let outcome = bounded(async {
        match Client::connect(cfg).await {
            Err(e) => Err(e),
            Ok(c) => c.put("intruder", "x").await.map(|_| ()),
        }
    })
    .await;
    assert!(
        outcome.is_err(),
        "a foreign certificate must not be able to write"
    );
    let c = node.client().await;
    assert!(c.get("intruder").await.unwrap().kv.is_none());
    c.close().await;
    node.stop().await;
}

#[tokio::test]
async fn data_survives_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::TestCerts::new(dir.path());
    let cfg = common::node_config(dir.path());
    let node = meridian::server::Node::start(cfg.clone()).await.unwrap();
    let client_cfg = |addr| ClientConfig {
        endpoints: vec![addr],
        tls: certs.files("client"),
        request_timeout: T,
        bind: None,
    };
    let c = Client::connect(client_cfg(node.quic_addr())).await.unwrap();
    let w = c.put("persist", "me").await.unwrap();
    c.close().await;
    node.shutdown().await;
    let node = meridian::server::Node::start(cfg).await.unwrap();
    let c = Client::connect(client_cfg(node.quic_addr())).await.unwrap();
    let g = c.get("persist").await.unwrap();
    assert_eq!(g.kv.unwrap().version, w.version);
    // The restarted clock issues timestamps above everything before the restart.
    assert!(c.put("persist", "again").await.unwrap().version > w.version);
    c.close().await;
    node.shutdown().await;
}

/// Kills the child on drop so no process outlives a failing test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(config: &std::path::Path) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

/// Waits (bounded) for the "listening" line, returning the QUIC address.
fn wait_listening(child: &mut ChildGuard) -> std::net::SocketAddr {
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("meridian node listening: quic ") {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx.recv_timeout(T).expect("server did not start in time");
    addr.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::TestCerts::new(dir.path());
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[node]\ndata_dir = \"data\"\n[server]\nlisten_addr = \"127.0.0.1:0\"\nhttp_addr = \"\"\n\
         [tls]\nca_cert = \"certs/ca.pem\"\ncert = \"certs/node1.pem\"\nkey = \"certs/node1.key\"\n\
         [storage]\nfsync = \"always\"\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let mut server = spawn_server(&config);
    let addr = wait_listening(&mut server);
    let client = Arc::new(
        Client::connect(ClientConfig {
            endpoints: vec![addr],
            tls: certs.files("client"),
            request_timeout: Duration::from_secs(5),
            bind: None,
        })
        .await
        .unwrap(),
    );
    // 16 writers; each records the keys the server acknowledged.
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let mut writers = Vec::new();
    for w in 0..16 {
        let (client, acked) = (client.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let key = format!("w{w}/{i}");
                match client.put(&key, format!("value-{w}-{i}")).await {
                    Ok(resp) => acked.lock().unwrap().push((key, resp.version)),
                    Err(_) => break, // the server died mid-request: outcome unknown
                }
                i += 1;
                if i > 100_000 {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep_until(stop_at.into()).await;
    // SIGKILL while the writers are still going.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    for w in writers {
        let _ = bounded(w).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the load must have produced acknowledged writes ({})",
        acked.len()
    );
    drop(client);

    let mut server = spawn_server(&config);
    let addr = wait_listening(&mut server);
    let c = Client::connect(ClientConfig {
        endpoints: vec![addr],
        tls: certs.files("client"),
        request_timeout: Duration::from_secs(5),
        bind: None,
    })
    .await
    .unwrap();
    for (key, version) in &acked {
        let got = bounded(c.get(key)).await.unwrap();
        let kv = got
            .kv
            .unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(kv.version, *version, "{key}");
    }
    c.close().await;
    drop(server);
}

#[tokio::test]
async fn client_reports_unreachable_endpoints_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::TestCerts::new(dir.path());
    let cfg = ClientConfig {
        endpoints: vec!["127.0.0.1:9".parse().unwrap()],
        tls: certs.files("client"),
        request_timeout: Duration::from_millis(500),
        bind: None,
    };
    match bounded(Client::connect(cfg)).await {
        Err(ClientError::Connect { endpoints, .. }) => assert!(endpoints.contains("127.0.0.1:9")),
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_collection_removes_shadowed_versions_in_the_background() {
    let node = TestNode::start_with(|cfg| {
        cfg.history_window = Duration::ZERO;
        cfg.gc_interval = Duration::from_millis(100);
    })
    .await;
    let c = node.client().await;
    let first = c.put("gc/k", "1").await.unwrap();
    c.put("gc/k", "2").await.unwrap();
    c.put("gc/gone", "x").await.unwrap();
    c.delete("gc/gone").await.unwrap();
    // A horizon is a whole millisecond (logical 0) below the range's
    // frontier, and an idle range's frontier stays at its last write: a
    // delete stamped with a logical part above 0 would stay above the
    // horizon until the range is written again (1 run in 5 failed so). One
    // later write, in a later millisecond, moves the frontier past it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.put("gc/later", "y").await.unwrap();
    // Bounded wait for a sweep to pass the writes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = c.history("gc/k", 10).await.unwrap();
        let gone = c.history("gc/gone", 10).await.unwrap();
        if h.entries.len() == 1 && gone.entries.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gc did not collect: {h:?} {gone:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.get("gc/k").await.unwrap().kv.unwrap().value, b"2");
    let e = c.get_at("gc/k", first.version).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Compacted), "{e}");
    c.close().await;
    node.stop().await;
}

#[tokio::test]
async fn gossip_view_is_served_over_quic_and_http() {
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("cluster.key");
    meridian::membership::generate_cluster_key(&key, false).unwrap();
    let node = TestNode::start_with(|cfg| {
        cfg.gossip = Some(meridian::config::gossip::GossipConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            advertise_addr: None,
            seeds: vec![],
            cluster_key: key.clone(),
            timers: meridian::membership::GossipTimers::for_max_rtt(Duration::from_millis(10)),
        });
    })
    .await;
    let c = node.client().await;
    let members = bounded(c.members()).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].node_id, "node1");
    assert_eq!(members[0].state, "alive");
    assert!(members[0].generation >= 1);
    // The same over the HTTP gateway.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(node.http_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /v1/members HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    bounded(tcp.read_to_string(&mut body)).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"state\":\"alive\""), "{body}");
    c.close().await;
    node.stop().await;
}

/// A node bound to one address and advertising another (a proxy's front, as
/// in a multi-region `meridian dev`) shows the advertised address in its
/// gossip identity and its status, and the bound one as its listen address
/// (a single node's Raft address is checked by the config's unit tests).
#[tokio::test]
async fn a_node_shows_its_advertised_address_in_gossip_and_status() {
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("cluster.key");
    meridian::membership::generate_cluster_key(&key, false).unwrap();
    let front: std::net::SocketAddr = "127.1.9.9:7999".parse().unwrap();
    let node = TestNode::start_with(|cfg| {
        cfg.advertise_addr = Some(front);
        cfg.gossip = Some(meridian::config::gossip::GossipConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            advertise_addr: Some("127.1.9.9:7998".parse().unwrap()),
            seeds: vec![],
            cluster_key: key.clone(),
            timers: meridian::membership::GossipTimers::for_max_rtt(Duration::from_millis(10)),
        });
    })
    .await;
    let bound = node.quic_addr();
    assert_eq!(node.node.as_ref().unwrap().advertised_addr(), front);
    let c = node.client().await;
    let members = bounded(c.members()).await.unwrap();
    assert_eq!(members[0].peer_addr, front.to_string());
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(node.http_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    bounded(tcp.read_to_string(&mut body)).await.unwrap();
    assert!(
        body.contains(&format!("\"quic_addr\":\"{front}\"")),
        "{body}"
    );
    assert!(
        body.contains(&format!("\"listen_addr\":\"{bound}\"")),
        "{body}"
    );
    c.close().await;
    node.stop().await;
}

/// The peer protocol admits only node certificates (checked once per
/// connection, before any stream is read), and Raft RPCs sent over the
/// client protocol are refused: peer traffic has its own dispatcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_protocol_admits_node_certificates_only() {
    use meridian::peer::{self, PeerRequestV1, PeerResponseV1, RaftKindV1};
    use meridian::transport::{self, EndpointLimits, ALPN_PEER};
    let node = TestNode::start().await;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let raft_rpc = peer::encode(&PeerRequestV1::Raft {
        range: 1,
        kind: RaftKindV1::Vote,
        payload: Vec::new(),
    });
    let ask = |conn: quinn::Connection| {
        let raft_rpc = raft_rpc.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await?;
            transport::write_frame(&mut send, &raft_rpc).await?;
            let reply = transport::read_frame(&mut recv, 1 << 20).await?;
            anyhow::Ok(peer::decode::<PeerResponseV1>(&reply)?)
        }
    };

    // A client certificate speaking the peer protocol: the connection is
    // closed without an answer.
    let files = node.certs.files("client");
    let config = common::custom_client(&files.ca, Some(&files), ALPN_PEER).unwrap();
    let conn = endpoint
        .connect_with(config, node.quic_addr(), "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), ask(conn))
        .await
        .expect("bounded");
    assert!(refused.is_err(), "a client certificate got {refused:?}");

    // A node certificate reaches the peer dispatcher, which hands the RPC to
    // range 1's group (a single node runs one, as the one voter of its
    // region) and answers that the empty payload is not a Raft message.
    let config =
        transport::peer_client_config(&node.certs.files("node1"), &EndpointLimits::default())
            .unwrap();
    let conn = transport::connect_peer(&endpoint, &config, node.quic_addr())
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), ask(conn)).await {
        Ok(Ok(PeerResponseV1::Err { code, message })) => {
            assert_eq!(code, ErrorCode::MalformedRequest.as_str(), "{message}");
            assert!(message.contains("raft payload"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // The same RPC over the client protocol, even from a node certificate,
    // is refused with a code that names the mismatch.
    // (The SDK never sends Raft RPCs: send one by hand.)
    let node_files = node.certs.files("node1");
    let client_ep = transport::client_endpoint(&node_files, &EndpointLimits::default()).unwrap();
    let conn = transport::connect(&client_ep, node.quic_addr(), None)
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let frame = wire::encode_request(&RequestV1::Raft(wire::RaftRpcV1 {
        range: 1,
        kind: wire::RaftRpcKindV1::Vote,
        payload: Vec::new(),
    }));
    transport::write_frame(&mut send, &frame).await.unwrap();
    let reply = transport::read_frame(&mut recv, 1 << 20).await.unwrap();
    match wire::decode_response(&reply).unwrap() {
        ResponseV1::Err { code, message } => {
            assert_eq!(code, ErrorCode::UnsupportedVersion.as_u16(), "{message}");
            assert!(message.contains("peer protocol"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    node.stop().await;
}

/// A key's history can outgrow one reply: the paged request (and the SDK's
/// `history`, which pages) returns every version asked for, newest first,
/// and the unpaged request of the first protocol version gets a clear
/// error instead of building an unbounded reply or a shortened list.
#[tokio::test]
async fn a_history_larger_than_one_page_comes_in_pages_and_the_unpaged_request_refuses_it() {
    const VERSIONS: usize = 12;
    let node = TestNode::start_with(|cfg| {
        cfg.limits.max_scan_page_bytes = meridian::limits::MIN_SCAN_PAGE_BYTES;
    })
    .await;
    let c = node.client().await;
    bounded(async {
        // 12 versions of 16 KiB: four fit in one 64 KiB page.
        let mut written = Vec::new();
        for i in 0..VERSIONS {
            let value = vec![b'a' + i as u8; 16 * 1024];
            written.push(c.put("big/h", value).await.unwrap().version);
        }
        written.reverse();

        let first = c.history_page("big/h", None, 0).await.unwrap();
        assert!(
            (1..VERSIONS).contains(&first.entries.len()),
            "one page holds some, not all: {}",
            first.entries.len()
        );
        let before = first.next_before.expect("older versions remain");
        assert_eq!(before, first.entries.last().unwrap().version);
        let second = c.history_page("big/h", Some(before), 0).await.unwrap();
        assert!(second.entries[0].version < before, "the next page is older");

        let all = c.history("big/h", 0).await.unwrap();
        let versions: Vec<Timestamp> = all.entries.iter().map(|e| e.version).collect();
        assert_eq!(versions, written, "every version, newest first, once");
        let five = c.history("big/h", 5).await.unwrap();
        assert_eq!(five.entries.len(), 5);

        let unpaged = wire::encode_request(&RequestV1::History {
            key: b"big/h".to_vec(),
            limit: 0,
        });
        match wire::decode_response(&c.exchange(&unpaged).await.unwrap()).unwrap() {
            ResponseV1::Err { code, message } => {
                assert_eq!(code, ErrorCode::InvalidArgument.as_u16(), "{message}");
                assert!(message.contains("HistoryPage"), "{message}");
            }
            other => panic!("an unpaged history over the page bound answered {other:?}"),
        }
        // Within one page, the unpaged request still answers.
        let small = wire::encode_request(&RequestV1::History {
            key: b"big/h".to_vec(),
            limit: 2,
        });
        match wire::decode_response(&c.exchange(&small).await.unwrap()).unwrap() {
            ResponseV1::Ok {
                body: meridian::wire::ResponseBodyV1::History(entries),
                ..
            } => assert_eq!(entries.len(), 2),
            other => panic!("a small unpaged history answered {other:?}"),
        }
    })
    .await;
    c.close().await;
    node.stop().await;
}
