//! Every bound in one place (TigerBeetle's "put a limit on everything").
//!
//! The `DEFAULT_*` values are the defaults of the matching config fields in
//! [`crate::config`]; the `HARD_*` values are ceilings that config cannot raise,
//! so a typo in a config file cannot make a node accept a 4 GiB frame.

/// Default maximum key length in bytes (config `limits.max_key_bytes`).
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
/// Ceiling for `limits.max_key_bytes`.
pub const HARD_MAX_KEY_BYTES: usize = 64 * 1024;

/// Default maximum value length in bytes (config `limits.max_value_bytes`): 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Ceiling for `limits.max_value_bytes`.
pub const HARD_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Default maximum encoded request size in bytes (config `limits.max_request_bytes`).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
/// Ceiling for `limits.max_request_bytes`; also the largest frame a client accepts.
pub const HARD_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The largest frame any node reads or writes, client or peer: a request of
/// [`HARD_MAX_REQUEST_BYTES`] plus room for the framing of a peer message
/// (a Raft log entry carrying such a request).
pub const HARD_MAX_FRAME_BYTES: usize = HARD_MAX_REQUEST_BYTES + 1024 * 1024;

/// Default maximum number of operations (compares + success + failure) in a transaction.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Ceiling for `limits.max_txn_ops`.
pub const HARD_MAX_TXN_OPS: usize = 10_000;

/// Ceiling of `clock.max_offset_ms`: no node allows its peers' clocks to
/// lead by more (the lease rules of `coord` rely on it as a constant).
pub const HARD_MAX_CLOCK_OFFSET_MS: u64 = 60_000;

/// Default page size of a range scan when the caller gives none.
pub const DEFAULT_SCAN_PAGE: usize = 1_000;
/// Default maximum page size of a range scan (config `limits.max_scan_page`).
pub const DEFAULT_MAX_SCAN_PAGE: usize = 10_000;
/// Ceiling for `limits.max_scan_page`.
pub const HARD_MAX_SCAN_PAGE: usize = 100_000;

/// Default bound on the key and value bytes of one range page (config
/// `limits.max_scan_page_bytes`): a page of 10,000 pairs of 1 MiB values
/// would otherwise be 10 GB, built in memory before it is sent.
pub const DEFAULT_MAX_SCAN_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Floor for `limits.max_scan_page_bytes`.
pub const MIN_SCAN_PAGE_BYTES: usize = 64 * 1024;
/// Ceiling for `limits.max_scan_page_bytes`.
pub const HARD_MAX_SCAN_PAGE_BYTES: usize = 64 * 1024 * 1024;

/// Maximum versions returned by one history request.
pub const MAX_HISTORY_PAGE: usize = 1_000;

/// Most Raft proposals (writes and read barriers) a node has in flight at
/// once, over all its ranges; more wait for a slot (backpressure on clients).
pub const MAX_PENDING_PROPOSALS: usize = 4_096;
/// Most write records in one storage batch (a state-machine apply step).
pub const MAX_GROUP_COMMIT: usize = 1_024;

/// Maximum concurrent client connections per node (config `server.max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// Most QUIC handshakes a node runs at once (client and peer); more are
/// refused before they cost anything. Completed connections are then bounded
/// per protocol (`server.max_connections` for clients).
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Maximum concurrent bidirectional streams (in-flight requests) per connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Versions removed per garbage-collection pass, so GC never stalls writes for long.
pub const GC_BATCH_VERSIONS: usize = 10_000;

/// Longest a node waits for a request frame on an opened stream before
/// answering `MER-1005` and dropping it (bounds slow or stalled senders).
pub const REQUEST_READ_TIMEOUT_MS: u64 = 30_000;

/// Default most watches one client connection may have open (config
/// `limits.max_watches_per_connection`); each holds one QUIC stream, a
/// task and its buffer. More are refused with `MER-2002`.
pub const DEFAULT_MAX_WATCHES_PER_CONNECTION: usize = 64;
/// Ceiling for `limits.max_watches_per_connection` (below the streams a
/// connection may open, so a connection full of watches can still ask).
pub const HARD_MAX_WATCHES_PER_CONNECTION: usize = 200;
/// Default response frames a watch buffers ahead of its consumer (config
/// `limits.watch_buffer_frames`); a frame holds at most 256 events and
/// about 256 KiB (`watch::MAX_FRAME_EVENTS`, `watch::MAX_FRAME_BYTES`).
pub const DEFAULT_WATCH_BUFFER_FRAMES: usize = 16;
/// Ceiling for `limits.watch_buffer_frames` (256 MiB of events per watch).
pub const HARD_MAX_WATCH_BUFFER_FRAMES: usize = 1_024;
/// Default longest a watch waits with a full buffer (or a frame it cannot
/// write) before it ends with `MER-3008` and a resume point (config
/// `limits.watch_stall_timeout_ms`).
pub const DEFAULT_WATCH_STALL_TIMEOUT_MS: u64 = 10_000;
/// Floor for `limits.watch_stall_timeout_ms`.
pub const MIN_WATCH_STALL_TIMEOUT_MS: u64 = 100;
/// Ceiling for `limits.watch_stall_timeout_ms`.
pub const HARD_MAX_WATCH_STALL_TIMEOUT_MS: u64 = 600_000;
