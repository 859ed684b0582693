//! The `meridian` binary as a user runs it: `dev --demo-only`, and the `kv`
//! commands against an in-process node, with flags and with environment.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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

fn free_port() -> u16 {
    // Bind both UDP and TCP on one port number so QUIC and HTTP can use it.
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

#[test]
fn dev_starts_a_three_node_region_runs_the_demo_and_stops_every_node() {
    let dir = tempfile::tempdir().unwrap();
    // Shift the topology's ports (7379..=7384) next to a port that was free.
    let offset = (free_port().saturating_sub(7379) / 2 * 2).to_string();
    let args = ["dev", "--demo-only", "--port-offset", &offset];
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
