//! JSON log lines with the trace and span ids of the span they were logged
//! in, so an operator goes from a log line to its trace and back.

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

/// Where [`WithTraceIds`] finds the subscriber it formats for. tracing
/// hands a formatter no dispatcher (and `dispatcher::get_default` answers
/// "none" while an event is being dispatched), so the subscriber is put
/// here once built. Weak: the subscriber owns the formatter.
#[derive(Clone, Default)]
pub struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl DispatchSlot {
    /// Records the subscriber built around the formatter (first call wins).
    pub fn set(&self, dispatch: &Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }
}

/// tracing-subscriber's JSON line, plus `trace_id` and `span_id` (lower-case
/// hex, as W3C writes them) when the current span is in a sampled trace.
pub struct WithTraceIds {
    inner: Format<Json>,
    slot: DispatchSlot,
}

impl WithTraceIds {
    /// A formatter that finds its subscriber in `slot`.
    pub fn new(slot: DispatchSlot) -> WithTraceIds {
        WithTraceIds {
            inner: tracing_subscriber::fmt::format().json(),
            slot,
        }
    }

    /// The trace and span id of span `id`, when it is exported and sampled.
    fn ids(&self, id: &tracing::span::Id) -> Option<(String, String)> {
        let dispatch = self.slot.0.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = cx.span();
        let sc = span.span_context();
        (sc.is_valid() && sc.is_sampled())
            .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
    }
}

impl<S> FormatEvent<S, JsonFields> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = ctx.lookup_current().and_then(|s| self.ids(&s.id())) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        // The inner format writes one object and a newline: add the ids as
        // the object's last members.
        let Some(object) = line.trim_end().strip_suffix('}') else {
            return writer.write_str(&line);
        };
        writeln!(
            writer,
            "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects what the fmt layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_in_a_sampled_span_carry_its_trace_and_span_ids() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        // The SDK's default sampler samples every root span.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let slot = DispatchSlot::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(WithTraceIds::new(slot.clone()))
                    .with_writer(move || out.clone()),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let dispatch = Dispatch::new(subscriber);
        slot.set(&dispatch);
        let mut expected = None;
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("traced");
            let sc = crate::trace_context::TraceContext::from_span_context(
                opentelemetry::trace::TraceContextExt::span(
                    &tracing_opentelemetry::OpenTelemetrySpanExt::context(&span),
                )
                .span_context(),
            );
            expected = sc;
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside the span");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        let ctx = expected.unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(lines[1]["trace_id"], hex(&ctx.trace_id), "{text}");
        assert_eq!(lines[1]["span_id"], hex(&ctx.span_id), "{text}");
        assert_eq!(lines[1]["fields"]["answer"], 42, "{text}");
    }
}
