//! A gRPC message as the HTTP API's JSON body, and back: field names as in
//! the `.proto` files (the HTTP API's names), 64-bit integers as numbers,
//! unset fields left out, timestamps as RFC 3339. Mapped this way, a gRPC
//! call is read and checked by the same code as its HTTP route.

use bida_domain::FieldError;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::Value;
use std::sync::LazyLock;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::problem::Problem;

/// `proto/bida/v1` as built into the binary (also served by reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bida_descriptor.bin"));

static POOL: LazyLock<DescriptorPool> =
    LazyLock::new(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("build.rs wrote a valid descriptor set"));

fn descriptor(name: &str) -> Result<prost_reflect::MessageDescriptor, Status> {
    POOL.get_message_by_name(name)
        .ok_or_else(|| Status::internal(format!("{name} is not in Bida's descriptor set")))
}

/// `message` (of the type named `name`) as JSON. `google.protobuf.Value`
/// holds numbers as doubles: whole ones are written as integers, as a JSON
/// client would have sent them.
pub fn to_json(message: &impl Message, name: &str) -> Result<Value, Status> {
    let dynamic = DynamicMessage::decode(descriptor(name)?, message.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("cannot read back a {name}: {e}")))?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    let mut json = dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| Status::internal(format!("cannot map a {name} to JSON: {e}")))?;
    bida_domain::integral_floats_as_integers(&mut json);
    Ok(json)
}

/// The message of type `name` that `json` describes; fields the message does
/// not have are left out.
pub fn from_json<M: Message + Default>(json: &Value, name: &str) -> Result<M, Status> {
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let dynamic = DynamicMessage::deserialize_with_options(descriptor(name)?, json, &options)
        .map_err(|e| Status::internal(format!("cannot map JSON to a {name}: {e}")))?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| Status::internal(format!("cannot build a {name}: {e}")))
}

/// A value of the JSON API as a message of type `name`.
pub fn reply<M: Message + Default>(value: &impl serde::Serialize, name: &str) -> Result<M, Status> {
    let json = serde_json::to_value(value).map_err(|e| Status::internal(format!("cannot write a {name}: {e}")))?;
    from_json(&json, name)
}

/// The problem an HTTP route would answer, as a gRPC status: the fields at
/// fault as a `google.rpc.BadRequest` detail.
pub fn status(problem: Problem) -> Status {
    let code = match problem.status {
        400 | 413 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 | 410 => Code::NotFound,
        409 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    };
    let mut message = problem.detail;
    if let Some(written) = &problem.written {
        let indexes: Vec<String> = written
            .iter()
            .filter_map(|w| w.get("index").map(Value::to_string))
            .collect();
        message.push_str(&format!(
            " (written before the failure: messages {}; the others were not written)",
            indexes.join(", ")
        ));
    }
    if problem.errors.is_empty() {
        return Status::new(code, message);
    }
    let violations = problem
        .errors
        .into_iter()
        .map(|FieldError { field, message }| FieldViolation::new(field, message))
        .collect::<Vec<_>>();
    Status::with_error_details(code, message, ErrorDetails::with_bad_request(violations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::proto::{Backoff, SubmitTaskRequest};
    use serde_json::json;

    #[test]
    fn a_submission_maps_to_the_json_of_post_v1_tasks() {
        let request = SubmitTaskRequest {
            url: "http://a.example/x".into(),
            params: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(3.0)),
            }),
            max_attempts: Some(0),
            backoff: Some(Backoff {
                initial_ms: Some(250),
                ..Backoff::default()
            }),
            idempotency_key: Some("k".into()),
            ..SubmitTaskRequest::default()
        };
        let json = to_json(&request, "bida.v1.SubmitTaskRequest").unwrap();
        assert_eq!(
            json,
            json!({"url": "http://a.example/x", "params": 3, "max_attempts": 0,
                   "backoff": {"initial_ms": 250}, "idempotency_key": "k"})
        );
    }

    #[test]
    fn field_errors_become_a_bad_request_detail() {
        let mut problem = Problem::new(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid", "bad");
        problem.errors.push(FieldError {
            field: "url".into(),
            message: "is required".into(),
        });
        let status = status(problem);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(
            (violations[0].field.as_str(), violations[0].description.as_str()),
            ("url", "is required")
        );
    }
}
