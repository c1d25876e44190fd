//! `bida.v1.Messages`: POST /v1/brokers/{id}/messages.

use actix_web::http::StatusCode;
use actix_web::web;
use serde_json::{json, Map, Value};
use tonic::{Request, Response, Status};

use super::admit;
use super::bridge::{reply, status, to_json};
use super::proto::{
    messages_server::Messages, DelayedMessage, DelayedRequest, ProduceRequest, ProduceResponse, Written,
};
use crate::brokers::Produced;
use crate::problem::Problem;
use crate::ApiState;

pub struct MessagesApi(pub web::Data<ApiState>);

/// The HTTP API's batch body: each message with its `target` fields at its top.
fn batch(request: &ProduceRequest) -> Result<Value, Status> {
    let mut messages = Vec::with_capacity(request.messages.len());
    for (index, message) in request.messages.iter().enumerate() {
        let mut fields = match to_json(message, "bida.v1.OutgoingMessage")? {
            Value::Object(fields) => fields,
            _ => Map::new(),
        };
        if let Some(Value::Object(target)) = fields.remove("target") {
            for (name, value) in target {
                if fields.contains_key(&name) {
                    let detail =
                        format!("messages[{index}].target.{name} is a field of the message itself; set it there");
                    return Err(status(Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        detail,
                    )));
                }
                fields.insert(name, value);
            }
        }
        messages.push(Value::Object(fields));
    }
    Ok(json!({ "messages": messages }))
}

#[tonic::async_trait]
impl Messages for MessagesApi {
    async fn produce(&self, request: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        let admitted = admit(&self.0, &request, "bida.v1.Messages/Produce").await?;
        let body = batch(request.get_ref())?;
        let broker = &request.get_ref().broker_id;
        let produced = admitted
            .run(crate::brokers::write(&self.0, &admitted.caller, broker, body))
            .await
            .map_err(status)?;
        let response = match produced {
            Produced::Now(result) => {
                let mut written = Vec::with_capacity(result.messages.len());
                for message in result.messages {
                    let landed = match serde_json::to_value(&message.at) {
                        Ok(Value::Object(fields)) => fields,
                        _ => Map::new(),
                    };
                    written.push(Written {
                        index: message.index as u32,
                        landed: Some(super::json_struct(landed)),
                    });
                }
                ProduceResponse {
                    written,
                    delayed: Vec::new(),
                }
            }
            Produced::Delayed(accepted) => reply(&json!({ "delayed": accepted.messages }), "bida.v1.ProduceResponse")?,
        };
        Ok(Response::new(response))
    }

    async fn get_delayed(&self, request: Request<DelayedRequest>) -> Result<Response<DelayedMessage>, Status> {
        let admitted = admit(&self.0, &request, "bida.v1.Messages/GetDelayed").await?;
        let shown = crate::delayed::shown_delayed(&self.0, &admitted.caller, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(reply(&shown, "bida.v1.DelayedMessage")?))
    }

    async fn cancel_delayed(&self, request: Request<DelayedRequest>) -> Result<Response<DelayedMessage>, Status> {
        let admitted = admit(&self.0, &request, "bida.v1.Messages/CancelDelayed").await?;
        let cancelled = admitted
            .run(crate::delayed::cancel_delayed(
                &self.0,
                &admitted.caller,
                &request.get_ref().id,
            ))
            .await
            .map_err(status)?;
        Ok(Response::new(reply(&cancelled, "bida.v1.DelayedMessage")?))
    }
}
