//! QUIC endpoints with mutual TLS, peer identities, and frames on streams.
//!
//! Every connection, client-to-node or node-to-node, is QUIC over TLS 1.3
//! with ALPN [`ALPN`]. Both sides present a certificate issued by the
//! cluster CA ([`crate::certs`]); the CA in [`TlsFiles::ca`] is the only
//! trust anchor. The verified peer certificate yields a [`PeerIdentity`]
//! (role and name), and [`require_role`] is the one place an API checks it.
//!
//! **Architecture Invariant:** a server endpoint never completes a handshake
//! with a peer that presented no certificate or one not chained to the CA, so
//! every accepted connection has a [`PeerIdentity`].
//!
//! This module owns sockets and TLS but no protocol: a request is a
//! bidirectional stream carrying length-prefixed frames ([`frame`]), and what
//! the frames mean belongs to `wire` and `server`.
//!
//! Time limits: a handshake is bounded by the idle timeout; reads of frames
//! are not, so callers wrap them in `tokio::time::timeout`.
//!
//! The HTTP gateway's HTTPS listener ([`https_server_config`]) uses the same
//! node certificate, trust anchor, [`identity_of`] and role sets
//! ([`DATA_ROLES`], [`ADMIN_ROLES`], [`PEER_ROLES`]), so a certificate grants
//! the same rights over HTTPS as over QUIC.

pub mod frame;
mod tls;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::certs::{self, CertError, Role};
use crate::error_code::ErrorCode;
use crate::limits::DEFAULT_MAX_STREAMS_PER_CONNECTION;

pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME_BYTES};

/// The ALPN protocol id of Meridian's client protocol, version 1
/// ([`crate::wire`]). A client offering anything but this or [`ALPN_PEER`]
/// fails the handshake.
pub const ALPN: &[u8] = b"meridian/1";

/// The ALPN protocol id of the peer protocol, version 1 ([`crate::peer`]):
/// node-to-node traffic, served by its own dispatcher with its own limits,
/// and only for node certificates.
pub const ALPN_PEER: &[u8] = b"meridian-peer/1";

/// Which protocol a connection speaks, from its negotiated ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The client protocol ([`ALPN`]).
    Client,
    /// The peer protocol ([`ALPN_PEER`]).
    Peer,
}

/// The protocol negotiated on `conn`; `None` if the handshake chose none
/// (cannot happen with our server config, which requires one).
pub fn protocol_of(conn: &quinn::Connection) -> Option<Protocol> {
    let data = conn
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?;
    match data.protocol.as_deref() {
        Some(p) if p == ALPN => Some(Protocol::Client),
        Some(p) if p == ALPN_PEER => Some(Protocol::Peer),
        _ => None,
    }
}

/// Default for [`EndpointLimits::idle_timeout_ms`]: 30 s.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Default for [`EndpointLimits::keep_alive_ms`]: 10 s, well inside the idle
/// timeout so a quiet but healthy connection is never timed out.
pub const DEFAULT_KEEP_ALIVE_MS: u64 = 10_000;
/// Ceiling for [`EndpointLimits::idle_timeout_ms`]: 10 minutes. A dead peer
/// holds its connection's resources for at most this long.
pub const HARD_MAX_IDLE_TIMEOUT_MS: u64 = 600_000;
/// Ceiling for [`EndpointLimits::max_streams_per_connection`].
pub const HARD_MAX_STREAMS_PER_CONNECTION: u32 = 10_000;

/// QUIC application close code sent when the server's certificate is not a
/// node certificate.
const CLOSE_SERVER_NOT_NODE: u32 = 1;

/// The PEM files an endpoint uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate(s): the only trust anchors for peers.
    pub ca: PathBuf,
    /// Our certificate chain, leaf first.
    pub cert: PathBuf,
    /// Our private key.
    pub key: PathBuf,
}

/// Per-connection QUIC limits, applied to both directions of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointLimits {
    /// Concurrent bidirectional streams (in-flight requests) a peer may open
    /// on one connection; 1 to [`HARD_MAX_STREAMS_PER_CONNECTION`].
    pub max_streams_per_connection: u32,
    /// Milliseconds without any packet after which a connection (or a
    /// handshake) is dropped; 1 to [`HARD_MAX_IDLE_TIMEOUT_MS`].
    pub idle_timeout_ms: u64,
    /// Milliseconds between keep-alive pings on a quiet connection; 0 turns
    /// them off. Capped at half of `idle_timeout_ms`, so a ping always lands
    /// before the peer would time the connection out.
    pub keep_alive_ms: u64,
}

