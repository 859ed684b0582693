//! Logging, trace export and metrics setup.
//!
//! Logs go through `tracing` to stderr, as human-readable lines or JSON lines
//! (config `log.format`); a JSON line logged inside a sampled span carries
//! its `trace_id` and `span_id`. With `[telemetry] otlp_endpoint` set, the
//! node's spans (target `meridian`, level debug and above, whatever the log
//! filter) also go through tracing-opentelemetry to an OTLP/HTTP collector,
//! in bounded batches from a background thread ([`MAX_QUEUED_SPANS`],
//! [`MAX_EXPORT_BATCH_SPANS`]); [`Telemetry::shutdown`] flushes them. How
//! a trace crosses nodes is [`crate::trace_context`]'s.
//!
//! Metrics go through the `metrics` facade into one process-wide Prometheus
//! recorder, rendered by the gateway's `/metrics`. Metric names carry their
//! unit (`_seconds`, `_bytes`, `_total`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::telemetry::TelemetryConfig;
use crate::config::LogFormat;

mod export;
mod json;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
///
/// Several in-process nodes (tests) share one recorder; a node's metrics are
/// then the process's. If another recorder was installed first, the handle
/// still renders (empty) output rather than failing the node.
pub fn metrics_handle() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            crate::membership::describe_metrics();
            handle
        })
        .clone()
}

/// What a metric is, for its `# TYPE` line.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    /// Rendered as a Prometheus summary (quantiles over a rolling window,
    /// `_sum` and `_count`): the exporter's default without buckets.
    Histogram,
}

