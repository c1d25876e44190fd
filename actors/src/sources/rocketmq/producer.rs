//! Writing to RocketMQ for the API: the name servers tell where a topic's
//! queues take messages (kept for a while per topic), and each message is
//! sent (`SEND_MESSAGE`) to one of them — its sharding key's, chosen as
//! Java producers' hash selector does (so a key's messages share one queue
//! whoever sends them), else the next in turn — and written once the
//! broker answered where it stored it. Its id (`UNIQ_KEY`, what Bida's
//! RocketMQ consumers take as the message id), keys, tag, sharding key,
//! content type and headers go as message properties.

use bida_domain::kinds::produce::Outgoing;
use bida_domain::kinds::rocketmq::{RocketmqConnection, RocketmqTarget};
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::cluster::{Cluster, Route};
use super::message::{KEYS, SHARDING_KEY, TAGS, UNIQ_KEY};
use super::remoting::{code, status, Request, Response};
use crate::produce::{Landed, Outcome, Produce};
use crate::sources::SourceError;

/// How long a broker may take to store a message.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a topic's route is kept before the name servers are asked again.
const ROUTE_FOR: Duration = Duration::from_secs(30);
/// The producer group Bida sends as.
const PRODUCER_GROUP: &str = "bida-produce";
/// RocketMQ's property separators.
const NAME_VALUE: char = '\u{1}';
const PROPERTY: char = '\u{2}';

/// The messages of one queue, in their order, with their topic's route.
type Lane<'a> = Vec<(usize, &'a Outgoing, &'a RocketmqTarget, Route)>;

pub struct RocketmqProducer {
    cluster: Cluster,
    routes: Mutex<HashMap<String, (Route, Instant)>>,
    /// The next queue of messages without a sharding key.
    turn: AtomicUsize,
}

impl Produce for RocketmqProducer {
    type Connection = RocketmqConnection;
    type Target = RocketmqTarget;

    /// Reaches a name server now, so that one that is down answers 503 at once.
    async fn open(connection: &RocketmqConnection) -> Result<Self, SourceError> {
        let cluster = Cluster::new(connection, None);
        cluster.brokers().await?;
        Ok(Self {
            cluster,
            routes: Mutex::default(),
            turn: AtomicUsize::new(0),
        })
    }

    /// Sends the messages of each queue in their order (one after another:
    /// a queue keeps the order its messages were stored in), the queues at
    /// once.
    async fn write(&self, messages: &[(usize, &Outgoing, &RocketmqTarget)]) -> Outcome {
        let mut outcome = Outcome::default();
        let mut queues: Vec<((String, i32), Lane)> = Vec::new();
        for (index, message, target) in messages {
            let route = match self.route(&target.topic).await {
                Ok(route) => route,
                Err(SourceError::Invalid(reason) | SourceError::Unsupported(reason)) => {
                    outcome.refuse(*index, "topic", reason);
                    continue;
                }
                Err(e) => {
                    outcome.fail(*index, e);
                    continue;
                }
            };
            let queue = match &target.sharding_key {
                Some(key) => queue_of(key, route.queues),
                None => (self.turn.fetch_add(1, Ordering::Relaxed) % route.queues.max(1) as usize) as i32,
            };
            let lane = (target.topic.clone(), queue);
            match queues.iter_mut().find(|(at, _)| *at == lane) {
                Some((_, lane)) => lane.push((*index, *message, *target, route)),
                None => queues.push((lane, vec![(*index, *message, *target, route)])),
            }
        }
        let lanes = queues.into_iter().map(|((_, queue), lane)| async move {
            let mut sent = Vec::with_capacity(lane.len());
            for (index, message, target, route) in lane {
                let result = self.send(message, target, &route, queue).await;
                let failed = result.is_err();
                sent.push((index, result));
                if failed {
                    // The queue's order: nothing after a message that failed.
                    break;
                }
            }
            sent
        });
        for (index, sent) in join_all(lanes).await.into_iter().flatten() {
            match sent {
                Ok(landed) => outcome.wrote(index, landed),
                Err((field, SourceError::Invalid(reason))) => outcome.refuse(index, field, reason),
                Err((_, e)) => outcome.fail(index, e),
            }
        }
        // Messages of a lane left unsent after its failure are not in
        // `written`: the failure before them fails the request.
        outcome
    }
}

