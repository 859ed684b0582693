//! Model-based test of `MvccStore`: random sequences of batches, merges of
//! other regions' versions (older ones included), snapshot installs, reads,
//! gc and reopens are run against the store and against a plain in-memory
//! model, and every read must agree. After every write the store's
//! latest-version index must name exactly each key's newest version.

use std::collections::BTreeMap;

use meridian::storage::{
    FsyncPolicy, MvccStore, RawVersion, ScanPage, StorageError, StoreOptions, WriteRecord,
};
use meridian::types::{KeyValue, Op, Timestamp, VersionEntry};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Keys that are prefixes of each other and contain 0x00 / 0xFF, so escaping
/// and ordering edge cases come up constantly.
const KEYS: &[&[u8]] = &[
    b"",
    b"\x00",
    b"\x00\xff",
    b"\x01",
    b"a",
    b"a\x00",
    b"a\x00\x00",
    b"a\x00\x01",
    b"a\x01",
    b"a\xff",
    b"ab",
    b"\xff",
    b"\xff\xff",
];

/// Scan bounds: every key plus a few bytes strings that are not keys.
const BOUNDS: &[&[u8]] = &[
    b"",
    b"\x00",
    b"\x00\x00",
    b"a",
    b"a\x00",
    b"a\x00\xff",
    b"aa",
    b"b",
    b"\xff",
    b"\xff\xff\xff",
];

/// Reads choose `at` in `0..=top_ts + AT_SLACK`, so reads above every write happen.
const AT_SLACK: u64 = 2;

/// Upper bound on gc calls for one horizon; each call removes at least one
/// version or finishes, so a stuck loop is a bug.
const MAX_GC_CALLS: usize = 1_000;

/// key -> ts -> value (None = tombstone).
type Model = BTreeMap<Vec<u8>, BTreeMap<u64, Option<Vec<u8>>>>;

#[derive(Clone, Debug)]
struct RecordSpec {
    gap: u64,
    ops: Vec<(usize, Option<Vec<u8>>)>,
}

#[derive(Clone, Debug)]
enum Action {
    Batch(Vec<RecordSpec>),
    /// Versions from another region at any timestamp above the horizon,
    /// below the newest local write included (`merge_versions`).
    Merge(Vec<(u64, RecordSpec)>),
    /// A snapshot install over `[start, end)`: clear the span a few
    /// versions at a time, then write back its versions without the newest
    /// of each key (an older snapshot), a few at a time.
    Install {
        start: usize,
        end: Option<usize>,
        step: usize,
    },
    Get {
        key: usize,
        at: u64,
    },
    Scan {
        start: usize,
        end: Option<usize>,
        at: u64,
        limit: usize,
    },
    History {
        key: usize,
        limit: usize,
    },
    Gc {
        horizon: u64,
        max_versions: usize,
    },
    Sync,
    Reopen,
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    let value = proptest::option::weighted(0.75, proptest::collection::vec(any::<u8>(), 0..4));
    let op = (0..KEYS.len(), value);
    (1u64..4, proptest::collection::vec(op, 1..6)).prop_map(|(gap, ops)| RecordSpec { gap, ops })
}

fn action() -> impl Strategy<Value = Action> {
    let at = any::<u64>();
    prop_oneof![
        6 => proptest::collection::vec(record_spec(), 1..4).prop_map(Action::Batch),
        3 => proptest::collection::vec((any::<u64>(), record_spec()), 1..3).prop_map(Action::Merge),
        1 => (0..BOUNDS.len(), proptest::option::of(0..BOUNDS.len()), 1usize..4)
            .prop_map(|(start, end, step)| Action::Install { start, end, step }),
        4 => (0..KEYS.len(), at).prop_map(|(key, at)| Action::Get { key, at }),
        4 => (0..BOUNDS.len(), proptest::option::of(0..BOUNDS.len()), at, 1usize..5)
            .prop_map(|(start, end, at, limit)| Action::Scan { start, end, at, limit }),
        2 => (0..KEYS.len(), 0usize..6).prop_map(|(key, limit)| Action::History { key, limit }),
        2 => (any::<u64>(), 1usize..4).prop_map(|(horizon, max_versions)| Action::Gc { horizon, max_versions }),
        1 => Just(Action::Sync),
        1 => Just(Action::Reopen),
    ]
}

/// The store under test, the model, and the clock of the test.
struct Harness {
    dir: tempfile::TempDir,
    store: Option<MvccStore>,
    model: Model,
    horizon: u64,
    /// The newest local write (batches continue above it).
    last_ts: u64,
    /// The newest version written at all (merges may go above `last_ts`).
    top_ts: u64,
}

