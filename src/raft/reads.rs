//! Linearizable-read confirmations shared by the reads that wait together
//! when many wait at once (etcd's read-index batching, past a threshold).
//!
//! A linearizable read at a range's leader first confirms that the node
//! still leads and that its state machine has applied everything committed
//! when the read arrived (openraft's `ensure_linearizable`: a lease check,
//! or a heartbeat round when the lease is stale, then a wait for apply).
//! Each confirmation is a message through the group's core task and a pass
//! of its loop. While few reads of a range are in flight, each makes its
//! own ([`ReadBatcher::admit`] lets it through: the lone read's path is
//! exactly the unbatched one). Past `raft.direct_read_confirmations`
//! ([`DEFAULT_DIRECT_CONFIRMATIONS`] by default) in flight, a
//! read joins a shared confirmation instead, so the core loop sees one
//! message per batch rather than one per read.
//!
//! Why not batch always: one shared confirmation in flight at a time makes
//! a closed loop of readers wait for each other (measured in
//! docs/benchmarks.md, "Stop 26": 10-14% fewer reads at 1 and 64 clients);
//! only with hundreds of concurrent reads of one range does the core loop,
//! not the confirmation, set the pace (43% more reads at 256 clients).
//!
//! Why a shared confirmation is linearizable: one started at `t` proves that
//! at `t` this node led the range and that everything committed by `t` is
//! applied when it completes. A read that arrived at or before `t` is
//! answered from that state, so it sees every write acknowledged before it
//! arrived. A read never takes the result of a confirmation that started
//! before it arrived: it waits for the next one ([`Batches::join`]).
//!
//! [`Batches`] is the decision (sans-IO, unit-tested); [`ReadBatcher`] runs
//! it: the first reader with no shared confirmation in flight starts one on
//! a task of its own (a reader that gives up does not strand the others),
//! and when a confirmation finishes with readers waiting for a newer one,
//! that task starts the next at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Confirmations of one range made one per read that may be in flight at
/// once by default (`raft.direct_read_confirmations`); a read arriving past
/// them shares a confirmation instead.
pub const DEFAULT_DIRECT_CONFIRMATIONS: usize = 64;

/// Counter: confirmations run for reads that share them.
pub const METRIC_SHARED_CONFIRMATIONS: &str = "meridian_raft_shared_read_confirmations_total";
/// Counter: linearizable reads answered by a shared confirmation.
pub const METRIC_SHARED_READS: &str = "meridian_raft_shared_reads_total";

// Registered once, at the first shared read (a `metrics::counter!` call
// looks its handle up in the recorder each time); that is after the node
// installed its recorder, which it does before serving.
static SHARED_READS: std::sync::LazyLock<metrics::Counter> =
    std::sync::LazyLock::new(|| metrics::counter!(METRIC_SHARED_READS));
static SHARED_CONFIRMATIONS: std::sync::LazyLock<metrics::Counter> =
    std::sync::LazyLock::new(|| metrics::counter!(METRIC_SHARED_CONFIRMATIONS));

/// Generations of confirmations: which one a reader needs, and whether a
/// new one must start.
#[derive(Debug, Default)]
pub struct Batches {
    /// The last confirmation started (0: none yet).
    started: u64,
    /// The last confirmation finished.
    finished: u64,
    /// A reader waits for confirmation `started + 1`, not started yet.
    waiting: bool,
}

/// What a reader arriving now must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The first confirmation whose result answers this reader.
    pub needs: u64,
    /// Whether this reader starts that confirmation (none was in flight).
    pub start: bool,
}

impl Batches {
    /// A reader arrives. With nothing in flight it starts a confirmation;
    /// with one in flight it needs the next (the one in flight started
    /// before it arrived, so its result proves nothing about this reader).
    pub fn join(&mut self) -> Joined {
        if self.started == self.finished {
            self.started += 1;
            Joined {
                needs: self.started,
                start: true,
            }
        } else {
            self.waiting = true;
            Joined {
                needs: self.started + 1,
                start: false,
            }
        }
    }

    /// Confirmation `generation` finished. Returns the generation to start
    /// now, if readers wait for one.
    pub fn finished(&mut self, generation: u64) -> Option<u64> {
        debug_assert_eq!(generation, self.started, "one confirmation runs at a time");
        self.finished = generation;
        if self.waiting {
            self.waiting = false;
            self.started += 1;
            Some(self.started)
        } else {
            None
        }
    }
}

/// Why a confirmation failed; every reader it answers gets the same.
#[derive(Debug)]
pub enum ConfirmError<E> {
    /// It did not finish within the batcher's bound.
    TimedOut(Duration),
    /// openraft refused it (not the leader, shutting down, ...).
    Refused(Arc<E>),
}

