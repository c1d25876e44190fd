//! MQTT for tests: a Mosquitto broker of each test's own on a free port
//! (queues unbounded: Mosquitto's default drops QoS 1 messages past 1,000
//! queued per session; `$SYS` figures every second), and a publisher that
//! waits for every `PUBACK`. A persistent broker keeps its sessions and
//! their queued messages in a directory of its own over a restart.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `BIDA_TEST_MOSQUITTO` names the binary; else Debian's (in `/usr/sbin`,
/// which a user's `PATH` often lacks), else `mosquitto` on the `PATH`.
fn mosquitto() -> String {
    std::env::var("BIDA_TEST_MOSQUITTO").unwrap_or_else(|_| {
        let debian = "/usr/sbin/mosquitto";
        if std::path::Path::new(debian).exists() {
            debian
        } else {
            "mosquitto"
        }
        .to_string()
    })
}

/// A Mosquitto broker, killed when dropped, and the topic prefix of its test.
pub struct TestBroker {
    child: Child,
    config: std::path::PathBuf,
    /// Where a persistent broker keeps its database; removed when dropped.
    store: Option<std::path::PathBuf>,
    pub port: u16,
    /// Messages go to `<base>/<key>`; a source reads `<base>/#`.
    pub base: String,
}

fn spawn(config: &std::path::Path) -> Child {
    Command::new(mosquitto())
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `{}` ({e}); install mosquitto or set BIDA_TEST_MOSQUITTO",
                mosquitto()
            )
        })
}

impl TestBroker {
    /// A broker keeping everything in memory.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// A broker keeping its sessions (subscriptions, queued and in-flight
    /// QoS 1 messages) and retained messages in a directory of its own: it
    /// writes them when stopped (SIGTERM) and reads them back when started,
    /// so they survive [`Self::restart`].
    pub async fn start_persistent() -> Self {
        Self::launch(true).await
    }

    async fn launch(persistent: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let name = format!("bida-mosquitto-{}", uuid::Uuid::new_v4().simple());
        let config = std::env::temp_dir().join(format!("{name}.conf"));
        let store = persistent.then(|| {
            let store = std::env::temp_dir().join(&name);
            std::fs::create_dir_all(&store).expect("broker store");
            // Run as root, Mosquitto drops to its own user, which writes here.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).expect("broker store");
            store
        });
        let persistence = match &store {
            // The location ends with a separator: Mosquitto appends the file name.
            Some(store) => format!("persistence true\npersistence_location {}/\n", store.display()),
            None => "persistence false\n".to_string(),
        };
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}\
                 max_queued_messages 0\nmax_inflight_messages 0\nsys_interval 1\nlog_dest none\n"
            ),
        )
        .expect("broker config");
        // Owned at once: dropped (killed) if it never answers.
        let broker = Self {
            child: spawn(&config),
            config,
            store,
            port,
            base: format!("bida-test/{}", uuid::Uuid::new_v4().simple()),
        };
        broker.wait_listening().await;
        broker
    }

    async fn wait_listening(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mosquitto did not start on port {}", self.port);
    }

    /// Stops the broker as a service is stopped (SIGTERM: a persistent one
    /// writes its database on the way out), leaves it down for `down`, and
    /// starts it again on the same port and configuration.
    pub async fn restart(&mut self, down: Duration) {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s TERM mosquitto: {status}");
        let exit = self.child.wait().expect("mosquitto stopped");
        assert!(exit.success(), "mosquitto stopped with {exit}");
        tokio::time::sleep(down).await;
        self.child = spawn(&self.config);
        self.wait_listening().await;
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The topic of a message with this key (`<base>/<key>`, `<base>/_` without one).
    pub fn topic(&self, key: Option<&str>) -> String {
        let level: String = key
            .unwrap_or("_")
            .chars()
            .map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c })
            .collect();
        format!("{}/{level}", self.base)
    }

    /// Publishes each message at QoS 1 (its id as correlation data) and
    /// waits until the broker has acknowledged them all.
    pub async fn publish(&self, messages: impl IntoIterator<Item = (String, Option<String>, Vec<u8>)>) {
        self.publish_acknowledged(messages).await;
    }

    /// [`Self::publish`], returning how many messages the broker dropped
    /// for want of a subscriber (MQTT keeps nothing for a subscription that
    /// does not exist yet: Mosquitto acknowledges those with reason 16, no
    /// matching subscribers); panics if it refused any.
    pub async fn publish_to_subscribers(
        &self,
        messages: impl IntoIterator<Item = (String, Option<String>, Vec<u8>)>,
    ) -> usize {
        let reasons = self.publish_acknowledged(messages).await;
        let refused: Vec<_> = reasons
            .iter()
            .filter(|reason| !matches!(reason, PubAckReason::Success | PubAckReason::NoMatchingSubscribers))
            .collect();
        assert!(refused.is_empty(), "MQTT refused messages: {refused:?}");
        reasons
            .iter()
            .filter(|reason| matches!(reason, PubAckReason::NoMatchingSubscribers))
            .count()
    }

    /// Publishes and returns the reason of each `PUBACK`.
    async fn publish_acknowledged(
        &self,
        messages: impl IntoIterator<Item = (String, Option<String>, Vec<u8>)>,
    ) -> Vec<PubAckReason> {
        let mut options = MqttOptions::new(
            format!("publisher-{}", uuid::Uuid::new_v4().simple()),
            "127.0.0.1",
            self.port,
        );
        options.set_max_packet_size(Some(64 * 1024 * 1024));
        let (client, mut events) = AsyncClient::new(options, 1024);
        let messages: Vec<_> = messages.into_iter().collect();
        let count = messages.len();
        let publisher = client.clone();
        let topics: Vec<String> = messages.iter().map(|(_, key, _)| self.topic(key.as_deref())).collect();
        let sending = tokio::spawn(async move {
            for ((id, _, body), topic) in messages.into_iter().zip(topics) {
                let properties = PublishProperties {
                    correlation_data: Some(Bytes::from(id.into_bytes())),
                    ..Default::default()
                };
                publisher
                    .publish_with_properties(topic, QoS::AtLeastOnce, false, body, properties)
                    .await
                    .expect("publish");
            }
        });
        let mut reasons = Vec::with_capacity(count);
        while reasons.len() < count {
            let acknowledged = reasons.len();
            match tokio::time::timeout(Duration::from_secs(30), events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => reasons.push(ack.reason),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("publishing to MQTT: {e}"),
                Err(_) => panic!("{acknowledged} of {count} MQTT messages acknowledged"),
            }
        }
        sending.await.expect("publisher");
        let _ = client.disconnect().await;
        reasons
    }
}

