//! The web console: pages rendered on the server (askama templates, compiled
//! into the binary with their styles and script) over the same services and
//! read models as the JSON API, behind the same gate with the same roles.
//! A person logs in with a username and password ([`session`]); every form
//! carries the session's CSRF token.

mod admin;
mod charts;
mod consumers;
mod i18n;
mod overview;
mod session;
mod tasks;

pub use session::LoginLimits;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use askama::Template;
use bida_actors::audit::{acting_as, Requester};
use bida_actors::users::Session;
use bida_domain::access::{Caller, Need, Role};

use crate::access::Access::{self, Action, Open, Page};
use crate::problem::Problem;
use crate::ApiState;
use i18n::{Lang, Tr};
use Need::*;

/// Every console route with its access (the API's are in [`crate::RULES`]).
pub const CONSOLE_RULES: &[(&str, &str, Access)] = &[
    ("GET", "/login", Open),
    ("POST", "/login", Open),
    ("GET", "/static/{file}", Open),
    ("POST", "/logout", Action(ReadTasks)),
    ("GET", "/", Page(Read)),
    ("GET", "/live/overview", Page(Read)),
    ("GET", "/tasks", Page(Read)),
    ("GET", "/tasks/replay", Page(Operate)),
    ("POST", "/tasks/replay", Action(Operate)),
    ("GET", "/tasks/{id}", Page(Read)),
    ("POST", "/tasks/{id}/retry", Action(Operate)),
    ("POST", "/tasks/{id}/cancel", Action(Operate)),
    ("POST", "/tasks/{id}/replay", Action(Operate)),
    ("GET", "/consumers", Page(Read)),
    ("GET", "/live/consumers", Page(Read)),
    ("GET", "/consumers/new", Page(Operate)),
    ("POST", "/consumers/new", Action(Operate)),
    ("GET", "/consumers/{id}", Page(Read)),
    ("POST", "/consumers/{id}/offsets", Action(Operate)),
    ("POST", "/consumers/{id}/resend", Action(Operate)),
    ("POST", "/consumers/{id}/lane", Action(Operate)),
    ("POST", "/consumers/{id}/state", Action(Operate)),
    ("POST", "/consumers/{id}/policy", Action(Operate)),
    ("GET", "/brokers", Page(Read)),
    ("GET", "/brokers/new", Page(Operate)),
    ("POST", "/brokers/new", Action(Operate)),
    ("GET", "/brokers/{id}", Page(Read)),
    ("POST", "/brokers/{id}/edit", Action(Operate)),
    ("POST", "/brokers/{id}/delete", Action(Operate)),
    ("POST", "/apps/{id}/delete", Action(Administer)),
    ("POST", "/apps/{id}/edit", Action(Administer)),
    ("POST", "/brokers/{id}/online", Action(Operate)),
    ("GET", "/nodes", Page(Read)),
    ("GET", "/apps", Page(Administer)),
    ("POST", "/apps", Action(Administer)),
    ("POST", "/apps/{id}/secret", Action(Administer)),
    ("POST", "/keys", Action(Administer)),
    ("POST", "/keys/{id}/revoke", Action(Administer)),
    ("GET", "/users", Page(Administer)),
    ("POST", "/users", Action(Administer)),
    ("POST", "/users/{username}", Action(Administer)),
];

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/login", web::get().to(session::login_page))
        .route("/login", web::post().to(session::log_in))
        .route("/logout", web::post().to(session::log_out))
        .route("/static/{file}", web::get().to(static_file))
        .route("/", web::get().to(overview::page))
        .route("/live/overview", web::get().to(overview::live))
        .route("/tasks", web::get().to(tasks::list))
        .route("/tasks/replay", web::get().to(tasks::replay_preview))
        .route("/tasks/replay", web::post().to(tasks::replay_many))
        .route("/tasks/{id}", web::get().to(tasks::detail))
        .route("/tasks/{id}/retry", web::post().to(tasks::retry))
        .route("/tasks/{id}/cancel", web::post().to(tasks::cancel))
        .route("/tasks/{id}/replay", web::post().to(tasks::replay))
        .route("/consumers", web::get().to(consumers::list))
        .route("/live/consumers", web::get().to(consumers::live))
        .route("/consumers/new", web::get().to(consumers::new_consumer))
        .route("/consumers/new", web::post().to(consumers::create))
        .route("/consumers/{id}", web::get().to(consumers::detail))
        .route("/consumers/{id}/offsets", web::post().to(consumers::reset_offsets))
        .route("/consumers/{id}/resend", web::post().to(consumers::resend))
        .route("/consumers/{id}/lane", web::post().to(consumers::replay_lane))
        .route("/consumers/{id}/state", web::post().to(consumers::change_state))
        .route("/consumers/{id}/policy", web::post().to(consumers::change_policy))
        .route("/brokers", web::get().to(admin::brokers))
        .route("/brokers/new", web::get().to(admin::new_broker))
        .route("/brokers/new", web::post().to(admin::create_broker))
        .route("/brokers/{id}", web::get().to(admin::broker))
        .route("/brokers/{id}/edit", web::post().to(admin::edit_broker))
        .route("/brokers/{id}/delete", web::post().to(admin::delete_broker))
        .route("/apps/{id}/delete", web::post().to(admin::delete_app))
        .route("/apps/{id}/edit", web::post().to(admin::edit_app))
        .route("/brokers/{id}/online", web::post().to(admin::set_online))
        .route("/nodes", web::get().to(admin::nodes))
        .route("/apps", web::get().to(admin::apps))
        .route("/apps", web::post().to(admin::create_app))
        .route("/apps/{id}/secret", web::post().to(admin::rotate_secret))
        .route("/keys", web::post().to(admin::issue_key))
        .route("/keys/{id}/revoke", web::post().to(admin::revoke_key))
        .route("/users", web::get().to(admin::users))
        .route("/users", web::post().to(admin::create_user))
        .route("/users/{username}", web::post().to(admin::change_user));
}

