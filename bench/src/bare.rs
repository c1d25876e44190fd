//! The bare pipe: the smallest at-least-once forwarder from an MQ to an HTTP
//! endpoint, with the crates Bida uses (lapin, rdkafka, async-nats, redis,
//! rumqttc, Bida's STOMP client, Bida's RocketMQ source, reqwest) and the same
//! concurrency, but no event store: consume → POST (retried until 2xx) → ack /
//! store the offset (contiguously per partition). It is the ceiling Bida is
//! measured against.

use bida_actors::sources::kafka::OffsetTracker;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

use crate::mq::Mq;

/// The bare pipe's MQTT session: one client id, kept by the broker while the
/// pipe is away, as Bida's nodes' sessions are.
const MQTT_CLIENT_ID: &str = "bida-bench-bare";
const MQTT_SESSION_EXPIRY: Duration = Duration::from_secs(3600);

fn mqtt_options(broker: &bida_testkit::mqtt::TestBroker) -> MqttOptions {
    let mut options = MqttOptions::new(MQTT_CLIENT_ID, "127.0.0.1", broker.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(Some(64 * 1024 * 1024))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(MQTT_SESSION_EXPIRY.as_secs() as u32));
    options
}

/// Makes the broker keep what is produced for the pipe before it starts, where
/// it keeps nothing for a subscriber not there yet (MQTT: the pipe's session
/// subscribes to `$share/bare/<base>/#` at QoS 1, then disconnects, leaving
/// the subscription in the session). Nothing to do for the other kinds: their
/// backlog waits in a queue, stream or topic.
pub async fn subscribe(mq: &Mq) -> anyhow::Result<()> {
    let Mq::Mqtt(broker) = mq else {
        return Ok(());
    };
    let (client, mut events) = AsyncClient::new(mqtt_options(broker), 16);
    client
        .subscribe(format!("$share/bare/{}/#", broker.base), QoS::AtLeastOnce)
        .await?;
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = events.poll().await? {
                if let Some(refused) = ack
                    .return_codes
                    .iter()
                    .find(|code| !matches!(code, SubscribeReasonCode::Success(_)))
                {
                    anyhow::bail!("the broker refused the subscription: {refused:?}");
                }
                return Ok(());
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the MQTT subscription was not answered within 15 s"))??;
    client.disconnect().await?;
    // Until the DISCONNECT is out (the connection then ends).
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(event) = events.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                return;
            }
        }
    })
    .await;
    Ok(())
}

