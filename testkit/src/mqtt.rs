//! MQTT for tests: a Mosquitto broker of each test's own on a free port
//! (queues unbounded: Mosquitto's default drops QoS 1 messages past 1,000
//! queued per session; `$SYS` figures every second), and a publisher that
//! waits for every `PUBACK`.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
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
    pub port: u16,
    /// Messages go to `<base>/<key>`; a source reads `<base>/#`.
    pub base: String,
}

impl TestBroker {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let config = std::env::temp_dir().join(format!("bida-mosquitto-{}.conf", uuid::Uuid::new_v4().simple()));
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 0\nsys_interval 1\nlog_dest none\n"
            ),
        )
        .expect("broker config");
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}); install mosquitto or set BIDA_TEST_MOSQUITTO",
                    mosquitto()
                )
            });
        // Owned at once: dropped (killed) if it never answers.
        let broker = Self {
            child,
            config,
            port,
            base: format!("bida-test/{}", uuid::Uuid::new_v4().simple()),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return broker;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mosquitto did not start on port {port}");
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
        let mut acknowledged = 0;
        while acknowledged < count {
            match tokio::time::timeout(Duration::from_secs(30), events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acknowledged += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("publishing to MQTT: {e}"),
                Err(_) => panic!("{acknowledged} of {count} MQTT messages acknowledged"),
            }
        }
        sending.await.expect("publisher");
        let _ = client.disconnect().await;
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
