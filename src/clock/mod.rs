//! The node's hybrid logical clock (HLC), on hlc-gen.
//!
//! Rules (Kulkarni et al., "Logical Physical Clocks", 2014, and our design):
//! - Timestamps issued by one node strictly increase, even when the physical
//!   clock jumps backwards (hlc-gen keeps `max(pt, wall)` and bumps the
//!   logical counter).
//! - They also increase across a restart: before issuing a timestamp whose
//!   physical part exceeds the persisted high-water mark, the clock persists a
//!   new mark `persist_window_ms` ahead (fsynced). On start it resumes strictly
//!   above the mark, so it can never re-issue a timestamp it issued before.
//! - A remote timestamp more than `max_offset_ms` ahead of our wall clock is
//!   refused with [`ClockError::OffsetTooLarge`] and counted in
//!   `meridian_clock_offset_rejections_total`; it does not move our clock.
//!
//! The wall clock is behind the [`PhysicalClock`] trait so tests can make it
//! jump; the high-water mark is behind [`HighWaterStore`] so tests can fail it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use hlc_gen::source::ManualClock;
use hlc_gen::{HlcGenerator, HlcTimestamp};

use crate::storage::MvccStore;
use crate::types::Timestamp;

/// Metric: remote timestamps refused for being too far ahead.
pub const METRIC_OFFSET_REJECTIONS: &str = "meridian_clock_offset_rejections_total";

/// Metric: committed timestamps applied that were beyond `max_offset_ms` ahead.
pub const METRIC_OFFSET_OBSERVED: &str = "meridian_clock_offset_observed_total";

/// The meta key under which the high-water mark is stored.
const HWM_META_KEY: &str = "hlc_high_water_unix_ms";

/// A source of wall-clock time in Unix milliseconds.
pub trait PhysicalClock: Send + Sync + 'static {
    /// Current wall-clock time, Unix milliseconds.
    fn now_unix_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl PhysicalClock for SystemClock {
    fn now_unix_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A settable clock for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualPhysicalClock(AtomicI64);

impl ManualPhysicalClock {
    /// A manual clock at `unix_ms`.
    pub fn new(unix_ms: i64) -> Self {
        ManualPhysicalClock(AtomicI64::new(unix_ms))
    }
    /// Sets the time (it may go backwards: that is the point).
    pub fn set(&self, unix_ms: i64) {
        self.0.store(unix_ms, Ordering::SeqCst);
    }
}

impl PhysicalClock for ManualPhysicalClock {
    fn now_unix_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A wall clock shifted by a fixed offset: fault injection (`clock.offset_ms`)
/// for tests and drills of clock skew between real nodes.
#[derive(Clone, Copy, Debug)]
pub struct OffsetClock<C> {
    inner: C,
    offset_ms: i64,
}

impl<C: PhysicalClock> OffsetClock<C> {
    /// `inner` shifted by `offset_ms` (negative = behind).
    pub fn new(inner: C, offset_ms: i64) -> Self {
        OffsetClock { inner, offset_ms }
    }
}

impl<C: PhysicalClock> PhysicalClock for OffsetClock<C> {
    fn now_unix_ms(&self) -> i64 {
        self.inner.now_unix_ms().saturating_add(self.offset_ms)
    }
}

impl<T: PhysicalClock> PhysicalClock for Arc<T> {
    fn now_unix_ms(&self) -> i64 {
        (**self).now_unix_ms()
    }
}

/// Where the high-water mark lives.
pub trait HighWaterStore: Send + Sync + 'static {
    /// The persisted mark in Unix milliseconds, if any.
    fn load_mark(&self) -> Result<Option<i64>, ClockError>;
    /// Persists the mark durably before returning.
    fn persist_mark(&self, unix_ms: i64) -> Result<(), ClockError>;
}

impl HighWaterStore for MvccStore {
    fn load_mark(&self) -> Result<Option<i64>, ClockError> {
        let raw = self
            .meta_get(HWM_META_KEY)
            .map_err(|e| ClockError::Persist(e.to_string()))?;
        match raw {
            None => Ok(None),
            Some(bytes) => {
                let arr: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    ClockError::Persist(format!(
                        "high-water mark has {} bytes, want 8",
                        bytes.len()
                    ))
                })?;
                Ok(Some(i64::from_be_bytes(arr)))
            }
        }
    }

    fn persist_mark(&self, unix_ms: i64) -> Result<(), ClockError> {
        self.meta_put_durable(HWM_META_KEY, &unix_ms.to_be_bytes())
            .map_err(|e| ClockError::Persist(e.to_string()))
    }
}

