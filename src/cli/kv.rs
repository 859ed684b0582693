//! `meridian kv ...` and `meridian status`.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::ConnArgs;
use crate::types::{KeyValue, ReadConsistency, Timestamp};

/// Largest value read from standard input (the node enforces its own limit too).
const MAX_STDIN_VALUE_BYTES: u64 = crate::limits::HARD_MAX_VALUE_BYTES as u64;

#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Write a value. Without VALUE, the value is read from standard input.
    Put {
        /// The key.
        key: String,
        /// The value (omit to read standard input).
        value: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Read a key (exit status 1 if it does not exist).
    Get {
        /// The key.
        key: String,
        /// Read at this HLC snapshot timestamp (as printed in --json output).
        #[arg(long)]
        at: Option<u64>,
        /// Serve from whichever node answers, from what it has applied
        /// (cheaper, possibly stale) instead of linearizably at the leader.
        #[arg(long)]
        serializable: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List keys with a prefix (all keys if PREFIX is empty).
    Ls {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// Maximum keys to print.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Run a transaction read from standard input: compares, a blank line,
    /// success ops, a blank line, failure ops (etcdctl style). Lines:
    /// `value("k") = "v"`, `version("k") > 5`, `exists("k") = false`,
    /// `put k v`, `del k`.
    Txn {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show a key's version history, newest first.
    History {
        /// The key.
        key: String,
        /// Maximum entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

fn kv_json(kv: &KeyValue) -> serde_json::Value {
    json!({
        "key": String::from_utf8_lossy(&kv.key),
        "value": String::from_utf8_lossy(&kv.value),
        "version": kv.version.0,
    })
}

fn read_stdin_value() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN_VALUE_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_STDIN_VALUE_BYTES {
        anyhow::bail!("standard input is larger than {MAX_STDIN_VALUE_BYTES} bytes");
    }
    Ok(buf)
}

pub(crate) async fn run(cmd: KvCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KvCommand::Put { key, value, conn } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => read_stdin_value()?,
            };
            let client = conn.connect().await?;
            let w = client.put(&key, &value).await?;
            if conn.json {
                println!(
                    "{}",
                    json!({"key": key, "version": w.version.0, "version_str": w.version.to_string()})
                );
            } else {
                println!("OK {}", w.version);
            }
            client.close().await;
        }
        KvCommand::Get {
            key,
            at,
            serializable,
            conn,
        } => {
            let client = conn.connect().await?;
            let consistency = if serializable {
                ReadConsistency::Serializable
            } else {
                ReadConsistency::Linearizable
            };
            let r = client
                .get_with(&key, at.map(Timestamp), consistency)
                .await?;
            client.close().await;
            let Some(kv) = r.kv else {
                if conn.json {
                    println!(
                        "{}",
                        json!({"key": key, "found": false, "served_at": r.served_at.0})
                    );
                }
                eprintln!("key not found: {key}");
                return Ok(ExitCode::from(super::EXIT_FAILED));
            };
            if conn.json {
                let mut v = kv_json(&kv);
                v["found"] = json!(true);
                v["served_at"] = json!(r.served_at.0);
                println!("{v}");
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&kv.value)?;
                out.write_all(b"\n")?;
            }
        }
        KvCommand::Del { key, conn } => {
            let client = conn.connect().await?;
            let w = client.delete(&key).await?;
            client.close().await;
            if conn.json {
                println!(
                    "{}",
                    json!({"key": key, "deleted": w.existed, "version": w.version.0})
                );
            } else {
                println!("{}", if w.existed { 1 } else { 0 });
            }
        }
        KvCommand::Ls {
            prefix,
            limit,
            conn,
        } => {
            let client = conn.connect().await?;
            let (kvs, truncated) = client.list_prefix(&prefix, limit).await?;
            client.close().await;
            if conn.json {
                let items: Vec<_> = kvs.iter().map(kv_json).collect();
                println!("{}", json!({"kvs": items, "truncated": truncated}));
            } else {
                for kv in &kvs {
                    println!(
                        "{}\t{}",
                        String::from_utf8_lossy(&kv.key),
                        String::from_utf8_lossy(&kv.value)
                    );
                }
                if truncated {
                    eprintln!("(more keys; raise --limit)");
                }
            }
        }
        KvCommand::Txn { conn } => {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_STDIN_VALUE_BYTES)
                .read_to_string(&mut text)?;
            let txn = super::txn_parse::parse(&text)?;
            let client = conn.connect().await?;
            let r = client.txn(&txn).await?;
            client.close().await;
            if conn.json {
                println!(
                    "{}",
                    json!({"succeeded": r.succeeded, "version": r.version.0})
                );
            } else {
                println!("{}", if r.succeeded { "SUCCESS" } else { "FAILURE" });
            }
        }
        KvCommand::History { key, limit, conn } => {
            let client = conn.connect().await?;
            let h = client.history(&key, limit).await?;
            client.close().await;
            for e in &h.entries {
                let value = e
                    .value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                if conn.json {
                    println!(
                        "{}",
                        json!({"version": e.version.0, "value": value, "deleted": value.is_none()})
                    );
                } else {
                    println!(
                        "{}\t{}",
                        e.version,
                        value.unwrap_or_else(|| "(deleted)".into())
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn status(conn: &ConnArgs) -> anyhow::Result<ExitCode> {
    let client = conn.connect().await?;
    let s = client.status().await?;
    client.close().await;
    if conn.json {
        println!(
            "{}",
            json!({"node_id": s.node_id, "region": s.region, "zone": s.zone, "version": s.version,
                   "approximate_keys": s.approximate_keys, "gc_horizon": s.gc_horizon})
        );
    } else {
        println!(
            "node {} region {} zone {} version {}",
            s.node_id, s.region, s.zone, s.version
        );
        println!(
            "approximate keys {}  gc horizon {}",
            s.approximate_keys,
            Timestamp(s.gc_horizon)
        );
    }
    Ok(ExitCode::SUCCESS)
}
