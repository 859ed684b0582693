//! What `meridian dev` shows once its nodes run: readiness, and for a
//! multi-region topology the latency a client sees by where it is, and the
//! round trips gossip measured between regions, all through the WAN
//! emulator.
//!
//! Output lines are stable (tests parse them):
//!
//! ```text
//! demo: strong write    payments/demo/balance in us-east   (its home)         8.1 ms  version 1795...
//! demo: eventual read   payments/demo/balance in ap-south  (local)            1.2 ms  does not see the write yet (212 ms stale)
//! demo: causal read     payments/demo/balance in ap-south  (local, token)   131.0 ms  sees the write (20 ms stale)
//! demo: linearizable    payments/demo/balance from ap-south  (sent home)    402.3 ms  sees the write
//! demo: region us-east   client in eu-west    put   73.9 ms  get   72.4 ms
//! demo: gossip rtt us-east  -> eu-west     72.6 ms (3 members)
//! demo: replication us-east   -> eu-west   visible after    61.3 ms  (link one-way 35 ms)
//! demo: policy set demo/ --max-staleness 2500 from us-east: version 3 epoch 2 in 152.0 ms
//! demo: policy in force in ap-south  after   233.4 ms
//! demo: emulator: 48211 datagrams forwarded, 0 from unclassified senders
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use meridian_chaos::{Controller, UNCLASSIFIED};

use super::topology::{RegionPlan, Topology};
use super::ChildNode;
use crate::client::{Client, ClientConfig};
use crate::transport::TlsFiles;

/// Timed requests per (region, client region) pair; the median is shown.
const SAMPLES: usize = 3;
/// Longest the demo waits for gossip to see every node alive with an RTT.
const GOSSIP_WAIT: Duration = Duration::from_secs(30);
/// Timeout of one demo request (the worst emulated round trip is 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A client of `target`'s nodes that sends from `from`'s client address
/// (unbound in the local layout).
fn client_config(target: &RegionPlan, from: &RegionPlan, tls: &TlsFiles) -> ClientConfig {
    ClientConfig {
        endpoints: target.endpoints(),
        tls: tls.clone(),
        request_timeout: REQUEST_TIMEOUT,
        bind: from.client_ip.map(|ip| SocketAddr::new(ip, 0)),
    }
}

