use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::gauges;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector base URL (`http://host:4318`); empty: no export.
    pub otlp_endpoint: String,
    /// How often metrics are pushed over OTLP.
    pub export_interval_ms: u64,
    /// `service.name` of the exported telemetry.
    pub service_name: String,
    /// How often gauges read from the database are refreshed.
    pub sample_interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            export_interval_ms: 10_000,
            service_name: "bida".into(),
            sample_interval_ms: 5_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the Prometheus exporter: {0}")]
    Prometheus(String),
    #[error("cannot set up the OTLP exporter for {endpoint}: {message}")]
    Otlp { endpoint: String, message: String },
}

/// Renders the instruments as Prometheus text.
#[derive(Clone)]
pub struct MetricsText(prometheus::Registry);

impl MetricsText {
    pub fn render(&self) -> String {
        use prometheus::Encoder as _;
        let mut text = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.0.gather(), &mut text) {
            tracing::warn!(error = %e, "cannot render metrics");
        }
        String::from_utf8(text).unwrap_or_default()
    }

    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}

/// The installed providers; shut them down to flush what is pending.
pub struct Telemetry {
    meters: SdkMeterProvider,
    tracer: SdkTracerProvider,
    text: MetricsText,
}

impl Telemetry {
    pub fn metrics_text(&self) -> MetricsText {
        self.text.clone()
    }

    /// Flushes and stops the exporters (call outside any async runtime:
    /// the OTLP client blocks).
    pub fn shutdown(&self) {
        if let Err(e) = self.tracer.shutdown() {
            tracing::debug!(error = %e, "tracer shutdown");
        }
        if let Err(e) = self.meters.shutdown() {
            tracing::debug!(error = %e, "meter shutdown");
        }
    }
}

/// Installs the global meter and tracer providers and the W3C trace-context
/// propagator. Call it once, before any instrument is used and outside any
/// async runtime (the OTLP exporters build blocking HTTP clients).
pub fn install(config: &TelemetryConfig, node_name: &str) -> Result<Telemetry, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", node_name.to_string()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let registry = prometheus::Registry::new();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .without_target_info()
        .build()
        .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
    let mut meters = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(prometheus_reader);
    let mut tracer = SdkTracerProvider::builder().with_resource(resource);
    let endpoint = config.otlp_endpoint.trim_end_matches('/');
    if !endpoint.is_empty() {
        let otlp_error = |message: String| TelemetryError::Otlp {
            endpoint: endpoint.to_string(),
            message,
        };
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/metrics"))
            .with_timeout(Duration::from_secs(10))
            .with_headers(Default::default())
            .build()
            .map_err(|e| otlp_error(e.to_string()))?;
        meters = meters.with_reader(
            PeriodicReader::builder(metric_exporter)
                .with_interval(Duration::from_millis(config.export_interval_ms.max(100)))
                .build(),
        );
        let span_exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| otlp_error(e.to_string()))?;
        tracer = tracer.with_span_processor(BatchSpanProcessor::builder(span_exporter).build());
    }
    crate::spans::set_exported(!endpoint.is_empty());
    let meters = meters.build();
    // Without an exporter the tracer still makes real trace and span ids, so
    // endpoints receive a `traceparent` either way.
    let tracer = tracer.build();
    opentelemetry::global::set_meter_provider(meters.clone());
    opentelemetry::global::set_tracer_provider(tracer.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    gauges::register(&opentelemetry::global::meter("bida"));
    let _ = tracer.tracer("bida");
    Ok(Telemetry {
        meters,
        tracer,
        text: MetricsText(registry),
    })
}
