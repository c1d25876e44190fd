//! The one gate every request passes: which key is calling, from where, and
//! whether its role may use the route.
//!
//! [`RULES`] names the access of every route; a route without a rule answers
//! 405 to every method, so one cannot be added open by mistake (and the
//! access tests fail until it has one).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, ALLOW, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use bida_actors::access::Refusal;
use bida_actors::audit::{acting_as, Requester};
use bida_domain::access::{Caller, Need};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::time::Duration;

use crate::problem::Problem;
use crate::ApiState;

/// What a route requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Probes: no key.
    Open,
    /// `/openapi.json`: open unless `auth.protect_openapi`, then any key.
    Document,
    /// `/metrics`: open unless `auth.protect_metrics`, then viewer or above.
    Metrics,
    /// A key whose role meets the need.
    Key(Need),
    /// A console page: a logged-in user whose role meets the need (others
    /// are sent to the login page).
    Page(Need),
    /// A console form: as a page, from the console's own origin, with the
    /// session's CSRF token (checked by [`crate::console::ConsoleForm`]).
    Action(Need),
}

use Access::*;
use Need::*;

/// Every route with its access, by method and path pattern.
pub const RULES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Open),
    ("GET", "/readyz", Open),
    ("GET", "/openapi.json", Document),
    ("GET", "/metrics", Metrics),
    ("POST", "/v1/tasks", Key(Submit)),
    ("GET", "/v1/tasks", Key(ReadTasks)),
    ("POST", "/v1/tasks/replay", Key(Operate)),
    ("GET", "/v1/tasks/{id}", Key(ReadTasks)),
    ("GET", "/v1/tasks/{id}/events", Key(ReadTasks)),
    ("POST", "/v1/tasks/{id}/retry", Key(Operate)),
    ("POST", "/v1/tasks/{id}/cancel", Key(Operate)),
    ("POST", "/v1/tasks/{id}/replay", Key(Operate)),
    ("POST", "/v1/brokers", Key(Operate)),
    ("GET", "/v1/brokers", Key(Read)),
    ("GET", "/v1/brokers/{id}", Key(Read)),
    ("PATCH", "/v1/brokers/{id}", Key(Operate)),
    ("DELETE", "/v1/brokers/{id}", Key(Operate)),
    ("GET", "/v1/brokers/{id}/events", Key(Read)),
    ("POST", "/v1/brokers/{id}/offline", Key(Operate)),
    ("POST", "/v1/brokers/{id}/online", Key(Operate)),
    ("POST", "/v1/brokers/{id}/messages", Key(Submit)),
    ("POST", "/v1/descriptors", Key(Operate)),
    ("GET", "/v1/descriptors", Key(Read)),
    ("GET", "/v1/descriptors/{id}", Key(Read)),
    ("DELETE", "/v1/descriptors/{id}", Key(Operate)),
    ("POST", "/v1/topics", Key(Operate)),
    ("GET", "/v1/topics", Key(Read)),
    ("GET", "/v1/topics/{name}", Key(Read)),
    ("PATCH", "/v1/topics/{name}", Key(Operate)),
    ("DELETE", "/v1/topics/{name}", Key(Operate)),
    ("GET", "/v1/topics/{name}/events", Key(Read)),
    ("POST", "/v1/topics/{name}/messages", Key(Submit)),
    ("GET", "/v1/topics/{name}/messages", Key(Read)),
    ("GET", "/v1/delayed", Key(ReadTasks)),
    ("GET", "/v1/delayed/{id}", Key(ReadTasks)),
    ("DELETE", "/v1/delayed/{id}", Key(Submit)),
    ("POST", "/v1/consumers", Key(Operate)),
    ("GET", "/v1/consumers", Key(Read)),
    ("GET", "/v1/consumers/{id}", Key(Read)),
    ("PATCH", "/v1/consumers/{id}", Key(Operate)),
    ("DELETE", "/v1/consumers/{id}", Key(Operate)),
    ("GET", "/v1/consumers/{id}/events", Key(Read)),
    ("POST", "/v1/consumers/{id}/reset-offsets", Key(Operate)),
    ("POST", "/v1/consumers/{id}/resend", Key(Operate)),
    ("POST", "/v1/consumers/{id}/lanes/{key}/replay", Key(Operate)),
    ("POST", "/v1/consumers/{id}/pull", Key(Submit)),
    ("POST", "/v1/consumers/{id}/ack", Key(Submit)),
    ("POST", "/v1/consumers/{id}/nack", Key(Submit)),
    ("GET", "/v1/consumers/{id}/members", Key(Read)),
    ("DELETE", "/v1/consumers/{id}/members/{member}", Key(Operate)),
    ("POST", "/v1/consumers/{id}/members/{member}/heartbeat", Key(Submit)),
    ("POST", "/v1/consumers/{id}/{action}", Key(Operate)),
    ("GET", "/v1/stats", Key(Read)),
    ("GET", "/v1/stats/overview", Key(Read)),
    ("GET", "/v1/nodes", Key(Read)),
    ("POST", "/v1/apps", Key(Administer)),
    ("GET", "/v1/apps", Key(Administer)),
    ("GET", "/v1/apps/{id}", Key(Administer)),
    ("PATCH", "/v1/apps/{id}", Key(Administer)),
    ("DELETE", "/v1/apps/{id}", Key(Administer)),
    ("GET", "/v1/apps/{id}/events", Key(Administer)),
    ("POST", "/v1/apps/{id}/secret/rotate", Key(Administer)),
    ("POST", "/v1/apps/{id}/keys", Key(Administer)),
    ("GET", "/v1/apps/{id}/keys", Key(Administer)),
    ("DELETE", "/v1/apps/{id}/keys/{key_id}", Key(Administer)),
    ("POST", "/v1/keys", Key(Administer)),
    ("GET", "/v1/keys", Key(Administer)),
    ("DELETE", "/v1/keys/{key_id}", Key(Administer)),
    ("GET", "/v1/audit/{kind}/{id}", Key(Administer)),
];

