//! Unit tests of [`MvccStore`] against a real fjall database in a temp dir.
//! The randomized comparison against a model lives in `tests/storage_model.rs`.

use super::*;

fn open(dir: &std::path::Path) -> MvccStore {
    super::open_for_tests(dir)
}

fn put(key: &[u8], value: &[u8]) -> Op {
    Op::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn record(ts: u64, ops: Vec<Op>) -> WriteRecord {
    WriteRecord {
        ts: Timestamp(ts),
        ops,
    }
}

fn value_at(store: &MvccStore, key: &[u8], ts: u64) -> Option<Vec<u8>> {
    store.get(key, Timestamp(ts)).unwrap().map(|kv| kv.value)
}

#[test]
fn store_is_clone_send_sync() {
    fn check<T: Send + Sync + 'static>() {}
    fn check_clone<T: Clone>() {}
    check::<MvccStore>();
    check_clone::<MvccStore>();
    check::<StorageError>();
}

#[test]
fn later_op_on_the_same_key_wins_within_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ops = vec![
        put(b"k", b"first"),
        Op::Delete { key: b"k".to_vec() },
        put(b"k", b"last"),
    ];
    store.apply_batch(&[record(5, ops)]).unwrap();
    assert_eq!(value_at(&store, b"k", 5).as_deref(), Some(&b"last"[..]));
    assert_eq!(
        store.history(b"k", 10).unwrap().len(),
        1,
        "one version per key and record"
    );

    let ops = vec![put(b"k", b"again"), Op::Delete { key: b"k".to_vec() }];
    store.apply_batch(&[record(6, ops)]).unwrap();
    assert_eq!(value_at(&store, b"k", 6), None);
}

#[test]
fn records_must_strictly_increase_and_nothing_is_written_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for ts in [[3, 3], [4, 2]] {
        let records = [
            record(ts[0], vec![put(b"a", b"1")]),
            record(ts[1], vec![put(b"b", b"2")]),
        ];
        let err = store.apply_batch(&records).unwrap_err();
        assert!(matches!(err, StorageError::InvalidArgument { .. }), "{err}");
    }
    assert_eq!(
        store.scan(b"", None, Timestamp::MAX, 10).unwrap().items,
        vec![]
    );
    assert!(
        !store.is_poisoned(),
        "a refused batch is the caller's bug, not a disk failure"
    );
}

#[test]
fn writes_at_or_below_the_horizon_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_batch(&[record(1, vec![put(b"a", b"1")])])
        .unwrap();
    store.gc(Timestamp(10), 100).unwrap();
    let err = store
        .apply_batch(&[record(10, vec![put(b"a", b"2")])])
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidArgument { .. }), "{err}");
    store
        .apply_batch(&[record(11, vec![put(b"a", b"3")])])
        .unwrap();
    assert_eq!(value_at(&store, b"a", 10).as_deref(), Some(&b"1"[..]));
}

#[test]
fn oversized_keys_are_refused_before_fjall_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Every 0x00 doubles under escaping, so this 40 KiB key encodes to 80 KiB.
    let key = vec![0u8; 40 * 1024];
    let err = store
        .apply_batch(&[record(1, vec![put(&key, b"v")])])
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidArgument { .. }), "{err}");
}

#[test]
fn reads_below_the_horizon_are_compacted_and_horizon_never_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.gc(Timestamp(100), 10).unwrap();
    store.gc(Timestamp(50), 10).unwrap();
    assert_eq!(store.gc_horizon(), Timestamp(100));
    let err = store.get(b"k", Timestamp(99)).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Compacted {
                requested: Timestamp(99),
                horizon: Timestamp(100)
            }
        ),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::Compacted);
    assert!(matches!(
        store.scan(b"", None, Timestamp(1), 1),
        Err(StorageError::Compacted { .. })
    ));
    assert_eq!(store.get(b"k", Timestamp(100)).unwrap(), None);
}

