//! Bida's HTTP API (actix-web): task commands and queries, probes, and the
//! OpenAPI document. Every error is `application/problem+json`; every route
//! passes [`gate`], which checks the caller's key against [`RULES`].

mod access;
mod apps;
mod brokers;
mod console;
mod consumers;
mod delayed;
mod descriptors;
pub mod grpc;
mod health;
mod history;
mod json;
mod monitoring;
mod openapi;
mod paging;
mod problem;
mod pull;
mod tasks;
mod topics;

pub use access::{gate, rule, Access, KeyLimits, RateLimitConfig, RULES};
pub use console::{LoginLimits, CONSOLE_RULES};
pub use openapi::{openapi_document, ApiDoc};
pub use problem::{problem_responses, Problem, PROBLEM_JSON};

use actix_web::web;
use bida_actors::TaskService;
use bida_store::Store;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest page a list returns.
    pub max_page: i64,
    /// Most tasks one bulk replay may take.
    pub max_replay: i64,
    /// Requests per second per key.
    pub rate_limit: RateLimitConfig,
    /// Task headers shown as `***` in answers (credentials); deliveries
    /// still carry them.
    pub redact_headers: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_page: 500,
            max_replay: 10_000,
            rate_limit: RateLimitConfig::default(),
            redact_headers: ["authorization", "proxy-authorization", "cookie", "x-api-key"]
                .map(String::from)
                .to_vec(),
        }
    }
}

pub struct ApiState {
    pub tasks: TaskService,
    pub brokers: bida_actors::brokers::BrokerService,
    /// Writes messages to brokers (a producer per broker, kept).
    pub producers: std::sync::Arc<bida_actors::produce::Producers>,
    pub delayed: bida_actors::delayed::DelayedService,
    pub consumers: bida_actors::consumer::ConsumerService,
    /// The built-in broker's topics.
    pub topics: bida_actors::topics::TopicService,
    /// Descriptor sets for gRPC deliveries.
    pub descriptors: bida_actors::delivery::Descriptors,
    /// What members of pull consumers ask: pull, ack, nack, heartbeat.
    pub pulls: bida_actors::pull::PullService,
    pub access: bida_actors::access::AccessService,
    pub auth: bida_actors::access::AuthConfig,
    pub users: bida_actors::users::UserService,
    pub console: bida_actors::users::ConsoleConfig,
    /// Console login attempts per client address.
    pub login_limits: std::sync::Arc<LoginLimits>,
    /// Per-key rate limits, shared by the node's workers.
    pub limits: std::sync::Arc<KeyLimits>,
    pub store: Store,
    pub config: ApiConfig,
    pub node_id: String,
    /// A node whose heartbeat is older is shown as not alive.
    pub node_ttl: std::time::Duration,
    /// This node's instruments as Prometheus text (`None`: `/metrics` is 404).
    pub metrics: Option<bida_telemetry::MetricsText>,
}

impl ApiState {
    /// Whether a node is up: not stopped, and its heartbeat within `node_ttl`.
    pub fn is_alive(&self, node: &bida_store::NodeInfo, now: chrono::DateTime<chrono::Utc>) -> bool {
        node.stopped_at.is_none() && (now - node.heartbeat_at).to_std().is_ok_and(|age| age < self.node_ttl)
    }
}

/// Registers every route; the app must also carry `web::Data<ApiState>`.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .app_data(web::PathConfig::default().error_handler(|e, _| {
            Problem::bad_request("invalid-path", format!("the path is not valid here: {e}")).into()
        }))
        .configure(tasks::routes)
        .configure(brokers::routes)
        .configure(topics::routes)
        .configure(descriptors::routes)
        .configure(delayed::routes)
        .configure(pull::routes)
        .configure(consumers::routes)
        .configure(monitoring::routes)
        .configure(apps::routes)
        .route("/v1/audit/{kind}/{id}", web::get().to(history::audit))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/openapi.json", web::get().to(openapi::document))
        .configure(console::routes);
}
