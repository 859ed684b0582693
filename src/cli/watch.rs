//! `meridian watch KEY_OR_PREFIX [--prefix] [--from HLC]`: one line per
//! event (JSON lines with --json) until Ctrl-C, `--count` events, or the
//! node ends the watch (then an error line naming where to resume, and
//! exit status 1).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::conn::ConnArgs;
use crate::client::{WatchEnd, WatchOptions};
use crate::watch::{parse_hlc, WatchEvent};

/// Arguments of `meridian watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The key to watch, or with --prefix the prefix.
    key: String,
    /// Watch every key starting with KEY_OR_PREFIX.
    #[arg(long)]
    prefix: bool,
    /// Only events strictly after this HLC timestamp: the packed integer
    /// (as `ts` in --json output) or UNIX_MS.LOGICAL (as printed). Resume
    /// an ended watch from the timestamp its error names. Default: from
    /// now (the region's frontier).
    #[arg(long)]
    from: Option<String>,
    /// Exit after this many put/delete events.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    conn: ConnArgs,
}

fn line(event: &WatchEvent, json: bool) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match (event, json) {
        (WatchEvent::Put { key, value, ts }, true) => json!({
            "type": "put", "key": text(key), "value": text(value),
            "ts": ts.0, "ts_str": ts.to_string()
        })
        .to_string(),
        (WatchEvent::Delete { key, ts }, true) => json!({
            "type": "delete", "key": text(key), "ts": ts.0, "ts_str": ts.to_string()
        })
        .to_string(),
        (WatchEvent::Progress { frontier }, true) => json!({
            "type": "progress", "frontier": frontier.0, "frontier_str": frontier.to_string()
        })
        .to_string(),
        (WatchEvent::Put { key, value, ts }, false) => {
            format!("PUT {} {} {ts}", text(key), text(value))
        }
        (WatchEvent::Delete { key, ts }, false) => format!("DELETE {} {ts}", text(key)),
        (WatchEvent::Progress { frontier }, false) => format!("PROGRESS {frontier}"),
    }
}

fn end_line(end: &WatchEnd, json: bool) -> String {
    if json {
        json!({
            "type": "error", "code": end.error.code.as_str(), "message": end.error.message,
            "remedy": end.error.code.remedy(),
            "resume_from": end.resume_from.0, "resume_from_str": end.resume_from.to_string()
        })
        .to_string()
    } else {
        format!(
            "error: {} {} (resume with --from {})",
            end.error.code.as_str(),
            end.error.message,
            end.resume_from.0
        )
    }
}

pub(crate) async fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    // Parsed before connecting: a malformed timestamp changes nothing.
    let from = args
        .from
        .as_deref()
        .map(parse_hlc)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = args.conn.connect().await?;
    let opts = WatchOptions {
        prefix: args.prefix,
        from,
    };
    let mut stream = client.watch(&args.key, opts).await?;
    let json = args.conn.json;
    let mut seen = 0u64;
    let status = loop {
        if args.count.is_some_and(|n| seen >= n) {
            break ExitCode::SUCCESS;
        }
        let next = tokio::select! {
            next = stream.next() => next,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("resume with --from {}", stream.resume_point().0);
                break ExitCode::SUCCESS;
            }
        };
        let mut out = std::io::stdout().lock();
        match next {
            Some(Ok(event)) => {
                if !matches!(event, WatchEvent::Progress { .. }) {
                    seen += 1;
                }
                writeln!(out, "{}", line(&event, json))?;
                out.flush()?;
            }
            Some(Err(end)) => {
                writeln!(out, "{}", end_line(&end, json))?;
                out.flush()?;
                break ExitCode::from(super::EXIT_FAILED);
            }
            None => break ExitCode::SUCCESS,
        }
    };
    drop(stream);
    client.close().await;
    Ok(status)
}