#[test]
fn horizon_and_meta_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.meta_put_durable("hlc", &7i64.to_be_bytes()).unwrap();
        store.gc(Timestamp(42), 10).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.gc_horizon(), Timestamp(42));
    assert_eq!(
        store.meta_get("hlc").unwrap(),
        Some(7i64.to_be_bytes().to_vec())
    );
    assert_eq!(store.meta_get("other").unwrap(), None);
}

#[test]
fn meta_names_and_values_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.meta_put_durable("", b"x").is_err());
    assert!(store
        .meta_put_durable(&"n".repeat(MAX_META_NAME_BYTES + 1), b"x")
        .is_err());
    assert!(store
        .meta_put_durable("big", &vec![0; MAX_META_VALUE_BYTES + 1])
        .is_err());
    store
        .meta_put_durable("ok", &vec![1; MAX_META_VALUE_BYTES])
        .unwrap();
}

#[test]
fn unknown_record_format_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_batch(&[WriteRecord {
            ts: Timestamp(3),
            ops: vec![Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            }],
        }])
        .unwrap();
    let raw_key = encoding::encode_version_key(b"k", Timestamp(3));
    store
        .inner
        .data
        .insert(raw_key, vec![9u8, 1, 0, b'v'])
        .unwrap();
    let err = store.get(b"k", Timestamp(5)).unwrap_err();
    match &err {
        StorageError::Corrupt { what } => assert!(what.contains("format version 9"), "{what}"),
        other => panic!("expected Corrupt, got {other}"),
    }
    assert_eq!(err.code(), ErrorCode::StorageFailure);
    assert!(store.scan(b"", None, Timestamp(5), 10).is_err());
    assert!(store.history(b"k", 10).is_err());
}

#[test]
fn unknown_store_format_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .inner
            .meta
            .insert(encoding::META_FORMAT_KEY, encoding::encode_meta(&[3]))
            .unwrap();
    }
    let err = MvccStore::open(StoreOptions {
        path: dir.path().to_path_buf(),
        fsync: FsyncPolicy::Always,
        cache_bytes: 1 << 20,
    })
    .unwrap_err();
    assert!(err.to_string().contains("store format version 3"), "{err}");
}

/// The real paths poison: a batch commit or a sync failing where storage
/// calls fjall (the test hooks sit there) fails the call, poisons the
/// store, and every later call is refused.
#[test]
fn a_failed_commit_or_sync_poisons_through_the_real_path() {
    for fail_sync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let batch = [record(1, vec![put(b"a", b"1")])];
        let result = if fail_sync {
            store.fail_syncs(true);
            store.apply_batch(&batch).unwrap();
            store.sync()
        } else {
            store.fail_writes(true);
            store.apply_batch(&batch)
        };
        assert!(matches!(result, Err(StorageError::Fjall(_))), "{result:?}");
        assert!(store.is_poisoned(), "fail_sync: {fail_sync}");
        store.fail_syncs(false);
        store.fail_writes(false);
        assert!(matches!(
            store.get(b"a", Timestamp(1)),
            Err(StorageError::Poisoned)
        ));
        assert!(matches!(
            store.apply_batch(&[record(2, vec![put(b"b", b"2")])]),
            Err(StorageError::Poisoned)
        ));
        assert!(matches!(
            store.meta_put_durable("x", b""),
            Err(StorageError::Poisoned)
        ));
    }
}

