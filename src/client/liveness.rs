//! When the SDK gives up on a node: the sans-IO liveness rules.
//!
//! A SIGKILLed process or a lost host sends nothing, not even a FIN: over
//! UDP, silence is the only sign. QUIC's idle timeout would notice it, but
//! only after seconds, and a bare idle timeout cannot tell a cross-region
//! link from loopback. So the SDK judges silence against the connection's
//! own measured round trip (quinn's smoothed RTT):
//!
//! - every connection sends a keep-alive PING after [`KEEP_ALIVE`] without
//!   receiving anything, and a live peer acknowledges it within its
//!   maximum ACK delay (RFC 9000 §13.2.1) plus one round trip;
//! - so a peer that sent nothing for [`silence_bound`]`(rtt)` = keep-alive +
//!   ACK delay + a few RTTs (never less than a floor that absorbs scheduling
//!   noise) is gone, whatever is in flight;
//! - a verdict needs two observations [`CONFIRM_GAP`] apart, so a client
//!   whose own runtime stalled (and has not yet read the packets waiting in
//!   its socket) does not blame the peer.
//!
//! Dialling follows the same idea: every endpoint is dialled at once, the
//! first completed handshake wins, and an endpoint whose handshake has not
//! completed within [`dial_grace`] of the winner's is avoided (not waited
//! for) until its handshake completes; one listed earlier that completes
//! within the grace becomes home.
//!
//! Everything here is pure (time and counters are passed in), so it is
//! tested without sockets; `super` feeds it quinn's statistics.

use std::time::{Duration, Instant};

/// Interval of the SDK's keep-alive PINGs on a connection that received
/// nothing for this long. One small packet per interval per quiet
/// connection; it is what makes silence meaningful.
pub const KEEP_ALIVE: Duration = Duration::from_millis(200);
/// The peer's maximum ACK delay: quinn's default `max_ack_delay` (25 ms,
/// RFC 9000 §18.2), which our nodes use.
pub const PEER_MAX_ACK_DELAY: Duration = Duration::from_millis(25);
/// Round trips a live peer's answer to a PING may take (loss of one PING or
/// ACK is covered by the next keep-alive).
pub const SILENCE_RTTS: u32 = 4;
/// The least slack beyond keep-alive and ACK delay, whatever the RTT: on
/// loopback 4 RTTs are microseconds, but a loaded host schedules in tens of
/// milliseconds.
pub const SILENCE_FLOOR: Duration = Duration::from_millis(250);
/// Time between the two observations of silence a verdict needs.
pub const CONFIRM_GAP: Duration = Duration::from_millis(20);
/// Most time between two looks at a connection while a request waits.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Handshakes to other endpoints may take this many times the winner's.
pub const DIAL_GRACE_FACTOR: u32 = 4;
/// The least grace after the first handshake, whatever it took.
pub const DIAL_GRACE_FLOOR: Duration = Duration::from_millis(100);

/// The least time [`close_drain_bound`] gives closing connections.
pub const CLOSE_DRAIN_FLOOR: Duration = Duration::from_millis(100);

/// How long closing connections with smoothed round trip up to `rtt` need
/// to drain: three probe timeouts (RFC 9000 §10.2), a PTO being about
/// srtt + 4·rttvar + max_ack_delay (RFC 9002 §6.2.1) with rttvar near srtt/2.
pub fn close_drain_bound(rtt: Duration) -> Duration {
    (3 * (3 * rtt + PEER_MAX_ACK_DELAY)).max(CLOSE_DRAIN_FLOOR)
}

/// Longest a live peer can stay silent on a connection with smoothed round
/// trip `rtt`, given our keep-alives.
pub fn silence_bound(rtt: Duration) -> Duration {
    KEEP_ALIVE + PEER_MAX_ACK_DELAY + (rtt * SILENCE_RTTS).max(SILENCE_FLOOR)
}

/// How long after the first completed handshake (which took `first`) the
/// other endpoints' handshakes are waited for before they are avoided.
pub fn dial_grace(first: Duration, ceiling: Duration) -> Duration {
    (first * DIAL_GRACE_FACTOR)
        .max(DIAL_GRACE_FLOOR)
        .min(ceiling)
}

/// What an observation of a connection concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Heard from recently enough; look again at `check_at`.
    Alive {
        /// When the next look is due.
        check_at: Instant,
    },
    /// Silent past the bound once; look again at `check_at` to confirm.
    Suspect {
        /// When the confirming look is due.
        check_at: Instant,
    },
    /// Silent past the bound at two looks: the peer is gone.
    Dead {
        /// How long nothing has been received.
        silent_for: Duration,
    },
}

/// What the SDK knows about one connection's received traffic.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// The peer's received-datagram count at the last change we saw.
    rx: u64,
    /// When we saw that count change (or started watching).
    heard_at: Instant,
    /// When silence past the bound was first seen, if it still lasts.
    suspect_since: Option<Instant>,
}

impl Liveness {
    /// Starts watching a connection that has received `rx` datagrams.
    pub fn new(now: Instant, rx: u64) -> Liveness {
        Liveness {
            rx,
            heard_at: now,
            suspect_since: None,
        }
    }