/// Errors of the clock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// The remote timestamp is too far ahead; it was ignored and our clock did not move.
    #[error("remote timestamp {remote} is {ahead_ms} ms ahead of local clock (max_offset_ms {max_offset_ms})")]
    OffsetTooLarge {
        /// The refused timestamp.
        remote: Timestamp,
        /// How far ahead of our wall clock it was.
        ahead_ms: i64,
        /// The configured bound.
        max_offset_ms: u64,
    },
    /// The high-water mark could not be persisted; no timestamp was issued.
    /// The node must stop issuing timestamps (it poisons itself).
    #[error("cannot persist HLC high-water mark: {0}")]
    Persist(String),
    /// The HLC ran out of range (physical time beyond hlc-gen's 42-bit field or
    /// logical counter overflow); no timestamp was issued.
    #[error("hybrid logical clock out of range")]
    OutOfRange,
}

/// The node's hybrid logical clock. Shared by reference (`Arc<Hlc>`).
pub struct Hlc {
    /// hlc-gen's algorithm, fed our wall clock before every step.
    generator: HlcGenerator<ManualClock>,
    wall: Box<dyn PhysicalClock>,
    store: Box<dyn HighWaterStore>,
    /// Persisted mark (Unix ms): no issued timestamp has a physical part above it.
    mark: AtomicI64,
    /// Serialises mark persistence so two threads never both fsync for one step.
    persist_lock: Mutex<()>,
    persist_window_ms: i64,
    max_offset_ms: u64,
    /// The most any remote timestamp checked or observed since the last
    /// [`Hlc::take_max_remote_ahead_ms`] was ahead of our wall clock, ms.
    max_remote_ahead_ms: AtomicI64,
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hlc")
            .field("mark", &self.mark.load(Ordering::Relaxed))
            .field("max_offset_ms", &self.max_offset_ms)
            .finish()
    }
}

fn to_hlc(ts: Timestamp) -> Result<HlcTimestamp, ClockError> {
    HlcTimestamp::from_parts(ts.physical_unix_ms(), ts.logical())
        .map_err(|_| ClockError::OutOfRange)
}

fn from_hlc(ts: HlcTimestamp) -> Result<Timestamp, ClockError> {
    let (pt, lc) = ts.parts();
    Timestamp::from_parts(pt, lc).ok_or(ClockError::OutOfRange)
}

impl Hlc {
    /// Opens the clock: resumes strictly above the persisted high-water mark.
    pub fn open(
        wall: impl PhysicalClock,
        store: impl HighWaterStore,
        max_offset_ms: u64,
        persist_window_ms: u64,
    ) -> Result<Hlc, ClockError> {
        let mark = store.load_mark()?.unwrap_or(i64::MIN);
        let generator = HlcGenerator::<ManualClock>::manual(0);
        generator.set_current_timestamp(wall.now_unix_ms());
        if mark != i64::MIN {
            // Every timestamp issued before the restart has physical part <= mark,
            // so starting at (mark + 1, 0) puts us strictly above all of them.
            let floor =
                HlcTimestamp::from_parts(mark + 1, 0).map_err(|_| ClockError::OutOfRange)?;
            generator
                .update(&floor)
                .map_err(|_| ClockError::OutOfRange)?;
        }
        Ok(Hlc {
            generator,
            wall: Box::new(wall),
            store: Box::new(store),
            mark: AtomicI64::new(mark),
            persist_lock: Mutex::new(()),
            persist_window_ms: i64::try_from(persist_window_ms).unwrap_or(i64::MAX),
            max_offset_ms,
            max_remote_ahead_ms: AtomicI64::new(0),
        })
    }

