//! Trace context across nodes: the W3C trace context of a request, how it
//! travels in a frame, and how a node's spans join it.
//!
//! # The frame trailer
//!
//! The client protocol ([`crate::wire`]) and the peer protocol
//! ([`crate::peer`]) frame a message as `u16 BE version ++ postcard(body)`.
//! postcard is self-delimiting: `postcard::take_from_bytes` decodes the body
//! and hands back the bytes after it. A frame may carry a **trailer** there:
//!
//! ```text
//! frame   = version:u16 BE ++ postcard(body) ++ trailer
//! trailer = field*                      (empty: no trailer, the v1 frame)
//! field   = tag:u8 ++ len:u8 ++ len bytes
//! tag 1   = trace context v1, len 25:
//!           trace_id[16] ++ span_id[8] ++ trace_flags:u8   (W3C traceparent)
//! tag 2   = traced entry v1, len 8: proposed_at:u64 BE     (peer AppendEntries)
//! ```
//!
//! Why a trailer rather than a new message variant or field: the body's
//! bytes stay exactly what they were, so every frozen-bytes test of both
//! protocols still holds unchanged, a frame without a trailer is the frame
//! every earlier build sent, and the context travels with any message
//! without one traced twin per variant. Fields are tagged and
//! length-prefixed, so a later field is appended with a new tag and a reader
//! skips tags it does not know. A malformed trailer (a truncated field, an
//! all-zero id, more than [`MAX_TRAILER_FIELDS`] fields) refuses the frame as
//! malformed: bad input gets a clear error.
//!
//! Builds before this trailer refuse any trailing bytes (`MER-1005`), so a
//! sender writes one only for a **sampled** span: with tracing off (the
//! default) no frame carries one, and a mixed-version cluster is safe until
//! tracing is turned on.
//!
//! # Joining a trace
//!
//! [`current`] reads the current `tracing` span's OpenTelemetry context (via
//! tracing-opentelemetry); [`set_parent`] makes a new span a child of a
//! received context. Both are no-ops when export is off.
//!
//! A Raft entry carries no trace context (the log is a disk format, and one
//! AppendEntries carries many clients' entries). The proposing node
//! remembers the propose span's context by the entry's `(range,
//! proposed_at)` ([`remember`]): the leader's HLC stamps every proposal
//! distinctly, so the pair names one entry. The Raft network, the log store
//! and the state machine [`recall`] it when the entry passes through them,
//! so an AppendEntries, a log append and an apply join the write's trace.
//! An AppendEntries carrying a traced entry names it in the trailer (tag 2),
//! so the follower remembers that entry alone under the RPC's span: the
//! other entries of the batch belong to other requests, not to this trace.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trailer tag of a trace context, version 1.
pub const TAG_TRACE_CONTEXT_V1: u8 = 1;

/// Bytes of a trace context v1 field's value.
pub const TRACE_CONTEXT_V1_BYTES: usize = 25;

/// The trailer tag of the traced entry of an AppendEntries, version 1.
pub const TAG_TRACED_ENTRY_V1: u8 = 2;

/// Bytes of a traced entry v1 field's value (`proposed_at`, u64 BE).
pub const TRACED_ENTRY_V1_BYTES: usize = 8;

/// Most fields a reader accepts in one trailer (each at most 255 bytes).
pub const MAX_TRAILER_FIELDS: usize = 8;

/// Most proposals whose trace context a node remembers at once; the oldest
/// is forgotten first. At a 1% sampling ratio and 10,000 writes a second
/// that is 10 s of sampled writes, far longer than an entry takes to be
/// replicated and applied.
pub const MAX_REMEMBERED_PROPOSALS: usize = 1024;

/// W3C trace flag bit: the trace is sampled.
const FLAG_SAMPLED: u8 = 0x01;

/// A W3C trace context: which trace, which span in it is the parent, and
/// its flags (bit 0: sampled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id; never all zero.
    pub trace_id: [u8; 16],
    /// The parent span's id; never all zero.
    pub span_id: [u8; 8],
    /// W3C trace flags.
    pub flags: u8,
}

