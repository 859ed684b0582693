//! Issue 11's monitoring acceptance: the alerting rules pass promtool's
//! checks and unit tests; the dashboards carry their variables and
//! provisioning; and against a real Prometheus scraping a real
//! three-region `meridian dev` with the config it generated, every node's
//! `/metrics` is clean for `promtool check metrics`, every dashboard
//! panel's query returns data, every alert expression evaluates, and a
//! SIGKILLed node trips the node-down and quorum alerts.
//!
//! The three-region default cluster, not regions/local-3.toml: the
//! replication panels (frontier age, lag, streams, per-region-pair RTT)
//! only have data where regions replicate to each other, and one cluster
//! serves every panel.
//!
//! Needs `prometheus` and `promtool` (Debian's `prometheus` package; CI
//! installs it): without them these tests fail when `CI=true`, and skip,
//! saying why, otherwise.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http;
use common::wan_dev::{WanDev, REGIONS};
use serde_json::Value;

/// `meridian dev --port-offset`: its ports land in 26879..27090 (the
/// emulator's control API on 26890), clear of every other test file's
/// offsets (tests/wan.rs used to share 22000 with this file).
const PORT_OFFSET: u16 = 19500;
/// Bound on Prometheus becoming ready.
const PROMETHEUS_READY_BOUND: Duration = Duration::from_secs(60);
/// Bound on every panel query returning data once the load ran.
const PANELS_BOUND: Duration = Duration::from_secs(90);
/// The `for` of every alert in the test's copy of dashboards/alerts.yml
/// (the shipped rules wait 1-5 minutes; a test cannot).
const TEST_FOR: &str = "6s";
/// Bound on the alerts firing after the SIGKILL: the shortened `for`,
/// the 2 s scrape and evaluation intervals, and slack for a loaded host.
const ALERT_BOUND: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `prometheus` and `promtool` can run; panics when `CI=true` and
/// they cannot (CI installs them), else prints why the test is skipped.
fn tools_present(test: &str) -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = ["prometheus", "promtool"]
        .into_iter()
        .filter(|t| !runs(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} not found: install Debian's prometheus package (apt-get install -y prometheus)",
        missing.join(" and ")
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why}; CI must have it (.ci/run installs it)"
    );
    println!("skipping {test}: {why}");
    false
}

/// Runs promtool with `args`, `stdin` as its input; (success, output).
fn promtool(args: &[&str], stdin: &[u8]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    let mut input = child.stdin.take().expect("promtool stdin");
    input.write_all(stdin).expect("write promtool stdin");
    drop(input);
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    if !tools_present("alert_rules_pass_promtool_check_and_unit_tests") {
        return;
    }
    let (ok, out) = promtool(&["check", "rules", "dashboards/alerts.yml"], b"");
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "dashboards/alerts_test.yml"], b"");
    assert!(ok, "promtool test rules:\n{out}");
}

