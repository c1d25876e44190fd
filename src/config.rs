//! Configuration: built-in defaults, then a TOML file (`--config` /
//! `BIDA_CONFIG`), then `BIDA_*` environment variables (nested keys joined by
//! `__`), then command-line flags.

use bida_actors::access::AuthConfig;
use bida_actors::users::ConsoleConfig;
use bida_actors::{DeliveryConfig, NotifyConfig, SchedulerConfig};
use bida_api::ApiConfig;
use bida_domain::consumer::{BreakerPolicy, ConsumerPolicy, PolicyDefaults};
use bida_domain::task::{BackoffInput, Limits, TaskDefaults};
use bida_domain::{Backoff, StatusSet};
use bida_projections::RunnerConfig;
use bida_store::{RetentionConfig, StoreConfig, StoreLocation};
use bida_telemetry::TelemetryConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    /// Where the gRPC interface listens; empty: no gRPC interface.
    pub grpc_listen: String,
    /// PostgreSQL; without it, the embedded store in `data_dir`.
    pub database_url: Option<String>,
    pub data_dir: String,
    pub node_name: String,
    pub log: String,
    pub http_workers: usize,
    pub api: ApiConfig,
    pub auth: AuthConfig,
    pub console: ConsoleConfig,
    /// Seals signing secrets at rest: 32 bytes, base64.
    pub secret_key: Option<String>,
    pub store: StoreConfig,
    pub tasks: TasksConfig,
    pub delivery: DeliveryConfig,
    pub scheduler: SchedulerConfig,
    pub notify: NotifyConfig,
    pub projections: RunnerConfig,
    pub consumers: ConsumersConfig,
    pub telemetry: TelemetryConfig,
    pub retention: RetentionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            grpc_listen: "127.0.0.1:50051".into(),
            database_url: None,
            data_dir: "bida-data".into(),
            node_name: hostname(),
            log: "info,sqlx=warn".into(),
            http_workers: 0,
            api: ApiConfig::default(),
            auth: AuthConfig::default(),
            console: ConsoleConfig::default(),
            secret_key: None,
            store: StoreConfig::default(),
            tasks: TasksConfig::default(),
            delivery: DeliveryConfig::default(),
            scheduler: SchedulerConfig::default(),
            notify: NotifyConfig::default(),
            projections: RunnerConfig::default(),
            consumers: ConsumersConfig::default(),
            telemetry: TelemetryConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "bida".into())
}

/// Defaults and limits for submitted tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub retry_on: StatusSet,
    pub backoff: BackoffInput,
    pub max_attempts_limit: u32,
    pub timeout_ms_limit: u64,
    pub max_delay_days: u64,
    pub max_headers: usize,
}

impl Default for TasksConfig {
    fn default() -> Self {
        let defaults = TaskDefaults::default();
        let limits = Limits::default();
        let backoff = defaults.backoff;
        Self {
            max_attempts: defaults.max_attempts,
            timeout_ms: defaults.timeout_ms,
            retry_on: defaults.retry_on,
            backoff: BackoffInput {
                initial_ms: Some(backoff.initial_ms),
                max_ms: Some(backoff.max_ms),
                multiplier: Some(backoff.multiplier),
                jitter: Some(backoff.jitter),
            },
            max_attempts_limit: limits.max_attempts,
            timeout_ms_limit: limits.timeout_ms,
            max_delay_days: limits.delay.as_secs() / 86_400,
            max_headers: limits.headers,
        }
    }
}

impl TasksConfig {
    pub fn defaults(&self) -> TaskDefaults {
        TaskDefaults {
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
            backoff: self.backoff.over(Backoff::default()),
            retry_on: self.retry_on.clone(),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_attempts: self.max_attempts_limit,
            timeout_ms: self.timeout_ms_limit,
            delay: Duration::from_secs(self.max_delay_days.saturating_mul(86_400)),
            headers: self.max_headers,
            ..Limits::default()
        }
    }
}

/// Defaults of new consumers (attempts, backoff, retry_on and timeout come from `tasks`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumersConfig {
    pub concurrency: u32,
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

