//! Logging in and out, the session cookie, and the CSRF token of forms.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use askama::Template;
use bida_actors::users::Session;
use futures_util::future::LocalBoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::net::IpAddr;
use std::num::NonZeroU32;

use super::i18n::{Lang, Tr};
use super::{html, see_other};
use crate::problem::Problem;
use crate::ApiState;

pub const SESSION_COOKIE: &str = "bida_session";
/// Largest console form accepted.
const MAX_FORM: usize = 256 * 1024;

/// Login attempts allowed per client address (GCRA), right or wrong.
pub struct LoginLimits(Option<DefaultKeyedRateLimiter<IpAddr>>);

impl LoginLimits {
    pub fn new(per_minute: u32) -> Self {
        Self(NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))))
    }

    fn allow(&self, address: Option<IpAddr>) -> bool {
        match (&self.0, address) {
            (Some(limiter), Some(address)) => limiter.check_key(&address).is_ok(),
            _ => true,
        }
    }
}

/// The session a request's cookie names, if it is live.
pub async fn of(request: &HttpRequest, state: &ApiState) -> Result<Option<Session>, Problem> {
    let Some(cookie) = request.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(state.users.session(cookie.value()).await?)
}

/// To the login page, coming back to `next` after it.
pub fn to_login(next: &str) -> HttpResponse {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    see_other(&format!("/login?{query}"))
}

/// Whether a form comes from the console's own pages: browsers name the page's
/// origin (`Origin`) or its relation (`Sec-Fetch-Site`) on every POST.
pub fn same_origin(request: &HttpRequest) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" {
            return false;
        }
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = request.connection_info().host().to_string();
            origin
                .split_once("://")
                .is_some_and(|(_, origin_host)| origin_host.eq_ignore_ascii_case(&host))
        }
    }
}

/// Only a path of this console may be where a login leads (no open redirect).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => path.to_string(),
        _ => "/".to_string(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    t: Tr,
    next: String,
    failed: bool,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_page(request: HttpRequest, query: web::Query<LoginQuery>) -> HttpResponse {
    html(&LoginPage {
        t: Tr(Lang::of(&request)),
        next: local_path(query.next.as_deref()),
        failed: false,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

pub async fn log_in(
    request: HttpRequest,
    state: web::Data<ApiState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, Problem> {
    let address = request.peer_addr().map(|a| a.ip());
    let form = form.into_inner();
    let next = local_path(form.next.as_deref());
    let failed = |status: StatusCode| {
        let mut page = html(&LoginPage {
            t: Tr(Lang::of(&request)),
            next: next.clone(),
            failed: true,
        });
        *page.status_mut() = status;
        page
    };
    if !same_origin(&request) {
        return Ok(failed(StatusCode::FORBIDDEN));
    }
    // Counted before the password is checked, so guessing is slow too.
    if !state.login_limits.allow(address) {
        let mut page = failed(StatusCode::TOO_MANY_REQUESTS);
        page.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        return Ok(page);
    }
    let client = address.map(|a| a.to_string());
    let Some(login) = state
        .users
        .log_in(&form.username, &form.password, client.as_deref())
        .await?
    else {
        tracing::info!(username = %form.username.chars().take(64).collect::<String>(), client = ?client, "a console login failed");
        return Ok(failed(StatusCode::UNAUTHORIZED));
    };
    tracing::info!(username = %login.session.username, client = ?client, "logged in to the console");
    let cookie = Cookie::build(SESSION_COOKIE, login.token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.console.secure_cookies)
        .max_age(CookieDuration::hours(i64::from(state.console.session_hours.max(1))))
        .finish();
    let mut response = see_other(&next);
    response
        .add_cookie(&cookie)
        .map_err(|e| Problem::bad_request("cookie", e.to_string()))?;
    Ok(response)
}

pub async fn log_out(
    request: HttpRequest,
    state: web::Data<ApiState>,
    _form: ConsoleForm<Empty>,
) -> Result<HttpResponse, Problem> {
    if let Some(cookie) = request.cookie(SESSION_COOKIE) {
        state.users.log_out(cookie.value()).await?;
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    let mut response = see_other("/login");
    response
        .add_cookie(&gone)
        .map_err(|e| Problem::bad_request("cookie", e.to_string()))?;
    Ok(response)
}

/// A form with nothing but its CSRF token.
#[derive(Debug, Default, Deserialize)]
pub struct Empty {}

/// A console form: URL-encoded fields, the session's CSRF token checked and
/// taken out before the rest is read as `T`.
pub struct ConsoleForm<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ConsoleForm<T> {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = request.extensions().get::<Session>().cloned();
        let body = web::Bytes::from_request(request, payload);
        Box::pin(async move {
            let session =
                session.ok_or_else(|| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "log in first"))?;
            let body = body
                .await
                .map_err(|e| Problem::bad_request("unreadable-body", e.to_string()))?;
            if body.len() > MAX_FORM {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    format!("a console form takes at most {MAX_FORM} bytes"),
                ));
            }
            let mut token = None;
            let mut fields = Vec::new();
            for (name, value) in form_urlencoded::parse(&body) {
                if name == "_csrf" {
                    token = Some(value.into_owned());
                } else {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            }
            if token.as_deref() != Some(session.csrf.as_str()) {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "the form's token is not this session's; reload the page and send it again",
                ));
            }
            let encoded = serde_urlencoded::to_string(&fields).unwrap_or_default();
            serde_urlencoded::from_str(&encoded)
                .map(ConsoleForm)
                .map_err(|e| Problem::bad_request("invalid-form", format!("the form is not valid here: {e}")))
        })
    }
}
