//! Writing to Kafka for the API: one producer per broker (librdkafka keeps
//! its connections and batches), every record acknowledged by all in-sync
//! replicas before it is reported written.

use bida_domain::kinds::kafka::{KafkaConnection, KafkaTarget};
use bida_domain::kinds::produce::Outgoing;
use futures_util::future::join_all;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

use super::source::client_config;
use crate::produce::{Landed, Outcome, Produce};
use crate::sources::SourceError;

/// How long a record may wait for the brokers before it is reported unwritten.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaProducer(FutureProducer);

impl Produce for KafkaProducer {
    type Connection = KafkaConnection;
    type Target = KafkaTarget;

    async fn open(connection: &KafkaConnection) -> Result<Self, SourceError> {
        let mut config = client_config(&connection.bootstrap_servers, &connection.options);
        config
            .set("acks", "all")
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
            .set("linger.ms", "2");
        config
            .create()
            .map(Self)
            .map_err(|e| SourceError::Connect(e.to_string()))
    }

    /// Writes every message at once; the outcome lists each that was
    /// written, and the first failure.
    async fn write(&self, messages: &[(usize, &Outgoing, &KafkaTarget)]) -> Outcome {
        let sends = messages.iter().map(|(index, message, target)| async move {
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
            headers = headers.insert(Header {
                key: "content-type",
                value: Some(message.content_type.as_bytes()),
            });
            for (name, value) in &message.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record = FutureRecord::<str, [u8]>::to(&target.topic)
                .payload(&message.body[..])
                .headers(headers);
            if let Some(key) = &target.key {
                record = record.key(key.as_str());
            }
            if let Some(partition) = target.partition {
                record = record.partition(partition);
            }
            let sent = self.0.send(record, DELIVERY_TIMEOUT).await;
            (*index, target, sent)
        });
        let mut outcome = Outcome::default();
        for (index, target, sent) in join_all(sends).await {
            match sent {
                Ok(delivery) => outcome.wrote(
                    index,
                    Landed::Partition {
                        topic: target.topic.clone(),
                        partition: delivery.partition,
                        offset: delivery.offset,
                        id: None,
                    },
                ),
                Err((e, _)) => match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                        outcome.refuse(index, "topic", format!("no such topic: {e}"))
                    }
                    Some(RDKafkaErrorCode::UnknownPartition) => {
                        outcome.refuse(index, "partition", format!("no such partition: {e}"))
                    }
                    _ => outcome.fail(index, SourceError::Lost(e.to_string())),
                },
            }
        }
        outcome
    }
}
