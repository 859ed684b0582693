//! Gossip figures on loopback with an emulated WAN: false positives under
//! loss and cross-region latency, and detection time of killed nodes.
//!
//! `cargo bench --bench gossip` (needs `[[bench]] name = "gossip"
//! harness = false` in Cargo.toml). Knobs (environment):
//! `GOSSIP_BENCH_NODES` (9), `GOSSIP_BENCH_WINDOW_S` (60),
//! `GOSSIP_BENCH_LOSS` (0.10), `GOSSIP_BENCH_KILLS` (3).
//!
//! Emulated WAN: three regions; one-way delay 50 ms (r0–r1), 100 ms
//! (r0–r2), 150 ms (r1–r2) plus 0–10 ms jitter, 1 ms inside a region;
//! the loss applies to every datagram sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian::membership::{
    FaultPlan, FaultyIo, GossipTimers, MemberState, Membership, MembershipConfig, NodeIdentity,
    PacketIo, UdpIo,
};

const KEY: [u8; 32] = [0x33; 32];
const POLL: Duration = Duration::from_millis(20);
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wan_delay(from: usize, to: usize) -> Duration {
    let base = match (from.min(to), from.max(to)) {
        (a, b) if a == b => 1,
        (0, 1) => 50,
        (0, 2) => 100,
        _ => 150,
    };
    Duration::from_millis(base) + Duration::from_micros(rand::random_range(0..10_000))
}

struct Net {
    loss: f64,
    wan: bool,
}

struct Bench {
    nodes: Vec<Option<Membership>>,
    timers: GossipTimers,
}

