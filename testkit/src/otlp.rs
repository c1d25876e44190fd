//! An OTLP/HTTP receiver for tests: accepts `POST /v1/traces` and
//! `/v1/metrics` (protobuf, as OpenTelemetry exporters send them), decodes
//! them and keeps what arrived.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One span as received.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    pub service_name: Option<String>,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// Metric name → the attributes of each data point, as text.
    metrics: HashMap<String, Vec<HashMap<String, String>>>,
}

pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    server: tokio::task::JoinHandle<()>,
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn traces(
    axum::extract::State(received): axum::extract::State<Arc<Mutex<Received>>>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut received = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| text(&r.attributes)).unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.spans.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: text(&span.attributes),
                    service_name: resource.get("service.name").cloned(),
                });
            }
        }
    }
    axum::http::StatusCode::OK
}

async fn metrics(
    axum::extract::State(received): axum::extract::State<Arc<Mutex<Received>>>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let Ok(request) = ExportMetricsServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut received = received.lock().unwrap();
    for resource_metrics in request.resource_metrics {
        for scope in resource_metrics.scope_metrics {
            for metric in scope.metrics {
                let points: Vec<HashMap<String, String>> = match &metric.data {
                    Some(Data::Sum(sum)) => sum.data_points.iter().map(|p| text(&p.attributes)).collect(),
                    Some(Data::Gauge(gauge)) => gauge.data_points.iter().map(|p| text(&p.attributes)).collect(),
                    Some(Data::Histogram(h)) => h.data_points.iter().map(|p| text(&p.attributes)).collect(),
                    _ => Vec::new(),
                };
                received.metrics.entry(metric.name.clone()).or_default().extend(points);
            }
        }
    }
    axum::http::StatusCode::OK
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .route("/v1/metrics", axum::routing::post(metrics))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OTLP receiver");
        let addr = listener.local_addr().expect("OTLP receiver address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, received, server }
    }

    /// The base URL to configure as the OTLP endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Data points received for a metric, by their attributes.
    pub fn metric_points(&self, name: &str) -> Vec<HashMap<String, String>> {
        self.received
            .lock()
            .unwrap()
            .metrics
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