/// Polls (bounded by [`super::READY_TIMEOUT`]) until a write through
/// `region` succeeds, which needs every range to have a leader; fails early
/// if a node exits. The client sends from inside the region, so in the WAN
/// layout readiness costs no emulated delay.
pub(super) async fn wait_ready(
    region: &RegionPlan,
    tls: &TlsFiles,
    nodes: &mut [ChildNode],
) -> anyhow::Result<Client> {
    let deadline = Instant::now() + super::READY_TIMEOUT;
    loop {
        for n in nodes.iter_mut() {
            if let Some(status) = n.child.try_wait()? {
                bail!(
                    "{} exited with {status} during start-up; see its log",
                    n.name
                );
            }
        }
        let mut cfg = client_config(region, region, tls);
        cfg.request_timeout = Duration::from_secs(3);
        let attempt = async {
            let c = Client::connect(cfg).await?;
            c.put("demo/ready", "yes").await?;
            anyhow::Ok(c)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                bail!("region {} did not become ready: {e:#}", region.name)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The multi-region demo: latencies by client region, gossip RTTs by
/// region pair, and the emulator's traffic.
pub(super) async fn multi_region(
    topo: &Topology,
    layout: &[RegionPlan],
    tls: &TlsFiles,
    wan: &Controller,
) -> anyhow::Result<()> {
    consistency_levels(layout, tls).await?;
    println!(
        "demo: a write (put) and an eventual read (get) of demo/ keys on each region's nodes, \
         by where the client is (median of {SAMPLES})"
    );
    for target in layout {
        for from in layout {
            let (put, get) = latency(target, from, tls).await?;
            let configured = topo
                .rtt_ms(&target.name, &from.name)
                .map_or(String::new(), |rtt| format!("  (link rtt {rtt} ms)"));
            println!(
                "demo: region {:<9} client in {:<9} put {:>7.1} ms  get {:>7.1} ms{configured}",
                target.name,
                from.name,
                ms(put),
                ms(get)
            );
        }
    }
    replication(topo, layout, tls).await?;
    policy_change(layout, tls).await?;
    gossip_rtts(layout, tls).await?;
    let status = wan.status().await?;
    let forwarded: u64 = status
        .links
        .iter()
        .map(|l| l.datagrams.packets_forwarded)
        .sum();
    let unclassified: u64 = status
        .links
        .iter()
        .filter(|l| l.from == UNCLASSIFIED)
        .map(|l| l.datagrams.packets_forwarded)
        .sum();
    // Every node and demo client binds its region's address, so nothing
    // should arrive unclassified: a count here means a socket sent from
    // 127.0.0.1 (unbound) and skipped the emulated WAN.
    println!(
        "demo: emulator: {forwarded} datagrams forwarded, {unclassified} from unclassified senders"
    );
    Ok(())
}

/// The key of the consistency demo: `payments/` is strong, homed in
/// us-east (regions/wan-3.toml).
const STRONG_KEY: &str = "payments/demo/balance";

/// The consistency levels as a user meets them: a strong write at its
/// home region, then in the farthest region an eventual read (local, maybe
/// stale, and saying how stale), a causal read with the write's session
/// token (local once replication brought the write), and a linearizable
/// read (sent home), each with its latency.
async fn consistency_levels(layout: &[RegionPlan], tls: &TlsFiles) -> anyhow::Result<()> {
    use crate::client::{Session, SessionToken};
    use crate::replication::read::ReadLevel;
    let home = &layout[0];
    let far = &layout[layout.len() - 1];
    let at_home = Client::connect(client_config(home, home, tls)).await?;
    let value = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let start = Instant::now();
    let written = at_home.put(STRONG_KEY, &value).await;
    let put_ms = ms(start.elapsed());
    at_home.close().await;
    let written = written?;
    println!(
        "demo: strong write    {STRONG_KEY} in {:<9} (its home)      {put_ms:>7.1} ms  version {}",
        home.name, written.version
    );
    let there = Client::connect(client_config(far, far, tls)).await?;
    let shown = async {
        let start = Instant::now();
        let ev = there.get_at_level(STRONG_KEY, ReadLevel::Eventual).await?;
        let fresh = ev.kv.as_ref().is_some_and(|kv| kv.value == value.as_bytes());
        println!(
            "demo: eventual read   {STRONG_KEY} in {:<9} (local)        {:>7.1} ms  {} ({} ms stale)",
            far.name,
            ms(start.elapsed()),
            if fresh { "sees the write" } else { "does not see the write yet" },
            ev.staleness_ms
        );
        let session = Session::resume(&there, SessionToken(written.version));
        let start = Instant::now();
        let causal = session.get(STRONG_KEY).await?;
        let seen = causal.kv.as_ref().is_some_and(|kv| kv.value == value.as_bytes());
        if !seen {
            bail!("a causal read with the write's token did not see the write");
        }
        println!(
            "demo: causal read     {STRONG_KEY} in {:<9} (local, token)  {:>7.1} ms  sees the write ({} ms stale)",
            far.name,
            ms(start.elapsed()),
            causal.staleness_ms
        );
        let start = Instant::now();
        let lin = there.get_at_level(STRONG_KEY, ReadLevel::Linearizable).await?;
        let lin_seen = lin.kv.is_some_and(|kv| kv.value == value.as_bytes());
        if !lin_seen {
            bail!("a linearizable read did not see the write");
        }
        println!(
            "demo: linearizable    {STRONG_KEY} from {:<9} (sent home)   {:>7.1} ms  sees the write",
            far.name,
            ms(start.elapsed())
        );
        anyhow::Ok(())
    }
    .await;
    there.close().await;
    shown
}

/// Longest the demo waits for a write to reach another region.
const REPLICATION_WAIT: Duration = Duration::from_secs(30);

/// A write in each region, and how long after its acknowledgement a
/// client in every other region reads it from its own region's nodes:
/// the replication lag as a user sees it (one-way WAN latency, plus the
/// stream's batching and the destination region's commit).
async fn replication(topo: &Topology, layout: &[RegionPlan], tls: &TlsFiles) -> anyhow::Result<()> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for origin in layout {
        let key = format!("demo/replicated/from-{}", origin.name);
        let value = format!("{nonce}");
        let writer = Client::connect(client_config(origin, origin, tls)).await?;
        let written = writer.put(&key, &value).await;
        let acked = Instant::now();
        writer.close().await;
        written?;
        for dest in layout.iter().filter(|d| d.name != origin.name) {
            let reader = Client::connect(client_config(dest, dest, tls)).await?;
            let seen = async {
                loop {
                    let got = reader
                        .get_at_level(&key, crate::replication::read::ReadLevel::Eventual)
                        .await?;
                    if got.kv.is_some_and(|kv| kv.value == value.as_bytes()) {
                        return anyhow::Ok(acked.elapsed());
                    }
                    if acked.elapsed() > REPLICATION_WAIT {
                        bail!(
                            "a write in {} did not reach {} within {REPLICATION_WAIT:?}",
                            origin.name,
                            dest.name
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            .await;
            reader.close().await;
            let lag = seen?;
            let one_way = topo
                .rtt_ms(&origin.name, &dest.name)
                .map_or(String::new(), |rtt| {
                    format!("  (link one-way {} ms)", rtt / 2)
                });
            println!(
                "demo: replication {:<9} -> {:<9} visible after {:>7.1} ms{one_way}",
                origin.name,
                dest.name,
                ms(lag)
            );
        }
    }
    Ok(())
}

/// The staleness bound the policy demo sets on `demo/`.
const DEMO_STALENESS_MS: u64 = 2_500;

/// A run-time policy change through the control range: an admin in the
/// first region sets `demo/`'s default staleness bound, then every region
/// is polled (from inside it) until its node serves the new policy.
async fn policy_change(layout: &[RegionPlan], tls: &TlsFiles) -> anyhow::Result<()> {
    let Some(first) = layout.first() else {
        return Ok(());
    };
    let admin = TlsFiles {
        ca: tls.ca.clone(),
        cert: tls.ca.with_file_name("admin.pem"),
        key: tls.ca.with_file_name("admin.key"),
    };
    let client = Client::connect(client_config(first, first, &admin)).await?;
    let started = Instant::now();
    let changed = client
        .set_policy(crate::wire::SetPolicyV1 {
            prefix: Some(b"demo/".to_vec()),
            max_staleness_ms: Some(DEMO_STALENESS_MS),
            ..crate::wire::SetPolicyV1::default()
        })
        .await;
    client.close().await;
    let changed = changed?;
    println!(
        "demo: policy set demo/ --max-staleness {DEMO_STALENESS_MS} from {}: version {} epoch {} in {:.1} ms",
        first.name,
        changed.version,
        changed.epoch,
        ms(started.elapsed())
    );
    // In force in a region once every node of it serves the new policy
    // (each node is asked alone: voters and learners alike).
    for region in layout {
        let mut readers = Vec::new();
        for addr in region.endpoints() {
            let mut cfg = client_config(region, region, tls);
            cfg.endpoints = vec![addr];
            readers.push(Client::connect(cfg).await?);
        }
        let seen = async {
            loop {
                let mut all = true;
                for r in &readers {
                    all &= r.policy_of("demo/x").await?.max_staleness_ms == DEMO_STALENESS_MS;
                }
                if all {
                    return anyhow::Ok(started.elapsed());
                }
                if started.elapsed() > REPLICATION_WAIT {
                    bail!(
                        "the policy change did not reach every node of {} within {REPLICATION_WAIT:?}",
                        region.name
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        .await;
        for r in &readers {
            r.close().await;
        }
        println!(
            "demo: policy in force in {:<9} after {:>7.1} ms",
            region.name,
            ms(seen?)
        );
    }
    Ok(())
}

/// Median put and get latency on `target` from a client in `from`, after a
/// warm-up request that connects to the range's leader.
async fn latency(
    target: &RegionPlan,
    from: &RegionPlan,
    tls: &TlsFiles,
) -> anyhow::Result<(Duration, Duration)> {
    let client = Client::connect(client_config(target, from, tls)).await?;
    let key = format!("demo/latency/from-{}", from.name);
    let timed = async {
        client.put(&key, "warm-up").await?;
        let mut puts = Vec::with_capacity(SAMPLES);
        let mut gets = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES {
            let start = Instant::now();
            client.put(&key, i.to_string()).await?;
            puts.push(start.elapsed());
            // demo/ is eventual (regions/wan-3.toml): read at this
            // level, served by the nodes the client talks to.
            let start = Instant::now();
            client
                .get_at_level(&key, crate::replication::read::ReadLevel::Eventual)
                .await?;
            gets.push(start.elapsed());
        }
        anyhow::Ok((median(puts), median(gets)))
    }
    .await;
    client.close().await;
    timed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Asks one node per region (through a client in that region) for the
/// members it sees, waits (bounded) until it sees every node alive with a
/// measured RTT, and prints the median RTT to each region.
async fn gossip_rtts(layout: &[RegionPlan], tls: &TlsFiles) -> anyhow::Result<()> {
    let total: usize = layout.iter().map(|r| r.nodes.len()).sum();
    for from in layout {
        let client = Client::connect(client_config(from, from, tls)).await?;
        let deadline = Instant::now() + GOSSIP_WAIT;
        let members = loop {
            let members = client.members().await?;
            // The answering node lists itself too, without an RTT.
            let alive = members.iter().filter(|m| m.state == "alive").count();
            let measured = members.iter().filter(|m| m.rtt_us.is_some()).count();
            let complete = alive >= total && measured + 1 >= total;
            if complete || Instant::now() > deadline {
                break members;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        client.close().await;
        let alive = members.iter().filter(|m| m.state == "alive").count();
        if from.name == layout[0].name {
            println!("demo: gossip members alive: {alive} of {total}");
        }
        for to in layout {
            let mut rtts: Vec<Duration> = members
                .iter()
                .filter(|m| m.region == to.name)
                .filter_map(|m| m.rtt_us.map(Duration::from_micros))
                .collect();
            let n = rtts.len();
            rtts.sort();
            let shown = rtts
                .get(n / 2)
                .map_or_else(|| "      -".to_string(), |d| format!("{:>7.1}", ms(*d)));
            println!(
                "demo: gossip rtt {:<9} -> {:<9} {shown} ms ({n} members)",
                from.name, to.name
            );
        }
    }
    Ok(())
}
