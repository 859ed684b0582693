//! What the emulator reports: per-link parameters, partition state and
//! counters, per-listener flows and connections. [`Status`] is what the
//! library API, the control API (as JSON) and `meridian-wan status` show.
//!
//! Counters the engine task owns (datagrams) come from the core; counters
//! of the TCP proxies and listeners, which run in their own tasks, are
//! atomics in `Shared`, read when a status is built.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::Protocol;
use crate::core::DatagramCounters;
use crate::link::LinkParams;
use crate::table::Partition;

/// A snapshot of the emulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Region names, in order.
    pub regions: Vec<String>,
    /// Partitions in force, in the order applied.
    pub partitions: Vec<Partition>,
    /// Every directed pair of regions (a region's own traffic included),
    /// then links to and from unclassified senders that saw traffic.
    pub links: Vec<LinkStatus>,
    /// Every listener.
    pub listeners: Vec<ListenerStatus>,
    /// Datagrams in delay queues now, all links.
    pub queued_packets: usize,
    /// Their bytes.
    pub queued_bytes: usize,
    /// Datagrams dropped because the engine's input channel was full
    /// (the emulator itself is overloaded; not attributed to a link).
    pub input_overflow: u64,
}

/// One direction of a region pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Sending region (or `unclassified`).
    pub from: String,
    /// Receiving region (or `unclassified`).
    pub to: String,
    /// What the link does.
    pub params: LinkParams,
    /// Cut by a partition now.
    pub cut: bool,
    /// Datagrams in its delay queue now.
    pub queued_packets: usize,
    /// Their bytes.
    pub queued_bytes: usize,
    /// Datagram counters (UDP).
    pub datagrams: DatagramCounters,
    /// Byte-stream counters (TCP).
    pub streams: StreamCounters,
}

/// What happened to TCP traffic on one directed link, since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounters {
    /// Connections opened in this direction (client region → server
    /// region).
    pub connections: u64,
    /// Bytes delivered after their delay.
    pub bytes_forwarded: u64,
    /// Chunks held back by a partition until it healed (a partition stalls
    /// TCP rather than resetting it).
    pub stalled_chunks: u64,
}

/// One listener (front address).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Name.
    pub name: String,
    /// UDP or TCP.
    pub protocol: Protocol,
    /// Bound front address.
    pub listen: SocketAddr,
    /// Real address.
    pub upstream: SocketAddr,
    /// Upstream's region.
    pub region: String,
    /// Fixed sender region, or `None` when classified by source address.
    pub source_region: Option<String>,
    /// UDP flows or TCP connections open now.
    pub open: u64,
    /// Opened since start.
    pub opened: u64,
    /// Refused since start (flow or connection bound reached).
    pub refused: u64,
}

/// Atomic TCP counters of one link.
#[derive(Debug, Default)]
pub(crate) struct StreamStats {
    pub(crate) connections: AtomicU64,
    pub(crate) bytes_forwarded: AtomicU64,
    pub(crate) stalled_chunks: AtomicU64,
}

impl StreamStats {
    pub(crate) fn snapshot(&self) -> StreamCounters {
        StreamCounters {
            connections: self.connections.load(Ordering::Relaxed),
            bytes_forwarded: self.bytes_forwarded.load(Ordering::Relaxed),
            stalled_chunks: self.stalled_chunks.load(Ordering::Relaxed),
        }
    }
}

/// Atomic counters of one listener.
#[derive(Debug, Default)]
pub(crate) struct ListenerStats {
    pub(crate) open: AtomicU64,
    pub(crate) opened: AtomicU64,
    pub(crate) refused: AtomicU64,
}

/// Counters shared by the tasks of one emulator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) input_overflow: AtomicU64,
    /// Indexed by `LinkTable::link_slot`.
    pub(crate) streams: Vec<StreamStats>,
    /// In listener order, with the static part of their status.
    pub(crate) listeners: Vec<(ListenerStatus, ListenerStats)>,
}

impl Shared {
    pub(crate) fn listener_statuses(&self) -> Vec<ListenerStatus> {
        self.listeners
            .iter()
            .map(|(s, stats)| ListenerStatus {
                open: stats.open.load(Ordering::Relaxed),
                opened: stats.opened.load(Ordering::Relaxed),
                refused: stats.refused.load(Ordering::Relaxed),
                ..s.clone()
            })
            .collect()
    }
}

impl Status {
    /// The link from `from` to `to`, by name.
    pub fn link(&self, from: &str, to: &str) -> Option<&LinkStatus> {
        self.links.iter().find(|l| l.from == from && l.to == to)
    }

    /// A listener by name.
    pub fn listener(&self, name: &str) -> Option<&ListenerStatus> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// A plain-text table for people: partitions, then every link that has
    /// a delay, a cut or traffic, then listeners with flows or refusals.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.partitions.is_empty() {
            out.push_str("partitions: none\n");
        } else {
            let list: Vec<String> = self.partitions.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "partitions: {}", list.join("; "));
        }
        let _ = writeln!(
            out,
            "queued: {} datagrams, {} bytes; input overflow: {}\n",
            self.queued_packets, self.queued_bytes, self.input_overflow
        );
        let _ = writeln!(
            out,
            "{:<26} {:>6} {:>6} {:>6} {:>4} {:>10} {:>12} {:>7} {:>7} {:>7} {:>12}",
            "link",
            "rtt_ms",
            "jit_ms",
            "loss",
            "cut",
            "udp_pkts",
            "udp_bytes",
            "d_loss",
            "d_part",
            "d_ovfl",
            "tcp_bytes"
        );
        for l in &self.links {
            let d = &l.datagrams;
            let busy = l.params != LinkParams::ZERO
                || l.cut
                || d.packets_forwarded > 0
                || l.streams.bytes_forwarded > 0;
            if !busy {
                continue;
            }
            let _ = writeln!(
                out,
                "{:<26} {:>6} {:>6} {:>6} {:>4} {:>10} {:>12} {:>7} {:>7} {:>7} {:>12}",
                format!("{} -> {}", l.from, l.to),
                l.params.rtt_ms,
                l.params.jitter_ms,
                l.params.loss,
                if l.cut { "CUT" } else { "" },
                d.packets_forwarded,
                d.bytes_forwarded,
                d.dropped_loss,
                d.dropped_partition,
                d.dropped_overflow,
                l.streams.bytes_forwarded,
            );
        }
        let active: Vec<_> = self
            .listeners
            .iter()
            .filter(|l| l.opened > 0 || l.refused > 0)
            .collect();
        let _ = writeln!(
            out,
            "\nlisteners: {} ({} with traffic)",
            self.listeners.len(),
            active.len()
        );
        for l in active {
            let _ = writeln!(
                out,
                "  {:<28} {:?} {} -> {}  open {} opened {} refused {}",
                l.name, l.protocol, l.listen, l.upstream, l.open, l.opened, l.refused
            );
        }
        out
    }
}
