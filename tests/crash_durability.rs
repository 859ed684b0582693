//! Crash test: a child process writes and acknowledges batches, the parent
//! SIGKILLs it at an arbitrary point, reopens the store and checks that every
//! acknowledged batch survived and that batches are atomic.
//!
//! The child is this very test binary, re-executed with `--exact
//! crash_child_writer` and [`CHILD_DIR_ENV`] set; without the variable the
//! child test does nothing, so a normal `cargo test` run skips it.
//!
//! SIGKILL tests the process-crash half of [`FsyncPolicy::Always`]: data the
//! kernel already holds must be recovered by fjall's journal replay,
//! including a torn tail. Power loss (the fsync half) cannot be simulated here.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use meridian::storage::{FsyncPolicy, MvccStore, StoreOptions, WriteRecord};
use meridian::types::{Op, Timestamp};

/// Set in the child's environment to the store directory.
const CHILD_DIR_ENV: &str = "MERIDIAN_CRASH_CHILD_DIR";
/// Name of the child test, passed to `--exact`.
const CHILD_TEST: &str = "crash_child_writer";
/// The child stops on its own after this long, in case the parent is gone.
const CHILD_MAX_RUN: Duration = Duration::from_secs(60);
/// Kill rounds on the same directory; later rounds recover a crashed store.
/// Each round kills the child after this many acks (or at the deadline).
const ROUND_ACKS: [u64; 3] = [50, 400, 2_000];
/// Longest a round waits for acks before killing the child anyway.
const ROUND_DEADLINE: Duration = Duration::from_secs(10);
/// Longest the parent waits for the killed child to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// The key holding the number of the last batch written.
const COUNTER_KEY: &[u8] = b"counter";

fn open(dir: &std::path::Path) -> MvccStore {
    let opts = StoreOptions {
        path: dir.to_path_buf(),
        fsync: FsyncPolicy::Always,
        cache_bytes: 4 << 20,
    };
    MvccStore::open(opts).expect("open store")
}

fn plain_key(n: u64) -> Vec<u8> {
    format!("k{n:08}").into_bytes()
}

/// A key with 0x00 and 0xFF bytes, so the escaping path is crash-tested too.
fn binary_key(n: u64) -> Vec<u8> {
    let mut key = b"z\x00\xff".to_vec();
    key.extend_from_slice(&n.to_be_bytes());
    key
}

fn value(n: u64) -> Vec<u8> {
    format!("value-{n}-{}", "x".repeat((n % 64) as usize)).into_bytes()
}

/// Batch `n`: two records (so group commit is crash-tested), three keys.
fn batch(n: u64) -> Vec<WriteRecord> {
    let first = vec![
        Op::Put {
            key: plain_key(n),
            value: value(n),
        },
        Op::Put {
            key: binary_key(n),
            value: value(n),
        },
    ];
    let second = vec![Op::Put {
        key: COUNTER_KEY.to_vec(),
        value: n.to_be_bytes().to_vec(),
    }];
    vec![
        WriteRecord {
            ts: Timestamp(2 * n + 1),
            ops: first,
        },
        WriteRecord {
            ts: Timestamp(2 * n + 2),
            ops: second,
        },
    ]
}

/// The number of the last batch in the store, if any.
fn counter(store: &MvccStore) -> Option<u64> {
    let kv = store
        .get(COUNTER_KEY, Timestamp::MAX)
        .expect("read counter")?;
    Some(u64::from_be_bytes(
        kv.value.as_slice().try_into().expect("8-byte counter"),
    ))
}

/// The child role: write, sync, acknowledge, forever (until killed).
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return; // Not a child: nothing to do.
    };
    let store = open(std::path::Path::new(&dir));
    let first = counter(&store).map_or(0, |n| n + 1);
    let started = Instant::now();
    let mut stdout = std::io::stdout().lock();
    for n in first.. {
        if started.elapsed() > CHILD_MAX_RUN {
            break;
        }
        store.apply_batch(&batch(n)).expect("apply_batch");
        store.sync().expect("sync");
        // Only now is batch n durable, so only now may it be acknowledged.
        writeln!(stdout, "ACK {n}").expect("write ack");
        stdout.flush().expect("flush ack");
    }
}

