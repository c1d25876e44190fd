//! The pages an operator and an admin need besides tasks and consumers:
//! brokers (health, topics and queues, offline and online), nodes, apps with
//! their keys and signing secrets, and console users.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use bida_actors::access::{AppPatch, AppView, KeyRequest, KeyView, RotateRequest};
use bida_actors::brokers::{BrokerPatch, BrokerView};
use bida_actors::consumer::ConsumerView;
use bida_actors::sources::{Destination, Fact};
use bida_actors::users::UserView;
use bida_domain::access::{AppSpec, Role};
use bida_domain::broker::{BrokerSpec, Connection};
use bida_store::NodeInfo;
use chrono::Utc;
use serde::Deserialize;
use std::collections::HashMap;

use super::session::{ConsoleForm, Empty};
use super::{back, given, html, kind_named, see_other, Chrome, KindFields, Notice};
use crate::problem::Problem;
use crate::ApiState;

#[derive(Template)]
#[template(path = "brokers.html")]
struct BrokersPage {
    chrome: Chrome,
    brokers: Vec<BrokerView>,
}

pub async fn brokers(request: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "brokers")?;
    let mut brokers: Vec<BrokerView> = state.brokers.list().await?.into_iter().filter(|b| !b.deleted).collect();
    // The operator's own brokers by name, then the built-in one.
    brokers.sort_by(|a, b| (!a.kind.registered(), &a.name).cmp(&(!b.kind.registered(), &b.name)));
    Ok(html(&BrokersPage { chrome, brokers }))
}

#[derive(Template)]
#[template(path = "broker.html")]
struct BrokerPage {
    chrome: Chrome,
    broker: BrokerView,
    /// How to reach it, passwords hidden.
    connection: String,
    /// Its topics, queues or streams, if it answered.
    destinations: Vec<Destination>,
    facts: Vec<Fact>,
    /// The settings an edit may change.
    settings: KindFields,
    /// Bida's consumers of this broker.
    readers: Readers,
    error: Option<String>,
}

/// A broker's consumers in Bida, to show beside each topic or queue.
struct Readers(Vec<ConsumerView>);

impl Readers {
    /// Those reading this topic or queue.
    fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ConsumerView> + 'a {
        self.0.iter().filter(move |c| c.spec.source.reads(name))
    }
}

pub async fn broker(
    request: HttpRequest,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "brokers")?;
    let broker = state.brokers.view(&id, true).await?;
    if broker.deleted {
        return Err(Problem::gone_to_history("broker", &id, "brokers"));
    }
    let readers = Readers(
        state
            .consumers
            .list()
            .await?
            .into_iter()
            .filter(|c| c.spec.broker_id == broker.id)
            .collect(),
    );
    let figures = broker.figures.clone().unwrap_or_default();
    Ok(html(&BrokerPage {
        chrome,
        destinations: figures.destinations,
        facts: figures.facts,
        settings: KindFields {
            kind: broker.kind,
            fields: broker.kind.connection_form(),
        },
        readers,
        connection: serde_json::to_string(&broker.connection).unwrap_or_default(),
        broker,
        error: notice.into_inner().error,
    }))
}

#[derive(Deserialize)]
pub struct OnlineForm {
    online: bool,
}

pub async fn set_online(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    form: ConsoleForm<OnlineForm>,
) -> HttpResponse {
    let outcome = state
        .brokers
        .set_online(&id, form.0.online)
        .await
        .map(drop)
        .map_err(Problem::from);
    back(&format!("/brokers/{id}"), outcome)
}

#[derive(Template)]
#[template(path = "broker_new.html")]
struct NewBrokerPage {
    chrome: Chrome,
    kinds: Vec<KindFields>,
    error: Option<String>,
}

pub async fn new_broker(request: HttpRequest, notice: web::Query<Notice>) -> Result<HttpResponse, Problem> {
    Ok(html(&NewBrokerPage {
        chrome: Chrome::of(&request, "brokers")?,
        kinds: KindFields::connections(),
        error: notice.into_inner().error,
    }))
}

/// A broker's fields as a form sends them: its name, its kind and the
/// settings of every kind (`<kind>.<field>`). An empty one is absent (on an
/// edit: unchanged, so a hidden password is not overwritten).
#[derive(Default, Deserialize)]
pub struct BrokerForm {
    #[serde(default)]
    name: String,
    kind: String,
    #[serde(flatten)]
    settings: HashMap<String, String>,
}

pub async fn create_broker(state: web::Data<ApiState>, form: ConsoleForm<BrokerForm>) -> HttpResponse {
    let form = form.0;
    let registered = async {
        let kind = kind_named(&form.kind)?;
        let mut settings = KindFields {
            kind,
            fields: kind.connection_form(),
        }
        .values(&form.settings);
        settings.insert("kind".into(), kind.as_str().into());
        let connection: Connection = serde_json::from_value(settings.into())
            .map_err(|e| Problem::bad_request("invalid-request", e.to_string()))?;
        let spec = BrokerSpec {
            name: form.name,
            connection,
        };
        Ok::<_, Problem>(state.brokers.register(spec).await?)
    }
    .await;
    match registered {
        Ok(view) => see_other(&format!("/brokers/{}", view.id)),
        Err(problem) => back("/brokers/new", Err(problem)),
    }
}

