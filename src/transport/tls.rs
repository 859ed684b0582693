//! rustls and quinn configuration for mutual TLS 1.3 with the cluster CA as
//! the only trust anchor.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::{EndpointLimits, TlsFiles, TransportError, ALPN, ALPN_PEER};
use crate::certs::{self, CertError, Role};

/// Our certificate chain, key and trust roots, loaded once per endpoint.
pub(super) struct Identity {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The role in our own leaf certificate.
    pub(super) role: Role,
    /// Where the chain and key came from, for error messages.
    files: TlsFiles,
}

impl Identity {
    /// Loads and sanity-checks the three files; errors name the file.
    pub(super) fn load(files: &TlsFiles) -> Result<Self, TransportError> {
        let mut roots = RootCertStore::empty();
        for ca in certs::load_certs(&files.ca)? {
            roots.add(ca).map_err(|source| TransportError::BadCa {
                path: files.ca.clone(),
                source,
            })?;
        }
        let chain = certs::load_certs(&files.cert)?;
        let leaf = chain.first().ok_or_else(|| CertError::NoCertificate {
            path: files.cert.clone(),
        })?;
        let role = certs::role_of(leaf).map_err(|source| TransportError::BadCertificate {
            path: files.cert.clone(),
            source,
        })?;
        let key = certs::load_key(&files.key)?;
        Ok(Identity {
            roots: Arc::new(roots),
            chain,
            key,
            role,
            files: files.clone(),
        })
    }

    fn cert_and_key_error(&self, source: rustls::Error) -> TransportError {
        TransportError::CertAndKey {
            cert: self.files.cert.clone(),
            key: self.files.key.clone(),
            source,
        }
    }
}

/// The ring provider, explicitly: we never depend on a process-wide default
/// provider that another crate might install (or fail to).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side: TLS 1.3 only (QUIC requires it), a client certificate chained
/// to our CA is mandatory, and the peer must speak [`ALPN`] (clients) or
/// [`ALPN_PEER`] (nodes); the negotiated one picks the dispatcher.
pub(super) fn server_config(
    id: &Identity,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, TransportError> {
    let mut tls = tls13_server(id, ClientCertificate::Required)?;
    tls.alpn_protocols = vec![ALPN.to_vec(), ALPN_PEER.to_vec()];
    // 0-RTT stays off (rustls' default max_early_data_size of 0): early data
    // can be replayed, and our requests include writes.
    let crypto = QuicServerConfig::try_from(tls).map_err(TransportError::NoQuicCipherSuite)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// The gateway's HTTPS server side (see [`super::https_server_config`]).
pub(super) fn https_server_config(id: &Identity) -> Result<rustls::ServerConfig, TransportError> {
    let mut tls = tls13_server(id, ClientCertificate::Optional)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Whether a client may complete the handshake without a certificate. One
/// it does present must chain to the CA either way.
enum ClientCertificate {
    Required,
    Optional,
}

/// A TLS 1.3 server config with our certificate and our CA as the only
/// trust anchor for client certificates.
fn tls13_server(
    id: &Identity,
    client: ClientCertificate,
) -> Result<rustls::ServerConfig, TransportError> {
    let provider = provider();
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(id.roots.clone(), provider.clone());
    if matches!(client, ClientCertificate::Optional) {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().map_err(TransportError::Verifier)?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TransportError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|source| id.cert_and_key_error(source))
}

/// Client side: verifies the server against our CA only, presents our
/// certificate and offers `alpn` ([`ALPN`] or [`ALPN_PEER`]).
pub(super) fn client_config(
    id: &Identity,
    transport: Arc<TransportConfig>,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TransportError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TransportError::Tls)?
        .with_root_certificates(id.roots.clone())
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|source| id.cert_and_key_error(source))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(TransportError::NoQuicCipherSuite)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// QUIC transport parameters from validated limits.
pub(super) fn transport_config(
    limits: &EndpointLimits,
) -> Result<Arc<TransportConfig>, TransportError> {
    limits.validate()?;
    let idle =
        IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms)).map_err(|_| {
            TransportError::InvalidLimits {
                field: "idle_timeout_ms",
                reason: "does not fit a QUIC varint".to_owned(),
            }
        })?;
    let mut config = TransportConfig::default();
    config
        .max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams_per_connection))
        // Requests are bidirectional streams; nothing in the protocol uses
        // unidirectional streams or datagrams, so peers get no credit for them.
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(keep_alive_interval(limits));
    Ok(Arc::new(config))
}

/// The keep-alive interval: off for 0, else at most half the idle timeout.
pub(super) fn keep_alive_interval(limits: &EndpointLimits) -> Option<Duration> {
    let ms = limits.keep_alive_ms.min(limits.idle_timeout_ms / 2);
    (ms > 0).then(|| Duration::from_millis(ms))
}
