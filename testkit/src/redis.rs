//! Redis Streams for tests: the machine's server, a stream of each test's
//! own (entries with `body` and `key` fields), deleted when dropped.

use redis::AsyncCommands;

pub fn url() -> String {
    std::env::var("BIDA_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

pub struct TestStream {
    pub name: String,
}

async fn connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis (set BIDA_TEST_REDIS if it is not at 127.0.0.1:6379)")
}

impl TestStream {
    pub fn create() -> Self {
        Self {
            name: format!("bida-test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Appends each message (`body`, and `key` where it has one), pipelined
    /// in batches.
    pub async fn publish(&self, messages: impl IntoIterator<Item = (Option<String>, Vec<u8>)>) {
        let mut connection = connection().await;
        let mut pipe = redis::pipe();
        let mut queued = 0;
        for (key, body) in messages {
            let command = pipe.cmd("XADD").arg(&self.name).arg("*").arg("body").arg(body);
            if let Some(key) = key {
                command.arg("key").arg(key);
            }
            command.ignore();
            queued += 1;
            if queued == 512 {
                let () = pipe.query_async(&mut connection).await.expect("XADD");
                pipe = redis::pipe();
                queued = 0;
            }
        }
        if queued > 0 {
            let () = pipe.query_async(&mut connection).await.expect("XADD");
        }
    }

    /// The stream's entry ids, oldest first.
    pub async fn ids(&self) -> Vec<String> {
        let entries: redis::streams::StreamRangeReply =
            connection().await.xrange_all(&self.name).await.expect("XRANGE");
        entries.ids.into_iter().map(|entry| entry.id).collect()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::run_apart(move || async move {
            let _: redis::RedisResult<i64> = connection().await.del(&name).await;
        });
    }
}