/// Kills and reaps the child when dropped, so no failure path leaks it.
struct KillOnDrop(Child);

impl KillOnDrop {
    /// Sends SIGKILL and waits (bounded) for the child to be reaped.
    fn kill_and_reap(&mut self) {
        let _ = self.0.kill();
        let deadline = Instant::now() + REAP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "child {} was not reaped within {REAP_TIMEOUT:?}",
            self.0.id()
        );
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the child and a thread that forwards its acks.
fn spawn_child(dir: &std::path::Path) -> (KillOnDrop, Receiver<u64>) {
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let guard = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The harness prints its own text too, and with --nocapture the
        // first ack shares a line with "test crash_child_writer ... ".
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line
                .rsplit_once("ACK ")
                .and_then(|(_, n)| n.trim().parse().ok())
            {
                if tx.send(n).is_err() {
                    return;
                }
            }
        }
    });
    (guard, rx)
}

/// Runs one child until `max_acks` acks or the deadline, kills it, and
/// returns the last acknowledged batch (acks still in the pipe included).
fn run_round(dir: &std::path::Path, first: u64, max_acks: u64) -> u64 {
    let (mut child, acks) = spawn_child(dir);
    let deadline = Instant::now() + ROUND_DEADLINE;
    let mut expected = first;
    let check = |n: u64, expected: &mut u64| {
        assert_eq!(n, *expected, "acks must be consecutive");
        *expected += 1;
    };
    while expected - first < max_acks {
        match acks.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(n) => check(n, &mut expected),
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => panic!("child exited before it was killed"),
        }
    }
    child.kill_and_reap();
    // The pipe is closed now; drain what the child acknowledged before dying.
    let drain_deadline = Instant::now() + REAP_TIMEOUT;
    loop {
        match acks.recv_timeout(drain_deadline.saturating_duration_since(Instant::now())) {
            Ok(n) => check(n, &mut expected),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("ack reader did not finish"),
        }
    }
    assert!(
        expected > first,
        "the child acknowledged nothing within {ROUND_DEADLINE:?}"
    );
    expected - 1
}

/// Every acknowledged batch is present; at most one unacknowledged batch
/// follows, and it is all there (batches are atomic). Returns the last batch.
fn check_recovered(dir: &std::path::Path, last_acked: u64) -> u64 {
    let store = open(dir);
    let last = counter(&store).expect("counter survives");
    assert!(
        last == last_acked || last == last_acked + 1,
        "store holds batches up to {last}, last ack was {last_acked}"
    );
    for n in 0..=last {
        for key in [plain_key(n), binary_key(n)] {
            let kv = store
                .get(&key, Timestamp::MAX)
                .expect("read")
                .unwrap_or_else(|| panic!("batch {n} lost"));
            assert_eq!(kv.value, value(n), "batch {n}");
            assert_eq!(kv.version, Timestamp(2 * n + 1), "batch {n}");
        }
    }
    for key in [plain_key(last + 1), binary_key(last + 1)] {
        assert_eq!(
            store.get(&key, Timestamp::MAX).expect("read"),
            None,
            "half of batch {}",
            last + 1
        );
    }
    let page = store
        .scan(b"k", Some(b"l"), Timestamp::MAX, 100_000)
        .expect("scan");
    assert_eq!(
        page.items.len() as u64,
        last + 1,
        "no extra or missing plain keys"
    );
    assert_eq!(page.next_key, None);
    last
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return; // Inside a child: never recurse.
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = 0;
    for max_acks in ROUND_ACKS {
        let last_acked = run_round(dir.path(), first, max_acks);
        let last = check_recovered(dir.path(), last_acked);
        eprintln!(
            "crash round: batches {first}..={last_acked} acknowledged, {first}..={last} recovered"
        );
        first = last + 1;
    }
}
