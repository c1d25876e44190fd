//! Failure notifications: when tasks are dead-lettered, when a consumer keeps
//! crashing, when a key lane is parked, when a source breaks the broker's
//! promises (skipped offsets, a stalled partition), POST to every configured webhook
//! (generic JSON, DingTalk or WeCom robots).
//!
//! The notifier follows the event feed from a checkpoint, so a notification is
//! sent at least once even if the node dies right after the dead letter; one
//! node at a time sends them (advisory-lock leadership). Dead letters read
//! together go out as one digest, so a burst does not flood a chat group.

use crate::egress::EgressGuard;
use bida_domain::consumer::{Consumer, ConsumerEvent, SourceAnomaly};
use bida_domain::task::TaskDetail;
use bida_store::{FeedRead, LoadedTask, Store, StoreError, TASK_TYPE};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

use crate::{NotifyConfig, NotifyFormat, NotifyWebhook};

const CHECKPOINT: &str = "notifier";
const PAGE: i64 = 500;
/// Tasks described one by one in a chat message; the rest are counted.
const CHAT_LINES: usize = 10;

/// What a notification says about one dead letter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    pub task_id: String,
    pub message_id: String,
    pub method: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_app: Option<String>,
    pub attempts: u32,
    pub reason: String,
    pub dead_at: chrono::DateTime<chrono::Utc>,
}

/// Something an operator should hear about.
#[derive(Clone, Debug, PartialEq)]
pub enum Alert {
    DeadLetters(Vec<DeadLetter>),
    /// A consumer crashed several times in a row on a node.
    ConsumerCrashing {
        consumer_id: String,
        name: String,
        node: String,
        error: String,
        consecutive: u32,
    },
    /// Ordering by key: a key's lane stopped after a message used up its attempts.
    LaneParked {
        consumer_id: String,
        name: String,
        key: String,
        task_id: String,
    },
    /// A node saw its source skip offsets, go back, or stop moving.
    SourceAnomaly {
        consumer_id: String,
        name: String,
        node: String,
        anomaly: SourceAnomaly,
    },
}

/// A webhook URL without its query, user or password, for logs.
fn shown_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(url) => format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.path()
        ),
        Err(_) => "(unparsable URL)".into(),
    }
}

/// Crashes in a row worth telling: the third, then every tenth.
fn worth_telling(consecutive: u32) -> bool {
    consecutive == 3 || (consecutive > 3 && consecutive.is_multiple_of(10))
}

const WATCHED: [&str; 4] = [
    "TaskDeadLettered",
    "ConsumerCrashed",
    "LaneParked",
    "SourceAnomalyRecorded",
];

