//! `meridian service ...`: register an instance (kept alive by a lease),
//! list a service's instances (own region first, then nearest), and watch
//! them come and go.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::conn::ConnArgs;
use crate::client::ServiceChange;
use crate::discovery::ServiceInstance;

/// Default TTL of a registration's lease.
const DEFAULT_TTL_S: u64 = 10;

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Register instance ID of service NAME at ADDR in the connected node's
    /// region; keep it registered until Ctrl-C (then deregister), or with
    /// --detach return at once, leaving its lease to run out (--ttl).
    Register {
        /// The service.
        name: String,
        /// The instance id (unique within the service and region).
        id: String,
        /// Its address (repeat --addr for more).
        addr: String,
        /// More addresses.
        #[arg(long = "addr")]
        more: Vec<String>,
        /// Metadata, KEY=VALUE (repeatable).
        #[arg(long, value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        /// The instance's zone.
        #[arg(long, default_value = "")]
        zone: String,
        /// TTL of the registration's lease, in seconds: the instance
        /// disappears this long after its last keepalive.
        #[arg(long, default_value_t = DEFAULT_TTL_S)]
        ttl: u64,
        /// Register and return; the lease runs out after --ttl.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List service NAME's instances: this region's first (--zone's first
    /// within it), then the other regions' by measured round trip. Exit
    /// status 1 when there are none.
    Ls {
        /// The service.
        name: String,
        /// The caller's zone.
        #[arg(long, default_value = "")]
        zone: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print service NAME's instances as they register and leave, until
    /// Ctrl-C (one line each; JSON lines with --json).
    Watch {
        /// The service.
        name: String,
        /// Resume after this HLC timestamp (as printed).
        #[arg(long, value_parser = crate::watch::parse_hlc)]
        from: Option<crate::types::Timestamp>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    Ok((k.to_string(), v.to_string()))
}

fn instance_json(i: &ServiceInstance) -> serde_json::Value {
    json!({
        "name": i.name, "id": i.id, "addrs": i.addrs, "meta": i.meta,
        "region": i.region, "zone": i.zone,
    })
}

pub(crate) async fn run(cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServiceCommand::Register {
            name,
            id,
            addr,
            more,
            meta,
            zone,
            ttl,
            detach,
            conn,
        } => {
            let client = Arc::new(conn.connect().await?);
            let instance = ServiceInstance {
                v: 1,
                name: name.clone(),
                id: id.clone(),
                addrs: std::iter::once(addr).chain(more).collect(),
                meta: meta.into_iter().collect::<BTreeMap<_, _>>(),
                region: String::new(),
                zone,
            };
            let mut reg = client
                .register_service(instance, Duration::from_secs(ttl))
                .await?;
            if conn.json {
                println!("{}", json!({"name": name, "id": id, "lease": reg.lease}));
            } else {
                println!("{name}/{id} registered (lease {}, TTL {ttl}s)", reg.lease);
            }
            if detach {
                reg.detach();
                client.close().await;
                return Ok(ExitCode::SUCCESS);
            }
            let lost = tokio::select! {
                _ = tokio::signal::ctrl_c() => false,
                _ = reg.lost() => true,
            };
            if lost {
                eprintln!("{name}/{id}: the registration's lease was lost; it is no longer listed");
                client.close().await;
                return Ok(ExitCode::from(1));
            }
            reg.deregister().await?;
            eprintln!("{name}/{id} deregistered");
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Ls { name, zone, conn } => {
            let client = conn.connect().await?;
            let found = client.lookup_service(&name, &zone).await?;
            client.close().await;
            if conn.json {
                let list: Vec<_> = found.iter().map(instance_json).collect();
                println!("{}", json!({ "name": name, "instances": list }));
            } else {
                for i in &found {
                    println!("{} {} {} {}", i.region, i.id, i.addrs.join(","), i.zone);
                }
            }
            Ok(if found.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        ServiceCommand::Watch { name, from, conn } => {
            let client = conn.connect().await?;
            let mut watch = client.watch_service(&name, from).await?;
            loop {
                let next = tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    n = watch.next() => n,
                };
                match next {
                    None => break,
                    Some(Ok(ServiceChange::Up(i))) => {
                        if conn.json {
                            let mut v = instance_json(&i);
                            v["event"] = json!("up");
                            println!("{v}");
                        } else {
                            println!("up {} {} {}", i.region, i.id, i.addrs.join(","));
                        }
                    }
                    Some(Ok(ServiceChange::Down { region, id, at })) => {
                        if conn.json {
                            println!(
                                "{}",
                                json!({"event": "down", "name": name, "region": region, "id": id, "at": at.to_string()})
                            );
                        } else {
                            println!("down {region} {id}");
                        }
                    }
                    Some(Err(end)) => {
                        client.close().await;
                        return Err(end.into());
                    }
                }
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
