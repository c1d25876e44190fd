//! Writing to RabbitMQ for the API: one connection and confirming channel
//! per broker; a message is written once the broker confirms it, and one
//! that no queue takes (a mandatory publish returned) is reported as such.

use bida_domain::kinds::produce::Outgoing;
use bida_domain::kinds::rabbitmq::{RabbitmqConnection, RabbitmqTarget};
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use std::time::Duration;

use super::source::connect;
use crate::produce::{Landed, Outcome, Produce};
use crate::sources::SourceError;

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RabbitProducer {
    _connection: Connection,
    channel: Channel,
}

impl Produce for RabbitProducer {
    type Connection = RabbitmqConnection;
    type Target = RabbitmqTarget;

    async fn open(connection: &RabbitmqConnection) -> Result<Self, SourceError> {
        let opened = tokio::time::timeout(CONFIRM_TIMEOUT, connect(&connection.url, "bida-produce"))
            .await
            .map_err(|_| SourceError::Connect(format!("no answer from the broker in {CONFIRM_TIMEOUT:?}")))??;
        let channel = opened
            .create_channel()
            .await
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        Ok(Self {
            _connection: opened,
            channel,
        })
    }

    /// Whether the channel can still publish (a broken one is replaced).
    fn usable(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes the messages in their order (the broker keeps it within a
    /// queue), then waits for all their confirms at once.
    async fn write(&self, messages: &[(usize, &Outgoing, &RabbitmqTarget)]) -> Outcome {
        let mut pending = Vec::with_capacity(messages.len());
        for (index, message, target) in messages {
            pending.push((*index, *target, self.publish(message, target).await));
        }
        let confirms = pending.into_iter().map(|(index, target, published)| async move {
            let confirmed = match published {
                Ok(confirm) => Self::confirmed(confirm, target).await,
                Err(e) => Err(e),
            };
            (index, target, confirmed)
        });
        let mut outcome = Outcome::default();
        for (index, target, confirmed) in join_all(confirms).await {
            match confirmed {
                Ok(()) => outcome.wrote(
                    index,
                    Landed::Exchange {
                        exchange: target.exchange.clone(),
                        routing_key: target.routing_key.clone(),
                        confirmed: true,
                    },
                ),
                Err(SourceError::Invalid(reason)) => outcome.refuse(index, "routing_key", reason),
                Err(e) => outcome.fail(index, e),
            }
        }
        outcome
    }
}

impl RabbitProducer {
    async fn publish(&self, message: &Outgoing, target: &RabbitmqTarget) -> Result<PublisherConfirm, SourceError> {
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(name.as_str().into(), AMQPValue::LongString(value.as_str().into()));
        }
        let mut properties = BasicProperties::default()
            .with_content_type(ShortString::from(message.content_type.as_str()))
            .with_headers(headers)
            .with_delivery_mode(if target.persistent { 2 } else { 1 });
        if let Some(id) = &target.message_id {
            properties = properties.with_message_id(id.as_str().into());
        }
        if let Some(id) = &target.correlation_id {
            properties = properties.with_correlation_id(id.as_str().into());
        }
        if let Some(priority) = target.priority {
            properties = properties.with_priority(priority);
        }
        if let Some(ms) = target.expiration_ms {
            properties = properties.with_expiration(ms.to_string().into());
        }
        self.channel
            .basic_publish(
                target.exchange.as_str().into(),
                target.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                properties,
            )
            .await
            .map_err(|e| SourceError::Lost(e.to_string()))
    }

    /// The broker's confirm of one message, or why it was not written.
    async fn confirmed(confirm: PublisherConfirm, target: &RabbitmqTarget) -> Result<(), SourceError> {
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| SourceError::Lost(format!("the broker did not confirm in {CONFIRM_TIMEOUT:?}")))?
            .map_err(|e| SourceError::Lost(e.to_string()))?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(SourceError::Invalid(format!(
                    "no queue took it: exchange `{}` has no binding for routing key `{}` ({} {})",
                    target.exchange, target.routing_key, returned.reply_code, returned.reply_text
                )))
            }
            Confirmation::Nack(None) => Err(SourceError::Lost("the broker refused the message (nack)".into())),
            Confirmation::NotRequested => Err(SourceError::Lost("the broker did not confirm".into())),
        }
    }
}