#[test]
fn a_failed_write_poisons_every_later_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_batch(&[record(1, vec![put(b"a", b"1")])])
        .unwrap();
    let injected = fjall::Error::Io(std::io::Error::other("injected fsync failure"));
    let err = store.write_failed("sync", injected);
    assert!(matches!(err, StorageError::Fjall(_)));
    assert!(store.is_poisoned());
    let clone = store.clone();
    assert!(matches!(
        clone.get(b"a", Timestamp(1)),
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(
        clone.scan(b"", None, Timestamp(1), 1),
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(
        clone.history(b"a", 1),
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(
        clone.apply_batch(&[]),
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(clone.sync(), Err(StorageError::Poisoned)));
    assert!(matches!(
        clone.gc(Timestamp(1), 1),
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(clone.meta_get("x"), Err(StorageError::Poisoned)));
    assert!(matches!(
        clone.meta_put_durable("x", b""),
        Err(StorageError::Poisoned)
    ));
    assert_eq!(StorageError::Poisoned.code(), ErrorCode::StorageFailure);
}

#[test]
fn scan_and_gc_arguments_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(matches!(
        store.scan(b"", None, Timestamp(1), 0),
        Err(StorageError::InvalidArgument { .. })
    ));
    assert!(matches!(
        store.gc(Timestamp(1), 0),
        Err(StorageError::InvalidArgument { .. })
    ));
    store
        .apply_batch(&[record(1, vec![put(b"a", b"1")])])
        .unwrap();
    let page = store.scan(b"b", Some(b"a"), Timestamp(1), 10).unwrap();
    assert_eq!(page, ScanPage::default(), "an inverted range is empty");
}

#[test]
fn gc_resumes_where_the_previous_call_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let records: Vec<_> = (1..=4)
        .map(|ts| record(ts, (0u8..10).map(|k| put(&[k], &[ts as u8])).collect()))
        .collect();
    store.apply_batch(&records).unwrap();
    let mut removed = 0;
    let mut calls = 0;
    loop {
        let stats = store.gc(Timestamp(4), 7).unwrap();
        assert!(stats.removed_versions <= 7);
        removed += stats.removed_versions;
        calls += 1;
        if !stats.more {
            break;
        }
        assert!(calls < 20, "gc must finish");
    }
    assert_eq!(removed, 30, "three shadowed versions of ten keys");
    assert_eq!(store.history(&[3], 10).unwrap().len(), 1);
    assert_eq!(value_at(&store, &[3], 4), Some(vec![4]));
}

#[test]
fn sync_with_always_policy_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(StoreOptions {
        path: dir.path().to_path_buf(),
        fsync: FsyncPolicy::Always,
        cache_bytes: 1 << 20,
    })
    .unwrap();
    store
        .apply_batch(&[record(1, vec![put(b"a", b"1")])])
        .unwrap();
    store.sync().unwrap();
    assert!(store.approximate_keys() >= 1);
}

#[test]
fn concurrent_writes_gc_and_reads_agree() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const WRITES: u64 = 600;
    const KEYS: u64 = 5;
    /// Versions kept behind the newest write by the gc thread.
    const WINDOW: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Write i puts key i % KEYS = i, so the value of key j at T is known.
    let expected = |j: u64, at: u64| (1..=at).rev().find(|i| i % KEYS == j);
    let written = Arc::new(AtomicU64::new(0));
    let collected = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=WRITES {
                let op = put(&[(i % KEYS) as u8], &i.to_be_bytes());
                store.apply_batch(&[record(i, vec![op])]).unwrap();
                written.store(i, Ordering::Release);
                if i == WRITES / 2 {
                    // Halfway, until gc has removed something (bounded): on a
                    // busy machine the writer could otherwise finish before
                    // the gc thread first runs, and nothing would overlap.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    while collected.load(Ordering::Acquire) == 0
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            }
        });
        s.spawn(|| {
            while written.load(Ordering::Acquire) < WRITES {
                let horizon = written.load(Ordering::Acquire).saturating_sub(WINDOW);
                let stats = store.gc(Timestamp(horizon), 3).unwrap();
                collected.fetch_add(stats.removed_versions as u64, Ordering::AcqRel);
            }
        });
        let mut reads = 0;
        while written.load(Ordering::Acquire) < WRITES {
            let at = written.load(Ordering::Acquire).max(store.gc_horizon().0);
            for j in 0..KEYS {
                match store.get(&[j as u8], Timestamp(at)) {
                    Ok(kv) => {
                        let got = kv.map(|kv| u64::from_be_bytes(kv.value.try_into().unwrap()));
                        assert_eq!(got, expected(j, at), "key {j} at {at}");
                        reads += 1;
                    }
                    // The horizon may pass `at` between choosing it and reading.
                    Err(StorageError::Compacted { .. }) => {}
                    Err(other) => panic!("{other}"),
                }
            }
        }
        assert!(reads > 0 || written.load(Ordering::Acquire) == WRITES);
    });
    let versions: usize = (0..KEYS)
        .map(|j| store.history(&[j as u8], 1000).unwrap().len())
        .sum();
    assert!(versions < WRITES as usize, "gc ran alongside the writer");
}

