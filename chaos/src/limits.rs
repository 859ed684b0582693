//! Every bound of the emulator, as named constants: defaults of the
//! `[wan]` settings and hard ceilings a config cannot raise, queue and
//! channel capacities, buffer sizes, timeouts.
//!
//! The emulator holds packets for up to seconds on purpose, so memory is
//! bounded by counts and bytes, never by time alone.

use std::time::Duration;

/// Most regions a topology may name (the address plan has room for 250).
pub const MAX_REGIONS: usize = 32;
/// Most nodes per region the loopback address plan numbers (127.x.i.j,
/// j in 1..=250).
pub const MAX_NODES_PER_REGION: usize = 250;
/// Most listeners (front addresses) one emulator runs.
pub const MAX_LISTENERS: usize = 1_024;
/// Most source-address rules (`[[wan.sources]]` plus the plan's).
pub const MAX_SOURCE_RULES: usize = 1_024;

/// Largest round trip a link may have, ms.
pub const MAX_RTT_MS: u64 = 10_000;
/// Largest jitter a link may have, ms (each one-way delay moves by up to
/// this much either way).
pub const MAX_JITTER_MS: u64 = 5_000;

/// Receive buffer per socket: the largest UDP payload over IPv4.
pub const MAX_DATAGRAM_BYTES: usize = 65_535;

/// Default of `[wan] link_queue_packets`: datagrams one directed link may
/// hold in its delay queue; a datagram beyond it is dropped (`overflow`).
pub const DEFAULT_LINK_QUEUE_PACKETS: usize = 8_192;
/// Ceiling of `[wan] link_queue_packets`.
pub const MAX_LINK_QUEUE_PACKETS: usize = 1_000_000;
/// Default of `[wan] link_queue_bytes`: payload bytes one directed link may
/// hold in its delay queue (16 MiB: about 160 MiB/s across a 100 ms one-way
/// delay); a datagram beyond it is dropped (`overflow`).
pub const DEFAULT_LINK_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Ceiling of `[wan] link_queue_bytes` (1 GiB).
pub const MAX_LINK_QUEUE_BYTES: usize = 1024 * 1024 * 1024;

/// Default of `[wan] max_flows_per_listener`: UDP flows (distinct client
/// addresses, each with its own upstream socket) per front address. A new
/// client beyond it is refused (its datagrams dropped, counted).
pub const DEFAULT_MAX_FLOWS_PER_LISTENER: usize = 1_024;
/// Ceiling of `[wan] max_flows_per_listener`.
pub const MAX_FLOWS_PER_LISTENER: usize = 16_384;
/// Default of `[wan] flow_idle_ms`: a UDP flow with no datagram either way
/// for this long is closed and its upstream socket freed. Longer than
/// quinn's and foca's keep-alives, like a NAT's UDP timeout.
pub const DEFAULT_FLOW_IDLE_MS: u64 = 60_000;
/// Bounds of `[wan] flow_idle_ms`.
pub const MIN_FLOW_IDLE_MS: u64 = 100;
/// Upper bound of `[wan] flow_idle_ms` (one hour).
pub const MAX_FLOW_IDLE_MS: u64 = 3_600_000;
/// How often a UDP listener looks for idle flows.
pub const FLOW_SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Datagrams waiting for the engine task; a receiver that finds the channel
/// full drops the datagram (counted as `input_overflow`).
pub const ENGINE_INPUT_CAPACITY: usize = 16_384;
/// Datagrams the engine admits per wake-up before it sends what is due, so
/// a flood cannot starve delivery.
pub const ENGINE_BATCH: usize = 256;
/// Control commands waiting for the engine task.
pub const CONTROL_CHANNEL_CAPACITY: usize = 64;

/// Bytes a TCP proxy reads at once; each read is delayed as one chunk.
pub const TCP_CHUNK_BYTES: usize = 16 * 1024;
/// Chunks in flight per TCP direction. When they are all in flight the
/// proxy stops reading, so TCP flow control pushes back on the sender
/// (bytes are never dropped): at most `TCP_QUEUE_CHUNKS * TCP_CHUNK_BYTES`
/// (1 MiB) per direction per connection.
pub const TCP_QUEUE_CHUNKS: usize = 64;
/// Default of `[wan] max_connections_per_listener`: open TCP connections
/// per front address; a connection beyond it is closed at once (counted).
pub const DEFAULT_MAX_CONNECTIONS_PER_LISTENER: usize = 256;
/// Ceiling of `[wan] max_connections_per_listener`.
pub const MAX_CONNECTIONS_PER_LISTENER: usize = 4_096;
/// How long the proxy waits for the upstream of a TCP connection to accept.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest control request line, bytes.
pub const CONTROL_MAX_REQUEST_BYTES: usize = 4 * 1024;
/// Longest control reply line (a status of every link and listener),
/// bytes; the client refuses a longer one.
pub const CONTROL_MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// Control connections served at once; more are closed at once.
pub const CONTROL_MAX_CONNECTIONS: usize = 16;
/// A control connection idle this long is closed; also the CLI's timeout.
pub const CONTROL_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a socket error before trying again (a receive error that
/// persists must not spin a core).
pub const IO_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Pause after a failed accept (out of file descriptors, typically).
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// How long `shutdown` waits for the tasks to finish after aborting them.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