impl Default for ConsumersConfig {
    fn default() -> Self {
        let policy = PolicyDefaults::default().policy;
        Self {
            concurrency: policy.concurrency,
            breaker_failures: policy.breaker.failures,
            breaker_open_ms: policy.breaker.open_ms,
        }
    }
}

impl Config {
    pub fn consumer_defaults(&self) -> PolicyDefaults {
        let tasks = self.tasks.defaults();
        let base = PolicyDefaults::default().policy;
        PolicyDefaults {
            timeout_ms: tasks.timeout_ms,
            policy: ConsumerPolicy {
                concurrency: self.consumers.concurrency,
                max_attempts: tasks.max_attempts,
                backoff: tasks.backoff,
                retry_on: tasks.retry_on,
                breaker: BreakerPolicy {
                    failures: self.consumers.breaker_failures,
                    open_ms: self.consumers.breaker_open_ms,
                },
                ..base
            },
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// Environment variables starting with `BIDA_` that are not configuration
/// keys (`BIDA_OTLP_ENDPOINT` is read as `telemetry.otlp_endpoint`).
const NOT_CONFIG: [&str; 3] = ["config", "test_", "otlp_endpoint"];

impl Config {
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                let missing = format!("configuration file {} does not exist", file.display());
                return Err(Box::new(figment::Error::from(missing)));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment
            .merge(Env::prefixed("BIDA_").split("__").filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                !NOT_CONFIG.iter().any(|skip| key.starts_with(skip))
            }))
            // The short name operators know from the OpenTelemetry world.
            .merge(
                Env::raw()
                    .only(&["BIDA_OTLP_ENDPOINT"])
                    .map(|_| "telemetry.otlp_endpoint".into()),
            )
            .merge(Serialized::globals(overrides))
            .extract()
            .map_err(Box::new)
    }

    /// PostgreSQL when a database URL is given, the embedded store otherwise.
    pub fn store_location(&self) -> StoreLocation {
        match self.database_url.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => StoreLocation::Postgres(url.to_string()),
            None => StoreLocation::Embedded(self.data_dir.clone().into()),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut errors = bida_domain::ValidationErrors::default();
        self.tasks.defaults().backoff.validate("tasks.backoff", &mut errors);
        if self.tasks.max_attempts == 0 || self.tasks.max_attempts > self.tasks.max_attempts_limit {
            errors.add("tasks.max_attempts", "must be between 1 and tasks.max_attempts_limit");
        }
        if self.tasks.timeout_ms == 0 || self.tasks.timeout_ms > self.tasks.timeout_ms_limit {
            errors.add("tasks.timeout_ms", "must be between 1 and tasks.timeout_ms_limit");
        }
        if let Some(key) = &self.secret_key {
            if bida_actors::secrets::Sealer::from_base64(key).is_err() {
                errors.add("secret_key", "must be 32 bytes in base64 (`openssl rand -base64 32`)");
            }
        }
        if self.store.pool_size < 2 {
            errors.add("store.pool_size", "must be at least 2");
        }
        for (i, limit) in self.delivery.host_limits.iter().enumerate() {
            let host = bida_domain::task::EndpointHost::typed(&limit.host).to_string();
            if host.is_empty() || host.contains(['/', '?', '#', '@']) {
                errors.add(
                    format!("delivery.host_limits[{i}].host"),
                    "must be a host name or address",
                );
            }
            if limit.rate_per_sec == 0 && limit.concurrency == 0 {
                errors.add(
                    format!("delivery.host_limits[{i}]"),
                    "needs rate_per_sec or concurrency",
                );
            }
        }
        for (i, hook) in self.notify.webhooks.iter().enumerate() {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                errors.add(format!("notify.webhooks[{i}].url"), "must be an http(s) URL");
            }
        }
        errors.finish(()).map_err(|e| e.to_string())
    }
}

