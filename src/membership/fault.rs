//! A faulty network layer over any [`PacketIo`], for tests, benchmarks and
//! chaos runs: drops outgoing datagrams with a probability, delays them per
//! destination, blocks destinations (partitions) and can record what was
//! sent (for replay tests). Faults apply on the sending side only; give
//! every node its own layer.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::runtime::PacketIo;

/// Delayed datagrams in flight per layer; beyond it new ones are dropped.
pub const MAX_DELAYED_IN_FLIGHT: usize = 16_384;

/// One-way delay to add to a datagram sent to an address.
pub type DelayFn = Arc<dyn Fn(SocketAddr) -> Duration + Send + Sync>;

/// What goes wrong.
#[derive(Clone)]
pub struct FaultPlan {
    /// Probability in `[0, 1]` that a sent datagram is dropped.
    pub loss: f64,
    /// One-way delay per destination (zero: sent at once).
    pub delay: DelayFn,
}

impl FaultPlan {
    /// No loss, no delay.
    pub fn none() -> FaultPlan {
        FaultPlan {
            loss: 0.0,
            delay: Arc::new(|_| Duration::ZERO),
        }
    }
}

/// The last `capacity` datagrams sent, with their destinations.
struct Recorder {
    capacity: usize,
    sent: VecDeque<(SocketAddr, Vec<u8>)>,
}

struct State {
    rng: StdRng,
    loss: f64,
    blocked: HashSet<SocketAddr>,
    recorder: Option<Recorder>,
}

/// [`PacketIo`] with injected faults.
pub struct FaultyIo<I> {
    inner: Arc<I>,
    delay: DelayFn,
    state: Mutex<State>,
    in_flight: Arc<AtomicUsize>,
    dropped: AtomicU64,
}

impl<I: PacketIo> FaultyIo<I> {
    /// Wraps `inner`; `seed` makes the loss pattern reproducible.
    pub fn new(inner: I, plan: FaultPlan, seed: u64) -> FaultyIo<I> {
        FaultyIo {
            inner: Arc::new(inner),
            delay: plan.delay,
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                loss: plan.loss.clamp(0.0, 1.0),
                blocked: HashSet::new(),
                recorder: None,
            }),
            in_flight: Arc::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Also keeps the last `capacity` datagrams sent (before faults apply).
    pub fn recording(self, capacity: usize) -> FaultyIo<I> {
        self.state().recorder = Some(Recorder {
            capacity,
            sent: VecDeque::new(),
        });
        self
    }

    /// The datagrams recorded so far, oldest first.
    pub fn recorded(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.state()
            .recorder
            .as_ref()
            .map(|r| r.sent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Changes the loss probability.
    pub fn set_loss(&self, loss: f64) {
        self.state().loss = loss.clamp(0.0, 1.0);
    }

    /// Drops everything sent to `addr` until [`Self::unblock`].
    pub fn block(&self, addr: SocketAddr) {
        self.state().blocked.insert(addr);
    }

    /// Undoes [`Self::block`].
    pub fn unblock(&self, addr: SocketAddr) {
        self.state().blocked.remove(&addr);
    }

    /// Datagrams dropped by the injected faults.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records, then decides whether the datagram is lost.
    fn lose(&self, buf: &[u8], target: SocketAddr) -> bool {
        let mut s = self.state();
        if let Some(rec) = s.recorder.as_mut() {
            if rec.sent.len() == rec.capacity {
                rec.sent.pop_front();
            }
            rec.sent.push_back((target, buf.to_vec()));
        }
        let lost = s.blocked.contains(&target) || s.rng.random::<f64>() < s.loss;
        if lost {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        lost
    }
}

impl<I: PacketIo> PacketIo for FaultyIo<I> {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<()> {
        if self.lose(buf, target) {
            return Ok(());
        }
        let delay = (self.delay)(target);
        if delay.is_zero() {
            return self.inner.send_to(buf, target).await;
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_DELAYED_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let inner = self.inner.clone();
        let in_flight = self.in_flight.clone();
        let buf = buf.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = inner.send_to(&buf, target).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
