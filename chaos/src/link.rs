//! The link model: what one direction of a region pair does to a packet.
//!
//! Pure functions of the parameters and a random source; time comes in as
//! an argument. Both the UDP engine and the TCP proxy take their delays from
//! here, so a link behaves the same whichever protocol crosses it.
//!
//! The model, per direction of a link:
//! - the one-way delay is half the configured round trip, plus jitter drawn
//!   uniformly from `[-jitter_ms, +jitter_ms]` for each packet, never below
//!   zero (so jitter can reorder datagrams, as netem's jitter does; the TCP
//!   proxy keeps order with [`InOrder`]);
//! - each datagram is lost independently with probability `loss` (a
//!   Bernoulli trial per datagram per direction, so a round trip survives
//!   with probability `(1 - loss)^2`). TCP bytes are never lost.

use std::time::{Duration, Instant};

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_JITTER_MS, MAX_RTT_MS};

/// What a link does to packets, the same in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkParams {
    /// Round-trip time, ms (0..=10 000). Each direction gets half.
    #[serde(default)]
    pub rtt_ms: u64,
    /// Jitter, ms (0..=5 000): each one-way delay moves by a uniform draw
    /// from `[-jitter_ms, +jitter_ms]`, floored at zero.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Probability (0.0..=1.0) that a datagram is dropped, per direction.
    #[serde(default)]
    pub loss: f64,
}

impl LinkParams {
    /// No delay, no jitter, no loss: what traffic from an unclassified
    /// source sees, and a region's own traffic unless configured.
    pub const ZERO: LinkParams = LinkParams {
        rtt_ms: 0,
        jitter_ms: 0,
        loss: 0.0,
    };

    /// A link with this round trip and neither jitter nor loss.
    pub fn rtt(rtt_ms: u64) -> LinkParams {
        LinkParams {
            rtt_ms,
            ..LinkParams::ZERO
        }
    }

    /// Checks the ranges; the error says which field broke which rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.rtt_ms > MAX_RTT_MS {
            return Err(format!(
                "rtt_ms must be at most {MAX_RTT_MS}, got {}",
                self.rtt_ms
            ));
        }
        if self.jitter_ms > MAX_JITTER_MS {
            return Err(format!(
                "jitter_ms must be at most {MAX_JITTER_MS}, got {}",
                self.jitter_ms
            ));
        }
        // Written so NaN fails too.
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(format!("loss must be within 0.0..=1.0, got {}", self.loss));
        }
        Ok(())
    }

    /// The one-way delay without jitter: half the round trip.
    pub fn one_way(&self) -> Duration {
        Duration::from_micros(self.rtt_ms.saturating_mul(500))
    }

    /// One draw of the one-way delay: half the round trip plus uniform
    /// jitter in `[-jitter_ms, +jitter_ms]` (microsecond steps), floored at
    /// zero. Draws nothing from `rng` when there is no jitter.
    pub fn sample_delay<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let base_us = i64::try_from(self.rtt_ms.saturating_mul(500)).unwrap_or(i64::MAX);
        if self.jitter_ms == 0 {
            return Duration::from_micros(base_us.unsigned_abs());
        }
        let j = i64::try_from(self.jitter_ms.saturating_mul(1_000)).unwrap_or(i64::MAX);
        let us = base_us.saturating_add(rng.random_range(-j..=j)).max(0);
        Duration::from_micros(us.unsigned_abs())
    }

    /// One Bernoulli trial: is this datagram lost? Draws nothing from `rng`
    /// when `loss` is 0 or 1.
    pub fn sample_loss<R: Rng + ?Sized>(&self, rng: &mut R) -> bool {
        if self.loss <= 0.0 {
            return false;
        }
        if self.loss >= 1.0 {
            return true;
        }
        rng.random::<f64>() < self.loss
    }
}

/// Delivery times for an ordered byte stream (one direction of a TCP
/// connection): a chunk is never delivered before the chunk sent ahead of
/// it, however the jitter falls. Like a real TCP receiver, which hands bytes
/// on in order, a late chunk holds back the ones behind it.
#[derive(Clone, Copy, Debug, Default)]
pub struct InOrder {
    last: Option<Instant>,
}

