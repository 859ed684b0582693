//! The systems a benchmark can drive, behind one small enum.

use super::{BenchArgs, System};
use crate::client::Client;
use crate::types::ReadConsistency;

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
    for i in 0..args.conns {
        out.push(connect(args, i).await?);
    }
    Ok(out)
}

/// `endpoints` (comma-separated) rotated left by `i`: a Meridian client
/// connects to its first reachable endpoint, so rotating spreads `--conns`
/// connections over the nodes of a region instead of piling them on one.
fn rotate_endpoints(endpoints: &str, i: usize) -> String {
    let mut eps: Vec<&str> = endpoints.split(',').map(str::trim).collect();
    let n = eps.len();
    eps.rotate_left(i % n);
    eps.join(",")
}

async fn connect(args: &BenchArgs, i: usize) -> anyhow::Result<Target> {
    match args.system {
        System::Meridian => {
            let mut conn = args.conn.clone();
            conn.endpoints = rotate_endpoints(&conn.endpoints, i);
            Ok(Target::Meridian(conn.connect().await?))
        }
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

    /// Points a Meridian connection at the leader of `key`'s range before
    /// load starts, with one linearizable get: a connection that starts at a
    /// follower then follows one redirect, instead of every client on it
    /// following one at once (the client closes the old connection on a
    /// redirect, which fails the other requests in flight on it). No-op for etcd.
    #[allow(irrefutable_let_patterns)] // only Meridian without the etcd feature
    pub async fn settle(&self, key: &[u8]) -> anyhow::Result<()> {
        if let Target::Meridian(c) = self {
            c.get(key).await?;
        }
        Ok(())
    }

    /// One serializable get: answered by the node that receives it, from
    /// what it has applied (no leader round trip; possibly stale).
    pub async fn get_serializable(&self, key: &[u8]) -> anyhow::Result<()> {
        match self {
            Target::Meridian(c) => {
                c.get_with(key, None, ReadConsistency::Serializable).await?;
            }
            #[cfg(feature = "etcd")]
            Target::Etcd(kv) => {
                let opts = etcd_client::GetOptions::new().with_serializable();
                kv.clone().get(key, Some(opts)).await?;
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

#[cfg(test)]
mod tests {
    use super::rotate_endpoints;

    #[test]
    fn connections_start_at_successive_endpoints() {
        assert_eq!(rotate_endpoints("a:1, b:2,c:3", 0), "a:1,b:2,c:3");
        assert_eq!(rotate_endpoints("a:1,b:2,c:3", 1), "b:2,c:3,a:1");
        assert_eq!(rotate_endpoints("a:1,b:2,c:3", 4), "b:2,c:3,a:1");
        assert_eq!(rotate_endpoints("a:1", 5), "a:1");
    }
}
