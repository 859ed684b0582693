//! HTTP/JSON gateway: the engine's API over plain HTTP/1.1, for tools and
//! languages without a Meridian SDK. Reference: `docs/http-api.md`; the
//! OpenAPI document is served at `/openapi.json`.
//!
//! Request path: accept (at most [`MAX_HTTP_CONNECTIONS`], idle ones closed
//! after [`HTTP_IDLE_TIMEOUT`]) → axum router (bodies capped at
//! `limits.max_request_bytes`) → handler inside `observe` (span, metric,
//! [`HTTP_REQUEST_TIMEOUT`]) → [`Engine`](crate::engine::Engine) → JSON.
//!
//! **Architecture Invariant:** the gateway holds no state of its own beyond
//! [`GatewayState`]; every read and write goes through the same `Engine`
//! calls as the QUIC server, so both front ends share limits, validation and
//! consistency (docs/consistency.md).
//!
//! **Architecture Invariant:** every failure leaves as `{"error": {code,
//! message, remedy}}` with a status derived from the code (see `error.rs`);
//! axum's plain-text rejections never reach a client.
//!
//! **Security.** With `server.http_tls` the gateway speaks HTTPS with the
//! node's certificate and reads the caller's client certificate (verified
//! against the cluster CA) into a `Caller`; the role in it grants what it
//! grants over QUIC (`transport::DATA_ROLES`, `transport::ADMIN_ROLES`, one
//! mapping for both front ends). A connection without a certificate gets
//! MER-2003 (401) on every route; a certificate from another CA fails the
//! handshake. Plain HTTP has no authentication, so config validation allows
//! it only on loopback unless `server.http_insecure` is set.

mod budget;
mod coord;
mod dto;
mod error;
mod examples;
mod extract;
mod handlers;
mod lease;
mod openapi;
mod service;
mod strict;
mod watch;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::certs::Role;
use crate::error_code::ErrorCode;
use crate::transport::{self, PeerIdentity};
use error::GatewayError;

/// Most HTTP connections served at once; further connections wait in the
/// kernel's accept backlog. Requests per connection are sequential (HTTP/1.1),
/// so this also bounds requests in flight.
pub const MAX_HTTP_CONNECTIONS: usize = 1_024;
/// A connection that neither reads nor writes for this long is closed, so idle
/// or stalled clients cannot hold the connection slots forever.
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a handler may run; then the client gets MER-3003 (a write may still
/// commit). Shorter than [`HTTP_IDLE_TIMEOUT`] so a slow request is never cut
/// off as idle.
pub const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off after an accept error such as running out of file descriptors.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Longest a TLS handshake may take; a client that stalls it loses its
/// connection (its slot counts against [`MAX_HTTP_CONNECTIONS`] meanwhile).
pub const HTTPS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Metric: TLS handshakes the HTTPS gateway refused or that timed out
/// (a certificate from another CA, no TLS at all, a stalled client).
pub const METRIC_HTTPS_HANDSHAKE_FAILURES: &str = "meridian_http_tls_handshake_failures_total";

/// Metric: gateway requests by route (`op`) and HTTP `status`.
pub const METRIC_HTTP_REQUESTS: &str = "meridian_http_requests_total";
/// Metric: gateway request latency by route (`op`).
pub const METRIC_HTTP_SECONDS: &str = "meridian_http_request_duration_seconds";

/// Shared state of the gateway.
#[derive(Clone)]
pub struct GatewayState {
    /// The engine.
    pub engine: Arc<crate::engine::Engine>,
    /// Node identity.
    pub info: Arc<crate::types::NodeInfo>,
    /// Prometheus handle for /metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Start time, for uptime.
    pub started: Instant,
    /// Gossip membership, when configured (for `/v1/members`).
    pub membership: Option<crate::membership::Membership>,
    /// This node's replica of the control range, when configured (policy
    /// changes).
    pub control: Option<Arc<crate::engine::control::ControlRange>>,
    /// Range pages being read and sent at once (`budget.rs`).
    pub responses: budget::ResponseBudget,
}

pub use budget::{ResponseBudget, RESPONSE_BUDGET_WAIT};

/// Who sent a request, as far as the connection tells.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// Plain HTTP: no authentication (loopback, or `server.http_insecure`).
    /// Allowed everything, as the config's docs say.
    Plain,
    /// HTTPS without a client certificate.
    Anonymous,
    /// HTTPS with a certificate chained to the cluster CA but without a
    /// usable role or name; why, for the error message.
    Unusable(String),
    /// HTTPS with a certificate chained to the cluster CA.
    Certified(PeerIdentity),
}

