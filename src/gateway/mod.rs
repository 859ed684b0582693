//! HTTP/JSON gateway (being written).
use std::sync::Arc;
use std::time::Instant;

/// Shared state of the gateway.
#[derive(Clone)]
pub struct GatewayState {
    /// The engine.
    pub engine: Arc<crate::engine::Engine>,
    /// Node identity.
    pub info: Arc<crate::server::NodeInfo>,
    /// Prometheus handle for /metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Start time, for uptime.
    pub started: Instant,
}

/// Serves the gateway on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, state: GatewayState) {
    let _ = (listener, state);
}