/// Every metric a node exports that is described here, with its HELP text
/// (gossip's and the HTTP gateway's describe their own). Names follow
/// Prometheus conventions: base units last (`_seconds`, `_bytes`,
/// `_entries`), `_total` on counters and only on counters.
const METRICS: &[(Kind, &str, &str)] = &[
    // Client requests.
    (Kind::Counter, "meridian_requests_total", "Client requests by operation and outcome code (OK or an MER- code)."),
    (Kind::Histogram, "meridian_request_duration_seconds", "Client request latency by operation, seconds."),
    (Kind::Counter, "meridian_connections_refused_total", "QUIC connections refused, by reason (handshakes, limit, handshake, peer_role)."),
    (Kind::Gauge, "meridian_client_connections", "Client connections open (peers not counted)."),
    (Kind::Counter, crate::engine::levels::METRIC_LEVEL_READS, "Reads by consistency level and outcome (leader, local, redirect, too_stale, not_allowed)."),
    (Kind::Histogram, crate::engine::levels::METRIC_CAUSAL_WAIT, "Time causal reads waited for the frontier to reach their token, seconds."),
    // Raft.
    (Kind::Gauge, "meridian_raft_is_leader", "1 if this node leads the range's Raft group in its region, else 0."),
    (Kind::Gauge, "meridian_raft_term", "Current Raft term of the range's group on this node."),
    (Kind::Gauge, "meridian_raft_commit_index", "Highest Raft log index this node knows committed, per range."),
    (Kind::Gauge, "meridian_raft_applied_index", "Highest Raft log index applied on this node, per range."),
    (Kind::Gauge, "meridian_raft_commit_lag_entries", "Raft log entries on this node not yet known committed, per range."),
    (Kind::Gauge, "meridian_raft_apply_lag_entries", "Committed Raft log entries not yet applied on this node, per range."),
    (Kind::Counter, "meridian_raft_leader_changes_total", "Changes of the range's leader as this node saw them (elections and losses)."),
    (Kind::Gauge, "meridian_raft_proposals_pending", "Writes proposed on this node waiting to be applied, per range."),
    (Kind::Histogram, "meridian_raft_proposal_duration_seconds", "Time from proposing a write to its being applied, seconds, per range."),
    (Kind::Histogram, "meridian_raft_log_sync_seconds", "Duration of one Raft log fsync (group commit), seconds."),
    (Kind::Histogram, "meridian_raft_log_sync_appends", "Raft log appends made durable by one fsync."),
    (Kind::Counter, "meridian_raft_snapshots_built_total", "Snapshot points recorded."),
    (Kind::Counter, crate::raft::reads::METRIC_SHARED_READS, "Linearizable reads answered by a leadership confirmation shared with other reads (more than raft.direct_read_confirmations of the range were in flight)."),
    (Kind::Counter, crate::raft::reads::METRIC_SHARED_CONFIRMATIONS, "Leadership confirmations run for linearizable reads that share them."),
    (Kind::Counter, crate::raft::host::METRIC_READ_INDEX_FALLBACKS, "Leadership confirmations for linearizable reads that found the leader lease stale (or this node not leading) and tried a heartbeat round (ReadIndex)."),
    (Kind::Histogram, "meridian_raft_snapshot_build_seconds", "Time to record one snapshot point (a metadata write and a sync), seconds."),
    (Kind::Histogram, "meridian_raft_snapshot_materialize_seconds", "Time to write one snapshot point's file for a lagging follower, seconds."),
    (Kind::Histogram, "meridian_raft_snapshot_materialize_bytes", "Size of one materialised snapshot file, bytes."),
    (Kind::Counter, "meridian_raft_snapshot_stale_points_total", "Snapshot requests that found their point already replaced."),
    (Kind::Counter, "meridian_raft_snapshots_sent_total", "Snapshots sent to a follower and installed there."),
    (Kind::Counter, "meridian_raft_snapshots_installed_total", "Snapshots installed on this node."),
    (Kind::Counter, "meridian_raft_snapshot_sent_bytes_total", "Snapshot bytes sent to followers."),
    (Kind::Counter, "meridian_raft_snapshot_received_bytes_total", "Snapshot bytes received from leaders."),
    // Storage.
    (Kind::Gauge, "meridian_storage_size_bytes", "Bytes the store occupies on disk (data, Raft log, journal)."),
    (Kind::Gauge, "meridian_storage_poisoned", "1 once a failed write or fsync poisoned the store (restart needed), else 0."),
    (Kind::Counter, "meridian_storage_poisoned_total", "Write or fsync failures that poisoned the store."),
    (Kind::Histogram, "meridian_storage_sync_seconds", "Duration of one store-wide persist (fsync under storage.fsync = always), seconds."),
    (Kind::Counter, "meridian_storage_gc_removed_versions_total", "Old versions removed by garbage-collection steps."),
    (Kind::Counter, crate::engine::METRIC_GC_REMOVED, "Old versions removed by garbage collection, as the collector counts them."),
    (Kind::Counter, crate::engine::METRIC_GC_SWEEPS, "Garbage-collection sweeps completed."),
    (Kind::Gauge, crate::engine::METRIC_GC_LAST_SWEEP, "Unix time the last garbage-collection sweep completed, seconds."),
    (Kind::Gauge, crate::engine::METRIC_GC_HORIZON_AGE, "How far the range's collection horizon is behind the wall clock, seconds."),
    // Clock.
    (Kind::Counter, crate::clock::METRIC_OFFSET_REJECTIONS, "Remote timestamps refused for being more than max_offset_ms ahead."),
    (Kind::Counter, crate::clock::METRIC_OFFSET_OBSERVED, "Committed timestamps applied while more than max_offset_ms ahead."),
    (Kind::Gauge, "meridian_clock_remote_ahead_seconds", "Largest lead of a remote timestamp over this node's wall clock in the last sampling window, seconds."),
    (Kind::Gauge, "meridian_clock_max_offset_seconds", "The configured clock.max_offset_ms, seconds."),
    // Cross-region replication.
    (Kind::Gauge, "meridian_replication_acked_lag_seconds", "How far the destination's acknowledged cursor is behind the clock, seconds (origin's range leader)."),
    (Kind::Histogram, "meridian_replication_batch_seconds", "Replication batch round trip, send to acknowledgement, seconds."),
    (Kind::Counter, "meridian_replication_bytes_total", "Replication bytes sent, per range and destination."),
    (Kind::Counter, "meridian_replication_resends_total", "Replication batches sent again after a loss or a restart."),
    (Kind::Counter, "meridian_replication_stream_restarts_total", "Replication streams restarted, per range and destination."),
    (Kind::Counter, "meridian_replication_catch_ups_total", "Cross-region catch-ups from a frozen view, per range and destination."),
    (Kind::Histogram, "meridian_replication_lag_seconds", "Apply time at the destination minus the change's origin HLC time, seconds."),
    (Kind::Gauge, "meridian_replication_frontier_age_seconds", "How far the range's frontier on this node is behind the clock, seconds."),
    (Kind::Gauge, crate::engine::METRIC_MAX_STALENESS, "Tightest max_staleness_ms of the policies governing the range, seconds."),
    (Kind::Histogram, "meridian_sync_confirm_duration_seconds", "Time for sync-N writes to be confirmed by N other regions, seconds."),
    (Kind::Counter, "meridian_sync_unconfirmed_total", "sync-N writes not confirmed by N other regions in time (MER-3005)."),
    // Control range.
    (Kind::Gauge, "meridian_control_policy_version", "Version of the control range's policy table installed on this node."),
    (Kind::Gauge, "meridian_control_handoffs_in_progress", "Policy handoffs under way in the table installed on this node (their prefixes take no writes)."),
    // Watch.
    (Kind::Gauge, crate::engine::watch::METRIC_STREAMS_OPEN, "Watch streams open on this node."),
    (Kind::Counter, crate::engine::watch::METRIC_EVENTS_SENT, "Watch events (puts and deletes) written to consumers."),
    (Kind::Histogram, crate::engine::watch::METRIC_EVENT_LAG, "Time from a watch event's HLC to its delivery to the consumer's stream, seconds."),
    (Kind::Counter, crate::engine::watch::METRIC_ENDED, "Watches ended, by reason (client_closed, lagged, compacted, failed, refused)."),
    // Leases, locks and elections.
    (Kind::Gauge, crate::engine::lease::METRIC_LEASES_LIVE, "Live leases in the region, as the lease range's leader last counted them (other nodes: absent, or their count from when they led)."),
    (Kind::Counter, crate::engine::lease::METRIC_LEASE_EXPIRED, "Leases that expired (deadline passed, not revoked); their keys were deleted."),
    (Kind::Counter, crate::engine::lease::METRIC_LEASE_KEEPALIVES, "Leases kept alive: one per lease a committed keepalive named, on the node that proposed it."),
    (Kind::Gauge, crate::engine::lease::METRIC_LOCKS_HELD, "Locks and elections with a holder in the region (exported by the lease range's leader)."),
    (Kind::Gauge, crate::engine::lease::METRIC_LOCK_WAITERS, "Acquirers waiting for locks in the region (exported by the lease range's leader)."),
    (Kind::Counter, crate::engine::lock::METRIC_LOCK_GRANTS, "Lock grants (and election terms) answered by this node."),
    (Kind::Counter, crate::engine::lock::METRIC_FENCE_REJECTED, "Writes refused for a stale or foreign fencing token (MER-1017)."),
];

