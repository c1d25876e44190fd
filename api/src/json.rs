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

/// A JSON request body. No body reads as `null`, so `JsonBody<Option<T>>`
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
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                // serde reads a struct from an array by position; no body here is one.
                return Err(Problem::bad_request("invalid-json", "the body must be a JSON object"));
            }
            // No body at all reads as `null`; whitespace alone is not JSON.
            let text: &[u8] = if body.is_empty() { b"null" } else { &body };
            let mut json = serde_json::Deserializer::from_slice(text);
            let value = match serde_path_to_error::deserialize(&mut json) {
                Ok(value) => json.end().map(|()| value).map_err(|e| {
                    Problem::bad_request("invalid-json", format!("the body has more after the JSON value: {e}"))
                })?,
                Err(_) if body.is_empty() => {
                    return Err(Problem::bad_request(
                        "invalid-json",
                        "the request needs a JSON body; see /openapi.json",
                    ))
                }
                Err(e) if is_integral_float_error(&e) => with_integral_floats_as_integers(text).map_err(invalid)?,
                Err(e) => return Err(invalid(e)),
            };
            Ok(JsonBody(value))
        })
    }
}

/// A body already parsed as JSON (a gRPC message mapped to JSON), read as
/// `T` with the same problems as an HTTP body.
pub(crate) fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(invalid)
}

fn invalid(e: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let field = e.path().to_string();
    let mut problem = Problem::bad_request("invalid-json", format!("the body is not valid here: {e}"));
    if field != "." && field != "?" {
        problem.errors.push(bida_domain::FieldError {
            field,
            message: e.inner().to_string(),
        });
    }
    problem
}

fn is_integral_float_error(e: &serde_path_to_error::Error<serde_json::Error>) -> bool {
    e.inner().to_string().starts_with("invalid type: floating point")
}

/// JSON Schema counts `303.0` as an integer; serde does not. Only the fields
/// the type declares as integers are rewritten (the error names each), so a
/// task's own payload keeps its numbers exactly as sent.
fn with_integral_floats_as_integers<T: DeserializeOwned>(
    text: &[u8],
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    let mut value: serde_json::Value =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(text))?;
    loop {
        match serde_path_to_error::deserialize(value.clone()) {
            Err(e) if is_integral_float_error(&e) => {
                let Some(number) = at_path(&mut value, &e.path().to_string()).filter(|n| n.is_f64()) else {
                    return Err(e);
                };
                let float = number.clone();
                bida_domain::integral_floats_as_integers(number);
                if *number == float {
                    return Err(e);
                }
            }
            result => return result,
        }
    }
}

/// The value at a path as serde_path_to_error writes it (`a.b[2].c`).
fn at_path<'v>(value: &'v mut serde_json::Value, path: &str) -> Option<&'v mut serde_json::Value> {
    let mut here = value;
    for segment in path.split('.') {
        let (key, indexes) = segment.split_once('[').map_or((segment, ""), |(k, rest)| (k, rest));
        if !key.is_empty() {
            here = here.as_object_mut()?.get_mut(key)?;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let index: usize = index.trim_end_matches(']').parse().ok()?;
            here = here.as_array_mut()?.get_mut(index)?;
        }
    }
    Some(here)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        n: Vec<u32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        a: i64,
        inner: Inner,
        payload: serde_json::Value,
    }

    #[test]
    fn integral_floats_fill_integer_fields_only() {
        let text = br#"{"a": -3.0, "inner": {"n": [1, 2.0, 3e2]}, "payload": {"x": 1.0}}"#;
        let outer: Outer = with_integral_floats_as_integers(text).unwrap();
        assert_eq!(outer.a, -3);
        assert_eq!(outer.inner.n, vec![1, 2, 300]);
        assert_eq!(outer.payload["x"].as_f64(), Some(1.0));
        assert!(outer.payload["x"].is_f64(), "a payload keeps its float");
        let fraction = with_integral_floats_as_integers::<Outer>(br#"{"a": 1.5, "inner": {"n": []}, "payload": 0}"#);
        assert_eq!(fraction.unwrap_err().path().to_string(), "a");
    }
}
