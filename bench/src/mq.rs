//! The MQ side of a benchmark: a RabbitMQ queue, a NATS JetStream stream, a
//! Redis stream, an ActiveMQ queue or a RocketMQ topic (4 queues) on the
//! machine's broker, a Kafka topic on a tansu broker of the run's own or MQTT
//! topics on a Mosquitto of the run's own (unbounded queues), and a producer
//! that stamps each payload with its send time.

use bida_testkit::activemq::{Publisher as ActivemqPublisher, TestQueue as ActivemqQueue};
use bida_testkit::kafka::KafkaBroker;
use bida_testkit::mqtt::TestBroker as MqttBroker;
use bida_testkit::nats::TestStream;
use bida_testkit::rabbit::{self, TestQueue};
use bida_testkit::redis::TestStream as RedisStream;
use bida_testkit::rocketmq::{Publisher as RocketmqPublisher, TestTopic as RocketmqTopic};
use rdkafka::producer::FutureProducer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long the RocketMQ publisher's connection may have been idle and still
/// be used: the broker closes one idle for 120 s.
const ROCKETMQ_IDLE: Duration = Duration::from_secs(60);

/// One per run: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Mq {
    Rabbit(TestQueue),
    /// One producer for the whole run: a new one per paced tick cost a
    /// connection and a metadata fetch every 100 ms, in the bare pipe's process.
    Kafka(KafkaBroker, String, FutureProducer),
    Nats(TestStream),
    Redis(RedisStream),
    /// Messages go to `<base>/<key>`; consumers read `<base>/#`.
    Mqtt(MqttBroker),
    /// One connection for the whole run, as Kafka's producer.
    Activemq(ActivemqQueue, tokio::sync::Mutex<ActivemqPublisher>),
    /// One connection for the whole run (it waits for the broker's answer to
    /// each message), and when it last sent: the broker closes a connection
    /// idle for 120 s, as it is while the bench builds Bida, so one idle
    /// for [`ROCKETMQ_IDLE`] is replaced before it sends again.
    Rocketmq(RocketmqTopic, tokio::sync::Mutex<(RocketmqPublisher, Instant)>),
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum MqKind {
    Rabbitmq,
    Kafka,
    Nats,
    Redis,
    Mqtt,
    Activemq,
    Rocketmq,
}

impl MqKind {
    pub fn title(self) -> &'static str {
        match self {
            Self::Rabbitmq => "RabbitMQ",
            Self::Kafka => "Kafka",
            Self::Nats => "NATS JetStream",
            Self::Redis => "Redis Streams",
            Self::Mqtt => "MQTT",
            Self::Activemq => "ActiveMQ",
            Self::Rocketmq => "RocketMQ",
        }
    }
}

impl Mq {
    pub async fn start(kind: MqKind, partitions: i32) -> Self {
        match kind {
            MqKind::Rabbitmq => Self::Rabbit(TestQueue::declare().await),
            MqKind::Kafka => {
                let broker = KafkaBroker::start().await;
                broker.create_topic("bench", partitions).await;
                let producer = broker.batching_producer();
                Self::Kafka(broker, "bench".into(), producer)
            }
            MqKind::Nats => Self::Nats(TestStream::create().await),
            MqKind::Redis => Self::Redis(RedisStream::create()),
            MqKind::Mqtt => Self::Mqtt(MqttBroker::start().await),
            MqKind::Activemq => Self::Activemq(
                ActivemqQueue::create(),
                tokio::sync::Mutex::new(ActivemqPublisher::connect().await),
            ),
            MqKind::Rocketmq => {
                let topic = RocketmqTopic::create().await;
                let publisher = RocketmqPublisher::connect(&topic).await;
                Self::Rocketmq(topic, tokio::sync::Mutex::new((publisher, Instant::now())))
            }
        }
    }

    /// Whether the broker keeps nothing for a subscriber that is not there
    /// yet (MQTT: a message published to a topic nobody subscribes to is
    /// dropped): a consumer must subscribe before its backlog is produced,
    /// where the other kinds' backlogs wait in a queue, stream or topic.
    pub fn keeps_nothing_for_absent_subscribers(&self) -> bool {
        matches!(self, Self::Mqtt(_))
    }