/// Runs until the process ends: waits for leadership, then notifies.
pub fn spawn(
    store: Store,
    config: NotifyConfig,
    node_name: String,
    egress: EgressGuard,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .dns_resolver(egress.resolver())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.timeout_ms))
            .no_proxy()
            .build()
        {
            Ok(client) => client,
            Err(e) => return tracing::error!(error = %e, "notifier cannot start"),
        };
        let notifier = Notifier {
            store,
            config,
            client,
            node_name,
            egress,
        };
        let mut singleton = notifier.store.singleton(CHECKPOINT);
        loop {
            match singleton.lead().await {
                Ok(true) => {
                    tracing::info!("this node sends failure notifications");
                    if let Err(e) = notifier.lead(&mut singleton).await {
                        tracing::warn!(error = %e, "notifier interrupted");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "notifier cannot reach the store"),
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}

struct Notifier {
    store: Store,
    config: NotifyConfig,
    client: reqwest::Client,
    node_name: String,
    egress: EgressGuard,
}

impl Notifier {
    async fn lead(&self, leadership: &mut bida_store::Singleton) -> Result<(), StoreError> {
        // Enabling notifications later must not replay the whole history.
        let mut at = match self.store.saved_checkpoint(CHECKPOINT).await? {
            Some(at) => at,
            None => {
                let head = self.store.feed_head().await?;
                self.store.save_checkpoint(CHECKPOINT, head).await?;
                head
            }
        };
        let read = FeedRead {
            payload_types: Some(&WATCHED),
            without: &[],
        };
        while leadership.lead().await? {
            let page = self.store.read_feed(at, PAGE, read).await?;
            let Some(last) = page.last().map(|e| e.feed_position()) else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let dead_letters: Vec<(&str, i64)> = page
                .iter()
                .filter(|e| e.aggregate_type == TASK_TYPE && e.event_type == "TaskDeadLettered")
                .map(|e| (e.aggregate_id.as_str(), e.sequence))
                .collect();
            let mut alerts = Vec::new();
            if !dead_letters.is_empty() {
                let dead = self.describe(&dead_letters).await?;
                if !dead.is_empty() {
                    alerts.push(Alert::DeadLetters(dead));
                }
            }
            for event in page.iter().filter(|e| e.aggregate_type == "consumer") {
                match event.decode::<ConsumerEvent>() {
                    Ok(consumer_event) => {
                        if let Some(alert) = self.consumer_alert(&event.aggregate_id, consumer_event).await? {
                            alerts.push(alert);
                        }
                    }
                    Err(e) if WATCHED.contains(&event.event_type.as_str()) => {
                        tracing::error!(error = %e, "cannot read a consumer event for notifications")
                    }
                    Err(_) => {}
                }
            }
            for alert in &alerts {
                self.notify(alert).await;
            }
            self.store.save_checkpoint(CHECKPOINT, last).await?;
            at = last;
        }
        Ok(())
    }

    async fn consumer_alert(&self, consumer_id: &str, event: ConsumerEvent) -> Result<Option<Alert>, StoreError> {
        let name = || async {
            self.store.load_aggregate::<Consumer>(consumer_id).await.map(|c| {
                c.and_then(|(c, _)| c.spec().map(|s| s.name.clone()))
                    .unwrap_or_default()
            })
        };
        Ok(match event {
            ConsumerEvent::ConsumerCrashed {
                node,
                error,
                consecutive,
                ..
            } if worth_telling(consecutive) => Some(Alert::ConsumerCrashing {
                consumer_id: consumer_id.to_string(),
                name: name().await?,
                node,
                error,
                consecutive,
            }),
            ConsumerEvent::LaneParked { key, task_id, .. } => Some(Alert::LaneParked {
                consumer_id: consumer_id.to_string(),
                name: name().await?,
                key,
                task_id,
            }),
            ConsumerEvent::SourceAnomalyRecorded { node, anomaly, .. } => Some(Alert::SourceAnomaly {
                consumer_id: consumer_id.to_string(),
                name: name().await?,
                node,
                anomaly,
            }),
            _ => None,
        })
    }

    /// Each task as it stood when it was dead-lettered.
    async fn describe(&self, dead_letters: &[(&str, i64)]) -> Result<Vec<DeadLetter>, StoreError> {
        let ids: Vec<String> = dead_letters.iter().map(|(id, _)| id.to_string()).collect();
        let batch = self.store.load_tasks(&ids).await?;
        for (id, e) in &batch.unreadable {
            tracing::error!(task = %id, error = %e, "cannot describe a dead letter; it is left out of the notification");
        }
        let tasks: HashMap<&str, &LoadedTask> = batch.loaded.iter().map(|t| (t.id.as_str(), t)).collect();
        let mut dead = Vec::with_capacity(dead_letters.len());
        for (id, sequence) in dead_letters {
            let Some(task) = tasks.get(id) else { continue };
            let upto = &task.events[..(*sequence as usize).min(task.events.len())];
            if let Some(detail) = TaskDetail::fold(id, upto) {
                let summary = detail.summary;
                dead.push(DeadLetter {
                    task_id: summary.id,
                    message_id: summary.message_id,
                    method: summary.method.to_string(),
                    url: summary.url,
                    source_app: summary.source_app,
                    target_app: summary.target_app,
                    attempts: summary.attempt_count,
                    reason: summary.reason.unwrap_or_default(),
                    dead_at: summary.finished_at.unwrap_or(summary.updated_at),
                });
            }
        }
        Ok(dead)
    }

    async fn notify(&self, alert: &Alert) {
        for webhook in &self.config.webhooks {
            let message = render(webhook.format, alert, &self.node_name);
            self.post(webhook, &message).await;
        }
    }

    /// Tries a few times, then gives up with an error in the log: a broken
    /// notification channel must not hold back later notifications.
    async fn post(&self, webhook: &NotifyWebhook, message: &Value) {
        let attempts = self.config.attempts.max(1);
        // Robot URLs carry their token (DingTalk's `access_token`, WeCom's
        // `key`): logs name the host and path only.
        let shown = shown_url(&webhook.url);
        for attempt in 1..=attempts {
            let literal = url::Url::parse(&webhook.url).map(|url| self.egress.check_url(&url));
            if let Ok(Err(blocked)) = literal {
                return tracing::error!(url = %shown, error = %blocked, "failure notification not sent");
            }
            let outcome = match self.client.post(&webhook.url).json(message).send().await {
                Ok(response) if response.status().is_success() => match webhook.format {
                    NotifyFormat::Generic => Ok(()),
                    // Chat robots answer 200 with an error code in the body.
                    NotifyFormat::Dingtalk | NotifyFormat::Wecom => robot_verdict(response.json::<Value>().await.ok()),
                },
                Ok(response) => Err(format!("HTTP {}", response.status())),
                Err(e) => Err(e.without_url().to_string()),
            };
            match outcome {
                Ok(()) => return,
                Err(e) if attempt < attempts => {
                    tracing::warn!(url = %shown, attempt, error = %e, "failure notification not accepted; retrying");
                    tokio::time::sleep(Duration::from_millis(500 << attempt.min(6))).await;
                }
                Err(e) => {
                    tracing::error!(url = %shown, error = %e, "failure notification dropped after {attempts} attempts")
                }
            }
        }
    }
}

fn robot_verdict(body: Option<Value>) -> Result<(), String> {
    match body.as_ref().and_then(|b| b.get("errcode")).and_then(Value::as_i64) {
        None | Some(0) => Ok(()),
        Some(code) => Err(format!(
            "robot answered errcode {code}: {}",
            body.as_ref()
                .and_then(|b| b.get("errmsg"))
                .and_then(Value::as_str)
                .unwrap_or("")
        )),
    }
}

/// The message body for one webhook format.
pub fn render(format: NotifyFormat, alert: &Alert, node: &str) -> Value {
    let (title, generic) = match alert {
        Alert::DeadLetters(dead) => (
            format!("Bida: {} task(s) dead-lettered", dead.len()),
            json!({"type": "bida.tasks.dead_lettered", "node": node, "count": dead.len(), "tasks": dead}),
        ),
        Alert::ConsumerCrashing {
            consumer_id,
            name,
            node: where_,
            error,
            consecutive,
        } => (
            format!("Bida: consumer {name} crashed {consecutive} times in a row"),
            json!({"type": "bida.consumer.crashing", "node": node, "consumer_id": consumer_id, "consumer": name,
                   "crashed_on": where_, "consecutive": consecutive, "error": error}),
        ),
        Alert::LaneParked {
            consumer_id,
            name,
            key,
            task_id,
        } => (
            format!("Bida: consumer {name} parked the lane of key {key}"),
            json!({"type": "bida.consumer.lane_parked", "node": node, "consumer_id": consumer_id, "consumer": name,
                   "key": key, "task_id": task_id}),
        ),
        Alert::SourceAnomaly {
            consumer_id,
            name,
            node: seen_on,
            anomaly,
        } => (
            format!("Bida: consumer {name}: {}", anomaly.describe()),
            json!({"type": "bida.consumer.source_anomaly", "node": node, "consumer_id": consumer_id, "consumer": name,
                   "seen_on": seen_on, "anomaly": anomaly}),
        ),
    };
    match format {
        NotifyFormat::Generic => generic,
        NotifyFormat::Dingtalk => json!({
            "msgtype": "markdown",
            "markdown": { "title": title, "text": markdown(&title, alert) },
        }),
        NotifyFormat::Wecom => json!({
            "msgtype": "markdown",
            "markdown": { "content": markdown(&title, alert) },
        }),
    }
}

fn markdown(title: &str, alert: &Alert) -> String {
    let mut text = format!("### {title}\n");
    match alert {
        Alert::DeadLetters(dead) => {
            for letter in dead.iter().take(CHAT_LINES) {
                let apps = match (&letter.source_app, &letter.target_app) {
                    (None, None) => String::new(),
                    (source, target) => format!(
                        " ({} → {})",
                        source.as_deref().unwrap_or("?"),
                        target.as_deref().unwrap_or("?")
                    ),
                };
                text.push_str(&format!(
                    "- `{}` {} {}{apps}: {} after {} attempt(s)\n",
                    letter.task_id, letter.method, letter.url, letter.reason, letter.attempts
                ));
            }
            if dead.len() > CHAT_LINES {
                text.push_str(&format!("- … and {} more\n", dead.len() - CHAT_LINES));
            }
        }
        Alert::ConsumerCrashing {
            consumer_id,
            node,
            error,
            ..
        } => {
            text.push_str(&format!(
                "- consumer `{consumer_id}` on node {node}\n- last error: {error}\n"
            ));
        }
        Alert::LaneParked {
            consumer_id,
            key,
            task_id,
            ..
        } => {
            text.push_str(&format!(
                "- consumer `{consumer_id}`, key `{key}`: task `{task_id}` used up its attempts\n\
                 - later messages with this key wait; replay the lane once the endpoint is fixed\n"
            ));
        }
        Alert::SourceAnomaly { consumer_id, node, .. } => {
            text.push_str(&format!(
                "- consumer `{consumer_id}`, seen on node {node}\n\
                 - check the broker: the consumer's status lists the anomalies\n"
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_tokens_stay_out_of_logs() {
        let shown = shown_url("https://oapi.dingtalk.com/robot/send?access_token=s3cr3t");
        assert_eq!(shown, "https://oapi.dingtalk.com/robot/send");
        assert!(!shown_url("https://u:pw@h/x?key=k").contains("pw"));
    }

    fn letter(n: u32) -> DeadLetter {
        DeadLetter {
            task_id: format!("t{n}"),
            message_id: format!("t{n}"),
            method: "POST".into(),
            url: "http://h/cb".into(),
            source_app: Some("orders".into()),
            target_app: None,
            attempts: 3,
            reason: "HTTP 500".into(),
            dead_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn chat_digests_list_ten_and_count_the_rest() {
        let dead = Alert::DeadLetters((0..12).map(letter).collect());
        let ding = render(NotifyFormat::Dingtalk, &dead, "n1");
        let text = ding["markdown"]["text"].as_str().unwrap();
        assert_eq!(ding["msgtype"], "markdown");
        assert!(text.starts_with("### Bida: 12 task(s) dead-lettered"));
        assert!(text.contains("`t9` POST http://h/cb (orders → ?): HTTP 500 after 3 attempt(s)"));
        assert!(!text.contains("`t10`"));
        assert!(text.contains("… and 2 more"));
        let wecom = render(NotifyFormat::Wecom, &dead, "n1");
        assert_eq!(wecom["markdown"]["content"].as_str().unwrap(), text);
        let generic = render(NotifyFormat::Generic, &dead, "n1");
        assert_eq!(generic["count"], 12);
        assert_eq!(generic["tasks"].as_array().unwrap().len(), 12);
    }

    #[test]
    fn consumer_alerts_say_what_and_where() {
        let crash = Alert::ConsumerCrashing {
            consumer_id: "c1".into(),
            name: "orders".into(),
            node: "n2".into(),
            error: "NOT_FOUND - no queue 'x'".into(),
            consecutive: 3,
        };
        let generic = render(NotifyFormat::Generic, &crash, "n1");
        assert_eq!(generic["type"], "bida.consumer.crashing");
        assert_eq!(generic["consecutive"], 3);
        let wecom = render(NotifyFormat::Wecom, &crash, "n1");
        assert!(wecom["markdown"]["content"].as_str().unwrap().contains("NOT_FOUND"));
        assert!(worth_telling(3) && worth_telling(20) && !worth_telling(4) && !worth_telling(1));
    }

    #[test]
    fn anomaly_alerts_name_the_partition_and_the_offsets() {
        let gap = Alert::SourceAnomaly {
            consumer_id: "c1".into(),
            name: "orders".into(),
            node: "n2".into(),
            anomaly: SourceAnomaly::OffsetGap {
                at: bida_domain::consumer::TopicPartition {
                    topic: "orders".into(),
                    partition: 1,
                },
                from: 10,
                to: 12,
            },
        };
        let generic = render(NotifyFormat::Generic, &gap, "n1");
        assert_eq!(generic["type"], "bida.consumer.source_anomaly");
        assert_eq!(generic["anomaly"]["kind"], "offset_gap");
        assert_eq!(generic["anomaly"]["partition"], 1);
        let dingtalk = render(NotifyFormat::Dingtalk, &gap, "n1");
        let text = dingtalk["markdown"]["text"].as_str().unwrap();
        assert!(text.contains("orders/1") && text.contains("10..11"), "{text}");
    }

    #[test]
    fn robots_report_errors_in_the_body() {
        assert!(robot_verdict(Some(json!({"errcode": 0, "errmsg": "ok"}))).is_ok());
        assert!(robot_verdict(None).is_ok());
        let err = robot_verdict(Some(json!({"errcode": 310000, "errmsg": "keywords not in content"}))).unwrap_err();
        assert!(err.contains("310000") && err.contains("keywords"), "{err}");
    }
}