    /// Feeds the connection's received-datagram count `rx` and smoothed
    /// round trip `rtt`, observed at `now`.
    pub fn observe(&mut self, now: Instant, rx: u64, rtt: Duration) -> Verdict {
        let bound = silence_bound(rtt);
        if rx != self.rx {
            self.rx = rx;
            self.heard_at = now;
            self.suspect_since = None;
        }
        let silent_for = now.saturating_duration_since(self.heard_at);
        if silent_for <= bound {
            self.suspect_since = None;
            let due = (self.heard_at + bound).saturating_duration_since(now);
            let wait = due.clamp(Duration::from_millis(1), MAX_CHECK_INTERVAL);
            return Verdict::Alive {
                check_at: now + wait,
            };
        }
        match self.suspect_since {
            Some(since) if now.saturating_duration_since(since) >= CONFIRM_GAP => {
                Verdict::Dead { silent_for }
            }
            Some(since) => Verdict::Suspect {
                check_at: since + CONFIRM_GAP,
            },
            None => {
                self.suspect_since = Some(now);
                Verdict::Suspect {
                    check_at: now + CONFIRM_GAP,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: Duration = Duration::from_micros(200);
    const CROSS_REGION: Duration = Duration::from_millis(150);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_bound_scales_with_rtt_above_a_floor() {
        assert_eq!(
            silence_bound(LOOPBACK),
            KEEP_ALIVE + PEER_MAX_ACK_DELAY + SILENCE_FLOOR
        );
        assert_eq!(
            silence_bound(CROSS_REGION),
            KEEP_ALIVE + PEER_MAX_ACK_DELAY + CROSS_REGION * SILENCE_RTTS
        );
        // On loopback a dead node is noticed well inside the old 3 s idle timeout.
        assert!(silence_bound(LOOPBACK) < ms(500));
    }

    #[test]
    fn traffic_keeps_a_connection_alive() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, 10);
        let bound = silence_bound(LOOPBACK);
        for i in 1..100u64 {
            // A keep-alive answered every KEEP_ALIVE: never suspected.
            let now = t0 + KEEP_ALIVE * u32::try_from(i).unwrap();
            let v = l.observe(now, 10 + i, LOOPBACK);
            assert!(
                matches!(v, Verdict::Alive { check_at } if check_at > now),
                "{v:?}"
            );
        }
        let mut l = Liveness::new(t0, 10);
        assert!(matches!(
            l.observe(t0 + bound, 10, LOOPBACK),
            Verdict::Alive { .. }
        ));
    }

    #[test]
    fn silence_past_the_bound_is_confirmed_then_dead() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, 7);
        let bound = silence_bound(LOOPBACK);
        let t1 = t0 + bound + ms(1);
        assert_eq!(
            l.observe(t1, 7, LOOPBACK),
            Verdict::Suspect {
                check_at: t1 + CONFIRM_GAP
            }
        );
        // Too soon to confirm.
        assert!(matches!(
            l.observe(t1 + ms(5), 7, LOOPBACK),
            Verdict::Suspect { .. }
        ));
        assert_eq!(
            l.observe(t1 + CONFIRM_GAP, 7, LOOPBACK),
            Verdict::Dead {
                silent_for: bound + ms(1) + CONFIRM_GAP
            }
        );
    }

    #[test]
    fn a_packet_read_late_clears_suspicion() {
        // The client's runtime stalled: the first look after the stall sees
        // silence, but the packets waiting in the socket arrive before the
        // confirming look.
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, 1);
        let late = t0 + ms(2_000);
        assert!(matches!(
            l.observe(late, 1, LOOPBACK),
            Verdict::Suspect { .. }
        ));
        let v = l.observe(late + CONFIRM_GAP, 2, LOOPBACK);
        assert!(matches!(v, Verdict::Alive { .. }), "{v:?}");
    }

    #[test]
    fn a_slow_link_gets_a_longer_bound() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, 1);
        // Silent for longer than the loopback bound, within the cross-region one.
        let now = t0 + silence_bound(LOOPBACK) + ms(100);
        assert!(matches!(
            l.observe(now, 1, CROSS_REGION),
            Verdict::Alive { .. }
        ));
    }

    #[test]
    fn checks_are_never_further_apart_than_the_interval() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, 1);
        match l.observe(t0, 1, CROSS_REGION) {
            Verdict::Alive { check_at } => assert_eq!(check_at, t0 + MAX_CHECK_INTERVAL),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn closing_waits_a_few_probe_timeouts() {
        assert_eq!(close_drain_bound(LOOPBACK), CLOSE_DRAIN_FLOOR);
        assert_eq!(
            close_drain_bound(CROSS_REGION),
            3 * (3 * CROSS_REGION + PEER_MAX_ACK_DELAY)
        );
    }

    #[test]
    fn dial_grace_scales_with_the_first_handshake() {
        let ceiling = ms(3_000);
        assert_eq!(dial_grace(ms(2), ceiling), DIAL_GRACE_FLOOR);
        assert_eq!(dial_grace(ms(300), ceiling), ms(1_200));
        assert_eq!(dial_grace(ms(2_000), ceiling), ceiling);
    }
}