/// POSTs until the endpoint answers 2xx, with a message id for de-duplication.
async fn post(http: &reqwest::Client, url: &str, id: String, body: Vec<u8>) {
    loop {
        match http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .body(body.clone())
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => return,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Forwards from `mq` to `url` until `stop` turns true.
pub async fn forward(mq: &Mq, url: String, concurrency: usize, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let slots = Arc::new(Semaphore::new(concurrency));
    match mq {
        Mq::Rabbit(queue) => {
            let connection = Connection::connect(&bida_testkit::rabbit::url(), ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(concurrency.min(u16::MAX as usize) as u16, BasicQosOptions::default())
                .await?;
            let mut deliveries = channel
                .basic_consume(
                    queue.name.as_str().into(),
                    "bare".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            loop {
                let delivery = tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    next = deliveries.next() => match next {
                        Some(delivery) => delivery?,
                        None => return Ok(()),
                    },
                };
                let permit = slots.clone().acquire_owned().await?;
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move {
                    let id = match delivery.properties.message_id() {
                        Some(id) => format!("bare:{}", id.as_str()),
                        None => format!("bare:tag:{}", delivery.delivery_tag),
                    };
                    post(&http, &url, id, delivery.data.clone()).await;
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                    drop(permit);
                });
            }
        }
        Mq::Kafka(broker, topic, _) => {
            let consumer: StreamConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &broker.bootstrap)
                .set("group.id", format!("bare-{}", uuid::Uuid::new_v4().simple()))
                .set("enable.auto.commit", "true")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "25")
                .create()?;
            consumer.subscribe(&[topic.as_str()])?;
            let consumer = Arc::new(consumer);
            let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
            // One member in a fresh group: every partition is its own from the start.
            let mut assigned = std::collections::HashSet::new();
            loop {
                let message = tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    message = consumer.recv() => message?,
                };
                let (partition, offset) = (message.partition(), message.offset());
                let body = message.payload().unwrap_or_default().to_vec();
                drop(message);
                {
                    let mut tracker = tracker.lock().unwrap();
                    if assigned.insert(partition) {
                        tracker.assign(topic, partition, None, std::time::Instant::now());
                    }
                    tracker.receive(topic, partition, offset, std::time::Instant::now());
                }
                let permit = slots.clone().acquire_owned().await?;
                let (http, url, consumer, tracker, topic) = (
                    http.clone(),
                    url.clone(),
                    consumer.clone(),
                    tracker.clone(),
                    topic.clone(),
                );
                tokio::spawn(async move {
                    post(&http, &url, format!("kafka:{topic}:{partition}:{offset}"), body).await;
                    let next = tracker.lock().unwrap().done(&topic, partition, offset);
                    if let Some(next) = next {
                        let _ = consumer.store_offset(&topic, partition, next - 1);
                    }
                    drop(permit);
                });
            }
        }
        Mq::Nats(stream) => {
            let client = async_nats::connect(bida_testkit::nats::url()).await?;
            let jetstream = async_nats::jetstream::new(client);
            let consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
                .get_stream(&stream.name)
                .await?
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(format!("bare-{}", uuid::Uuid::new_v4().simple())),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.stream().max_messages_per_batch(concurrency).messages().await?;
            loop {
                let message = tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    next = messages.next() => match next {
                        Some(message) => message.map_err(|e| anyhow::anyhow!("{e}"))?,
                        None => return Ok(()),
                    },
                };
                let sequence = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
                let permit = slots.clone().acquire_owned().await?;
                let (http, url, name) = (http.clone(), url.clone(), stream.name.clone());
                tokio::spawn(async move {
                    post(&http, &url, format!("nats:{name}:{sequence}"), message.payload.to_vec()).await;
                    let _ = message.ack().await;
                    drop(permit);
                });
            }
        }
        Mq::Redis(stream) => {
            use redis::AsyncCommands;
            let client = redis::Client::open(bida_testkit::redis::url())?;
            let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
            let mut reader = client.get_multiplexed_async_connection_with_config(&config).await?;
            let acks = client.get_multiplexed_async_connection().await?;
            let group = format!("bare-{}", uuid::Uuid::new_v4().simple());
            let () = reader.xgroup_create_mkstream(&stream.name, &group, "0").await?;
            let options = redis::streams::StreamReadOptions::default()
                .group(&group, "bare")
                .count(concurrency)
                .block(1000);
            let keys = [stream.name.as_str()];
            loop {
                let reply: Option<redis::streams::StreamReadReply> = tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    read = reader.xread_options(&keys, &[">"], &options) => read?,
                };
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    let body: Vec<u8> = entry.get("body").unwrap_or_default();
                    let permit = slots.clone().acquire_owned().await?;
                    let (http, url, mut acks) = (http.clone(), url.clone(), acks.clone());
                    let (name, group) = (stream.name.clone(), group.clone());
                    tokio::spawn(async move {
                        post(&http, &url, format!("redis:{name}:{}", entry.id), body).await;
                        let _: redis::RedisResult<i64> = acks.xack(&name, &group, &[&entry.id]).await;
                        drop(permit);
                    });
                }
            }
        }
        Mq::Mqtt(broker) => {
            // The session [`subscribe`] left, taken back: what was queued in
            // it comes first. At most `concurrency` unacknowledged at a time.
            let mut options = mqtt_options(broker);
            options
                .set_receive_maximum(Some(concurrency.clamp(1, u16::MAX as usize) as u16))
                .set_manual_acks(true);
            let (client, mut events) = AsyncClient::new(options, concurrency + 16);
            // The event loop is driven on its own (it must not wait for a
            // free slot): messages come through a channel.
            let (sender, mut incoming) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            if sender.send(Ok(publish)).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = sender.send(Err(e));
                            return;
                        }
                    }
                }
            });
            let result: anyhow::Result<()> = async {
                loop {
                    let publish = tokio::select! {
                        _ = stop.changed() => return Ok(()),
                        next = incoming.recv() => match next {
                            Some(publish) => publish?,
                            None => return Ok(()),
                        },
                    };
                    let permit = slots.clone().acquire_owned().await?;
                    let (http, url, client) = (http.clone(), url.clone(), client.clone());
                    tokio::spawn(async move {
                        let id = match publish.properties.as_ref().and_then(|p| p.correlation_data.as_ref()) {
                            Some(id) => format!("bare:mqtt:{}", String::from_utf8_lossy(id)),
                            None => format!("bare:mqtt:pkid:{}", publish.pkid),
                        };
                        post(&http, &url, id, publish.payload.to_vec()).await;
                        let _ = client.ack(&publish).await;
                        drop(permit);
                    });
                }
            }
            .await;
            // The broker goes with the phase: no need to leave it cleanly.
            driver.abort();
            result
        }
        Mq::Activemq(queue, _) => {
            use bida_actors::sources::activemq::stomp::{Address, Connection, Frame};
            let mut stomp = Connection::open(&Address::parse(&bida_testkit::activemq::url())?).await?;
            stomp
                .request(
                    Frame::new("SUBSCRIBE")
                        .header("destination", format!("/queue/{}", queue.name))
                        .header("id", "bare")
                        .header("ack", "client-individual")
                        // As Bida's: the broker is not waited for between messages.
                        .header(
                            "activemq.prefetchSize",
                            (concurrency + bida_actors::consumer::pump::RECORDING_WINDOW).to_string(),
                        ),
                    drop,
                )
                .await?;
            loop {
                let frame = tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    frame = stomp.next() => frame?,
                };
                if frame.command != "MESSAGE" {
                    continue;
                }
                let (Some(id), Some(ack)) = (frame.get("message-id"), frame.get("ack")) else {
                    anyhow::bail!("a MESSAGE without its ids");
                };
                let (id, ack) = (format!("activemq:{id}"), ack.to_string());
                let permit = slots.clone().acquire_owned().await?;
                let (http, url, sender) = (http.clone(), url.clone(), stomp.sender.clone());
                tokio::spawn(async move {
                    post(&http, &url, id, frame.body.to_vec()).await;
                    let _ = sender.send(Frame::new("ACK").header("id", ack));
                    drop(permit);
                });
            }
        }
        Mq::Rocketmq(topic, _) => {
            // Bida's own source (its remoting client, rebalance, pullers and
            // contiguous commits), without Bida's recording. The group is the
            // phase's topic's own: each phase has a topic of its own, so it is
            // never Bida's group, and it goes with the topic.
            use bida_actors::sources::rocketmq::RocketmqMessages;
            use bida_actors::sources::{Client, Source};
            use bida_domain::kinds::rocketmq::{RocketmqConnection, RocketmqSource};
            let connection = RocketmqConnection {
                name_server: bida_testkit::rocketmq::name_server(),
            };
            let source = RocketmqSource {
                topic: topic.name.clone(),
                group: topic.group.clone(),
                tags: None,
                start: Default::default(),
            };
            let client = Client {
                id: format!("bida-bench-bare-{}", uuid::Uuid::new_v4().simple()),
                concurrency: concurrency.min(u32::MAX as usize) as u32,
                delivery_timeout: Duration::from_secs(30),
                topic_wakes: Default::default(),
            };
            let mut messages = RocketmqMessages::connect(&connection, &source, &client).await?;
            let result: anyhow::Result<()> = async {
                loop {
                    let incoming = tokio::select! {
                        _ = stop.changed() => return Ok(()),
                        next = messages.next() => next?,
                    };
                    let permit = slots.clone().acquire_owned().await?;
                    let (http, url) = (http.clone(), url.clone());
                    tokio::spawn(async move {
                        let message = incoming.message;
                        post(&http, &url, message.message_id, message.body.to_vec()).await;
                        let _ = incoming.ack.ack().await;
                        drop(permit);
                    });
                }
            }
            .await;
            // Commits what is done and leaves the group.
            messages.close().await;
            result
        }
    }
}