/// Why a frame's trailer could not be read. The frame is refused as
/// malformed; nothing was done with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrailerError {
    /// A field's tag, length or value is cut short.
    #[error("frame trailer: field at byte {0} is truncated")]
    Truncated(usize),
    /// A trace context field of the wrong length.
    #[error("frame trailer: trace context of {0} bytes (expected {TRACE_CONTEXT_V1_BYTES})")]
    TraceContextLength(usize),
    /// A trace or span id of all zeros (invalid in W3C trace context).
    #[error("frame trailer: trace context with an all-zero trace or span id")]
    ZeroId,
    /// A traced entry field of the wrong length.
    #[error("frame trailer: traced entry of {0} bytes (expected {TRACED_ENTRY_V1_BYTES})")]
    TracedEntryLength(usize),
    /// More fields than [`MAX_TRAILER_FIELDS`].
    #[error("frame trailer: more than {MAX_TRAILER_FIELDS} fields")]
    TooManyFields,
}

impl TraceContext {
    /// Whether the trace is sampled (W3C flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// This context as OpenTelemetry's remote parent span context.
    pub fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        )
    }

    /// `sc` as a trace context, if it is valid.
    pub fn from_span_context(sc: &SpanContext) -> Option<TraceContext> {
        sc.is_valid().then(|| TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }
}

/// What a frame's trailer says; both fields `None` is no trailer at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trailer {
    /// The trace the message is part of (tag 1).
    pub context: Option<TraceContext>,
    /// Which entry of an AppendEntries that trace is about, by its
    /// `proposed_at` (tag 2).
    pub entry: Option<u64>,
}

impl Trailer {
    /// Appends the trailer's fields to a frame (nothing when both are `None`).
    pub fn write(&self, frame: &mut Vec<u8>) {
        if let Some(ctx) = &self.context {
            write_trailer(frame, ctx);
        }
        if let Some(entry) = self.entry {
            frame.push(TAG_TRACED_ENTRY_V1);
            // TRACED_ENTRY_V1_BYTES is 8: it fits the u8 length.
            frame.push(TRACED_ENTRY_V1_BYTES as u8);
            frame.extend_from_slice(&entry.to_be_bytes());
        }
    }
}

/// Appends `ctx` as a trailer field to a frame.
pub fn write_trailer(frame: &mut Vec<u8>, ctx: &TraceContext) {
    frame.push(TAG_TRACE_CONTEXT_V1);
    // TRACE_CONTEXT_V1_BYTES is 25: it fits the u8 length.
    frame.push(TRACE_CONTEXT_V1_BYTES as u8);
    frame.extend_from_slice(&ctx.trace_id);
    frame.extend_from_slice(&ctx.span_id);
    frame.push(ctx.flags);
}

/// Reads the trailer after a frame's body (`rest`, empty when there is
/// none). Fields with tags this build does not know are skipped.
pub fn read_trailer(rest: &[u8]) -> Result<Trailer, TrailerError> {
    let mut found = Trailer::default();
    let mut at = 0;
    let mut fields = 0;
    while at < rest.len() {
        fields += 1;
        if fields > MAX_TRAILER_FIELDS {
            return Err(TrailerError::TooManyFields);
        }
        let (&[tag, len], body) = rest[at..]
            .split_first_chunk::<2>()
            .ok_or(TrailerError::Truncated(at))?;
        let len = usize::from(len);
        let value = body.get(..len).ok_or(TrailerError::Truncated(at))?;
        match tag {
            TAG_TRACE_CONTEXT_V1 => found.context = Some(trace_context_v1(value)?),
            TAG_TRACED_ENTRY_V1 => {
                let bytes: [u8; TRACED_ENTRY_V1_BYTES] = value
                    .try_into()
                    .map_err(|_| TrailerError::TracedEntryLength(value.len()))?;
                found.entry = Some(u64::from_be_bytes(bytes));
            }
            _ => {}
        }
        at += 2 + len;
    }
    Ok(found)
}