/// A temp dir, on tmpfs when there is one: this test checks logic, not
/// durability (tests/crash_durability.rs does), and the store fsyncs on open,
/// on every gc horizon change and on drop.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    dir.expect("tempdir")
}

fn open(dir: &std::path::Path) -> MvccStore {
    let opts = StoreOptions {
        path: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        cache_bytes: 1 << 20,
    };
    MvccStore::open(opts).expect("open store")
}

impl Harness {
    fn new() -> Self {
        let dir = scratch_dir();
        let store = Some(open(dir.path()));
        Harness {
            dir,
            store,
            model: Model::new(),
            horizon: 0,
            last_ts: 0,
            top_ts: 0,
        }
    }

    fn store(&self) -> &MvccStore {
        self.store.as_ref().expect("store is open")
    }

    /// Maps a random u64 onto an interesting read timestamp.
    fn at(&self, raw: u64) -> u64 {
        if raw < u64::MAX / 16 {
            return u64::MAX; // One read in sixteen is "latest".
        }
        raw % (self.top_ts + AT_SLACK + 1)
    }

    fn run(&mut self, action: &Action) -> Result<(), TestCaseError> {
        match action {
            Action::Batch(specs) => self.batch(specs),
            Action::Merge(records) => self.merge(records),
            Action::Install { start, end, step } => {
                self.install(BOUNDS[*start], end.map(|e| BOUNDS[e]), *step)?;
                self.check_everything()
            }
            Action::Get { key, at } => self.check_get(KEYS[*key], self.at(*at)),
            Action::Scan {
                start,
                end,
                at,
                limit,
            } => self.check_scan(BOUNDS[*start], end.map(|e| BOUNDS[e]), self.at(*at), *limit),
            Action::History { key, limit } => self.check_history(KEYS[*key], *limit),
            Action::Gc {
                horizon,
                max_versions,
            } => {
                self.gc(horizon % (self.top_ts + AT_SLACK + 1), *max_versions)?;
                self.check_everything()
            }
            Action::Sync => {
                self.store().sync().map_err(fail)?;
                Ok(())
            }
            Action::Reopen => {
                drop(self.store.take());
                self.store = Some(open(self.dir.path()));
                prop_assert_eq!(self.store().gc_horizon(), Timestamp(self.horizon));
                self.check_everything()
            }
        }
    }

    fn batch(&mut self, specs: &[RecordSpec]) -> Result<(), TestCaseError> {
        let mut records = Vec::new();
        for spec in specs {
            // Writes must be above the gc horizon and strictly increasing.
            let ts = self.last_ts.max(self.horizon) + spec.gap;
            self.last_ts = ts;
            self.top_ts = self.top_ts.max(ts);
            let mut ops = Vec::new();
            for (key, value) in &spec.ops {
                let key = KEYS[*key].to_vec();
                // A later op on the same key in one record wins: plain overwrite.
                self.model
                    .entry(key.clone())
                    .or_default()
                    .insert(ts, value.clone());
                ops.push(op(key, value));
            }
            records.push(WriteRecord {
                ts: Timestamp(ts),
                ops,
            });
        }
        self.store().apply_batch(&records).map_err(fail)?;
        self.check_index()
    }

    /// Merges records at random timestamps in `(horizon, horizon + 1 +
    /// last_ts - horizon + AT_SLACK)`: below the newest local write, at it,
    /// and above it.
    /// At a `(key, ts)` already stored the greater encoded record wins (a
    /// tombstone over a put, else the greater value), as in the store.
    fn merge(&mut self, specs: &[(u64, RecordSpec)]) -> Result<(), TestCaseError> {
        let mut records = Vec::new();
        for (raw, spec) in specs {
            let ts =
                self.horizon + 1 + raw % (self.last_ts.saturating_sub(self.horizon) + AT_SLACK);
            self.top_ts = self.top_ts.max(ts);
            let mut ops = Vec::new();
            for (key, value) in &spec.ops {
                let key = KEYS[*key].to_vec();
                let slot = self.model.entry(key.clone()).or_default();
                let merged = match slot.get(&ts) {
                    Some(existing) if rank(existing) >= rank(value) => existing.clone(),
                    _ => value.clone(),
                };
                slot.insert(ts, merged);
                ops.push(op(key, value));
            }
            records.push(WriteRecord {
                ts: Timestamp(ts),
                ops,
            });
        }
        self.store().merge_versions(&records, &[]).map_err(fail)?;
        self.check_index()
    }

