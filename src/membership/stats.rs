//! Counters of one node's gossip, kept as atomics (readable per node in
//! tests and by `Membership::stats`) and mirrored to the process-wide
//! Prometheus metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Gauge: members by state as this node sees them (self included).
pub const METRIC_MEMBERS: &str = "meridian_gossip_members";
/// Counter: members this node saw become Suspect.
pub const METRIC_SUSPICIONS: &str = "meridian_gossip_suspicions_total";
/// Counter: suspicions this node saw refuted (false suspicions).
pub const METRIC_REFUTED: &str = "meridian_gossip_refuted_total";
/// Counter: members this node saw declared Down.
pub const METRIC_DOWNS: &str = "meridian_gossip_down_total";
/// Counter `{reason}`: packets dropped before the protocol saw them.
pub const METRIC_AUTH_DROPPED: &str = "meridian_gossip_auth_dropped_total";
/// Counter: datagrams handed to the socket.
pub const METRIC_PACKETS_SENT: &str = "meridian_gossip_packets_sent_total";
/// Counter: datagrams read from the socket (before authentication).
pub const METRIC_PACKETS_RECEIVED: &str = "meridian_gossip_packets_received_total";
/// Counter `{reason}`: authenticated or local traffic dropped
/// (`overload`, `oversize`, `frame`, `send_error`, `backlog`).
pub const METRIC_DROPPED: &str = "meridian_gossip_dropped_total";
/// Counter: authenticated messages the protocol refused (version skew or bug).
pub const METRIC_PROTOCOL_ERRORS: &str = "meridian_gossip_protocol_errors_total";
/// Counter: times this node was declared Down while alive and rejoined.
pub const METRIC_REJOINS: &str = "meridian_gossip_rejoins_total";
/// Gauge `{peer_region}`: mean smoothed round trip to the live members of
/// a region, seconds (this node's own region included).
pub const METRIC_RTT: &str = "meridian_gossip_rtt_seconds";

/// `reason` labels of [`METRIC_AUTH_DROPPED`], in [`GossipStatsSnapshot`]
/// order.
pub const AUTH_DROP_REASONS: [&str; 7] = [
    "truncated",
    "magic",
    "version",
    "flags",
    "key_id",
    "tag",
    "replay",
];