#[test]
fn a_sweep_over_more_than_one_step_finishes_while_the_horizon_keeps_moving() {
    // Regression: the engine asks for a higher horizon on every call. A sweep
    // larger than one step's visit budget used to restart from the first key
    // each time and never finish, re-scanning the whole store forever.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let total = 3 * mvcc::GC_VISIT_BUDGET as u64 + 17;
    let mut ts = 1;
    let mut key = 0u64;
    while key < total {
        let records: Vec<WriteRecord> = (0..MAX_BATCH_RECORDS as u64)
            .take_while(|i| key + i < total)
            .map(|i| {
                ts += 1;
                record(ts, vec![put(format!("k{:08}", key + i).as_bytes(), b"v")])
            })
            .collect();
        key += records.len() as u64;
        store.apply_batch(&records).unwrap();
    }
    let mut calls = 0;
    let mut requested = ts + 1;
    loop {
        let stats = store.gc(Timestamp(requested), 1).unwrap();
        calls += 1;
        requested += 1_000;
        if !stats.more {
            break;
        }
        assert!(calls <= 10, "sweep did not finish after {calls} calls");
    }
    // Nothing was removable (one live version per key), and every key is still there.
    assert_eq!(
        value_at(&store, b"k00000000", u64::MAX),
        Some(b"v".to_vec())
    );
}

#[test]
fn frozen_view_keeps_its_instant_and_refuses_past_the_version_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_batch(&[record(10, vec![put(b"a", b"1"), put(b"b", b"1")])])
        .unwrap();
    let view = store.frozen_view().unwrap();
    store
        .apply_batch(&[record(11, vec![put(b"a", b"2"), put(b"c", b"1")])])
        .unwrap();
    // The view still shows the two versions it was taken with.
    let dumped = view.dump_range(b"", None, 10).unwrap();
    let seen: Vec<(&[u8], u64)> = dumped.iter().map(|v| (&v.key[..], v.version.0)).collect();
    assert_eq!(seen, vec![(&b"a"[..], 10), (&b"b"[..], 10)]);
    // Exactly at the limit is fine; one more version is refused, not truncated.
    assert_eq!(store.dump_range(b"", None, 4).unwrap().len(), 4);
    let err = store.dump_range(b"", None, 3).unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidArgument { .. }),
        "{err:?}"
    );
}

/// Two spans: keys below "m" (id 1) and from "m" on (id 2).
fn two_spans(initial: [u64; 2]) -> Vec<(GcSpan, Timestamp)> {
    vec![
        (
            GcSpan {
                id: 1,
                start: Vec::new(),
                end: Some(b"m".to_vec()),
            },
            Timestamp(initial[0]),
        ),
        (
            GcSpan {
                id: 2,
                start: b"m".to_vec(),
                end: None,
            },
            Timestamp(initial[1]),
        ),
    ]
}