/// Counters and gauges without labels that exist from start-up at zero,
/// so a dashboard or an alert sees 0 rather than no data before the first
/// event (the convention of Prometheus client libraries).
const ZERO_AT_START: &[&str] = &[
    "meridian_raft_snapshots_built_total",
    crate::raft::reads::METRIC_SHARED_READS,
    crate::raft::reads::METRIC_SHARED_CONFIRMATIONS,
    crate::raft::host::METRIC_READ_INDEX_FALLBACKS,
    "meridian_raft_snapshot_stale_points_total",
    "meridian_raft_snapshots_sent_total",
    "meridian_raft_snapshots_installed_total",
    "meridian_raft_snapshot_sent_bytes_total",
    "meridian_raft_snapshot_received_bytes_total",
    "meridian_storage_poisoned_total",
    "meridian_storage_gc_removed_versions_total",
    crate::engine::METRIC_GC_REMOVED,
    crate::engine::METRIC_GC_SWEEPS,
    crate::clock::METRIC_OFFSET_REJECTIONS,
    crate::clock::METRIC_OFFSET_OBSERVED,
    crate::engine::watch::METRIC_EVENTS_SENT,
    crate::engine::lease::METRIC_LEASE_EXPIRED,
    crate::engine::lease::METRIC_LEASE_KEEPALIVES,
    crate::engine::lock::METRIC_LOCK_GRANTS,
    crate::engine::lock::METRIC_FENCE_REJECTED,
];

