//! Writing to NATS JetStream for the API: one client per broker; each
//! message is published with its headers (`Content-Type`, `Nats-Msg-Id`)
//! and written once the stream that takes its subject acknowledged it
//! (stream and sequence). A subject no stream takes is refused naming
//! `subject`.

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bida_domain::kinds::nats::{NatsConnection, NatsTarget};
use bida_domain::kinds::produce::Outgoing;
use futures_util::future::join_all;
use std::str::FromStr;
use std::time::Duration;

use crate::produce::{Landed, Outcome, Produce};
use crate::sources::SourceError;

/// How long a stream may take to acknowledge a message.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct NatsProducer {
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

impl Produce for NatsProducer {
    type Connection = NatsConnection;
    type Target = NatsTarget;

    /// Connects at once or fails: no retrying in the background, where
    /// messages would wait in the client's buffer past the request's answer.
    async fn open(connection: &NatsConnection) -> Result<Self, SourceError> {
        let client = super::source::connect(connection, "bida-produce", async_nats::ConnectOptions::new()).await?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(ACK_TIMEOUT);
        Ok(Self { client, jetstream })
    }

    fn usable(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes the messages in their order, then waits for every
    /// acknowledgement at once.
    async fn write(&self, messages: &[(usize, &Outgoing, &NatsTarget)]) -> Outcome {
        let mut outcome = Outcome::default();
        let mut pending = Vec::with_capacity(messages.len());
        for (index, message, target) in messages {
            let headers = match headers(message, target) {
                Ok(headers) => headers,
                Err(field) => {
                    outcome.refuse(*index, &field, "is not a header NATS takes");
                    continue;
                }
            };
            let published = self
                .jetstream
                .publish_with_headers(target.subject.clone(), headers, message.body.clone())
                .await;
            pending.push((*index, *target, published));
        }
        let acks = pending.into_iter().map(|(index, target, published)| async move {
            let acked = match published {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            (index, target, acked)
        });
        for (index, target, acked) in join_all(acks).await {
            match acked {
                Ok(ack) => outcome.wrote(
                    index,
                    Landed::Stream {
                        subject: target.subject.clone(),
                        stream: ack.stream,
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    },
                ),
                Err(e) => match e.kind() {
                    PublishErrorKind::StreamNotFound => {
                        outcome.refuse(index, "subject", format!("no stream takes subject {}", target.subject))
                    }
                    PublishErrorKind::MaxPayloadExceeded => {
                        outcome.refuse(index, "body", format!("larger than the server takes: {e}"))
                    }
                    _ => outcome.fail(index, SourceError::Lost(e.to_string())),
                },
            }
        }
        outcome
    }
}

/// The message's headers as NATS takes them, or the field of one it does
/// not take (the API lets no control character through: a safeguard).
fn headers(message: &Outgoing, target: &NatsTarget) -> Result<HeaderMap, String> {
    let value = |text: &str, field: &str| HeaderValue::from_str(text).map_err(|_| field.to_string());
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_str("Content-Type").map_err(|_| "content_type".to_string())?,
        value(&message.content_type, "content_type")?,
    );
    for (name, text) in &message.headers {
        let field = format!("headers.{name}");
        let header = HeaderName::from_str(name).map_err(|_| field.clone())?;
        headers.insert(header, value(text, &field)?);
    }
    if let Some(id) = &target.msg_id {
        headers.insert(
            HeaderName::from_str("Nats-Msg-Id").map_err(|_| "msg_id".to_string())?,
            value(id, "msg_id")?,
        );
    }
    Ok(headers)
}