    /// The configured `max_offset_ms`.
    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// The most any remote timestamp checked ([`Hlc::check_remote`]) or
    /// observed ([`Hlc::observe`]) since the previous call was ahead of
    /// this node's wall clock, in ms (0 when none was ahead), and starts a
    /// new window. This is the offset the refusal rule compares with
    /// `max_offset_ms`; a node publishes it as
    /// `meridian_clock_remote_ahead_seconds`.
    pub fn take_max_remote_ahead_ms(&self) -> i64 {
        self.max_remote_ahead_ms.swap(0, Ordering::Relaxed)
    }

    /// Issues a new timestamp, strictly greater than every one issued before.
    pub fn now(&self) -> Result<Timestamp, ClockError> {
        self.generator
            .set_current_timestamp(self.wall.now_unix_ms());
        let ts = self
            .generator
            .next_timestamp()
            .ok_or(ClockError::OutOfRange)?;
        let ts = from_hlc(ts)?;
        self.ensure_mark(ts)?;
        Ok(ts)
    }

    /// The latest timestamp issued or observed, without issuing a new one.
    pub fn last(&self) -> Timestamp {
        from_hlc(self.generator.timestamp()).unwrap_or(Timestamp::ZERO)
    }

    /// Merges a timestamp received from another node (HLC receive rule) and
    /// returns our new clock value, or refuses it when it is too far ahead.
    pub fn update(&self, remote: Timestamp) -> Result<Timestamp, ClockError> {
        self.check_remote(remote)?;
        let wall = self.wall.now_unix_ms();
        self.generator.set_current_timestamp(wall);
        let merged = self
            .generator
            .update(&to_hlc(remote)?)
            .map_err(|_| ClockError::OutOfRange)?;
        let merged = from_hlc(merged)?;
        self.ensure_mark(merged)?;
        Ok(merged)
    }

    /// Refuses (logged, counted in `meridian_clock_offset_rejections_total`)
    /// a timestamp from another node whose physical part is more than
    /// `max_offset_ms` ahead of our wall clock, without merging anything:
    /// the check every peer path runs on timestamps it is about to accept
    /// (proposed log entries, snapshots) before they can become committed
    /// state here. design.md, Clocks: "A node refuses a message whose
    /// physical time is more than `max_offset` ahead of its own clock, and
    /// logs and counts it."
    pub fn check_remote(&self, remote: Timestamp) -> Result<(), ClockError> {
        let wall = self.wall.now_unix_ms();
        let ahead_ms = remote.physical_unix_ms().saturating_sub(wall);
        self.max_remote_ahead_ms
            .fetch_max(ahead_ms, Ordering::Relaxed);
        if ahead_ms > i64::try_from(self.max_offset_ms).unwrap_or(i64::MAX) {
            metrics::counter!(METRIC_OFFSET_REJECTIONS).increment(1);
            tracing::warn!(%remote, ahead_ms, max_offset_ms = self.max_offset_ms, "refused remote timestamp");
            return Err(ClockError::OffsetTooLarge {
                remote,
                ahead_ms,
                max_offset_ms: self.max_offset_ms,
            });
        }
        Ok(())
    }

