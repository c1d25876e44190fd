//! A shared subscription read as a stream of messages.
//!
//! Each node connects with a session of its own (`bida-<node>-<consumer>`,
//! kept by the broker for [`SESSION_EXPIRY`] after it goes) and subscribes
//! at QoS 1 to `$share/<group>/<topic>`; the broker hands each message to
//! one member and keeps it in that member's session until acknowledged
//! (`PUBACK`, sent once the outcome is recorded). The receive maximum bounds
//! what is unacknowledged, so the backlog waits in the broker. A node
//! killed and started again gets its unacknowledged messages back from its
//! session. MQTT has no refusal: a message let go unrecorded (a node
//! stopping) is published again to its topic, with its properties, and only
//! then acknowledged, so another member of the group takes it.

use bida_domain::broker::Position;
use bida_domain::consumer::SourceMessage;
use bida_domain::kinds::mqtt::{MqttConnection, MqttSource};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sources::{clean_text, Acknowledge, Backlog, BacklogProbe, Client, Incoming, Source, SourceError};

/// How long the broker keeps a node's session (its unacknowledged messages
/// and its place in the group) after the node goes: a node started again
/// within it gets them back.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// The largest message taken.
const MAX_PACKET: u32 = 64 * 1024 * 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The user property that carries a message's ordering key (as the
/// RabbitMQ header of the same name); the topic otherwise.
const KEY_PROPERTY: &str = "bida-key";

/// Client options for `client_id`, from the broker's URL.
pub(super) fn options(connection: &MqttConnection, client_id: &str) -> Result<MqttOptions, SourceError> {
    let url = url::Url::parse(&connection.url).map_err(|e| SourceError::Connect(e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| SourceError::Connect("the URL names no host".into()))?;
    let mut options = MqttOptions::new(client_id, host, url.port().unwrap_or(1883));
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(Some(MAX_PACKET))
        .set_connection_timeout(10);
    if !url.username().is_empty() {
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        options.set_credentials(decode(url.username()), decode(url.password().unwrap_or("")));
    }
    Ok(options)
}

/// Polls the connection until it ends, handing messages to `messages`; the
/// first error ends it (the source reports it lost, and its next connection
/// takes the session back).
fn drive(mut events: EventLoop, messages: mpsc::UnboundedSender<Result<Publish, SourceError>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if messages.send(Ok(publish)).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                    let _ = messages.send(Err(SourceError::Lost(format!(
                        "the broker disconnected: {:?}",
                        disconnect.reason_code
                    ))));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = messages.send(Err(SourceError::Lost(e.to_string())));
                    return;
                }
            }
        }
    })
}

/// Connects `client_id`, waiting for the broker's answer.
pub(super) async fn connect(options: MqttOptions) -> Result<(AsyncClient, EventLoop), SourceError> {
    let (client, mut events) = AsyncClient::new(options, 1024);
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(SourceError::Connect(e.to_string())),
            }
        }
    })
    .await
    .map_err(|_| SourceError::Connect("no answer within 15 s".into()))??;
    Ok((client, events))
}

pub struct MqttMessages {
    client: AsyncClient,
    spec: MqttSource,
    incoming: mpsc::UnboundedReceiver<Result<Publish, SourceError>>,
    driver: JoinHandle<()>,
    /// Messages handed out and not yet acknowledged, given back on close.
    held: Held,
    /// Messages let go while running, to give back before reading on.
    let_go: Arc<Mutex<Vec<Publish>>>,
}

type Held = Arc<Mutex<std::collections::HashMap<u16, Publish>>>;

impl MqttMessages {
    pub async fn connect(connection: &MqttConnection, spec: &MqttSource, client: &Client) -> Result<Self, SourceError> {
        let mut options = options(connection, &client.id)?;
        // What is unacknowledged (at the endpoint and being recorded) is
        // bounded here; the rest waits in the broker.
        let receive_maximum = client
            .concurrency
            .saturating_add(crate::consumer::pump::RECORDING_WINDOW as u32);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(SESSION_EXPIRY.as_secs() as u32))
            .set_receive_maximum(Some(receive_maximum.min(u16::MAX as u32) as u16))
            .set_manual_acks(true);
        let (mqtt, mut events) = connect(options).await?;
        mqtt.subscribe(format!("$share/{}/{}", spec.group, spec.topic), QoS::AtLeastOnce)
            .await
            .map_err(|e| SourceError::Broker(e.to_string()))?;
        let (sender, incoming) = mpsc::unbounded_channel();
        // Running means subscribed: what is published from then on is ours
        // to take. A resumed session may hand over its messages first.
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let _ = sender.send(Ok(publish));
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        return match ack
                            .return_codes
                            .iter()
                            .find(|code| !matches!(code, SubscribeReasonCode::Success(_)))
                        {
                            Some(refused) => Err(SourceError::Broker(format!(
                                "the broker refused the subscription to {}: {refused:?}",
                                spec.topic
                            ))),
                            None => Ok(()),
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return Err(SourceError::Connect(e.to_string())),
                }
            }
        })
        .await
        .map_err(|_| SourceError::Connect("the subscription was not answered within 15 s".into()))??;
        Ok(Self {
            driver: drive(events, sender),
            client: mqtt,
            spec: spec.clone(),
            incoming,
            held: Held::default(),
            let_go: Arc::default(),
        })
    }
}