/// Registers descriptions of the membership metrics with the installed
/// recorder (call once at start-up, after the recorder).
pub fn describe_metrics() {
    metrics::describe_gauge!(METRIC_MEMBERS, "Members by state as this node sees them.");
    metrics::describe_counter!(METRIC_SUSPICIONS, "Members seen becoming Suspect.");
    metrics::describe_counter!(
        METRIC_REFUTED,
        "Suspicions seen refuted (false suspicions)."
    );
    metrics::describe_counter!(METRIC_DOWNS, "Members seen declared Down.");
    metrics::describe_counter!(
        METRIC_AUTH_DROPPED,
        "Gossip packets dropped before authentication succeeded, by reason."
    );
    metrics::describe_counter!(METRIC_PACKETS_SENT, "Gossip datagrams sent.");
    metrics::describe_counter!(METRIC_PACKETS_RECEIVED, "Gossip datagrams received.");
    metrics::describe_counter!(METRIC_DROPPED, "Gossip traffic dropped, by reason.");
    metrics::describe_counter!(
        METRIC_PROTOCOL_ERRORS,
        "Authenticated gossip messages the protocol refused."
    );
    metrics::describe_counter!(METRIC_REJOINS, "Rejoins after being declared Down.");
    // Event counters exist from start-up at 0, so dashboards and alerts
    // see "none" rather than no data.
    for name in [
        METRIC_SUSPICIONS,
        METRIC_REFUTED,
        METRIC_DOWNS,
        METRIC_PACKETS_SENT,
        METRIC_PACKETS_RECEIVED,
        METRIC_PROTOCOL_ERRORS,
        METRIC_REJOINS,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for reason in AUTH_DROP_REASONS {
        metrics::counter!(METRIC_AUTH_DROPPED, "reason" => reason).absolute(0);
    }
    metrics::describe_gauge!(
        METRIC_RTT,
        metrics::Unit::Seconds,
        "Mean smoothed gossip round trip to the live members of peer_region."
    );
}

/// Live counters of one node.
#[derive(Debug, Default)]
pub(crate) struct GossipStats {
    sent: AtomicU64,
    received: AtomicU64,
    auth_dropped: [AtomicU64; AUTH_DROP_REASONS.len()],
    overload: AtomicU64,
    other_dropped: AtomicU64,
    protocol_errors: AtomicU64,
    suspicions: AtomicU64,
    refuted: AtomicU64,
    downs: AtomicU64,
    rejoins: AtomicU64,
}

/// A copy of one node's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GossipStatsSnapshot {
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Datagrams received (before authentication).
    pub packets_received: u64,
    /// Datagrams dropped by the seal or replay checks, all reasons.
    pub auth_dropped: u64,
    /// The same, per reason ([`AUTH_DROP_REASONS`]).
    pub auth_dropped_by_reason: BTreeMap<&'static str, u64>,
    /// Datagrams dropped because the owner task's queue was full.
    pub dropped_overload: u64,
    /// Other drops (oversize, bad frame, send errors, broadcast backlog).
    pub dropped_other: u64,
    /// Authenticated messages the protocol refused.
    pub protocol_errors: u64,
    /// Members seen becoming Suspect.
    pub suspicions: u64,
    /// Suspicions seen refuted.
    pub refuted: u64,
    /// Members seen declared Down.
    pub downs: u64,
    /// Own rejoins after being declared Down.
    pub rejoins: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl GossipStats {
    pub(crate) fn sent(&self) {
        bump(&self.sent);
        metrics::counter!(METRIC_PACKETS_SENT).increment(1);
    }

    pub(crate) fn received(&self) {
        bump(&self.received);
        metrics::counter!(METRIC_PACKETS_RECEIVED).increment(1);
    }

    pub(crate) fn auth_dropped(&self, reason: &'static str) {
        if let Some(i) = AUTH_DROP_REASONS.iter().position(|r| *r == reason) {
            bump(&self.auth_dropped[i]);
        }
        metrics::counter!(METRIC_AUTH_DROPPED, "reason" => reason).increment(1);
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        if reason == "overload" {
            bump(&self.overload);
        } else {
            bump(&self.other_dropped);
        }
        metrics::counter!(METRIC_DROPPED, "reason" => reason).increment(1);
    }

    pub(crate) fn protocol_error(&self) {
        bump(&self.protocol_errors);
        metrics::counter!(METRIC_PROTOCOL_ERRORS).increment(1);
    }

    pub(crate) fn suspicion(&self) {
        bump(&self.suspicions);
        metrics::counter!(METRIC_SUSPICIONS).increment(1);
    }

    pub(crate) fn refuted(&self) {
        bump(&self.refuted);
        metrics::counter!(METRIC_REFUTED).increment(1);
    }

    pub(crate) fn down(&self) {
        bump(&self.downs);
        metrics::counter!(METRIC_DOWNS).increment(1);
    }

    pub(crate) fn rejoin(&self) {
        bump(&self.rejoins);
        metrics::counter!(METRIC_REJOINS).increment(1);
    }

    pub(crate) fn snapshot(&self) -> GossipStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let by_reason: BTreeMap<&'static str, u64> = AUTH_DROP_REASONS
            .iter()
            .zip(&self.auth_dropped)
            .map(|(r, c)| (*r, get(c)))
            .collect();
        GossipStatsSnapshot {
            packets_sent: get(&self.sent),
            packets_received: get(&self.received),
            auth_dropped: by_reason.values().sum(),
            auth_dropped_by_reason: by_reason,
            dropped_overload: get(&self.overload),
            dropped_other: get(&self.other_dropped),
            protocol_errors: get(&self.protocol_errors),
            suspicions: get(&self.suspicions),
            refuted: get(&self.refuted),
            downs: get(&self.downs),
            rejoins: get(&self.rejoins),
        }
    }
}
