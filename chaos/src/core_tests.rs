//! Deterministic tests of the datagram core: seeded randomness, time
//! passed in, no sockets.

use std::time::{Duration, Instant};

use super::*;
use crate::link::LinkParams;
use crate::table::{Partition, UNCLASSIFIED};

const BIG: QueueLimits = QueueLimits {
    max_packets: 1_000_000,
    max_bytes: usize::MAX,
};

fn table() -> LinkTable {
    let mut t =
        LinkTable::new(vec!["us-east".into(), "eu-west".into(), "ap-south".into()]).unwrap();
    t.set_link("us-east", "eu-west", LinkParams::rtt(70))
        .unwrap();
    t.set_link("eu-west", "ap-south", LinkParams::rtt(140))
        .unwrap();
    t.set_link("us-east", "ap-south", LinkParams::rtt(200))
        .unwrap();
    t
}

fn link(core: &Core<u32>, from: &str, to: &str) -> LinkId {
    let id = |n: &str| (n != UNCLASSIFIED).then(|| core.table().region(n).unwrap());
    LinkId {
        from: id(from),
        to: id(to),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Every datagram due by `until`, with the time each came out when polled
/// every millisecond from `from`.
fn drain(core: &mut Core<u32>, from: Instant, until: Instant) -> Vec<(u32, Duration)> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= until {
        while let Some(t) = core.poll_transmit(now) {
            out.push((t.payload, now - from));
        }
        now += ms(1);
    }
    out
}

#[test]
fn each_direction_waits_half_the_rtt() {
    let mut core = Core::seeded(table(), BIG, 1);
    let t0 = Instant::now();
    let ab = link(&core, "us-east", "eu-west");
    let ca = link(&core, "ap-south", "us-east");
    assert_eq!(
        core.handle_datagram(t0, ab, 100, 1),
        Verdict::Queued { at: t0 + ms(35) }
    );
    assert_eq!(
        core.handle_datagram(t0, ca, 100, 2),
        Verdict::Queued { at: t0 + ms(100) }
    );
    assert_eq!(core.poll_timeout(), Some(t0 + ms(35)));
    assert!(core.poll_transmit(t0 + ms(34)).is_none());
    assert_eq!(
        drain(&mut core, t0, t0 + ms(200)),
        [(1, ms(35)), (2, ms(100))]
    );
    assert_eq!(core.poll_timeout(), None);
    let c = core.counters(ab);
    assert_eq!((c.packets_forwarded, c.bytes_forwarded), (1, 100));
    assert_eq!(core.queued(), (0, 0));
}

#[test]
fn own_region_and_unclassified_traffic_is_immediate() {
    let mut core = Core::seeded(table(), BIG, 1);
    let t0 = Instant::now();
    let local = link(&core, "eu-west", "eu-west");
    let cli = link(&core, UNCLASSIFIED, "ap-south");
    core.handle_datagram(t0, local, 10, 1);
    core.handle_datagram(t0, cli, 10, 2);
    assert_eq!(drain(&mut core, t0, t0), [(1, ms(0)), (2, ms(0))]);
    // Unclassified links show up in status once they carried something.
    assert!(core.reported_links().contains(&cli));
    assert!(!core.reported_links().contains(&cli.reverse()));
}

#[test]
fn datagrams_due_together_leave_in_arrival_order() {
    let mut core = Core::seeded(table(), BIG, 1);
    let t0 = Instant::now();
    let ab = link(&core, "us-east", "eu-west");
    for i in 0..50 {
        core.handle_datagram(t0, ab, 1, i);
    }
    let out: Vec<u32> = drain(&mut core, t0, t0 + ms(40))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(out, (0..50).collect::<Vec<_>>());
}

#[test]
fn jitter_spreads_delays_without_reordering() {
    let mut t = table();
    let jittery = LinkParams {
        rtt_ms: 70,
        jitter_ms: 10,
        loss: 0.0,
    };
    t.set_link("us-east", "eu-west", jittery).unwrap();
    let mut core = Core::seeded(t, BIG, 9);
    let t0 = Instant::now();
    let ab = link(&core, "us-east", "eu-west");
    // Dense: ten datagrams per millisecond.
    for i in 0..200 {
        core.handle_datagram(t0 + ms(u64::from(i) / 10), ab, 1, i);
    }
    let out = drain(&mut core, t0, t0 + ms(100));
    let order: Vec<u32> = out.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        order,
        (0..200).collect::<Vec<_>>(),
        "jitter must not reorder"
    );
    let delays: Vec<Duration> = out
        .iter()
        .map(|&(i, at)| at - ms(u64::from(i) / 10))
        .collect();
    for d in &delays {
        assert!(*d >= ms(25) && *d <= ms(46), "{d:?}");
    }
    // Sparse: 50 ms apart, each draw stands alone and the spread shows.
    let t1 = t0 + ms(1_000);
    let mut sparse = Vec::new();
    for i in 0..100u32 {
        let sent = t1 + ms(50 * u64::from(i));
        let Verdict::Queued { at } = core.handle_datagram(sent, ab, 1, i) else {
            panic!("no loss configured")
        };
        sparse.push(at - sent);
    }
    let (lo, hi) = (sparse.iter().min().unwrap(), sparse.iter().max().unwrap());
    assert!(*lo < ms(28) && *hi > ms(42), "{lo:?}..{hi:?}");
}