/// Every configuration key with what it means, for `--help` and the README.
pub const KEYS: &[(&str, &str)] = &[
    ("listen", "Address the HTTP API listens on."),
    (
        "grpc_listen",
        "Address the gRPC interface (proto/bida/v1) listens on; empty: none.",
    ),
    (
        "telemetry.otlp_endpoint",
        "OTLP/HTTP collector URL (http://host:4318) for metrics and traces; empty: none. Also BIDA_OTLP_ENDPOINT.",
    ),
    (
        "telemetry.export_interval_ms",
        "How often metrics are pushed over OTLP.",
    ),
    ("telemetry.service_name", "service.name of exported telemetry."),
    (
        "telemetry.sample_interval_ms",
        "How often gauges read from the database (tasks, lag, states) are refreshed.",
    ),
    (
        "database_url",
        "PostgreSQL URL (postgres://...), for production and several nodes; the database is created and migrated at start if missing. Without it, the embedded store in data_dir.",
    ),
    (
        "data_dir",
        "Directory of the embedded store (one node, no database server), created on first start; used when database_url is not set.",
    ),
    (
        "node_name",
        "This node's name in the node list (default: the host name).",
    ),
    ("log", "Log filter (tracing EnvFilter syntax); RUST_LOG wins if set."),
    ("http_workers", "HTTP worker threads; 0 means one per CPU."),
    ("api.max_body_bytes", "Largest request body accepted (413 above)."),
    ("api.max_page", "Largest page a list returns."),
    ("api.max_replay", "Most tasks one bulk replay may take."),
    (
        "api.redact_headers",
        "Task headers whose values answers show as *** (credentials); deliveries still carry them.",
    ),
    (
        "api.rate_limit.per_second",
        "Sustained requests per second one API key may make (429 above); 0: no limit.",
    ),
    (
        "api.rate_limit.burst",
        "Requests one key may make at once above its sustained rate.",
    ),
    (
        "auth.bootstrap_admin_key",
        "A string (24+ characters) made an admin key at start, for automation and tests; without it the first start prints a new admin key once.",
    ),
    (
        "auth.signing_overlap_hours",
        "How long a rotated signing secret keeps signing beside the new one.",
    ),
    (
        "secret_key",
        "32 bytes, base64 (`openssl rand -base64 32`): seals signing secrets in the event store. Without it apps get no signing secret. Also BIDA_SECRET_KEY.",
    ),
    ("auth.protect_metrics", "Whether /metrics needs a key (viewer or above)."),
    ("auth.protect_openapi", "Whether /openapi.json needs a key."),
    (
        "auth.cache_ttl_ms",
        "Longest a node trusts a checked key without hearing of a change (changes are announced at once).",
    ),
    ("console.session_hours", "How long a console login lasts."),
    (
        "console.secure_cookies",
        "Mark the console's session cookie Secure (HTTPS only); turn on behind TLS.",
    ),
    (
        "console.login_attempts_per_minute",
        "Console logins one client address may try per minute.",
    ),
    (
        "store.pool_size",
        "Postgres connections shared by the writer, API and schedulers.",
    ),
    (
        "store.acquire_timeout_ms",
        "How long a caller waits for a free connection.",
    ),
    (
        "store.statement_timeout_ms",
        "Longest a statement may run before Postgres cancels it.",
    ),
    (
        "store.writer.max_batch_events",
        "Most events group-committed in one statement.",
    ),
    (
        "store.writer.max_batch_bytes",
        "Most payload bytes group-committed in one statement.",
    ),
    (
        "store.writer.concurrency",
        "Batches committing at once. One: the next batch gathers what arrives while one commits.",
    ),
    (
        "store.writer.queue",
        "Appends waiting for a batch before callers are held back.",
    ),
    (
        "store.writer.linger_ms",
        "How long consumers' records that found others waiting wait for more before they commit (0: never).",
    ),
    ("tasks.max_attempts", "Attempts per round when a task does not say."),
    ("tasks.timeout_ms", "Per-attempt timeout when a task does not say."),
    (
        "tasks.retry_on",
        "Status codes retried when a task does not say; network errors and timeouts always are.",
    ),
    ("tasks.backoff.initial_ms", "Delay after the first failure."),
    ("tasks.backoff.max_ms", "Longest delay (also bounds Retry-After)."),
    ("tasks.backoff.multiplier", "Growth factor between delays."),
    (
        "tasks.backoff.jitter",
        "Random spread, a fraction of the delay (0.2 = ±20%).",
    ),
    ("tasks.max_attempts_limit", "Most attempts a task may ask for."),
    ("tasks.timeout_ms_limit", "Longest timeout a task may ask for."),
    (
        "tasks.max_delay_days",
        "Furthest ahead a delayed task may be scheduled.",
    ),
    ("tasks.max_headers", "Most extra headers a task may carry."),
    (
        "delivery.max_response_bytes",
        "Bytes of a response read to check `expect`.",
    ),
    (
        "delivery.excerpt_bytes",
        "Bytes of each response kept with the attempt.",
    ),
    ("delivery.connect_timeout_ms", "TCP/TLS connect timeout to endpoints."),
    (
        "delivery.idle_connections_per_host",
        "Kept-alive connections per endpoint host.",
    ),
    ("delivery.user_agent", "User-Agent of deliveries."),
    (
        "delivery.threads",
        "Threads running delivery actors; 0 means one per CPU.",
    ),
    (
        "delivery.max_in_memory",
        "Tasks a node holds in memory at once; more wait in the durable schedule.",
    ),
    (
        "delivery.allow_networks",
        "Networks (CIDR) deliveries and notifications may reach although loopback, private, link-local, CGNAT...: [\"127.0.0.0/8\"]. Empty by default: those are refused.",
    ),
    (
        "delivery.max_in_memory_bytes",
        "Body bytes of the tasks a node holds in memory at once.",
    ),
    (
        "delivery.host_limits",
        "Limits on the requests to one endpoint host across the cluster, for API tasks and consumers alike: [[delivery.host_limits]] host = \"orders.example.com\", rate_per_sec = 20, concurrency = 4 (0: none). Every node must have the same list.",
    ),
    (
        "scheduler.poll_interval_ms",
        "How often the durable schedule is polled for due tasks.",
    ),
    (
        "scheduler.lookahead_ms",
        "Tasks due within this are claimed early and fired on time.",
    ),
    (
        "scheduler.hold_max_ms",
        "Retries due within this wait in the node's memory (still durable).",
    ),
    ("scheduler.claim_batch", "Most tasks claimed per poll."),
    (
        "scheduler.heartbeat_interval_ms",
        "How often the node records that it is alive.",
    ),
    (
        "scheduler.node_ttl_ms",
        "A node silent this long is dead; others take its tasks.",
    ),
    (
        "scheduler.shutdown_grace_ms",
        "At SIGTERM, how long deliveries in flight may take: consumers' first, then tasks' attempts (up to twice this in all); what outlasts it is given back.",
    ),
    (
        "scheduler.orphan_grace_ms",
        "A task claimed by this node but held by no actor is given back after this long.",
    ),
    (
        "notify.webhooks",
        "Failure notification webhooks: [{url = \"...\", format = \"generic\"|\"dingtalk\"|\"wecom\"}].",
    ),
    ("notify.attempts", "Tries per notification and webhook."),
    ("notify.timeout_ms", "Timeout of one notification request."),
    ("projections.page", "Events folded per projection transaction."),
    (
        "projections.idle_ms",
        "How long a caught-up projection sleeps before looking again.",
    ),
    (
        "consumers.concurrency",
        "Deliveries in flight per consumer and node when a consumer does not say.",
    ),
    (
        "consumers.breaker_failures",
        "Consecutive failed deliveries that open a consumer's breaker (0: never).",
    ),
    (
        "consumers.breaker_open_ms",
        "How long an open breaker waits before a probe delivery.",
    ),
    (
        "retention.enabled",
        "Drop the events of finished tasks a day at a time once they are old enough.",
    ),
    (
        "retention.completed_days",
        "Delivered and cancelled tasks are kept this many days after their last event.",
    ),
    (
        "retention.dead_days",
        "Dead-lettered tasks wait this many days for a replay before they go too.",
    ),
    (
        "retention.action",
        "\"drop\" an expired day's partition, or \"detach\" it as table events_archive_<day>_<time> to archive.",
    ),
    (
        "retention.every_minutes",
        "How often the leading node looks for expired days.",
    ),
];