impl RocketmqProducer {
    /// The topic's route, from the cache or the name servers.
    async fn route(&self, topic: &str) -> Result<Route, SourceError> {
        if let Some((route, at)) = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get(topic) {
            if at.elapsed() < ROUTE_FOR {
                return Ok(route.clone());
            }
        }
        let route = self.cluster.write_route(topic).await?;
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string(), (route.clone(), Instant::now()));
        Ok(route)
    }

    /// Sends one message to `queue`; a refusal names the field at fault.
    async fn send(
        &self,
        message: &Outgoing,
        target: &RocketmqTarget,
        route: &Route,
        queue: i32,
    ) -> Result<Landed, (&'static str, SourceError)> {
        let id = uuid::Uuid::now_v7().simple().to_string().to_uppercase();
        let mut properties = vec![(UNIQ_KEY, id.as_str()), ("WAIT", "true")];
        if let Some(keys) = &target.keys {
            properties.push((KEYS, keys.as_str()));
        }
        if let Some(key) = &target.sharding_key {
            properties.push((SHARDING_KEY, key.as_str()));
        }
        if let Some(tag) = &target.tags {
            properties.push((TAGS, tag.as_str()));
        }
        properties.push(("content-type", message.content_type.as_str()));
        properties.extend(
            message
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        let properties: String = properties
            .into_iter()
            .map(|(name, value)| format!("{name}{NAME_VALUE}{value}{PROPERTY}"))
            .collect();
        let born = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let request = Request::new(code::SEND_MESSAGE)
            .field("producerGroup", PRODUCER_GROUP)
            .field("topic", &target.topic)
            .field("defaultTopic", "TBW102")
            .field("defaultTopicQueueNums", route.queues)
            .field("queueId", queue)
            .field("sysFlag", 0)
            .field("bornTimestamp", born)
            .field("flag", 0)
            .field("properties", properties)
            .field("reconsumeTimes", 0)
            .field("unitMode", false)
            .field("batch", false)
            .body(message.body.clone());
        let sent = async {
            let remote = self.cluster.remote(&route.address).await?;
            remote.call(request, SEND_TIMEOUT).await
        };
        let response: Response = match sent.await {
            Ok(response) => response,
            Err(e) => {
                self.forget(&target.topic);
                return Err(("topic", SourceError::Lost(e.to_string())));
            }
        };
        match response.code {
            status::SUCCESS => {}
            status::TOPIC_NOT_EXIST | status::NO_PERMISSION => {
                self.forget(&target.topic);
                return Err(("topic", SourceError::Invalid(refusal(&response))));
            }
            status::MESSAGE_ILLEGAL => return Err(("body", SourceError::Invalid(refusal(&response)))),
            // Stored but not flushed or replicated in time (10, 11, 12),
            // or not stored: not reported written.
            _ => return Err(("topic", SourceError::Broker(refusal(&response)))),
        }
        let number = |name: &str| response.number(name).map_err(|e| ("topic", e));
        Ok(Landed::Queue {
            topic: target.topic.clone(),
            broker: route.broker_name.clone(),
            queue: number("queueId")? as i32,
            offset: number("queueOffset")?,
            message_id: id,
        })
    }

    fn forget(&self, topic: &str) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(topic);
    }
}

fn refusal(response: &Response) -> String {
    format!(
        "the broker refused it (code {}): {}",
        response.code,
        response.remark.as_deref().unwrap_or("no reason given")
    )
}

/// The queue of a sharding key, as Java producers' `SelectMessageQueueByHash`
/// picks it: the key's `String.hashCode()` modulo the queues, made positive.
fn queue_of(key: &str, queues: i32) -> i32 {
    let hash = key
        .encode_utf16()
        .fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)));
    (hash % queues.max(1)).abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pick_queues_as_java_does() {
        // "order-1".hashCode() == -1207111310 in Java (-2 modulo 4); "é" == 233;
        // "polygenelubricants" == i32::MIN.
        assert_eq!(queue_of("order-1", 4), 2);
        assert_eq!(queue_of("é", 4), 233 % 4);
        assert_eq!(queue_of("polygenelubricants", 3), (i32::MIN % 3).abs());
        assert_eq!(queue_of("", 4), 0);
    }
}