fn describe_metrics() {
    for &(kind, name, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    for &name in ZERO_AT_START {
        metrics::counter!(name).absolute(0);
    }
    for &reason in crate::engine::watch::ENDED_REASONS {
        metrics::counter!(crate::engine::watch::METRIC_ENDED, "reason" => reason).absolute(0);
    }
    metrics::gauge!(crate::engine::watch::METRIC_STREAMS_OPEN).set(0.0);
    for reason in ["handshakes", "limit", "handshake", "peer_role"] {
        metrics::counter!("meridian_connections_refused_total", "reason" => reason).absolute(0);
    }
}

/// Most spans waiting for export; more are dropped (and counted by the SDK)
/// rather than grow memory while a collector is slow or down.
pub const MAX_QUEUED_SPANS: usize = 4096;

/// Most spans in one export request.
pub const MAX_EXPORT_BATCH_SPANS: usize = 512;

/// How often a partial batch is exported, in milliseconds.
pub const EXPORT_INTERVAL_MS: u64 = 1_000;

/// Longest one export request may take, connection included, in
/// milliseconds; a failed export is dropped, not retried (traces are
/// best-effort and a retry would hold the next batch back).
pub const EXPORT_TIMEOUT_MS: u64 = 5_000;

/// Longest [`Telemetry::shutdown`] waits for the last spans to be exported.
pub const SHUTDOWN_FLUSH_MS: u64 = 5_000;

/// The tracing target whose spans are exported (this crate's).
const EXPORTED_TARGET: &str = "meridian";

/// Spans that live as long as a connection or a task, not one request:
/// never exported (a trace is one request; their requests start their own).
const NOT_EXPORTED: &[&str] = &["conn", "peer_conn", "membership"];

/// Why telemetry could not start. The node does not start either: an
/// operator who turned export on wants to know it is not working.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from the configuration.
    #[error("telemetry: cannot build the OTLP exporter for {endpoint}: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's reason.
        message: String,
    },
    /// Trace export needs a tokio runtime to send from.
    #[error("telemetry: trace export must be started inside a tokio runtime")]
    NoRuntime,
}

/// Who this process is, for the resource of its exported spans.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `service.instance.id`: the node's name.
    pub node: String,
    /// `meridian.region`.
    pub region: String,
    /// `meridian.zone`.
    pub zone: String,
}

/// The installed trace pipeline; export stops (after a flush) on
/// [`Telemetry::shutdown`]. Holding `None` inside: export is off.
#[must_use = "call shutdown() at exit, or spans still queued are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every span still queued (waiting at most
    /// [`SHUTDOWN_FLUSH_MS`]) and stops export. Blocks: call it from
    /// `spawn_blocking` inside a runtime (the export itself is sent on the
    /// runtime, which must still be running).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown_with_timeout(Duration::from_millis(SHUTDOWN_FLUSH_MS))
            {
                eprintln!("telemetry: flushing spans at shutdown failed: {e}");
            }
        }
    }
}

/// Installs the global tracing subscriber: logs as `format` filtered by
/// `filter`, and, when `telemetry` is set, span export. The first call in a
/// process wins; later calls install nothing and return an inactive
/// [`Telemetry`]. Export needs to be started inside a tokio runtime.
pub fn init(
    format: LogFormat,
    filter: &str,
    telemetry: Option<&TelemetryConfig>,
    who: &Identity,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let slot = json::DispatchSlot::default();
    let fmt = match format {
        LogFormat::Human => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .event_format(json::WithTraceIds::new(slot.clone()))
            .with_filter(filter)
            .boxed(),
    };
    let provider = telemetry.map(|t| provider(t, who)).transpose()?;
    let otel = provider.as_ref().map(|p| {
        let exported = export_filter();
        // What does pass records no busy/idle timings, source locations or
        // thread ids per span, and does not make the OpenTelemetry context
        // current on every poll (nothing here reads `Context::current`).
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(EXPORTED_TARGET))
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_context_activation(false)
            .with_filter(exported)
    });
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(fmt).with(otel));
    slot.set(&dispatch);
    let installed = dispatch.try_init().is_ok();
    if !installed {
        if let Some(p) = provider {
            let _ = p.shutdown();
        }
        return Ok(Telemetry { provider: None });
    }
    if let (Some(_), Some(t)) = (&provider, telemetry) {
        crate::trace_context::mark_export_on(t.sampling_ratio);
    }
    Ok(Telemetry { provider })
}