fn trace_context_v1(value: &[u8]) -> Result<TraceContext, TrailerError> {
    let (trace_id, rest) = value
        .split_first_chunk::<16>()
        .ok_or(TrailerError::TraceContextLength(value.len()))?;
    let (span_id, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(TrailerError::TraceContextLength(value.len()))?;
    let [flags] = rest else {
        return Err(TrailerError::TraceContextLength(value.len()));
    };
    if trace_id == &[0; 16] || span_id == &[0; 8] {
        return Err(TrailerError::ZeroId);
    }
    Ok(TraceContext {
        trace_id: *trace_id,
        span_id: *span_id,
        flags: *flags,
    })
}

/// The current span's trace context, when it is sampled (`None` when export
/// is off, outside a span, or unsampled: only a sampled trace needs its
/// context carried, and only then does a frame carry a trailer).
pub fn current() -> Option<TraceContext> {
    of_span(&tracing::Span::current())
}

/// `span`'s own trace context, when it is exported and sampled.
pub fn of_span(span: &tracing::Span) -> Option<TraceContext> {
    if !export_on() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let span = cx.span();
    let sc = span.span_context();
    TraceContext::from_span_context(sc).filter(TraceContext::sampled)
}

/// Makes `span` a child of `parent`, a context received from another node
/// or recalled for a Raft entry; with `None`, `span` starts a trace of its
/// own (sampled at the node's ratio) instead of joining the span it was
/// opened in: a request opened inside its connection's span would
/// otherwise share one trace, and one sampling decision, with every
/// request on that connection. Call it before the span is first entered.
pub fn set_parent(span: &tracing::Span, parent: Option<TraceContext>) {
    if !export_on() || span.is_disabled() {
        return;
    }
    let cx = match parent {
        Some(p) => opentelemetry::Context::new().with_remote_span_context(p.span_context()),
        None => opentelemetry::Context::new(),
    };
    // Fails only when the span is not exported or already started: then it
    // simply stays where it is.
    let _ = span.set_parent(cx);
}

static EXPORT_ON: AtomicBool = AtomicBool::new(false);

/// The root sampling ratio, as `f64` bits (see [`sample_root`]).
static ROOT_RATIO_BITS: AtomicU64 = AtomicU64::new(0);

/// Records that trace export is on in this process, sampling new traces at
/// `ratio` (by `telemetry::init`): until then every function here returns
/// at once.
pub fn mark_export_on(ratio: f64) {
    ROOT_RATIO_BITS.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    EXPORT_ON.store(true, Ordering::Release);
}

fn export_on() -> bool {
    EXPORT_ON.load(Ordering::Acquire)
}

/// Whether a trace starting here is sampled: true for the configured share
/// of calls while export is on, never while it is off.
///
/// The decision is taken here, before the root span exists, rather than by
/// the OpenTelemetry sampler when the span ends: an unsampled request's
/// spans never reach the OpenTelemetry layer, so they cost a random number
/// and the registry's record of a span, not an OpenTelemetry span
/// (attributes, ids, a sampler call and an end) each.
pub fn sample_root() -> bool {
    if !export_on() {
        return false;
    }
    let ratio = f64::from_bits(ROOT_RATIO_BITS.load(Ordering::Relaxed));
    sampled_at(ratio, rand::random::<f64>)
}

/// Whether a root is sampled at `ratio`, given a uniform draw in [0, 1)
/// (taken only when the ratio leaves a choice).
fn sampled_at(ratio: f64, draw: impl FnOnce() -> f64) -> bool {
    ratio >= 1.0 || (ratio > 0.0 && draw() < ratio)
}

thread_local! {
    /// Set while [`exported`] creates its span.
    static EXPORT_NEXT: Cell<bool> = const { Cell::new(false) };
}

/// Creates the span `make` makes as one that is exported (the telemetry
/// layer's filter admits it: [`export_next`]). For spans of a sampled trace
/// that are not opened inside its current span: [`entry_span`]'s, or one
/// whose explicit `parent:` is an exported span on another thread (the log
/// fsync's). Without export on, just `make()`.
pub fn exported(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if !export_on() {
        return make();
    }
    let before = EXPORT_NEXT.with(|c| c.replace(true));
    let span = make();
    EXPORT_NEXT.with(|c| c.set(before));
    span
}

/// Whether a span being created now was asked for by [`exported`] (read by
/// the telemetry layer's filter, on the creating thread).
pub fn export_next() -> bool {
    EXPORT_NEXT.with(Cell::get)
}

/// The span of work that starts a request, a message or a Raft entry's step
/// on this node: a child of `parent` (a sampled trace received with it, or
/// recalled for the entry) when there is one,
/// else the root of a new trace when [`sample_root`] picks it, else a span
/// the trace exporter never sees (logs still do). It never joins the
/// current span: a node's requests are opened inside their connection's.
pub fn entry_span(
    parent: Option<TraceContext>,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    entry_span_if(parent, true, make)
}

/// The span of an SDK call: a child of the current span when that is in a
/// sampled trace (an application's span around the call), else
/// [`entry_span`] without a parent.
pub fn call_span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if current().is_some() {
        return make();
    }
    entry_span(None, make)
}