/// The gate's part for console routes: a logged-in user whose role meets the
/// need; forms from the console's own origin only.
pub async fn admit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    state: &ApiState,
    need: Need,
    form: bool,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let session = match session::of(request.request(), state).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            let next_page = if form {
                "/".to_string()
            } else {
                request.uri().to_string()
            };
            return Ok(request.into_response(session::to_login(&next_page)));
        }
        Err(problem) => return Ok(request.into_response(HttpResponse::from_error(problem))),
    };
    if form && !session::same_origin(request.request()) {
        let refusal = Problem::new(
            StatusCode::FORBIDDEN,
            "cross-origin",
            "console forms are taken from the console's own pages only",
        );
        return Ok(request.into_response(HttpResponse::from_error(refusal)));
    }
    let caller = Caller {
        key_id: format!("user:{}", session.username),
        app_id: None,
        role: session.role,
        networks: Vec::new(),
        topics: None,
    };
    if !caller.may(need) {
        let lang = Lang::of(request.request());
        let page = refused(&session, lang);
        return Ok(request.into_response(page));
    }
    let requester = Requester::new(&caller, request.peer_addr().map(|a| a.ip()));
    request.extensions_mut().insert(session);
    request.extensions_mut().insert(caller);
    acting_as(requester, next.call(request))
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// What every page shows around its content: who is logged in, the menu,
/// the language, the CSRF token its forms carry.
pub struct Chrome {
    pub t: Tr,
    pub username: String,
    pub role: Role,
    pub csrf: String,
    /// The menu entry of this page.
    pub section: &'static str,
}

impl Chrome {
    fn of(request: &HttpRequest, section: &'static str) -> Result<Self, Problem> {
        let session = request
            .extensions()
            .get::<Session>()
            .cloned()
            .ok_or_else(|| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "log in first"))?;
        Ok(Self {
            t: Tr(Lang::of(request)),
            username: session.username,
            role: session.role,
            csrf: session.csrf,
            section,
        })
    }

    /// Whether this user's role may do what buttons of `need` do: a viewer
    /// sees no buttons it may not use (the server refuses them anyway).
    pub fn may(&self, need: &str) -> bool {
        let need = match need {
            "operate" => Operate,
            "administer" => Administer,
            _ => Read,
        };
        self.role.may(need)
    }
}

/// A page as an HTML answer (an error page if the template cannot render).
fn html(page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(body),
        Err(e) => HttpResponse::from_error(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot render the page: {e}"),
        )),
    }
}