    /// Merges a timestamp that is already committed (a replicated log entry
    /// applied here): unlike [`Hlc::update`] it is never refused, because the
    /// write happened whatever our clock says; a large offset is logged and
    /// counted so operators see the skew.
    pub fn observe(&self, ts: Timestamp) {
        let wall = self.wall.now_unix_ms();
        let ahead_ms = ts.physical_unix_ms().saturating_sub(wall);
        self.max_remote_ahead_ms
            .fetch_max(ahead_ms, Ordering::Relaxed);
        if ahead_ms > i64::try_from(self.max_offset_ms).unwrap_or(i64::MAX) {
            metrics::counter!(METRIC_OFFSET_OBSERVED).increment(1);
            tracing::warn!(%ts, ahead_ms, "applied a committed timestamp far ahead of the local clock");
        }
        self.generator.set_current_timestamp(wall);
        let merged = to_hlc(ts)
            .and_then(|h| {
                self.generator
                    .update(&h)
                    .map_err(|_| ClockError::OutOfRange)
            })
            .and_then(from_hlc);
        match merged {
            Ok(m) => {
                if let Err(e) = self.ensure_mark(m) {
                    tracing::error!(error = %e, "cannot persist the clock mark after observing a timestamp");
                }
            }
            Err(e) => tracing::error!(error = %e, %ts, "cannot merge an observed timestamp"),
        }
    }

    /// The persisted high-water mark in Unix milliseconds (`i64::MIN` if none yet).
    pub fn high_water_mark_unix_ms(&self) -> i64 {
        self.mark.load(Ordering::SeqCst)
    }