/// Publishes each message again to its topic, then acknowledges it: on
/// the same connection, so the broker has the copy before it forgets the
/// original.
async fn give_back(client: &AsyncClient, messages: Vec<Publish>) {
    for message in messages {
        let topic = String::from_utf8_lossy(&message.topic).into_owned();
        let properties = message.properties.clone().map(|p| PublishProperties {
            topic_alias: None,
            subscription_identifiers: Vec::new(),
            ..p
        });
        let published = match properties {
            Some(properties) => {
                client
                    .publish_with_properties(topic, QoS::AtLeastOnce, false, message.payload.clone(), properties)
                    .await
            }
            None => {
                client
                    .publish(topic, QoS::AtLeastOnce, false, message.payload.clone())
                    .await
            }
        };
        if published.is_ok() {
            let _ = client.ack(&message).await;
        }
    }
}

struct MqttAck {
    pkid: u16,
    client: AsyncClient,
    held: Held,
    let_go: Arc<Mutex<Vec<Publish>>>,
}

impl MqttAck {
    fn take(&self) -> Option<Publish> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.pkid)
    }
}

impl Acknowledge for MqttAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        let message = self.take();
        let client = self.client.clone();
        Box::pin(async move {
            match message {
                Some(message) => client.ack(&message).await.map_err(|e| SourceError::Lost(e.to_string())),
                // Given back when the source closed.
                None => Ok(()),
            }
        })
    }
}

/// A message let go unrecorded goes back to the broker before the source
/// reads on (or when it closes).
impl Drop for MqttAck {
    fn drop(&mut self) {
        if let Some(message) = self.take() {
            self.let_go.lock().unwrap_or_else(|p| p.into_inner()).push(message);
        }
    }
}

/// A message as the pipeline takes it: its id from its correlation data, or
/// else a hash of its topic and payload (so a redelivery keeps its id; two
/// identical messages without correlation data share one); its key the
/// `bida-key` user property or the topic.
pub(super) fn source_message(filter: &str, message: &Publish) -> SourceMessage {
    let topic = String::from_utf8_lossy(&message.topic).into_owned();
    let properties = message.properties.as_ref();
    let id = match properties.and_then(|p| p.correlation_data.as_ref()) {
        Some(correlation) => clean_text(correlation),
        None => {
            let mut hash = Sha256::new();
            hash.update(topic.as_bytes());
            hash.update([0]);
            hash.update(&message.payload);
            hash.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let property = |name: &str| {
        properties.and_then(|p| {
            p.user_properties
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        })
    };
    SourceMessage {
        message_id: format!("mqtt:{id}"),
        position: Position::destination(filter),
        key: Some(property(KEY_PROPERTY).unwrap_or_else(|| clean_text(topic.as_bytes()))),
        body: message.payload.clone(),
        content_type: properties.and_then(|p| p.content_type.clone()),
        traceparent: property("traceparent"),
    }
}

impl Source for MqttMessages {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        let let_go: Vec<Publish> = std::mem::take(&mut *self.let_go.lock().unwrap_or_else(|p| p.into_inner()));
        give_back(&self.client, let_go).await;
        let message = match self.incoming.recv().await {
            Some(received) => received?,
            None => return Err(SourceError::Lost("the connection ended".into())),
        };
        let pkid = message.pkid;
        let incoming = source_message(&self.spec.topic, &message);
        // The payload is kept for a give-back; it is shared, not copied.
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(
            pkid,
            Publish {
                payload: Bytes::clone(&message.payload),
                ..message
            },
        );
        Ok(Incoming {
            message: incoming,
            ack: Box::new(MqttAck {
                pkid,
                client: self.client.clone(),
                held: self.held.clone(),
                let_go: self.let_go.clone(),
            }),
        })
    }

    /// Nothing is read while paused; the receive maximum keeps the rest in
    /// the broker.
    async fn set_paused(&mut self, _paused: bool) -> Result<(), SourceError> {
        Ok(())
    }

    /// The receive maximum is set when connecting: a new concurrency applies
    /// from the next connection.
    async fn set_prefetch(&mut self, _messages: u32) -> Result<(), SourceError> {
        Ok(())
    }

    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        Arc::new(NoBacklog)
    }

    /// Gives back what was read and not recorded, and disconnects. The
    /// subscription stays: a node stopped and started again (a restart, a
    /// new release) finds in its session what was published meanwhile,
    /// where an unsubscribed group could drop it.
    async fn close(mut self) {
        let mut back: Vec<Publish> = std::mem::take(&mut *self.let_go.lock().unwrap_or_else(|p| p.into_inner()));
        back.extend(
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
                .map(|(_, m)| m),
        );
        // Received but not handed out: the driver stops at the disconnect.
        while let Ok(Ok(message)) = self.incoming.try_recv() {
            back.push(message);
        }
        give_back(&self.client, back).await;
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.driver).await;
        self.driver.abort();
    }
}

impl Drop for MqttMessages {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// MQTT tells no backlog.
struct NoBacklog;

impl BacklogProbe for NoBacklog {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
