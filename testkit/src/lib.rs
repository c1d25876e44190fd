//! Helpers for Bida's tests and benchmarks.
//!
//! - [`TestDatabase`]: a database of its own per test, dropped afterwards, so
//!   tests run in parallel against the machine's real Postgres.
//! - [`Receiver`]: a real HTTP endpoint whose answers a test scripts (fail the
//!   first N calls, time out, answer the wrong body...) and which records every
//!   request it gets.
//! - [`rabbit::TestQueue`] and [`kafka::KafkaBroker`]: the machine's RabbitMQ
//!   with a queue of the test's own, and a Kafka-protocol broker per test;
//!   [`nats::TestStream`]: a JetStream stream of the test's own;
//!   [`redis::TestStream`]: a Redis stream of the test's own;
//!   [`mqtt::TestBroker`]: a Mosquitto broker of the test's own;
//!   [`activemq::TestQueue`]: the machine's ActiveMQ with a queue of the test's own;
//!   [`rocketmq::TestTopic`]: the machine's RocketMQ with a topic of the test's own.
//! - [`process::Started`]: a machine's service restarted as it was started
//!   (read from `/proc`), for the fault suite.
//! - [`grpc::GrpcReceiver`]: a real gRPC server (`orders.v1.Callbacks`) whose
//!   answers a test scripts, with reflection on or off.
//! - [`otlp::OtlpReceiver`]: a real OTLP/HTTP endpoint that decodes exported spans and metrics.

pub mod activemq;
mod database;
pub mod grpc;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod otlp;
pub mod process;
pub mod rabbit;
mod receiver;
pub mod redis;
pub mod rocketmq;

pub use database::TestDatabase;
pub use receiver::{Hit, Receiver, Reply};

/// Runs `work` to its end on a thread and runtime of its own: for clean-ups
/// in `Drop`, where the caller's runtime may be blocked (a panic unwinding).
pub(crate) fn run_apart<F>(work: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(work());
    })
    .join();
}
