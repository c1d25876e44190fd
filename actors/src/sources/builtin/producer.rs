//! Publishing to built-in topics through the broker route (and delayed
//! messages): the log takes a batch in one transaction, each message in its
//! key's partition (keyless ones spread round robin).

use bida_domain::kinds::builtin::BuiltinTarget;
use bida_domain::kinds::produce::Outgoing;
use bida_domain::topic::{Topic, TopicSpec};
use bida_store::topics::Publish;
use bida_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

use super::store_error;
use crate::produce::{Landed, Outcome};

pub struct BuiltinProducer {
    store: Store,
    spread: AtomicU64,
}

impl BuiltinProducer {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            spread: AtomicU64::new(0),
        }
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
            let spread = self.spread.fetch_add(1, Ordering::Relaxed);
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
        match self.store.publish(batch.clone()).await {
            Ok(published) => {
                for ((index, sent), landed) in indexes.into_iter().zip(batch).zip(published) {
                    outcome.wrote(
                        index,
                        Landed::Logged {
                            topic: sent.topic,
                            partition: landed.partition,
                            offset: landed.offset,
                            id: landed.id.to_string(),
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