    fn install(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        step: usize,
    ) -> Result<(), TestCaseError> {
        if end.is_some_and(|end| end <= start) {
            return Ok(());
        }
        let store = self.store().clone();
        let mut calls = 0;
        while store.clear_range_step(start, end, step).map_err(fail)? {
            calls += 1;
            prop_assert!(calls < MAX_GC_CALLS, "clearing did not finish");
        }
        let in_span = |key: &[u8]| key >= start && end.is_none_or(|end| key < end);
        let mut installed = Vec::new();
        for (key, versions) in self.model.iter_mut().filter(|(k, _)| in_span(k)) {
            versions.pop_last();
            for (ts, value) in versions.iter().rev() {
                installed.push(RawVersion {
                    key: key.clone(),
                    version: Timestamp(*ts),
                    value: value.clone(),
                });
            }
        }
        self.model.retain(|_, versions| !versions.is_empty());
        for chunk in installed.chunks(step) {
            store.insert_versions(start, end, chunk).map_err(fail)?;
        }
        self.check_index()
    }

    fn check_index(&self) -> Result<(), TestCaseError> {
        let keys = self.store().verify_latest_index().map_err(fail)?;
        prop_assert_eq!(keys, self.model.len() as u64);
        Ok(())
    }

    fn gc(&mut self, horizon: u64, max_versions: usize) -> Result<(), TestCaseError> {
        let mut calls = 0;
        loop {
            let stats = self
                .store()
                .gc(Timestamp(horizon), max_versions)
                .map_err(fail)?;
            prop_assert!(stats.removed_versions <= max_versions);
            calls += 1;
            if !stats.more {
                break;
            }
            prop_assert!(calls < MAX_GC_CALLS, "gc did not finish");
        }
        self.horizon = self.horizon.max(horizon);
        model_gc(&mut self.model, self.horizon);
        prop_assert_eq!(self.store().gc_horizon(), Timestamp(self.horizon));
        self.check_index()
    }

    fn check_get(&self, key: &[u8], at: u64) -> Result<(), TestCaseError> {
        let got = self.store().get(key, Timestamp(at));
        if at < self.horizon {
            prop_assert!(
                matches!(got, Err(StorageError::Compacted { .. })),
                "get {:?}@{} below horizon {}: {:?}",
                key,
                at,
                self.horizon,
                got
            );
            return Ok(());
        }
        let expected = model_get(&self.model, key, at);
        prop_assert_eq!(got.map_err(fail)?, expected, "get {:?}@{}", key, at);
        Ok(())
    }

    /// Scans page by page via `next_key` and compares with the model.
    fn check_scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        at: u64,
        limit: usize,
    ) -> Result<(), TestCaseError> {
        if at < self.horizon {
            let got = self.store().scan(start, end, Timestamp(at), limit);
            prop_assert!(
                matches!(got, Err(StorageError::Compacted { .. })),
                "scan below horizon: {:?}",
                got
            );
            return Ok(());
        }
        let expected = model_scan(&self.model, start, end, at);
        let mut got: Vec<KeyValue> = Vec::new();
        let mut cursor = start.to_vec();
        for _ in 0..=expected.len() + 1 {
            let ScanPage { items, next_key } = self
                .store()
                .scan(&cursor, end, Timestamp(at), limit)
                .map_err(fail)?;
            prop_assert!(items.len() <= limit);
            got.extend(items);
            match next_key {
                None => break,
                Some(next) => {
                    // With the budget out of reach, next_key is exactly the next live key.
                    let following = expected.get(got.len()).map(|kv| kv.key.clone());
                    prop_assert_eq!(
                        Some(next.clone()),
                        following,
                        "next_key after {} items",
                        got.len()
                    );
                    cursor = next;
                }
            }
        }
        prop_assert_eq!(
            got,
            expected,
            "scan [{:?}, {:?}) @{} limit {}",
            start,
            end,
            at,
            limit
        );
        Ok(())
    }

    fn check_history(&self, key: &[u8], limit: usize) -> Result<(), TestCaseError> {
        let got = self.store().history(key, limit).map_err(fail)?;
        prop_assert_eq!(
            got,
            model_history(&self.model, key, limit),
            "history {:?}",
            key
        );
        Ok(())
    }

    /// Every key at every timestamp, full scans, and histories.
    fn check_everything(&self) -> Result<(), TestCaseError> {
        for at in 0..=self.top_ts + AT_SLACK {
            for key in KEYS {
                self.check_get(key, at)?;
            }
            self.check_scan(b"", None, at, 3)?;
        }
        for key in KEYS {
            self.check_history(key, usize::MAX)?;
        }
        Ok(())
    }
}