    pub fn broker(&self) -> Value {
        match self {
            Self::Rabbit(_) => json!({"name": "bench", "kind": "rabbitmq", "url": rabbit::url()}),
            Self::Kafka(broker, _, _) => {
                json!({"name": "bench", "kind": "kafka", "bootstrap_servers": broker.bootstrap})
            }
            Self::Nats(_) => json!({"name": "bench", "kind": "nats", "url": bida_testkit::nats::url()}),
            Self::Redis(_) => json!({"name": "bench", "kind": "redis", "url": bida_testkit::redis::url()}),
            Self::Mqtt(broker) => json!({"name": "bench", "kind": "mqtt", "url": broker.url()}),
            Self::Activemq(..) => json!({"name": "bench", "kind": "activemq", "url": bida_testkit::activemq::url()}),
            Self::Rocketmq(..) => {
                json!({"name": "bench", "kind": "rocketmq", "name_server": bida_testkit::rocketmq::name_server()})
            }
        }
    }

    pub fn source(&self) -> Value {
        match self {
            Self::Rabbit(queue) => json!({"queue": queue.name}),
            Self::Kafka(_, topic, _) => json!({"topics": [topic], "group": "bench"}),
            Self::Nats(stream) => json!({"stream": stream.name, "durable": "bench"}),
            Self::Redis(stream) => json!({"stream": stream.name, "group": "bench"}),
            Self::Mqtt(broker) => json!({"topic": format!("{}/#", broker.base), "group": "bench"}),
            Self::Activemq(queue, _) => json!({"queue": queue.name}),
            Self::Rocketmq(topic, _) => json!({"topic": topic.name, "group": topic.group}),
        }
    }

    /// Produces messages `first..first + count` of about `size` bytes, each
    /// stamped with its send time on `epoch`'s clock.
    pub async fn produce(&self, first: usize, count: usize, size: usize, epoch: Instant) {
        let padding = "x".repeat(size.saturating_sub(60));
        let payload = |seq: usize| {
            json!({"seq": seq, "sent_at_us": epoch.elapsed().as_micros() as u64, "pad": padding})
                .to_string()
                .into_bytes()
        };
        match self {
            Self::Rabbit(queue) => {
                queue
                    .publish((first..first + count).map(|seq| (Some(format!("b{seq}")), payload(seq))))
                    .await
            }
            Self::Kafka(_, topic, producer) => {
                let records: Vec<(Option<String>, Vec<u8>)> = (first..first + count)
                    .map(|seq| (Some(format!("k{}", seq % 64)), payload(seq)))
                    .collect();
                KafkaBroker::send_all(producer, topic, records).await
            }
            Self::Nats(stream) => {
                stream
                    .publish((first..first + count).map(|seq| (Some(format!("k{}", seq % 64)), payload(seq))))
                    .await
            }
            Self::Redis(stream) => {
                stream
                    .publish((first..first + count).map(|seq| (Some(format!("k{}", seq % 64)), payload(seq))))
                    .await
            }
            // The id as correlation data (Bida's message id), the key as the
            // topic's last level.
            Self::Mqtt(broker) => {
                broker
                    .publish(
                        (first..first + count)
                            .map(|seq| (format!("b{seq}"), Some(format!("k{}", seq % 64)), payload(seq))),
                    )
                    .await
            }
            Self::Activemq(queue, publisher) => {
                let destination = format!("/queue/{}", queue.name);
                let messages = (first..first + count).map(|seq| (Some(format!("k{}", seq % 64)), payload(seq)));
                publisher.lock().await.send(&destination, messages).await
            }
            // The key in KEYS, each key's messages to one queue.
            Self::Rocketmq(topic, publisher) => {
                let mut publisher = publisher.lock().await;
                let (publisher, used) = &mut *publisher;
                if used.elapsed() >= ROCKETMQ_IDLE {
                    *publisher = RocketmqPublisher::connect(topic).await;
                }
                for seq in first..first + count {
                    publisher.send(Some(&format!("k{}", seq % 64)), &payload(seq)).await;
                }
                *used = Instant::now();
            }
        }
    }
}
