//! The control range with real `meridian serve` processes (`meridian dev`,
//! one region of three nodes, every node a control voter): a policy change
//! made through one node takes effect on every node without a restart,
//! changes what reads are allowed there, survives a SIGKILL and restart
//! (the restarted node takes it from its control replica, not from its
//! config file), and bad or unsafe changes are refused with their own code
//! and change nothing. Across three regions (learners, the WAN) the same
//! path is shown by `meridian dev`'s demo, checked in tests/wan.rs.

mod common;

use std::time::{Duration, Instant};

use common::dev::DevCluster;
use meridian::client::{Client, ClientConfig, ClientError};
use meridian::error_code::ErrorCode;
use meridian::replication::read::ReadLevel;
use meridian::wire::{ConsistencyV1, PoliciesV1, SetPolicyV1};

const BOUND: Duration = Duration::from_secs(60);
const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// A client of node `name` alone, with certificate `role` (client or admin).
async fn client_of(cluster: &DevCluster, name: Option<&str>, role: &str) -> Client {
    let mut cfg: ClientConfig = cluster.client_config(Duration::from_secs(15));
    if let Some(name) = name {
        cfg.endpoints = vec![cluster.quic_addr(name).parse().unwrap()];
    }
    let certs = cluster.dir.path().join("meridian-dev/certs");
    cfg.tls.cert = certs.join(format!("{role}.pem"));
    cfg.tls.key = certs.join(format!("{role}.key"));
    Client::connect(cfg).await.unwrap()
}

fn prefix_policy<'t>(t: &'t PoliciesV1, prefix: &str) -> Option<&'t meridian::wire::PolicyV1> {
    t.prefixes
        .iter()
        .find(|p| p.prefix == prefix.as_bytes())
        .map(|p| &p.policy)
}