impl Bench {
    async fn start(n: usize, timers: GossipTimers, net: &Net) -> Bench {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut sockets = Vec::new();
        for _ in 0..n {
            sockets.push(UdpIo::bind(any).await.expect("bind"));
        }
        let addrs: Vec<SocketAddr> = sockets
            .iter()
            .map(|s| s.local_addr().expect("local addr"))
            .collect();
        let region_of: Arc<HashMap<SocketAddr, usize>> =
            Arc::new(addrs.iter().enumerate().map(|(i, a)| (*a, i % 3)).collect());
        let mut nodes = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let regions = region_of.clone();
            let wan = net.wan;
            let plan = FaultPlan {
                loss: net.loss,
                delay: Arc::new(move |to| {
                    if wan {
                        wan_delay(i % 3, regions.get(&to).copied().unwrap_or(0))
                    } else {
                        Duration::ZERO
                    }
                }),
            };
            let io = Arc::new(FaultyIo::new(socket, plan, 7 + i as u64));
            let cfg = MembershipConfig {
                identity: NodeIdentity {
                    node_id: format!("n{i}"),
                    region: REGIONS[i % 3].to_owned(),
                    zone: "a".to_owned(),
                    peer_addr: addrs[i],
                    client_addr: addrs[i],
                    gossip_addr: addrs[i],
                    generation: 1,
                },
                bind: addrs[i],
                seeds: if i == 0 { vec![] } else { vec![addrs[0]] },
                cluster_key: KEY,
                timers: timers.clone(),
            };
            nodes.push(Some(
                Membership::start_with_io(cfg, io, Some(i as u64)).expect("start"),
            ));
        }
        Bench { nodes, timers }
    }

    fn running(&self) -> impl Iterator<Item = &Membership> {
        self.nodes.iter().flatten()
    }

    async fn wait(
        &self,
        limit: Duration,
        mut cond: impl FnMut(&Bench) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(self) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(POLL).await;
        }
        None
    }

    /// Watches for `window`; returns how many (observer, member) pairs were
    /// ever seen not active, i.e. false Downs.
    async fn false_downs(&self, window: Duration) -> usize {
        let mut seen = std::collections::HashSet::new();
        let end = Instant::now() + window;
        while Instant::now() < end {
            for (i, m) in self.running().enumerate() {
                for v in m.members() {
                    if !v.state.is_active() {
                        seen.insert((i, v.identity.node_id));
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        seen.len()
    }

    /// Kills node `victim` abruptly; returns (first observer, all observers)
    /// detection times.
    async fn kill(&mut self, victim: usize) -> (Option<Duration>, Option<Duration>) {
        let name = format!("n{victim}");
        let node = self.nodes[victim].take().expect("running");
        let start = Instant::now();
        node.shutdown().await;
        let mut first = None;
        let limit = Duration::from_millis(10 * self.timers.suspect_to_down_ms + 30_000);
        let all = self
            .wait(limit, |b| {
                let down = b
                    .running()
                    .filter(|m| m.member(&name).map(|v| v.state) == Some(MemberState::Down))
                    .count();
                if down > 0 && first.is_none() {
                    first = Some(start.elapsed());
                }
                down == b.running().count()
            })
            .await
            .map(|_| start.elapsed());
        (first, all)
    }

    async fn shutdown(mut self) {
        for m in self.nodes.iter_mut().filter_map(Option::take) {
            m.shutdown().await;
        }
    }
}

async fn scenario(
    label: &str,
    n: usize,
    timers: GossipTimers,
    net: Net,
    window: Duration,
    kills: usize,
) {
    println!(
        "\n== {label}: {n} nodes, loss {:.0}%, {} ==",
        net.loss * 100.0,
        if net.wan {
            "cross-region one-way 50/100/150 ms (+0-10 ms jitter)"
        } else {
            "no delay"
        }
    );
    println!(
        "timers: probe_rtt {} ms, probe_period {} ms, suspect_to_down {} ms, gossip every {} ms",
        timers.probe_rtt_ms,
        timers.probe_period_ms,
        timers.suspect_to_down_ms,
        timers.gossip_interval_ms
    );
    let mut bench = Bench::start(n, timers, &net).await;
    let joined = bench
        .wait(Duration::from_secs(120), |b| {
            b.running().all(|m| {
                let members = m.members();
                members.len() == n && members.iter().all(|v| v.state == MemberState::Alive)
            })
        })
        .await;
    let Some(joined) = joined else {
        println!("FAILED: cluster did not converge in 120 s");
        bench.shutdown().await;
        return;
    };
    println!(
        "converged (all {n} alive everywhere) in {:.2} s",
        joined.as_secs_f64()
    );

    let before: Vec<_> = bench.running().map(|m| m.stats()).collect();
    let false_downs = bench.false_downs(window).await;
    let (mut susp, mut refuted, mut sent) = (0, 0, 0);
    for (m, s0) in bench.running().zip(&before) {
        let s = m.stats();
        susp += s.suspicions - s0.suspicions;
        refuted += s.refuted - s0.refuted;
        sent += s.packets_sent - s0.packets_sent;
    }
    println!(
        "window {:.0} s: false Down observations {false_downs}, suspicions {susp}, refuted {refuted}, \
         packets sent {:.1}/s per node",
        window.as_secs_f64(),
        sent as f64 / window.as_secs_f64() / n as f64
    );

    for k in 0..kills.min(n.saturating_sub(2)) {
        let victim = n - 1 - k;
        let (first, all) = bench.kill(victim).await;
        let fmt = |d: Option<Duration>| {
            d.map_or("not detected".to_owned(), |d| {
                format!("{:.2} s", d.as_secs_f64())
            })
        };
        println!(
            "kill n{victim} ({}): first observer {}, all {} observers {}",
            REGIONS[victim % 3],
            fmt(first),
            bench.running().count(),
            fmt(all)
        );
    }
    bench.shutdown().await;
}

fn main() {
    let n: usize = env("GOSSIP_BENCH_NODES", 9);
    let window = Duration::from_secs(env("GOSSIP_BENCH_WINDOW_S", 60));
    let loss: f64 = env("GOSSIP_BENCH_LOSS", 0.10);
    let kills: usize = env("GOSSIP_BENCH_KILLS", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        scenario(
            "WAN",
            n,
            GossipTimers::for_max_rtt(Duration::from_millis(320)),
            Net { loss, wan: true },
            window,
            kills,
        )
        .await;
        scenario(
            "LAN",
            n,
            GossipTimers::for_max_rtt(Duration::from_millis(10)),
            Net {
                loss: 0.0,
                wan: false,
            },
            window.min(Duration::from_secs(10)),
            kills,
        )
        .await;
    });
}