#[test]
fn span_horizons_are_independent() {
    // Regression (issue 8, item 2): one clock-driven horizon made an idle
    // range unreadable and refused a lagging replica's applies. Each span
    // now has its own horizon; collecting one leaves the other alone.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let old = |ts| record(ts, vec![put(b"a", b"a"), put(b"z", b"z")]);
    store.apply_batch(&[old(1), old(2), old(3)]).unwrap();
    store.set_gc_spans(two_spans([0, 0])).unwrap();
    let stats = store.gc_span(1, Timestamp(10), 100).unwrap();
    assert_eq!(stats.removed_versions, 2, "a@1 and a@2 go, a@3 stays");
    assert_eq!(
        store.history(b"z", 10).unwrap().len(),
        3,
        "span 2 untouched"
    );
    assert_eq!(store.gc_horizon_at(b"a"), Timestamp(10));
    assert_eq!(store.gc_horizon_at(b"z"), Timestamp::ZERO);
    // Reads: below span 1's horizon refused there only.
    assert!(matches!(
        store.get(b"a", Timestamp(2)),
        Err(StorageError::Compacted {
            horizon: Timestamp(10),
            ..
        })
    ));
    assert_eq!(value_at(&store, b"z", 2).as_deref(), Some(&b"z"[..]));
    assert!(store.scan(b"m", None, Timestamp(2), 10).is_ok());
    assert!(matches!(
        store.scan(b"", None, Timestamp(2), 10),
        Err(StorageError::Compacted { .. })
    ));
    // Writes: at or below a key's own span horizon refused, elsewhere fine.
    let err = store
        .apply_batch(&[record(10, vec![put(b"b", b"late")])])
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidArgument { .. }), "{err}");
    store
        .apply_batch(&[record(5, vec![put(b"y", b"lagging replica")])])
        .unwrap();
    // The store-wide sweep would ignore the spans: refused.
    assert!(matches!(
        store.gc(Timestamp(10), 10),
        Err(StorageError::InvalidArgument { .. })
    ));
    assert!(matches!(
        store.gc_span(3, Timestamp(10), 10),
        Err(StorageError::InvalidArgument { .. })
    ));
}

#[test]
fn span_horizons_survive_reopen_and_the_initial_value_is_used_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let got = store.set_gc_spans(two_spans([4, 7])).unwrap();
        assert_eq!(got, [(1, Timestamp(4)), (2, Timestamp(7))]);
        store.gc_span(2, Timestamp(20), 10).unwrap();
        assert!(
            store.set_gc_spans(two_spans([4, 7])).is_err(),
            "once per open"
        );
    }
    let store = open(dir.path());
    let got = store.set_gc_spans(two_spans([0, 0])).unwrap();
    assert_eq!(got, [(1, Timestamp(4)), (2, Timestamp(20))]);
    // A snapshot install raises the spans it covers, never lowers them.
    store.raise_gc_horizon(b"m", None, Timestamp(30)).unwrap();
    store
        .raise_gc_horizon(b"", Some(b"m"), Timestamp(2))
        .unwrap();
    assert_eq!(store.gc_horizon_at(b"zz"), Timestamp(30));
    assert_eq!(store.gc_horizon_at(b"a"), Timestamp(4));
}

#[test]
fn gc_spans_must_tile_the_keyspace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let span = |id, start: &[u8], end: Option<&[u8]>| {
        (
            GcSpan {
                id,
                start: start.to_vec(),
                end: end.map(<[u8]>::to_vec),
            },
            Timestamp::ZERO,
        )
    };
    let bad = [
        vec![span(1, b"", Some(b"m"))],
        vec![span(1, b"a", None)],
        vec![span(1, b"", Some(b"m")), span(2, b"n", None)],
        vec![span(1, b"", Some(b"m")), span(1, b"m", None)],
        vec![span(1, b"", Some(b"")), span(2, b"", None)],
    ];
    for spans in bad {
        let err = store.set_gc_spans(spans.clone()).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidArgument { .. }),
            "{spans:?}: {err}"
        );
    }
    store.set_gc_spans(vec![span(9, b"", None)]).unwrap();
}