/// The rule of a method on a path pattern: `Ok(None)` when no route has the
/// pattern, `Err(allowed)` when it has others' methods only.
pub fn rule(method: &str, pattern: &str) -> Result<Option<Access>, Vec<&'static str>> {
    let mut allowed = Vec::new();
    for (m, p, access) in RULES.iter().chain(crate::console::CONSOLE_RULES) {
        if *p == pattern {
            if *m == method {
                return Ok(Some(*access));
            }
            allowed.push(*m);
        }
    }
    if allowed.is_empty() {
        Ok(None)
    } else {
        Err(allowed)
    }
}

/// Requests per second allowed to one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key; 0 turns the limit off.
    pub per_second: u32,
    /// Requests a key may make at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 5_000,
            burst: 10_000,
        }
    }
}

/// The per-key rate limiter (GCRA), shared by every worker of a node.
pub struct KeyLimits(Option<DefaultKeyedRateLimiter<String>>);

impl KeyLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self(NonZeroU32::new(config.per_second).map(|rate| {
            let burst = NonZeroU32::new(config.burst.max(config.per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        }))
    }

    /// `Err(wait)` when the key is over its rate.
    fn check(&self, key_id: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.0 else { return Ok(()) };
        limiter
            .check_key(&key_id.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

pub(crate) fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

fn presented_key(request: &ServiceRequest) -> Result<&str, Problem> {
    bearer(request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes))
}

/// The key of an `Authorization: Bearer <key>` header (or gRPC metadata).
pub(crate) fn bearer(value: Option<&[u8]>) -> Result<&str, Problem> {
    let value = value.ok_or_else(|| unauthorized("this route needs `Authorization: Bearer <key>`"))?;
    let text = std::str::from_utf8(value)
        .ok()
        .filter(|t| t.bytes().all(|b| b == b' ' || b.is_ascii_graphic()))
        .ok_or_else(|| unauthorized("the Authorization header is not visible ASCII"))?;
    match text.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() => Ok(key.trim()),
        _ => Err(unauthorized("the Authorization header must be `Bearer <key>`")),
    }
}

/// The middleware: checks the route's rule, then runs the handler on behalf
/// of the caller (its events record who and from where).
pub async fn gate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refuse = |request: ServiceRequest, problem: Problem| {
        let mut response = problem.error_response();
        if problem.status == 401 {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Ok(request.into_response(response).map_into_right_body())
    };
    let pattern = request.match_pattern();
    let access = match pattern.as_deref().map(|p| rule(request.method().as_str(), p)) {
        // No such route: the router answers 404.
        None => return next.call(request).await.map(ServiceResponse::map_into_left_body),
        Some(Ok(Some(access))) => access,
        // A route nobody gave a rule: closed until it has one.
        Some(Ok(None)) => {
            tracing::error!(route = ?pattern, "a route without an access rule was refused; add it to RULES");
            return refuse(request, forbidden("this route has no access rule yet"));
        }
        Some(Err(allowed)) => {
            let problem = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!(
                    "{} is not allowed on {}; it takes {}",
                    request.method(),
                    request.path(),
                    allowed.join(", ")
                ),
            );
            let mut response = problem.error_response();
            if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(ALLOW, value);
            }
            return Ok(request.into_response(response).map_into_right_body());
        }
    };
    // Nothing Bida keeps has NUL in its id (Postgres text cannot hold it).
    if request.path().contains("%00") {
        return refuse(request, Problem::not_found("no such resource"));
    }
    let Some(state) = request.app_data::<web::Data<ApiState>>().cloned() else {
        return refuse(
            request,
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no API state"),
        );
    };
    let need = match access {
        Open => None,
        Document => state.auth.protect_openapi.then_some(ReadTasks),
        Metrics => state.auth.protect_metrics.then_some(Read),
        Key(need) => Some(need),
        Page(need) | Action(need) => {
            return crate::console::admit(request, next, &state, need, matches!(access, Action(_)))
                .await
                .map(ServiceResponse::map_into_right_body);
        }
    };
    let Some(need) = need else {
        return next.call(request).await.map(ServiceResponse::map_into_left_body);
    };
    let key = match presented_key(&request) {
        Ok(key) => key.to_string(),
        Err(problem) => return refuse(request, problem),
    };
    let client_ip = request.peer_addr().map(|a| a.ip());
    let what = format!("{} {}", request.method(), pattern.unwrap_or_default());
    let caller = match admit(&state, &key, client_ip, need, &what).await {
        Ok(caller) => caller,
        Err(Denied::Refused(problem)) => return refuse(request, problem),
        Err(Denied::OverRate { seconds }) => {
            let mut response = over_rate(seconds).error_response();
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
            return Ok(request.into_response(response).map_into_right_body());
        }
    };
    let requester = Requester::new(&caller, client_ip);
    request.extensions_mut().insert(caller);
    acting_as(requester, next.call(request))
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Why a key was not let through.
pub(crate) enum Denied {
    /// Unknown, from a network its app does not allow, or its role falls short.
    Refused(Problem),
    /// Over its rate: it may try again in `seconds`.
    OverRate { seconds: u64 },
}