// Not derived: that would ask `E: Clone`, and the error is shared by `Arc`.
impl<E> Clone for ConfirmError<E> {
    fn clone(&self) -> Self {
        match self {
            ConfirmError::TimedOut(d) => ConfirmError::TimedOut(*d),
            ConfirmError::Refused(e) => ConfirmError::Refused(Arc::clone(e)),
        }
    }
}

/// The outcome of confirmation `generation` (0: none finished yet).
type Outcome<E> = (u64, Result<(), ConfirmError<E>>);

/// One confirmation, boxed so a batcher can hold how to make them.
type ConfirmFn<E> =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), E>> + Send>> + Send + Sync>;

/// How a read confirms its range's leadership.
#[must_use = "the permit counts a direct confirmation in flight until dropped"]
pub enum Admission<'a> {
    /// On its own, as if there were no batcher; the permit counts it as in
    /// flight until dropped.
    Direct(DirectPermit<'a>),
    /// Through [`ReadBatcher::confirm_shared`].
    Shared,
}

/// One direct confirmation in flight (see [`Admission::Direct`]).
pub struct DirectPermit<'a>(&'a AtomicUsize);

impl Drop for DirectPermit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs [`Batches`] for one range group: see the module docs.
pub struct ReadBatcher<E> {
    /// Direct confirmations in flight.
    direct: AtomicUsize,
    /// How many may be.
    direct_limit: usize,
    batches: Mutex<Batches>,
    outcomes: tokio::sync::watch::Sender<Outcome<E>>,
    /// Longest one confirmation may take.
    bound: Duration,
    confirm: ConfirmFn<E>,
}