pub async fn edit_broker(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    form: ConsoleForm<BrokerForm>,
) -> HttpResponse {
    let form = form.0;
    let outcome = async {
        let kind = kind_named(&form.kind)?;
        let patch = BrokerPatch {
            name: given(&form.name),
            settings: KindFields {
                kind,
                fields: kind.connection_form(),
            }
            .values(&form.settings),
        };
        state.brokers.update(&id, patch).await.map(drop).map_err(Problem::from)
    }
    .await;
    back(&format!("/brokers/{id}"), outcome)
}

pub async fn delete_broker(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    _form: ConsoleForm<Empty>,
) -> HttpResponse {
    match state.brokers.delete(&id).await {
        Ok(()) => see_other("/brokers"),
        Err(e) => back(&format!("/brokers/{id}"), Err(e.into())),
    }
}

pub async fn edit_app(state: web::Data<ApiState>, id: web::Path<String>, form: ConsoleForm<AppForm>) -> HttpResponse {
    let form = form.0;
    let outcome = async {
        let networks = networks_of(&form.allowed_networks)?;
        let patch = AppPatch {
            name: given(&form.name),
            allowed_networks: Some(networks),
        };
        state.access.update_app(&id, patch).await?;
        Ok(())
    }
    .await;
    back("/apps", outcome)
}

pub async fn delete_app(state: web::Data<ApiState>, id: web::Path<String>, _form: ConsoleForm<Empty>) -> HttpResponse {
    let outcome = state.access.delete_app(&id).await.map_err(Problem::from);
    back("/apps", outcome)
}

pub struct NodeLine {
    pub info: NodeInfo,
    pub alive: bool,
    /// What the node last said of itself (none before its first sample).
    pub report: Option<NodeReport>,
}

/// A node's own figures, as its sampler writes them (src/gauges.rs).
#[derive(Deserialize)]
pub struct NodeReport {
    pub uptime_secs: u64,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub cpus: u32,
    pub task_actors: u64,
    pub consumer_actors: u64,
}

impl NodeReport {
    pub fn uptime(&self) -> String {
        let (days, hours, minutes) = (
            self.uptime_secs / 86_400,
            self.uptime_secs / 3600 % 24,
            self.uptime_secs / 60 % 60,
        );
        match (days, hours) {
            (0, 0) => format!("{minutes} min"),
            (0, _) => format!("{hours} h {minutes} min"),
            _ => format!("{days} d {hours} h"),
        }
    }

    pub fn memory_mib(&self) -> u64 {
        self.rss_bytes / (1024 * 1024)
    }

    /// CPU used since start, as a share of all the node's cores.
    pub fn cpu_percent(&self) -> String {
        let available = self.uptime_secs.max(1) as f64 * f64::from(self.cpus.max(1));
        format!("{:.1}", 100.0 * self.cpu_seconds / available)
    }
}

#[derive(Template)]
#[template(path = "nodes.html")]
struct NodesPage {
    chrome: Chrome,
    nodes: Vec<NodeLine>,
}

pub async fn nodes(request: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "nodes")?;
    let now = Utc::now();
    let nodes = state
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|info| NodeLine {
            alive: state.is_alive(&info, now),
            report: serde_json::from_value(info.report.clone()).ok(),
            info,
        })
        .collect();
    Ok(html(&NodesPage { chrome, nodes }))
}

pub struct AppLine {
    pub app: AppView,
    pub keys: Vec<KeyView>,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    chrome: Chrome,
    apps: Vec<AppLine>,
    installation_keys: Vec<KeyView>,
    roles: Vec<&'static str>,
    error: Option<String>,
}

pub async fn apps(
    request: HttpRequest,
    state: web::Data<ApiState>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "apps")?;
    let mut apps = Vec::new();
    for app in state.access.apps().await? {
        let keys = state.access.keys(Some(&app.id)).await?;
        apps.push(AppLine { app, keys });
    }
    apps.sort_by(|a, b| a.app.name.cmp(&b.app.name));
    Ok(html(&AppsPage {
        chrome,
        apps,
        installation_keys: state.access.keys(None).await?,
        roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
        error: notice.into_inner().error,
    }))
}

/// A secret or key shown once, right after it was made.
#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    chrome: Chrome,
    what: String,
    secret: String,
}

fn shown_once(request: &HttpRequest, what: String, secret: String) -> Result<HttpResponse, Problem> {
    Ok(html(&SecretPage {
        chrome: Chrome::of(request, "apps")?,
        what,
        secret,
    }))
}