/// [`entry_span`], except that without a `parent` a trace starts here only
/// when `may_root` (a message that would start thousands of one-span
/// traces, such as a heartbeat, passes false).
pub fn entry_span_if(
    parent: Option<TraceContext>,
    may_root: bool,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    let parent = parent.filter(TraceContext::sampled);
    let export = match parent {
        Some(_) => export_on(),
        None => may_root && sample_root(),
    };
    if !export {
        return make();
    }
    let span = exported(make);
    set_parent(&span, parent);
    span
}

/// The trace contexts of recent sampled proposals (see the module docs),
/// bounded by [`MAX_REMEMBERED_PROPOSALS`], oldest forgotten first.
///
/// One per process, like the tracing subscriber it serves: the entry's
/// `(range, proposed_at)` is unique among a region's proposals, so nodes
/// sharing a process (tests) do not confuse their entries. A lock rather
/// than an owner task: callers are the Raft tasks' hot paths, which must not
/// wait on a channel round trip, and the lock is taken only while export is
/// on and held for one hash-map operation.
struct Proposals {
    by_entry: HashMap<(u64, u64), TraceContext>,
    order: VecDeque<(u64, u64)>,
}

static PROPOSALS: Mutex<Option<Proposals>> = Mutex::new(None);

/// Remembers the sampled `ctx` of the proposal `(range, proposed_at)`.
pub fn remember(range: u64, proposed_at: u64, ctx: TraceContext) {
    if !ctx.sampled() {
        return;
    }
    let Ok(mut guard) = PROPOSALS.lock() else {
        return;
    };
    let p = guard.get_or_insert_with(|| Proposals {
        by_entry: HashMap::with_capacity(MAX_REMEMBERED_PROPOSALS),
        order: VecDeque::with_capacity(MAX_REMEMBERED_PROPOSALS),
    });
    if p.by_entry.insert((range, proposed_at), ctx).is_none() {
        p.order.push_back((range, proposed_at));
    }
    while p.order.len() > MAX_REMEMBERED_PROPOSALS {
        if let Some(old) = p.order.pop_front() {
            p.by_entry.remove(&old);
        }
    }
}

