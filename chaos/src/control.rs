//! The control API: one request per line over TCP on loopback, one JSON
//! reply per line. Made for `meridian-wan` subcommands, scripts and `nc`:
//!
//! ```text
//! status                                  -> {"ok":true,"status":{...}}
//! partition us-east eu-west               -> {"ok":true}   (cut, both ways)
//! oneway ap-south us-east                 -> {"ok":true}   (ap-south -/-> us-east)
//! isolate eu-west                         -> {"ok":true}
//! heal                                    -> {"ok":true}   (every partition)
//! link us-east eu-west rtt_ms=90 loss=0.01 -> {"ok":true}  (unnamed fields kept)
//! bogus                                   -> {"ok":false,"error":"..."}
//! ```
//!
//! A connection may send several requests. Requests longer than
//! [`CONTROL_MAX_REQUEST_BYTES`] or idle past [`CONTROL_IO_TIMEOUT`] close
//! it; at most [`CONTROL_MAX_CONNECTIONS`] are served at once. There is no
//! authentication: bind it to loopback only (the default).

use std::fmt;
use std::io;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::controller::Controller;
use crate::engine::LinkChange;
use crate::limits::{
    CONTROL_IO_TIMEOUT, CONTROL_MAX_CONNECTIONS, CONTROL_MAX_REPLY_BYTES, CONTROL_MAX_REQUEST_BYTES,
};
use crate::status::Status;
use crate::table::Partition;

/// Where `meridian-wan` looks for the control API when told nothing else.
pub const DEFAULT_CONTROL_ADDR: &str = "127.0.0.1:7390";

/// A control request.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// `status`
    Status,
    /// `partition A B`, `oneway FROM TO`, `isolate R`
    Partition(Partition),
    /// `heal`
    Heal,
    /// `link A B [rtt_ms=N] [jitter_ms=N] [loss=X]`
    Link {
        /// One region.
        a: String,
        /// The other.
        b: String,
        /// Fields to change.
        change: LinkChange,
    },
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Status => write!(f, "status"),
            Request::Heal => write!(f, "heal"),
            Request::Partition(Partition::Cut { a, b }) => write!(f, "partition {a} {b}"),
            Request::Partition(Partition::OneWay { from, to }) => write!(f, "oneway {from} {to}"),
            Request::Partition(Partition::Isolate { region }) => write!(f, "isolate {region}"),
            Request::Link { a, b, change } => {
                write!(f, "link {a} {b}")?;
                if let Some(v) = change.rtt_ms {
                    write!(f, " rtt_ms={v}")?;
                }
                if let Some(v) = change.jitter_ms {
                    write!(f, " jitter_ms={v}")?;
                }
                if let Some(v) = change.loss {
                    write!(f, " loss={v}")?;
                }
                Ok(())
            }
        }
    }
}

/// Parses one request line; the error says what is wrong.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let two = |a: &str, b: &str| (a.to_string(), b.to_string());
    match words.as_slice() {
        ["status"] => Ok(Request::Status),
        ["heal"] => Ok(Request::Heal),
        ["partition", a, b] => {
            let (a, b) = two(a, b);
            Ok(Request::Partition(Partition::Cut { a, b }))
        }
        ["oneway", from, to] => {
            let (from, to) = two(from, to);
            Ok(Request::Partition(Partition::OneWay { from, to }))
        }
        ["isolate", region] => Ok(Request::Partition(Partition::Isolate {
            region: region.to_string(),
        })),
        ["link", a, b, fields @ ..] => {
            let mut change = LinkChange::default();
            for field in fields {
                let (k, v) = field
                    .split_once('=')
                    .ok_or_else(|| format!("expected key=value, got {field:?}"))?;
                let bad = |e: &dyn fmt::Display| format!("{k}: {v:?}: {e}");
                match k {
                    "rtt_ms" => change.rtt_ms = Some(v.parse().map_err(|e| bad(&e))?),
                    "jitter_ms" => change.jitter_ms = Some(v.parse().map_err(|e| bad(&e))?),
                    "loss" => change.loss = Some(v.parse().map_err(|e| bad(&e))?),
                    _ => return Err(format!("unknown link field {k:?} (rtt_ms, jitter_ms, loss)")),
                }
            }
            let (a, b) = two(a, b);
            Ok(Request::Link { a, b, change })
        }
        [] => Err("empty request".into()),
        _ => Err(format!(
            "unknown request {line:?}: status | heal | partition A B | oneway FROM TO | isolate R | link A B [rtt_ms=N] [jitter_ms=N] [loss=X]"
        )),
    }
}

/// A reply line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was applied.
    pub ok: bool,
    /// The status, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Why not, when `ok` is false. Nothing changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn error(e: impl ToString) -> Response {
        Response {
            ok: false,
            status: None,
            error: Some(e.to_string()),
        }
    }
}