/// CIDR networks separated by commas, spaces or lines.
fn networks_of(text: &str) -> Result<Vec<ipnet::IpNet>, Problem> {
    text.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse().map_err(|_| {
                Problem::bad_request("invalid-form", format!("`{n}` is not a CIDR range like 10.1.0.0/16"))
            })
        })
        .collect()
}

#[derive(Deserialize)]
pub struct AppForm {
    name: String,
    /// CIDR networks, separated by commas or spaces.
    #[serde(default)]
    allowed_networks: String,
}

pub async fn create_app(
    request: HttpRequest,
    state: web::Data<ApiState>,
    form: ConsoleForm<AppForm>,
) -> Result<HttpResponse, Problem> {
    let form = form.0;
    let allowed_networks = match networks_of(&form.allowed_networks) {
        Ok(networks) => networks,
        Err(problem) => return Ok(back("/apps", Err(problem))),
    };
    match state
        .access
        .create_app(AppSpec {
            name: form.name,
            allowed_networks,
        })
        .await
    {
        Ok(created) => match created.signing_secret {
            Some(secret) => shown_once(&request, format!("{} (whsec)", created.app.name), secret),
            None => Ok(see_other("/apps")),
        },
        Err(e) => Ok(back("/apps", Err(e.into()))),
    }
}

pub async fn rotate_secret(
    request: HttpRequest,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    _form: ConsoleForm<Empty>,
) -> Result<HttpResponse, Problem> {
    match state.access.rotate_secret(&id, RotateRequest::default()).await {
        Ok(rotated) => shown_once(&request, format!("{id} (whsec)"), rotated.signing_secret),
        Err(e) => Ok(back("/apps", Err(e.into()))),
    }
}

#[derive(Deserialize)]
pub struct KeyForm {
    name: String,
    role: String,
    /// Empty: an installation-wide key.
    #[serde(default)]
    app_id: String,
}

pub async fn issue_key(
    request: HttpRequest,
    state: web::Data<ApiState>,
    form: ConsoleForm<KeyForm>,
) -> Result<HttpResponse, Problem> {
    let form = form.0;
    let Some(role) = Role::parse(&form.role) else {
        return Ok(back("/apps", Err(Problem::bad_request("invalid-form", "no such role"))));
    };
    let app = Some(form.app_id.as_str()).filter(|a| !a.is_empty());
    let key = KeyRequest {
        name: form.name,
        role,
        topics: None,
    };
    match state.access.issue(app, key).await {
        Ok(issued) => shown_once(
            &request,
            format!("{} ({})", issued.view.name, issued.view.role),
            issued.key,
        ),
        Err(e) => Ok(back("/apps", Err(e.into()))),
    }
}

pub async fn revoke_key(
    state: web::Data<ApiState>,
    key_id: web::Path<String>,
    _form: ConsoleForm<Empty>,
) -> HttpResponse {
    let outcome = async {
        let key = state.access.key(&key_id).await?;
        state.access.revoke(key.app_id.as_deref(), &key_id).await?;
        Ok::<_, bida_actors::brokers::AdminError>(())
    }
    .await
    .map_err(Problem::from);
    back("/apps", outcome)
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserView>,
    error: Option<String>,
}

pub async fn users(
    request: HttpRequest,
    state: web::Data<ApiState>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, Problem> {
    let chrome = Chrome::of(&request, "users")?;
    Ok(html(&UsersPage {
        chrome,
        users: state.users.users().await?,
        error: notice.into_inner().error,
    }))
}

#[derive(Deserialize)]
pub struct UserForm {
    username: String,
    role: String,
    password: String,
}

pub async fn create_user(state: web::Data<ApiState>, form: ConsoleForm<UserForm>) -> HttpResponse {
    let form = form.0;
    let outcome = async {
        let role = Role::parse(&form.role).ok_or_else(|| Problem::bad_request("invalid-form", "no such role"))?;
        state.users.create(&form.username, role, &form.password).await?;
        Ok(())
    }
    .await;
    back("/users", outcome)
}

#[derive(Deserialize)]
pub struct UserChange {
    /// role, password or delete
    change: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

pub async fn change_user(
    state: web::Data<ApiState>,
    username: web::Path<String>,
    form: ConsoleForm<UserChange>,
) -> HttpResponse {
    let form = form.0;
    let outcome = async {
        match form.change.as_str() {
            "role" => {
                let role =
                    Role::parse(&form.role).ok_or_else(|| Problem::bad_request("invalid-form", "no such role"))?;
                state.users.change_role(&username, role).await?;
            }
            "password" => {
                state.users.change_password(&username, &form.password).await?;
            }
            "delete" => state.users.delete(&username).await?,
            other => return Err(Problem::bad_request("invalid-form", format!("no change named {other}"))),
        }
        Ok(())
    }
    .await;
    back("/users", outcome)
}
