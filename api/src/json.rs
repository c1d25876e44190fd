//! A JSON body extractor whose errors say which field is wrong and which
//! limit was hit, as problem documents.

use actix_web::dev::Payload;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use bytes::BytesMut;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::problem::Problem;
use crate::ApiState;

/// A JSON request body. An empty body reads as `null`, so `JsonBody<Option<T>>`
/// makes the body optional.
pub struct JsonBody<T>(pub T);

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        format!("the request body is larger than {limit} bytes (api.max_body_bytes)"),
    )
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = request
            .app_data::<web::Data<ApiState>>()
            .map_or(1 << 20, |state| state.config.max_body_bytes);
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|length| length > limit) {
                return Err(too_large(limit));
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    Problem::bad_request("unreadable-body", format!("cannot read the request body: {e}"))
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
                b"null"
            } else {
                &body
            };
            let mut json = serde_json::Deserializer::from_slice(text);
            match serde_path_to_error::deserialize(&mut json) {
                Ok(value) => match json.end() {
                    Ok(()) => Ok(JsonBody(value)),
                    Err(e) => Err(Problem::bad_request(
                        "invalid-json",
                        format!("the body has more after the JSON value: {e}"),
                    )),
                },
                Err(_) if body.is_empty() => Err(Problem::bad_request(
                    "invalid-json",
                    "the request needs a JSON body; see /openapi.json",
                )),
                Err(e) => {
                    let field = e.path().to_string();
                    let mut problem = Problem::bad_request("invalid-json", format!("the body is not valid here: {e}"));
                    if field != "." && field != "?" {
                        problem.errors.push(bida_domain::FieldError {
                            field,
                            message: e.inner().to_string(),
                        });
                    }
                    Err(problem)
                }
            }
        })
    }
}

/// Query parameters whose errors name the parameter at fault.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for QueryParams<T> {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let query = request.query_string().as_bytes();
        let parsed =
            serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(form_urlencoded::parse(query)))
                .map(QueryParams)
                .map_err(|e| {
                    let mut problem =
                        Problem::bad_request("invalid-query", format!("the query string is not valid here: {e}"));
                    problem.errors.push(bida_domain::FieldError {
                        field: e.path().to_string(),
                        message: e.inner().to_string(),
                    });
                    problem
                });
        std::future::ready(parsed)
    }
}