impl Caller {
    /// Allows the caller if it may act as one of `allowed`: the QUIC
    /// protocol's rule ([`transport::require_role`]) for certified callers.
    pub(crate) fn require(&self, allowed: &[Role]) -> Result<(), GatewayError> {
        match self {
            Caller::Plain => Ok(()),
            Caller::Anonymous => Err(GatewayError::api(
                ErrorCode::CertificateRequired,
                "this gateway speaks HTTPS with client certificates, and the connection presented none",
            )),
            Caller::Unusable(why) => Err(GatewayError::api(
                ErrorCode::PermissionDenied,
                format!("the client certificate carries no usable Meridian role: {why}"),
            )),
            Caller::Certified(id) => transport::require_role(id, allowed)
                .map_err(|e| GatewayError::api(ErrorCode::PermissionDenied, e.to_string())),
        }
    }

    /// The caller of a TLS connection, from its verified certificate chain.
    fn of_tls(chain: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Caller {
        match chain {
            None | Some([]) => Caller::Anonymous,
            Some(chain) => match transport::identity_of(chain) {
                Ok(id) => Caller::Certified(id),
                Err(e) => Caller::Unusable(e.to_string()),
            },
        }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for Caller
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Self {
        stream.io().caller.clone()
    }
}

/// Serves the gateway on `listener` until the task is aborted: HTTPS with
/// `tls` (see [`transport::https_server_config`]), plain HTTP without.
///
/// Aborting it stops accepting and asks open connections to close once their
/// current request is answered (hyper's graceful shutdown), so keep-alive
/// connections do not outlive the node.
pub async fn serve(
    listener: TcpListener,
    state: GatewayState,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    describe_metrics();
    let local = listener.local_addr().ok();
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Dropped with this future: open watch streams then end (`watch.rs`).
    let (_stopping, stopped) = tokio::sync::watch::channel(());
    let app =
        router(state, watch::Stopping(stopped)).into_make_service_with_connect_info::<Caller>();
    let listener = LimitedListener::new(listener, MAX_HTTP_CONNECTIONS, HTTP_IDLE_TIMEOUT)
        .with_tls(tls.map(tokio_rustls::TlsAcceptor::from));
    tracing::info!(addr = ?local, scheme, "HTTP gateway serving");
    // axum's connection tasks watch a channel whose receiver lives in this
    // future: dropping it on abort starts their graceful shutdown. Pinned by
    // tests/gateway.rs `stopping_the_node_closes_keep_alive_connections`.
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP gateway stopped");
    }
}

fn router(state: GatewayState, stopping: watch::Stopping) -> Router {
    use handlers as h;
    let max_body = state.engine.limits().max_request_bytes;
    Router::new()
        .route("/v1/kv", get(h::range))
        .route(
            "/v1/kv/",
            get(h::empty_key_route)
                .put(h::empty_key_route)
                .delete(h::empty_key_route),
        )
        .route(
            "/v1/kv/{*key}",
            get(h::get_key).put(h::put_key).delete(h::delete_key),
        )
        .route("/v1/txn", post(h::txn))
        .route("/v1/history/", get(h::empty_key_route))
        .route("/v1/history/{*key}", get(h::history))
        .route("/v1/watch/", get(h::empty_key_route))
        .route("/v1/watch/{*key}", get(watch::watch))
        .route("/v1/leases", get(lease::list).post(lease::grant))
        .route("/v1/leases/keepalive", post(lease::keep_alive_many))
        .route("/v1/leases/{id}", get(lease::ttl).delete(lease::revoke))
        .route("/v1/leases/{id}/keepalive", post(lease::keep_alive_one))
        .route("/v1/locks/", get(h::empty_key_route))
        .route(
            "/v1/locks/{*key}",
            get(coord::lock_holder)
                .post(coord::lock_acquire)
                .delete(coord::lock_release),
        )
        .route("/v1/elections/", get(h::empty_key_route))
        .route(
            "/v1/elections/{*key}",
            get(coord::leader)
                .post(coord::campaign)
                .delete(coord::resign),
        )
        .route("/v1/services/{name}", get(service::lookup))
        .route("/v1/services/{name}/{id}", put(service::register))
        .route("/v1/status", get(h::status))
        .route("/v1/members", get(h::members))
        .route("/v1/policies", get(h::policies).put(h::set_default_policy))
        .route(
            "/v1/policies/{*prefix}",
            put(h::set_prefix_policy).delete(h::remove_policy),
        )
        .route("/health", get(h::health))
        .route("/ready", get(h::ready))
        .route("/metrics", get(h::metrics))
        .route("/openapi.json", get(openapi::serve_document))
        .fallback(h::not_found)
        .method_not_allowed_fallback(h::method_not_allowed)
        // Runs before routing and extraction, so no handler sees a request
        // with an encoding it cannot read or a malformed escape.
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::Extension(stopping))
        // Bodies past the limit fail the Bytes extractor with 413, which
        // `handlers::body` turns into MER-1003.
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Refuses, before any handler runs, a caller without a certificate the
/// data API accepts (401/403 on HTTPS), and what no route can read: a body
/// in a `Content-Encoding` other than identity (415), and a path or query
/// string with a malformed percent-escape or escaped bytes that are not
/// UTF-8 (400; see `strict.rs`). Handlers find the [`Caller`] in the
/// request's extensions, for their own role checks (policy changes).
async fn guard(
    axum::extract::State(state): axum::extract::State<GatewayState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let caller = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Caller>>()
        .map(|info| info.0.clone());
    let checked = match caller {
        // Every connection is accepted by `LimitedListener`, which knows
        // its caller; a request without one did not come through `serve`.
        None => Err(GatewayError::api(
            ErrorCode::Internal,
            "the request reached the gateway without its connection's caller",
        )),
        Some(caller) => caller
            .require(transport::DATA_ROLES)
            .and_then(|()| check_request(&request))
            .map(|()| caller),
    };
    match checked {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => observe(&state, "refused", async { Err(e) }).await,
    }
}

fn check_request(request: &axum::extract::Request) -> Result<(), GatewayError> {
    for value in request
        .headers()
        .get_all(axum::http::header::CONTENT_ENCODING)
    {
        let encodings = value.to_str().unwrap_or("(not ASCII)");
        let unsupported = encodings
            .split(',')
            .map(str::trim)
            .find(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
        if let Some(encoding) = unsupported {
            return Err(GatewayError::api(
                ErrorCode::UnsupportedEncoding,
                format!(
                    "Content-Encoding {encoding:?} is not supported; the gateway stores request bodies as sent and decodes none"
                ),
            ));
        }
    }
    strict::check_percent_encoding(request.uri().path(), "path")?;
    if let Some(query) = request.uri().query() {
        strict::check_percent_encoding(query, "query string")?;
    }
    Ok(())
}

fn describe_metrics() {
    metrics::describe_counter!(
        METRIC_HTTP_REQUESTS,
        "HTTP gateway requests by route and status"
    );
    metrics::describe_counter!(
        METRIC_HTTPS_HANDSHAKE_FAILURES,
        "HTTPS handshakes refused or timed out (certificate from another CA, not TLS, stalled)"
    );
    metrics::describe_histogram!(
        METRIC_HTTP_SECONDS,
        metrics::Unit::Seconds,
        "HTTP gateway request latency by route"
    );
}

/// Runs one handler body: its span (`op`, `region`, `status`), the request
/// timeout, error rendering, and the request counter and latency histogram.
async fn observe<F>(state: &GatewayState, op: &'static str, work: F) -> Response
where
    F: Future<Output = Result<Response, GatewayError>>,
{
    let span = crate::trace_context::entry_span(
        None,
        || tracing::info_span!("http", op, region = %state.info.region, status = tracing::field::Empty),
    );
    let started = Instant::now();
    let result =
        match tokio::time::timeout(HTTP_REQUEST_TIMEOUT, work.instrument(span.clone())).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::api(
                ErrorCode::OutcomeUnknown,
                format!(
                    "no answer within {}s; a write may still commit, so read before retrying",
                    HTTP_REQUEST_TIMEOUT.as_secs()
                ),
            )),
        };
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            let e = match e {
                GatewayError::Api(e) => GatewayError::Api(crate::wire::with_home_address(
                    e,
                    state.membership.as_ref(),
                    None,
                )),
                other => other,
            };
            span.in_scope(|| {
                if e.status().is_server_error() {
                    tracing::warn!(error = ?e, "request failed");
                } else {
                    tracing::debug!(error = ?e, "request refused");
                }
            });
            e.into_response()
        }
    };
    let status = response.status().as_u16();
    span.record("status", status);
    metrics::counter!(METRIC_HTTP_REQUESTS, "op" => op, "status" => status.to_string())
        .increment(1);
    metrics::histogram!(METRIC_HTTP_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
    response
}

