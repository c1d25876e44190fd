//! Writing to Redis Streams for the API: one multiplexed connection per
//! broker; a request's messages are appended (`XADD`) in one pipeline, in
//! their order, each written once Redis answered its entry id. Entries
//! carry the fields Bida's Redis consumers read: `body`, `key`,
//! `content_type`, and each header as a field of its own.

use bida_domain::kinds::produce::Outgoing;
use bida_domain::kinds::redis::{RedisConnection, RedisTarget, DEFAULT_BODY_FIELD, DEFAULT_KEY_FIELD};
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::source::{broker_error, connect};
use crate::produce::{Landed, Outcome, Produce};
use crate::sources::SourceError;

pub struct RedisProducer {
    commands: MultiplexedConnection,
}

impl Produce for RedisProducer {
    type Connection = RedisConnection;
    type Target = RedisTarget;

    async fn open(connection: &RedisConnection) -> Result<Self, SourceError> {
        let mut commands = connect(connection, false).await?;
        // The connection answers, or the broker counts as down now rather
        // than at the first message.
        let _: String = redis::cmd("PING")
            .query_async(&mut commands)
            .await
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        Ok(Self { commands })
    }

    async fn write(&self, messages: &[(usize, &Outgoing, &RedisTarget)]) -> Outcome {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (_, message, target) in messages {
            let command = pipe.cmd("XADD").arg(&target.stream);
            if let Some(maxlen) = target.maxlen {
                command.arg("MAXLEN").arg("~").arg(maxlen);
            }
            command
                .arg(target.id.as_deref().unwrap_or("*"))
                .arg(DEFAULT_BODY_FIELD)
                .arg(&message.body[..]);
            if let Some(key) = &target.key {
                command.arg(DEFAULT_KEY_FIELD).arg(key);
            }
            command.arg("content_type").arg(&message.content_type);
            for (name, value) in &message.headers {
                command.arg(name).arg(value);
            }
        }
        let mut outcome = Outcome::default();
        let answers: RedisResult<Vec<RedisResult<Value>>> = pipe.query_async(&mut self.commands.clone()).await;
        let answers = match answers {
            Ok(answers) => answers,
            // Unknown which were appended (the connection broke under the
            // pipeline): none is reported written.
            Err(e) => {
                let error = broker_error(e);
                for (index, _, _) in messages {
                    outcome.fail(*index, error.clone());
                }
                return outcome;
            }
        };
        for ((index, _, target), answer) in messages.iter().zip(answers) {
            match answer {
                Ok(Value::BulkString(id)) => outcome.wrote(
                    *index,
                    Landed::Entry {
                        stream: target.stream.clone(),
                        id: String::from_utf8_lossy(&id).into_owned(),
                    },
                ),
                Ok(Value::SimpleString(id)) => outcome.wrote(
                    *index,
                    Landed::Entry {
                        stream: target.stream.clone(),
                        id,
                    },
                ),
                Ok(other) => outcome.fail(
                    *index,
                    SourceError::Broker(format!("XADD answered {other:?}, not an entry id")),
                ),
                Err(e) if e.code() == Some("WRONGTYPE") => outcome.refuse(
                    *index,
                    "stream",
                    format!("the key {} holds something else than a stream", target.stream),
                ),
                Err(e) if target.id.is_some() && e.code() == Some("ERR") => outcome.refuse(*index, "id", e.to_string()),
                Err(e) => outcome.fail(*index, broker_error(e)),
            }
        }
        outcome
    }
}