/// The remembered context of the proposal `(range, proposed_at)`, if any.
pub fn recall(range: u64, proposed_at: u64) -> Option<TraceContext> {
    if !export_on() {
        return None;
    }
    let guard = PROPOSALS.lock().ok()?;
    guard.as_ref()?.by_entry.get(&(range, proposed_at)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TraceContext {
        TraceContext {
            trace_id: [0xab; 16],
            span_id: [0xcd; 8],
            flags: 1,
        }
    }

    /// The trailer's bytes, pinned: a change here breaks every deployed
    /// node that reads it.
    #[test]
    fn frozen_trace_context_trailer() {
        let mut frame = vec![];
        write_trailer(&mut frame, &ctx());
        let mut expected = vec![1, 25];
        expected.extend([0xab; 16]);
        expected.extend([0xcd; 8]);
        expected.push(1);
        assert_eq!(frame, expected);
        assert_eq!(read_trailer(&frame).map(|t| t.context), Ok(Some(ctx())));
        let both = Trailer {
            context: Some(ctx()),
            entry: Some(0x0102_0304_0506_0708),
        };
        let mut frame = vec![];
        both.write(&mut frame);
        expected.extend([2, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(frame, expected);
        assert_eq!(read_trailer(&frame), Ok(both));
    }

    #[test]
    fn no_trailer_is_no_context_and_unknown_fields_are_skipped() {
        assert_eq!(read_trailer(&[]), Ok(Trailer::default()));
        let mut frame = vec![9, 2, 0xff, 0xff];
        write_trailer(&mut frame, &ctx());
        frame.extend([200, 0]);
        assert_eq!(read_trailer(&frame).map(|t| t.context), Ok(Some(ctx())));
        assert_eq!(read_trailer(&[9, 1, 0]), Ok(Trailer::default()));
    }

    #[test]
    fn malformed_trailers_are_refused() {
        assert_eq!(read_trailer(&[0]), Err(TrailerError::Truncated(0)));
        assert_eq!(read_trailer(&[1, 25, 1]), Err(TrailerError::Truncated(0)));
        assert_eq!(
            read_trailer(&[1, 3, 1, 2, 3]),
            Err(TrailerError::TraceContextLength(3))
        );
        let mut zero = vec![];
        write_trailer(
            &mut zero,
            &TraceContext {
                trace_id: [0; 16],
                ..ctx()
            },
        );
        assert_eq!(read_trailer(&zero), Err(TrailerError::ZeroId));
        assert_eq!(
            read_trailer(&[2, 4, 0, 0, 0, 1]),
            Err(TrailerError::TracedEntryLength(4))
        );
        let many: Vec<u8> = [7, 0].repeat(MAX_TRAILER_FIELDS + 1);
        assert_eq!(read_trailer(&many), Err(TrailerError::TooManyFields));
        assert_eq!(
            read_trailer(&[7, 0].repeat(MAX_TRAILER_FIELDS)),
            Ok(Trailer::default())
        );
    }

    #[test]
    fn span_contexts_convert_both_ways() {
        let sc = ctx().span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(TraceContext::from_span_context(&sc), Some(ctx()));
        assert_eq!(
            TraceContext::from_span_context(&SpanContext::empty_context()),
            None
        );
    }

    /// A span given no parent starts its own trace even inside another
    /// span; given one, it joins that trace under that span.
    #[test]
    fn set_parent_roots_or_continues_a_trace() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;

        mark_export_on(1.0);
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let conn = tracing::info_span!("conn");
            let _in_conn = conn.enter();
            let outer = of_span(&conn).unwrap();
            let own = tracing::info_span!("request");
            set_parent(&own, None);
            let own = of_span(&own).unwrap();
            assert_ne!(own.trace_id, outer.trace_id, "a trace of its own");
            let joined = tracing::info_span!("request");
            set_parent(&joined, Some(ctx()));
            let _in_joined = joined.enter();
            let child = tracing::info_span!("child");
            let child = of_span(&child).unwrap();
            assert_eq!(child.trace_id, ctx().trace_id, "the received trace");
            assert_ne!(child.span_id, ctx().span_id);
        });
    }

    #[test]
    fn roots_are_sampled_at_the_ratio() {
        assert!(sampled_at(1.0, || unreachable!("no draw needed")));
        assert!(!sampled_at(0.0, || unreachable!("no draw needed")));
        assert!(sampled_at(0.01, || 0.0099));
        assert!(!sampled_at(0.01, || 0.01));
        let picked = (0..10_000)
            .filter(|i| sampled_at(0.25, || f64::from(*i) / 10_000.0))
            .count();
        assert_eq!(picked, 2_500);
    }

    #[test]
    fn remembered_proposals_are_bounded_oldest_first() {
        mark_export_on(1.0);
        // A range id no other test uses: the table is process-wide.
        let range = u64::MAX - 7;
        for at in 0..(MAX_REMEMBERED_PROPOSALS as u64 + 10) {
            remember(range, at, ctx());
        }
        assert_eq!(recall(range, 0), None, "the oldest is forgotten");
        let last = MAX_REMEMBERED_PROPOSALS as u64 + 9;
        assert_eq!(recall(range, last), Some(ctx()));
        remember(range, last + 1, TraceContext { flags: 0, ..ctx() });
        assert_eq!(recall(range, last + 1), None, "unsampled is not kept");
    }
}
