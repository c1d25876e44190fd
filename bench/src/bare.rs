//! The bare pipe: the smallest at-least-once forwarder from an MQ to an HTTP
//! endpoint, with the crates Bida uses (lapin, rdkafka, async-nats, redis, reqwest) and the same
//! concurrency, but no event store: consume → POST (retried until 2xx) →
//! ack / store the offset (contiguously per partition). It is the ceiling
//! Bida is measured against.

use bida_actors::sources::kafka::OffsetTracker;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

use crate::mq::Mq;

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
    }
}
