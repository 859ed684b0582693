//! Gossip timing, sized for the cluster's worst round-trip time.
//!
//! SWIM's failure detector (Das et al., 2002, §3–4) probes one member per
//! *protocol period*; a probe that gets no direct ack within the *probe
//! timeout* is retried through `k` other members (indirect probe), and a
//! member that fails both is *suspected*. A suspect that does not refute the
//! suspicion (by gossiping a higher incarnation) within the *suspicion
//! timeout* is declared Down. On a WAN the indirect path can cross regions
//! twice, so each of these must scale with the worst cross-region RTT —
//! [`GossipTimers::for_max_rtt`] derives them from it.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::seal::SEAL_OVERHEAD;

/// The RTT [`GossipTimers::default`] is sized for: a cluster spanning
/// continents (300 ms worst cross-region round trip).
pub const DEFAULT_MAX_RTT_MS: u64 = 300;
/// Floor of the derived probe timeout: a scheduler hiccup on a loaded host
/// must not look like a dead peer.
pub const MIN_PROBE_RTT_MS: u64 = 100;
/// Floor of the derived protocol period (bounds gossip CPU and traffic).
pub const MIN_PROBE_PERIOD_MS: u64 = 300;
/// Protocol periods a suspect gets to refute before it is declared Down.
pub const SUSPICION_PERIODS: u64 = 5;
/// Smallest datagram that still holds a foca message naming three full-size
/// identities (a `PingReq`) after the seal.
pub const MIN_PACKET_BYTES: u32 = 1024;
/// Largest datagram (a jumbo-frame MTU); beyond it IP fragments.
pub const MAX_PACKET_BYTES: u32 = 9000;

/// Gossip timers and sizes. Every `_ms` field is milliseconds.
///
/// Defaults are [`GossipTimers::for_max_rtt`]`(300 ms)`; a single-region or
/// test cluster uses a smaller RTT. Check with [`GossipTimers::validate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipTimers {
    /// SWIM protocol period: one member is probed per period.
    /// `2 * probe_rtt_ms ..= 300_000`.
    pub probe_period_ms: u64,
    /// Wait for a direct ack before probing indirectly; should exceed the
    /// worst RTT. `10 ..= 60_000`.
    pub probe_rtt_ms: u64,
    /// Suspicion timeout: a suspect that does not refute in this time is
    /// declared Down. `probe_period_ms ..= 3_600_000`.
    pub suspect_to_down_ms: u64,
    /// Members asked to probe indirectly. `1 ..= 16`.
    pub num_indirect_probes: u32,
    /// Times each update or broadcast is piggybacked before it is dropped
    /// from the backlog. `1 ..= 64`.
    pub max_transmissions: u8,
    /// Period of extra gossip rounds (only sent while there are updates).
    /// `10 ..= 60_000`.
    pub gossip_interval_ms: u64,
    /// Members each extra gossip round goes to. `1 ..= 16`.
    pub gossip_fanout: u32,
    /// Period of announcing to a random member to learn members we missed.
    /// `1_000 ..= 86_400_000`.
    pub announce_interval_ms: u64,
    /// Period of announcing to members believed Down, which heals a
    /// partition without operator action. `1_000 ..= 86_400_000`.
    pub announce_down_interval_ms: u64,
    /// How long a Down member stays listed before it is forgotten.
    /// `60_000 ..= 604_800_000`.
    pub remove_down_after_ms: u64,
    /// Period of contacting the seeds while this node has no live peer.
    /// `100 ..= 600_000`.
    pub join_retry_ms: u64,
    /// Period of RTT probes (one member per tick, round-robin).
    /// `10 ..= 600_000`.
    pub rtt_probe_interval_ms: u64,
    /// Period of publishing this node's RTT and region-health reports.
    /// `100 ..= 3_600_000`.
    pub report_interval_ms: u64,
    /// Largest datagram sent or accepted, seal included, in bytes.
    /// `1024 ..= 9000`; keep it under the path MTU (1400 is safe on the
    /// Internet).
    pub max_packet_bytes: u32,
}

impl Default for GossipTimers {
    fn default() -> Self {
        GossipTimers::for_max_rtt(Duration::from_millis(DEFAULT_MAX_RTT_MS))
    }
}

/// A timer field breaks its rule. Nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timers.{field}: {reason}")]
pub struct TimersError {
    /// The offending field, as named in the config.
    pub field: &'static str,
    /// The rule it breaks.
    pub reason: String,
}