/// Every dashboard under dashboards/, parsed.
fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push((name, json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// (dashboard, panel title, query) of every panel target.
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (name, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let title = p["title"].as_str().unwrap().to_string();
                out.push((name.clone(), title, t["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

#[test]
fn dashboards_have_their_variables_and_grafana_provisioning() {
    let all = dashboards();
    let titles: Vec<&str> = all
        .iter()
        .map(|(_, d)| d["title"].as_str().unwrap())
        .collect();
    for want in [
        "Meridian / Cluster overview",
        "Meridian / Regions and ranges",
        "Meridian / Node",
        "Meridian / Gossip and clocks",
        "Meridian / Replication",
    ] {
        assert!(
            titles.contains(&want),
            "no dashboard {want:?} in {titles:?}"
        );
    }
    let ds = Value::from("${datasource}");
    for (name, d) in &all {
        let vars = d["templating"]["list"].as_array().unwrap();
        let var = |n: &str| vars.iter().find(|v| v["name"] == n);
        assert_eq!(var("datasource").unwrap()["type"], "datasource", "{name}");
        assert_eq!(var("datasource").unwrap()["query"], "prometheus", "{name}");
        for v in ["region", "node"] {
            let v = var(v).unwrap_or_else(|| panic!("{name}: no {v} variable"));
            assert_eq!(v["datasource"]["uid"], ds, "{name}");
            assert_eq!(v["includeAll"], true, "{name}");
        }
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(p["datasource"]["uid"], ds, "{name}: {}", p["title"]);
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {} has no query", p["title"]);
            for t in targets {
                let expr = t["expr"].as_str().unwrap();
                assert!(expr.contains("$region"), "{name}: {expr} ignores $region");
            }
        }
    }
    let provider =
        std::fs::read_to_string(repo().join("dashboards/provisioning/dashboards/meridian.yml"))
            .unwrap();
    assert!(provider.contains("type: file") && provider.contains("path: ${MERIDIAN_DASHBOARDS}"));
    let source =
        std::fs::read_to_string(repo().join("dashboards/provisioning/datasources/meridian.yml"))
            .unwrap();
    assert!(source.contains("type: prometheus") && source.contains("url: ${PROMETHEUS_URL}"));
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus on `meridian dev`'s generated config, copied to a
    /// temporary directory beside a copy of its alerts.yml whose `for`
    /// windows are [`TEST_FOR`]; waits (bounded) until it is ready.
    async fn start(dev_dir: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = std::fs::read_to_string(dev_dir.join("prometheus.yml")).unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), &config).unwrap();
        let alerts = std::fs::read_to_string(dev_dir.join("alerts.yml")).unwrap();
        let shipped = std::fs::read_to_string(repo().join("dashboards/alerts.yml")).unwrap();
        assert_eq!(
            alerts, shipped,
            "meridian dev wrote other alerts than dashboards/"
        );
        let short: Vec<String> = alerts
            .lines()
            .map(|l| match l.split_once("for: ") {
                Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: {TEST_FOR}"),
                _ => l.to_string(),
            })
            .collect();
        std::fs::write(dir.path().join("alerts.yml"), short.join("\n")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prom = Prometheus { child, addr, dir };
        let deadline = Instant::now() + PROMETHEUS_READY_BOUND;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && http::request(addr, "GET", "/-/ready", b"").await.status == 200
            {
                return prom;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within {PROMETHEUS_READY_BOUND:?}: {}",
                std::fs::read_to_string(prom.dir.path().join("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `GET path` of the HTTP API; its `data`, after checking `status`.
    async fn api(&self, path: &str) -> Result<Value, String> {
        let reply = http::request(self.addr, "GET", path, b"").await;
        let body = reply.json();
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{path}: {body}"))
        }
    }

    /// An instant query's result vector.
    async fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(q)))
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A dashboard query with Grafana's variables as a user who picked "All"
/// sees them (the variables' `allValue` is `.*`) and `$__rate_interval`
/// as Grafana computes it for a 2 s scrape interval (at least 4 scrapes).
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("$region", ".*")
        .replace("$node", ".*")
}

/// Writes and reads in every region for about `secs` seconds.
async fn drive_load(dev: &WanDev, secs: u64) {
    let mut clients = Vec::new();
    for region in REGIONS {
        clients.push((region, dev.client(region, Duration::from_secs(10)).await));
    }
    let until = Instant::now() + Duration::from_secs(secs);
    let mut i = 0u32;
    while Instant::now() < until {
        for (region, c) in &clients {
            let key = format!("demo/obs/{region}/{i}");
            // A failed request under load is fine: the panels count errors too.
            let _ = c.put(&key, b"v").await;
            let _ = c.get(&key).await;
        }
        i += 1;
    }
    for (_, c) in clients {
        c.close().await;
    }
}

/// `promtool check metrics` on every node's /metrics.
async fn check_every_node_metrics(dev: &WanDev) {
    for region in REGIONS {
        for j in 1..=3 {
            let node = format!("{region}-{j}");
            let addr: SocketAddr = http_bind(dev, &node).parse().unwrap();
            let reply = http::Https::with_cert(&dev.dev_dir().join("certs"), "client")
                .request(addr, "GET", "/metrics", b"")
                .await;
            assert_eq!(reply.status, 200, "{node} /metrics");
            let text = reply.text();
            // Series every node has (request series only exist on nodes
            // that served a client).
            for name in ["meridian_raft_is_leader", "meridian_storage_size_bytes"] {
                assert!(text.contains(&format!("# HELP {name} ")), "{node}: {text}");
            }
            let (ok, out) = promtool(&["check", "metrics"], &reply.body);
            assert!(
                ok && out.trim().is_empty(),
                "promtool check metrics on {node}:\n{out}"
            );
        }
    }
}

/// The HTTP address node `name` binds (its config's `http_addr`).
fn http_bind(dev: &WanDev, name: &str) -> String {
    let toml = std::fs::read_to_string(dev.dev_dir().join(format!("{name}.toml"))).unwrap();
    toml.lines()
        .find_map(|l| l.strip_prefix("http_addr = "))
        .unwrap()
        .trim_matches('"')
        .to_string()
}

/// Waits (bounded) until every panel query returns data; panics naming
/// the ones that never did.
async fn check_panels(prom: &Prometheus) {
    let queries = panel_queries();
    assert!(queries.len() >= 40, "{} panel queries", queries.len());
    let deadline = Instant::now() + PANELS_BOUND;
    loop {
        let mut empty = Vec::new();
        for (dash, title, expr) in &queries {
            let q = substitute(expr);
            match prom.query(&q).await {
                Ok(r) if !r.is_empty() => {}
                Ok(_) => empty.push(format!("{dash} / {title}: {q} returned no data")),
                Err(e) => panic!("{dash} / {title}: {q} failed: {e}"),
            }
        }
        if empty.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data:\n{}",
            empty.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The region and node variables' `label_values(expr, label)` queries
/// find every region and node.
async fn check_variables(prom: &Prometheus) {
    let (_, d) = &dashboards()[0];
    for v in d["templating"]["list"].as_array().unwrap() {
        let Some(def) = v["definition"].as_str() else {
            continue;
        };
        let inner = def
            .strip_prefix("label_values(")
            .unwrap()
            .strip_suffix(')')
            .unwrap();
        let (expr, label) = inner.rsplit_once(", ").unwrap();
        let found: std::collections::BTreeSet<String> = prom
            .query(&substitute(expr))
            .await
            .unwrap()
            .iter()
            .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
            .collect();
        let want = if label == "region" { 3 } else { 9 };
        assert_eq!(found.len(), want, "{def}: {found:?}");
    }
}

/// Every alerting rule Prometheus loaded evaluates without error, and its
/// expression parses and runs as a query.
async fn check_alert_expressions(prom: &Prometheus) {
    let rules = prom.api("/api/v1/rules").await.unwrap();
    let mut names = Vec::new();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap().to_string();
            assert_eq!(r["health"], "ok", "{name}: {r}");
            let expr = r["query"].as_str().unwrap();
            prom.query(expr)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            names.push(name);
        }
    }
    assert_eq!(names.len(), 8, "{names:?}");
}

/// The alerts firing now, as (alertname, labels).
async fn firing(prom: &Prometheus) -> Vec<(String, Value)> {
    let data = prom.api("/api/v1/alerts").await.unwrap();
    data["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_string(),
                a["labels"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_live_cluster_feeds_every_panel_and_trips_the_node_down_and_quorum_alerts() {
    let test = "a_live_cluster_feeds_every_panel_and_trips_the_node_down_and_quorum_alerts";
    if !tools_present(test) {
        return;
    }
    let started = Instant::now();
    // Collect often, so the garbage-collection panels have sweeps to show.
    let dev = WanDev::start_with_env(
        PORT_OFFSET,
        None,
        &[("MERIDIAN_STORAGE__GC_INTERVAL_MS", "1000")],
    );
    println!("meridian dev ready after {:?}", dev.start_time);
    let announced = dev
        .out
        .iter()
        .any(|l| l.starts_with("meridian dev: start Prometheus: prometheus --config.file="));
    assert!(
        announced,
        "meridian dev did not say how to start Prometheus:\n{}",
        dev.out.join("\n")
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let prom = Prometheus::start(&dev.dev_dir()).await;
        drive_load(&dev, 10).await;
        check_every_node_metrics(&dev).await;
        check_variables(&prom).await;
        check_panels(&prom).await;
        check_alert_expressions(&prom).await;
        println!(
            "panels and alert expressions checked after {:?}",
            started.elapsed()
        );
        let victim = "us-east-2";
        let tripped = |alerts: &[(String, Value)]| {
            let down = alerts
                .iter()
                .any(|(n, l)| n == "MeridianNodeDown" && l["node"] == victim);
            let quorum = alerts
                .iter()
                .any(|(n, l)| n == "MeridianQuorumAtRisk" && l["region"] == "us-east");
            (down, quorum)
        };
        let before = firing(&prom).await;
        assert_eq!(
            tripped(&before),
            (false, false),
            "before any fault: {before:?}"
        );
        dev.kill9(victim);
        let killed = Instant::now();
        let deadline = killed + ALERT_BOUND;
        loop {
            let now = firing(&prom).await;
            let (down, quorum) = tripped(&now);
            if down && quorum {
                println!(
                    "node-down and quorum alerts fired {:?} after the SIGKILL",
                    killed.elapsed()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after {ALERT_BOUND:?}: node down {down}, quorum at risk {quorum}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    println!("{test}: {:?}", started.elapsed());
}

/// Bound on the Raft gauges and request counters catching up with writes
/// (the log gauges are sampled every 250 ms).
const GAUGES_BOUND: Duration = Duration::from_secs(20);

/// Sum over every series of `name` in a Prometheus text page whose labels
/// contain all of `labels` (`key="value"` strings).
fn series_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The Raft gauges keep following the log after start-up (they are sampled,
/// not woken by every change), the request counters count each served
/// request once, and every range has exactly one leader on the gauges:
/// on a live 3-node region (`meridian dev`, real processes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_gauges_and_request_counters_follow_the_writes() {
    use common::dev::DevCluster;
    const PUTS: usize = 40;
    let cluster = DevCluster::start();
    let mut nodes: Vec<String> = cluster.pids.keys().cloned().collect();
    nodes.sort();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let https = cluster.https("client");
    let pages = || async {
        let mut texts = Vec::new();
        for n in &nodes {
            let addr: SocketAddr = cluster.http_addr(n).parse().unwrap();
            let reply = https.request(addr, "GET", "/metrics", b"").await;
            assert_eq!(reply.status, 200, "{n} /metrics");
            texts.push(reply.text());
        }
        texts
    };
    let total = |texts: &[String], name: &str, labels: &[&str]| {
        texts
            .iter()
            .map(|t| series_sum(t, name, labels))
            .sum::<f64>()
    };
    let before = pages().await;
    let committed_before = total(&before, "meridian_raft_commit_index", &[]);
    let applied_before = total(&before, "meridian_raft_applied_index", &[]);
    // `meridian dev`'s demo has written already.
    let puts_before = total(
        &before,
        "meridian_requests_total",
        &[r#"op="put""#, r#"code="ok""#],
    );

    let client = meridian::client::Client::connect(cluster.client_config(Duration::from_secs(15)))
        .await
        .unwrap();
    for i in 0..PUTS {
        client.put(format!("gauges/{i}"), "v").await.unwrap();
    }

    // Every put is one entry that each of the three replicas learns is
    // committed and applies.
    let want = (3 * PUTS) as f64;
    let deadline = Instant::now() + GAUGES_BOUND;
    loop {
        let now = pages().await;
        let committed = total(&now, "meridian_raft_commit_index", &[]) - committed_before;
        let applied = total(&now, "meridian_raft_applied_index", &[]) - applied_before;
        let puts_ok = total(
            &now,
            "meridian_requests_total",
            &[r#"op="put""#, r#"code="ok""#],
        ) - puts_before;
        let leaders = total(&now, "meridian_raft_is_leader", &[]);
        let ranges_known = now[0]
            .lines()
            .filter(|l| l.starts_with("meridian_raft_is_leader{"))
            .count() as f64;
        if committed >= want && applied >= want && puts_ok == PUTS as f64 && leaders == ranges_known
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {GAUGES_BOUND:?}: commit index +{committed}, applied index +{applied} (want >= {want}), \
             put requests ok {puts_ok} (want {PUTS}), leaders {leaders} over {ranges_known} ranges"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