/// A listener that holds a slot per open connection and wraps each stream in
/// an idle timeout; with TLS, it runs each handshake in a task of its own
/// (bounded by [`HTTPS_HANDSHAKE_TIMEOUT`]) so a slow client never holds up
/// the others, and hands over only connections whose handshake completed.
/// The bounds are parameters so tests can make them small.
pub(crate) struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Handshakes under way; at most one per slot.
    handshakes: tokio::task::JoinSet<Option<(IdleTimeoutStream, SocketAddr)>>,
}

impl LimitedListener {
    fn new(inner: TcpListener, max_connections: usize, idle_timeout: Duration) -> Self {
        LimitedListener {
            inner,
            slots: Arc::new(Semaphore::new(max_connections)),
            idle_timeout,
            tls: None,
            handshakes: tokio::task::JoinSet::new(),
        }
    }

    fn with_tls(mut self, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        self.tls = tls;
        self
    }
}

/// The next TCP connection on `inner`, once one of `slots` is free.
/// Cancel-safe: a slot taken before the cancellation is released with its
/// permit.
async fn accept_tcp(
    inner: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, Option<OwnedSemaphorePermit>) {
    // The semaphore is never closed, so this is always `Some`; holding an
    // `Option` avoids an unwrap on a case that cannot happen.
    let slot = slots.clone().acquire_owned().await.ok();
    loop {
        match inner.accept().await {
            Ok((stream, addr)) => {
                // Small JSON replies: do not wait for Nagle.
                let _ = stream.set_nodelay(true);
                return (stream, addr, slot);
            }
            Err(e) if is_per_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "HTTP accept failed; backing off");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Completes the TLS handshake of one connection, within
/// [`HTTPS_HANDSHAKE_TIMEOUT`]; `None` (counted and logged) when it fails.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    slot: Option<OwnedSemaphorePermit>,
    idle_timeout: Duration,
) -> Option<(IdleTimeoutStream, SocketAddr)> {
    let failed = |reason: String| {
        metrics::counter!(METRIC_HTTPS_HANDSHAKE_FAILURES).increment(1);
        tracing::debug!(%addr, %reason, "HTTPS handshake failed");
        None
    };
    match tokio::time::timeout(HTTPS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let caller = Caller::of_tls(tls.get_ref().1.peer_certificates());
            let io = GatewayIo::Tls(Box::new(tls));
            Some((IdleTimeoutStream::new(io, caller, slot, idle_timeout), addr))
        }
        Ok(Err(e)) => failed(e.to_string()),
        Err(_) => failed("timed out".to_owned()),
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = IdleTimeoutStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(acceptor) = self.tls.clone() else {
                let (stream, addr, slot) = accept_tcp(&self.inner, &self.slots).await;
                let io = GatewayIo::Plain(stream);
                return (
                    IdleTimeoutStream::new(io, Caller::Plain, slot, self.idle_timeout),
                    addr,
                );
            };
            // Both branches are cancel-safe (see `accept_tcp`; JoinSet's
            // join_next), so losing the race drops nothing but a free slot.
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
                (stream, addr, slot) = accept_tcp(&self.inner, &self.slots) => {
                    let idle = self.idle_timeout;
                    self.handshakes.spawn(handshake(acceptor, stream, addr, slot, idle));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection's byte stream: plain TCP or TLS over TCP.
enum GatewayIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for GatewayIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GatewayIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            GatewayIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for GatewayIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            GatewayIo::Plain(s) => Pin::new(s).poll_write(cx, data),
            GatewayIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            GatewayIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            GatewayIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            GatewayIo::Plain(s) => s.is_write_vectored(),
            GatewayIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GatewayIo::Plain(s) => Pin::new(s).poll_flush(cx),
            GatewayIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GatewayIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            GatewayIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection (plain or TLS; our replies are written above TLS) that fails
/// with `TimedOut` once it has made no progress for its idle timeout, knows
/// its [`Caller`], and releases its connection slot when dropped.
pub(crate) struct IdleTimeoutStream {
    stream: GatewayIo,
    caller: Caller,
    idle_timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// A JSON reply being written in place of hyper's bodiless one (see
    /// [`automatic_reply`]), and how many bytes of it are out.
    replacing: Option<(Vec<u8>, usize)>,
    _slot: Option<OwnedSemaphorePermit>,
}

/// hyper answers a request it cannot parse (a bad method, URI or header:
/// 400; a URI over 64 KiB: 414; a header section over its buffer: 431) by
/// itself, with an empty body, before any of our code sees the request.
/// Those replies are the only ones of these statuses with
/// `content-length: 0` (ours always carry a JSON error), so this recognises
/// such a head and returns our JSON reply for it: the same status, a stable
/// code and a remedy, and `connection: close` as hyper closes anyway.
fn automatic_reply(head: &[u8]) -> Option<Vec<u8>> {
    let (code, status, message) = if head.starts_with(b"HTTP/1.1 400 ") {
        (
            ErrorCode::MalformedRequest,
            400,
            "the HTTP request could not be parsed: its method, URI, a header name or value, or its version is malformed",
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        (
            ErrorCode::UriTooLong,
            414,
            "the request URI is longer than the gateway reads (64 KiB)",
        )
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        (
            ErrorCode::HeadersTooLarge,
            431,
            "the request's header section is larger than the gateway reads (at most 100 fields, about 400 KiB)",
        )
    } else {
        return None;
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head_text = std::str::from_utf8(&head[..end]).ok()?.to_ascii_lowercase();
    if end + 4 != head.len() || !head_text.contains("\r\ncontent-length: 0") {
        return None;
    }
    metrics::counter!(METRIC_HTTP_REQUESTS, "op" => "unparsable", "status" => status.to_string())
        .increment(1);
    let body = GatewayError::api(code, message).into_json();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut reply = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    Some(reply)
}

impl IdleTimeoutStream {
    fn new(
        stream: GatewayIo,
        caller: Caller,
        slot: Option<OwnedSemaphorePermit>,
        idle_timeout: Duration,
    ) -> Self {
        IdleTimeoutStream {
            stream,
            caller,
            idle_timeout,
            deadline: Box::pin(tokio::time::sleep(idle_timeout)),
            replacing: None,
            _slot: slot,
        }
    }

    fn progressed(&mut self) {
        self.deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + self.idle_timeout);
    }

    /// Writes our JSON reply in place of hyper's automatic one (`data`), if
    /// `data` is such a reply; `None` when it is not. Reports all of `data`
    /// written once ours is out.
    fn poll_replace(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        if self.replacing.is_none() {
            self.replacing = Some((automatic_reply(data)?, 0));
        }
        let (reply, sent) = self.replacing.as_mut()?;
        while *sent < reply.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &reply[*sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Some(Poll::Ready(Err(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => *sent += n,
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                Poll::Pending => return Some(self.pending_or_timed_out(cx)),
            }
        }
        self.replacing = None;
        self.progressed();
        Some(Poll::Ready(Ok(data.len())))
    }

    /// Maps a pending operation to `TimedOut` once the deadline has passed.
    fn pending_or_timed_out<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle HTTP connection",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for IdleTimeoutStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending_or_timed_out(cx),
        }
    }
}

impl AsyncWrite for IdleTimeoutStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(replaced) = this.poll_replace(cx, data) {
            return replaced;
        }
        match Pin::new(&mut this.stream).poll_write(cx, data) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending_or_timed_out(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(replaced) = this.poll_replace(cx, first) {
                return replaced;
            }
        }
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending_or_timed_out(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BOUND: Duration = Duration::from_secs(5);

    async fn loopback(max_connections: usize, idle: Duration) -> (LimitedListener, SocketAddr) {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        (LimitedListener::new(inner, max_connections, idle), addr)
    }

    #[tokio::test]
    async fn accept_waits_for_a_free_connection_slot() {
        let (mut listener, addr) = loopback(1, BOUND).await;
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (first, _) = tokio::time::timeout(BOUND, listener.accept())
            .await
            .unwrap();
        // The kernel completes the second handshake, but we do not accept it
        // while the only slot is held.
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let held = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(held.is_err(), "accepted past the connection limit");
        drop(first);
        tokio::time::timeout(BOUND, listener.accept())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn idle_connections_time_out_and_busy_ones_do_not() {
        let idle = Duration::from_millis(500);
        let (mut listener, addr) = loopback(4, idle).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = tokio::time::timeout(BOUND, listener.accept())
            .await
            .unwrap();
        // Traffic every 50 ms keeps the connection alive well past the timeout.
        let mut got = [0u8; 1];
        for _ in 0..14 {
            client.write_all(b"x").await.unwrap();
            tokio::time::timeout(BOUND, server.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Then silence: the read fails with TimedOut (no timing assertion:
        // the busy phase above already showed traffic keeps it open).
        let err = tokio::time::timeout(BOUND, server.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