/// A bulk install seals and flushes the data memtable every
/// [`BULK_MEMTABLE_BYTES`] instead of letting it grow to the data
/// keyspace's [`DATA_MEMTABLE_BYTES`] (the bound on a node's memory while it
/// installs a streamed snapshot), and ordinary writes do not: they stay in
/// the memtable, so recent keys are read from memory.
#[test]
fn bulk_installs_flush_every_bulk_memtable_bytes_and_ordinary_writes_do_not() {
    const VALUE: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let versions = |first: usize, n: usize| -> Vec<RawVersion> {
        (first..first + n)
            .map(|i| RawVersion {
                key: format!("bulk/{i:06}").into_bytes(),
                version: Timestamp(10),
                value: Some(vec![b'v'; VALUE]),
            })
            .collect()
    };
    // Ordinary writes of more than one bulk's worth: no flush.
    let ordinary = (BULK_MEMTABLE_BYTES as usize / VALUE) + 16;
    for i in 0..ordinary {
        store
            .apply_batch(&[record(
                20 + i as u64,
                vec![put(format!("recent/{i:06}").as_bytes(), &[b'r'; VALUE])],
            )])
            .unwrap();
    }
    assert_eq!(
        store.inner.data.table_count(),
        0,
        "ordinary writes stay in the memtable"
    );
    // An install of 1.5 bulks in batches of 64: exactly one seal and flush,
    // of everything the memtable held, and nothing is left waiting.
    let total = BULK_MEMTABLE_BYTES as usize * 3 / 2 / VALUE;
    for first in (0..total).step_by(64) {
        store
            .insert_versions(
                b"bulk/",
                Some(b"bulk0"),
                &versions(first, 64.min(total - first)),
            )
            .unwrap();
    }
    assert_eq!(store.inner.data.sealed_memtable_count(), 0);
    assert!(
        store.inner.data.table_count() >= 1,
        "the install flushed its memtable"
    );
    // Every version is readable wherever it went.
    assert_eq!(
        value_at(&store, b"bulk/000000", 10).map(|v| v.len()),
        Some(VALUE)
    );
    let last = format!("bulk/{:06}", total - 1);
    assert_eq!(
        value_at(&store, last.as_bytes(), 10).map(|v| v.len()),
        Some(VALUE)
    );
    let recent = format!("recent/{:06}", ordinary - 1);
    assert_eq!(
        value_at(&store, recent.as_bytes(), u64::MAX).map(|v| v.len()),
        Some(VALUE)
    );
}

#[test]
fn bulk_installs_wait_for_level_zero_compaction() {
    const VALUE: usize = 256 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Twelve bulks' worth in batches of one bulk: twelve flushes. After every
    // call level 0 holds at most BULK_L0_TABLES tables, so compaction never
    // merges more than that many (plus level 1) at once.
    let per_batch = BULK_MEMTABLE_BYTES as usize / VALUE;
    let mut most = 0;
    for batch in 0..12 {
        let versions: Vec<RawVersion> = (0..per_batch)
            .map(|i| RawVersion {
                key: format!("bulk/{:06}", (batch * per_batch + i) * 7919 % 10_007).into_bytes(),
                version: Timestamp(10 + batch as u64),
                value: Some(vec![b'v'; VALUE]),
            })
            .collect();
        store
            .insert_versions(b"bulk/", Some(b"bulk0"), &versions)
            .unwrap();
        most = most.max(store.inner.data.l0_table_count());
    }
    assert!(
        most <= BULK_L0_TABLES,
        "level 0 reached {most} tables during the install"
    );
    assert!(store.inner.data.table_count() >= 1);
}

/// A store written by a build before the latest-version index (format 1:
/// versions, no index entries) is migrated when opened: every key gets its
/// entry, the marker says format 2, and reads are unchanged.
#[test]
fn a_format_1_store_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let del = |key: &[u8]| Op::Delete { key: key.to_vec() };
    {
        let store = open(dir.path());
        store
            .apply_batch(&[
                record(
                    1,
                    vec![put(b"a", b"a1"), put(b"", b"empty"), put(b"b", b"b1")],
                ),
                record(2, vec![put(b"a", b"a2"), del(b"b")]),
                record(3, vec![put(b"c\x00", b"c3")]),
            ])
            .unwrap();
        // Make it what a format 1 build left: no index, marker 1.
        let mut batch = store.inner.db.batch();
        for guard in store.inner.latest.iter() {
            batch.remove(&store.inner.latest, owned_key(&guard.key().unwrap()));
        }
        batch.insert(
            &store.inner.meta,
            encoding::META_FORMAT_KEY,
            encoding::encode_store_format(encoding::STORE_FORMAT_V1),
        );
        batch.commit().unwrap();
        assert!(store.inner.latest.is_empty().unwrap());
    }
    let store = open(dir.path());
    assert_eq!(store.verify_latest_index().unwrap(), 4);
    // The migration wrote the top version (the newest version stored).
    let top = store
        .inner
        .meta
        .get(encoding::META_TOP_VERSION_KEY)
        .unwrap();
    assert_eq!(
        encoding::decode_latest(&top.unwrap()).unwrap(),
        Timestamp(3)
    );
    let marker = store.inner.meta.get(encoding::META_FORMAT_KEY).unwrap();
    assert_eq!(
        encoding::decode_store_format(&marker.unwrap()).unwrap(),
        encoding::STORE_FORMAT_V2
    );
    assert_eq!(value_at(&store, b"a", 5), Some(b"a2".to_vec()));
    assert_eq!(value_at(&store, b"a", 1), Some(b"a1".to_vec()));
    assert_eq!(value_at(&store, b"", 5), Some(b"empty".to_vec()));
    assert_eq!(value_at(&store, b"b", 5), None);
    assert_eq!(value_at(&store, b"b", 1), Some(b"b1".to_vec()));
    assert_eq!(value_at(&store, b"c\x00", 5), Some(b"c3".to_vec()));
}

