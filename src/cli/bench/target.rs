//! The systems a benchmark can drive, behind one small enum.

use super::{BenchArgs, System};
use crate::client::Client;
use crate::engine::levels::{parse_read_choice, ReadChoice};
use crate::replication::read::ReadLevel;
use crate::types::ReadConsistency;

/// How a get reads (`--consistency`, docs/consistency.md "Read levels").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// Meridian: the key prefix's own level (linearizable for a strong
    /// prefix, at its home region). etcd: linearizable.
    Default,
    /// From what the receiving node has applied (both systems).
    Serializable,
    /// A per-call level (Meridian only): linearizable, bounded, causal or
    /// eventual.
    Level(ReadLevel),
}

impl Read {
    /// Parses `--consistency` for `system`. etcd has only linearizable and
    /// serializable reads; a bounded read must name its bound (`bounded:MS`),
    /// since the bench has no policy lookup on its request path.
    pub fn parse(system: System, consistency: &str) -> anyhow::Result<Read> {
        let choice = parse_read_choice(consistency, None, None)
            .map_err(|e| anyhow::anyhow!("--consistency {consistency}: {e}"))?;
        match (system, choice) {
            (_, ReadChoice::Serializable) => Ok(Read::Serializable),
            (System::Etcd, ReadChoice::Level(ReadLevel::Linearizable)) => Ok(Read::Default),
            (System::Etcd, _) => anyhow::bail!(
                "--consistency {consistency}: etcd reads are linearizable or serializable"
            ),
            (System::Meridian, ReadChoice::Level(level)) => Ok(Read::Level(level)),
            (System::Meridian, ReadChoice::BoundedByPolicy(_)) => {
                anyhow::bail!("--consistency bounded needs its bound here: bounded:MS")
            }
        }
    }
}

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
pub(super) fn rotate_endpoints(endpoints: &str, i: usize) -> String {
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

/// One connection of `system` to `endpoints`: a Meridian client sending
/// from `bind` (its region, in a multi-region `meridian dev`) with the
/// rest of `args`' connection flags, or an etcd client (which cannot
/// choose its source address, so `bind` must be `None`).
pub async fn connect_to(
    args: &BenchArgs,
    endpoints: &str,
    bind: Option<&str>,
) -> anyhow::Result<Target> {
    match args.system {
        System::Meridian => {
            let mut conn = args.conn.clone();
            conn.endpoints = endpoints.to_string();
            conn.bind = bind.map(str::to_string);
            Ok(Target::Meridian(conn.connect().await?))
        }
        System::Etcd if bind.is_some() => {
            anyhow::bail!("an etcd client cannot choose its source address (BIND@)")
        }
        System::Etcd => connect_etcd(endpoints).await,
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

    /// One get of `key` as `read` says; returns the value, if any.
    pub async fn read(&self, key: &[u8], read: Read) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Target::Meridian(c) => {
                let kv = match read {
                    Read::Default => c.get(key).await?.kv,
                    Read::Serializable => {
                        c.get_with(key, None, ReadConsistency::Serializable)
                            .await?
                            .kv
                    }
                    Read::Level(level) => c.get_at_level(key, level).await?.kv,
                };
                Ok(kv.map(|kv| kv.value))
            }
            #[cfg(feature = "etcd")]
            Target::Etcd(kv) => {
                let opts = match read {
                    Read::Serializable => Some(etcd_client::GetOptions::new().with_serializable()),
                    Read::Default => None,
                    Read::Level(_) => anyhow::bail!("etcd has no per-call read levels"),
                };
                let resp = kv.clone().get(key, opts).await?;
                Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
            }
        }
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
    use super::super::System;
    use super::{rotate_endpoints, Read};
    use crate::replication::read::{OnStale, ReadLevel};

    #[test]
    fn read_levels_parse_per_system() {
        let m = |s| Read::parse(System::Meridian, s);
        assert_eq!(m("serializable").unwrap(), Read::Serializable);
        assert_eq!(m("eventual").unwrap(), Read::Level(ReadLevel::Eventual));
        assert_eq!(
            m("bounded:1000").unwrap(),
            Read::Level(ReadLevel::Bounded {
                max_staleness_ms: 1000,
                on_stale: OnStale::Redirect
            })
        );
        assert_eq!(
            m("linearizable").unwrap(),
            Read::Level(ReadLevel::Linearizable)
        );
        assert!(matches!(
            m("causal").unwrap(),
            Read::Level(ReadLevel::Causal { .. })
        ));
        // A bound from the policy would need a lookup per run: refused.
        assert!(m("bounded").unwrap_err().to_string().contains("bounded:MS"));
        assert!(m("strong").is_err());
        let e = |s| Read::parse(System::Etcd, s);
        assert_eq!(e("linearizable").unwrap(), Read::Default);
        assert_eq!(e("serializable").unwrap(), Read::Serializable);
        let err = e("eventual").unwrap_err().to_string();
        assert!(err.contains("etcd"), "{err}");
    }

    #[test]
    fn connections_start_at_successive_endpoints() {
        assert_eq!(rotate_endpoints("a:1, b:2,c:3", 0), "a:1,b:2,c:3");
        assert_eq!(rotate_endpoints("a:1,b:2,c:3", 1), "b:2,c:3,a:1");
        assert_eq!(rotate_endpoints("a:1,b:2,c:3", 4), "b:2,c:3,a:1");
        assert_eq!(rotate_endpoints("a:1", 5), "a:1");
    }
}
