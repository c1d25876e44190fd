//! Bida's gRPC interface (`proto/bida/v1`, package `bida.v1`): submitting and
//! reading tasks, writing to brokers, and pull consumers' members, on a port
//! of its own (`grpc_listen`), with the reflection service. Each call is
//! admitted as the HTTP route it mirrors would be (the key in
//! `authorization` metadata, the route's rule in [`crate::access::RULES`],
//! the app's networks, the key's rate) and runs the same code as that route.

mod bridge;
mod messages;
mod pull;
mod tasks;

/// The message types, server traits and clients generated from `proto/bida/v1`.
pub mod proto {
    tonic::include_proto!("bida.v1");
}

use actix_web::web;
use bida_actors::audit::{acting_as, Requester};
use bida_domain::access::Caller;
use std::future::Future;
use tokio::sync::watch;
use tonic::{Request, Status};

use crate::access::{self, Access, Denied};
use crate::ApiState;
pub use bridge::FILE_DESCRIPTOR_SET;

/// A JSON value as a `google.protobuf.Value` (for `params`, `body`, `expect`).
pub fn json_value(json: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(json_struct(fields)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `google.protobuf.Struct` (for a message's `target`).
pub fn json_struct(fields: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields.into_iter().map(|(k, v)| (k, json_value(v))).collect(),
    }
}

/// A caller let through, and who its events are recorded as made by.
pub(crate) struct Admitted {
    pub caller: Caller,
    requester: Requester,
}

impl Admitted {
    /// Runs `work` on behalf of the caller (its events record who and from where).
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        acting_as(self.requester.clone(), work).await
    }
}

/// Every method with the HTTP route it mirrors: it takes that route's
/// access rule (a method missing here is refused to everyone).
pub(crate) const METHODS: &[(&str, (&str, &str))] = &[
    ("bida.v1.Tasks/SubmitTask", ("POST", "/v1/tasks")),
    ("bida.v1.Tasks/GetTask", ("GET", "/v1/tasks/{id}")),
    ("bida.v1.Messages/Produce", ("POST", "/v1/brokers/{id}/messages")),
    ("bida.v1.Messages/GetDelayed", ("GET", "/v1/delayed/{id}")),
    ("bida.v1.Messages/CancelDelayed", ("DELETE", "/v1/delayed/{id}")),
    ("bida.v1.Pull/Consume", ("POST", "/v1/consumers/{id}/pull")),
    ("bida.v1.Pull/Ack", ("POST", "/v1/consumers/{id}/ack")),
    ("bida.v1.Pull/Nack", ("POST", "/v1/consumers/{id}/nack")),
];

fn need(method: &str) -> Option<bida_domain::access::Need> {
    let (_, (verb, path)) = METHODS.iter().find(|(m, _)| *m == method)?;
    match access::rule(verb, path) {
        Ok(Some(Access::Key(need))) => Some(need),
        _ => None,
    }
}

/// Lets a call of `method` (`bida.v1.Tasks/SubmitTask`) through as the HTTP
/// route it mirrors would be.
pub(crate) async fn admit<T>(state: &ApiState, request: &Request<T>, method: &str) -> Result<Admitted, Status> {
    let Some(need) = need(method) else {
        tracing::error!(
            method,
            "a gRPC method without an access rule was refused; add it to METHODS"
        );
        return Err(Status::permission_denied(format!("{method} has no access rule yet")));
    };
    let key = access::bearer(request.metadata().get("authorization").map(|v| v.as_bytes())).map_err(bridge::status)?;
    let client_ip = request.remote_addr().map(|a| a.ip());
    match access::admit(state, key, client_ip, need, &format!("call {method}")).await {
        Ok(caller) => Ok(Admitted {
            requester: Requester::new(&caller, client_ip),
            caller,
        }),
        Err(Denied::Refused(problem)) => Err(bridge::status(problem)),
        Err(Denied::OverRate { seconds }) => {
            let problem = access::over_rate(seconds);
            Err(<Status as tonic_types::StatusExt>::with_error_details(
                tonic::Code::ResourceExhausted,
                problem.detail,
                tonic_types::ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(seconds))),
            ))
        }
    }
}

/// Serves the interface on `listener` until `stop` turns true; open pull
/// streams end then.
pub async fn serve(
    listener: std::net::TcpListener,
    state: web::Data<ApiState>,
    stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    listener.set_nonblocking(true)?;
    // Small answers go out at once (no Nagle delay), as tonic's own binding does.
    let incoming = tonic::transport::server::TcpIncoming::from(tokio::net::TcpListener::from_std(listener)?)
        .with_nodelay(Some(true));
    // Reflection describes the interface as /openapi.json describes the HTTP
    // API: served unless that document is kept behind a key.
    let reflection = match state.auth.protect_openapi {
        true => None,
        false => Some(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .build_v1()?,
        ),
    };
    let mut until_stopped = stop.clone();
    tonic::transport::Server::builder()
        .add_optional_service(reflection)
        .add_service(proto::tasks_server::TasksServer::new(tasks::TasksApi(state.clone())))
        .add_service(proto::messages_server::MessagesServer::new(messages::MessagesApi(
            state.clone(),
        )))
        .add_service(proto::pull_server::PullServer::new(pull::PullApi { state, stop }))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = until_stopped.wait_for(|stopped| *stopped).await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_interface_has_the_rule_of_a_keyed_route() {
        let pool = prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                methods.push(format!("{}/{}", service.full_name(), method.name()));
            }
        }
        assert_eq!(methods.len(), METHODS.len(), "{methods:?}");
        for method in methods {
            assert!(need(&method).is_some(), "{method} has no keyed route in METHODS");
        }
    }
}