/// Waits (bounded) until node `name` holds `prefix` at `want`.
async fn wait_policy(cluster: &DevCluster, name: &str, prefix: &str, want: ConsistencyV1) {
    let deadline = Instant::now() + BOUND;
    loop {
        let client = client_of(cluster, Some(name), "client").await;
        let table = client.policies().await;
        client.close().await;
        if let Ok(t) = &table {
            if prefix_policy(t, prefix).map(|p| p.consistency) == Some(want) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} never held {prefix} as {want:?}: {table:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> (Option<ErrorCode>, String) {
    let e = r.expect_err("refused");
    (e.code(), e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_reach_every_node_survive_restarts_and_refuse_unsafe_changes() {
    let mut cluster = DevCluster::start();
    let admin = client_of(&cluster, None, "admin").await;

    // The range's home is this region, so a linearizable read of config/
    // is allowed while the prefix is strong (the default).
    let reader = client_of(&cluster, Some("node2"), "client").await;
    reader
        .get_at_level("config/x", ReadLevel::Linearizable)
        .await
        .expect("a strong prefix serves linearizable reads");

    // Loosen config/ to eventual through the control range (any node; it
    // forwards the change to the control leader).
    let set = SetPolicyV1 {
        prefix: Some(b"config/".to_vec()),
        consistency: Some(ConsistencyV1::Eventual),
        max_staleness_ms: Some(1_500),
        ..SetPolicyV1::default()
    };
    let changed = admin.set_policy(set).await.expect("policy set");
    assert!(changed.version >= 2, "seeded at 1: {changed:?}");
    assert_eq!(changed.epoch, 1, "a new prefix policy starts at epoch 1");
    let p = prefix_policy(&changed.policies, "config/").expect("in the returned table");
    assert_eq!(
        (p.consistency, p.max_staleness_ms),
        (ConsistencyV1::Eventual, 1_500)
    );
    for name in NODES {
        wait_policy(&cluster, name, "config/", ConsistencyV1::Eventual).await;
    }
    // It changed what node2 serves: linearizable is now above the prefix.
    let (c, msg) = code(
        reader
            .get_at_level("config/x", ReadLevel::Linearizable)
            .await,
    );
    assert_eq!(c, Some(ErrorCode::LevelNotAllowed), "{msg}");
    reader.close().await;

    // Refusals: each a clear error, and the table is unchanged after them.
    let before = admin.policies().await.unwrap();
    let mars = SetPolicyV1 {
        prefix: Some(b"new/".to_vec()),
        home: Some("mars".into()),
        ..SetPolicyV1::default()
    };
    let (c, msg) = code(admin.set_policy(mars).await);
    assert_eq!(c, Some(ErrorCode::InvalidArgument), "{msg}");
    assert!(msg.contains("unknown region `mars`"), "{msg}");
    let nested = SetPolicyV1 {
        prefix: Some(b"config/deep/".to_vec()),
        max_staleness_ms: Some(10),
        ..SetPolicyV1::default()
    };
    let (c, msg) = code(admin.set_policy(nested).await);
    assert_eq!(c, Some(ErrorCode::InvalidArgument), "{msg}");
    assert!(msg.contains("nests"), "{msg}");
    let (c, msg) = code(admin.remove_policy(b"config/").await);
    assert_eq!(
        c,
        Some(ErrorCode::PolicyRefused),
        "eventual back to the strong default needs a handoff: {msg}"
    );
    assert!(msg.contains("needs a handoff"), "{msg}");
    let (c, msg) = code(admin.remove_policy(b"absent/").await);
    assert_eq!(c, Some(ErrorCode::InvalidArgument), "{msg}");
    let plain = client_of(&cluster, None, "client").await;
    let by_client = SetPolicyV1 {
        prefix: Some(b"x/".to_vec()),
        max_staleness_ms: Some(10),
        ..SetPolicyV1::default()
    };
    let (c, msg) = code(plain.set_policy(by_client).await);
    assert_eq!(c, Some(ErrorCode::PermissionDenied), "{msg}");
    plain.close().await;
    assert_eq!(
        admin.policies().await.unwrap(),
        before,
        "refusals change nothing"
    );

    // Turning config/ strong again runs through a handoff (docs/consistency.md
    // P3): writes acknowledged while it was eventual, through every node,
    // are all read back linearizably once the change returns.
    let mut written = Vec::new();
    for (i, name) in NODES.iter().enumerate() {
        let w = client_of(&cluster, Some(name), "client").await;
        let key = format!("config/h{i}");
        w.put(&key, format!("v{i}")).await.expect("eventual put");
        written.push((key, format!("v{i}")));
        w.close().await;
    }
    let strong_again = SetPolicyV1 {
        prefix: Some(b"config/".to_vec()),
        consistency: Some(ConsistencyV1::Strong),
        ..SetPolicyV1::default()
    };
    let handed = admin
        .set_policy(strong_again)
        .await
        .expect("turning a prefix strong hands off");
    assert_eq!(handed.epoch, 2, "{handed:?}");
    assert_eq!(
        prefix_policy(&handed.policies, "config/").map(|p| p.consistency),
        Some(ConsistencyV1::Strong)
    );
    let reader = client_of(&cluster, None, "client").await;
    for (key, value) in &written {
        let deadline = Instant::now() + BOUND;
        let got = loop {
            // A node that has not applied the new table yet reads the key
            // as eventual (no error), so wait until linearizable is allowed.
            match reader.get_at_level(key, ReadLevel::Linearizable).await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    println!("linearizable read of {key} not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no linearizable read of {key}: {e}"),
            }
        };
        assert_eq!(
            got.kv.map(|kv| kv.value),
            Some(value.clone().into_bytes()),
            "{key} written while eventual"
        );
    }
    reader.close().await;

    // A strong prefix that stays strong at its home may change and go.
    let tmp = SetPolicyV1 {
        prefix: Some(b"tmp/".to_vec()),
        max_staleness_ms: Some(100),
        ..SetPolicyV1::default()
    };
    admin.set_policy(tmp).await.expect("strong stays strong");
    let removed = admin.remove_policy(b"tmp/").await.expect("removal");
    assert_eq!(removed.epoch, 0);
    assert!(prefix_policy(&removed.policies, "tmp/").is_none());

    // Over HTTP, through any node's gateway (the node forwards the change
    // to the control leader): a change, then refusals with the JSON error
    // shape and the status of their code.
    // The gateway speaks HTTPS; policy changes need an admin certificate,
    // as on QUIC: a client certificate is refused and changes nothing.
    let http = cluster.http_addr("node3").parse().unwrap();
    let https = cluster.https("admin");
    // The removal is committed at the control leader; the node the admin
    // client reads from applies it a moment later (policy tables reach
    // nodes asynchronously), so wait for it there before taking the table
    // the refusals below must leave unchanged.
    let deadline = Instant::now() + BOUND;
    let table = loop {
        let t = admin.policies().await.unwrap();
        if t == removed.policies {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the removal never reached the admin's node: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cluster
        .https("client")
        .request(
            http,
            "PUT",
            "/v1/policies/web/",
            br#"{"consistency":"causal"}"#,
        )
        .await
        .assert_error(403, "MER-2001");
    cluster
        .https("client")
        .request(http, "DELETE", "/v1/policies/config/", b"")
        .await
        .assert_error(403, "MER-2001");
    assert_eq!(
        admin.policies().await.unwrap(),
        table,
        "a refusal changes nothing"
    );
    let ok = https
        .request(
            http,
            "PUT",
            "/v1/policies/web/",
            br#"{"consistency":"causal"}"#,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let v = ok.json();
    assert!(v["version"].as_u64().unwrap() > changed.version, "{v}");
    assert_eq!(v["epoch"], 1, "{v}");
    let web = v["policies"]["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["prefix"] == "web/")
        .cloned()
        .unwrap_or_default();
    assert_eq!(web["consistency"], "causal", "{v}");
    for name in NODES {
        wait_policy(&cluster, name, "web/", ConsistencyV1::Causal).await;
    }
    let before = admin.policies().await.unwrap();
    https
        .request(http, "DELETE", "/v1/policies/web/", b"")
        .await
        .assert_error(409, "MER-1010");
    // An unknown field makes the body malformed (MER-1005), as in a
    // transaction; bad values are MER-1007.
    https
        .request(http, "PUT", "/v1/policies/web/", br#"{"colour":"red"}"#)
        .await
        .assert_error(400, "MER-1005");
    https
        .request(http, "PUT", "/v1/policies", br#"{}"#)
        .await
        .assert_error(400, "MER-1007");
    https
        .request(http, "PUT", "/v1/policies", br#"{"home":"mars"}"#)
        .await
        .assert_error(400, "MER-1007");
    https
        .request(http, "DELETE", "/v1/policies/absent/", b"")
        .await
        .assert_error(400, "MER-1007");
    assert_eq!(
        admin.policies().await.unwrap(),
        before,
        "refusals change nothing"
    );

    // A killed and restarted node takes the table from its control
    // replica: its config file has no web/ policy.
    cluster.kill9("node3");
    cluster.restart("node3");
    wait_policy(&cluster, "node3", "web/", ConsistencyV1::Causal).await;
    let toml = std::fs::read_to_string(cluster.dir.path().join("meridian-dev/node3.toml")).unwrap();
    assert!(
        !toml.contains("web/"),
        "the config file did not change:\n{toml}"
    );
    admin.close().await;
}
