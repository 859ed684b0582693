//! Shared helpers for integration tests: a single in-process node on loopback
//! with its own temporary data directory and development certificates.
#![allow(dead_code)]

pub mod dev;
pub mod http;
pub mod register;
pub mod wan_dev;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian::certs::{self, Role};
use meridian::client::{Client, ClientConfig};
use meridian::config::{NodeConfig, RawConfig};
use meridian::server::Node;
use meridian::transport::TlsFiles;

/// A temporary CA with node, client and admin certificates.
pub struct TestCerts {
    pub dir: PathBuf,
}

impl TestCerts {
    pub fn new(dir: &Path) -> TestCerts {
        let dir = dir.join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        certs::init_ca(&dir, false).unwrap();
        certs::issue(&dir, Role::Node, "node1", &dir, &[]).unwrap();
        certs::issue(&dir, Role::Client, "client", &dir, &[]).unwrap();
        certs::issue(&dir, Role::Admin, "admin", &dir, &[]).unwrap();
        TestCerts { dir }
    }

    pub fn files(&self, name: &str) -> TlsFiles {
        TlsFiles {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }
}

/// Node config on 127.0.0.1 with OS-chosen ports, rooted at `dir`.
pub fn node_config(dir: &Path) -> NodeConfig {
    let mut raw = RawConfig::default();
    raw.node.data_dir = dir.join("data");
    raw.server.listen_addr = "127.0.0.1:0".into();
    raw.server.http_addr = "127.0.0.1:0".into();
    raw.tls.ca_cert = dir.join("certs/ca.pem");
    raw.tls.cert = dir.join("certs/node1.pem");
    raw.tls.key = dir.join("certs/node1.key");
    raw.validate(dir).unwrap()
}

/// A running in-process node; shut it down with `stop()`.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub certs: TestCerts,
    pub node: Option<Node>,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let certs = TestCerts::new(dir.path());
        let mut cfg = node_config(dir.path());
        tweak(&mut cfg);
        let node = Node::start(cfg).await.unwrap();
        TestNode {
            dir,
            certs,
            node: Some(node),
        }
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.node.as_ref().unwrap().quic_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.node.as_ref().unwrap().http_addr().unwrap()
    }

    pub fn client_config(&self, cert_name: &str) -> ClientConfig {
        ClientConfig {
            endpoints: vec![self.quic_addr()],
            tls: self.certs.files(cert_name),
            request_timeout: Duration::from_secs(10),
            bind: None,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.client_config("client")).await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }
}

/// A rustls client config trusting `ca`, with an optional client
/// certificate and the given ALPN, for clients this crate would never build.
pub fn custom_client(
    ca: &Path,
    identity: Option<&TlsFiles>,
    alpn: &[u8],
) -> anyhow::Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in meridian::certs::load_certs(ca)? {
        roots.add(cert)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
                meridian::certs::load_certs(&files.cert)?;
            let key: rustls::pki_types::PrivateKeyDer<'static> =
                meridian::certs::load_key(&files.key)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)?;
    Ok(quinn::ClientConfig::new(std::sync::Arc::new(crypto)))
}

/// Resident memory of a process in bytes (Linux /proc).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}
