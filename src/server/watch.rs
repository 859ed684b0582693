//! Serves one watch on its QUIC stream (client protocol v1, `wire::watch`):
//! refuses bad requests with one error frame, then writes `Created`, the
//! pumped frames ([`crate::engine::WatchFeed::pump`], bounded by
//! `limits.watch_buffer_frames`) and finally `WatchEnded` if the node ends
//! the watch. A frame the client does not take within
//! `limits.watch_stall_timeout_ms` resets the stream (the SDK then reports
//! `MER-3008` with its own resume point: the last event it received).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::context::Context;
use crate::engine::watch as feed;
use crate::error_code::{ApiError, ErrorCode};
use crate::transport::{self, PeerIdentity, DATA_ROLES};
use crate::types::Timestamp;
use crate::watch::{WatchError, WatchEvent};
use crate::wire::{self, ResponseBodyV1, ResponseV1, WatchFrameV1};

/// QUIC application error code of a watch stream reset because its
/// consumer stalled.
const STALLED_RESET_CODE: u32 = 3008;
/// Longest the final frame of a watch may wait for the client to take it.
const FINAL_FRAME_WAIT: Duration = Duration::from_secs(5);

/// Serves the watch request in `frame` on `send` until it ends. `slots`
/// bounds the watches of this connection.
pub(crate) async fn serve(
    mut send: quinn::SendStream,
    frame: Vec<u8>,
    ctx: Arc<Context>,
    peer: Arc<PeerIdentity>,
    slots: Arc<Semaphore>,
) {
    let opened = open(&frame, &ctx, &peer, &slots);
    let (outlet, after, _permit) = match opened {
        Ok(o) => o,
        Err(e) => {
            metrics::counter!(feed::METRIC_ENDED, "reason" => "refused").increment(1);
            metrics::counter!("meridian_requests_total", "op" => "watch", "code" => e.code.as_str())
                .increment(1);
            let _ = write(&mut send, &wire::error_response(&e)).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(FINAL_FRAME_WAIT, send.stopped()).await;
            return;
        }
    };
    metrics::counter!("meridian_requests_total", "op" => "watch", "code" => "ok").increment(1);
    let open_gauge = metrics::gauge!(feed::METRIC_STREAMS_OPEN);
    open_gauge.increment(1.0);
    let stall = Duration::from_millis(ctx.engine.limits().watch_stall_timeout_ms);
    let reason = stream(&mut send, outlet, after, stall, &ctx).await;
    open_gauge.decrement(1.0);
    metrics::counter!(feed::METRIC_ENDED, "reason" => reason).increment(1);
    tracing::debug!(reason, "watch ended");
}

type Opened = (feed::WatchOutlet, Timestamp, OwnedSemaphorePermit);

fn open(
    frame: &[u8],
    ctx: &Context,
    peer: &PeerIdentity,
    slots: &Arc<Semaphore>,
) -> Result<Opened, ApiError> {
    let wire::RequestV1::Watch(req) = wire::decode_request(frame)? else {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            "the frame is not a watch request",
        ));
    };
    transport::require_role(peer, DATA_ROLES)
        .map_err(|e| ApiError::new(ErrorCode::PermissionDenied, e.to_string()))?;
    let limits = ctx.engine.limits();
    let permit = slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "this connection already has {} watches open (limits.max_watches_per_connection); close one or open another connection",
                limits.max_watches_per_connection
            ),
        )
    })?;
    let feed = ctx
        .engine
        .open_watch(&req.key, req.prefix, req.from.map(Timestamp))?;
    let after = feed.after();
    let outlet = feed.pump(
        limits.watch_buffer_frames,
        Duration::from_millis(limits.watch_stall_timeout_ms),
    );
    Ok((outlet, after, permit))
}

/// Writes the watch's frames until it ends; returns the end's reason.
async fn stream(
    send: &mut quinn::SendStream,
    mut outlet: feed::WatchOutlet,
    after: Timestamp,
    stall: Duration,
    ctx: &Context,
) -> &'static str {
    let created = ok(ctx, WatchFrameV1::Created { after: after.0 });
    if write(send, &created).await.is_err() {
        return "client_closed";
    }
    loop {
        let next = tokio::select! {
            next = outlet.recv() => next,
            _ = send.stopped() => return "client_closed",
        };
        let frame = match next {
            None => return "client_closed",
            Some(Ok(frame)) => frame,
            Some(Err(end)) => {
                let reason = feed::ended_reason(Some(&end));
                let _ = write_end(send, &end).await;
                return reason;
            }
        };
        for reply in replies(ctx, &frame) {
            match tokio::time::timeout(stall, write(send, &reply)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return "client_closed",
                Err(_) => {
                    let _ = send.reset(STALLED_RESET_CODE.into());
                    return "lagged";
                }
            }
        }
        feed::record_delivered(&frame);
    }
}

/// The wire frames of one pumped frame: its puts and deletes as one
/// `Events` frame, then its progress, if any.
fn replies(ctx: &Context, frame: &[WatchEvent]) -> Vec<ResponseV1> {
    let mut out = Vec::with_capacity(2);
    if frame
        .iter()
        .any(|e| !matches!(e, WatchEvent::Progress { .. }))
    {
        out.push(ok(ctx, wire::watch::events_frame(frame)));
    }
    out.extend(
        frame
            .iter()
            .filter(|e| matches!(e, WatchEvent::Progress { .. }))
            .map(|p| ok(ctx, WatchFrameV1::from(p))),
    );
    out
}

fn ok(ctx: &Context, frame: WatchFrameV1) -> ResponseV1 {
    ResponseV1::Ok {
        served_at: ctx.engine.clock_ts().0,
        body: ResponseBodyV1::Watch(frame),
    }
}

async fn write_end(send: &mut quinn::SendStream, end: &WatchError) -> Result<(), ()> {
    let api = end.to_api();
    let reply = ResponseV1::WatchEnded {
        code: api.code.as_u16(),
        message: api.message,
        resume_from: end.resume_from().0,
    };
    match tokio::time::timeout(FINAL_FRAME_WAIT, write(send, &reply)).await {
        Ok(Ok(())) => {
            let _ = send.finish();
            let _ = tokio::time::timeout(FINAL_FRAME_WAIT, send.stopped()).await;
            Ok(())
        }
        _ => {
            let _ = send.reset(STALLED_RESET_CODE.into());
            Err(())
        }
    }
}

async fn write(send: &mut quinn::SendStream, reply: &ResponseV1) -> Result<(), ()> {
    transport::write_frame(send, &wire::encode_response(reply))
        .await
        .map_err(|_| ())
}
