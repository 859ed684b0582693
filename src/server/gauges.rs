//! Node-wide gauges sampled on a timer: what no request path sets as it
//! happens (the store's size and poison state, the clock's largest remote
//! lead, the client connections open). One task owns the sampling; it
//! only reads shared state and writes metrics.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::clock::Hlc;
use crate::storage::MvccStore;

/// How often the gauges are sampled; also the window over which
/// `meridian_clock_remote_ahead_seconds` is the largest lead seen.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// What the sampler reads.
pub struct Sources {
    /// The node's store.
    pub store: MvccStore,
    /// The node's clock.
    pub hlc: Arc<Hlc>,
    /// The client connection limit's permits (`server.max_connections` in all).
    pub conn_limit: Arc<Semaphore>,
    /// `server.max_connections`.
    pub max_connections: usize,
}

/// Starts the sampler (the first sample at once); abort the handle to stop it.
pub fn spawn(sources: Sources) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        metrics::gauge!("meridian_clock_max_offset_seconds")
            .set(sources.hlc.max_offset_ms() as f64 / 1000.0);
        loop {
            tick.tick().await;
            sample(&sources);
        }
    })
}

fn sample(s: &Sources) {
    if let Some(bytes) = s.store.disk_space_bytes() {
        metrics::gauge!("meridian_storage_size_bytes").set(bytes as f64);
    }
    metrics::gauge!("meridian_storage_poisoned").set(f64::from(u8::from(s.store.is_poisoned())));
    let ahead_ms = s.hlc.take_max_remote_ahead_ms();
    metrics::gauge!("meridian_clock_remote_ahead_seconds").set(ahead_ms as f64 / 1000.0);
    let open = s
        .max_connections
        .saturating_sub(s.conn_limit.available_permits());
    metrics::gauge!("meridian_client_connections").set(open as f64);
}