/// The index only ever rises: a write below a key's newest version (an
/// older version merged from another region, or an apply below a merged
/// newer one) leaves reads at the top on the newest, and reads below it
/// find the older one.
#[test]
fn writes_below_the_newest_version_keep_reads_on_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .merge_versions(&[record(20, vec![put(b"k", b"merged20")])], &[])
        .unwrap();
    store
        .apply_batch(&[record(10, vec![put(b"k", b"local10")])])
        .unwrap();
    store
        .merge_versions(&[record(5, vec![put(b"k", b"merged5")])], &[])
        .unwrap();
    assert_eq!(value_at(&store, b"k", 30), Some(b"merged20".to_vec()));
    assert_eq!(value_at(&store, b"k", 15), Some(b"local10".to_vec()));
    assert_eq!(value_at(&store, b"k", 7), Some(b"merged5".to_vec()));
    assert_eq!(value_at(&store, b"k", 4), None);
    assert_eq!(store.latest_of(b"k").unwrap(), Some(Timestamp(20)));
    assert_eq!(store.verify_latest_index().unwrap(), 1);
}

/// gc drops the index entry of a key whose last version (a tombstone) it
/// removed, and keeps it while a newer version stands.
#[test]
fn gc_drops_the_entries_of_keys_it_empties() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let del = |key: &[u8]| Op::Delete { key: key.to_vec() };
    store
        .apply_batch(&[
            record(1, vec![put(b"gone", b"v"), put(b"kept", b"v")]),
            record(2, vec![del(b"gone"), del(b"kept")]),
            record(9, vec![put(b"kept", b"again")]),
        ])
        .unwrap();
    while store.gc(Timestamp(5), 100).unwrap().more {}
    assert_eq!(store.latest_of(b"gone").unwrap(), None);
    assert_eq!(store.latest_of(b"kept").unwrap(), Some(Timestamp(9)));
    assert_eq!(value_at(&store, b"gone", 10), None);
    assert_eq!(value_at(&store, b"kept", 10), Some(b"again".to_vec()));
    assert_eq!(store.verify_latest_index().unwrap(), 1);
}

/// The top version survives a reopen, and a store without one (written by
/// the first format 2 build) takes it from its index: either way a merge
/// below a key's newest version after the reopen leaves reads on the
/// newest (with a top of zero it would have overwritten the entry).
#[test]
fn the_top_version_is_reloaded_and_rebuilt_when_missing() {
    for drop_marker in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store
                .apply_batch(&[record(10, vec![put(b"k", b"ten")])])
                .unwrap();
            if drop_marker {
                store
                    .inner
                    .meta
                    .remove(encoding::META_TOP_VERSION_KEY)
                    .unwrap();
            }
        }
        let store = open(dir.path());
        // The persisted bound (some way above 10), or rebuilt exactly.
        let expected = if drop_marker {
            10
        } else {
            10 + TOP_VERSION_AHEAD
        };
        assert_eq!(
            store.inner.top_version.load(Ordering::Acquire),
            expected,
            "drop_marker={drop_marker}"
        );
        store
            .merge_versions(&[record(5, vec![put(b"k", b"five")])], &[])
            .unwrap();
        assert_eq!(value_at(&store, b"k", 20), Some(b"ten".to_vec()));
        assert_eq!(store.verify_latest_index().unwrap(), 1);
    }
}

