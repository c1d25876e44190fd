//! Writing to MQTT 5 for the API: one connection per broker (a clean
//! session of its own); a message is written once the broker acknowledged
//! it (`PUBACK` at QoS 1, `PUBCOMP` at QoS 2; at QoS 0 once sent). Its
//! content type goes in the content type property, its headers as user
//! properties, its key as the `bida-key` user property and its id as
//! correlation data, as Bida's MQTT consumers read them.
//!
//! rumqttc tells which packet id a publish got only through the event loop
//! (`Outgoing::Publish(pkid)`, in the order publishes were handed to it),
//! so each publish is handed over together with a waiter, in one order,
//! and the task polling the connection pairs them and settles each waiter
//! with its acknowledgement.

use bida_domain::kinds::mqtt::{MqttConnection, MqttTarget};
use bida_domain::kinds::produce::Outgoing;
use bytes::Bytes;
use futures_util::future::join_all;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubCompReason, PubRecReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use rumqttc::Outgoing as Sent;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::source::{connect, options};
use crate::produce::{Landed, Outcome, Produce};
use crate::sources::SourceError;

/// How long the broker may take to acknowledge a message.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The user property Bida's MQTT consumers take the key from.
const KEY_PROPERTY: &str = "bida-key";

/// Why the broker did not take a message.
enum NotTaken {
    /// For what the message says (its topic): refused naming `topic`.
    Refused(String),
    Lost(SourceError),
}

type Settled = Result<(), NotTaken>;

/// A publish waiting for its packet id, then for its acknowledgement.
struct Waiter {
    qos: QoS,
    done: oneshot::Sender<Settled>,
}

pub struct MqttProducer {
    client: AsyncClient,
    /// Waiters, in the order their publishes were handed to the client.
    waiters: mpsc::UnboundedSender<Waiter>,
    /// Held while a publish and its waiter are handed over, so that both
    /// queues keep one order.
    handing: tokio::sync::Mutex<()>,
    alive: Arc<AtomicBool>,
    driver: JoinHandle<()>,
}

impl Drop for MqttProducer {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Produce for MqttProducer {
    type Connection = MqttConnection;
    type Target = MqttTarget;

    async fn open(connection: &MqttConnection) -> Result<Self, SourceError> {
        let id = format!("bida-produce-{}", uuid::Uuid::new_v4().simple());
        let mut options = options(connection, &id)?;
        options.set_clean_start(true);
        let (client, events) = connect(options).await?;
        let (waiters, waiting) = mpsc::unbounded_channel();
        let alive = Arc::new(AtomicBool::new(true));
        Ok(Self {
            client,
            waiters,
            handing: tokio::sync::Mutex::new(()),
            driver: tokio::spawn(drive(events, waiting, alive.clone())),
            alive,
        })
    }

