//! Logging and metrics setup.
//!
//! Logs go through `tracing` to stderr, as human-readable lines or JSON lines
//! (config `log.format`). Metrics go through the `metrics` facade into one
//! process-wide Prometheus recorder, rendered by the gateway's `/metrics`.
//! Metric names carry their unit (`_seconds`, `_bytes`, `_total`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

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

fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        "meridian_requests_total",
        "Client requests by operation and outcome code"
    );
    describe_histogram!(
        "meridian_request_duration_seconds",
        Unit::Seconds,
        "Client request latency by operation"
    );
    describe_counter!(
        crate::engine::METRIC_GC_REMOVED,
        "Old versions removed by garbage collection"
    );
    describe_counter!(
        crate::clock::METRIC_OFFSET_REJECTIONS,
        "Remote timestamps refused for exceeding max_offset_ms"
    );
}

/// Installs the global tracing subscriber (first call wins; later calls are no-ops).
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