/// After a form: back to a page (303, so reloading does not post again).
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// After an action: back to `page`, with what went wrong if something did
/// (the page shows `?error=`).
fn back(page: &str, outcome: Result<(), Problem>) -> HttpResponse {
    match outcome {
        Ok(()) => see_other(page),
        Err(problem) => {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("error", &problem.detail)
                .finish();
            see_other(&format!("{page}?{query}"))
        }
    }
}

/// A form field as typed, trimmed; `None` when left empty.
fn given(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// One broker kind's fields on a form (a broker's settings, or a consumer's
/// source), each input named `<kind>.<field>`: the pages list every kind
/// from the registry, so a new kind needs no console change.
pub(crate) struct KindFields {
    pub kind: bida_domain::broker::BrokerKind,
    pub fields: &'static [bida_domain::kinds::FormField],
}

impl KindFields {
    pub fn connections() -> Vec<Self> {
        bida_domain::broker::BrokerKind::ALL
            .iter()
            .filter(|kind| kind.registered())
            .map(|&kind| Self {
                kind,
                fields: kind.connection_form(),
            })
            .collect()
    }

    pub fn sources() -> Vec<Self> {
        bida_domain::broker::BrokerKind::ALL
            .iter()
            .map(|&kind| Self {
                kind,
                fields: kind.source_form(),
            })
            .collect()
    }

    /// What the form sent for these fields, as the API takes them; empty
    /// fields left out.
    pub fn values(
        &self,
        form: &std::collections::HashMap<String, String>,
    ) -> serde_json::Map<String, serde_json::Value> {
        self.fields
            .iter()
            .filter_map(|field| {
                let sent = form.get(&format!("{}.{}", self.kind.as_str(), field.name))?;
                Some((field.name.to_string(), field.value(sent)?))
            })
            .collect()
    }
}

/// The kind a form names.
fn kind_named(name: &str) -> Result<bida_domain::broker::BrokerKind, Problem> {
    bida_domain::broker::BrokerKind::ALL
        .iter()
        .copied()
        .find(|kind| kind.as_str() == name)
        .ok_or_else(|| Problem::bad_request("invalid-request", format!("`{name}` is not a kind of broker")))
}

/// What an action that went wrong left for its page to show.
#[derive(serde::Deserialize)]
pub struct Notice {
    error: Option<String>,
}

/// One change in a history table: when, what, who, the event's fields.
pub struct HistoryLine {
    pub at: String,
    pub event: String,
    pub who: String,
    pub detail: String,
}

/// A history's lines, credentials masked; `detail` shows an event's fields
/// but those named in `left_out` (shown elsewhere on the page).
fn history_lines(events: Vec<bida_store::StoredEvent>, left_out: &[&str]) -> Vec<HistoryLine> {
    events
        .into_iter()
        .map(|event| {
            let metadata: serde_json::Value = serde_json::from_str(&event.metadata).unwrap_or_default();
            let mut payload: serde_json::Value = event
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default();
            crate::history::mask_secrets(&mut payload);
            let mut fields = payload[&event.event_type].take();
            if let Some(fields) = fields.as_object_mut() {
                fields.retain(|name, _| !left_out.contains(&name.as_str()));
            }
            let text = fields.to_string();
            HistoryLine {
                at: event.recorded_at.to_rfc3339(),
                who: metadata["key_id"].as_str().unwrap_or("bida").to_string(),
                detail: match text.char_indices().nth(240) {
                    Some((cut, _)) => format!("{}…", &text[..cut]),
                    None => text,
                },
                event: event.event_type,
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "refused.html")]
struct Refused {
    chrome: Chrome,
}

fn refused(session: &Session, lang: Lang) -> HttpResponse {
    let page = Refused {
        chrome: Chrome {
            t: Tr(lang),
            username: session.username.clone(),
            role: session.role,
            csrf: session.csrf.clone(),
            section: "",
        },
    };
    let mut response = html(&page);
    *response.status_mut() = StatusCode::FORBIDDEN;
    response
}

/// The console's own files, compiled into the binary.
const STATIC_FILES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../static/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/console.js"),
    ),
];

async fn static_file(file: web::Path<String>) -> HttpResponse {
    match STATIC_FILES.iter().find(|(name, _, _)| *name == file.as_str()) {
        Some((_, content_type, body)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .body(*body),
        None => HttpResponse::from_error(Problem::not_found(format!("no console file {file}"))),
    }
}