    /// Persists a new mark before `ts` may be handed out, if `ts` is above the current one.
    fn ensure_mark(&self, ts: Timestamp) -> Result<(), ClockError> {
        let physical = ts.physical_unix_ms();
        if physical <= self.mark.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _guard = self
            .persist_lock
            .lock()
            .map_err(|_| ClockError::Persist("clock persist lock poisoned".into()))?;
        if physical <= self.mark.load(Ordering::SeqCst) {
            return Ok(()); // another thread persisted a mark covering us meanwhile
        }
        let new_mark = physical.saturating_add(self.persist_window_ms);
        self.store.persist_mark(new_mark)?;
        self.mark.store(new_mark, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory mark store that can be shared between "restarts".
    #[derive(Clone, Default)]
    struct MemMark(Arc<Mutex<Option<i64>>>, Arc<std::sync::atomic::AtomicBool>);

    impl HighWaterStore for MemMark {
        fn load_mark(&self) -> Result<Option<i64>, ClockError> {
            Ok(*self.0.lock().unwrap())
        }
        fn persist_mark(&self, unix_ms: i64) -> Result<(), ClockError> {
            if self.1.load(Ordering::SeqCst) {
                return Err(ClockError::Persist("injected failure".into()));
            }
            *self.0.lock().unwrap() = Some(unix_ms);
            Ok(())
        }
    }

    const T0: i64 = 1_790_000_000_000;

    #[test]
    fn monotonic_when_wall_clock_jumps_backwards() {
        let wall = Arc::new(ManualPhysicalClock::new(T0));
        let hlc = Hlc::open(wall.clone(), MemMark::default(), 500, 1000).unwrap();
        let mut last = hlc.now().unwrap();
        for step in 0..1000i64 {
            // Jump back by up to 10 s, and forward again, repeatedly.
            let jump = if step % 3 == 0 { -10_000 } else { 7 };
            wall.set(T0 + step * 3 + jump);
            let ts = hlc.now().unwrap();
            assert!(ts > last, "{ts} not after {last}");
            last = ts;
        }
    }

    #[test]
    fn monotonic_across_restart_even_if_wall_clock_went_back() {
        let marks = MemMark::default();
        let wall = Arc::new(ManualPhysicalClock::new(T0));
        let hlc = Hlc::open(wall.clone(), marks.clone(), 500, 1000).unwrap();
        let mut issued = Vec::new();
        for i in 0..100 {
            wall.set(T0 + i);
            issued.push(hlc.now().unwrap());
        }
        let before = *issued.last().unwrap();
        drop(hlc);
        // Restart with the wall clock a minute in the past.
        wall.set(T0 - 60_000);
        let hlc = Hlc::open(wall.clone(), marks.clone(), 500, 1000).unwrap();
        let after = hlc.now().unwrap();
        assert!(after > before, "{after} not after {before}");
        assert!(hlc.high_water_mark_unix_ms() >= after.physical_unix_ms());
    }

    #[test]
    fn mark_is_persisted_before_issuing_above_it() {
        let marks = MemMark::default();
        let wall = Arc::new(ManualPhysicalClock::new(T0));
        let hlc = Hlc::open(wall.clone(), marks.clone(), 500, 1000).unwrap();
        let ts = hlc.now().unwrap();
        let mark = marks.load_mark().unwrap().unwrap();
        assert!(mark >= ts.physical_unix_ms());
        // Beyond the window, a failing store refuses to issue.
        marks.1.store(true, Ordering::SeqCst);
        wall.set(T0 + 5_000);
        assert!(matches!(hlc.now(), Err(ClockError::Persist(_))));
        // Within the window no persistence is needed.
        marks.1.store(false, Ordering::SeqCst);
        assert!(hlc.now().is_ok());
    }

    #[test]
    fn remote_beyond_max_offset_is_refused_and_does_not_move_the_clock() {
        let wall = Arc::new(ManualPhysicalClock::new(T0));
        let hlc = Hlc::open(wall.clone(), MemMark::default(), 500, 1000).unwrap();
        let before = hlc.now().unwrap();
        let far = Timestamp::from_parts(T0 + 501, 0).unwrap();
        let err = hlc.update(far).unwrap_err();
        assert!(
            matches!(err, ClockError::OffsetTooLarge { ahead_ms: 501, .. }),
            "{err}"
        );
        assert!(hlc.last() < far);
        // Within the bound it is merged: the next local timestamp is above it.
        let near = Timestamp::from_parts(T0 + 400, 3).unwrap();
        let merged = hlc.update(near).unwrap();
        assert!(merged > near && merged > before);
        assert!(hlc.now().unwrap() > near);
    }

    #[test]
    fn the_largest_remote_lead_is_reported_once_per_window() {
        let wall = Arc::new(ManualPhysicalClock::new(T0));
        let hlc = Hlc::open(wall.clone(), MemMark::default(), 500, 1000).unwrap();
        assert_eq!(hlc.take_max_remote_ahead_ms(), 0);
        hlc.check_remote(Timestamp::from_parts(T0 + 120, 0).unwrap())
            .unwrap();
        hlc.observe(Timestamp::from_parts(T0 + 300, 0).unwrap());
        // A refused timestamp counts too: it is the offset being watched.
        assert!(hlc
            .check_remote(Timestamp::from_parts(T0 + 700, 0).unwrap())
            .is_err());
        hlc.check_remote(Timestamp::from_parts(T0 - 50, 0).unwrap())
            .unwrap();
        assert_eq!(hlc.take_max_remote_ahead_ms(), 700);
        // A new window starts empty.
        assert_eq!(hlc.take_max_remote_ahead_ms(), 0);
        assert_eq!(hlc.max_offset_ms(), 500);
    }

    #[test]
    fn offset_clock_shifts_the_wall_clock() {
        let wall = Arc::new(ManualPhysicalClock::new(T0));
        assert_eq!(
            OffsetClock::new(wall.clone(), 3_000).now_unix_ms(),
            T0 + 3_000
        );
        assert_eq!(OffsetClock::new(wall, -250).now_unix_ms(), T0 - 250);
    }

    #[test]
    fn timestamp_packing_matches_hlc_gen() {
        let ts = Timestamp::from_parts(T0, 42).unwrap();
        let h = to_hlc(ts).unwrap();
        assert_eq!(h.as_u64(), ts.0);
        assert_eq!(from_hlc(h).unwrap(), ts);
    }
}
