//! The systems a benchmark can drive, behind one small enum.

use super::{BenchArgs, System};
use crate::client::Client;

/// One connection to the system under test.
pub enum Target {
    /// A Meridian client (one QUIC connection).
    Meridian(Client),
    /// An etcd KV client (one gRPC channel).
    #[cfg(feature = "etcd")]
    Etcd(etcd_client::KvClient),
}

/// Opens `args.conns` connections to the chosen system.
pub async fn connect_all(args: &BenchArgs) -> anyhow::Result<Vec<Target>> {
    let mut out = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        out.push(connect(args).await?);
    }
    Ok(out)
}

async fn connect(args: &BenchArgs) -> anyhow::Result<Target> {
    match args.system {
        System::Meridian => Ok(Target::Meridian(args.conn.connect().await?)),
        System::Etcd => connect_etcd(&args.etcd_endpoints).await,
    }
}

#[cfg(feature = "etcd")]
async fn connect_etcd(endpoints: &str) -> anyhow::Result<Target> {
    let eps: Vec<&str> = endpoints.split(',').map(str::trim).collect();
    let client = etcd_client::Client::connect(eps, None).await?;
    Ok(Target::Etcd(client.kv_client()))
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(_endpoints: &str) -> anyhow::Result<Target> {
    anyhow::bail!("this build has no etcd support; rebuild with `cargo build --release --features etcd` (needs protoc)")
}

impl Target {
    /// One put.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        match self {
            Target::Meridian(c) => {
                c.put(key, value).await?;
            }
            #[cfg(feature = "etcd")]
            Target::Etcd(kv) => {
                kv.clone().put(key, value, None).await?;
            }
        }
        Ok(())
    }

    /// One linearizable get.
    pub async fn get(&self, key: &[u8]) -> anyhow::Result<()> {
        match self {
            Target::Meridian(c) => {
                c.get(key).await?;
            }
            #[cfg(feature = "etcd")]
            Target::Etcd(kv) => {
                kv.clone().get(key, None).await?;
            }
        }
        Ok(())
    }

    /// Closes the connection.
    #[allow(irrefutable_let_patterns)] // only Meridian without the etcd feature
    pub async fn close(&self) {
        if let Target::Meridian(c) = self {
            c.close().await;
        }
    }
}
