//! The HTTP client OTLP export posts through: hyper (already in the tree
//! through axum), plain HTTP/1.1.
//!
//! The SDK's batch processor runs on a thread of its own and drives an
//! export with a blocking executor, outside any tokio runtime; hyper needs
//! one. So each request runs as a task on the node's runtime and the
//! exporter awaits its handle, which any executor can.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// Largest collector reply read (an OTLP reply is a few bytes, or a short
/// partial-success message).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Posts export requests on a tokio runtime.
#[derive(Debug)]
pub struct HyperExport {
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl HyperExport {
    /// A client whose requests run on `runtime`, each bounded by `timeout`.
    pub fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> HyperExport {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        HyperExport {
            client,
            runtime,
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for HyperExport {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let request = Request::from_parts(parts, Full::new(body));
            let exchange = async {
                let reply = client.request(request).await?;
                let (parts, body) = reply.into_parts();
                let body = Limited::new(body, MAX_REPLY_BYTES).collect().await?;
                Ok::<_, HttpError>(Response::from_parts(parts, body.to_bytes()))
            };
            tokio::time::timeout(timeout, exchange).await?
        });
        task.await?
    }
}