impl GossipTimers {
    /// Timers for a cluster whose worst round trip between any two nodes is
    /// `max_rtt` (measure it; add headroom for congestion):
    ///
    /// - `probe_rtt_ms = max(1.5 × rtt, 100)`: a direct ack needs one RTT.
    /// - `probe_period_ms = max(3 × probe_rtt, 300)`: the direct wait, then
    ///   an indirect probe through a helper, which costs two RTTs.
    /// - `suspect_to_down_ms = 5 × probe_period`: time for the suspicion to
    ///   reach the suspect by gossip and its refutation to come back, even
    ///   with some loss.
    /// - `gossip_interval_ms = clamp(probe_period / 3, 100, 500)`,
    ///   `join_retry_ms = max(probe_period, 1000)`,
    ///   `rtt_probe_interval_ms = probe_period`.
    ///
    /// Worst-case detection of a crashed node is about
    /// `2 × probe_period + suspect_to_down + a few gossip rounds`.
    /// The other fields keep their fixed defaults.
    pub fn for_max_rtt(max_rtt: Duration) -> GossipTimers {
        let rtt_ms = u64::try_from(max_rtt.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, 20_000);
        let probe_rtt_ms = (rtt_ms * 3 / 2).max(MIN_PROBE_RTT_MS);
        let probe_period_ms = (3 * probe_rtt_ms).max(MIN_PROBE_PERIOD_MS);
        GossipTimers {
            probe_period_ms,
            probe_rtt_ms,
            suspect_to_down_ms: SUSPICION_PERIODS * probe_period_ms,
            num_indirect_probes: 3,
            max_transmissions: 8,
            gossip_interval_ms: (probe_period_ms / 3).clamp(100, 500),
            gossip_fanout: 3,
            announce_interval_ms: 30_000,
            announce_down_interval_ms: 30_000,
            remove_down_after_ms: 3_600_000,
            join_retry_ms: probe_period_ms.max(1_000),
            rtt_probe_interval_ms: probe_period_ms,
            report_interval_ms: 5_000,
            max_packet_bytes: 1400,
        }
    }

    /// Checks every field against its documented range; the error names
    /// the first field that breaks one.
    pub fn validate(&self) -> Result<(), TimersError> {
        range("probe_rtt_ms", self.probe_rtt_ms, 10, 60_000)?;
        range(
            "probe_period_ms",
            self.probe_period_ms,
            self.probe_rtt_ms.saturating_mul(2),
            300_000,
        )?;
        range(
            "suspect_to_down_ms",
            self.suspect_to_down_ms,
            self.probe_period_ms,
            3_600_000,
        )?;
        range(
            "num_indirect_probes",
            self.num_indirect_probes.into(),
            1,
            16,
        )?;
        range("max_transmissions", self.max_transmissions.into(), 1, 64)?;
        range("gossip_interval_ms", self.gossip_interval_ms, 10, 60_000)?;
        range("gossip_fanout", self.gossip_fanout.into(), 1, 16)?;
        range(
            "announce_interval_ms",
            self.announce_interval_ms,
            1_000,
            86_400_000,
        )?;
        range(
            "announce_down_interval_ms",
            self.announce_down_interval_ms,
            1_000,
            86_400_000,
        )?;
        range(
            "remove_down_after_ms",
            self.remove_down_after_ms,
            60_000,
            604_800_000,
        )?;
        range("join_retry_ms", self.join_retry_ms, 100, 600_000)?;
        range(
            "rtt_probe_interval_ms",
            self.rtt_probe_interval_ms,
            10,
            600_000,
        )?;
        range(
            "report_interval_ms",
            self.report_interval_ms,
            100,
            3_600_000,
        )?;
        range(
            "max_packet_bytes",
            self.max_packet_bytes.into(),
            MIN_PACKET_BYTES.into(),
            MAX_PACKET_BYTES.into(),
        )?;
        Ok(())
    }

    /// The largest foca message: the datagram minus seal and frame kind.
    pub(crate) fn max_foca_bytes(&self) -> usize {
        (self.max_packet_bytes as usize).saturating_sub(SEAL_OVERHEAD + 1)
    }