/// Which spans and events the OpenTelemetry layer sees.
///
/// Which spans reach the exporter is decided where they are created, not by
/// the OpenTelemetry sampler when they end: a span is exported when it is
/// opened inside an exported span (its parent), or when
/// [`crate::trace_context::exported`] asks for it (a sampled root, a
/// received trace, a recalled Raft entry). Every other span is disabled for
/// this layer: the unsampled 99% of requests cost the registry's record of
/// a span, not an OpenTelemetry span (builder, attributes, ids, a sampler
/// call, an end). Interest is "sometimes" for the
/// callsites that could qualify (this crate's, debug and above, not a
/// connection's or a task's long-lived span), so the filter runs at each
/// span's creation. Events are seen inside exported spans only.
fn export_filter<S>() -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::filter::dynamic_filter_fn(|m, cx| {
        // Asked here too, not only per callsite: with several subscribers
        // in a process (tests) a callsite's interest is theirs combined.
        if !may_export(m) {
            return false;
        }
        if m.is_span() && crate::trace_context::export_next() {
            return true;
        }
        cx.lookup_current().is_some()
    })
    .with_callsite_filter(|m| {
        if may_export(m) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    })
    .with_max_level_hint(tracing::Level::DEBUG)
}

/// Whether `m` could ever be exported: this crate's, debug or above, and not
/// a connection's or a task's long-lived span.
fn may_export(m: &tracing::Metadata<'_>) -> bool {
    let target = m.target();
    let ours = target == EXPORTED_TARGET
        || target
            .strip_prefix(EXPORTED_TARGET)
            .is_some_and(|t| t.starts_with("::"));
    ours && *m.level() <= tracing::Level::DEBUG
        && !(m.is_span() && NOT_EXPORTED.contains(&m.name()))
}

/// The tracer provider: sampling decided at the roots, bounded batches, the
/// OTLP/HTTP exporter over [`export::HyperExport`].
fn provider(t: &TelemetryConfig, who: &Identity) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};

    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
    let timeout = Duration::from_millis(EXPORT_TIMEOUT_MS);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&t.otlp_endpoint)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(timeout)
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
        .with_http_client(export::HyperExport::new(runtime, timeout))
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: t.otlp_endpoint.clone(),
            message: e.to_string(),
        })?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .with_max_export_batch_size(MAX_EXPORT_BATCH_SPANS)
        .with_scheduled_delay(Duration::from_millis(EXPORT_INTERVAL_MS))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(t.service_name.clone())
        .with_attributes([
            opentelemetry::KeyValue::new("service.instance.id", who.node.clone()),
            opentelemetry::KeyValue::new("meridian.region", who.region.clone()),
            opentelemetry::KeyValue::new("meridian.zone", who.zone.clone()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        // Every span that reaches the SDK was chosen already (see `init`):
        // roots by trace_context::sample_root at `sampling_ratio`, the rest
        // as members of a sampled trace.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    use crate::trace_context::{call_span, entry_span, entry_span_if, exported, TraceContext};

    /// The names of the spans a layer behind [`super::export_filter`] sees.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<&'static str>>>);

    impl<S> Layer<S> for Seen
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0.lock().unwrap().push(attrs.metadata().name());
        }
    }

    /// An unsampled request's spans never reach the exporter; a sampled
    /// trace's spans do, whether opened inside its spans or asked for
    /// explicitly.
    #[test]
    fn only_the_spans_of_a_sampled_trace_reach_the_exporter() {
        // Ratio 1.0, as the other tests of this process that turn export on.
        crate::trace_context::mark_export_on(1.0);
        let seen = Seen::default();
        let subscriber =
            tracing_subscriber::registry().with(seen.clone().with_filter(super::export_filter()));
        let received = TraceContext {
            trace_id: [7; 16],
            span_id: [9; 8],
            flags: 1,
        };
        tracing::subscriber::with_default(subscriber, || {
            let unsampled = tracing::debug_span!("unsampled_request");
            {
                let _in = unsampled.enter();
                let _child = tracing::debug_span!("child_of_unsampled");
            }
            let root = exported(|| tracing::debug_span!("sampled_root"));
            {
                let _in = root.enter();
                let child = tracing::debug_span!("child");
                let _in_child = child.enter();
                let _grandchild = tracing::debug_span!("grandchild");
                let _conn = tracing::info_span!("conn");
                let _fine = tracing::trace_span!("below_debug");
            }
            {
                let _in = root.enter();
                let _sdk_call = call_span(|| tracing::debug_span!("sdk_call_inside"));
            }
            let _joined = entry_span(Some(received), || tracing::debug_span!("joined"));
            let _new_root = entry_span(None, || tracing::debug_span!("new_root"));
            let _heartbeat = entry_span_if(None, false, || tracing::debug_span!("heartbeat"));
            let _after = tracing::debug_span!("after_the_trace");
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "sampled_root",
                "child",
                "grandchild",
                "sdk_call_inside",
                "joined",
                "new_root"
            ]
        );
    }
}
