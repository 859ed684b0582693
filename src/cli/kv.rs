//! `meridian kv ...` and `meridian status`.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::ConnArgs;
use crate::client::{prefix_end, Client, SessionToken};
use crate::engine::levels::{parse_read_choice, ReadChoice};
use crate::replication::read::ReadLevel;
use crate::types::{KeyValue, ReadConsistency, Timestamp};

/// The read level flags of `kv get` and `kv ls` (docs/consistency.md,
/// "Read levels"). Parsed before anything is sent.
#[derive(Debug, Args, Clone)]
pub(crate) struct LevelArgs {
    /// Read level (default: the key prefix's own, linearizable for a strong
    /// prefix): linearizable, serializable, bounded:MS
    /// (bounded alone: the key prefix's max_staleness_ms), causal or
    /// eventual; a level above the key prefix's consistency is refused
    /// (MER-1009).
    #[arg(long)]
    consistency: Option<String>,
    /// Session token of a causal read: the `token` a previous reply
    /// printed with --json (in any region or process).
    #[arg(long)]
    token: Option<String>,
    /// What a bounded read does when this region is staler than the bound:
    /// redirect (the default; to the prefix's home region) or fail.
    #[arg(long = "on-stale")]
    on_stale: Option<String>,
}

impl LevelArgs {
    /// How to read; `--serializable` is `--consistency serializable`.
    /// The level asked for; `None`: none, the key prefix's own.
    fn choice(&self, serializable: bool) -> anyhow::Result<Option<ReadChoice>> {
        if serializable {
            if self.consistency.is_some() {
                anyhow::bail!("give --serializable or --consistency, not both");
            }
            return Ok(Some(ReadChoice::Serializable));
        }
        if self.consistency.is_none() && (self.token.is_some() || self.on_stale.is_some()) {
            anyhow::bail!("--token and --on-stale need --consistency (causal or bounded:MS)");
        }
        let Some(c) = self.consistency.as_deref() else {
            return Ok(None);
        };
        Ok(Some(parse_read_choice(
            c,
            self.token.as_deref(),
            self.on_stale.as_deref(),
        )?))
    }
}

/// What a read printed with --json reports beside its result.
struct ReadMeta {
    served_at: Timestamp,
    staleness_ms: u64,
    token: SessionToken,
}

impl ReadMeta {
    fn plain(served_at: Timestamp) -> Self {
        ReadMeta {
            served_at,
            staleness_ms: 0,
            token: SessionToken(served_at),
        }
    }

    /// Adds `served_at`, `staleness_ms` and `token` (a string: HLC values
    /// exceed the integers some JSON tools keep exactly) to `v`.
    fn add_to(&self, v: &mut serde_json::Value) {
        v["served_at"] = json!(self.served_at.0);
        v["staleness_ms"] = json!(self.staleness_ms);
        v["token"] = json!(self.token.to_string());
    }
}

/// The bound of `--consistency bounded` without one: the `max_staleness_ms`
/// of `key`'s policy, asked of the node. Other choices need none (and
/// [`ReadChoice::level`] ignores the 0 they get), so nothing is asked.
async fn policy_bound(client: &Client, key: &str, choice: ReadChoice) -> anyhow::Result<u64> {
    Ok(match choice {
        ReadChoice::BoundedByPolicy(_) => client.policy_of(key).await?.max_staleness_ms,
        _ => 0,
    })
}

/// Reads `key` as `choice` says.
async fn get_as(
    client: &Client,
    key: &str,
    at: Option<u64>,
    choice: Option<ReadChoice>,
) -> anyhow::Result<(Option<KeyValue>, ReadMeta)> {
    let at = at.map(Timestamp);
    let Some(choice) = choice else {
        // No level asked: the key prefix's own.
        let r = match at {
            Some(t) => client.get_at(key, t).await?,
            None => client.get(key).await?,
        };
        return Ok((r.kv, ReadMeta::plain(r.served_at)));
    };
    let plain = match choice.level(policy_bound(client, key, choice).await?) {
        None => ReadConsistency::Serializable,
        Some(ReadLevel::Linearizable) => ReadConsistency::Linearizable,
        Some(level) => {
            // `run` refused `--at` with a local level before connecting.
            let r = client.get_at_level(key, level).await?;
            let meta = ReadMeta {
                served_at: r.served_at,
                staleness_ms: r.staleness_ms,
                token: r.token,
            };
            return Ok((r.kv, meta));
        }
    };
    let r = client.get_with(key, at, plain).await?;
    Ok((r.kv, ReadMeta::plain(r.served_at)))
}

