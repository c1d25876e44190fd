//! Telemetry: the OpenTelemetry instruments Bida records (see
//! `docs/metrics.md`), their export (Prometheus text for `/metrics`, OTLP/HTTP
//! when an endpoint is configured) and the span of each delivery attempt.
//!
//! Instruments come from the global meter, so code that records does not
//! carry a handle; before [`install`] they record into nothing.

mod export;
mod gauges;
mod instruments;
mod spans;

pub use export::{install, MetricsText, Telemetry, TelemetryConfig, TelemetryError};
pub use gauges::{cpu_seconds, resident_bytes, set_gauge, Gauge, Point};
pub use instruments::{instruments, Instruments};
pub use opentelemetry::KeyValue;
pub use spans::{spans_exported, AttemptSpan};