impl<E: Send + Sync + 'static> ReadBatcher<E> {
    /// A batcher letting `direct_limit` confirmations run one per read and
    /// making each shared one with `confirm`, which may take at most
    /// `bound`.
    pub fn new<F, Fut>(direct_limit: usize, bound: Duration, confirm: F) -> Arc<Self>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        Arc::new(ReadBatcher {
            direct: AtomicUsize::new(0),
            direct_limit,
            batches: Mutex::new(Batches::default()),
            outcomes: tokio::sync::watch::Sender::new((0, Ok(()))),
            bound,
            confirm: Box::new(move || Box::pin(confirm())),
        })
    }

    /// Whether a read arriving now confirms on its own or shares.
    pub fn admit(&self) -> Admission<'_> {
        // Counted before the check, so racing readers can never exceed the
        // limit; one may share while another's count is being taken back,
        // which is only a shared confirmation more.
        if self.direct.fetch_add(1, Ordering::AcqRel) < self.direct_limit {
            Admission::Direct(DirectPermit(&self.direct))
        } else {
            self.direct.fetch_sub(1, Ordering::AcqRel);
            Admission::Shared
        }
    }

    /// Waits for a shared confirmation that started after this call began,
    /// and returns its outcome.
    pub async fn confirm_shared(self: &Arc<Self>) -> Result<(), ConfirmError<E>> {
        SHARED_READS.increment(1);
        // Subscribed before joining, so no outcome is missed in between.
        let mut outcomes = self.outcomes.subscribe();
        let joined = self
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join();
        if joined.start {
            tokio::spawn(Arc::clone(self).run(joined.needs));
        }
        let outcome = outcomes
            .wait_for(|(generation, _)| *generation >= joined.needs)
            .await;
        match outcome {
            Ok(o) => o.1.clone(),
            // The sender lives in `self`, which this call holds.
            Err(_) => Err(ConfirmError::TimedOut(self.bound)),
        }
    }

    /// Runs confirmation `generation`, then the next ones while readers
    /// wait for them.
    async fn run(self: Arc<Self>, mut generation: u64) {
        loop {
            SHARED_CONFIRMATIONS.increment(1);
            let result = match tokio::time::timeout(self.bound, (self.confirm)()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ConfirmError::Refused(Arc::new(e))),
                Err(_) => Err(ConfirmError::TimedOut(self.bound)),
            };
            // The previous outcome is replaced: every reader it answered
            // has taken it or will take this later one.
            drop(self.outcomes.send_replace((generation, result)));
            let next = self
                .batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .finished(generation);
            match next {
                Some(g) => generation = g,
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_reader_never_takes_a_confirmation_that_started_before_it() {
        let mut b = Batches::default();
        // Idle: the first reader starts confirmation 1.
        assert_eq!(
            b.join(),
            Joined {
                needs: 1,
                start: true
            }
        );
        // While 1 runs, later readers need 2, and nobody starts it yet.
        assert_eq!(
            b.join(),
            Joined {
                needs: 2,
                start: false
            }
        );
        assert_eq!(
            b.join(),
            Joined {
                needs: 2,
                start: false
            }
        );
        // 1 finishes with readers waiting: 2 starts at once.
        assert_eq!(b.finished(1), Some(2));
        // A reader arriving while 2 runs needs 3.
        assert_eq!(
            b.join(),
            Joined {
                needs: 3,
                start: false
            }
        );
        assert_eq!(b.finished(2), Some(3));
        // Nobody arrived during 3: nothing starts after it.
        assert_eq!(b.finished(3), None);
        // Idle again: the next reader starts 4 itself.
        assert_eq!(
            b.join(),
            Joined {
                needs: 4,
                start: true
            }
        );
        assert_eq!(b.finished(4), None);
    }

    #[test]
    fn reads_confirm_on_their_own_until_the_direct_limit_then_share() {
        let batcher =
            ReadBatcher::new(2, Duration::from_secs(5), || async { Ok::<(), String>(()) });
        let first = batcher.admit();
        let second = batcher.admit();
        assert!(matches!(first, Admission::Direct(_)));
        assert!(matches!(second, Admission::Direct(_)));
        // Two in flight: the third shares, and sharing takes no permit.
        assert!(matches!(batcher.admit(), Admission::Shared));
        assert!(matches!(batcher.admit(), Admission::Shared));
        // One finishes: the next read confirms on its own again.
        drop(first);
        let third = batcher.admit();
        assert!(matches!(third, Admission::Direct(_)));
        assert!(matches!(batcher.admit(), Admission::Shared));
        drop(second);
        drop(third);
        assert_eq!(batcher.direct.load(Ordering::SeqCst), 0);
    }

    /// A confirmation that records when it started (a counter standing for
    /// the commit index it proves) and is held until released.
    struct Gate {
        started: AtomicU64,
        release: tokio::sync::Semaphore,
    }

    #[tokio::test]
    async fn concurrent_readers_share_confirmations_and_each_gets_a_later_one() {
        let gate = Arc::new(Gate {
            started: AtomicU64::new(0),
            release: tokio::sync::Semaphore::new(0),
        });
        let batcher = ReadBatcher::new(0, Duration::from_secs(5), {
            let gate = Arc::clone(&gate);
            move || {
                let gate = Arc::clone(&gate);
                async move {
                    gate.started.fetch_add(1, Ordering::SeqCst);
                    gate.release.acquire().await.expect("open").forget();
                    Ok::<(), String>(())
                }
            }
        });
        // Reader 1 starts confirmation 1, which is held.
        let first = tokio::spawn({
            let b = Arc::clone(&batcher);
            async move { b.confirm_shared().await }
        });
        wait_until(|| gate.started.load(Ordering::SeqCst) == 1).await;
        // Ten readers arrive while it is held: none may be answered by it.
        let later: Vec<_> = (0..10)
            .map(|_| {
                let b = Arc::clone(&batcher);
                tokio::spawn(async move { b.confirm_shared().await })
            })
            .collect();
        tokio::task::yield_now().await;
        gate.release.add_permits(1);
        first.await.expect("joined").expect("confirmed");
        // Confirmation 2 starts for the ten; they are still waiting.
        wait_until(|| gate.started.load(Ordering::SeqCst) == 2).await;
        assert!(later.iter().all(|h| !h.is_finished()));
        gate.release.add_permits(1);
        for h in later {
            h.await.expect("joined").expect("confirmed");
        }
        // Eleven reads, two confirmations.
        assert_eq!(gate.started.load(Ordering::SeqCst), 2);
    }

    /// A batcher that shares every read and makes confirmation `n` (from
    /// 0) with `confirm(n)`; also returns its count of confirmations.
    fn counted<Fut>(
        bound: Duration,
        confirm: impl Fn(u64) -> Fut + Send + Sync + 'static,
    ) -> (Arc<ReadBatcher<String>>, Arc<AtomicU64>)
    where
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let calls = Arc::new(AtomicU64::new(0));
        let batcher = ReadBatcher::new(0, bound, {
            let calls = Arc::clone(&calls);
            move || confirm(calls.fetch_add(1, Ordering::SeqCst))
        });
        (batcher, calls)
    }

    #[tokio::test]
    async fn a_refusal_reaches_its_reader_and_the_next_reader_tries_again() {
        let (batcher, calls) = counted(Duration::from_secs(5), |n| async move {
            if n == 0 {
                Err("not the leader".to_string())
            } else {
                Ok(())
            }
        });
        match batcher.confirm_shared().await {
            Err(ConfirmError::Refused(e)) => assert_eq!(*e, "not the leader"),
            other => panic!("expected the refusal, got {other:?}"),
        }
        batcher
            .confirm_shared()
            .await
            .expect("the next confirmation");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_confirmation_that_hangs_times_out_and_the_batcher_recovers() {
        let (batcher, _) = counted(Duration::from_millis(100), |n| async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok(())
        });
        assert!(matches!(
            batcher.confirm_shared().await,
            Err(ConfirmError::TimedOut(_))
        ));
        batcher
            .confirm_shared()
            .await
            .expect("the next confirmation");
    }

    async fn wait_until(cond: impl Fn() -> bool) {
        for _ in 0..1000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("condition not reached within 2 s");
    }
}