impl Default for EndpointLimits {
    fn default() -> Self {
        EndpointLimits {
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            keep_alive_ms: DEFAULT_KEEP_ALIVE_MS,
        }
    }
}

impl EndpointLimits {
    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), TransportError> {
        let invalid = |field, reason: String| Err(TransportError::InvalidLimits { field, reason });
        let streams = self.max_streams_per_connection;
        if !(1..=HARD_MAX_STREAMS_PER_CONNECTION).contains(&streams) {
            let range = format!("is {streams}; must be 1..={HARD_MAX_STREAMS_PER_CONNECTION}");
            return invalid("max_streams_per_connection", range);
        }
        let idle = self.idle_timeout_ms;
        if !(1..=HARD_MAX_IDLE_TIMEOUT_MS).contains(&idle) {
            let range = format!("is {idle}; must be 1..={HARD_MAX_IDLE_TIMEOUT_MS}");
            return invalid("idle_timeout_ms", range);
        }
        Ok(())
    }
}

/// Who is on the other end of a connection, from its verified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The role in the certificate.
    pub role: Role,
    /// The certificate's subject common name (the name it was issued for).
    pub name: String,
}

/// Why an endpoint could not be built, a connection made, or a peer allowed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// An [`EndpointLimits`] field is out of range; nothing was bound.
    #[error("invalid endpoint limit {field}: {reason}")]
    InvalidLimits {
        /// The field name.
        field: &'static str,
        /// Its value and allowed range.
        reason: String,
    },
    /// A TLS file could not be read or parsed; the message names the file.
    #[error(transparent)]
    Files(#[from] CertError),
    /// A certificate in the CA file is not usable as a trust anchor.
    #[error("{}: not a usable CA certificate: {source}", path.display())]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
    /// Our own certificate carries no usable Meridian role.
    #[error("{}: {source}", path.display())]
    BadCertificate {
        /// Our certificate file.
        path: PathBuf,
        /// What is wrong with its role.
        #[source]
        source: CertError,
    },
    /// A server endpoint was given a certificate that is not a node
    /// certificate; nothing was bound. Issue one with role `node`.
    #[error("{}: a server needs a node certificate, this one has role {role}", path.display())]
    NotANode {
        /// Our certificate file.
        path: PathBuf,
        /// The role it has.
        role: Role,
    },
    /// The client-certificate verifier could not be built (no CA).
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls refused our certificate and key, most often because the key
    /// file belongs to another certificate; nothing was bound.
    #[error("{} with key {}: {source}", cert.display(), key.display())]
    CertAndKey {
        /// Our certificate file.
        cert: PathBuf,
        /// Our key file.
        key: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the protocol configuration (the crypto provider lacks
    /// TLS 1.3); a build problem, not a file problem.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC's handshake needs.
    #[error("TLS configuration: {0}")]
    NoQuicCipherSuite(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be bound (address in use, no permission, or
    /// no Tokio runtime).
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address we tried.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A socket operation on a bound endpoint failed (for example reading
    /// its local address).
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The connection could not be started (bad server name, endpoint
    /// closing, address family mismatch); nothing was sent.
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake or connection failed: unreachable, timed out, or one
    /// side refused the other's certificate. Retrying with the same
    /// certificates only helps for the network causes.
    #[error("connection to {addr} failed: {source}")]
    Handshake {
        /// The server address.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The server's certificate is valid but not a node certificate; the
    /// connection was closed. The address does not belong to a node.
    #[error("server at {addr} is not a node (its certificate has role {role})")]
    ServerNotNode {
        /// The server address.
        addr: SocketAddr,
        /// The role in its certificate.
        role: Role,
    },
    /// The connection carries no peer certificate. Cannot happen on
    /// endpoints built here; it means a foreign endpoint config.
    #[error("connection has no peer certificate")]
    NoPeerCertificate,
    /// The peer's certificate chains to our CA but has no usable role or
    /// name; treat the peer as unauthorised.
    #[error("peer certificate: {0}")]
    PeerCertificate(#[source] CertError),
    /// The peer's role may not do what it asked. Answer with `MER-2001`.
    #[error("permission denied: role {role} may not do this (needs {})", role_list(.needed))]
    PermissionDenied {
        /// The peer's role.
        role: Role,
        /// The roles that would have been allowed.
        needed: Vec<Role>,
    },
}

impl TransportError {
    /// The stable user-visible code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            TransportError::PermissionDenied { .. } | TransportError::PeerCertificate(_) => {
                ErrorCode::PermissionDenied
            }
            TransportError::Connect(_)
            | TransportError::Handshake { .. }
            | TransportError::ServerNotNode { .. }
            | TransportError::Bind { .. }
            | TransportError::Io(_) => ErrorCode::Unavailable,
            TransportError::NoPeerCertificate => ErrorCode::Internal,
            _ => ErrorCode::InvalidArgument,
        }
    }
}

fn role_list(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    names.join(" or ")
}

/// Binds a node endpoint on `addr`: it accepts connections only from peers
/// with a certificate chained to the CA, and its default client config
/// presents the node's own certificate for outgoing peer connections.
///
/// Must be called inside a Tokio runtime. Fails before binding if the files
/// are unusable, the certificate is not a node certificate, or `limits` are
/// out of range.
pub fn server_endpoint(
    addr: SocketAddr,
    tls: &TlsFiles,
    limits: &EndpointLimits,
) -> Result<quinn::Endpoint, TransportError> {
    let transport = tls::transport_config(limits)?;
    let id = load_node_identity(tls)?;
    let server = tls::server_config(&id, transport.clone())?;
    let client = tls::client_config(&id, transport, ALPN)?;
    let mut endpoint = quinn::Endpoint::server(server, addr)
        .map_err(|source| TransportError::Bind { addr, source })?;
    endpoint.set_default_client_config(client);
    tracing::info!(local = ?endpoint.local_addr().ok(), "QUIC server endpoint bound");
    Ok(endpoint)
}

/// Loads `tls`, refusing a certificate whose role is not `node`.
fn load_node_identity(tls: &TlsFiles) -> Result<tls::Identity, TransportError> {
    let id = tls::Identity::load(tls)?;
    if id.role != Role::Node {
        return Err(TransportError::NotANode {
            path: tls.cert.clone(),
            role: id.role,
        });
    }
    Ok(id)
}

/// Binds a client-only endpoint presenting the certificate in `tls` (any
/// role). It binds `[::]:0` dual-stack so one endpoint reaches IPv4 and IPv6
/// nodes, falling back to `0.0.0.0:0` where IPv6 is unavailable.
///
/// Must be called inside a Tokio runtime.
pub fn client_endpoint(
    tls: &TlsFiles,
    limits: &EndpointLimits,
) -> Result<quinn::Endpoint, TransportError> {
    let transport = tls::transport_config(limits)?;
    let id = tls::Identity::load(tls)?;
    let client = tls::client_config(&id, transport, ALPN)?;
    let mut endpoint = bind_client()?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Like [`client_endpoint`], but bound to `bind`, so every packet leaves
/// with that source address (port 0: any free port). A client that must be
/// seen as coming from a given address binds it, for example a shell acting
/// as a client in one region of `meridian dev`, where the WAN emulator
/// tells the sender's region from its source IP. The endpoint reaches only
/// nodes of `bind`'s address family.
///
/// Must be called inside a Tokio runtime.
pub fn client_endpoint_on(
    bind: SocketAddr,
    tls: &TlsFiles,
    limits: &EndpointLimits,
) -> Result<quinn::Endpoint, TransportError> {
    let transport = tls::transport_config(limits)?;
    let id = tls::Identity::load(tls)?;
    let client = tls::client_config(&id, transport, ALPN)?;
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Longest a peer connection may stay silent before it is dropped (QUIC's
/// idle timeout, the lower of the two ends' wins, so the dialling node's
/// value holds). A peer's process that died sends nothing, not even a
/// close; until the connection times out, every request on it waits for a
/// reply that cannot come, and a restarted peer at the same address is not
/// dialled again. 3 s of silence, with a keep-alive every
/// [`PEER_KEEP_ALIVE_MS`], is six missed pings: far beyond the widest
/// round trip between regions and a loaded host's scheduling stalls.
pub const PEER_IDLE_TIMEOUT_MS: u64 = 3_000;
/// Keep-alive interval of a peer connection (see [`PEER_IDLE_TIMEOUT_MS`]).
pub const PEER_KEEP_ALIVE_MS: u64 = 500;

/// The client config a node dials its peers with: its node certificate
/// (which must be one), the peer protocol's ALPN [`ALPN_PEER`], and
/// `limits` with the idle timeout and keep-alive lowered to
/// [`PEER_IDLE_TIMEOUT_MS`] and [`PEER_KEEP_ALIVE_MS`].
pub fn peer_client_config(
    tls: &TlsFiles,
    limits: &EndpointLimits,
) -> Result<quinn::ClientConfig, TransportError> {
    let limits = EndpointLimits {
        idle_timeout_ms: limits.idle_timeout_ms.min(PEER_IDLE_TIMEOUT_MS),
        keep_alive_ms: limits.keep_alive_ms.min(PEER_KEEP_ALIVE_MS),
        ..limits.clone()
    };
    let transport = tls::transport_config(&limits)?;
    let id = load_node_identity(tls)?;
    tls::client_config(&id, transport, ALPN_PEER)
}

fn bind_client() -> Result<quinn::Endpoint, TransportError> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
    match quinn::Endpoint::client(v6) {
        Ok(endpoint) => Ok(endpoint),
        Err(e) => {
            tracing::debug!(error = %e, "no IPv6 client socket; using IPv4 only");
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
            quinn::Endpoint::client(v4).map_err(|source| TransportError::Bind { addr: v4, source })
        }
    }
}

/// Connects to the node at `addr` with the endpoint's default client config
/// and checks that the server holds a node certificate.
///
/// `server_name` is the name checked against the server certificate; by
/// default the IP address of `addr` (our certificates carry IP SANs). The
/// handshake is bounded by the idle timeout. With TLS 1.3 the server checks
/// our certificate after we consider the handshake done, so a refused client
/// certificate may only show up as an error on the first stream operation.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: Option<&str>,
) -> Result<quinn::Connection, TransportError> {
    let ip_name = addr.ip().to_string();
    let name = server_name.unwrap_or(&ip_name);
    let connecting = outside_spans(|| endpoint.connect(addr, name))?;
    finish_connect(connecting, addr).await
}

/// Runs `connect` outside the current tracing span. quinn runs a
/// connection's driver task inside the span current when it was opened, for
/// the connection's whole life: opened inside a request's span, the
/// connection would keep that span open (never ended, never exported, its
/// trace never complete) for as long as the connection lives.
///
/// Entering a disabled span would not do (it leaves the current span as it
/// is), so `connect` runs with no subscriber at all: quinn then finds no
/// current span. Nothing is logged by opening a connection.
fn outside_spans<T>(connect: impl FnOnce() -> T) -> T {
    tracing::dispatcher::with_default(&tracing::Dispatch::none(), connect)
}

/// Connects to the peer node at `addr` with `config` (from
/// [`peer_client_config`]): the peer protocol, checked like [`connect`].
pub async fn connect_peer(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    addr: SocketAddr,
) -> Result<quinn::Connection, TransportError> {
    let name = addr.ip().to_string();
    let connecting = outside_spans(|| endpoint.connect_with(config.clone(), addr, &name))?;
    finish_connect(connecting, addr).await
}

async fn finish_connect(
    connecting: quinn::Connecting,
    addr: SocketAddr,
) -> Result<quinn::Connection, TransportError> {
    let conn = connecting
        .await
        .map_err(|source| TransportError::Handshake { addr, source })?;
    let server = peer_identity(&conn)?;
    if server.role != Role::Node {
        conn.close(CLOSE_SERVER_NOT_NODE.into(), b"server is not a node");
        return Err(TransportError::ServerNotNode {
            addr,
            role: server.role,
        });
    }
    tracing::debug!(%addr, server = %server.name, "connected");
    Ok(conn)
}

/// The role and name in the peer's verified certificate.
pub fn peer_identity(conn: &quinn::Connection) -> Result<PeerIdentity, TransportError> {
    let chain = conn
        .peer_identity()
        .ok_or(TransportError::NoPeerCertificate)?
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TransportError::NoPeerCertificate)?;
    identity_of(&chain)
}

/// The role and name in a certificate chain that TLS has already verified
/// against the cluster CA (its leaf first). Used for QUIC connections and
/// for the gateway's HTTPS connections alike.
pub fn identity_of(chain: &[CertificateDer<'_>]) -> Result<PeerIdentity, TransportError> {
    let leaf = chain.first().ok_or(TransportError::NoPeerCertificate)?;
    let role = certs::role_of(leaf).map_err(TransportError::PeerCertificate)?;
    let name = certs::common_name_of(leaf).map_err(TransportError::PeerCertificate)?;
    Ok(PeerIdentity { role, name })
}

/// Roles that may call the data API (reads, writes, transactions, history,
/// status, members, the policy table) and the gateway's operational routes:
/// every role.
pub const DATA_ROLES: &[Role] = &[Role::Client, Role::Admin, Role::Node];
/// Roles that may change cluster metadata: prefix policies and range group
/// membership.
pub const ADMIN_ROLES: &[Role] = &[Role::Admin];
/// Roles that may send peer traffic (Raft, replication, forwarding).
pub const PEER_ROLES: &[Role] = &[Role::Node];

/// The rustls configuration of the gateway's HTTPS listener: the node's
/// certificate (role `node`) from `tls`, TLS 1.3, ALPN `http/1.1`, and
/// client certificates verified against the cluster CA. A client may
/// connect without a certificate so that the gateway can answer it with a
/// JSON error (MER-2003) instead of a bare TLS alert; a certificate that
/// does not chain to the CA fails the handshake.
pub fn https_server_config(tls: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TransportError> {
    let id = load_node_identity(tls)?;
    tls::https_server_config(&id).map(Arc::new)
}

/// Allows the peer if its role is one of `allowed`, otherwise
/// [`TransportError::PermissionDenied`].
pub fn require_role(id: &PeerIdentity, allowed: &[Role]) -> Result<(), TransportError> {
    if allowed.contains(&id.role) {
        return Ok(());
    }
    tracing::debug!(peer = %id.name, role = %id.role, "permission denied");
    Err(TransportError::PermissionDenied {
        role: id.role,
        needed: allowed.to_vec(),
    })
}

// Tests may panic on unexpected results; that is how they fail.
#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn identity(role: Role) -> PeerIdentity {
        PeerIdentity {
            role,
            name: "x".to_owned(),
        }
    }

    #[test]
    fn require_role_allows_listed_roles_only() {
        require_role(&identity(Role::Admin), &[Role::Node, Role::Admin]).expect("admin allowed");
        let err = require_role(&identity(Role::Client), &[Role::Node, Role::Admin])
            .expect_err("client denied");
        assert_eq!(err.code(), ErrorCode::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "permission denied: role client may not do this (needs node or admin)"
        );
        assert!(require_role(&identity(Role::Node), &[]).is_err());
    }

    #[test]
    fn default_limits_are_valid() {
        EndpointLimits::default().validate().expect("defaults");
    }

    #[test]
    fn limits_out_of_range_name_the_field() {
        let base = EndpointLimits::default();
        let cases = [
            (
                EndpointLimits {
                    max_streams_per_connection: 0,
                    ..base.clone()
                },
                "max_streams_per_connection",
            ),
            (
                EndpointLimits {
                    max_streams_per_connection: 10_001,
                    ..base.clone()
                },
                "max_streams_per_connection",
            ),
            (
                EndpointLimits {
                    idle_timeout_ms: 0,
                    ..base.clone()
                },
                "idle_timeout_ms",
            ),
            (
                EndpointLimits {
                    idle_timeout_ms: 600_001,
                    ..base.clone()
                },
                "idle_timeout_ms",
            ),
        ];
        for (limits, field) in cases {
            match limits.validate() {
                Err(TransportError::InvalidLimits { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{limits:?}: {other:?}"),
            }
        }
        // A short idle timeout with the default keep-alive is valid: the
        // keep-alive is capped instead (see `keep_alive_interval`).
        let short_idle = EndpointLimits {
            idle_timeout_ms: 1_000,
            ..base
        };
        short_idle
            .validate()
            .expect("keep-alive is capped, not refused");
        assert_eq!(
            tls::keep_alive_interval(&short_idle),
            Some(Duration::from_millis(500))
        );
        let off = EndpointLimits {
            keep_alive_ms: 0,
            ..short_idle
        };
        assert_eq!(tls::keep_alive_interval(&off), None);
    }
}
