//! The `meridian` binary as a user runs it: `dev --demo-only`, the `kv`
//! commands against an in-process node, with flags and with environment,
//! and against `meridian dev` clusters (real `meridian serve` processes)
//! with a dead endpoint, an oversized value and a lost quorum.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::dev::DevCluster;
use common::TestNode;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// Runs the CLI with a hard time limit, returning its output.
fn run(args: &[&str], envs: &[(&str, String)], stdin: Option<&[u8]>) -> Output {
    run_in(None, args, envs, stdin)
}

/// Runs the CLI in `dir` (or here) with a hard time limit, returning its output.
fn run_in(
    dir: Option<&std::path::Path>,
    args: &[&str],
    envs: &[(&str, String)],
    stdin: Option<&[u8]>,
) -> Output {
    let mut cmd = Command::new(BIN);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    // Bounded wait: poll, then kill.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("meridian {args:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn env_for(node: &TestNode) -> Vec<(&'static str, String)> {
    let files = node.certs.files("client");
    vec![
        ("MERIDIAN_ENDPOINTS", node.quic_addr().to_string()),
        ("MERIDIAN_CA", files.ca.display().to_string()),
        ("MERIDIAN_CERT", files.cert.display().to_string()),
        ("MERIDIAN_KEY", files.key.display().to_string()),
    ]
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_commands_round_trip_through_the_binary() {
    let node = TestNode::start().await;
    let env = env_for(&node);
    let e = env.clone();
    tokio::task::spawn_blocking(move || {
        let put = run(&["kv", "put", "cfg/a", "one"], &e, None);
        assert!(put.status.success(), "{put:?}");
        assert!(stdout(&put).starts_with("OK "));
        let put_stdin = run(&["kv", "put", "cfg/b"], &e, Some(b"from stdin"));
        assert!(put_stdin.status.success(), "{put_stdin:?}");
        let get = run(&["kv", "get", "cfg/b"], &e, None);
        assert_eq!(stdout(&get), "from stdin\n");
        let json = run(&["kv", "get", "cfg/a", "--json"], &e, None);
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(v["value"], "one");
        assert!(v["served_at"].as_u64().unwrap() >= v["version"].as_u64().unwrap());
        let ls = run(&["kv", "ls", "cfg/", "--json"], &e, None);
        let v: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
        assert_eq!(v["kvs"].as_array().unwrap().len(), 2);
        let txn = b"value(\"cfg/a\") = \"one\"\n\nput cfg/a two\n\nput cfg/failed yes\n";
        let t = run(&["kv", "txn"], &e, Some(txn));
        assert_eq!(stdout(&t).trim(), "SUCCESS", "{t:?}");
        let t = run(&["kv", "txn"], &e, Some(txn));
        assert_eq!(stdout(&t).trim(), "FAILURE");
        assert_eq!(
            stdout(&run(&["kv", "get", "cfg/failed"], &e, None)),
            "yes\n"
        );
        let del = run(&["kv", "del", "cfg/a"], &e, None);
        assert_eq!(stdout(&del).trim(), "1");
        let missing = run(&["kv", "get", "cfg/a"], &e, None);
        assert_eq!(missing.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
        let hist = run(&["kv", "history", "cfg/a"], &e, None);
        assert!(stdout(&hist).contains("(deleted)"));
        assert!(stdout(&hist).contains("two"));
    })
    .await
    .unwrap();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_go_to_stderr_with_a_code_and_nonzero_status() {
    let node = TestNode::start_with(|cfg| cfg.limits.max_value_bytes = 10).await;
    let env = env_for(&node);
    tokio::task::spawn_blocking(move || {
        let big = run(&["kv", "put", "k", "this value is too long"], &env, None);
        assert!(!big.status.success());
        let err = String::from_utf8_lossy(&big.stderr);
        assert!(err.contains("MER-1002"), "{err}");
        assert!(big.stdout.is_empty());
        // Flags override the environment: a wrong endpoint fails clearly.
        let unreachable = run(
            &[
                "kv",
                "get",
                "k",
                "--endpoints",
                "127.0.0.1:9",
                "--timeout-ms",
                "500",
            ],
            &env,
            None,
        );
        assert!(!unreachable.status.success());
        assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot connect"));
        let bad_txn = run(&["kv", "txn"], &env, Some(b"frob(\"k\") = 1\n"));
        assert!(!bad_txn.status.success());
        assert!(String::from_utf8_lossy(&bad_txn.stderr).contains("line 1"));
        let bad_cfg = run(
            &["serve", "--config", "/nonexistent/meridian.toml"],
            &[],
            None,
        );
        assert!(!bad_cfg.status.success());
        assert!(String::from_utf8_lossy(&bad_cfg.stderr).contains("does not exist"));
    })
    .await
    .unwrap();
    node.stop().await;
}

/// A single-region node (`r1`) with prefix policies: `ev/` eventual and
/// `ca/` causal, the default strong.
async fn node_with_policies() -> TestNode {
    use meridian::replication::policy::{Consistency, Policy, PolicyTable, Replication};
    TestNode::start_with(|cfg| {
        let policy = |consistency| Policy {
            consistency,
            home: "r1".to_string(),
            replication: Replication::Async,
            max_staleness_ms: 5_000,
        };
        let mut table = PolicyTable::new(vec!["r1".into()], policy(Consistency::Strong)).unwrap();
        table.set(b"ev/", policy(Consistency::Eventual)).unwrap();
        table.set(b"ca/", policy(Consistency::Causal)).unwrap();
        cfg.region = "r1".into();
        cfg.replication = meridian::config::replication::ReplicationConfig {
            local_region: "r1".into(),
            regions: vec!["r1".into()],
            table,
        };
    })
    .await
}

fn json_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_read_levels_and_policies_through_the_binary() {
    let node = node_with_policies().await;
    let env = env_for(&node);
    tokio::task::spawn_blocking(move || {
        assert!(run(&["kv", "put", "ev/x", "1"], &env, None)
            .status
            .success());
        let w = json_of(&run(&["kv", "put", "ca/k", "2", "--json"], &env, None));
        // A write's token is a string (safe for JSON tools) equal to its version.
        assert_eq!(w["token"], w["version"].as_u64().unwrap().to_string());
        // No level asked: the prefix's own (eventual), served.
        let plain = run(&["kv", "get", "ev/x"], &env, None);
        assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "1");
        let listed = run(&["kv", "ls", "ev/"], &env, None);
        assert!(listed.status.success(), "{listed:?}");
        // Linearizable is more than an eventual prefix allows.
        let refused = run(
            &["kv", "get", "ev/x", "--consistency", "linearizable"],
            &env,
            None,
        );
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains("MER-1009") && err.contains("bounded, eventual"),
            "{err}"
        );
        let ev = json_of(&run(
            &["kv", "get", "ev/x", "--consistency", "eventual", "--json"],
            &env,
            None,
        ));
        assert_eq!(ev["value"], "1");
        assert!(
            ev["served_at"].is_u64() && ev["staleness_ms"].is_u64(),
            "{ev}"
        );
        // The token a script carries: a string, passed back with --token.
        let token = w["version"].as_u64().unwrap().to_string();
        let causal = json_of(&run(
            &[
                "kv",
                "get",
                "ca/k",
                "--consistency",
                "causal",
                "--token",
                &token,
                "--json",
            ],
            &env,
            None,
        ));
        assert_eq!(causal["value"], "2");
        let next: u64 = causal["token"].as_str().unwrap().parse().unwrap();
        assert!(next >= w["version"].as_u64().unwrap());
        let bounded = run(
            &[
                "kv",
                "get",
                "ev/x",
                "--consistency",
                "bounded:60000",
                "--on-stale",
                "fail",
            ],
            &env,
            None,
        );
        assert_eq!(String::from_utf8_lossy(&bounded.stdout), "1\n");
        // Without a bound, the prefix's max_staleness_ms (5000 here) is it
        // (written again just before, so the frontier is fresh).
        assert!(run(&["kv", "put", "ev/x", "1"], &env, None)
            .status
            .success());
        let by_policy = json_of(&run(
            &["kv", "get", "ev/x", "--consistency", "bounded", "--json"],
            &env,
            None,
        ));
        assert!(by_policy["staleness_ms"].as_u64().unwrap() <= 5_000);
        let ls = json_of(&run(
            &["kv", "ls", "", "--consistency", "eventual", "--json"],
            &env,
            None,
        ));
        let keys: Vec<&str> = ls["kvs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["ca/k", "ev/x"],
            "pages crossed the policy boundaries"
        );
        assert!(ls["token"].is_string(), "{ls}");
        let policies = json_of(&run(&["policy", "ls", "--json"], &env, None));
        assert_eq!(policies["prefixes"][1]["prefix"], "ev/");
        assert_eq!(policies["prefixes"][1]["consistency"], "eventual");
        assert_eq!(policies["default"]["consistency"], "strong");
        let human = run(&["policy", "ls"], &env, None);
        assert!(stdout(&human).contains("(default)\tstrong\tr1\tasync\t5000"));
    })
    .await
    .unwrap();
    node.stop().await;
}

#[test]
fn bad_read_levels_are_refused_before_anything_is_sent() {
    // Nothing listens here: had anything been sent, the error would be
    // "cannot connect" after the timeout.
    let env = vec![("MERIDIAN_ENDPOINTS", "127.0.0.1:9".to_string())];
    let cases: &[(&[&str], &str)] = &[
        (&["--consistency", "bounded:abc"], "not a whole number"),
        (&["--consistency", "bounded:"], "not a whole number"),
        (&["--consistency", "strong"], "unknown consistency"),
        (
            &["--consistency", "causal", "--token", "12x"],
            "malformed token",
        ),
        (&["--token", "5"], "need --consistency"),
        (
            &["--consistency", "eventual", "--token", "5"],
            "only to causal",
        ),
        (
            &["--consistency", "bounded:5", "--on-stale", "maybe"],
            "redirect or fail",
        ),
        (
            &["--consistency", "eventual", "--at", "5"],
            "--at cannot be combined",
        ),
        (&["--serializable", "--consistency", "eventual"], "not both"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["kv", "get", "k", "--timeout-ms", "300"];
        args.extend_from_slice(flags);
        let started = Instant::now();
        let o = run(&args, &env, None);
        assert!(!o.status.success(), "{flags:?}");
        let err = stderr(&o);
        assert!(err.contains(says), "{flags:?}: {err}");
        assert!(!err.contains("cannot connect"), "{flags:?} was sent: {err}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let o = run(
        &["kv", "ls", "x/", "--consistency", "bounded:x"],
        &env,
        None,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a whole number"));
}

#[test]
fn dev_starts_a_three_node_region_runs_the_demo_and_stops_every_node() {
    let dir = tempfile::tempdir().unwrap();
    // Shift the topology's ports (7379..=7390) to an offset whose ports are free.
    let offset = common::dev::free_offset().to_string();
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/regions/local-3.toml");
    let args = [
        "dev",
        "--topology",
        topology,
        "--demo-only",
        "--port-offset",
        &offset,
    ];
    let out = run_in(Some(dir.path()), &args, &[], None);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in ["node1", "node2", "node3"] {
        assert!(
            text.contains(&format!("meridian dev: {node} (region local) pid")),
            "{text}"
        );
        assert!(
            text.contains(&format!("meridian dev: stopped {node}")),
            "{text}"
        );
    }
    assert!(text.contains("\"hello from meridian\""), "{text}");
    assert!(text.contains("succeeded=true"));
    assert!(text.contains("succeeded=false"));
    assert!(
        text.contains("node1 alive, node2 alive, node3 alive"),
        "gossip must show every node alive: {text}"
    );
    let leaders = text
        .lines()
        .find(|l| l.starts_with("demo: range leaders (gossip)"))
        .unwrap();
    for range in 1..=5 {
        assert!(
            leaders.contains(&format!("range {range} node")),
            "every range's leader is gossiped: {leaders}"
        );
    }
    let env = std::fs::read_to_string(dir.path().join("meridian-dev/env")).unwrap();
    assert_eq!(env.matches("127.0.0.1:").count(), 3, "{env}");
    assert!(env.contains("MERIDIAN_CERT="));
    // Every child was stopped: no process still has the node configs open.
    let pids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split(" pid ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 3);
    for pid in pids {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z");
        assert!(!alive, "node process {pid} still running");
    }
}

/// A fresh CLI call with a dead endpoint must not wait out the SDK's 3 s
/// QUIC idle timeout (it used to take 3.08 s). The bound is a functional
/// check far above the measured time (printed; see docs/operations.md).
const DEAD_ENDPOINT_CALL_BOUND: Duration = Duration::from_secs(2);
/// Bound on waiting for a region to accept writes again after a kill.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `envs` with MERIDIAN_ENDPOINTS replaced by `endpoints`.
fn with_endpoints(
    envs: &[(&'static str, String)],
    endpoints: &[String],
) -> Vec<(&'static str, String)> {
    let mut out: Vec<_> = envs
        .iter()
        .filter(|(k, _)| *k != "MERIDIAN_ENDPOINTS")
        .cloned()
        .collect();
    out.push(("MERIDIAN_ENDPOINTS", endpoints.join(",")));
    out
}

/// Runs the CLI until `kv put` succeeds (bounded): the region has a leader.
fn wait_for_writes(envs: &[(&'static str, String)]) {
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        let put = run(
            &["kv", "put", "probe", "p", "--timeout-ms", "3000"],
            envs,
            None,
        );
        if put.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "no write accepted: {put:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The leader of the range holding `config/`, from `meridian region status`.
fn config_leader(envs: &[(&'static str, String)]) -> String {
    let out = run(&["region", "status", "--json"], envs, None);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // With gossip on, the status also shows every region as one of its
    // live nodes sees it (here the one region), frontier ages included.
    let regions = v["regions"].as_array().expect("regions");
    assert_eq!(regions.len(), 1, "{v}");
    assert_eq!(regions[0]["region"], "local", "{v}");
    let seen = regions[0]["ranges"]
        .as_array()
        .expect("ranges of the region");
    assert!(
        seen.iter().all(|r| r["frontier_age_ms"].is_i64()),
        "every range has a frontier age: {v}"
    );
    let ranges = v["ranges"].as_array().unwrap();
    let range = ranges.iter().find(|r| r["start"] == "config/").unwrap();
    format!("node{}", range["leader"].as_u64().expect("a leader"))
}

#[test]
fn a_dead_endpoint_costs_a_fresh_cli_call_no_timeout() {
    let mut cluster = DevCluster::start();
    let env = cluster.cli_env();
    let names = ["node1", "node2", "node3"];
    let addr: Vec<String> = names.iter().map(|n| cluster.quic_addr(n)).collect();
    // node1 is the first endpoint `meridian dev` writes, as in the report.
    cluster.kill9("node1");
    wait_for_writes(&with_endpoints(&env, &addr[1..]));
    // The dead endpoint first, in the middle, and last.
    let orders = [
        vec![addr[0].clone(), addr[1].clone(), addr[2].clone()],
        vec![addr[1].clone(), addr[0].clone(), addr[2].clone()],
        vec![addr[1].clone(), addr[2].clone(), addr[0].clone()],
    ];
    let mut figures = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        let e = with_endpoints(&env, order);
        let key = format!("config/dead-endpoint/{i}");
        for args in [vec!["kv", "put", &key, "v"], vec!["kv", "get", &key]] {
            let started = Instant::now();
            let out = run(&args, &e, None);
            let took = started.elapsed();
            assert!(out.status.success(), "{args:?} with {order:?}: {out:?}");
            assert!(
                took < DEAD_ENDPOINT_CALL_BOUND,
                "{args:?} with {order:?} took {took:?}: it waited for the dead endpoint"
            );
            figures.push(took);
        }
    }
    println!("fresh CLI calls with one endpoint dead took {figures:?}");
    drop(cluster);
}

#[test]
fn an_oversized_value_is_refused_with_its_limit_and_nothing_is_written() {
    let cluster = DevCluster::start();
    let env = cluster.cli_env();
    // Over the request limit (2 MiB): the node refuses the frame unread.
    let three_mb = vec![b'x'; 3_000_000];
    let put = run(&["kv", "put", "config/big3"], &env, Some(&three_mb));
    assert_eq!(put.status.code(), Some(1), "{put:?}");
    assert!(stderr(&put).contains("MER-1003"), "{}", stderr(&put));
    assert!(
        stderr(&put).contains("max_request_bytes"),
        "{}",
        stderr(&put)
    );
    assert!(
        !stderr(&put).contains("outcome unknown"),
        "{}",
        stderr(&put)
    );
    // Within the request limit, over the value limit (1 MiB).
    let two_mb = vec![b'x'; 2_000_000];
    let put = run(&["kv", "put", "config/big2"], &env, Some(&two_mb));
    assert_eq!(put.status.code(), Some(1), "{put:?}");
    assert!(stderr(&put).contains("MER-1002"), "{}", stderr(&put));
    for key in ["config/big3", "config/big2"] {
        let get = run(&["kv", "get", key], &env, None);
        assert_eq!(get.status.code(), Some(1), "{key} was written: {get:?}");
        assert!(stderr(&get).contains("not found"), "{get:?}");
    }
    // The connection survived the refusal: a normal put still works.
    let ok = run(&["kv", "put", "config/small", "v"], &env, None);
    assert!(ok.status.success(), "{ok:?}");
    drop(cluster);
}

/// Sends one HTTP/1.1 request and returns the status code and body.
/// One request to a dev cluster's HTTPS gateway with its client
/// certificate: the status and the body.
fn http(
    https: &common::http::Https,
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = runtime.block_on(https.request(addr.parse().unwrap(), method, path, body));
    (reply.status, reply.text())
}

#[test]
fn a_write_that_cannot_commit_reports_outcome_unknown_everywhere() {
    let mut cluster = DevCluster::start();
    let env = cluster.cli_env();
    let leader = config_leader(&env);
    // Kill both followers: the leader appends the write but cannot commit it.
    for name in ["node1", "node2", "node3"]
        .into_iter()
        .filter(|n| *n != leader)
    {
        cluster.kill9(name);
    }
    let only_leader = with_endpoints(&env, &[cluster.quic_addr(&leader)]);
    let http_addr = cluster.http_addr(&leader);
    let https = cluster.https("client");
    let gateway =
        std::thread::spawn(move || http(&https, &http_addr, "PUT", "/v1/kv/config/h", b"v"));
    let put = run(
        &["kv", "put", "config/x", "v", "--timeout-ms", "30000"],
        &only_leader,
        None,
    );
    assert_eq!(put.status.code(), Some(3), "{put:?}");
    assert!(stderr(&put).contains("MER-3005"), "{}", stderr(&put));
    let (status, body) = gateway.join().unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("MER-3005"), "{body}");
    drop(cluster);
}

/// The README's curl command works against `meridian dev`: HTTPS with the
/// dev CA and the dev client certificate. Without the certificate the
/// gateway answers 401 with MER-2003 and nothing is written.
#[test]
fn curl_with_the_dev_client_certificate_works() {
    let curl = std::process::Command::new("curl").arg("--version").output();
    if !curl.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl is required under CI=true (install it in .ci/run)"
        );
        eprintln!("skipped: no curl binary on PATH");
        return;
    }
    let cluster = DevCluster::start();
    let leader = config_leader(&cluster.cli_env());
    let base = format!("https://{}", cluster.http_addr(&leader));
    let certs = cluster.certs_dir();
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "--cacert"])
            .arg(certs.join("ca.pem"))
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {extra:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let with_cert = |extra: &[&str]| {
        let cert = certs.join("client.pem");
        let key = certs.join("client.key");
        let mut args = vec![
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        curl(&args)
    };
    let url = format!("{base}/v1/kv/config/curl");
    let refused = curl(&["-X", "PUT", "--data-binary", "nope", &url]);
    assert!(refused.contains("MER-2003"), "{refused}");
    let absent = with_cert(&["-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(absent, "404", "the refused write wrote nothing");
    let put = with_cert(&["-X", "PUT", "--data-binary", "from curl", &url]);
    assert!(put.contains("\"version\""), "{put}");
    let got = with_cert(&[&url]);
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["value"], "from curl", "{got}");
}
