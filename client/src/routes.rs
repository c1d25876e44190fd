//! The routes this client calls, one constant each: the client builds every
//! request from these, and the crate's tests check each one is an operation
//! of the server's OpenAPI document.

/// An HTTP method, as the OpenAPI document names it (lower case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Patch,
    Delete,
}

impl Verb {
    /// The method's name in an OpenAPI path item (`get`, `post`...).
    pub fn openapi_name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    pub(crate) fn method(self) -> reqwest::Method {
        match self {
            Verb::Get => reqwest::Method::GET,
            Verb::Post => reqwest::Method::POST,
            Verb::Patch => reqwest::Method::PATCH,
            Verb::Delete => reqwest::Method::DELETE,
        }
    }
}

/// A method and a path template (`{name}` for each path parameter, filled in
/// order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub verb: Verb,
    pub path: &'static str,
}

const fn route(verb: Verb, path: &'static str) -> Route {
    Route { verb, path }
}

pub const SUBMIT_TASK: Route = route(Verb::Post, "/v1/tasks");
pub const LIST_TASKS: Route = route(Verb::Get, "/v1/tasks");
pub const GET_TASK: Route = route(Verb::Get, "/v1/tasks/{id}");
pub const CANCEL_TASK: Route = route(Verb::Post, "/v1/tasks/{id}/cancel");
pub const RETRY_TASK: Route = route(Verb::Post, "/v1/tasks/{id}/retry");
pub const REPLAY_TASK: Route = route(Verb::Post, "/v1/tasks/{id}/replay");
pub const REPLAY_TASKS: Route = route(Verb::Post, "/v1/tasks/replay");

pub const REGISTER_BROKER: Route = route(Verb::Post, "/v1/brokers");
pub const LIST_BROKERS: Route = route(Verb::Get, "/v1/brokers");
pub const GET_BROKER: Route = route(Verb::Get, "/v1/brokers/{id}");
pub const PRODUCE: Route = route(Verb::Post, "/v1/brokers/{id}/messages");

pub const LIST_DELAYED: Route = route(Verb::Get, "/v1/delayed");
pub const GET_DELAYED: Route = route(Verb::Get, "/v1/delayed/{id}");
pub const CANCEL_DELAYED: Route = route(Verb::Delete, "/v1/delayed/{id}");

pub const CREATE_CONSUMER: Route = route(Verb::Post, "/v1/consumers");
pub const LIST_CONSUMERS: Route = route(Verb::Get, "/v1/consumers");
pub const GET_CONSUMER: Route = route(Verb::Get, "/v1/consumers/{id}");
pub const PATCH_CONSUMER: Route = route(Verb::Patch, "/v1/consumers/{id}");
pub const DELETE_CONSUMER: Route = route(Verb::Delete, "/v1/consumers/{id}");
/// `pause`, `resume`, `stop` or `start` ([`crate::ConsumerAction`]).
pub const CONSUMER_ACTION: Route = route(Verb::Post, "/v1/consumers/{id}/{action}");
pub const RESET_OFFSETS: Route = route(Verb::Post, "/v1/consumers/{id}/reset-offsets");
pub const RESEND: Route = route(Verb::Post, "/v1/consumers/{id}/resend");

pub const PULL: Route = route(Verb::Post, "/v1/consumers/{id}/pull");
pub const ACK: Route = route(Verb::Post, "/v1/consumers/{id}/ack");
pub const NACK: Route = route(Verb::Post, "/v1/consumers/{id}/nack");
pub const HEARTBEAT: Route = route(Verb::Post, "/v1/consumers/{id}/members/{member}/heartbeat");
pub const MEMBERS: Route = route(Verb::Get, "/v1/consumers/{id}/members");

/// Every route the client calls.
pub const ALL: &[Route] = &[
    SUBMIT_TASK,
    LIST_TASKS,
    GET_TASK,
    CANCEL_TASK,
    RETRY_TASK,
    REPLAY_TASK,
    REPLAY_TASKS,
    REGISTER_BROKER,
    LIST_BROKERS,
    GET_BROKER,
    PRODUCE,
    LIST_DELAYED,
    GET_DELAYED,
    CANCEL_DELAYED,
    CREATE_CONSUMER,
    LIST_CONSUMERS,
    GET_CONSUMER,
    PATCH_CONSUMER,
    DELETE_CONSUMER,
    CONSUMER_ACTION,
    RESET_OFFSETS,
    RESEND,
    PULL,
    ACK,
    NACK,
    HEARTBEAT,
    MEMBERS,
];