/// The store op writing `value` (`None`: a delete) to `key`.
fn op(key: Vec<u8>, value: &Option<Vec<u8>>) -> Op {
    match value {
        Some(value) => Op::Put {
            key,
            value: value.clone(),
        },
        None => Op::Delete { key },
    }
}

/// The order `merge_versions` breaks ties in: the encoded record's bytes
/// (a tombstone's kind byte is above a put's; puts compare by value).
fn rank(value: &Option<Vec<u8>>) -> (u8, &[u8]) {
    match value {
        Some(value) => (1, value.as_slice()),
        None => (2, &[]),
    }
}

fn fail(err: StorageError) -> TestCaseError {
    TestCaseError::fail(format!("storage error: {err}"))
}

fn model_get(model: &Model, key: &[u8], at: u64) -> Option<KeyValue> {
    let (ts, value) = model.get(key)?.range(..=at).next_back()?;
    let value = value.clone()?;
    Some(KeyValue {
        key: key.to_vec(),
        value,
        version: Timestamp(*ts),
    })
}

fn model_scan(model: &Model, start: &[u8], end: Option<&[u8]>, at: u64) -> Vec<KeyValue> {
    model
        .keys()
        .filter(|key| key.as_slice() >= start && end.is_none_or(|end| key.as_slice() < end))
        .filter_map(|key| model_get(model, key, at))
        .collect()
}

fn model_history(model: &Model, key: &[u8], limit: usize) -> Vec<VersionEntry> {
    let Some(versions) = model.get(key) else {
        return Vec::new();
    };
    versions
        .iter()
        .rev()
        .take(limit)
        .map(|(ts, value)| VersionEntry {
            version: Timestamp(*ts),
            value: value.clone(),
        })
        .collect()
}

/// The gc rule, stated plainly: keep versions above the horizon, keep the
/// newest at or below it unless it is a tombstone, drop the rest.
fn model_gc(model: &mut Model, horizon: u64) {
    for versions in model.values_mut() {
        let newest_below = versions
            .range(..=horizon)
            .next_back()
            .map(|(ts, v)| (*ts, v.is_none()));
        let Some((newest_ts, is_tombstone)) = newest_below else {
            continue;
        };
        versions.retain(|ts, _| *ts > newest_ts || (*ts == newest_ts && !is_tombstone));
    }
    model.retain(|_, versions| !versions.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_matches_model(actions in proptest::collection::vec(action(), 1..40)) {
        let mut harness = Harness::new();
        for action in &actions {
            harness.run(action)?;
        }
        harness.check_everything()?;
    }
}

#[test]
fn reopen_preserves_versions_horizon_and_meta() {
    let mut harness = Harness::new();
    let specs: Vec<_> = (0..20)
        .map(|i| RecordSpec {
            gap: 1,
            ops: vec![(
                i % KEYS.len(),
                if i % 5 == 4 {
                    None
                } else {
                    Some(vec![i as u8])
                },
            )],
        })
        .collect();
    harness.batch(&specs).expect("batch");
    harness.gc(7, 2).expect("gc");
    harness
        .store()
        .meta_put_durable("mark", b"m")
        .expect("meta");
    harness.run(&Action::Reopen).expect("reopen");
    assert_eq!(
        harness.store().meta_get("mark").expect("meta"),
        Some(b"m".to_vec())
    );
    assert_eq!(harness.store().gc_horizon(), Timestamp(7));
    harness
        .check_everything()
        .expect("all reads agree after reopen");
}

/// The first failure this model test found (fixed in `mvcc::plan_gc`): with
/// room for one removal per call, a tombstone-only key followed by another
/// one skipped the second key's tombstone.
#[test]
fn gc_one_removal_per_call_over_adjacent_tombstones() {
    let mut harness = Harness::new();
    let actions = [
        Action::Batch(vec![
            RecordSpec {
                gap: 1,
                ops: vec![(0, None), (1, None)],
            },
            RecordSpec {
                gap: 1,
                ops: vec![(2, None), (0, None)],
            },
        ]),
        Action::Gc {
            horizon: 3,
            max_versions: 1,
        },
    ];
    for action in &actions {
        harness.run(action).expect("store agrees with model");
    }
    harness.check_everything().expect("store agrees with model");
}