pub(crate) fn over_rate(seconds: u64) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        format!("this key is over its rate (api.rate_limit); try again in {seconds} s"),
    )
}

/// The checks of a key, for HTTP routes and gRPC methods alike: that it is
/// known, called from a network its app allows, has a role that meets
/// `need` (`what` names the request in the refusal) and is within its rate.
pub(crate) async fn admit(
    state: &ApiState,
    key: &str,
    client_ip: Option<std::net::IpAddr>,
    need: Need,
    what: &str,
) -> Result<Caller, Denied> {
    let caller = match state.access.authenticate(key).await {
        Ok(caller) => caller,
        Err(Refusal::UnknownKey) => return Err(Denied::Refused(unauthorized(&Refusal::UnknownKey.to_string()))),
        Err(e @ Refusal::Unavailable(_)) => {
            return Err(Denied::Refused(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )))
        }
    };
    let from_allowed = match client_ip {
        Some(ip) => caller.may_call_from(ip),
        // An unknown address is in no allowed network.
        None => caller.networks.is_empty(),
    };
    if !from_allowed {
        let from = client_ip.map_or("an unknown address".to_string(), |ip| ip.to_string());
        return Err(Denied::Refused(forbidden(format!(
            "this key's app does not allow requests from {from}"
        ))));
    }
    if !caller.may(need) {
        return Err(Denied::Refused(forbidden(format!(
            "a {} key may not {what}",
            caller.role
        ))));
    }
    if let Err(wait) = state.limits.check(&caller.key_id) {
        return Err(Denied::OverRate {
            seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    Ok(caller)
}

/// The caller of a route behind a key.
pub fn caller(request: &actix_web::HttpRequest) -> Result<Caller, Problem> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| unauthorized("this route needs `Authorization: Bearer <key>`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_unique() {
        for (i, (m, p, _)) in RULES.iter().enumerate() {
            assert!(
                !RULES[i + 1..].iter().any(|(m2, p2, _)| m == m2 && p == p2),
                "{m} {p} has two rules"
            );
        }
    }

    #[actix_web::test]
    async fn a_route_without_a_rule_is_closed_to_everyone() {
        use actix_web::{test, App, HttpResponse};
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(gate))
                .route("/v1/unruled", web::get().to(HttpResponse::Ok))
                .route("/v1/tasks", web::get().to(HttpResponse::Ok)),
        )
        .await;
        let response = test::call_service(&app, test::TestRequest::get().uri("/v1/unruled").to_request()).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = test::call_service(&app, test::TestRequest::get().uri("/nowhere").to_request()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = test::call_service(&app, test::TestRequest::delete().uri("/v1/tasks").to_request()).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn methods_a_route_lacks_are_named() {
        assert_eq!(rule("GET", "/v1/tasks"), Ok(Some(Key(ReadTasks))));
        assert_eq!(rule("PUT", "/v1/tasks"), Err(vec!["POST", "GET"]));
        assert_eq!(rule("GET", "/nowhere"), Ok(None));
    }
}
