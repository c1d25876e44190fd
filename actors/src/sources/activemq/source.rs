//! A queue read over STOMP with individual acknowledgements: each node
//! subscribes (`ack: client-individual`) and the broker hands it at most
//! the prefetch unacknowledged; each message is acknowledged once its
//! outcome is recorded. What a node has not acknowledged when its
//! connection ends (a stop, a kill) goes back to the queue for any node.

use bida_domain::broker::Position;
use bida_domain::consumer::SourceMessage;
use bida_domain::kinds::activemq::{ActivemqConnection, ActivemqSource};
use futures_util::future::BoxFuture;
use std::collections::VecDeque;
use std::sync::Arc;

use super::stomp::{Address, Connection, Frame, Sender};
use crate::sources::{
    clean_text, header_text, Acknowledge, Backlog, BacklogProbe, Client, Incoming, Source, SourceError,
};

/// The header that carries a message's ordering key (as RabbitMQ's and
/// MQTT's of the same name); JMS message groups' otherwise.
const KEY_HEADERS: [&str; 2] = ["bida-key", "JMSXGroupID"];

pub struct ActivemqMessages {
    stomp: Connection,
    connection: ActivemqConnection,
    spec: ActivemqSource,
    /// Messages that came before the subscription's receipt.
    early: VecDeque<Frame>,
}

impl ActivemqMessages {
    pub async fn connect(
        connection: &ActivemqConnection,
        spec: &ActivemqSource,
        client: &Client,
    ) -> Result<Self, SourceError> {
        let mut stomp = Connection::open(&Address::parse(&connection.url)?).await?;
        // What is unacknowledged (at the endpoint and being recorded) is
        // bounded here; the rest waits in the queue.
        let prefetch = client
            .concurrency
            .saturating_add(crate::consumer::pump::RECORDING_WINDOW as u32);
        let mut early = VecDeque::new();
        stomp
            .request(
                Frame::new("SUBSCRIBE")
                    .header("destination", format!("/queue/{}", spec.queue))
                    .header("id", "bida")
                    .header("ack", "client-individual")
                    .header("activemq.prefetchSize", prefetch.to_string()),
                |frame| early.push_back(frame),
            )
            .await?;
        Ok(Self {
            stomp,
            connection: connection.clone(),
            spec: spec.clone(),
            early,
        })
    }
}

/// A message as the pipeline takes it: its id the broker's (kept through
/// redeliveries), its key the `bida-key` or `JMSXGroupID` header.
pub(super) fn source_message(queue: &str, frame: &Frame) -> Result<SourceMessage, SourceError> {
    let id = frame
        .get("message-id")
        .ok_or_else(|| SourceError::Broker("a MESSAGE without a message-id".into()))?;
    Ok(SourceMessage {
        message_id: format!("activemq:{}", clean_text(id.as_bytes())),
        position: Position::destination(queue),
        key: KEY_HEADERS
            .iter()
            .find_map(|name| frame.get(name))
            .map(|key| clean_text(key.as_bytes())),
        body: frame.body.clone(),
        content_type: frame.get("content-type").and_then(|text| header_text(text.as_bytes())),
        traceparent: frame.get("traceparent").map(String::from),
    })
}

/// An `ACK` frame, sent on the consumer's connection. A message let go
/// unacknowledged stays with the connection until it closes, which gives
/// it back to the queue (STOMP's NACK would dead-letter it).
struct ActivemqAck {
    sender: Sender,
    id: String,
}

impl Acknowledge for ActivemqAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        let sent = self.sender.send(Frame::new("ACK").header("id", self.id));
        Box::pin(async move { sent })
    }
}

impl Source for ActivemqMessages {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        loop {
            let frame = match self.early.pop_front() {
                Some(frame) => frame,
                None => self.stomp.next().await?,
            };
            if frame.command != "MESSAGE" {
                continue;
            }
            let id = frame
                .get("ack")
                .ok_or_else(|| SourceError::Broker("a MESSAGE without an ack id".into()))?
                .to_string();
            return Ok(Incoming {
                message: source_message(&self.spec.queue, &frame)?,
                ack: Box::new(ActivemqAck {
                    sender: self.stomp.sender.clone(),
                    id,
                }),
            });
        }
    }

    /// Nothing is read while paused; the prefetch keeps the rest in the queue.
    async fn set_paused(&mut self, _paused: bool) -> Result<(), SourceError> {
        Ok(())
    }

    /// The prefetch is set when subscribing: a new concurrency applies from
    /// the next connection.
    async fn set_prefetch(&mut self, _messages: u32) -> Result<(), SourceError> {
        Ok(())
    }

    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        Arc::new(QueueProbe {
            connection: self.connection.clone(),
            spec: self.spec.clone(),
        })
    }

    /// Disconnects after the acknowledgements already sent: the broker
    /// gives what was not acknowledged back to the queue.
    async fn close(self) {
        self.stomp.close().await;
    }
}

struct QueueProbe {
    connection: ActivemqConnection,
    spec: ActivemqSource,
}

impl BacklogProbe for QueueProbe {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>> {
        Box::pin(super::admin::backlog(&self.connection, &self.spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_the_brokers_id_and_their_key() {
        let frame = Frame::new("MESSAGE")
            .header("message-id", "ID:vm-1-2:3:-1:1:4")
            .header("ack", "ID:vm-1-2:5")
            .header("JMSXGroupID", "order-7")
            .header("content-type", "application/json")
            .body(bytes::Bytes::from_static(b"{}"));
        let message = source_message("orders", &frame).unwrap();
        assert_eq!(message.message_id, "activemq:ID:vm-1-2:3:-1:1:4");
        assert_eq!(message.key.as_deref(), Some("order-7"));
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        let keyed = frame.header("bida-key", "k1");
        assert_eq!(source_message("orders", &keyed).unwrap().key.as_deref(), Some("k1"));
    }
}
