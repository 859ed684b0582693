//! Memory retention of the storage layer's bulk removals, in a process of
//! its own (one test: resident memory is per process, and the test harness
//! runs the tests of one file as threads of one process).
//!
//! A key read from a fjall iterator is a view into the data block it came
//! from, and keeps the whole block alive (keys of more than 20 bytes; the
//! shorter ones are copied inline, so these keys are longer). Clearing a range for a snapshot
//! install and collecting garbage both keep the keys they remove until
//! their batch commits: with views, every block read stayed in memory
//! (225 MB for a 245 MB range). These check that a removal over 96 MiB of
//! stored values holds far less than that, with an 8 MiB block cache.

mod common;

use meridian::storage::{FsyncPolicy, MvccStore, RawVersion, StoreOptions};
use meridian::types::Timestamp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MIB: usize = 1024 * 1024;
/// Stored values removed by each phase: 96 of 1 MiB.
const VALUES: usize = 96;
/// Most the process may grow while removing them: the 8 MiB block cache,
/// the blocks being read and the batch's copies of keys, with room to
/// spare; holding every block read would take 96 MiB.
const MAX_GROWTH: u64 = 40 * MIB as u64;

fn rss() -> u64 {
    common::rss_bytes(std::process::id()).expect("VmRSS in /proc")
}

/// Makes resident memory follow live allocations in this test process
/// (glibc's allocator; the server binary uses jemalloc, which returns freed
/// pages at once): blocks from 128 KiB up are mmapped and returned on free
/// (glibc would otherwise keep freed MiB-sized blocks and reuse them,
/// hiding any growth). Then returns what is free at the heap's top.
fn track_live_memory() {
    // SAFETY: allocator tunables and trimming only; no memory is touched.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::malloc_trim(0);
    }
}

/// Runs `work` while a thread samples resident memory every 2 ms; returns
/// the peak growth above the size before it started.
fn peak_growth(work: impl FnOnce()) -> u64 {
    track_live_memory();
    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            // Bounded: stops when told, or after 5 minutes.
            for _ in 0..150_000 {
                peak.fetch_max(rss(), Ordering::Relaxed);
                if done.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    work();
    peak.fetch_max(rss(), Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.load(Ordering::Relaxed).saturating_sub(before)
}

fn value(i: usize) -> Vec<u8> {
    vec![b'a' + (i % 26) as u8; MIB]
}

/// Writes `versions` through the bulk path, which flushes them to tables.
fn install(store: &MvccStore, versions: impl Iterator<Item = RawVersion>) {
    for v in versions {
        store
            .insert_versions(b"r/", Some(b"r0"), std::slice::from_ref(&v))
            .unwrap();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn bulk_removals_do_not_hold_the_blocks_they_read() {
    track_live_memory();
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(StoreOptions {
        path: dir.path().to_path_buf(),
        fsync: FsyncPolicy::Never,
        cache_bytes: 8 * MIB as u64,
    })
    .unwrap();

    // A range cleared for a snapshot install: 96 keys of 1 MiB.
    install(
        &store,
        (0..VALUES).map(|i| RawVersion {
            key: format!("r/config/service/{i:04}").into_bytes(),
            version: Timestamp(10),
            value: Some(value(i)),
        }),
    );
    let growth = peak_growth(|| {
        // One step removes all of them (one batch).
        let more = store.clear_range_step(b"r/", Some(b"r0"), 10_000).unwrap();
        assert!(!more);
    });
    println!(
        "clear of {VALUES} MiB: peak growth {} MiB",
        growth / MIB as u64
    );
    assert!(
        growth < MAX_GROWTH,
        "clearing {VALUES} MiB grew the process by {} MiB",
        growth / MIB as u64
    );
    assert!(store
        .get(b"r/config/service/0000", Timestamp(20))
        .unwrap()
        .is_none());

    // Garbage collection of one key's history: 96 versions of 1 MiB, all
    // but the newest below the horizon.
    install(
        &store,
        (0..VALUES).map(|i| RawVersion {
            key: b"r/config/service/history".to_vec(),
            version: Timestamp(100 + i as u64),
            value: Some(value(i)),
        }),
    );
    let growth = peak_growth(|| {
        let stats = store.gc(Timestamp(1_000), 10_000).unwrap();
        assert_eq!(stats.removed_versions, VALUES - 1, "{stats:?}");
    });
    println!(
        "gc of {} MiB of history: peak growth {} MiB",
        VALUES - 1,
        growth / MIB as u64
    );
    assert!(
        growth < MAX_GROWTH,
        "collecting {} MiB of history grew the process by {} MiB",
        VALUES - 1,
        growth / MIB as u64
    );
}
