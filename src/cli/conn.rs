//! How a command reaches the cluster (`ConnArgs`), shared by the commands
//! of this module and by `meridian bench`. A file of its own so that `bench`
//! (which `cli` dispatches to) imports it without importing `cli` itself.

use std::path::PathBuf;

use clap::Args;

use crate::client::{Client, ClientConfig};
use crate::transport::TlsFiles;

/// How to reach the cluster: flags, then MERIDIAN_* variables, then the
/// single-node defaults of `meridian serve`.
#[derive(Debug, Args, Clone)]
pub struct ConnArgs {
    /// Comma-separated node addresses (host:port).
    #[arg(long, env = "MERIDIAN_ENDPOINTS", default_value = crate::client::DEFAULT_ENDPOINT, global = true)]
    pub endpoints: String,
    /// CA certificate (PEM).
    #[arg(long, env = "MERIDIAN_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "MERIDIAN_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long = "key", id = "key_file", env = "MERIDIAN_KEY", global = true)]
    pub key_file: Option<PathBuf>,
    /// Local address to send from: an IP (any free port) or IP:port.
    /// Default: none, the OS picks. In a multi-region `meridian dev`,
    /// 127.0.I.200 makes this command a client in region I (the WAN
    /// emulator classifies senders by source address; REGION.env sets it).
    #[arg(long, env = "MERIDIAN_BIND", global = true)]
    pub bind: Option<String>,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
    /// Print JSON instead of human-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ConnArgs {
    /// The client config these flags describe.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let dir = PathBuf::from(crate::client::DEFAULT_CERT_DIR);
        Ok(ClientConfig {
            endpoints: crate::client::parse_endpoints(&self.endpoints)?,
            tls: TlsFiles {
                ca: self.ca.clone().unwrap_or_else(|| dir.join("ca.pem")),
                cert: self.cert.clone().unwrap_or_else(|| dir.join("client.pem")),
                key: self
                    .key_file
                    .clone()
                    .unwrap_or_else(|| dir.join("client.key")),
            },
            request_timeout: std::time::Duration::from_millis(self.timeout_ms),
            bind: self
                .bind
                .as_deref()
                .filter(|b| !b.trim().is_empty())
                .map(crate::client::parse_bind)
                .transpose()?,
        })
    }

    /// Connects.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(self.client_config()?).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        conn: ConnArgs,
    }

    #[test]
    fn the_bind_flag_reaches_the_client_config() {
        let cmd = Cmd::try_parse_from(["t", "--bind", "127.0.2.200"]).unwrap();
        let cfg = cmd.conn.client_config().unwrap();
        assert_eq!(cfg.bind, Some("127.0.2.200:0".parse().unwrap()));
        let cmd = Cmd::try_parse_from(["t", "--bind", "region-2"]).unwrap();
        let err = cmd.conn.client_config().unwrap_err().to_string();
        assert!(err.contains("region-2"), "{err}");
    }
}