#[test]
fn loss_is_near_the_ratio_and_reproducible() {
    let run = |seed| {
        let mut t = table();
        let lossy = LinkParams {
            rtt_ms: 70,
            jitter_ms: 0,
            loss: 0.1,
        };
        t.set_link("us-east", "eu-west", lossy).unwrap();
        let mut core = Core::seeded(t, BIG, seed);
        let t0 = Instant::now();
        let ab = link(&core, "us-east", "eu-west");
        let ba = ab.reverse();
        for i in 0..10_000 {
            core.handle_datagram(t0, ab, 1, i);
            core.handle_datagram(t0, ba, 1, i);
        }
        drain(&mut core, t0, t0 + ms(40));
        (core.counters(ab), core.counters(ba))
    };
    let (ab, ba) = run(5);
    for c in [ab, ba] {
        assert_eq!(c.dropped_loss + c.packets_forwarded, 10_000);
        assert!((900..=1_100).contains(&c.dropped_loss), "{c:?}");
    }
    // Each direction draws its own trials.
    assert_ne!(ab.dropped_loss, ba.dropped_loss);
    assert_eq!(run(5), (ab, ba));
    assert_ne!(run(6), (ab, ba));
}

#[test]
fn a_cut_drops_both_ways_on_arrival_and_in_flight_then_heal_restores() {
    let mut core = Core::seeded(table(), BIG, 1);
    let t0 = Instant::now();
    let ab = link(&core, "us-east", "eu-west");
    let ba = ab.reverse();
    // In flight when the cable is cut: lost.
    core.handle_datagram(t0, ab, 10, 1);
    core.table_mut()
        .partition(Partition::Cut {
            a: "eu-west".into(),
            b: "us-east".into(),
        })
        .unwrap();
    assert_eq!(
        core.handle_datagram(t0 + ms(1), ba, 10, 2),
        Verdict::Dropped(DropReason::Partition)
    );
    assert!(drain(&mut core, t0, t0 + ms(50)).is_empty());
    assert_eq!(core.counters(ab).dropped_partition, 1);
    assert_eq!(core.counters(ba).dropped_partition, 1);
    assert_eq!(core.queued(), (0, 0));
    // Other links are untouched.
    let ac = link(&core, "us-east", "ap-south");
    assert!(matches!(
        core.handle_datagram(t0, ac, 10, 3),
        Verdict::Queued { .. }
    ));
    core.table_mut().heal();
    core.handle_datagram(t0 + ms(60), ab, 10, 4);
    assert_eq!(
        drain(&mut core, t0 + ms(60), t0 + ms(200)),
        [(4, ms(35)), (3, ms(40))]
    );
}

#[test]
fn a_one_way_cut_leaves_the_other_direction() {
    let mut core = Core::seeded(table(), BIG, 1);
    let t0 = Instant::now();
    core.table_mut()
        .partition(Partition::OneWay {
            from: "ap-south".into(),
            to: "us-east".into(),
        })
        .unwrap();
    let ca = link(&core, "ap-south", "us-east");
    assert_eq!(
        core.handle_datagram(t0, ca, 1, 1),
        Verdict::Dropped(DropReason::Partition)
    );
    assert!(matches!(
        core.handle_datagram(t0, ca.reverse(), 1, 2),
        Verdict::Queued { .. }
    ));
}

#[test]
fn isolation_keeps_a_regions_own_traffic() {
    let mut core = Core::seeded(table(), BIG, 1);
    let t0 = Instant::now();
    core.table_mut()
        .partition(Partition::Isolate {
            region: "ap-south".into(),
        })
        .unwrap();
    for other in ["us-east", "eu-west"] {
        for l in [
            link(&core, other, "ap-south"),
            link(&core, "ap-south", other),
        ] {
            assert_eq!(
                core.handle_datagram(t0, l, 1, 0),
                Verdict::Dropped(DropReason::Partition)
            );
        }
    }
    let own = link(&core, "ap-south", "ap-south");
    assert!(matches!(
        core.handle_datagram(t0, own, 1, 1),
        Verdict::Queued { .. }
    ));
    let cli = link(&core, UNCLASSIFIED, "ap-south");
    assert!(matches!(
        core.handle_datagram(t0, cli, 1, 2),
        Verdict::Queued { .. }
    ));
    let ue = link(&core, "us-east", "eu-west");
    assert!(matches!(
        core.handle_datagram(t0, ue, 1, 3),
        Verdict::Queued { .. }
    ));
}