/// A message as a subscriber received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub content_type: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
}

/// A subscriber (QoS 2: messages come at the QoS they were published
/// with) whose messages arrive on a channel.
pub struct Subscriber {
    messages: tokio::sync::mpsc::UnboundedReceiver<Received>,
    driver: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    /// Subscribes to `filter` and returns once the broker confirmed it.
    pub async fn subscribe(&self, filter: &str) -> Subscriber {
        let options = MqttOptions::new(
            format!("subscriber-{}", uuid::Uuid::new_v4().simple()),
            "127.0.0.1",
            self.port,
        );
        let (client, mut events) = AsyncClient::new(options, 64);
        client.subscribe(filter, QoS::ExactlyOnce).await.expect("subscribe");
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("subscribing to MQTT: {e}"),
                Err(_) => panic!("no SUBACK from MQTT in 30 s"),
            }
        }
        let (sender, messages) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let _client = client;
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(Packet::Publish(publish)) = event {
                    let properties = publish.properties.clone().unwrap_or_default();
                    let received = Received {
                        topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                        payload: publish.payload.to_vec(),
                        qos: publish.qos as u8,
                        retain: publish.retain,
                        content_type: properties.content_type,
                        correlation_data: properties.correlation_data.map(|data| data.to_vec()),
                        user_properties: properties.user_properties,
                    };
                    if sender.send(received).is_err() {
                        return;
                    }
                }
            }
        });
        Subscriber { messages, driver }
    }
}

impl Subscriber {
    /// The next `count` messages (panics if they do not come within 30 s).
    pub async fn take(&mut self, count: usize) -> Vec<Received> {
        let mut taken = Vec::with_capacity(count);
        while taken.len() < count {
            let received = tokio::time::timeout(Duration::from_secs(30), self.messages.recv())
                .await
                .unwrap_or_else(|_| panic!("{} of {count} MQTT messages came", taken.len()))
                .expect("the subscriber's connection");
            taken.push(received);
        }
        taken
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}