/// Lists up to `limit` keys under `prefix` at a read level, page by page;
/// a causal listing brings each page's token to the next. Returns the
/// pairs, whether more remain, and the last page's snapshot, the highest
/// staleness seen and the final token.
async fn list_at_level(
    client: &Client,
    prefix: &str,
    limit: usize,
    mut level: ReadLevel,
) -> anyhow::Result<(Vec<KeyValue>, bool, ReadMeta)> {
    let end = prefix_end(prefix.as_bytes());
    let mut start = prefix.as_bytes().to_vec();
    let mut out = Vec::new();
    let mut meta = ReadMeta::plain(Timestamp::ZERO);
    loop {
        let page_limit = (limit - out.len()).min(crate::limits::DEFAULT_SCAN_PAGE);
        let page_limit = u32::try_from(page_limit.max(1)).unwrap_or(1);
        let page = client
            .range_at_level(&start, end.as_deref(), page_limit, level)
            .await?;
        meta = ReadMeta {
            served_at: page.served_at,
            staleness_ms: meta.staleness_ms.max(page.staleness_ms),
            token: meta.token.max(page.token),
        };
        if let ReadLevel::Causal { .. } = level {
            level = ReadLevel::Causal {
                token: meta.token.0,
            };
        }
        out.extend(page.kvs);
        match page.next {
            Some(next) if out.len() < limit => start = next,
            Some(_) => return Ok((out, true, meta)),
            None => return Ok((out, false, meta)),
        }
    }
}

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
        /// Attach the key to this lease: it is deleted when the lease
        /// expires or is revoked (strong prefixes only).
        #[arg(long, conflicts_with = "fence")]
        lease: Option<u64>,
        /// Guard the write with lock NAME's fencing token TOKEN
        /// (NAME:TOKEN): refused (MER-1017) unless TOKEN is the newest
        /// granted for NAME.
        #[arg(long, value_parser = parse_fence)]
        fence: Option<(String, u64)>,
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
        /// (cheaper, possibly stale) instead of linearizably at the leader
        /// (the same as --consistency serializable).
        #[arg(long)]
        serializable: bool,
        #[command(flatten)]
        level: LevelArgs,
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
        level: LevelArgs,
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

/// Parses `NAME:TOKEN` (the name may itself contain colons; the token is
/// after the last).
fn parse_fence(s: &str) -> Result<(String, u64), String> {
    let (name, token) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("expected NAME:TOKEN, got {s:?}"))?;
    if name.is_empty() {
        return Err(format!("expected NAME:TOKEN, got {s:?} (empty lock name)"));
    }
    let token = token
        .parse()
        .map_err(|_| format!("the token in {s:?} is not a non-negative integer"))?;
    Ok((name.to_string(), token))
}

pub(crate) async fn run(cmd: KvCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KvCommand::Put {
            key,
            value,
            lease,
            fence,
            conn,
        } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => read_stdin_value()?,
            };
            let client = conn.connect().await?;
            let w = match (lease, fence) {
                (Some(id), _) => client.put_with_lease(&key, &value, id).await?,
                (None, Some((name, token))) => {
                    let t = client.put_fenced(&key, &value, &name, token).await?;
                    crate::client::WriteResponse {
                        version: t.version,
                        existed: true,
                    }
                }
                (None, None) => client.put(&key, &value).await?,
            };
            if conn.json {
                println!(
                    "{}",
                    // `token`: the write's version as a session token, a
                    // string (JSON tools read big integers as doubles).
                    json!({"key": key, "version": w.version.0, "version_str": w.version.to_string(),
                           "token": w.version.0.to_string()})
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
            level,
            conn,
        } => {
            let choice = level.choice(serializable)?;
            if at.is_some()
                && !matches!(
                    choice,
                    None | Some(ReadChoice::Serializable)
                        | Some(ReadChoice::Level(ReadLevel::Linearizable))
                )
            {
                anyhow::bail!("--at cannot be combined with a bounded, causal or eventual read: the level picks the snapshot");
            }
            let client = conn.connect().await?;
            let read = get_as(&client, &key, at, choice).await;
            client.close().await;
            let (kv, meta) = read?;
            let Some(kv) = kv else {
                if conn.json {
                    let mut v = json!({"key": key, "found": false});
                    meta.add_to(&mut v);
                    println!("{v}");
                }
                eprintln!("key not found: {key}");
                return Ok(ExitCode::from(super::EXIT_FAILED));
            };
            if conn.json {
                let mut v = kv_json(&kv);
                v["found"] = json!(true);
                meta.add_to(&mut v);
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
            level,
            conn,
        } => {
            let choice = level.choice(false)?;
            if limit == 0 {
                anyhow::bail!("--limit must be at least 1");
            }
            let client = conn.connect().await?;
            let listed = match choice {
                // No level asked: the prefix's own, one snapshot across ranges.
                None => client
                    .list_prefix(&prefix, limit)
                    .await
                    .map(|(kvs, more)| (kvs, more, None))
                    .map_err(anyhow::Error::from),
                Some(choice) => match policy_bound(&client, &prefix, choice).await {
                Err(e) => Err(e),
                Ok(bound) => match choice.level(bound) {
                    Some(l) => list_at_level(&client, &prefix, limit, l)
                        .await
                        .map(|(kvs, more, meta)| (kvs, more, Some(meta))),
                    None => Err(anyhow::anyhow!(
                        "kv ls reads linearizable, bounded, causal or eventual (serializable listings are not offered)"
                    )),
                },
                },
            };
            client.close().await;
            let (kvs, truncated, meta) = listed?;
            if conn.json {
                let items: Vec<_> = kvs.iter().map(kv_json).collect();
                let mut v = json!({"kvs": items, "truncated": truncated});
                if let Some(meta) = &meta {
                    meta.add_to(&mut v);
                }
                println!("{v}");
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