#[test]
fn a_full_queue_drops_and_counts_per_link() {
    let limits = QueueLimits {
        max_packets: 3,
        max_bytes: 250,
    };
    let mut core = Core::seeded(table(), limits, 1);
    let t0 = Instant::now();
    let ab = link(&core, "us-east", "eu-west");
    let ac = link(&core, "us-east", "ap-south");
    let verdicts: Vec<_> = (0..4)
        .map(|i| core.handle_datagram(t0, ab, 10, i))
        .collect();
    assert_eq!(verdicts[3], Verdict::Dropped(DropReason::Overflow));
    // Bytes bound: 200 more bytes would exceed 250 on a fresh link.
    assert!(matches!(
        core.handle_datagram(t0, ac, 200, 9),
        Verdict::Queued { .. }
    ));
    assert_eq!(
        core.handle_datagram(t0, ac, 51, 10),
        Verdict::Dropped(DropReason::Overflow)
    );
    assert_eq!(core.counters(ab).dropped_overflow, 1);
    assert_eq!(core.counters(ac).dropped_overflow, 1);
    assert_eq!(core.queue_use(ab), (3, 30));
    // Once delivered, the room comes back.
    drain(&mut core, t0, t0 + ms(35));
    assert_eq!(core.queue_use(ab), (0, 0));
    assert!(matches!(
        core.handle_datagram(t0 + ms(35), ab, 10, 11),
        Verdict::Queued { .. }
    ));
}

#[test]
fn a_refused_send_is_not_counted_as_forwarded() {
    let mut core = Core::seeded(table(), BIG, 1);
    let t0 = Instant::now();
    let ab = link(&core, "us-east", "eu-west");
    core.handle_datagram(t0, ab, 10, 1);
    let t = core.poll_transmit(t0 + ms(35)).unwrap();
    core.send_failed(t.link, t.len);
    let c = core.counters(ab);
    assert_eq!(
        (c.packets_forwarded, c.bytes_forwarded, c.send_errors),
        (0, 0, 1)
    );
}

#[test]
fn link_changes_apply_to_new_datagrams_without_overtaking() {
    let mut core = Core::seeded(table(), BIG, 1);
    let t0 = Instant::now();
    let ab = link(&core, "us-east", "eu-west");
    core.handle_datagram(t0, ab, 1, 1);
    core.table_mut()
        .set_link("eu-west", "us-east", LinkParams::rtt(10))
        .unwrap();
    // Faster now, but not past the datagram still in flight.
    core.handle_datagram(t0, ab, 1, 2);
    core.handle_datagram(t0 + ms(40), ab, 1, 3);
    assert_eq!(
        drain(&mut core, t0, t0 + ms(50)),
        [(1, ms(35)), (2, ms(35)), (3, ms(45))]
    );
}

#[test]
fn a_links_losses_do_not_depend_on_other_links_traffic() {
    let lossy = LinkParams {
        rtt_ms: 10,
        jitter_ms: 3,
        loss: 0.3,
    };
    let run = |interleave: bool| {
        let mut t = table();
        t.set_link("us-east", "eu-west", lossy).unwrap();
        t.set_link("us-east", "ap-south", lossy).unwrap();
        let mut core = Core::seeded(t, BIG, 77);
        let t0 = Instant::now();
        let ab = link(&core, "us-east", "eu-west");
        let ac = link(&core, "us-east", "ap-south");
        let mut fate = Vec::new();
        for i in 0..500 {
            if interleave && i % 3 == 0 {
                core.handle_datagram(t0, ac, 1, 0);
                core.handle_datagram(t0, ab.reverse(), 1, 0);
            }
            fate.push(match core.handle_datagram(t0, ab, 1, i) {
                Verdict::Queued { at } => Some(at - t0),
                Verdict::Dropped(_) => None,
            });
        }
        fate
    };
    let (alone, mixed) = (run(false), run(true));
    assert!(alone.iter().any(Option::is_none) && alone.iter().any(Option::is_some));
    assert!(
        alone == mixed,
        "another link's traffic changed this link's draws"
    );
}