/// The persisted bound is rewritten only by a batch that passes it: a
/// later batch below the bound leaves it (a store rewriting it in every
/// batch would reopen at 20 plus the margin), and one above it moves it.
#[test]
fn the_persisted_top_bound_is_rewritten_only_when_passed() {
    let dir = tempfile::tempdir().unwrap();
    let past = 10 + TOP_VERSION_AHEAD + 1;
    for (writes, expected) in [
        (vec![10, 20], 10 + TOP_VERSION_AHEAD),
        (vec![past], past + TOP_VERSION_AHEAD),
    ] {
        {
            let store = open(dir.path());
            for ts in &writes {
                store
                    .apply_batch(&[record(*ts, vec![put(b"k", b"v")])])
                    .unwrap();
            }
        }
        let store = open(dir.path());
        assert_eq!(
            store.inner.top_version.load(Ordering::Acquire),
            expected,
            "after writes at {writes:?}"
        );
    }
}

/// With spans registered each has its own top version: a range's write
/// below another range's newest version (ranges stamp their own writes)
/// takes the no-read path, and a merge into a span still makes that span's
/// later writes below it read first, so reads stay on the newest version.
#[test]
fn span_top_versions_are_kept_per_span() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_batch(&[record(3, vec![put(b"a", b"a3")])])
        .unwrap();
    store.set_gc_spans(two_spans([0, 0])).unwrap();
    let top = |id: u64| {
        let spans = store.inner.spans.get().unwrap();
        let span = spans.iter().find(|s| s.span.id == id).unwrap();
        span.top.load(Ordering::Acquire)
    };
    assert_eq!((top(1), top(2)), (3, 3));
    store
        .apply_batch(&[record(20, vec![put(b"z", b"z20")])])
        .unwrap();
    store
        .apply_batch(&[record(10, vec![put(b"a", b"a10")])])
        .unwrap();
    assert_eq!((top(1), top(2)), (10, 20));
    store
        .merge_versions(&[record(30, vec![put(b"b", b"merged30")])], &[])
        .unwrap();
    assert_eq!(top(1), 30);
    store
        .apply_batch(&[record(12, vec![put(b"b", b"local12")])])
        .unwrap();
    assert_eq!(value_at(&store, b"b", 40), Some(b"merged30".to_vec()));
    assert_eq!(value_at(&store, b"a", 40), Some(b"a10".to_vec()));
    assert_eq!(store.verify_latest_index().unwrap(), 3);
    assert_eq!(store.inner.top_version.load(Ordering::Acquire), 30);
}

/// The index check itself finds each kind of difference: a missing entry,
/// an entry naming the wrong version, and an entry of a key with no version.
#[test]
fn the_index_check_names_each_kind_of_difference() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_batch(&[record(5, vec![put(b"a", b"a5"), put(b"b", b"b5")])])
        .unwrap();
    assert_eq!(store.verify_latest_index().unwrap(), 2);
    let latest = &store.inner.latest;
    let expect_corrupt = |what: &str| {
        let err = store.verify_latest_index().unwrap_err();
        assert!(
            matches!(&err, StorageError::Corrupt { what: w } if w.contains(what)),
            "{err}"
        );
    };
    latest
        .insert(
            encoding::latest_key(b"b"),
            encoding::encode_latest(Timestamp(4)),
        )
        .unwrap();
    expect_corrupt("is the next newest version");
    latest.remove(encoding::latest_key(b"b")).unwrap();
    expect_corrupt("no entry for");
    latest
        .insert(
            encoding::latest_key(b"b"),
            encoding::encode_latest(Timestamp(5)),
        )
        .unwrap();
    latest
        .insert(
            encoding::latest_key(b"z"),
            encoding::encode_latest(Timestamp(5)),
        )
        .unwrap();
    expect_corrupt("names a key with no version");
}