    fn usable(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Publishes the messages in their order, then waits for every
    /// acknowledgement at once.
    async fn write(&self, messages: &[(usize, &Outgoing, &MqttTarget)]) -> Outcome {
        let mut pending = Vec::with_capacity(messages.len());
        for (index, message, target) in messages {
            pending.push((*index, *target, self.publish(message, target).await));
        }
        let acks = pending.into_iter().map(|(index, target, published)| async move {
            let settled = match published {
                Ok(settled) => match tokio::time::timeout(ACK_TIMEOUT, settled).await {
                    Ok(Ok(settled)) => settled,
                    Ok(Err(_)) => Err(NotTaken::Lost(SourceError::Lost("the connection ended".into()))),
                    Err(_) => Err(NotTaken::Lost(SourceError::Lost(format!(
                        "the broker did not acknowledge in {ACK_TIMEOUT:?}"
                    )))),
                },
                Err(e) => Err(NotTaken::Lost(e)),
            };
            (index, target, settled)
        });
        let mut outcome = Outcome::default();
        for (index, target, settled) in join_all(acks).await {
            match settled {
                Ok(()) => outcome.wrote(
                    index,
                    Landed::Topic {
                        topic: target.topic.clone(),
                        qos: target.qos,
                        confirmed: target.qos > 0,
                    },
                ),
                Err(NotTaken::Refused(reason)) => outcome.refuse(index, "topic", reason),
                Err(NotTaken::Lost(e)) => {
                    self.alive.store(false, Ordering::Relaxed);
                    outcome.fail(index, e)
                }
            }
        }
        outcome
    }
}

impl MqttProducer {
    /// Hands one publish to the client with its waiter.
    async fn publish(
        &self,
        message: &Outgoing,
        target: &MqttTarget,
    ) -> Result<oneshot::Receiver<Settled>, SourceError> {
        let qos = match target.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        };
        let mut user_properties: Vec<(String, String)> = message
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        if let Some(key) = &target.key {
            user_properties.push((KEY_PROPERTY.to_string(), key.clone()));
        }
        let properties = PublishProperties {
            content_type: Some(message.content_type.clone()),
            correlation_data: target
                .message_id
                .as_ref()
                .map(|id| Bytes::from(id.clone().into_bytes())),
            message_expiry_interval: target.expiry_seconds,
            user_properties,
            ..PublishProperties::default()
        };
        let (done, settled) = oneshot::channel();
        let _handing = self.handing.lock().await;
        self.waiters
            .send(Waiter { qos, done })
            .map_err(|_| SourceError::Lost("the connection ended".into()))?;
        self.client
            .publish_with_properties(
                target.topic.clone(),
                qos,
                target.retain,
                message.body.clone(),
                properties,
            )
            .await
            .map_err(|e| {
                // Its waiter is queued without a publish: the pairing is lost.
                self.alive.store(false, Ordering::Relaxed);
                SourceError::Lost(e.to_string())
            })?;
        Ok(settled)
    }
}

/// Polls the connection, pairing each publish with its waiter and settling
/// the waiter with the broker's acknowledgement; the first error ends it
/// (and settles every waiter as lost).
async fn drive(mut events: EventLoop, mut waiters: mpsc::UnboundedReceiver<Waiter>, alive: Arc<AtomicBool>) {
    // Waiting for their acknowledgements, by packet id: a collision (an id
    // still in flight) queues the next publish behind it.
    let mut in_flight: HashMap<u16, VecDeque<Waiter>> = HashMap::new();
    // Ids of publishes that collided: their `Outgoing::Publish` comes later
    // and was already paired.
    let mut collided: HashSet<u16> = HashSet::new();
    let settle = |in_flight: &mut HashMap<u16, VecDeque<Waiter>>, pkid: u16, settled: Settled| {
        if let Some(waiter) = in_flight.get_mut(&pkid).and_then(VecDeque::pop_front) {
            let _ = waiter.done.send(settled);
        }
    };
    let ended = loop {
        match events.poll().await {
            Ok(Event::Outgoing(Sent::Publish(pkid))) => {
                if collided.remove(&pkid) {
                    continue;
                }
                let Ok(waiter) = waiters.try_recv() else { continue };
                if waiter.qos == QoS::AtMostOnce {
                    let _ = waiter.done.send(Ok(()));
                } else {
                    in_flight.entry(pkid).or_default().push_back(waiter);
                }
            }
            Ok(Event::Outgoing(Sent::AwaitAck(pkid))) => {
                if let Ok(waiter) = waiters.try_recv() {
                    collided.insert(pkid);
                    in_flight.entry(pkid).or_default().push_back(waiter);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let settled = match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                    PubAckReason::NotAuthorized | PubAckReason::TopicNameInvalid => {
                        Err(NotTaken::Refused(format!("the broker refused it: {:?}", ack.reason)))
                    }
                    other => Err(NotTaken::Lost(SourceError::Broker(format!(
                        "the broker did not take it: {other:?}"
                    )))),
                };
                settle(&mut in_flight, ack.pkid, settled);
            }
            Ok(Event::Incoming(Packet::PubRec(rec))) => {
                let refused = match rec.reason {
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers => None,
                    PubRecReason::NotAuthorized | PubRecReason::TopicNameInvalid => {
                        Some(NotTaken::Refused(format!("the broker refused it: {:?}", rec.reason)))
                    }
                    other => Some(NotTaken::Lost(SourceError::Broker(format!(
                        "the broker did not take it: {other:?}"
                    )))),
                };
                if let Some(refused) = refused {
                    settle(&mut in_flight, rec.pkid, Err(refused));
                }
            }
            Ok(Event::Incoming(Packet::PubComp(comp))) => {
                let settled = match comp.reason {
                    PubCompReason::Success => Ok(()),
                    other => Err(NotTaken::Lost(SourceError::Broker(format!(
                        "the broker did not complete it: {other:?}"
                    )))),
                };
                settle(&mut in_flight, comp.pkid, settled);
            }
            Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                break format!("the broker disconnected: {:?}", disconnect.reason_code);
            }
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
    };
    alive.store(false, Ordering::Relaxed);
    let lost = || Err(NotTaken::Lost(SourceError::Lost(ended.clone())));
    for waiter in in_flight.into_values().flatten() {
        let _ = waiter.done.send(lost());
    }
    waiters.close();
    while let Ok(waiter) = waiters.try_recv() {
        let _ = waiter.done.send(lost());
    }
}