/// Applies a request through a [`Controller`].
pub async fn execute(control: &Controller, req: Request) -> Response {
    let done = |r: Result<(), crate::ControlError>| match r {
        Ok(()) => Response {
            ok: true,
            status: None,
            error: None,
        },
        Err(e) => Response::error(e),
    };
    match req {
        Request::Status => match control.status().await {
            Ok(s) => Response {
                ok: true,
                status: Some(s),
                error: None,
            },
            Err(e) => Response::error(e),
        },
        Request::Heal => done(control.heal().await),
        Request::Partition(p) => done(control.partition(p).await),
        Request::Link { a, b, change } => done(control.change_link(&a, &b, change).await),
    }
}

/// Serves the control API on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, control: Controller) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    if conns.len() >= CONTROL_MAX_CONNECTIONS {
                        tracing::warn!(%peer, "control connection refused: too many");
                        continue;
                    }
                    let control = control.clone();
                    conns.spawn(async move {
                        if let Err(e) = serve_connection(stream, &control).await {
                            tracing::debug!(%peer, error = %e, "control connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control accept");
                    tokio::time::sleep(crate::limits::ACCEPT_ERROR_BACKOFF).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Reads one line of at most `max` bytes; `None` at end of stream.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    max: usize,
) -> io::Result<Option<String>> {
    let mut line = String::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = tokio::time::timeout(
        CONTROL_IO_TIMEOUT,
        (&mut *reader).take(limit).read_line(&mut line),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "control connection idle"))??;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line longer than {max} bytes or cut off"),
        ));
    }
    Ok(Some(line))
}

async fn serve_connection(stream: TcpStream, control: &Controller) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    while let Some(line) = read_line(&mut reader, CONTROL_MAX_REQUEST_BYTES).await? {
        let reply = match parse_request(&line) {
            Ok(req) => {
                if req == Request::Status {
                    tracing::debug!("control request: status");
                } else {
                    tracing::info!(request = %req, "control request");
                }
                execute(control, req).await
            }
            Err(e) => Response::error(e),
        };
        let mut text = serde_json::to_string(&reply).map_err(io::Error::other)?;
        text.push('\n');
        tokio::time::timeout(CONTROL_IO_TIMEOUT, w.write_all(text.as_bytes()))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "control reply"))??;
    }
    Ok(())
}

/// Calling a control API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No connection, a timeout, or the connection broke. The request may
    /// or may not have been applied if the connection broke after sending.
    #[error("control API at {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The reply was not a reply line.
    #[error("control API at {addr} sent a bad reply: {reason}")]
    BadReply {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Sends one request to the control API at `addr` and reads its reply
/// (each step bounded by [`CONTROL_IO_TIMEOUT`]).
pub async fn send(addr: SocketAddr, req: &Request) -> Result<Response, ClientError> {
    let io_err = |source| ClientError::Io { addr, source };
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "timed out");
    let stream = tokio::time::timeout(CONTROL_IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io_err(timed_out()))?
        .map_err(io_err)?;
    let (r, mut w) = stream.into_split();
    let line = format!("{req}\n");
    tokio::time::timeout(CONTROL_IO_TIMEOUT, w.write_all(line.as_bytes()))
        .await
        .map_err(|_| io_err(timed_out()))?
        .map_err(io_err)?;
    let mut reader = BufReader::new(r);
    let reply = read_line(&mut reader, CONTROL_MAX_REPLY_BYTES)
        .await
        .map_err(io_err)?
        .ok_or_else(|| ClientError::BadReply {
            addr,
            reason: "closed without a reply".into(),
        })?;
    serde_json::from_str(&reply).map_err(|e| ClientError::BadReply {
        addr,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print_back() {
        let cases = [
            "status",
            "heal",
            "partition us-east eu-west",
            "oneway ap-south us-east",
            "isolate eu-west",
            "link us-east eu-west",
            "link us-east eu-west rtt_ms=90 jitter_ms=3 loss=0.25",
        ];
        for line in cases {
            let req = parse_request(line).unwrap();
            assert_eq!(req.to_string(), line);
            assert_eq!(parse_request(&format!("  {line} \n")).unwrap(), req);
        }
        assert_eq!(
            parse_request("link a b loss=0.5").unwrap(),
            Request::Link {
                a: "a".into(),
                b: "b".into(),
                change: LinkChange {
                    loss: Some(0.5),
                    ..LinkChange::default()
                }
            }
        );
    }

    #[test]
    fn bad_requests_say_why() {
        for (line, says) in [
            ("", "empty"),
            ("partition us-east", "unknown request"),
            ("reboot", "unknown request"),
            ("link a b rtt=5", "unknown link field"),
            ("link a b rtt_ms=-5", "rtt_ms"),
            ("link a b loss", "key=value"),
        ] {
            let e = parse_request(line).unwrap_err();
            assert!(e.contains(says), "{line:?}: {e}");
        }
    }

    #[test]
    fn replies_are_one_json_line() {
        let r = Response::error("unknown region \"mars\"");
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(text, r#"{"ok":false,"error":"unknown region \"mars\""}"#);
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), r);
    }
}
