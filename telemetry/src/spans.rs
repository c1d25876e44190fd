//! The span of one delivery attempt, a child of the message's own trace when
//! it arrived with a `traceparent`, and the `traceparent` to send onwards.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;

pub struct AttemptSpan {
    cx: Context,
}

impl AttemptSpan {
    /// Starts the span; `parent` is the `traceparent` the message carried, if any.
    pub fn start(parent: Option<&str>, attributes: Vec<KeyValue>) -> Self {
        let propagator = TraceContextPropagator::new();
        let parent_cx = match parent {
            Some(traceparent) => {
                let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
                propagator.extract(&carrier)
            }
            None => Context::new(),
        };
        let tracer = opentelemetry::global::tracer("bida");
        let span = tracer
            .span_builder("deliver")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent_cx);
        Self {
            cx: parent_cx.with_span(span),
        }
    }

    /// The W3C `traceparent` naming this span, for the request to the endpoint.
    pub fn traceparent(&self) -> Option<String> {
        let mut carrier: HashMap<String, String> = HashMap::new();
        TraceContextPropagator::new().inject_context(&self.cx, &mut carrier);
        carrier.remove("traceparent")
    }

    /// The trace id, as hex.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// Ends the span with the attempt's outcome.
    pub fn finish(self, attributes: Vec<KeyValue>, error: Option<String>) {
        let span = self.cx.span();
        span.set_attributes(attributes);
        if let Some(error) = error {
            span.set_status(Status::error(error));
        }
        span.end();
    }
}
