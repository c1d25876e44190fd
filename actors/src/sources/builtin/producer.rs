//! Publishing to built-in topics through the broker route (and delayed
//! messages): each message goes to its key's partition (keyless ones spread
//! round robin), and the requests that come while the log is writing are
//! written together in its next transaction (a group commit), so a node
//! takes many small publishes at the cost of few commits.

use bida_domain::kinds::builtin::BuiltinTarget;
use bida_domain::kinds::produce::Outgoing;
use bida_domain::topic::{Topic, TopicSpec};
use bida_store::topics::{Publish, Published};
use bida_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::store_error;
use crate::produce::{Landed, Outcome};

/// Messages written in one transaction at most.
const GROUP_AT_MOST: usize = 5_000;

type Request = (Vec<Publish>, oneshot::Sender<Result<Vec<Published>, StoreError>>);

pub struct BuiltinProducer {
    store: Store,
    spread: AtomicU64,
    group: mpsc::UnboundedSender<Request>,
}

impl BuiltinProducer {
    pub fn new(store: Store) -> Self {
        let (group, requests) = mpsc::unbounded_channel();
        tokio::spawn(group_commit(store.clone(), requests));
        Self {
            store,
            spread: AtomicU64::new(0),
            group,
        }
    }

    async fn publish(&self, batch: Vec<Publish>) -> Result<Vec<Published>, StoreError> {
        let (done, answer) = oneshot::channel();
        self.group.send((batch, done)).map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    async fn spec(&self, topic: &str) -> Result<Option<TopicSpec>, StoreError> {
        Ok(self
            .store
            .load_aggregate::<Topic>(topic)
            .await?
            .and_then(|(topic, _)| topic.spec().copied()))
    }
}

impl crate::produce::Produce for BuiltinProducer {
    type Connection = bida_domain::kinds::builtin::BuiltinConnection;
    type Target = BuiltinTarget;

    async fn open(_connection: &Self::Connection) -> Result<Self, crate::sources::SourceError> {
        Err(crate::sources::SourceError::Unsupported(
            "the built-in broker's producer is made with the store".into(),
        ))
    }

    async fn write(&self, messages: &[(usize, &Outgoing, &BuiltinTarget)]) -> Outcome {
        let mut outcome = Outcome::default();
        let mut specs: HashMap<&str, Option<TopicSpec>> = HashMap::new();
        for (index, _, target) in messages {
            let topic = target.topic.as_str();
            if !specs.contains_key(topic) {
                match self.spec(topic).await {
                    Ok(spec) => specs.insert(topic, spec),
                    Err(e) => {
                        outcome.fail(*index, store_error(e));
                        return outcome;
                    }
                };
            }
        }
        let mut batch = Vec::with_capacity(messages.len());
        let mut indexes = Vec::with_capacity(messages.len());
        for (index, message, target) in messages {
            let Some(spec) = specs[target.topic.as_str()] else {
                outcome.refuse(
                    *index,
                    "topic",
                    format!("no topic named {}: create it with POST /v1/topics", target.topic),
                );
                continue;
            };
            // Only keyless messages take turns: keyed ones in between would skip partitions.
            let spread = match &target.key {
                Some(_) => 0,
                None => self.spread.fetch_add(1, Ordering::Relaxed),
            };
            batch.push(Publish {
                topic: target.topic.to_string(),
                partition: i32::from(spec.partition_for(target.key.as_deref(), spread)),
                id: Uuid::now_v7(),
                key: target.key.clone(),
                headers: message.headers.clone(),
                content_type: Some(message.content_type.clone()),
                body: message.body.to_vec(),
                app: None,
            });
            indexes.push(*index);
        }
        if outcome.failed.is_some() {
            return outcome; // nothing half-written: a refused message stops the batch
        }
        match self.publish(batch.clone()).await {
            Ok(published) => {
                for ((index, sent), landed) in indexes.into_iter().zip(batch).zip(published) {
                    outcome.wrote(
                        index,
                        Landed::Partition {
                            topic: sent.topic,
                            partition: landed.partition,
                            offset: landed.offset,
                            id: Some(landed.id.to_string()),
                        },
                    );
                }
            }
            Err(StoreError::Missing(what)) => outcome.refuse(indexes[0], "topic", what),
            Err(e) => outcome.fail(indexes[0], store_error(e)),
        }
        outcome
    }
}

/// Writes the requests waiting, together, until the producer is dropped.
/// A group that fails is written request by request, so that one request's
/// fault (a topic deleted meanwhile) is answered to it alone.
async fn group_commit(store: Store, mut requests: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut group = vec![first];
        let mut size = group[0].0.len();
        while size < GROUP_AT_MOST {
            match requests.try_recv() {
                Ok(request) => {
                    size += request.0.len();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        if group.len() == 1 {
            let (batch, done) = group.pop().expect("one request");
            let _ = done.send(store.publish(batch).await);
            continue;
        }
        let all: Vec<Publish> = group.iter().flat_map(|(batch, _)| batch.iter().cloned()).collect();
        match store.publish(all).await {
            Ok(mut published) => {
                for (batch, done) in group {
                    let rest = published.split_off(batch.len());
                    let _ = done.send(Ok(std::mem::replace(&mut published, rest)));
                }
            }
            Err(_) => {
                for (batch, done) in group {
                    let _ = done.send(store.publish(batch).await);
                }
            }
        }
    }
}