    /// foca's configuration. Call only after [`Self::validate`] succeeded.
    pub(crate) fn to_foca(&self) -> Result<foca::Config, TimersError> {
        self.validate()?;
        let nz = |field, v: usize| {
            NonZeroUsize::new(v).ok_or_else(|| TimersError {
                field,
                reason: "must not be zero".into(),
            })
        };
        let periodic = |frequency_ms: u64, members: NonZeroUsize| foca::PeriodicParams {
            frequency: Duration::from_millis(frequency_ms),
            num_members: members,
        };
        let one = nz("announce", 1)?;
        Ok(foca::Config {
            probe_period: Duration::from_millis(self.probe_period_ms),
            probe_rtt: Duration::from_millis(self.probe_rtt_ms),
            num_indirect_probes: nz("num_indirect_probes", self.num_indirect_probes as usize)?,
            max_transmissions: NonZeroU8::new(self.max_transmissions).ok_or(TimersError {
                field: "max_transmissions",
                reason: "must not be zero".into(),
            })?,
            suspect_to_down_after: Duration::from_millis(self.suspect_to_down_ms),
            remove_down_after: Some(Duration::from_millis(self.remove_down_after_ms)),
            max_packet_size: nz("max_packet_bytes", self.max_foca_bytes())?,
            // Tell a member we consider Down, so a live one renews its
            // identity and rejoins instead of shouting into the void.
            notify_down_members: true,
            periodic_announce: Some(periodic(self.announce_interval_ms, one)),
            periodic_announce_to_down_members: Some(periodic(
                self.announce_down_interval_ms,
                nz("announce_down", 2)?,
            )),
            periodic_gossip: Some(periodic(
                self.gossip_interval_ms,
                nz("gossip_fanout", self.gossip_fanout as usize)?,
            )),
        })
    }
}

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), TimersError> {
    if value < min || value > max {
        return Err(TimersError {
            field,
            reason: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_wan_sized() {
        let t = GossipTimers::default();
        t.validate().unwrap();
        assert_eq!(t.probe_rtt_ms, 450);
        assert_eq!(t.probe_period_ms, 1350);
        assert_eq!(t.suspect_to_down_ms, 6750);
        assert_eq!(t.gossip_interval_ms, 450);
        let f = t.to_foca().unwrap();
        assert_eq!(f.max_packet_size.get(), 1400 - SEAL_OVERHEAD - 1);
    }

    #[test]
    fn for_max_rtt_scales_and_has_floors() {
        let lan = GossipTimers::for_max_rtt(Duration::from_millis(1));
        lan.validate().unwrap();
        assert_eq!(lan.probe_rtt_ms, MIN_PROBE_RTT_MS);
        assert_eq!(lan.probe_period_ms, MIN_PROBE_PERIOD_MS);
        assert_eq!(lan.suspect_to_down_ms, 1500);
        for rtt in [0, 20, 150, 300, 1_000, 10_000, u64::MAX / 2] {
            let t = GossipTimers::for_max_rtt(Duration::from_millis(rtt));
            t.validate().unwrap();
            assert!(t.probe_period_ms >= 2 * t.probe_rtt_ms);
            assert!(t.probe_rtt_ms as u128 >= Duration::from_millis(rtt).as_millis().min(20_000));
        }
    }

    #[test]
    fn validate_names_the_field() {
        let mut t = GossipTimers::default();
        t.probe_period_ms = t.probe_rtt_ms;
        let err = t.validate().unwrap_err();
        assert_eq!(err.field, "probe_period_ms");
        assert!(err.to_string().starts_with("timers.probe_period_ms"));

        let field = |t: GossipTimers| t.validate().unwrap_err().field;
        let base = GossipTimers::default;
        assert_eq!(
            field(GossipTimers {
                max_packet_bytes: 200,
                ..base()
            }),
            "max_packet_bytes"
        );
        assert_eq!(
            field(GossipTimers {
                suspect_to_down_ms: 1,
                ..base()
            }),
            "suspect_to_down_ms"
        );
        assert_eq!(
            field(GossipTimers {
                gossip_fanout: 0,
                ..base()
            }),
            "gossip_fanout"
        );
    }

    #[test]
    fn serde_defaults_fill_missing_fields() {
        let t: GossipTimers = serde_json::from_str(r#"{"probe_rtt_ms": 200}"#).unwrap();
        assert_eq!(t.probe_rtt_ms, 200);
        assert_eq!(t.probe_period_ms, GossipTimers::default().probe_period_ms);
        assert!(serde_json::from_str::<GossipTimers>(r#"{"probe_rtt": 1}"#).is_err());
    }
}
