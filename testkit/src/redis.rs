//! Redis Streams for tests: the machine's server, a stream of each test's
//! own (entries with `body` and `key` fields), deleted when dropped.

use redis::AsyncCommands;
use std::time::{Duration, Instant};

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

    /// The stream's entries (id, fields), oldest first.
    pub async fn entries(&self) -> Vec<(String, std::collections::BTreeMap<String, Vec<u8>>)> {
        let entries: redis::streams::StreamRangeReply =
            connection().await.xrange_all(&self.name).await.expect("XRANGE");
        entries
            .ids
            .into_iter()
            .map(|entry| {
                let fields = entry
                    .map
                    .into_iter()
                    .map(|(name, value)| {
                        let bytes = match value {
                            redis::Value::BulkString(bytes) => bytes,
                            redis::Value::SimpleString(text) => text.into_bytes(),
                            other => panic!("a stream field of another type: {other:?}"),
                        };
                        (name, bytes)
                    })
                    .collect();
                (entry.id, fields)
            })
            .collect()
    }

    /// The stream's entry ids, oldest first.
    pub async fn ids(&self) -> Vec<String> {
        let entries: redis::streams::StreamRangeReply =
            connection().await.xrange_all(&self.name).await.expect("XRANGE");
        entries.ids.into_iter().map(|entry| entry.id).collect()
    }
}

/// The parameters a Redis server is started with that say where and how it
/// runs and what it keeps on disk: read back from the running server
/// (`CONFIG GET`), since Redis writes its own title over the command line
/// and environment it was started with (`/proc` no longer has them).
const STARTED_WITH: [&str; 10] = [
    "bind",
    "port",
    "protected-mode",
    "daemonize",
    "dir",
    "dbfilename",
    "logfile",
    "pidfile",
    "save",
    "appendonly",
];

/// A field of `INFO`'s answer.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// Restarts the machine's Redis (a plain process here: `.ci/run` starts it
/// with `redis-server --daemonize yes`, and Redis keeps nothing on disk as
/// it runs, `--save ''`): `SHUTDOWN SAVE` writes its data set to its RDB
/// file on the way out; after `down` it is started again with the
/// parameters it ran with ([`STARTED_WITH`], and its configuration file if
/// it had one), loads the file, and serves `stream` again. The RDB file,
/// if there was none before, is removed once loaded (the server writes none
/// as it runs, and a later start should not load this test's data). For
/// the fault suite, which runs alone.
pub async fn restart_server(stream: &TestStream, down: Duration) {
    let mut redis = connection().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis)
        .await
        .expect("INFO");
    let supervised = info_field(&info, "process_supervised").unwrap_or("no");
    assert_eq!(
        supervised, "no",
        "Redis runs under {supervised}: restart it through its service manager"
    );
    let pid: u32 = info_field(&info, "process_id")
        .and_then(|pid| pid.parse().ok())
        .expect("Redis's process id");
    let mut command = vec![info_field(&info, "config_file")
        .filter(|file| !file.is_empty())
        .map(str::to_string)];
    let mut parameters = std::collections::HashMap::new();
    for name in STARTED_WITH {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut redis)
            .await
            .expect("CONFIG GET");
        let value = pair.get(1).cloned().unwrap_or_default();
        // An empty string unset (a log to standard output, no pid file),
        // except for `save`, where it means "never".
        if !value.is_empty() || name == "save" {
            command.push(Some(format!("--{name}")));
            if value.is_empty() {
                command.push(Some(String::new()));
            }
            // `bind 127.0.0.1 -::1`, `save 3600 1 300 100`: one argument each.
            command.extend(value.split_whitespace().map(|part| Some(part.to_string())));
        }
        parameters.insert(name, value);
    }
    let command: Vec<String> = command.into_iter().flatten().collect();
    let directory = std::path::PathBuf::from(&parameters["dir"]);
    let dump = directory.join(&parameters["dbfilename"]);
    let dump_was_there = dump.exists();
    // The connection ends with the server: an answer is a refusal.
    let shutdown: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("SAVE").query_async(&mut redis).await;
    if let Err(refused) = shutdown.as_ref().map_err(|e| e.code()) {
        assert!(refused.is_none(), "SHUTDOWN SAVE: {shutdown:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::process::alive(pid) {
        assert!(
            Instant::now() < deadline,
            "Redis (pid {pid}) still runs after SHUTDOWN SAVE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dump.exists(), "SHUTDOWN SAVE wrote no {}", dump.display());
    tokio::time::sleep(down).await;
    // The program as Debian installs it (its `executable` is the directory
    // it was started in joined to `redis-server`), else from the PATH.
    let program = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or("redis-server");
    use std::os::unix::process::CommandExt;
    let mut server = std::process::Command::new(program)
        .args(&command)
        .current_dir(&directory)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group: it outlives the test, as the one it replaces.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program} {command:?} again: {e}"));
    // Daemonized, it returns at once; in the foreground it is reaped when it
    // ends while this process lives.
    std::thread::spawn(move || server.wait());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let back = tokio::time::timeout(Duration::from_secs(5), async {
            let mut redis = redis::Client::open(url())
                .ok()?
                .get_multiplexed_async_connection()
                .await
                .ok()?;
            // `LOADING` until the file is read.
            redis.exists::<_, bool>(&stream.name).await.ok()
        })
        .await;
        if let Ok(Some(exists)) = back {
            assert!(exists, "Redis came back without {}", stream.name);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis did not come back in 2 minutes ({program} {command:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !dump_was_there {
        let _ = std::fs::remove_file(&dump);
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