impl InOrder {
    /// When a chunk read at `now` with a drawn `delay` is delivered:
    /// `now + delay`, or the previous chunk's time if that is later.
    pub fn stamp(&mut self, now: Instant, delay: Duration) -> Instant {
        let at = now + delay;
        let at = match self.last {
            Some(last) if last > at => last,
            _ => at,
        };
        self.last = Some(at);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn delay_is_half_the_round_trip_without_jitter() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = LinkParams::rtt(70);
        assert_eq!(p.one_way(), Duration::from_millis(35));
        for _ in 0..10 {
            assert_eq!(p.sample_delay(&mut rng), Duration::from_millis(35));
        }
    }

    #[test]
    fn jitter_stays_within_bounds_and_averages_out() {
        let mut rng = StdRng::seed_from_u64(7);
        let p = LinkParams {
            rtt_ms: 100,
            jitter_ms: 10,
            loss: 0.0,
        };
        let n = 20_000u32;
        let mut sum = Duration::ZERO;
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for _ in 0..n {
            let d = p.sample_delay(&mut rng);
            assert!(d >= Duration::from_millis(40) && d <= Duration::from_millis(60));
            lo = lo.min(d);
            hi = hi.max(d);
            sum += d;
        }
        let mean = sum / n;
        assert!(mean > Duration::from_micros(49_800) && mean < Duration::from_micros(50_200));
        // The whole range is used, not a constant.
        assert!(lo < Duration::from_millis(41) && hi > Duration::from_millis(59));
    }

    #[test]
    fn jitter_larger_than_the_delay_floors_at_zero() {
        let mut rng = StdRng::seed_from_u64(3);
        let p = LinkParams {
            rtt_ms: 2,
            jitter_ms: 50,
            loss: 0.0,
        };
        let zeros = (0..1_000)
            .filter(|_| p.sample_delay(&mut rng) == Duration::ZERO)
            .count();
        assert!(zeros > 400, "about half the draws fall below zero: {zeros}");
    }

    #[test]
    fn same_seed_same_draws() {
        let p = LinkParams {
            rtt_ms: 140,
            jitter_ms: 20,
            loss: 0.3,
        };
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..100)
                .map(|_| (p.sample_delay(&mut rng), p.sample_loss(&mut rng)))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn loss_ratio_matches() {
        let mut rng = StdRng::seed_from_u64(11);
        let p = LinkParams {
            loss: 0.2,
            ..LinkParams::ZERO
        };
        let n = 50_000;
        let lost = (0..n).filter(|_| p.sample_loss(&mut rng)).count();
        let ratio = lost as f64 / n as f64;
        assert!((ratio - 0.2).abs() < 0.01, "{ratio}");
        assert!(!LinkParams::ZERO.sample_loss(&mut rng));
        let all = LinkParams {
            loss: 1.0,
            ..LinkParams::ZERO
        };
        assert!(all.sample_loss(&mut rng));
    }

    #[test]
    fn validate_names_the_field() {
        assert!(LinkParams::rtt(70).validate().is_ok());
        let e = LinkParams::rtt(MAX_RTT_MS + 1).validate().unwrap_err();
        assert!(e.contains("rtt_ms"), "{e}");
        let e = LinkParams {
            jitter_ms: MAX_JITTER_MS + 1,
            ..LinkParams::ZERO
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("jitter_ms"), "{e}");
        for loss in [-0.1, 1.5, f64::NAN] {
            let e = LinkParams {
                loss,
                ..LinkParams::ZERO
            }
            .validate()
            .unwrap_err();
            assert!(e.contains("loss"), "{e}");
        }
    }

    #[test]
    fn in_order_never_delivers_a_chunk_before_the_one_ahead() {
        let t0 = Instant::now();
        let mut order = InOrder::default();
        let a = order.stamp(t0, Duration::from_millis(50));
        // Read later but drawn a shorter delay: waits for `a`.
        let b = order.stamp(t0 + Duration::from_millis(1), Duration::from_millis(30));
        assert_eq!(b, a);
        let c = order.stamp(t0 + Duration::from_millis(10), Duration::from_millis(45));
        assert_eq!(c, t0 + Duration::from_millis(55));
    }
}
