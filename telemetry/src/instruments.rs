use opentelemetry::metrics::{Counter, Histogram};
use std::sync::OnceLock;

/// Durations in seconds: the buckets OpenTelemetry's HTTP conventions advise.
const SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The instruments recorded as things happen (gauges are in [`crate::Gauge`]).
pub struct Instruments {
    pub delivery_attempts: Counter<u64>,
    pub http_duration: Histogram<f64>,
    pub rpc_duration: Histogram<f64>,
    pub tasks_submitted: Counter<u64>,
    pub tasks_finished: Counter<u64>,
    pub messages_consumed: Counter<u64>,
    pub topic_messages_expired: Counter<u64>,
    pub topic_messages_missed: Counter<u64>,
    pub events_appended: Counter<u64>,
    pub append_duration: Histogram<f64>,
    pub append_batch_size: Histogram<u64>,
}

/// The instruments, made on first use from the global meter provider
/// (install it first, or they record into nothing).
pub fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("bida");
        Instruments {
            delivery_attempts: meter
                .u64_counter("bida.delivery.attempts")
                .with_unit("{attempt}")
                .with_description("Attempts to deliver to an endpoint, by outcome")
                .build(),
            http_duration: meter
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP client requests to endpoints")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            rpc_duration: meter
                .f64_histogram("rpc.client.duration")
                .with_unit("s")
                .with_description("Duration of gRPC calls to endpoints")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            tasks_submitted: meter
                .u64_counter("bida.tasks.submitted")
                .with_unit("{task}")
                .with_description("Tasks accepted, counted once as the task list folds them")
                .build(),
            tasks_finished: meter
                .u64_counter("bida.tasks.finished")
                .with_unit("{task}")
                .with_description("Tasks delivered or dead-lettered, counted once as the task list folds them")
                .build(),
            messages_consumed: meter
                .u64_counter("messaging.client.consumed.messages")
                .with_unit("{message}")
                .with_description("Messages a consumer took from its broker")
                .build(),
            topic_messages_expired: meter
                .u64_counter("bida.topic.messages.expired")
                .with_unit("{message}")
                .with_description("Messages of built-in topics dropped after their retention (the store's estimate)")
                .build(),
            topic_messages_missed: meter
                .u64_counter("bida.topic.messages.missed")
                .with_unit("{message}")
                .with_description("Messages of built-in topics a subscription missed: they expired before it read them")
                .build(),
            events_appended: meter
                .u64_counter("bida.events.appended")
                .with_unit("{event}")
                .with_description("Events this node appended to the event store")
                .build(),
            append_duration: meter
                .f64_histogram("bida.event_store.append.duration")
                .with_unit("s")
                .with_description("Duration of one group commit")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            append_batch_size: meter
                .u64_histogram("bida.event_store.append.batch_size")
                .with_unit("{event}")
                .with_description("Events per group commit")
                .with_boundaries(vec![
                    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0,
                ])
                .build(),
        }
    })
}