/// Every leaf key of the configuration with its default value.
pub fn default_values() -> Vec<(String, String)> {
    let value = toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Table(Default::default()));
    let mut leaves = Vec::new();
    flatten("", &value, &mut leaves);
    leaves
}

fn flatten(prefix: &str, value: &toml::Value, leaves: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, leaves);
            }
        }
        leaf => leaves.push((prefix.to_string(), leaf.to_string())),
    }
}

/// The configuration reference printed by `--help`.
pub fn reference() -> String {
    let defaults = default_values();
    let mut text = String::from(
        "CONFIGURATION\n\
         Defaults work on one machine. Set keys in a TOML file (--config FILE or BIDA_CONFIG),\n\
         or override any key with an environment variable: BIDA_ + the key in upper case, with\n\
         nested keys joined by \"__\" (store.pool_size -> BIDA_STORE__POOL_SIZE). Flags win over both.\n\n",
    );
    for (key, meaning) in KEYS {
        let default = defaults
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("(none)");
        let env = format!("BIDA_{}", key.replace('.', "__").to_uppercase());
        text.push_str(&format!("  {key} = {default}\n      {meaning}\n      env: {env}\n"));
    }
    text
}

#[cfg(test)]
// figment's Jail closures must return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    /// Keys that are unset by default (so absent from the default values).
    const UNSET_BY_DEFAULT: &[&str] = &["auth.bootstrap_admin_key", "secret_key", "database_url"];

    #[test]
    fn every_key_is_documented_and_every_documented_key_exists() {
        let keys: Vec<String> = default_values().into_iter().map(|(k, _)| k).collect();
        let documented: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        for key in &keys {
            assert!(documented.contains(&key.as_str()), "{key} is missing from KEYS");
        }
        for key in documented {
            assert!(
                keys.iter().any(|k| k == key) || UNSET_BY_DEFAULT.contains(&key),
                "{key} in KEYS is not a configuration key"
            );
        }
    }

    #[test]
    fn the_defaults_are_valid_and_round_trip_through_toml() {
        let config = Config::default();
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn file_then_environment_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bida.toml",
                r#"
                listen = "0.0.0.0:9000"
                [store]
                pool_size = 7
                [tasks.backoff]
                initial_ms = 100
                [[notify.webhooks]]
                url = "https://oapi.dingtalk.com/robot/send?access_token=x"
                format = "dingtalk"
                "#,
            )?;
            jail.set_env("BIDA_STORE__POOL_SIZE", "9");
            jail.set_env("BIDA_DATABASE_URL", "postgres://db/other");
            jail.set_env("BIDA_TEST_POSTGRES", "ignored: not configuration");
            let overrides = Overrides {
                listen: Some("127.0.0.1:1".into()),
                ..Overrides::default()
            };
            let config = Config::load(Some(Path::new("bida.toml")), &overrides).map_err(|e| *e)?;
            assert_eq!(config.listen, "127.0.0.1:1");
            assert_eq!(config.database_url.as_deref(), Some("postgres://db/other"));
            assert_eq!(config.store.pool_size, 9);
            assert_eq!(config.tasks.defaults().backoff.initial_ms, 100);
            assert_eq!(config.tasks.defaults().backoff.max_ms, 3_600_000);
            assert_eq!(config.notify.webhooks[0].format, bida_actors::NotifyFormat::Dingtalk);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bida.toml", "lisen = \"x\"")?;
            let err = Config::load(Some(Path::new("bida.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("lisen"), "{err}");
            let err = Config::load(Some(Path::new("nope.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("does not exist"), "{err}");
            Ok(())
        });
    }
}
