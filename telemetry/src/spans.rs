//! The span of one delivery attempt, a child of the message's own trace when
//! it arrived with a `traceparent`, and the `traceparent` to send onwards.
//!
//! Every attempt has a span, exported or not: the endpoint gets a
//! `traceparent` naming it either way. Its attributes are built only when
//! spans are exported (an OTLP endpoint is configured); unexported, they
//! were a dozen string copies per attempt that nothing read.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether spans leave the process (set once by [`crate::install`]).
static EXPORTED: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_exported(exported: bool) {
    EXPORTED.store(exported, Ordering::Relaxed);
}

/// Whether spans are exported, so that their attributes are worth building.
pub fn spans_exported() -> bool {
    EXPORTED.load(Ordering::Relaxed)
}

/// The one header a message's parent trace comes from.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

pub struct AttemptSpan {
    cx: Context,
}

impl AttemptSpan {
    /// Starts the span; `parent` is the `traceparent` the message carried,
    /// if any; `attributes` are asked for only when spans are exported.
    pub fn start(parent: Option<&str>, attributes: impl FnOnce() -> Vec<KeyValue>) -> Self {
        let parent_cx = match parent {
            Some(traceparent) => TraceContextPropagator::new().extract(&Traceparent(traceparent)),
            None => Context::new(),
        };
        let tracer = opentelemetry::global::tracer("bida");
        let mut builder = tracer.span_builder("deliver").with_kind(SpanKind::Client);
        if spans_exported() {
            builder = builder.with_attributes(attributes());
        }
        let span = builder.start_with_context(&tracer, &parent_cx);
        Self {
            cx: parent_cx.with_span(span),
        }
    }

    /// The W3C `traceparent` naming this span, for the request to the endpoint.
    pub fn traceparent(&self) -> Option<String> {
        let span = self.cx.span();
        let context = span.span_context();
        // What `TraceContextPropagator::inject` writes, without its map.
        // Hex written by hand: `format!` cost 2,000 instructions a delivery.
        context.is_valid().then(|| {
            let mut text = String::with_capacity(55);
            text.push_str("00-");
            push_hex(&mut text, &context.trace_id().to_bytes());
            text.push('-');
            push_hex(&mut text, &context.span_id().to_bytes());
            text.push('-');
            push_hex(&mut text, &[context.trace_flags().to_u8()]);
            text
        })
    }

    /// The trace id, as hex.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// Ends the span with the attempt's outcome (`attributes` asked for only
    /// when spans are exported).
    pub fn finish(self, attributes: impl FnOnce() -> Vec<KeyValue>, error: Option<String>) {
        let span = self.cx.span();
        if spans_exported() {
            span.set_attributes(attributes());
        }
        if let Some(error) = error {
            span.set_status(Status::error(error));
        }
        span.end();
    }
}

/// Lowercase hex, as `traceparent` spells its ids.
fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The header is the propagator's own, parent trace and flags kept.
    #[test]
    fn the_traceparent_is_what_the_propagator_would_write() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        opentelemetry::global::set_tracer_provider(provider);
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let span = AttemptSpan::start(Some(parent), Vec::new);
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&span.cx, &mut carrier);
        let ours = span.traceparent().expect("a traceparent");
        assert_eq!(Some(&ours), carrier.get("traceparent"));
        assert!(ours.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{ours}");
        assert!(!ours.contains("b7ad6b7169203331"), "a span of its own: {ours}");
        assert!(ours.ends_with("-01"), "{ours}");
    }
}
