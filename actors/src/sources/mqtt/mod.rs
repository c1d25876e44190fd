//! MQTT 5 through rumqttc: a shared subscription per consumer (each node a
//! member, with a session of its own), QoS 1 messages acknowledged once
//! their outcomes are recorded. MQTT tells no backlog and keeps no
//! positions: no lag, offset reset or resend.

pub(crate) mod producer;
mod source;

pub use source::{MqttMessages, SESSION_EXPIRY};

use bida_domain::kinds::mqtt::{MqttConnection, MqttSource};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::Event;
use std::time::Duration;

use super::{Backlog, BoxedSource, Client, Destination, Fact, Inspection, Kind, SourceError};

/// The broker figures read from `$SYS` (Mosquitto publishes them retained).
const SYS_FACTS: &[(&str, (&str, &str), &str)] = &[
    ("version", ("Version", "版本"), "$SYS/broker/version"),
    ("clients", ("Clients", "客户端"), "$SYS/broker/clients/connected"),
    (
        "stored",
        ("Messages stored", "存储消息数"),
        "$SYS/broker/messages/stored",
    ),
];

pub struct Mqtt;

impl Kind for Mqtt {
    type Connection = MqttConnection;
    type Source = MqttSource;

    fn open<'a>(
        connection: &'a MqttConnection,
        source: &'a MqttSource,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<BoxedSource, SourceError>> {
        async move {
            Ok(BoxedSource::new(
                MqttMessages::connect(connection, source, client).await?,
            ))
        }
        .boxed()
    }

    /// Connects, reads what the broker tells of itself under `$SYS` (for a
    /// second at most: brokers that do not publish it show no figures), and
    /// lists the topic filters of its consumers (MQTT cannot list topics).
    fn look<'a>(
        connection: &'a MqttConnection,
        known: Vec<&'a MqttSource>,
    ) -> BoxFuture<'a, Result<Inspection, SourceError>> {
        async move {
            let id = format!("bida-look-{}", uuid::Uuid::new_v4().simple());
            let (client, mut events) = source::connect(source::options(connection, &id)?).await?;
            for (_, _, topic) in SYS_FACTS {
                let _ = client.subscribe(*topic, QoS::AtMostOnce).await;
            }
            let mut facts = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while facts.len() < SYS_FACTS.len() {
                let event = tokio::time::timeout_at(deadline, events.poll()).await;
                let Ok(Ok(event)) = event else { break };
                if let Event::Incoming(Packet::Publish(publish)) = event {
                    if let Some((key, label, _)) =
                        SYS_FACTS.iter().find(|(_, _, topic)| topic.as_bytes() == publish.topic)
                    {
                        facts.push(Fact {
                            key,
                            label: *label,
                            value: String::from_utf8_lossy(&publish.payload).into_owned(),
                        });
                    }
                }
            }
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
            let mut filters: Vec<&str> = known.iter().map(|source| source.topic.as_str()).collect();
            filters.sort();
            filters.dedup();
            let mut inspection = Inspection {
                destinations: filters
                    .iter()
                    .map(|filter| Destination {
                        name: filter.to_string(),
                        ..Destination::default()
                    })
                    .collect(),
                facts,
                ..Inspection::default()
            };
            inspection.section("topics", &filters);
            let told: serde_json::Map<String, serde_json::Value> = inspection
                .facts
                .iter()
                .map(|fact| (fact.key.to_string(), fact.value.clone().into()))
                .collect();
            inspection.section("mqtt", told);
            Ok(inspection)
        }
        .boxed()
    }

    fn backlog<'a>(_: &'a MqttConnection, _: &'a MqttSource) -> BoxFuture<'a, Result<Vec<Backlog>, SourceError>> {
        async { Ok(Vec::new()) }.boxed()
    }
}
